//! Supervising a container: whoever holds the container's lock for the container's whole life
//! owns its VM (through [`crate::launch`]), keeps `state.json` current, serves the API socket,
//! and removes the container at the end when it was started with `--rm` ([`supervise`]). That
//! is the foreground `skiff run` itself, or for a detached container its monitor,
//! `skiff container-monitor DIR` ([`run`]), started by `run -d` in a session of its own, which
//! also writes the container's output to its log. The VM process dies with its supervisor
//! (`PR_SET_PDEATHSIG` on qemu, threads for kvm).

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::api::{self, Request, Response};
use super::logs;
use super::state::{self, Container, State, Status};
use crate::forward::Blocked;
use crate::launch::{self, Attach, VmConfig, Watcher};
use crate::session::{Outcome, SignalSender};

/// After SIGKILL, how long the guest gets before the VM is cut off.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// At the end, how long API requests still being answered may take.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// What the API handlers and the monitor's main thread share.
#[derive(Default)]
struct Shared {
    signals: Mutex<Option<SignalSender>>,
    /// The container's exit code once it has ended.
    ended: Mutex<Option<i32>>,
    ended_cv: Condvar,
    /// Cut the VM off now.
    cut: AtomicBool,
    /// API requests being answered.
    answering: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Waits up to `timeout` (`None`: forever) for the end; the exit code if it came.
    fn wait_end(&self, timeout: Option<Duration>) -> Option<i32> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut ended = lock(&self.ended);
        loop {
            if let Some(code) = *ended {
                return Some(code);
            }
            match deadline {
                None => ended = self.ended_cv.wait(ended).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    ended = self
                        .ended_cv
                        .wait_timeout(ended, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    /// Sends a signal; before guest-init connected only SIGKILL can act (it cuts the VM off).
    fn signal(&self, signo: i32) -> Result<(), String> {
        if lock(&self.ended).is_some() {
            return Err("the container is not running".into());
        }
        match lock(&self.signals).as_ref() {
            Some(s) => s.send(signo).map_err(|e| e.to_string()),
            None if signo == libc::SIGKILL => {
                self.cut.store(true, Ordering::SeqCst);
                Ok(())
            }
            None => Err("the container is still starting".into()),
        }
    }

    fn stop(&self, timeout: Duration, signal: i32) -> Option<i32> {
        if let Some(code) = *lock(&self.ended) {
            return Some(code);
        }
        let _ = self.signal(signal);
        if let Some(code) = self.wait_end(Some(timeout)) {
            return Some(code);
        }
        tracing::debug!(signal, "the container ignored its stop signal; SIGKILL");
        let _ = self.signal(libc::SIGKILL);
        if let Some(code) = self.wait_end(Some(KILL_GRACE)) {
            return Some(code);
        }
        tracing::debug!("the guest did not end the container; cutting the VM off");
        self.cut.store(true, Ordering::SeqCst);
        self.wait_end(None)
    }

    fn handle(&self, req: Request) -> Response {
        let (exit_code, error) = match req {
            Request::Kill { signal } => (None, self.signal(signal).err()),
            Request::Stop { timeout, signal } => {
                (self.stop(Duration::from_secs(timeout), signal), None)
            }
            Request::Wait => (self.wait_end(None), None),
        };
        Response { exit_code, error }
    }
}

/// Runs the monitor of the container in `dir` until the container has ended.
pub fn run(dir: &Path) -> Result<i32> {
    let c = state::open(dir)?;
    let _lock = c.lock_monitor()?;
    let (stdout, stderr) = logs::open_writers(&c.log_path())
        .with_context(|| format!("cannot open {}", c.log_path().display()))?;
    let attach = Attach {
        stdin: None,
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
    };
    supervise(&c, attach, None, start_report())?;
    Ok(0)
}

/// The start report descriptor `run -d` handed down (see [`super::detach::START_REPORT_FD`]),
/// made close-on-exec again so that qemu does not hold it open.
fn start_report() -> Option<File> {
    let fd: RawFd = std::env::var(super::detach::START_REPORT_FD)
        .ok()?
        .parse()
        .ok()?;
    std::env::remove_var(super::detach::START_REPORT_FD);
    // SAFETY: fcntl on a number is harmless; the descriptor is owned from here on only if it
    // is open, and nothing else in this process knows it.
    unsafe {
        if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            return None;
        }
        Some(File::from_raw_fd(fd))
    }
}

/// Signals of the supervising process that go to the container (a foreground run).
pub struct Forward {
    pub blocked: Blocked,
    /// Terminal resizes follow the user's terminal.
    pub tty: bool,
}

/// How a supervised container ended.
pub struct Finished {
    /// docker's exit code, as recorded in the state.
    pub code: i32,
    /// What the launch returned.
    pub outcome: Result<Outcome>,
    /// The VM was cut off by a kill, stop or `rm -f`.
    pub cut: bool,
}

/// The VM of container `c`, as its config describes it.
pub fn vm_config(c: &Container) -> VmConfig {
    VmConfig {
        engine: c.config.engine,
        cpus: c.config.cpus,
        memory_mib: c.config.memory_mib,
        debug: c.config.debug,
        net_mac: c
            .config
            .network
            .has_device()
            .then(|| c.config.network.mac_for(&c.config.id)),
        publish: c.config.network.publish.clone(),
        disks: super::disks::attachments(&c.dir, c.config.read_only),
        shares: c.config.shares.clone(),
    }
}

/// Runs the container `c`, whose lock the caller holds, until it has ended: pins its store
/// image, serves its API, records its state; removes it at the end with `--rm`.
/// `report` (from `run -d`) hears `running` once the container runs, or how it ended if it
/// never did.
pub fn supervise(
    c: &Container,
    attach: Attach,
    forward: Option<Forward>,
    report: Option<File>,
) -> Result<Finished> {
    // The container keeps a store image in use for its whole life: rmi refuses it, prune
    // keeps its blobs.
    let _pin = match &c.config.store_manifest {
        Some(m) => {
            let digest = image::Digest::parse(m)
                .with_context(|| format!("bad manifest digest {m:?} in the container's config"))?;
            Some(crate::commands::store()?.pin(&digest)?)
        }
        None => None,
    };
    let listener = api::listen(&c.dir)?;
    let mut st = State::created();
    st.monitor_pid = Some(std::process::id());
    c.write_state(&st)?;
    let shared = Arc::new(Shared::default());
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || serve(&listener, &shared))
            .context("cannot start the API thread")?;
    }

    let vm = vm_config(c);
    let mut watcher = Supervisor {
        c,
        state: st,
        shared: &shared,
        forward,
        report,
    };
    let outcome = launch::launch(&vm, c.config.spec.clone(), attach, &mut watcher);
    let report = watcher.report.take();
    let mut st = watcher.state;
    let cut = shared.cut.load(Ordering::SeqCst);
    let code = match &outcome {
        Ok(Outcome::Exited(status)) => status.docker_code(),
        Ok(Outcome::Failed { kind, message }) => {
            st.error = Some(message.clone());
            kind.docker_code()
        }
        Err(_) if cut => 137,
        Err(e) => {
            st.error = Some(format!("{e:#}"));
            125
        }
    };
    tracing::debug!(code, "the container ended");
    st.status = Status::Exited;
    st.exit_code = Some(code);
    st.finished = Some(super::time::now());
    st.vm_dir = None;
    c.write_state(&st)?;
    *lock(&shared.ended) = Some(code);
    shared.ended_cv.notify_all();
    // Let the handlers answer their waiting clients before the process goes.
    let deadline = Instant::now() + ANSWER_GRACE;
    while shared.answering.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(mut r) = report {
        let error = st.error.as_deref().unwrap_or("").replace('\n', " ");
        let _ = writeln!(r, "exited {code} {error}");
    }
    if c.config.auto_remove {
        c.remove()?;
    }
    Ok(Finished { code, outcome, cut })
}

fn serve(listener: &UnixListener, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        shared.answering.fetch_add(1, Ordering::SeqCst);
        let handler = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("api-request".into())
            .spawn(move || {
                answer(&conn, &handler);
                handler.answering.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            shared.answering.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("cannot start an API thread: {e}");
        }
    }
}

fn answer(conn: &UnixStream, shared: &Shared) {
    let resp = match api::read_request(conn) {
        Ok(req) => {
            tracing::debug!(?req, "API request");
            shared.handle(req)
        }
        Err(e) => Response {
            exit_code: None,
            error: Some(format!("{e:#}")),
        },
    };
    if let Err(e) = api::respond(conn, &resp) {
        tracing::debug!("{e:#}");
    }
}

/// Records the container's progress in its state file, hands the session to the API (and to
/// the signal forwarder of a foreground run).
struct Supervisor<'a> {
    c: &'a Container,
    state: State,
    shared: &'a Shared,
    forward: Option<Forward>,
    /// Where `run -d` waits to hear that the container runs.
    report: Option<File>,
}

impl Supervisor<'_> {
    fn save(&self) {
        if let Err(e) = self.c.write_state(&self.state) {
            tracing::warn!("{e:#}");
        }
    }
}

impl Watcher for Supervisor<'_> {
    fn vm_started(&mut self, vm_dir: &Path) -> Result<()> {
        self.state.vm_dir = Some(vm_dir.to_path_buf());
        self.c.write_state(&self.state)?;
        // While the guest boots: off the path of the run.
        if let Err(e) = self.c.sync_config() {
            tracing::warn!("{e:#}");
        }
        Ok(())
    }

    fn session(&mut self, signals: &SignalSender) {
        *lock(&self.shared.signals) = Some(signals.clone());
        if let Some(f) = &self.forward {
            if let Err(e) = f.blocked.forward(signals.clone(), f.tty) {
                tracing::warn!("{e:#}");
            }
        }
    }

    fn tick(&mut self, signals: &SignalSender) -> bool {
        if self.state.status == Status::Created && signals.is_running() {
            self.state.status = Status::Running;
            self.state.started = Some(super::time::now());
            self.save();
            if let Some(mut r) = self.report.take() {
                let _ = r.write_all(b"running\n");
            }
        }
        self.shared.cut.load(Ordering::SeqCst)
    }
}
