//! Shared helpers of the end-to-end tests: where the built skiff, guest-init and test images
//! are, and running `skiff` as a user would, with a deadline.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub mod oci;
mod root;
pub use root::{assert_no_vm_left, busybox, Root};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The `skiff` binary of the profile the tests were built with (`target/<profile>/skiff`).
pub fn skiff_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = profile_dir.join("skiff");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (scripts/build.sh, or cargo build -p skiff)",
        bin.display()
    );
    bin
}

/// The test images directory, built (or found in the cache) once per test binary.
pub fn images() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(images_dir)
}

/// The test images directory built by `tests/images/build.sh` (a cached no-op when built).
pub fn images_dir() -> PathBuf {
    let script = workspace().join("tests/images/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/images/build.sh");
    assert!(
        out.status.success(),
        "tests/images/build.sh failed: the full-stack tests need the test images"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build.sh prints the image directory")
            .trim(),
    )
}

/// The engine the full-stack tests use: `$SKIFF_TEST_ENGINE`, default `qemu` (`kvm` inside the
/// nested test VM and wherever guest code runs natively, see `tests/full-stack-kvm`).
pub fn test_engine() -> String {
    std::env::var("SKIFF_TEST_ENGINE").unwrap_or_else(|_| "qemu".into())
}

/// Processes whose command line mentions `needle`, as `PID: COMMAND LINE`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{}: {cmd}", name.to_string_lossy()));
            }
        }
    }
    found
}

/// The command's stdout, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The command's stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it differs, and the end of the guest's
/// console log when skiff names one (it may live in a VM that is gone when CI shows the output).
#[track_caller]
pub fn assert_code(o: &Output, code: i32) {
    if o.status.code() != Some(code) {
        panic!(
            "exit {:?}, expected {code}\nstdout: {}\nstderr: {}{}",
            o.status.code(),
            stdout(o),
            stderr(o),
            console_tail(&stderr(o))
        );
    }
}

/// The last lines of the console log named in a skiff error (`console log: PATH)`), if any.
fn console_tail(err: &str) -> String {
    let Some(path) = err
        .split("console log: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
    else {
        return String::new();
    };
    let Ok(log) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("\nend of {path}:\n{tail}")
}

/// A skiff error: exit 125 and one line on stderr, `skiff: error: …`, that says `what`.
#[track_caller]
pub fn assert_skiff_error(o: &Output, what: &str) {
    assert_code(o, 125);
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("skiff: error: "), "{err}");
    assert!(lines[0].contains(what), "{what:?} not in: {err}");
}

/// A port of 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// The sha256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Runs `cmd` to completion, feeding `stdin` from a thread, killing it after `deadline`.
pub fn run_with_deadline(mut cmd: Command, stdin: &[u8], deadline: Duration) -> Result<Output> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut input = child.stdin.take().context("stdin")?;
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out_reader = spawn_reader(child.stdout.take().context("stdout")?);
    let err_reader = spawn_reader(child.stderr.take().context("stderr")?);
    let status = wait_deadline(&mut child, deadline)?;
    let _ = feeder.join();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

fn wait_deadline(child: &mut Child, deadline: Duration) -> Result<std::process::ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{child:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
