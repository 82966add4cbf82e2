//! A minimal CMOS real-time clock (the MC146818 at ports 0x70/0x71): the host's time of day in
//! BCD, never "update in progress". A guest that reads its wall clock from CMOS (Linux does
//! without kvm-clock) gets it at once; an absent RTC reads 0xff, whose set update-in-progress
//! bit Linux waits on for a whole second before giving up.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::{BusDevice, VmRequest};

/// The index port; the data port follows it.
pub const CMOS_PORT: u16 = 0x70;
/// Ports 0x70..=0x71.
pub const CMOS_LEN: u64 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// Register A: 32.768 kHz time base, 1024 Hz rate, update-in-progress clear.
const REG_A_VALUE: u8 = 0x26;
/// Register B: 24-hour mode, BCD.
const REG_B_VALUE: u8 = 0x02;
/// Register D: the clock's battery is good.
const REG_D_VALUE: u8 = 0x80;

/// The clock: the selected register, and the time read from the host on each access.
#[derive(Debug, Default)]
pub struct Cmos {
    index: u8,
}

impl Cmos {
    fn register(&self, now_secs: u64) -> u8 {
        let t = CivilTime::from_unix(now_secs);
        match self.index {
            REG_SECONDS => bcd(t.second),
            REG_MINUTES => bcd(t.minute),
            REG_HOURS => bcd(t.hour),
            REG_WEEKDAY => bcd(t.weekday),
            REG_DAY => bcd(t.day),
            REG_MONTH => bcd(t.month),
            REG_YEAR => bcd((t.year % 100) as u8),
            REG_CENTURY => bcd((t.year / 100 % 100) as u8),
            REG_A => REG_A_VALUE,
            REG_B => REG_B_VALUE,
            REG_D => REG_D_VALUE,
            _ => 0,
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 1 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if let Some(b) = data.first_mut() {
                *b = self.register(now);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmRequest> {
        if offset == 0 {
            if let Some(&b) = data.first() {
                // Bit 7 masks the NMI; the rest selects the register.
                self.index = b & 0x7f;
            }
        }
        None
    }
}

fn bcd(v: u8) -> u8 {
    (v / 10) << 4 | (v % 10)
}

/// A UTC calendar time.
#[derive(Debug, PartialEq, Eq)]
struct CivilTime {
    year: u32,
    month: u8,
    day: u8,
    /// 1 = Sunday, as the MC146818 counts.
    weekday: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl CivilTime {
    /// Days since the epoch to a date, by the proleptic Gregorian calendar (eras of 400 years).
    fn from_unix(secs: u64) -> CivilTime {
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + u64::from(month <= 2)) as u32;
        CivilTime {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday (5 when Sunday is 1).
            weekday: ((days + 4) % 7 + 1) as u8,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_dates_from_unix_time() {
        let t = |y, mo, d, wd, h, mi, s| CivilTime {
            year: y,
            month: mo,
            day: d,
            weekday: wd,
            hour: h,
            minute: mi,
            second: s,
        };
        assert_eq!(CivilTime::from_unix(0), t(1970, 1, 1, 5, 0, 0, 0));
        // 2000-02-29 12:34:56, a Tuesday.
        assert_eq!(
            CivilTime::from_unix(951_827_696),
            t(2000, 2, 29, 3, 12, 34, 56)
        );
        // 2026-11-29 23:59:59, a Sunday.
        assert_eq!(
            CivilTime::from_unix(1_795_996_799),
            t(2026, 11, 29, 1, 23, 59, 59)
        );
    }

    #[test]
    fn registers_read_through_the_index_port() {
        let mut c = Cmos::default();
        let read = |c: &mut Cmos, reg: u8| {
            assert_eq!(c.write(0, &[reg | 0x80]), None);
            let mut b = [0xffu8];
            c.read(1, &mut b);
            b[0]
        };
        assert_eq!(read(&mut c, REG_A) & 0x80, 0, "update in progress");
        assert_eq!(read(&mut c, REG_B), REG_B_VALUE);
        assert_eq!(read(&mut c, REG_D), REG_D_VALUE);
        let year = read(&mut c, REG_YEAR);
        let century = read(&mut c, REG_CENTURY);
        assert_eq!(century, 0x20);
        assert!(year >= 0x26 && year & 0x0f < 10, "{year:#x}");
        let month = read(&mut c, REG_MONTH);
        assert!((0x01..=0x12).contains(&month), "{month:#x}");
        c.index = REG_SECONDS;
        assert_eq!(c.register(1_795_996_799), 0x59);
        c.index = REG_HOURS;
        assert_eq!(c.register(1_795_996_799), 0x23);
    }
}
