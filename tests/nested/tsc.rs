//! The host's TSC frequency, measured. QEMU's software CPU reads the host's TSC for the guest,
//! and L1 must be told its rate (`tsc_early_khz`): calibrating it under emulation fails when the
//! host is busy, L1 then marks its TSC unstable, and its KVM never enters a guest. The runner
//! also passes `tsc=reliable`: L1's clocksource watchdog otherwise compares the TSC with jiffies,
//! whose ticks a busy host delays, and was seen to mark the TSC unstable a second after boot.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

/// TSC ticks per millisecond over 200 ms of the monotonic clock (error well under 0.1 %).
pub fn khz() -> Result<u64> {
    let (t0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(Duration::from_millis(200));
    let (c1, elapsed) = (rdtsc(), t0.elapsed());
    let khz = (c1.wrapping_sub(c0) as f64 / elapsed.as_secs_f64() / 1e3).round() as u64;
    ensure!(
        (100_000..=10_000_000).contains(&khz),
        "the TSC ran at {khz} kHz: not a plausible rate"
    );
    Ok(khz)
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter; every x86-64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}
