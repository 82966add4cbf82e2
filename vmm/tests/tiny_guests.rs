//! skiff's VMM on real KVM with tiny hand-assembled guests (32-bit protected mode): port and
//! MMIO exits, serial output, reset and triple fault, CPUID, two vCPUs, stopping, the probe,
//! and the PVH boot path with its clear errors.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_vmm::bus::{BusDevice, VmRequest};
use skiff_vmm::hypervisor::kvm::KvmHypervisor;
use skiff_vmm::tiny_guest::{self, I8042_RESET};
use skiff_vmm::vm::{Machine, MachineConfig, ResetCause, Start, VmExit};
use skiff_vmm::{run_vm, SerialOutput, StopHandle, VmConfig, VmmError};

const TEST_PORT: u16 = 0x510;
const TEST_MMIO: u64 = 0xd100_0000;

/// Every write a [`Recorder`] saw: (offset, bytes).
type Writes = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// Records every write; reads return `read_value`. Stops the VM after `stop_after` writes.
struct Recorder {
    writes: Writes,
    read_value: u32,
    stop: Option<(usize, StopHandle)>,
}

impl BusDevice for Recorder {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        let v = self.read_value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&v[..n]);
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmRequest> {
        let mut w = self.writes.lock().unwrap();
        w.push((offset, data.to_vec()));
        if let Some((n, stop)) = &self.stop {
            if w.len() >= *n {
                stop.stop();
            }
        }
        None
    }
}

fn machine(vcpus: u8) -> Machine {
    let kvm = KvmHypervisor::new().expect("these tests need /dev/kvm");
    Machine::new(
        &kvm,
        MachineConfig {
            vcpus,
            memory_mib: 4,
            shared_memory: false,
        },
    )
    .unwrap()
}

fn recorder(m: &mut Machine, read_value: u32, stop: Option<(usize, StopHandle)>) -> Writes {
    let writes = Writes::default();
    let dev = Arc::new(Mutex::new(Recorder {
        writes: writes.clone(),
        read_value,
        stop: stop.clone(),
    }));
    m.add_pio_device(TEST_PORT, 4, dev).unwrap();
    let mmio = Arc::new(Mutex::new(Recorder {
        writes: writes.clone(),
        read_value,
        stop,
    }));
    m.add_mmio_device(TEST_MMIO, 0x1000, mmio).unwrap();
    writes
}

/// Runs `code` on every vCPU with a 10 s safety stop.
fn run(m: Machine, code: &[u8], stop: &StopHandle) -> VmExit {
    let state = tiny_guest::load(m.memory(), code).unwrap();
    let guard = stop.clone();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let timer = std::thread::spawn(move || {
        if wait.recv_timeout(Duration::from_secs(10)).is_err() {
            guard.stop();
        }
    });
    let exit = m.run(Start::AllVcpus(state), stop).unwrap();
    done.send(()).unwrap();
    timer.join().unwrap();
    exit
}

/// `mov dx, TEST_PORT; out dx, eax`
fn out_test_port_eax() -> Vec<u8> {
    let mut c = vec![0x66, 0xba];
    c.extend_from_slice(&TEST_PORT.to_le_bytes());
    c.push(0xef);
    c
}

fn with_reset(mut code: Vec<u8>) -> Vec<u8> {
    code.extend_from_slice(&I8042_RESET);
    code
}

#[test]
fn port_write_reaches_the_device_and_reset_ends_the_vm() {
    let mut m = machine(1);
    m.add_i8042().unwrap();
    let writes = recorder(&mut m, 0, None);
    let mut code = vec![0xb8, 0x78, 0x56, 0x34, 0x12]; // mov eax, 0x12345678
    code.extend(out_test_port_eax());
    let exit = run(m, &with_reset(code), &StopHandle::new());
    assert_eq!(exit, VmExit::Reset(ResetCause::Keyboard));
    assert_eq!(
        *writes.lock().unwrap(),
        vec![(0, 0x1234_5678u32.to_le_bytes().to_vec())]
    );
}

#[test]
fn port_read_returns_the_device_value() {
    let mut m = machine(1);
    m.add_i8042().unwrap();
    let writes = recorder(&mut m, 0xcafe_f00d, None);
    let mut code = vec![0x66, 0xba];
    code.extend_from_slice(&TEST_PORT.to_le_bytes());
    code.push(0xed); // in eax, dx
    code.push(0x40); // inc eax
    code.push(0xef); // out dx, eax
    let exit = run(m, &with_reset(code), &StopHandle::new());
    assert_eq!(exit, VmExit::Reset(ResetCause::Keyboard));
    assert_eq!(writes.lock().unwrap()[0].1, 0xcafe_f00eu32.to_le_bytes());
}

#[test]
fn mmio_write_and_read_reach_the_device() {
    let mut m = machine(1);
    m.add_i8042().unwrap();
    let writes = recorder(&mut m, 0x0bad_beef, None);
    let addr = (TEST_MMIO + 0x10) as u32;
    let mut code = vec![0xc7, 0x05]; // mov dword [addr], imm32
    code.extend_from_slice(&addr.to_le_bytes());
    code.extend_from_slice(&0x1122_3344u32.to_le_bytes());
    code.push(0xa1); // mov eax, [addr]
    code.extend_from_slice(&addr.to_le_bytes());
    code.extend(out_test_port_eax());
    let exit = run(m, &with_reset(code), &StopHandle::new());
    assert_eq!(exit, VmExit::Reset(ResetCause::Keyboard));
    let w = writes.lock().unwrap();
    assert_eq!(
        w[0],
        (0x10, 0x1122_3344u32.to_le_bytes().to_vec()),
        "MMIO write"
    );
    assert_eq!(
        w[1],
        (0, 0x0bad_beefu32.to_le_bytes().to_vec()),
        "MMIO read echoed"
    );
}

#[derive(Clone, Default)]
struct SharedOut(Arc<Mutex<Vec<u8>>>);

impl Write for SharedOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn serial_output_arrives() {
    let mut m = machine(1);
    m.add_i8042().unwrap();
    let out = SharedOut::default();
    m.add_serial(Box::new(out.clone())).unwrap();
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for b in b"hello\n" {
        code.extend_from_slice(&[0xb0, *b, 0xee]); // mov al, b; out dx, al
    }
    let exit = run(m, &with_reset(code), &StopHandle::new());
    assert_eq!(exit, VmExit::Reset(ResetCause::Keyboard));
    assert_eq!(&*out.0.lock().unwrap(), b"hello\n");
}

#[test]
fn triple_fault_ends_the_vm_as_a_reset() {
    let m = machine(1);
    let exit = run(m, &[0x0f, 0x0b], &StopHandle::new()); // ud2, no IDT
    assert_eq!(exit, VmExit::Reset(ResetCause::TripleFault));
}

/// `mov eax, leaf; mov ecx, subleaf; cpuid; out eax, ebx, ecx, edx to the test port`.
fn cpuid_code(leaf: u32, subleaf: u32) -> Vec<u8> {
    let mut c = vec![0xb8];
    c.extend_from_slice(&leaf.to_le_bytes());
    c.push(0xb9);
    c.extend_from_slice(&subleaf.to_le_bytes());
    c.extend_from_slice(&[0x0f, 0xa2]); // cpuid
    c.extend_from_slice(&[0x89, 0xd7]); // mov edi, edx (dx is needed for the port)
    c.extend_from_slice(&[0x66, 0xba]);
    c.extend_from_slice(&TEST_PORT.to_le_bytes());
    c.push(0xef); // out dx, eax
    c.extend_from_slice(&[0x89, 0xd8, 0xef]); // mov eax, ebx; out dx, eax
    c.extend_from_slice(&[0x89, 0xc8, 0xef]); // mov eax, ecx; out dx, eax
    c.extend_from_slice(&[0x89, 0xf8, 0xef]); // mov eax, edi; out dx, eax
    c
}

/// Bits the guest sees that are not simply the table's: KVM derives leaf 1 ecx OSXSAVE and edx
/// APIC from guest state. On PVM hosts (`kvm_pvm`, this test bed) leaf 1 ecx shows the host's
/// feature bits rather than the table's; there only the bits skiff's policy sets are compared.
fn dynamic_bits(leaf: u32) -> [u32; 4] {
    match leaf {
        1 if std::path::Path::new("/sys/module/kvm_pvm").exists() => {
            [0, 0, !((1 << 31) | (1 << 5)), 1 << 9]
        }
        1 => [0, 0, 1 << 27, 1 << 9],
        _ => [0; 4],
    }
}

#[test]
fn cpuid_seen_by_the_guest_matches_what_the_vmm_set() {
    for (leaf, subleaf) in [(0, 0), (1, 0), (0x4000_0000, 0), (0x8000_0000, 0)] {
        let mut m = machine(2);
        m.add_i8042().unwrap();
        let writes = recorder(&mut m, 0, None);
        let expected = m.cpuid(0, leaf, subleaf).expect("leaf present");
        let state = tiny_guest::load(m.memory(), &with_reset(cpuid_code(leaf, subleaf))).unwrap();
        let exit = m.run(Start::Bootstrap(state), &StopHandle::new()).unwrap();
        assert_eq!(exit, VmExit::Reset(ResetCause::Keyboard));
        let seen: Vec<u32> = writes
            .lock()
            .unwrap()
            .iter()
            .map(|(_, d)| u32::from_le_bytes(d[..4].try_into().unwrap()))
            .collect();
        assert_eq!(seen.len(), 4);
        let dynamic = dynamic_bits(leaf);
        for r in 0..4 {
            assert_eq!(
                seen[r] & !dynamic[r],
                expected[r] & !dynamic[r],
                "leaf {leaf:#x}.{subleaf} register {r}: guest {:#x}, VMM {:#x}",
                seen[r],
                expected[r]
            );
        }
        if leaf == 1 {
            assert_ne!(seen[2] & (1 << 31), 0, "hypervisor bit");
            assert_eq!(seen[2] & (1 << 5), 0, "no VMX");
            assert_eq!(seen[1] >> 24, 0, "APIC id of vCPU 0");
            assert_eq!((seen[1] >> 16) & 0xff, 2, "two logical processors");
        }
        if leaf == 0x4000_0000 {
            let sig: Vec<u8> = seen[1..].iter().flat_map(|r| r.to_le_bytes()).collect();
            assert_eq!(&sig, b"KVMKVMKVM\0\0\0", "hypervisor signature");
        }
    }
}

#[test]
fn two_vcpus_both_run_with_their_own_apic_ids() {
    let mut m = machine(2);
    let stop = StopHandle::new();
    let writes = recorder(&mut m, 0, Some((2, stop.clone())));
    let mut code = vec![0xb8, 1, 0, 0, 0, 0x0f, 0xa2]; // mov eax, 1; cpuid
    code.extend_from_slice(&[0x89, 0xd8, 0xc1, 0xe8, 24]); // mov eax, ebx; shr eax, 24
    code.extend(out_test_port_eax());
    code.extend_from_slice(&[0xeb, 0xfe]); // jmp $ (until stopped)
    let exit = run(m, &code, &stop);
    assert_eq!(exit, VmExit::Stopped);
    let ids: BTreeSet<u32> = writes
        .lock()
        .unwrap()
        .iter()
        .map(|(_, d)| u32::from_le_bytes(d[..4].try_into().unwrap()))
        .collect();
    assert_eq!(ids, BTreeSet::from([0, 1]));
}

#[test]
fn stop_handle_ends_a_spinning_guest() {
    let m = machine(1);
    let stop = StopHandle::new();
    let s = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        s.stop();
    });
    let started = std::time::Instant::now();
    assert_eq!(run(m, &[0xeb, 0xfe], &stop), VmExit::Stopped);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn probe_measures_the_guest_loop() {
    let r = skiff_vmm::guest_code_runs_natively();
    eprintln!("probe: native={} {}", r.native, r.detail);
    assert!(r.iterations_per_sec > 0.0, "{}", r.detail);
    assert!(r.detail.contains("iterations"), "{}", r.detail);
}

fn config(kernel: std::path::PathBuf, serial: SerialOutput) -> VmConfig {
    VmConfig {
        vcpus: 1,
        memory_mib: 8,
        kernel,
        initramfs: None,
        cmdline: "console=ttyS0".into(),
        serial,
        vsock: None,
        net: None,
        disks: Vec::new(),
        shares: Vec::new(),
    }
}

/// The tiny guest that prints on the serial port and triple-faults, as a PVH ELF in `dir`.
fn serial_then_triple_fault_elf(dir: &std::path::Path) -> std::path::PathBuf {
    let kernel = dir.join("tiny.elf");
    std::fs::write(
        &kernel,
        tiny_guest::pvh_elf(&tiny_guest::SERIAL_THEN_TRIPLE_FAULT),
    )
    .unwrap();
    kernel
}

#[test]
fn a_pvh_elf_boots_through_run_vm() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = serial_then_triple_fault_elf(dir.path());
    let log = dir.path().join("console.log");
    let exit = run_vm(
        &config(kernel, SerialOutput::File(log.clone())),
        &StopHandle::new(),
    )
    .unwrap();
    assert_eq!(exit, VmExit::Reset(ResetCause::TripleFault));
    assert_eq!(std::fs::read(&log).unwrap(), b"!");
}

#[test]
fn kernel_errors_are_distinct() {
    let dir = tempfile::tempdir().unwrap();
    let sink = || SerialOutput::Sink;

    let missing = dir.path().join("missing");
    let e = run_vm(&config(missing, sink()), &StopHandle::new()).unwrap_err();
    assert!(matches!(e, VmmError::KernelMissing { .. }), "{e}");

    let bz = dir.path().join("bzImage");
    std::fs::write(&bz, vec![0x4d; 4096]).unwrap();
    let e = run_vm(&config(bz, sink()), &StopHandle::new()).unwrap_err();
    assert!(matches!(e, VmmError::KernelNotElf { .. }), "{e}");
    assert!(e.to_string().contains("bzImage"), "{e}");

    // The tiny ELF with its note's type changed: no PVH entry.
    let mut elf = tiny_guest::pvh_elf(&[0xf4]);
    let note = 64 + 2 * 56;
    elf[note + 8] = 17;
    let nopvh = dir.path().join("nopvh.elf");
    std::fs::write(&nopvh, elf).unwrap();
    let e = run_vm(&config(nopvh, sink()), &StopHandle::new()).unwrap_err();
    assert!(matches!(e, VmmError::NoPvhNote { .. }), "{e}");

    let kernel = dir.path().join("tiny.elf");
    std::fs::write(&kernel, tiny_guest::pvh_elf(&[0xf4])).unwrap();
    let initramfs = dir.path().join("initramfs.cpio");
    std::fs::write(&initramfs, vec![0u8; 8 << 20]).unwrap();
    let mut cfg = config(kernel, sink());
    cfg.initramfs = Some(initramfs);
    let e = run_vm(&cfg, &StopHandle::new()).unwrap_err();
    assert!(
        matches!(
            e,
            VmmError::MemoryTooSmall {
                memory_mib: 8,
                needed_mib: 10
            }
        ),
        "{e}"
    );
}

#[test]
fn vsock_device_is_attached_and_bad_cids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = serial_then_triple_fault_elf(dir.path());
    let socket = dir.path().join("vsock.sock");

    let mut cfg = config(kernel, SerialOutput::Sink);
    cfg.vsock = Some((3, socket.clone()));
    let exit = run_vm(&cfg, &StopHandle::new()).unwrap();
    assert_eq!(exit, VmExit::Reset(ResetCause::TripleFault));

    cfg.vsock = Some((2, socket));
    let e = run_vm(&cfg, &StopHandle::new()).unwrap_err();
    assert!(matches!(e, VmmError::Vsock { .. }), "{e}");
}
