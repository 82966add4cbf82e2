//! The whole stack: the real guest kernel, guest-init in the initramfs, skiff's vsock device,
//! and the `skiff` command as a user runs it. The engine is `$SKIFF_TEST_ENGINE` (default
//! `qemu`, under QEMU's software CPU where guest code is emulated); `tests/full-stack-kvm` runs
//! the same cases with `kvm`, inside the nested test VM (`tests/nested/`) or directly wherever
//! guest code runs natively.

use std::process::{Command, Output};
use std::time::Duration;

use skiff_tests::{
    assert_code, assert_skiff_error, images, run_with_deadline, sha256_hex, skiff_bin, stderr,
    stdout, test_engine,
};

const DEADLINE: Duration = Duration::from_secs(180);

fn archive(name: &str) -> String {
    format!("oci-archive:{}/archives/{name}.oci.tar", images().display())
}

fn layout(name_tag: &str) -> String {
    format!("oci:{}/oci/{name_tag}", images().display())
}

/// Cases that only exist for the qemu engine say so when they run under another one.
fn qemu_only(test: &str) -> bool {
    let qemu = test_engine() == "qemu";
    if !qemu {
        eprintln!(
            "{test}: not applicable to --engine {}: it concerns the qemu process",
            test_engine()
        );
    }
    qemu
}

fn skiff(args: &[&str]) -> Command {
    let mut c = Command::new(skiff_bin());
    c.arg("run").arg("--engine").arg(test_engine()).args(args);
    c
}

fn run(args: &[&str]) -> Output {
    run_in(skiff(args), b"")
}

fn run_in(cmd: Command, stdin: &[u8]) -> Output {
    run_with_deadline(cmd, stdin, DEADLINE).expect("skiff run")
}

#[test]
fn echo_and_exit_code_pass_through() {
    let o = run(&[&archive("busybox-latest"), "sh", "-c", "echo hi; exit 3"]);
    assert_code(&o, 3);
    assert_eq!(stdout(&o), "hi\n");
}

#[test]
fn stdin_of_10_mib_round_trips() {
    let data: Vec<u8> = (0..10u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    let o = run_in(skiff(&["-i", &archive("busybox-latest"), "cat"]), &data);
    assert_code(&o, 0);
    assert_eq!(o.stdout.len(), data.len());
    assert_eq!(sha256_hex(&o.stdout), sha256_hex(&data));
}

/// skiff running a container that printed "ready", its stdin fed by `yes` when asked.
struct Signalled {
    skiff: std::process::Child,
    yes: Option<std::process::Child>,
}

impl Signalled {
    fn start(args: &[&str], stdin_from_yes: bool) -> Signalled {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut yes =
            stdin_from_yes.then(|| Command::new("yes").stdout(Stdio::piped()).spawn().unwrap());
        let mut c = skiff(args);
        match &mut yes {
            Some(y) => c.stdin(y.stdout.take().unwrap()),
            None => c.stdin(Stdio::null()),
        };
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut skiff = c.spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(skiff.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        Signalled { skiff, yes }
    }

    fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.skiff.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    /// skiff's exit code and stderr; a failure if it does not end within `limit`.
    fn end_within(mut self, limit: Duration) -> (Option<i32>, String) {
        let since = std::time::Instant::now();
        let status = loop {
            if let Some(status) = self.skiff.try_wait().unwrap() {
                break status;
            }
            if since.elapsed() > limit {
                let _ = self.skiff.kill();
                self.stop_yes();
                panic!("skiff did not end within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        println!("skiff ended {:?} after the signal", since.elapsed());
        self.stop_yes();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.skiff.stderr.take().unwrap(), &mut err).unwrap();
        (status.code(), err)
    }

    fn stop_yes(&mut self) {
        if let Some(y) = &mut self.yes {
            let _ = y.kill();
            let _ = y.wait();
        }
    }
}

#[test]
fn sigterm_passes_stdin_the_container_never_reads() {
    // `yes` fills stdin while the container never reads it; SIGTERM to skiff must still reach
    // the container (PID 1 of its namespace: it takes SIGTERM through its handler).
    let img = archive("busybox-latest");
    let script = "trap 'exit 143' TERM; echo ready; sleep 100 & wait";
    let run = Signalled::start(&["-i", &img, "sh", "-c", script], true);
    // Let stdin back up: the guest's buffer, the pipe into the container, the sockets.
    std::thread::sleep(Duration::from_secs(2));
    run.sigterm();
    let (code, err) = run.end_within(Duration::from_secs(10));
    assert_eq!(code, Some(143), "{err}");
}

#[test]
fn third_sigterm_cuts_off_a_container_that_ignores_them() {
    let img = archive("busybox-latest");
    let script = "trap '' TERM; echo ready; sleep 100";
    let run = Signalled::start(&[&img, "sh", "-c", script], false);
    for _ in 0..3 {
        run.sigterm();
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, err) = run.end_within(Duration::from_secs(10));
    // Forcibly killed, as docker reports it: 128 + SIGKILL, and that one line.
    assert_eq!(code, Some(137), "{err}");
    assert_eq!(
        err, "skiff: got 3 SIGINT/SIGTERM: forcibly killing the process\n",
        "{err}"
    );
}

#[test]
fn one_mib_guest_writes_arrive_intact() {
    // dd writes 1 MiB at a time into guest-init's 1 MiB pipe; guest-init forwards each as a
    // single 1 MiB vsock write, which the guest kernel splits over several descriptors.
    let o = run(&[
        &archive("busybox-latest"),
        "sh",
        "-c",
        "head -c 8388608 /dev/urandom > /tmp/f && sha256sum /tmp/f >&2 && dd if=/tmp/f bs=1M 2>/dev/null",
    ]);
    assert_code(&o, 0);
    assert_eq!(o.stdout.len(), 8 << 20);
    let guest_sum = stderr(&o);
    assert_eq!(
        guest_sum.split_whitespace().next(),
        Some(sha256_hex(&o.stdout).as_str())
    );
}

#[test]
fn guest_clock_follows_the_host() {
    let o = run(&[&archive("busybox-latest"), "date", "+%s"]);
    assert_code(&o, 0);
    let guest: u64 = stdout(&o).trim().parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(host.abs_diff(guest) < 60, "guest {guest}, host {host}");
}

#[test]
fn stderr_stays_stderr_and_stdin_is_closed_without_i() {
    let o = run(&[
        &archive("busybox-latest"),
        "sh",
        "-c",
        "echo out; echo err >&2; cat; echo done",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "out\ndone\n");
    assert_eq!(stderr(&o), "err\n");
}

#[test]
fn image_entrypoint_and_cmd_apply_and_are_overridden() {
    let img = archive("busybox-entry");
    let o = run(&[&img]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "from-entrypoint default-arg\n");
    let o = run(&[&img, "other", "args"]);
    assert_eq!(stdout(&o), "from-entrypoint other args\n");
    let o = run(&["--entrypoint", "/bin/sh", &img, "-c", "echo replaced"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "replaced\n");
}

#[test]
fn image_user_and_workdir_apply() {
    let o = run(&[
        &archive("busybox-user"),
        "sh",
        "-c",
        "id -un; id -G; pwd; echo $HOME",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "app\n1000 2000\n/tmp\n/home/app\n");
}

#[test]
fn env_workdir_user_and_hostname_flags_override() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=file\nBOTH=file\n").unwrap();
    let o = run(&[
        "-e",
        "FOO=bar baz",
        "-e",
        "BOTH=flag",
        "--env-file",
        env_file.to_str().unwrap(),
        "-w",
        "/var/new",
        "-u",
        "1000:2000",
        "--hostname",
        "boxed",
        &archive("busybox-latest"),
        "sh",
        "-c",
        "echo \"$FOO|$FROM_FILE|$BOTH|$(pwd)|$(id -u):$(id -g)|$(hostname)|$PATH\"",
    ]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "bar baz|file|flag|/var/new|1000:2000|boxed|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
}

#[test]
fn missing_command_is_127_and_non_executable_is_126() {
    let o = run(&[&archive("busybox-latest"), "no-such-command"]);
    assert_code(&o, 127);
    assert!(stderr(&o).contains("no-such-command"), "{}", stderr(&o));
    let o = run(&[&archive("busybox-latest"), "/etc/passwd"]);
    assert_code(&o, 126);
}

#[test]
fn signal_death_is_128_plus_signal() {
    let o = run(&[
        &archive("busybox-latest"),
        "sh",
        "-c",
        "sleep 30 & kill -9 $!; wait $!",
    ]);
    assert_code(&o, 137);
}

#[test]
fn whiteouts_links_and_zstd_layers_in_the_vm() {
    let o = run(&[
        &layout("busybox:3layer"),
        "sh",
        "-c",
        "cd /usr/share/skiff-test && ls -A . opaque-dir && cat links/symlink-to-a && \
         stat -c %h links/a links/hardlink-to-a && readlink links/symlink-to-a",
    ]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        ".:\nadded-by-layer-2\nkept\nlinks\nopaque-dir\n\nopaque-dir:\nnew\nhello from layer 3\n2\n2\na\n",
        "{}",
        stderr(&o)
    );
    let o = run(&[&archive("busybox-zstd"), "echo", "zstd ok"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "zstd ok\n");
}

#[test]
fn debian_image_runs() {
    let o = run(&[
        "--memory",
        "768m",
        &archive("debian-3layer"),
        "sh",
        "-c",
        "cat /etc/debian_version; ls /etc/apt/apt.conf.d; test -e /etc/motd || echo no-motd; \
         cat /opt/skiff-test/symlink-to-a",
    ]);
    assert_code(&o, 0);
    let out = stdout(&o);
    let mut lines = out.lines();
    assert!(lines.next().is_some_and(|v| v.starts_with("12.")), "{out}");
    assert_eq!(lines.next(), Some("new"), "{out}");
    assert_eq!(lines.next(), Some("no-motd"), "{out}");
}

#[test]
fn missing_image_path_is_a_skiff_error() {
    let o = run(&["oci-archive:/nonexistent/image.tar", "true"]);
    assert_skiff_error(&o, "/nonexistent/image.tar");
}

#[test]
fn corrupt_archive_is_a_skiff_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.tar");
    let good = std::fs::read(images().join("archives/busybox-latest.oci.tar")).unwrap();
    std::fs::write(&bad, &good[..good.len() / 3]).unwrap();
    let o = run(&[&format!("oci-archive:{}", bad.display()), "true"]);
    assert_skiff_error(&o, "corrupt");
}

#[test]
fn missing_kernel_is_a_skiff_error() {
    let mut c = skiff(&[&archive("busybox-latest"), "true"]);
    c.env("SKIFF_KERNEL", "/nonexistent/vmlinux");
    let o = run_in(c, b"");
    assert_skiff_error(&o, "guest kernel not found at /nonexistent/vmlinux");
}

#[test]
fn qemu_not_installed_is_a_skiff_error() {
    if !qemu_only("qemu_not_installed_is_a_skiff_error") {
        return;
    }
    let empty = tempfile::tempdir().unwrap();
    let mut c = skiff(&["--network", "none", &archive("busybox-latest"), "true"]);
    c.env("PATH", empty.path());
    let o = run_in(c, b"");
    assert_skiff_error(&o, "qemu-system-x86_64 is not installed");
}

#[test]
fn guest_that_never_answers_times_out() {
    // busybox as /init boots but never connects to the host.
    let mut c = skiff(&[&archive("busybox-latest"), "true"]);
    c.env("SKIFF_GUEST_INIT", "/bin/busybox")
        .env("SKIFF_BOOT_TIMEOUT", "8");
    let started = std::time::Instant::now();
    let o = run_in(c, b"");
    assert_skiff_error(&o, "guest-init did not connect within 8s");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A static x86-64 executable of 129 bytes that exits at once: as the guest's /init, it makes
/// the kernel panic ("Attempted to kill init!").
fn exit_at_once_elf() -> Vec<u8> {
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&0x40_0078u64.to_le_bytes()); // entry
    elf.extend_from_slice(&0x40u64.to_le_bytes()); // program headers
    elf.extend_from_slice(&0u64.to_le_bytes()); // no sections
    elf.extend_from_slice(&0u32.to_le_bytes());
    for v in [0x40u16, 0x38, 1, 0, 0, 0] {
        elf.extend_from_slice(&v.to_le_bytes());
    }
    let code = [0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05]; // exit(0)
    let size = (0x78 + code.len()) as u64;
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [0, 0x40_0000, 0x40_0000, size, size, 0x1000u64] {
        elf.extend_from_slice(&v.to_le_bytes());
    }
    elf.extend_from_slice(&code);
    elf
}

#[test]
fn guest_kernel_panic_is_named_as_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init");
    std::fs::write(&init, exit_at_once_elf()).unwrap();
    let mut c = skiff(&[&archive("busybox-latest"), "true"]);
    c.env("SKIFF_GUEST_INIT", &init);
    let o = run_in(c, b"");
    assert_skiff_error(&o, "guest kernel panic: ");
    assert!(
        stderr(&o).contains("Attempted to kill init"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn guest_that_dies_mid_run_is_a_skiff_error() {
    if !qemu_only("guest_that_dies_mid_run_is_a_skiff_error") {
        return;
    }
    // The VM disappears while the container runs: skiff must end with an error, not hang.
    use std::io::BufRead;
    let mut c = skiff(&[
        &archive("busybox-latest"),
        "sh",
        "-c",
        "echo started; sleep 60",
    ]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    let killed = Command::new("pkill")
        .args(["-9", "-P", &child.id().to_string(), "qemu-system"])
        .status()
        .unwrap();
    assert!(killed.success(), "no qemu child of skiff to kill");
    let started = std::time::Instant::now();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("the VM stopped before the container finished"),
        "{err}"
    );
}
