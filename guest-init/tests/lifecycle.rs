//! guest-init run natively with exec sessions and terminals: a second process inside the running
//! container (its filesystem, namespaces, user, stdin, exit codes), a terminal for the first
//! process and for exec'd ones (size at start, resize, Ctrl-C to the foreground group), signals
//! that pass stdin nobody reads, and sessions cut off.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use protocol::{ExecSpec, ExitStatus, FailureKind, RunSpec, TermSize};
use skiff::session::{Outcome, Report, Session, SessionError, SessionIo, SignalSender};
use support::{Guest, Image};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Output that goes to a channel as it arrives.
struct ChannelWriter(mpsc::Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Collects output from `rx` until it contains `needle`; returns all of it.
fn read_until(rx: &mpsc::Receiver<Vec<u8>>, seen: &mut Vec<u8>, needle: &str) {
    while !text(seen).contains(needle) {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(chunk) => seen.extend(chunk),
            Err(e) => panic!(
                "{needle:?} did not come ({e}); output so far: {}",
                text(seen)
            ),
        }
    }
}

/// The container's first process running on a thread; its stdout arrives on `out`.
struct Background {
    signals: SignalSender,
    exec_socket: PathBuf,
    out: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
    done: thread::JoinHandle<Report>,
}

/// `s`'s image must stay mounted until `done` is joined.
fn start_background(s: RunSpec, stdin: Option<Box<dyn Read + Send>>) -> Background {
    let guest = Guest::start();
    let signals = guest.signals();
    let exec_socket = guest.exec_socket.clone();
    let (tx, out) = mpsc::channel();
    let done = thread::spawn(move || {
        let mut w = ChannelWriter(tx);
        let mut err = Vec::new();
        // The directory holds the exec socket: it lives as long as the session.
        let Guest {
            mut child,
            session,
            dir: _dir,
            ..
        } = guest;
        let io = SessionIo {
            stdin,
            stdout: &mut w,
            stderr: &mut err,
        };
        let report = session.run(&s, io).expect("session failed");
        assert!(child.wait().unwrap().success());
        report
    });
    Background {
        signals,
        exec_socket,
        out,
        seen: Vec::new(),
        done,
    }
}

fn exec_spec(argv: &[&str]) -> ExecSpec {
    ExecSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: String::new(),
        tty: false,
        term_size: None,
        stdin: false,
        security: Default::default(),
        rlimits: vec![],
    }
}

/// One exec session: (report, stdout, stderr).
fn exec(socket: &Path, spec: &ExecSpec, stdin: Option<&[u8]>) -> (Report, String, String) {
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let session = Session::new(stream).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let io = SessionIo {
        stdin: stdin.map(|b| Box::new(std::io::Cursor::new(b.to_vec())) as Box<dyn Read + Send>),
        stdout: &mut out,
        stderr: &mut err,
    };
    let report = session.exec(spec, io).expect("exec session failed");
    (report, text(&out), text(&err))
}

fn exited(code: i32) -> Outcome {
    Outcome::Exited(ExitStatus::Code(code))
}

#[test]
fn exec_runs_inside_the_running_container() {
    let image = Image::busybox();
    let s = image.spec(&[
        "sh",
        "-c",
        "echo written-by-pid1 > /tmp/mark; echo ready; sleep 100",
    ]);
    let mut bg = start_background(s, None);
    read_until(&bg.out, &mut bg.seen, "ready\n");
    let sock = bg.exec_socket.clone();

    // The container's filesystem, pid namespace and hostname.
    let (r, out, err) = exec(
        &sock,
        &exec_spec(&[
            "sh",
            "-c",
            "cat /tmp/mark; head -c 5 /proc/1/cmdline; echo; hostname",
        ]),
        None,
    );
    assert_eq!(r.outcome, exited(0), "{err}");
    assert_eq!(out, "written-by-pid1\nsleep\nbox\n");

    // Exit codes, env, cwd, user, stdin.
    let (r, _, _) = exec(&sock, &exec_spec(&["sh", "-c", "exit 4"]), None);
    assert_eq!(r.outcome, exited(4));
    let mut e = exec_spec(&["sh", "-c", "echo $FOO; pwd; id -u; cat"]);
    e.env.push("FOO=bar".into());
    e.cwd = "/tmp/made".into();
    e.user = "alice".into();
    e.stdin = true;
    let (r, out, err) = exec(&sock, &e, Some(b"from stdin"));
    assert_eq!(r.outcome, exited(0), "{err}");
    assert_eq!(out, "bar\n/tmp/made\n1000\nfrom stdin");

    // A missing command is 127, as for run.
    let (r, _, _) = exec(&sock, &exec_spec(&["nosuchcmd"]), None);
    match r.outcome {
        Outcome::Failed { kind, message } => {
            assert_eq!(kind, FailureKind::NotFound);
            assert!(message.contains("nosuchcmd"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // Files written by an exec'd process are seen by the first one's container.
    let (r, _, _) = exec(
        &sock,
        &exec_spec(&["sh", "-c", "echo from-exec > /tmp/back"]),
        None,
    );
    assert_eq!(r.outcome, exited(0));
    let (r, out, _) = exec(&sock, &exec_spec(&["cat", "/tmp/back"]), None);
    assert_eq!((r.outcome, out.as_str()), (exited(0), "from-exec\n"));

    bg.signals.send(9).unwrap();
    let report = bg.done.join().unwrap();
    assert_eq!(report.outcome, Outcome::Exited(ExitStatus::Signal(9)));
}

#[test]
fn exec_dies_with_the_container() {
    let image = Image::busybox();
    let s = image.spec(&["sh", "-c", "echo ready; read x; exit 3"]);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>();
    let mut s = s;
    s.stdin = true;
    let mut bg = start_background(s, Some(Box::new(ChannelReader(stdin_rx, Vec::new()))));
    read_until(&bg.out, &mut bg.seen, "ready\n");
    let sock = bg.exec_socket.clone();
    let long = thread::spawn(move || exec(&sock, &exec_spec(&["sleep", "100"]), None));
    thread::sleep(Duration::from_millis(300));
    stdin_tx.send(b"go\n".to_vec()).unwrap();
    assert_eq!(bg.done.join().unwrap().outcome, exited(3));
    // The pid namespace's init is gone: the kernel killed the exec'd process.
    let (r, _, _) = long.join().unwrap();
    assert_eq!(r.outcome, Outcome::Exited(ExitStatus::Signal(9)));
}

/// Stdin fed from a channel; a dropped sender ends it.
struct ChannelReader(mpsc::Receiver<Vec<u8>>, Vec<u8>);

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.1.is_empty() {
            match self.0.recv() {
                Ok(b) => self.1 = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.1.len());
        buf[..n].copy_from_slice(&self.1[..n]);
        self.1.drain(..n);
        Ok(n)
    }
}

#[test]
fn terminal_size_resize_and_ctrl_c() {
    let image = Image::busybox();
    let mut s = image.spec(&[
        "sh",
        "-c",
        "tty; stty size; echo ready; read x; stty size; \
             trap 'echo caught INT; echo after; exit 5' INT; echo armed; \
             while :; do sleep 0.1; done",
    ]);
    s.tty = true;
    s.stdin = true;
    s.term_size = Some(TermSize {
        rows: 30,
        cols: 100,
    });
    let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>();
    let mut bg = start_background(s, Some(Box::new(ChannelReader(stdin_rx, Vec::new()))));
    read_until(&bg.out, &mut bg.seen, "ready\r\n");
    let first = text(&bg.seen);
    assert!(first.starts_with("/dev/pts/"), "{first}");
    assert!(first.contains("\r\n30 100\r\n"), "{first}");

    // The resize is sent before the line that lets the shell go on.
    bg.signals.resize(50, 132).unwrap();
    stdin_tx.send(b"go\r".to_vec()).unwrap();
    read_until(&bg.out, &mut bg.seen, "50 132\r\n");
    // Ctrl-C through the terminal once the trap is set: SIGINT to the foreground group (the
    // shell and its sleep), the trap runs. (Short sleeps: a signal that came between `echo` and
    // the fork of one long sleep would have waited for that sleep to end.)
    read_until(&bg.out, &mut bg.seen, "armed\r\n");
    stdin_tx.send(vec![3]).unwrap();
    read_until(&bg.out, &mut bg.seen, "after\r\n");
    assert!(text(&bg.seen).contains("caught INT"), "{}", text(&bg.seen));
    assert_eq!(bg.done.join().unwrap().outcome, exited(5));
}

#[test]
fn exec_with_a_terminal() {
    let image = Image::busybox();
    let s = image.spec(&["sh", "-c", "echo ready; sleep 100"]);
    let mut bg = start_background(s, None);
    read_until(&bg.out, &mut bg.seen, "ready\n");
    let mut e = exec_spec(&[
        "sh",
        "-c",
        "tty >/dev/null && echo is-a-tty; stty size; exit 6",
    ]);
    e.tty = true;
    e.term_size = Some(TermSize { rows: 40, cols: 90 });
    let (r, out, err) = exec(&bg.exec_socket, &e, None);
    assert_eq!(r.outcome, exited(6));
    assert_eq!(out, "is-a-tty\r\n40 90\r\n");
    assert_eq!(err, "", "a terminal has one output stream");
    bg.signals.send(9).unwrap();
    bg.done.join().unwrap();
}

/// Endless stdin (`yes`), counting the bytes taken from it.
struct Endless(Arc<AtomicU64>);

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        buf.fill(b'y');
        self.0.fetch_add(buf.len() as u64, Ordering::SeqCst);
        Ok(buf.len())
    }
}

/// Waits until `taken` bytes were read from an [`Endless`] source: stdin has backed up.
fn wait_for_stdin(counter: &AtomicU64, taken: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter.load(Ordering::SeqCst) < taken {
        assert!(Instant::now() < deadline, "stdin did not flow");
        thread::sleep(Duration::from_millis(10));
    }
    // Let everything in flight settle into the buffers it fills.
    thread::sleep(Duration::from_millis(300));
}

/// Joins `t` if it ends within `limit`; a failure, not a hang, otherwise.
fn join_within<T>(t: thread::JoinHandle<T>, limit: Duration, what: &str) -> T {
    let deadline = Instant::now() + limit;
    while !t.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{what} did not end within {limit:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    t.join().unwrap()
}

#[test]
fn a_signal_passes_stdin_the_container_never_reads() {
    let image = Image::busybox();
    // PID 1 of its namespace gets SIGTERM only through a handler; the shell never reads stdin.
    let mut s = image.spec(&[
        "sh",
        "-c",
        "trap 'exit 143' TERM; echo ready; sleep 100 & wait",
    ]);
    s.stdin = true;
    let taken = Arc::new(AtomicU64::new(0));
    let mut bg = start_background(s, Some(Box::new(Endless(taken.clone()))));
    read_until(&bg.out, &mut bg.seen, "ready\n");
    wait_for_stdin(&taken, 1 << 20);
    let backed_up = taken.load(Ordering::SeqCst);
    let sent_at = Instant::now();
    let signals = bg.signals.clone();
    let sent = thread::spawn(move || signals.send(15));
    join_within(sent, Duration::from_secs(5), "sending SIGTERM").unwrap();
    let report = join_within(bg.done, Duration::from_secs(10), "the container");
    assert_eq!(report.outcome, exited(143));
    println!(
        "SIGTERM through backed-up stdin ({} MiB taken) ended the container in {:?}",
        backed_up >> 20,
        sent_at.elapsed()
    );
}

#[test]
fn a_signal_passes_stdin_an_exec_never_reads() {
    let image = Image::busybox();
    let s = image.spec(&["sh", "-c", "echo ready; sleep 100"]);
    let mut bg = start_background(s, None);
    read_until(&bg.out, &mut bg.seen, "ready\n");
    let stream = UnixStream::connect(&bg.exec_socket).unwrap();
    let session = Session::new(stream).unwrap();
    let signals = session.signal_sender();
    let taken = Arc::new(AtomicU64::new(0));
    let stdin = Endless(taken.clone());
    let exec = thread::spawn(move || {
        let mut e = exec_spec(&["sleep", "100"]);
        e.stdin = true;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let io = SessionIo {
            stdin: Some(Box::new(stdin)),
            stdout: &mut out,
            stderr: &mut err,
        };
        session.exec(&e, io).expect("exec session failed")
    });
    wait_for_stdin(&taken, 1 << 20);
    let sent = thread::spawn(move || signals.send(15));
    join_within(sent, Duration::from_secs(5), "sending SIGTERM").unwrap();
    let report = join_within(exec, Duration::from_secs(10), "the exec'd process");
    assert_eq!(report.outcome, Outcome::Exited(ExitStatus::Signal(15)));
    bg.signals.send(9).unwrap();
    bg.done.join().unwrap();
}

#[test]
fn a_cut_off_session_ends_at_once_and_takes_the_process() {
    let image = Image::busybox();
    // PID 1 without a handler: SIGTERM does nothing to it.
    let s = image.spec(&["sh", "-c", "echo ready; sleep 100"]);
    let guest = Guest::start();
    let signals = guest.signals();
    let (tx, out) = mpsc::channel();
    let done = thread::spawn(move || guest.run(&s, None, &mut ChannelWriter(tx)));
    read_until(&out, &mut Vec::new(), "ready\n");
    signals.send(15).unwrap();
    assert!(signals.cut_off());
    // guest-init ends (Guest::run waits for it) only once the process is gone.
    let (r, _) = join_within(done, Duration::from_secs(10), "the cut-off session");
    assert!(matches!(r, Err(SessionError::CutOff)), "{r:?}");
    assert!(
        !signals.cut_off(),
        "a session that ended has nothing to cut"
    );
}
