//! `nested-vm`: runs a command inside the nested test VM (L1), where skiff's own VMM has a
//! working `/dev/kvm` even on hosts whose KVM emulates guest code.
//!
//! L1 is Linux (the L1 test kernel of `kernel-config/build.sh --l1`, with KVM_AMD) booted under
//! QEMU's software CPU `-cpu max`, whose emulated SVM the L1 kernel's KVM uses: skiff inside L1
//! boots its normal guest as L2. L1 sees the host's whole userland read-only over virtio-9p, with
//! writes kept in its own memory (`init.sh`), so the built skiff, test binaries, kernels and test
//! images are all at their host paths. The command runs in the current directory with
//! `SKIFF_TEST_ENGINE=kvm`, its output streams to ours, and its exit status is ours. Whatever
//! happens — the command ends, the deadline passes (exit 124), the runner is killed, even with
//! SIGKILL — L1 is stopped with it. When L1 itself fails — it froze (its heartbeat stopped) or
//! its kernel died — the exit is 75 (EX_TEMPFAIL): not the command's failure, worth one retry.
//!
//! ```text
//! nested-vm [--cpus N] [--memory MIB] [--timeout SECS] [--env KEY=VALUE]… -- COMMAND [ARG…]
//! ```

mod l1;
mod tsc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;

/// The exit status when L1 itself failed rather than the command (sysexits' EX_TEMPFAIL).
const L1_FAILED: u8 = 75;

/// Runs a command inside the nested test VM, where skiff's own VMM has a working /dev/kvm.
#[derive(Parser, Debug)]
#[command(name = "nested-vm")]
struct Args {
    /// vCPUs of L1. One by default: with two, QEMU runs them on two host threads, and under
    /// concurrent L2 guests L1's kernel was seen to crash (page tables or KVM state corrupted,
    /// 2 of 4 stress runs; none of 4 with one vCPU), at the cost of a slower suite.
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Memory of L1, MiB.
    #[arg(long, default_value_t = 4096)]
    memory: u32,
    /// Seconds before L1 is killed, boot included.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// Seconds L1 may go without a heartbeat (it writes one every 2 s, its boot included)
    /// before it counts as frozen.
    #[arg(long, default_value_t = 60, hide = true)]
    heartbeat_limit: u64,
    /// The L1 kernel (default: the cached build of `kernel-config/build.sh --l1`).
    #[arg(long, env = "SKIFF_L1_KERNEL")]
    kernel: Option<PathBuf>,
    /// Sets a variable for the command (besides PATH, HOME, LANG, SKIFF_* and RUST_*, which are
    /// passed on, and SKIFF_TEST_ENGINE=kvm).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// The command and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("nested-vm: error: {e:#}");
            ExitCode::from(125)
        }
    }
}

fn run(args: &Args) -> Result<u8> {
    let kernel = match &args.kernel {
        Some(k) => k.clone(),
        None => l1::cached_kernel()?,
    };
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut env = l1::passed_env(std::env::vars());
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    let dir = tempfile::Builder::new()
        .prefix("nested-vm-")
        .tempdir()
        .context("cannot create the runner's directory")?;
    let boot = l1::Boot {
        kernel,
        cpus: args.cpus,
        memory_mib: args.memory,
        tsc_khz: tsc::khz().context("cannot measure the host's TSC frequency")?,
        dir: dir.path().to_path_buf(),
    };
    boot.write_command(&cwd, &env, &args.command)?;
    let started = Instant::now();
    let mut qemu = boot.start()?;
    let deadline = Duration::from_secs(args.timeout);
    let qemu_status = loop {
        if let Some(s) = qemu.try_wait().context("cannot wait for qemu")? {
            break s;
        }
        let silent = boot.since_heartbeat().unwrap_or_else(|| started.elapsed());
        let why = if started.elapsed() >= deadline {
            Some((
                124,
                format!(
                    "L1 did not finish within {}s: killed it (its output above ends where it hung)",
                    args.timeout
                ),
            ))
        } else if silent >= Duration::from_secs(args.heartbeat_limit) {
            Some((
                L1_FAILED,
                format!(
                    "L1 froze: no heartbeat for {}s (its timer stopped under QEMU's emulated SVM): killed it",
                    silent.as_secs()
                ),
            ))
        } else {
            None
        };
        if let Some((code, message)) = why {
            let _ = qemu.kill();
            let _ = qemu.wait();
            eprintln!("nested-vm: error: {message}");
            return Ok(code);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    match boot.status() {
        Some(code) => {
            eprintln!(
                "nested-vm: L1 ran the command in {:.1}s: exit {code}",
                started.elapsed().as_secs_f64()
            );
            Ok(code)
        }
        None => {
            eprintln!(
                "nested-vm: error: L1 ended ({qemu_status}) without reporting the command's status: its kernel died, see its console above"
            );
            Ok(L1_FAILED)
        }
    }
}
