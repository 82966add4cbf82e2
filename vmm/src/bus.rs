//! Address-space dispatch: maps port or MMIO ranges to devices, for the exits the vCPUs take.

use std::sync::{Arc, Mutex};

/// Something a device asks of the VM as a side effect of a guest write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmRequest {
    /// The guest asked for a system reset.
    Reset,
}

/// A device on a bus; offsets are relative to the start of its range.
pub trait BusDevice: Send {
    /// Handles a guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a guest write at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmRequest>;
}

/// A shared device.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors building a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("device range {base:#x}+{len:#x} overlaps another device")]
    Overlap { base: u64, len: u64 },
}

/// One address space (ports or MMIO), fixed once the VM runs.
#[derive(Default, Clone)]
pub struct Bus {
    /// Sorted by base; ranges never overlap.
    ranges: Vec<(u64, u64, SharedDevice)>,
}

impl Bus {
    /// Adds `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .ok_or(BusError::Overlap { base, len })?;
        if len == 0 || self.ranges.iter().any(|(b, l, _)| base < b + l && *b < end) {
            return Err(BusError::Overlap { base, len });
        }
        let at = self.ranges.partition_point(|(b, _, _)| *b < base);
        self.ranges.insert(at, (base, len, device));
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let at = self.ranges.partition_point(|(b, _, _)| *b <= addr);
        let (base, len, device) = self.ranges.get(at.checked_sub(1)?)?;
        (addr - base < *len).then_some((addr - base, device))
    }

    /// Dispatches a read; returns false (and leaves `data` alone) if no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((offset, device)) = self.find(addr) else {
            return false;
        };
        if let Ok(mut d) = device.lock() {
            d.read(offset, data);
        }
        true
    }

    /// Dispatches a write; `None` if no device is there, else the device's request (if any).
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<Option<VmRequest>> {
        let (offset, device) = self.find(addr)?;
        Some(device.lock().ok().and_then(|mut d| d.write(offset, data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Register(u8);

    impl BusDevice for Register {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data[0] = self.0 + offset as u8;
        }
        fn write(&mut self, _offset: u64, data: &[u8]) -> Option<VmRequest> {
            self.0 = data[0];
            (data[0] == 0xfe).then_some(VmRequest::Reset)
        }
    }

    #[test]
    fn dispatches_by_range_with_relative_offsets() {
        let mut bus = Bus::default();
        bus.insert(0x3f8, 8, Arc::new(Mutex::new(Register(0x10))))
            .unwrap();
        bus.insert(0x60, 5, Arc::new(Mutex::new(Register(0x20))))
            .unwrap();
        let mut b = [0u8];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 0x12);
        assert!(bus.read(0x64, &mut b));
        assert_eq!(b[0], 0x24);
        assert!(!bus.read(0x400, &mut b));
        assert!(!bus.read(0x5f, &mut b));
        assert_eq!(bus.write(0x64, &[0xfe]), Some(Some(VmRequest::Reset)));
        assert_eq!(bus.write(0x3f8, &[1]), Some(None));
        assert_eq!(bus.write(0x1000, &[1]), None);
    }

    #[test]
    fn overlapping_ranges_are_refused() {
        let mut bus = Bus::default();
        bus.insert(0x100, 0x10, Arc::new(Mutex::new(Register(0))))
            .unwrap();
        assert!(bus
            .insert(0x10f, 1, Arc::new(Mutex::new(Register(0))))
            .is_err());
        assert!(bus
            .insert(0xf0, 0x11, Arc::new(Mutex::new(Register(0))))
            .is_err());
        assert!(bus
            .insert(0x110, 1, Arc::new(Mutex::new(Register(0))))
            .is_ok());
    }
}
