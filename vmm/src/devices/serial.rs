//! The 16550 UART at COM1 (vm-superio), writing to the console log; interrupts via an irqfd.

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial as Uart, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{BusDevice, VmRequest};

/// COM1's I/O port base.
pub const COM1_PORT: u16 = 0x3f8;
/// Number of UART registers.
pub const COM1_LEN: u64 = 8;
/// COM1's ISA interrupt.
pub const COM1_IRQ: u32 = 4;

/// Raises the UART's interrupt by signalling an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// A serial port whose output goes to `W`.
pub struct Serial<W: Write + Send> {
    uart: Uart<IrqTrigger, NoEvents, W>,
}

impl<W: Write + Send> Serial<W> {
    pub fn new(irq: EventFd, out: W) -> Self {
        Serial {
            uart: Uart::new(IrqTrigger(irq), out),
        }
    }
}

impl<W: Write + Send> BusDevice for Serial<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.uart.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmRequest> {
        if let (Some(b), Ok(off)) = (data.first(), u8::try_from(offset)) {
            if let Err(e) = self.uart.write(off, *b) {
                tracing::debug!("serial write at offset {off}: {e:?}");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_to_thr_reach_the_output() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut serial = Serial::new(irq, Vec::new());
        for b in b"hi\n" {
            serial.write(0, &[*b]);
        }
        assert_eq!(serial.uart.writer(), b"hi\n");
        // Line status: transmitter empty.
        let mut lsr = [0u8];
        serial.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }
}
