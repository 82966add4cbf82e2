//! The real guest kernel from `kernel-config/` booted by skiff's VMM on KVM: within a bounded
//! time the console log shows the Linux banner, the exact command line skiff passed (with its
//! `virtio_mmio.device=` entries for the vsock and the network device), and the e820 map of the
//! requested memory size; then the test stops the VM and checks that the network device had
//! connected to its backend socket.
//!
//! The kernel comes from `SKIFF_KERNEL`, else from `kernel-config/build.sh` (which builds it if
//! it is not cached). Guest code is emulated on some hosts, hence the generous bound.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use skiff_vmm::{run_vm, NetConfig, SerialOutput, StopHandle, VmConfig, VmExit};

const BOUND: Duration = Duration::from_secs(60);
const MEMORY_MIB: u64 = 256;

fn kernel() -> PathBuf {
    if let Some(path) = std::env::var_os("SKIFF_KERNEL") {
        return PathBuf::from(path);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernel-config/build.sh");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().unwrap_or_default().trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "no guest kernel: set SKIFF_KERNEL or fix {}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(path)
}

#[test]
fn real_kernel_prints_banner_cmdline_and_memory_map() {
    let kernel = kernel();
    assert!(
        kernel.is_file(),
        "guest kernel {} is missing",
        kernel.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let nonce = std::process::id();
    let cmdline = format!("console=ttyS0 earlyprintk=serial reboot=k panic=-1 skiff.check={nonce}");
    let (net_socket, net_peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let config = VmConfig {
        vcpus: 2,
        memory_mib: MEMORY_MIB,
        kernel,
        initramfs: None,
        cmdline: cmdline.clone(),
        serial: SerialOutput::File(log.clone()),
        vsock: Some((3, dir.path().join("vsock.sock"))),
        net: Some(NetConfig {
            socket: std::sync::Arc::new(net_socket),
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            mtu: 65520,
        }),
        disks: Vec::new(),
        shares: Vec::new(),
    };
    let stop = StopHandle::new();
    let vm = {
        let stop = stop.clone();
        std::thread::spawn(move || run_vm(&config, &stop))
    };

    let last_usable = format!(
        "BIOS-e820: [mem 0x0000000000100000-0x{:016x}] usable",
        (MEMORY_MIB << 20) - 1
    );
    let wanted = [
        "Linux version ".to_string(),
        // skiff announces its devices after the caller's command line: vsock, then net.
        format!(
            "Kernel command line: {cmdline} virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6"
        ),
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable".to_string(),
        last_usable,
    ];
    let started = Instant::now();
    let mut text = String::new();
    while started.elapsed() < BOUND && !vm.is_finished() {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if wanted.iter().all(|w| text.contains(w.as_str())) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let elapsed = started.elapsed();
    stop.stop();
    let exit = vm.join().unwrap();
    text = std::fs::read_to_string(&log).unwrap_or(text);
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !text.contains(w.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "after {elapsed:?} the console log lacks {missing:?}; VM ended with {exit:?}; log:\n{text}"
    );
    assert_eq!(exit.unwrap(), VmExit::Stopped, "log:\n{text}");
    // The VMM's copy of the device's socket is gone with the VM: the peer reads its end.
    net_peer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    assert!(
        std::io::Read::read_to_end(&mut &net_peer, &mut rest).is_ok(),
        "the network device's socket stayed open after the VM ended"
    );
    eprintln!("kernel reached the checks in {elapsed:?}");
}
