//! The probe behind `--engine auto`: does guest code run natively under KVM here, or is every
//! instruction emulated? Runs a tiny guest loop for a short budget of CPU time and judges the
//! rate it reached. The rate is per second of the process's CPU time, not of the wall clock, so
//! a busy host (other VMs taking the CPU from the probe's vCPU) cannot flip the verdict.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use crate::hypervisor::kvm::KvmHypervisor;
use crate::stop::StopHandle;
use crate::tiny_guest::{load, probe_loop, COUNTER_ADDR};
use crate::vm::{Machine, MachineConfig, Start, VmExit};

/// Loop iterations: about a millisecond natively; emulated (~2 µs each) far past the budget.
const ITERATIONS: u32 = 1_000_000;
/// The CPU time the loop may use: the guest is stopped there, and its rate is what it counted.
const CPU_BUDGET: Duration = Duration::from_millis(30);
/// The wall-clock bound on the loop, however little CPU time the host gives it.
const WALL_LIMIT: Duration = Duration::from_millis(500);
/// How often the budget is checked.
const TICK: Duration = Duration::from_millis(2);
/// The rate (iterations per second) from which guest code counts as run by the CPU rather than
/// by KVM's instruction emulator. Measured: emulated ≈ 0.5 M/s (a host whose KVM emulates guest
/// kernel code); hardware ≈ 1000 M/s; inside the nested test VM, where the "hardware" is QEMU's
/// software CPU, 19–35 M/s. The threshold sits an order of magnitude from both sides, so the
/// verdict never depends on how busy the host is.
const NATIVE_RATE: f64 = 5e6;

/// What the probe measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// Guest code runs natively (the loop's rate reached [`NATIVE_RATE`]).
    pub native: bool,
    /// Loop iterations per second the guest reached (0 if no guest could run).
    pub iterations_per_sec: f64,
    /// A guest ran, so the verdict describes this host. `false` when none could (no /dev/kvm
    /// here, no permission, no memory): that says nothing of the host's CPU, so it must not be
    /// kept for other processes, which may see /dev/kvm.
    pub measured: bool,
    /// One line for the user: the measurement, or why no guest could run.
    pub detail: String,
}

/// How many times a slow loop is measured again before guest code counts as emulated: a sample
/// can be unlucky on a loaded host (the vCPU's slices cut short, caches cold after each switch),
/// an emulating host is slow every time. The best sample counts.
const SAMPLES: usize = 3;

/// Runs the probe guest; never fails (a host without usable KVM is "not native").
pub fn guest_code_runs_natively() -> ProbeResult {
    let mut best = match measure() {
        Ok(r) => r,
        Err(e) => return no_guest(e),
    };
    for _ in 1..SAMPLES {
        if best.native {
            break;
        }
        match measure() {
            Ok(r) if r.iterations_per_sec > best.iterations_per_sec => best = r,
            Ok(_) => {}
            Err(e) => return no_guest(e),
        }
    }
    best
}

/// The verdict when no guest could run.
fn no_guest(e: Box<dyn std::error::Error>) -> ProbeResult {
    ProbeResult {
        native: false,
        iterations_per_sec: 0.0,
        measured: false,
        detail: format!("no KVM guest could run: {e}"),
    }
}

fn measure() -> Result<ProbeResult, Box<dyn std::error::Error>> {
    let hypervisor = KvmHypervisor::new()?;
    let mut machine = Machine::new(
        &hypervisor,
        MachineConfig {
            vcpus: 1,
            memory_mib: 2,
            shared_memory: false,
        },
    )?;
    machine.add_i8042()?;
    let state = load(machine.memory(), &probe_loop(ITERATIONS))?;
    let memory = machine.memory().clone();

    let stop = StopHandle::new();
    let (done, finished) = mpsc::channel::<()>();
    let timer_stop = stop.clone();
    let started = Instant::now();
    let cpu_start = process_cpu_time();
    let timer = std::thread::spawn(move || loop {
        if finished.recv_timeout(TICK) != Err(mpsc::RecvTimeoutError::Timeout) {
            return;
        }
        if process_cpu_time().saturating_sub(cpu_start) >= CPU_BUDGET
            || started.elapsed() >= WALL_LIMIT
        {
            timer_stop.stop();
            return;
        }
    });
    let exit = machine.run(Start::AllVcpus(state), &stop);
    let cpu = process_cpu_time().saturating_sub(cpu_start);
    let _ = done.send(());
    let _ = timer.join();

    let exit = exit?;
    let counted: u32 = memory.read_obj(GuestAddress(COUNTER_ADDR))?;
    let rate = f64::from(counted) / cpu.as_secs_f64().max(1e-6);
    let finished = exit == VmExit::Reset(crate::vm::ResetCause::Keyboard) && counted == ITERATIONS;
    let native = rate >= NATIVE_RATE && (finished || exit == VmExit::Stopped);
    Ok(ProbeResult {
        native,
        iterations_per_sec: rate,
        measured: true,
        detail: format!(
            "guest loop: {counted} of {ITERATIONS} iterations in {:.1} ms of CPU time ({:.0} per second): {}",
            cpu.as_secs_f64() * 1e3,
            rate,
            if native {
                "guest code runs natively"
            } else {
                "guest code is emulated"
            }
        ),
    })
}

/// The CPU time all threads of this process have used (the probe's vCPU thread, in guest mode
/// or in KVM's emulator alike, is nearly all of it while the probe runs).
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
