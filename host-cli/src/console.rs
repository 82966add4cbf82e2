//! `--debug`: follows the guest's console log file and copies it to stderr as it grows.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A thread copying new console output to stderr until stopped.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Follower {
    pub fn start(path: &Path) -> Follower {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let path = path.to_path_buf();
        let thread = std::thread::spawn(move || follow(&path, &flag));
        Follower { stop, thread }
    }

    /// Copies what is left, then ends the thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn follow(path: &PathBuf, stop: &AtomicBool) {
    let mut file = None;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if file.is_none() {
            file = std::fs::File::open(path).ok();
        }
        if let Some(f) = file.as_mut() {
            while let Ok(n @ 1..) = f.read(&mut buf) {
                let _ = std::io::stderr().write_all(&buf[..n]);
            }
        }
        if stopping {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
