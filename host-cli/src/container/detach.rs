//! `skiff run -d` and `skiff start`: start the recorded container's monitor (skiff re-executed
//! in its hidden `container-monitor` mode, in a session of its own), wait until the container
//! runs, print its id (or the name it was started by).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::state::Container;

/// How long `run -d` waits for the container to start, beyond the boot timeout.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Names the descriptor on which a monitor reports how its container started: one line,
/// `running`, or `exited CODE [ERROR]` for a container that ended before it was seen running
/// (and may be gone already with `--rm`).
pub const START_REPORT_FD: &str = "SKIFF_START_REPORT_FD";

/// Starts the monitor of container `c` and prints `shown` once it runs; returns skiff's exit
/// code. A `fresh` container (just created by `run -d`) is removed if its monitor cannot start.
pub fn start(c: Container, shown: &str, fresh: bool) -> Result<i32> {
    let log = c.dir.join("monitor.log");
    let stderr = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let exe = std::env::current_exe().context("cannot find the skiff executable")?;
    let (report, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("cannot create the start report pipe")?;
    let w = report_w.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.arg("container-monitor")
        .arg(&c.dir)
        .env(START_REPORT_FD, w.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: setsid and fcntl are async-signal-safe. The child leaves the user's session and
    // terminal, and keeps the report pipe's write end across exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::fcntl(w, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    drop(report_w);
    let mut monitor = match spawned {
        Ok(m) => m,
        Err(e) => {
            if fresh {
                let _ = c.remove();
            }
            return Err(e).context("cannot start the container's monitor");
        }
    };
    // The monitor is reaped by whoever is its parent after this process exits.
    let line = read_report(File::from(report), START_TIMEOUT).with_context(|| {
        format!(
            "container {} did not start within {}s",
            c.config.name,
            START_TIMEOUT.as_secs()
        )
    })?;
    let mut words = line.trim_end().splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("running"), _, _) => {
            println!("{shown}");
            Ok(0)
        }
        (Some("exited"), Some(code), error) => {
            // A container that could not start is an error of `run`; one that ran and
            // already ended is not.
            let code: i32 = code.parse().unwrap_or(125);
            match error.filter(|e| !e.is_empty()) {
                Some(e) if code >= 125 => {
                    eprintln!("skiff: error: {e}");
                    Ok(code)
                }
                _ => {
                    println!("{shown}");
                    Ok(0)
                }
            }
        }
        _ => {
            let status = monitor.wait().context("cannot wait for the monitor")?;
            let why = std::fs::read_to_string(&log).unwrap_or_default();
            let why = why
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            bail!("the container's monitor ended ({status}) before the container started: {why}")
        }
    }
}

/// Reads the monitor's one-line start report; an empty line when it ended without one.
fn read_report(mut pipe: File, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut buf = [0u8; 1024];
    while !line.contains(&b'\n') && line.len() < 64 << 10 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no start report from the monitor");
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e).context("cannot wait for the monitor's report"),
        }
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("cannot read the monitor's report"),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}
