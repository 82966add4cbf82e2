//! The guest side of a session: greet the host, receive the spec and the layers, start the
//! container, relay its stdio and signals, and report how it ended.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use protocol::{
    read_message, write_data, write_message, ExitStatus, Message, RunSpec, Stream, MAX_CHUNK,
    VERSION,
};
use tracing::{debug, warn};

use crate::container::{self, ChildStdio};
use crate::error::{Context, Error, Result};
use crate::unpack::unpack_layers;

/// Pipe buffer asked for the container's output pipes (bigger writes, fewer wake-ups).
const PIPE_SIZE: i32 = 1 << 20;

/// The write half of the session, shared by the threads that send.
type Writer = Arc<Mutex<File>>;

fn lock(w: &Writer) -> MutexGuard<'_, File> {
    w.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn send(w: &Writer, msg: &Message) -> Result<()> {
    write_message(&mut *lock(w), msg).map_err(Error::from)
}

/// Runs one session over `conn` (a connected stream socket), building the container in `root`.
///
/// Failures of the container (bad layer, command not found, …) are reported to the host as
/// `Failed` and end the session normally; an error is returned only when the session itself
/// broke.
pub fn serve(conn: File, root: &Path) -> Result<()> {
    let writer: Writer = Arc::new(Mutex::new(
        conn.try_clone()
            .ctx(|| "duplicate the session socket".into())?,
    ));
    let mut reader = conn;
    send(&writer, &Message::Hello { version: VERSION })?;
    let spec = match read_message(&mut reader)? {
        Some(Message::Run(spec)) => spec,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "expected the run spec, got {other:?}"
            )))
        }
        None => {
            return Err(Error::Invalid(
                "the host closed the session before the run spec".into(),
            ))
        }
    };
    match start(&spec, root, &mut reader) {
        Ok(container) => {
            send(&writer, &Message::Started)?;
            relay(container, reader, writer)
        }
        Err(e) => {
            warn!(error = %e, "the container could not be started");
            send(
                &writer,
                &Message::Failed {
                    kind: e.kind(),
                    message: e.to_string(),
                },
            )
        }
    }
}

/// A started container and the session's ends of its stdio.
struct Running {
    pid: Pid,
    stdin: Option<File>,
    stdout: File,
    stderr: File,
}

fn start(spec: &RunSpec, root: &Path, reader: &mut File) -> Result<Running> {
    let t0 = Instant::now();
    unpack_layers(root, &spec.layers, reader)?;
    let t1 = Instant::now();
    if spec.tty {
        return Err(Error::Invalid(
            "terminal mode (tty) is not supported by this guest yet".into(),
        ));
    }
    let (stdin_child, stdin) = if spec.stdin {
        let (r, w) = pipe()?;
        (r, Some(File::from(w)))
    } else {
        let null = File::open("/dev/null").ctx(|| "open /dev/null".into())?;
        (OwnedFd::from(null), None)
    };
    let (stdout, stdout_child) = pipe()?;
    let (stderr, stderr_child) = pipe()?;
    for fd in [&stdout, &stderr] {
        // Best effort: a smaller pipe only costs more wake-ups.
        let _ = fcntl(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            FcntlArg::F_SETPIPE_SZ(PIPE_SIZE),
        );
    }
    let pid = container::start(
        root,
        spec,
        ChildStdio {
            stdin: stdin_child,
            stdout: stdout_child,
            stderr: stderr_child,
        },
    )?;
    debug!(
        unpack_us = (t1 - t0).as_micros() as u64,
        setup_us = t1.elapsed().as_micros() as u64,
        pid = pid.as_raw(),
        "container executed"
    );
    Ok(Running {
        pid,
        stdin,
        stdout: File::from(stdout),
        stderr: File::from(stderr),
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx(|| "create a pipe".into())
}

/// Relays stdio and signals until the container's process is gone and its output drained,
/// then sends `Exit`.
fn relay(c: Running, reader: File, writer: Writer) -> Result<()> {
    let exited = Arc::new(Mutex::new(false));
    let out = spawn_output(c.stdout, Stream::Stdout, writer.clone())?;
    let err = spawn_output(c.stderr, Stream::Stderr, writer.clone())?;
    {
        let exited = exited.clone();
        let pid = c.pid;
        let stdin = c.stdin;
        thread::Builder::new()
            .name("host-input".into())
            .spawn(move || host_input(reader, stdin, pid, &exited))
            .ctx(|| "start the host input thread".into())?;
    }
    let status = reap_until(c.pid, &exited)?;
    for t in [out, err] {
        match t.join() {
            Ok(r) => r?,
            Err(_) => return Err(Error::Invalid("an output relay thread panicked".into())),
        }
    }
    debug!(?status, "container exited");
    send(&writer, &Message::Exit(status))
}

fn spawn_output(
    src: File,
    stream: Stream,
    writer: Writer,
) -> Result<thread::JoinHandle<Result<()>>> {
    thread::Builder::new()
        .name(format!("{stream:?}").to_lowercase())
        .spawn(move || pump_output(src, stream, &writer))
        .ctx(|| format!("start the {stream:?} relay thread"))
}

fn pump_output(mut src: File, stream: Stream, writer: &Writer) -> Result<()> {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).ctx(|| format!("read the container's {stream:?}")),
        };
        write_data(&mut *lock(writer), stream, &buf[..n])?;
    }
    send(writer, &Message::Eof(stream))
}

/// Reads the host's messages after the start: stdin, signals. If the host goes away the
/// container is killed, so nothing outlives its session.
fn host_input(mut reader: File, mut stdin: Option<File>, pid: Pid, exited: &Mutex<bool>) {
    let deliver = |sig: Signal| {
        let exited = exited.lock().unwrap_or_else(|p| p.into_inner());
        if !*exited {
            let _ = kill(pid, sig);
        }
    };
    loop {
        match read_message(&mut reader) {
            Ok(Some(Message::Data {
                stream: Stream::Stdin,
                bytes,
            })) => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(&bytes).is_err() {
                        // The container closed its stdin; the rest is dropped.
                        stdin = None;
                    }
                }
            }
            Ok(Some(Message::Eof(Stream::Stdin))) => stdin = None,
            Ok(Some(Message::Signal(signo))) => match Signal::try_from(signo) {
                Ok(sig) => deliver(sig),
                Err(_) => warn!(signo, "ignoring an unknown signal number"),
            },
            Ok(Some(Message::Resize { .. })) => {}
            Ok(Some(other)) => warn!(message = ?other, "ignoring an unexpected message"),
            Ok(None) => {
                debug!("the host closed the session; killing the container");
                deliver(Signal::SIGKILL);
                return;
            }
            Err(e) => {
                warn!(error = %e, "session read failed; killing the container");
                deliver(Signal::SIGKILL);
                return;
            }
        }
    }
}

/// Reaps children (guest-init may be PID 1) until `pid` has ended; returns its status.
/// `exited` is set before the pid is released so no signal can reach a recycled pid.
fn reap_until(pid: Pid, exited: &Mutex<bool>) -> Result<ExitStatus> {
    loop {
        let status = match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(s) => s,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| "wait for the container".into()),
        };
        let Some(child) = status.pid() else { continue };
        if child == pid {
            *exited.lock().unwrap_or_else(|p| p.into_inner()) = true;
        }
        let status = waitpid(child, None).ctx(|| format!("reap pid {child}"))?;
        if child == pid {
            return match status {
                WaitStatus::Exited(_, code) => Ok(ExitStatus::Code(code)),
                WaitStatus::Signaled(_, sig, _) => Ok(ExitStatus::Signal(sig as i32)),
                other => Err(Error::Invalid(format!("unexpected wait status {other:?}"))),
            };
        }
    }
}
