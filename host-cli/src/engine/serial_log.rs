//! The qemu engine's serial console: qemu connects its serial port to a Unix socket of skiff's,
//! and a thread copies what the guest prints into the console log through the VMM's console
//! writer, so both engines cap the log's size and notice a guest kernel panic the same way.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use vmm::devices::console::{ConsoleWriter, PanicNote};

/// The copy of one VM's console into its log.
pub struct SerialLog {
    socket: PathBuf,
    note: PanicNote,
    thread: Option<JoinHandle<()>>,
}

impl SerialLog {
    /// Listens on `socket` (qemu's `-chardev socket,path=…`) and copies into `log`.
    pub fn listen(socket: &Path, log: &Path) -> Result<SerialLog> {
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let note = PanicNote::default();
        let writer = ConsoleWriter::new(file, note.clone());
        let thread = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || copy(&listener, writer))
            .context("cannot start the console thread")?;
        Ok(SerialLog {
            socket: socket.to_path_buf(),
            note,
            thread: Some(thread),
        })
    }

    /// The guest kernel's panic line, if it printed one.
    pub fn panic(&self) -> Option<String> {
        self.note.get()
    }

    /// Ends the copy once qemu is gone; a qemu that never connected is stood in for.
    pub fn finish(&mut self) {
        if let Some(t) = self.thread.take() {
            if !t.is_finished() {
                let _ = UnixStream::connect(&self.socket);
            }
            let _ = t.join();
        }
    }
}

impl Drop for SerialLog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Copies the first connection's bytes into `writer` until it closes.
fn copy(listener: &UnixListener, mut writer: ConsoleWriter<File>) {
    let Ok((mut conn, _)) = listener.accept() else {
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let _ = writer.write_all(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
