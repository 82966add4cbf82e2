//! The host side of a session with guest-init, over an already connected `UnixStream` (the VM's
//! hybrid-vsock socket after `CONNECT`, or guest-init's native socket).
//!
//! ```no_run
//! # use std::os::unix::net::UnixStream;
//! # use skiff::session::{Session, SessionIo, Outcome};
//! # fn demo(stream: UnixStream, spec: protocol::RunSpec)
//! #     -> Result<(), skiff::session::SessionError> {
//! let session = Session::new(stream)?;
//! let signals = session.signal_sender(); // Clone + Send: e.g. for a SIGINT handler
//! let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
//! let io = SessionIo {
//!     stdin: Some(Box::new(std::io::stdin())),
//!     stdout: &mut out,
//!     stderr: &mut err,
//! };
//! let report = session.run(&spec, io)?;
//! match report.outcome {
//!     Outcome::Exited(status) => std::process::exit(status.docker_code()),
//!     Outcome::Failed { kind, message } => {
//!         eprintln!("{message}");
//!         std::process::exit(kind.docker_code())
//!     }
//! }
//! # }
//! ```
//!
//! [`Session::run`] checks the guest's `Hello`, sends the spec (the image reaches the guest as a
//! disk, not through the session), waits for `Started` or `Failed`, then relays: the stdin
//! source → `Data`/`Eof` (a pump thread, only when `spec.stdin`, sending no more than the
//! guest's `StdinCredit` allows), the guest's stdout and stderr → the two writers (flushed per
//! chunk), until `Exit`. A guest that closes the stream without `Exit` is an error.
//! [`SignalSender::send`] may be called at any time: before the start the signals are held back
//! and delivered right after `Started`; after the end they are dropped.
//! [`SignalSender::cut_off`] ends a session that does not end by itself: the stream is shut
//! down, guest-init kills the process, and `run` or `exec` returns [`SessionError::CutOff`].
//!
//! The stdin pump is detached: a source that blocks (a terminal) may keep its thread blocked
//! after `run` returns; it ends at its next read result. It waits for credit without holding
//! the session's writer, so signals and resizes never wait behind stdin the container does not
//! read.

use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use protocol::{
    read_message, write_data, write_message, ExecSpec, ExitStatus, FailureKind, Message,
    ProtocolError, RunSpec, Stream, MAX_CHUNK, VERSION,
};
use tracing::debug;

/// Read buffer of the session stream: many small frames cost one read.
const READ_BUF: usize = 1 << 20;

/// Why a session could not be carried through.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("guest speaks protocol version {guest}, this skiff speaks {host}")]
    Version { guest: u32, host: u32 },
    #[error("session stream: {what}: {source}")]
    Protocol {
        what: &'static str,
        #[source]
        source: ProtocolError,
    },
    #[error("session stream: {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("guest sent {got} while the host expected {expected}")]
    Unexpected { expected: &'static str, got: String },
    #[error("the guest closed the session {when}")]
    Closed { when: &'static str },
    #[error("the session was cut off before the process ended; guest-init kills it")]
    CutOff,
    #[error("writing the container's {stream:?}: {source}")]
    Output {
        stream: Stream,
        #[source]
        source: io::Error,
    },
}

/// How the container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process ran and ended with this status.
    Exited(ExitStatus),
    /// The guest could not start it.
    Failed { kind: FailureKind, message: String },
}

/// Where the time went, measured on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// From the spec written to `Started` (or `Failed`) received: the guest's container setup.
    pub start: Duration,
    /// From the spec written to `Exit` received, when the container ran.
    pub exit: Option<Duration>,
}

/// The result of a session that was carried through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    pub timings: Timings,
}

/// The caller's side of the container's stdio.
pub struct SessionIo<'a> {
    /// Read until end of file and sent as the container's stdin when the spec asks for stdin.
    pub stdin: Option<Box<dyn Read + Send>>,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

enum Phase {
    /// Before `Started`: signals and resizes wait here.
    Starting(Vec<Message>),
    Running,
    Ended,
}

struct Shared {
    writer: Mutex<UnixStream>,
    phase: Mutex<Phase>,
    credit: Credit,
    /// The stream once more, to shut it down without waiting for the writer.
    control: UnixStream,
    /// [`SignalSender::cut_off`] was called: stream errors from now on are that.
    cut: AtomicBool,
}

/// Bytes of stdin the guest has room for (the protocol's flow control).
#[derive(Default)]
struct Credit {
    state: Mutex<CreditState>,
    granted: Condvar,
}

#[derive(Default)]
struct CreditState {
    bytes: u64,
    /// The session is over: no more credit comes.
    closed: bool,
}

impl Credit {
    fn grant(&self, bytes: u32) {
        let mut st = lock(&self.state);
        st.bytes = st.bytes.saturating_add(u64::from(bytes));
        self.granted.notify_one();
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.granted.notify_one();
    }

    /// Waits for credit and takes up to `want` bytes of it; `None` once the session is over.
    fn take(&self, want: usize) -> Option<usize> {
        let mut st = lock(&self.state);
        while st.bytes == 0 && !st.closed {
            st = self.granted.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.closed {
            return None;
        }
        let n = want.min(usize::try_from(st.bytes).unwrap_or(usize::MAX));
        st.bytes -= n as u64;
        Some(n)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn send(&self, what: &'static str, msg: &Message) -> Result<(), SessionError> {
        write_message(&mut *lock(&self.writer), msg).map_err(|source| self.failed(what, source))
    }

    /// The error for a failure of the stream: the cut, when it was cut off.
    fn failed(&self, what: &'static str, source: ProtocolError) -> SessionError {
        if self.cut.load(Ordering::SeqCst) {
            SessionError::CutOff
        } else {
            SessionError::Protocol { what, source }
        }
    }
}

/// Injects signals into a running session; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct SignalSender {
    shared: Arc<Shared>,
}

impl SignalSender {
    /// Delivers `signo` to the container's process (held until the start; dropped after the end).
    pub fn send(&self, signo: i32) -> Result<(), SessionError> {
        self.control("send a signal", Message::Signal(signo))
    }

    /// Tells the process's terminal its new size (held until the start; dropped after the end).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), SessionError> {
        self.control("send a resize", Message::Resize { rows, cols })
    }

    /// Tells guest-init that these files of shared directories changed on the host (held
    /// until the start; dropped after the end).
    pub fn files_changed(&self, files: Vec<protocol::ChangedFile>) -> Result<(), SessionError> {
        self.control("send file changes", Message::FilesChanged(files))
    }

    /// Ends a session that has not ended (a process that ignores its signals, a guest that no
    /// longer answers): shuts the stream down both ways without waiting for anything. Returns
    /// whether there was a session to cut.
    pub fn cut_off(&self) -> bool {
        if matches!(*lock(&self.shared.phase), Phase::Ended) {
            return false;
        }
        self.shared.cut.store(true, Ordering::SeqCst);
        if let Err(e) = self.shared.control.shutdown(std::net::Shutdown::Both) {
            debug!(error = %e, "cannot shut the session stream down");
        }
        true
    }

    /// Whether the process has started and not yet ended.
    pub fn is_running(&self) -> bool {
        matches!(*lock(&self.shared.phase), Phase::Running)
    }

    /// Holds `msg` back, drops it, or sends it; the phase is not held while sending, so a
    /// slow stream never blocks `is_running` or other callers behind it.
    fn control(&self, what: &'static str, msg: Message) -> Result<(), SessionError> {
        match &mut *lock(&self.shared.phase) {
            Phase::Starting(pending) => {
                pending.push(msg);
                return Ok(());
            }
            Phase::Ended => return Ok(()),
            Phase::Running => {}
        }
        self.shared.send(what, &msg)
    }
}

/// One session with guest-init.
pub struct Session {
    reader: BufReader<UnixStream>,
    shared: Arc<Shared>,
    /// Called once when the container runs, before any of its output is relayed.
    on_started: Option<Box<dyn FnOnce() + Send>>,
}

impl Session {
    /// Wraps a connected stream; nothing is read or written yet.
    pub fn new(stream: UnixStream) -> Result<Session, SessionError> {
        let dup = || {
            stream.try_clone().map_err(|source| SessionError::Io {
                what: "duplicate the session socket",
                source,
            })
        };
        let (writer, control) = (dup()?, dup()?);
        Ok(Session {
            reader: BufReader::with_capacity(READ_BUF, stream),
            shared: Arc::new(Shared {
                writer: Mutex::new(writer),
                phase: Mutex::new(Phase::Starting(Vec::new())),
                credit: Credit::default(),
                control,
                cut: AtomicBool::new(false),
            }),
            on_started: None,
        })
    }

    /// Has `f` called once the guest reports the container running, before any of its output
    /// is relayed (e.g. to record the container's state without lagging behind its output).
    pub fn on_started(&mut self, f: impl FnOnce() + Send + 'static) {
        self.on_started = Some(Box::new(f));
    }

    /// A handle that sends signals to the container.
    pub fn signal_sender(&self) -> SignalSender {
        SignalSender {
            shared: self.shared.clone(),
        }
    }

    /// Carries the session through: see the module documentation.
    pub fn run(mut self, spec: &RunSpec, io: SessionIo<'_>) -> Result<Report, SessionError> {
        let result = self.run_inner(spec, io);
        self.end();
        result
    }

    /// Carries an exec session through (a connection to guest-init's exec port): `Hello`,
    /// `Exec`, then as [`Session::run`] after the spec.
    pub fn exec(mut self, spec: &ExecSpec, io: SessionIo<'_>) -> Result<Report, SessionError> {
        let result = self.exec_inner(spec, io);
        self.end();
        result
    }

    /// Signals and resizes are dropped from now on; the stdin pump stops.
    fn end(&self) {
        *lock(&self.shared.phase) = Phase::Ended;
        self.shared.credit.close();
    }

    fn exec_inner(&mut self, spec: &ExecSpec, io: SessionIo<'_>) -> Result<Report, SessionError> {
        self.expect_hello()?;
        let t0 = Instant::now();
        self.shared
            .send("send the exec spec", &Message::Exec(spec.clone()))?;
        self.finish(spec.stdin, io, t0)
    }

    fn expect_hello(&mut self) -> Result<(), SessionError> {
        match self.read("before its hello")? {
            Message::Hello { version } if version == VERSION => Ok(()),
            Message::Hello { version } => Err(SessionError::Version {
                guest: version,
                host: VERSION,
            }),
            other => Err(unexpected("Hello", &other)),
        }
    }

    fn read(&mut self, when: &'static str) -> Result<Message, SessionError> {
        match read_message(&mut self.reader) {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) if self.shared.cut.load(Ordering::SeqCst) => Err(SessionError::CutOff),
            Ok(None) => Err(SessionError::Closed { when }),
            Err(source) => Err(self.shared.failed(when, source)),
        }
    }

    fn run_inner(&mut self, spec: &RunSpec, io: SessionIo<'_>) -> Result<Report, SessionError> {
        self.expect_hello()?;
        let t0 = Instant::now();
        let stamped = RunSpec {
            host_time_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            ..spec.clone()
        };
        self.shared
            .send("send the run spec", &Message::Run(Box::new(stamped)))?;
        self.finish(spec.stdin, io, t0)
    }

    /// From the spec sent to `Exit`: waits for the start, then relays.
    fn finish(
        &mut self,
        stdin: bool,
        io: SessionIo<'_>,
        sent: Instant,
    ) -> Result<Report, SessionError> {
        match self.read("before starting the container")? {
            Message::Started => {}
            Message::Failed { kind, message } => {
                return Ok(Report {
                    outcome: Outcome::Failed { kind, message },
                    timings: Timings {
                        start: sent.elapsed(),
                        exit: None,
                    },
                })
            }
            other => return Err(unexpected("Started or Failed", &other)),
        }
        let start = sent.elapsed();
        debug!(?start, "container started");
        self.begin_running()?;
        if stdin {
            self.spawn_stdin_pump(io.stdin)?;
        }

        let (stdout, stderr) = (io.stdout, io.stderr);
        loop {
            match self.read("before the container's exit status")? {
                Message::Data { stream, bytes } => {
                    let out: &mut dyn Write = match stream {
                        Stream::Stdout => stdout,
                        Stream::Stderr => stderr,
                        Stream::Stdin => {
                            return Err(unexpected("output", &Message::Data { stream, bytes }))
                        }
                    };
                    out.write_all(&bytes)
                        .and_then(|()| out.flush())
                        .map_err(|source| SessionError::Output { stream, source })?;
                }
                Message::Eof(_) => {}
                Message::StdinCredit(bytes) => self.shared.credit.grant(bytes),
                Message::Exit(status) => {
                    return Ok(Report {
                        outcome: Outcome::Exited(status),
                        timings: Timings {
                            start,
                            exit: Some(sent.elapsed()),
                        },
                    })
                }
                other => return Err(unexpected("output or Exit", &other)),
            }
        }
    }

    /// Marks the container running and delivers the signals that waited for it.
    fn begin_running(&mut self) -> Result<(), SessionError> {
        {
            let mut phase = lock(&self.shared.phase);
            if let Phase::Starting(pending) = std::mem::replace(&mut *phase, Phase::Running) {
                for msg in pending {
                    self.shared.send("send held signals and resizes", &msg)?;
                }
            }
        }
        if let Some(f) = self.on_started.take() {
            f();
        }
        Ok(())
    }

    fn spawn_stdin_pump(&self, stdin: Option<Box<dyn Read + Send>>) -> Result<(), SessionError> {
        let Some(mut src) = stdin else {
            return self
                .shared
                .send("close stdin", &Message::Eof(Stream::Stdin));
        };
        let shared = self.shared.clone();
        thread::Builder::new()
            .name("stdin-pump".into())
            .spawn(move || {
                let mut buf = vec![0u8; MAX_CHUNK];
                loop {
                    let n = match src.read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            debug!(error = %e, "reading stdin failed; closing the container's stdin");
                            0
                        }
                    };
                    if n == 0 {
                        let _ = shared.send("close stdin", &Message::Eof(Stream::Stdin));
                        return;
                    }
                    let mut rest = &buf[..n];
                    while !rest.is_empty() {
                        let Some(allowed) = shared.credit.take(rest.len()) else {
                            return;
                        };
                        let (now, later) = rest.split_at(allowed);
                        if write_data(&mut *lock(&shared.writer), Stream::Stdin, now).is_err() {
                            return;
                        }
                        rest = later;
                    }
                }
            })
            .map(drop)
            .map_err(|source| SessionError::Io {
                what: "start the stdin pump thread",
                source,
            })
    }
}

fn unexpected(expected: &'static str, got: &Message) -> SessionError {
    let got = match got {
        Message::Data { stream, bytes } => format!("Data({stream:?}, {} bytes)", bytes.len()),
        other => format!("{other:?}"),
    };
    SessionError::Unexpected { expected, got }
}
