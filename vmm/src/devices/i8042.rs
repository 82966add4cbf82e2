//! A minimal i8042 keyboard controller: enough for the guest's `reboot=k` (command 0xfe on
//! port 0x64 pulses the reset line), which ends the VM.

use crate::bus::{BusDevice, VmRequest};

/// First port of the controller (data); the status/command port is at offset 4 (0x64).
pub const I8042_PORT: u16 = 0x60;
/// Ports 0x60..=0x64.
pub const I8042_LEN: u64 = 5;

const COMMAND_OFFSET: u64 = 4;
const CMD_RESET_CPU: u8 = 0xfe;

/// The controller: never has input, so status reads 0 (buffers empty) and data reads 0.
#[derive(Debug, Default)]
pub struct I8042;

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmRequest> {
        (offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU))
            .then_some(VmRequest::Reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_requests_a_reset() {
        let mut kbd = I8042;
        assert_eq!(
            kbd.write(COMMAND_OFFSET, &[CMD_RESET_CPU]),
            Some(VmRequest::Reset)
        );
        assert_eq!(kbd.write(COMMAND_OFFSET, &[0xd1]), None);
        assert_eq!(kbd.write(0, &[CMD_RESET_CPU]), None);
        let mut status = [0xffu8];
        kbd.read(COMMAND_OFFSET, &mut status);
        assert_eq!(status[0], 0);
    }
}
