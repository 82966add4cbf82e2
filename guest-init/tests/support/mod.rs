//! Helpers of the native guest-init tests: real layer blobs built with the tar crate, a
//! busybox image, and one session against a real `guest-init --connect-unix` process.
// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use protocol::{LayerSpec, RunSpec};
use sha2::{Digest, Sha256};
use skiff::session::{Report, Session, SessionError, SessionIo, SignalSender};

pub const BUSYBOX: &str = "/bin/busybox";

/// Fails loudly when the machine cannot run these tests.
pub fn require_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (namespaces, mounts, chroot)"
    );
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: apt-get install busybox-static"
    );
}

/// How a layer blob is compressed.
#[derive(Clone, Copy)]
pub enum Comp {
    Plain,
    Gzip,
    Zstd,
}

/// A layer tar under construction.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Layer {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        self.b.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> Layer {
        self.file_owned(path, mode, (0, 0), data)
    }

    pub fn file_owned(mut self, path: &str, mode: u32, owner: (u64, u64), data: &[u8]) -> Layer {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        self.b.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Layer {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Layer {
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    /// An entry whose name and link target are written verbatim, bypassing the tar crate's
    /// checks (hostile layers).
    pub fn raw(mut self, kind: tar::EntryType, name: &str, link: &str, data: &[u8]) -> Layer {
        let mut h = header(kind, 0o644, data.len() as u64);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn into_tar(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }

    /// Writes the blob into `dir` and returns its spec and path.
    pub fn blob(self, dir: &Path, comp: Comp) -> (LayerSpec, PathBuf) {
        blob(dir, self.into_tar(), comp)
    }
}

/// Compresses `tar` as asked and stores it in `dir` under its digest.
pub fn blob(dir: &Path, tar: Vec<u8>, comp: Comp) -> (LayerSpec, PathBuf) {
    let (bytes, media_type) = match comp {
        Comp::Plain => (tar, "application/vnd.oci.image.layer.v1.tar"),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Comp::Zstd => {
            let mut child = Command::new("zstd")
                .args(["-q", "-c", "-3"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("the zstd command is needed: apt-get install zstd");
            let mut stdin = child.stdin.take().unwrap();
            let feeder = std::thread::spawn(move || stdin.write_all(&tar).unwrap());
            let mut out = Vec::new();
            child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
            feeder.join().unwrap();
            assert!(child.wait().unwrap().success());
            (out, "application/vnd.oci.image.layer.v1.tar+zstd")
        }
    };
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let path = dir.join(digest.replace(':', "-"));
    std::fs::write(&path, &bytes).unwrap();
    let spec = LayerSpec {
        media_type: media_type.into(),
        digest,
        size: bytes.len() as u64,
    };
    (spec, path)
}

/// The base image: busybox as /bin/sh and friends, accounts, /tmp.
pub fn busybox_layer() -> Layer {
    let busybox = std::fs::read(BUSYBOX).unwrap();
    let mut l = Layer::new()
        .dir("bin", 0o755)
        .dir("etc", 0o755)
        .dir("root", 0o700)
        .dir("tmp", 0o1777)
        .file("bin/busybox", 0o755, &busybox)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n",
        )
        .file(
            "etc/group",
            0o644,
            b"root:x:0:\nalice:x:1000:\nwheel:x:10:alice\naudio:x:29:alice,bob\n",
        );
    for tool in [
        "sh", "cat", "id", "env", "pwd", "true", "kill", "ls", "echo", "find", "sort", "stat",
        "hostname", "sleep", "readlink", "head", "dd", "stty", "tty",
    ] {
        l = l.symlink(&format!("bin/{tool}"), "busybox");
    }
    l
}

/// A spec running `argv` with PATH=/bin.
pub fn spec(argv: &[&str], layers: Vec<LayerSpec>) -> RunSpec {
    RunSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: String::new(),
        hostname: "box".into(),
        tty: false,
        term_size: None,
        stdin: false,
        layers,
        host_time_ns: 0,
        network: None,
        etc_files: vec![],
    }
}

/// The guest-init under test: `$SKIFF_GUEST_INIT` (e.g. the static release build the VM
/// uses), else the one cargo built with these tests.
pub fn guest_init_binary() -> PathBuf {
    std::env::var_os("SKIFF_GUEST_INIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_guest-init")))
}

/// A running `guest-init --connect-unix` process with its accepted connection.
pub struct Guest {
    pub child: Child,
    pub session: Session,
    /// Where guest-init listens for exec sessions (`--exec-unix`), once the container runs.
    pub exec_socket: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Guest {
    pub fn start() -> Guest {
        Guest::spawn(None)
    }

    /// Like [`Guest::start`], with guest-init's debug log (its timings) written to `log`.
    pub fn start_logged(log: &Path) -> Guest {
        Guest::spawn(Some(log))
    }

    fn spawn(log: Option<&Path>) -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("session.sock");
        let exec_socket = dir.path().join("exec.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut cmd = Command::new(guest_init_binary());
        cmd.arg("--connect-unix")
            .arg(&sock)
            .arg("--exec-unix")
            .arg(&exec_socket);
        if let Some(log) = log {
            cmd.env("SKIFF_GUEST_LOG", "debug")
                .stderr(std::fs::File::create(log).unwrap());
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Some(status) = child.try_wait().unwrap() {
                        panic!("guest-init exited before connecting: {status}");
                    }
                    assert!(Instant::now() < deadline, "guest-init did not connect");
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        Guest {
            child,
            session: Session::new(stream).unwrap(),
            exec_socket,
            dir,
        }
    }

    pub fn signals(&self) -> SignalSender {
        self.session.signal_sender()
    }

    /// Runs the session to its end and waits for guest-init, which must exit cleanly after a
    /// complete session.
    pub fn run(
        mut self,
        spec: &RunSpec,
        blobs: &[PathBuf],
        stdin: Option<Vec<u8>>,
        stdout: &mut dyn Write,
    ) -> (Result<Report, SessionError>, Vec<u8>) {
        let mut stderr = Vec::new();
        let io = SessionIo {
            stdin: stdin.map(|b| Box::new(std::io::Cursor::new(b)) as Box<dyn Read + Send>),
            stdout,
            stderr: &mut stderr,
        };
        let report = self.session.run(spec, blobs, io);
        let status = self.child.wait().unwrap();
        if report.is_ok() {
            assert!(status.success(), "guest-init ended with {status}");
        }
        (report, stderr)
    }
}

/// Runs one container to its end: (report, stdout, stderr).
pub fn run(
    spec: &RunSpec,
    blobs: &[PathBuf],
    stdin: Option<Vec<u8>>,
) -> (Report, Vec<u8>, Vec<u8>) {
    let mut stdout = Vec::new();
    let (report, stderr) = Guest::start().run(spec, blobs, stdin, &mut stdout);
    (report.expect("session failed"), stdout, stderr)
}

/// min and median of a set of durations, in milliseconds.
pub fn min_median(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[0]), ms(v[v.len() / 2]))
}
