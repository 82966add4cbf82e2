//! Start-up benchmark: process start → first guest instruction, for skiff's VMM and for
//! `qemu-system-x86_64 -M microvm -accel kvm`, on the same tiny PVH guest (it writes `!` to
//! COM1, then triple-faults). The clock runs from spawning the VMM process to the `!` arriving
//! on its stdout; the VMM's peak RSS is read when it exits.
//!
//!   tiny_boot                  boot the built-in guest with skiff's VMM (`!` on stdout)
//!   tiny_boot --compare [N]    time N runs (default 20) of both VMMs, print medians and ratios

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_vmm::tiny_guest::{pvh_elf, SERIAL_THEN_TRIPLE_FAULT};
use skiff_vmm::{run_vm, SerialOutput, StopHandle, VmConfig};

fn boot(kernel: std::path::PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let config = VmConfig {
        vcpus: 1,
        memory_mib: 16,
        kernel,
        initramfs: None,
        cmdline: String::new(),
        serial: SerialOutput::Stdout,
        vsock: None,
        net: None,
        disks: Vec::new(),
        shares: Vec::new(),
    };
    run_vm(&config, &StopHandle::new())?;
    Ok(())
}

/// Spawns `cmd`, returns (time to the first `!` on stdout, peak RSS in KiB).
fn time_first_byte(cmd: &mut Command) -> Result<(Duration, u64), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let mut byte = [0u8];
    let first = loop {
        if out.read(&mut byte)? == 0 {
            return Err("VMM exited before the guest wrote".into());
        }
        if byte[0] == b'!' {
            break started.elapsed();
        }
    };
    let rss = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Ok((first, rss))
}

/// Peak RSS of a running process (read while it is alive).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<(Duration, u64)>) -> (Duration, u64) {
    v.sort();
    v[v.len() / 2]
}

fn compare(runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("skiff-tiny-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let elf = dir.join("tiny.elf");
    std::fs::write(&elf, pvh_elf(&SERIAL_THEN_TRIPLE_FAULT))?;
    let me = std::env::current_exe()?;
    let mut skiff = Vec::new();
    let mut qemu = Vec::new();
    for _ in 0..runs {
        skiff.push(time_first_byte(Command::new(&me).arg(&elf))?);
        qemu.push(time_first_byte(
            Command::new("qemu-system-x86_64")
                .args([
                    "-M",
                    "microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off",
                ])
                .args(["-accel", "kvm", "-m", "16", "-smp", "1"])
                .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
                .args(["-serial", "stdio", "-kernel"])
                .arg(&elf),
        )?);
    }
    std::fs::remove_dir_all(&dir)?;
    let (s, s_rss) = median(skiff);
    let (q, q_rss) = median(qemu);
    println!("start -> first guest instruction (median of {runs}):");
    println!(
        "  skiff {:.2} ms, qemu microvm {:.2} ms, ratio {:.2}",
        s.as_secs_f64() * 1e3,
        q.as_secs_f64() * 1e3,
        s.as_secs_f64() / q.as_secs_f64()
    );
    println!(
        "  peak RSS: skiff {} KiB, qemu {} KiB (16 MiB guest, mostly untouched)",
        s_rss, q_rss
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "--compare" => compare(20),
        [flag, n] if flag == "--compare" => compare(n.parse()?),
        [path] => boot(path.into()),
        [] => {
            let path = std::env::temp_dir().join(format!("skiff-tiny-{}.elf", std::process::id()));
            std::fs::write(&path, pvh_elf(&SERIAL_THEN_TRIPLE_FAULT))?;
            let result = boot(path.clone());
            std::fs::remove_file(&path)?;
            result
        }
        _ => Err("usage: tiny_boot [--compare [N] | PATH]".into()),
    }
}
