//! The helper programs skiff starts (qemu, passt, mke2fs): `$SKIFF_<NAME>` when set, else the
//! first match on `PATH`, then the system directories an ordinary user's `PATH` may lack
//! (`/usr/sbin`, `/sbin`). What a missing one means is each caller's to say. Also how a helper
//! is tied to skiff's life ([`tie_to_parent`]) and stopped with it ([`Helper`]).

use std::path::PathBuf;

/// The program `name`: the path in environment variable `var` when it is set and not empty,
/// else `name` in the first directory of `PATH` that has it.
pub fn find(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Makes the child `cmd` starts die with the thread that starts it (`PR_SET_PDEATHSIG`), so a
/// skiff killed with SIGKILL leaves no helper behind, and keeps the descriptors `inherit` open
/// across its exec (every other descriptor of skiff's is close-on-exec). A skiff that died
/// before the child's prctl took effect is caught by the parent check.
pub fn tie_to_parent(cmd: &mut std::process::Command, inherit: Vec<std::os::fd::RawFd>) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: fcntl, prctl and getppid are async-signal-safe; they change only the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other(
                    "skiff exited while starting a helper",
                ));
            }
            Ok(())
        });
    }
}

/// A helper process skiff started (passt, virtiofsd): killed and reaped when dropped, and
/// asked now and then whether it ended early, with the last line of its log to say why.
pub struct Helper {
    child: std::process::Child,
    /// What the process is, for messages ("passt", "virtiofsd of /src").
    what: String,
    log: PathBuf,
    reported: bool,
}

impl Helper {
    /// Starts `bin` with `args`, named `what` in messages: stdin from /dev/null, stdout and
    /// stderr into `log`, in a process group of its own (the terminal's Ctrl-C is the
    /// container's), tied to skiff's life, the descriptor `inherit` kept open across its exec.
    pub fn spawn(
        bin: &std::path::Path,
        args: &[String],
        inherit: std::os::fd::RawFd,
        what: String,
        log: PathBuf,
    ) -> anyhow::Result<Helper> {
        use anyhow::Context;
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("cannot duplicate {}", log.display()))?;
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        tie_to_parent(&mut cmd, vec![inherit]);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        tracing::debug!(pid = child.id(), "{what} started");
        Ok(Helper {
            child,
            what,
            log,
            reported: false,
        })
    }

    /// The first time the process is found gone: how it ended, with the last line of its log
    /// that `telling` accepts.
    pub fn poll_gone(&mut self, telling: impl Fn(&str) -> bool) -> Option<String> {
        if self.reported {
            return None;
        }
        let status = self.child.try_wait().ok().flatten()?;
        self.reported = true;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let what = &self.what;
        Some(
            match log
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && telling(l))
            {
                Some(line) => format!("{what} ended ({status}): {line}"),
                None => format!("{what} ended ({status})"),
            },
        )
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
