//! Helpers of the native guest-init tests: layer tars built with the tar crate, written into
//! an EROFS image by skiff's own writer and loop-mounted read-only on the host (the image
//! directory native mode takes), a busybox image, and one session against a real
//! `guest-init --connect-unix` process.
// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use image::erofs::{self, Built, ErofsError};
use protocol::{ImageRoot, RootSpec, RunSpec, WritableLayer};
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
}

/// A uuid of its own for each image written by this process.
fn next_uuid() -> [u8; 16] {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut uuid = [0u8; 16];
    uuid[..8].copy_from_slice(&(t ^ (u64::from(std::process::id()) << 32)).to_le_bytes());
    uuid[8..].copy_from_slice(&n.to_le_bytes());
    uuid
}

/// Writes the layers (plain tars, bottom first) into the empty file `out` as an EROFS image,
/// as the host's store does.
pub fn write_erofs(tars: &[Vec<u8>], out: &std::fs::File) -> Result<Built, ErofsError> {
    erofs::write(tars.iter().map(Vec::as_slice), out, next_uuid(), |i, e| {
        ErofsError::Layer(format!("layer {}: {e}", i + 1))
    })
}

/// Runs `cmd`; its failure as a message.
fn command(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// An image's layers in an EROFS file, loop-mounted read-only: the directory native mode's
/// [`ImageRoot::Directory`] names. Unmounted, and its files removed, when dropped.
pub struct Image {
    mountpoint: PathBuf,
    pub built: Built,
    dir: tempfile::TempDir,
}

impl Image {
    /// The image of `layers`; panics when the writer refuses them.
    pub fn from_layers(layers: Vec<Layer>) -> Image {
        Image::build(layers).unwrap_or_else(|e| panic!("the EROFS writer refused the layers: {e}"))
    }

    /// The image of `layers`, or the writer's error.
    pub fn build(layers: Vec<Layer>) -> Result<Image, ErofsError> {
        require_prerequisites();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("image.erofs");
        let mountpoint = dir.path().join("image");
        std::fs::create_dir(&mountpoint).unwrap();
        let tars: Vec<Vec<u8>> = layers.into_iter().map(Layer::into_tar).collect();
        let built = write_erofs(&tars, &std::fs::File::create_new(&file).unwrap())?;
        command(
            Command::new("mount")
                .args(["-t", "erofs", "-o", "loop,ro"])
                .arg(&file)
                .arg(&mountpoint),
        )
        .unwrap_or_else(|e| panic!("cannot mount the image: {e}"));
        Ok(Image {
            mountpoint,
            built,
            dir,
        })
    }

    /// The busybox image alone.
    pub fn busybox() -> Image {
        Image::from_layers(vec![busybox_layer()])
    }

    /// Where the image is mounted on the host.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The container's root: this image under a writable layer in memory.
    pub fn root(&self) -> RootSpec {
        RootSpec {
            image: ImageRoot::Directory {
                path: self.mountpoint.to_str().unwrap().into(),
            },
            writable: WritableLayer::Memory,
        }
    }

    /// A spec running `argv` in this image, with PATH=/bin.
    pub fn spec(&self, argv: &[&str]) -> RunSpec {
        spec(argv, self.root())
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            command(cmd.arg(&self.mountpoint))
        };
        if let Err(e) = umount(false).or_else(|_| umount(true)) {
            // the directory is left to the machine's /tmp cleanup
            eprintln!(
                "cannot unmount the image at {}: {e}",
                self.mountpoint.display()
            );
            self.dir.disable_cleanup(true);
        }
    }
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

/// A spec running `argv` with PATH=/bin in `root`.
pub fn spec(argv: &[&str], root: RootSpec) -> RunSpec {
    RunSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: String::new(),
        hostname: "box".into(),
        tty: false,
        term_size: None,
        stdin: false,
        root,
        tmpfs: vec![],
        shares: vec![],
        security: Default::default(),
        rlimits: vec![],
        pids_limit: None,
        init: false,
        hold: false,
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
        stdin: Option<Vec<u8>>,
        stdout: &mut dyn Write,
    ) -> (Result<Report, SessionError>, Vec<u8>) {
        let mut stderr = Vec::new();
        let io = SessionIo {
            stdin: stdin.map(|b| Box::new(std::io::Cursor::new(b)) as Box<dyn Read + Send>),
            stdout,
            stderr: &mut stderr,
        };
        let report = self.session.run(spec, io);
        let status = self.child.wait().unwrap();
        if report.is_ok() {
            assert!(status.success(), "guest-init ended with {status}");
        }
        (report, stderr)
    }
}

/// Runs one container to its end: (report, stdout, stderr).
pub fn run(spec: &RunSpec, stdin: Option<Vec<u8>>) -> (Report, Vec<u8>, Vec<u8>) {
    let mut stdout = Vec::new();
    let (report, stderr) = Guest::start().run(spec, stdin, &mut stdout);
    (report.expect("session failed"), stdout, stderr)
}

/// min and median of a set of durations, in milliseconds.
pub fn min_median(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[0]), ms(v[v.len() / 2]))
}
