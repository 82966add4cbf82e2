//! Warnings the guest or the backend's peer can cause at will, limited to a few per second so
//! they cannot flood the log; the number left out is reported with the next one shown.

use std::time::{Duration, Instant};

/// Warnings shown per window.
const PER_WINDOW: u32 = 10;
const WINDOW: Duration = Duration::from_secs(1);

/// One budget of warnings, for one device.
#[derive(Debug)]
pub struct RateLimited {
    device: &'static str,
    window_start: Instant,
    shown: u32,
    suppressed: u64,
}

impl RateLimited {
    /// A budget for the warnings of `device` (the prefix of the suppression notes).
    pub fn new(device: &'static str) -> Self {
        RateLimited {
            device,
            window_start: Instant::now(),
            shown: 0,
            suppressed: 0,
        }
    }

    /// Logs `message` unless this window's budget is spent; returns whether it was logged.
    pub fn warn(&mut self, message: std::fmt::Arguments<'_>) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= WINDOW {
            if self.suppressed > 0 {
                tracing::warn!(
                    "{}: {} similar warnings suppressed",
                    self.device,
                    self.suppressed
                );
            }
            self.window_start = now;
            self.shown = 0;
            self.suppressed = 0;
        }
        if self.shown < PER_WINDOW {
            self.shown += 1;
            tracing::warn!("{message}");
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_budget_and_the_next_window_starts_afresh() {
        let mut limit = RateLimited::new("test");
        let shown = (0..100).filter(|i| limit.warn(format_args!("{i}"))).count();
        assert_eq!(shown, PER_WINDOW as usize);
        assert_eq!(limit.suppressed, 90);
        limit.window_start -= WINDOW;
        assert!(limit.warn(format_args!("later")));
        assert_eq!((limit.shown, limit.suppressed), (1, 0));
    }
}
