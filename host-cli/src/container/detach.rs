//! `skiff run -d`: start the recorded container's monitor (skiff re-executed in its hidden
//! `container-monitor` mode, in a session of its own), wait until the container runs, print
//! its id.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::state::{self, Container, State, Status};

/// How long `run -d` waits for the container to start, beyond the boot timeout.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts the monitor of the just created container `c`; returns skiff's exit code.
pub fn start(c: Container) -> Result<i32> {
    let log = c.dir.join("monitor.log");
    let stderr = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let exe = std::env::current_exe().context("cannot find the skiff executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("container-monitor")
        .arg(&c.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: setsid is async-signal-safe; the child leaves the user's session and terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut monitor = match cmd.spawn() {
        Ok(m) => m,
        Err(e) => {
            let _ = c.remove();
            return Err(e).context("cannot start the container's monitor");
        }
    };
    // The monitor is reaped by whoever is its parent after this process exits.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if !c.dir.exists() {
            // `--rm`: the container already ran and was removed.
            println!("{}", c.config.id);
            return Ok(0);
        }
        let s: State = state::read_json(&c.state_path())?;
        match s.status {
            Status::Running => {
                println!("{}", c.config.id);
                return Ok(0);
            }
            Status::Exited => {
                // A container that could not start is an error of `run`; one that ran and
                // already ended is not.
                let code = s.exit_code.unwrap_or(125);
                return match s.error {
                    Some(e) if code >= 125 => {
                        eprintln!("skiff: error: {e}");
                        Ok(code)
                    }
                    _ => {
                        println!("{}", c.config.id);
                        Ok(0)
                    }
                };
            }
            Status::Created => {}
        }
        if let Some(status) = monitor.try_wait().context("cannot wait for the monitor")? {
            // It may have written its last state (or removed the container) just before it
            // ended.
            let s: Option<State> = state::read_json(&c.state_path()).ok();
            if s.is_some_and(|s| s.status == Status::Created) {
                let why = std::fs::read_to_string(&log).unwrap_or_default();
                let why = why
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                bail!(
                    "the container's monitor ended ({status}) before the container started: {why}"
                );
            }
            continue;
        }
        if Instant::now() >= deadline {
            bail!(
                "container {} did not start within {}s",
                c.config.name,
                START_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
