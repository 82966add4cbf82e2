//! The probe behind `--engine auto`: does guest code run natively under KVM here, or is every
//! instruction emulated? Times a tiny guest loop against a short deadline.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use crate::hypervisor::kvm::KvmHypervisor;
use crate::stop::StopHandle;
use crate::tiny_guest::{load, probe_loop, COUNTER_ADDR};
use crate::vm::{Machine, MachineConfig, Start, VmExit};

/// Loop iterations: about a millisecond natively; emulated (~10 µs each) far past the deadline.
const ITERATIONS: u32 = 1_000_000;
/// How long the loop may run: the guest is stopped there, and its rate is what it counted.
const DEADLINE: Duration = Duration::from_millis(30);
/// The rate (iterations per second) from which guest code counts as run by the CPU rather than
/// by KVM's instruction emulator. Measured: emulated ≈ 0.5 M/s (a host whose KVM emulates guest
/// kernel code); hardware ≈ 1000 M/s; inside the nested test VM, where the "hardware" is QEMU's
/// software CPU, 19–35 M/s. The threshold sits an order of magnitude from both sides, so the
/// verdict never depends on how busy the host is.
const NATIVE_RATE: f64 = 5e6;

/// What the probe measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// Guest code runs natively (the loop finished within the deadline).
    pub native: bool,
    /// Loop iterations per second the guest reached (0 if no guest could run).
    pub iterations_per_sec: f64,
    /// One line for the user: the measurement, or why no guest could run.
    pub detail: String,
}

/// Runs the probe guest; never fails (a host without usable KVM is "not native").
pub fn guest_code_runs_natively() -> ProbeResult {
    match measure() {
        Ok(r) => r,
        Err(e) => ProbeResult {
            native: false,
            iterations_per_sec: 0.0,
            detail: format!("no KVM guest could run: {e}"),
        },
    }
}

fn measure() -> Result<ProbeResult, Box<dyn std::error::Error>> {
    let hypervisor = KvmHypervisor::new()?;
    let mut machine = Machine::new(
        &hypervisor,
        MachineConfig {
            vcpus: 1,
            memory_mib: 2,
        },
    )?;
    machine.add_i8042()?;
    let state = load(machine.memory(), &probe_loop(ITERATIONS))?;
    let memory = machine.memory().clone();

    let stop = StopHandle::new();
    let (done, deadline) = mpsc::channel::<()>();
    let timer_stop = stop.clone();
    let timer = std::thread::spawn(move || {
        if deadline.recv_timeout(DEADLINE).is_err() {
            timer_stop.stop();
        }
    });
    let started = Instant::now();
    let exit = machine.run(Start::AllVcpus(state), &stop);
    let elapsed = started.elapsed();
    let _ = done.send(());
    let _ = timer.join();

    let exit = exit?;
    let counted: u32 = memory.read_obj(GuestAddress(COUNTER_ADDR))?;
    let rate = f64::from(counted) / elapsed.as_secs_f64();
    let finished = exit == VmExit::Reset(crate::vm::ResetCause::Keyboard) && counted == ITERATIONS;
    let native = rate >= NATIVE_RATE && (finished || exit == VmExit::Stopped);
    Ok(ProbeResult {
        native,
        iterations_per_sec: rate,
        detail: format!(
            "guest loop: {counted} of {ITERATIONS} iterations in {:.1} ms ({:.0} per second): {}",
            elapsed.as_secs_f64() * 1e3,
            rate,
            if native {
                "guest code runs natively"
            } else {
                "guest code is emulated"
            }
        ),
    })
}
