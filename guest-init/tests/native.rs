//! guest-init run natively (`--connect-unix`) as root with real namespaces, driven by skiff's
//! own host-side session: exit codes, env/cwd/user, stdio, layers and whiteouts, hostile layers,
//! and the container-setup benchmark against crun.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use protocol::{ExitStatus, FailureKind, LayerSpec};
use sha2::{Digest, Sha256};
use skiff::session::{Outcome, SessionError, SignalSender};
use support::{busybox_layer, require_prerequisites, run, spec, Comp, Guest, Layer};

/// The busybox image as one gzip layer in a fresh directory.
fn busybox_image() -> (tempfile::TempDir, Vec<LayerSpec>, Vec<PathBuf>) {
    require_prerequisites();
    let dir = tempfile::tempdir().unwrap();
    let (s, p) = busybox_layer().blob(dir.path(), Comp::Gzip);
    (dir, vec![s], vec![p])
}

fn exited(code: i32) -> Outcome {
    Outcome::Exited(ExitStatus::Code(code))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exit_codes_zero_and_three() {
    let (_d, layers, blobs) = busybox_image();
    let (r, _, _) = run(&spec(&["true"], layers.clone()), &blobs, None);
    assert_eq!(r.outcome, exited(0));
    let (r, _, _) = run(&spec(&["sh", "-c", "exit 3"], layers), &blobs, None);
    assert_eq!(r.outcome, exited(3));
}

#[test]
fn non_executable_file_is_126() {
    let (_d, layers, blobs) = busybox_image();
    let (r, _, _) = run(&spec(&["/etc/passwd"], layers), &blobs, None);
    match r.outcome {
        Outcome::Failed { kind, message } => {
            assert_eq!(kind, FailureKind::CannotExecute);
            assert_eq!(kind.docker_code(), 126);
            assert_eq!(message, "exec: \"/etc/passwd\": permission denied");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_command_is_127() {
    let (_d, layers, blobs) = busybox_image();
    let (r, _, _) = run(&spec(&["nosuchcmd", "x"], layers.clone()), &blobs, None);
    assert_eq!(
        r.outcome,
        Outcome::Failed {
            kind: FailureKind::NotFound,
            message: "exec: \"nosuchcmd\": executable file not found in $PATH".into()
        }
    );
    let (r, _, _) = run(&spec(&["/bin/nope"], layers), &blobs, None);
    match r.outcome {
        Outcome::Failed { kind, message } => {
            assert_eq!(kind.docker_code(), 127);
            assert!(message.contains("no such file or directory"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

/// The command is PID 1 of its pid namespace, so — as under docker — its own `kill -9 $$` is
/// ignored by the kernel, while a SIGKILL from outside (the host) kills it: 128 + 9.
#[test]
fn killed_by_signal_is_137() {
    let (_d, layers, blobs) = busybox_image();
    let s = spec(&["sh", "-c", "kill -9 $$; echo ready; sleep 30"], layers);
    let guest = Guest::start();
    let mut w = SignalOnReady {
        out: Vec::new(),
        signals: guest.signals(),
        signo: 9,
        sent: false,
    };
    let (r, _) = guest.run(&s, &blobs, None, &mut w);
    let outcome = r.unwrap().outcome;
    assert_eq!(outcome, Outcome::Exited(ExitStatus::Signal(9)));
    match outcome {
        Outcome::Exited(s) => assert_eq!(s.docker_code(), 137),
        Outcome::Failed { .. } => unreachable!(),
    }
    // A process that is not PID 1 dies by its own SIGKILL; the shell reports 128 + 9.
    let (_d, layers, blobs) = busybox_image();
    let (r, _, _) = run(
        &spec(&["sh", "-c", "sh -c 'kill -9 $$'; exit $?"], layers),
        &blobs,
        None,
    );
    assert_eq!(r.outcome, exited(137));
}

#[test]
fn env_cwd_and_hostname_apply() {
    let (_d, layers, blobs) = busybox_image();
    let mut s = spec(
        &["sh", "-c", "echo $FOO; pwd; hostname; echo $HOME; echo $$"],
        layers,
    );
    s.env.push("FOO=bar baz".into());
    s.cwd = "/work/made/here".into();
    let (r, out, err) = run(&s, &blobs, None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    assert_eq!(text(&out), "bar baz\n/work/made/here\nbox\n/root\n1\n");
}

#[test]
fn user_forms_resolve_against_the_image() {
    let (_d, layers, blobs) = busybox_image();
    let cmd = ["sh", "-c", "id -u; id -g; id -G; echo $HOME"];
    let mut s = spec(&cmd, layers);
    s.user = "1234:4321".into();
    let (r, out, err) = run(&s, &blobs, None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    assert_eq!(text(&out), "1234\n4321\n4321\n/\n");

    s.user = "alice".into();
    let (r, out, err) = run(&s, &blobs, None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    assert_eq!(text(&out), "1000\n1000\n1000 10 29\n/home/alice\n");

    s.user = "nobody-here".into();
    let (r, _, _) = run(&s, &blobs, None);
    assert_eq!(
        r.outcome,
        Outcome::Failed {
            kind: FailureKind::Setup,
            message: "unable to find user nobody-here: no matching entries in passwd file".into()
        }
    );
}

#[test]
fn stdin_round_trip_50_mib_through_cat() {
    let (_d, layers, blobs) = busybox_image();
    let mut data = vec![0u8; 50 << 20];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let want = Sha256::digest(&data);
    let mut s = spec(&["cat"], layers);
    s.stdin = true;
    let start = Instant::now();
    let (r, out, _) = run(&s, &blobs, Some(data));
    println!("50 MiB through cat in {:?}", start.elapsed());
    assert_eq!(r.outcome, exited(0));
    assert_eq!(out.len(), 50 << 20);
    assert_eq!(Sha256::digest(&out), want);
}

#[test]
fn stdout_and_stderr_stay_separate_and_no_stdin_is_dev_null() {
    let (_d, layers, blobs) = busybox_image();
    let s = spec(
        &[
            "sh",
            "-c",
            "echo out; echo err >&2; cat; echo out2; readlink /proc/self/fd/0 >&2",
        ],
        layers,
    );
    let (r, out, err) = run(&s, &blobs, None);
    assert_eq!(r.outcome, exited(0));
    assert_eq!(text(&out), "out\nout2\n");
    assert_eq!(text(&err), "err\n/dev/null\n");
}

/// A writer that sends `signo` once the container printed "ready".
struct SignalOnReady {
    out: Vec<u8>,
    signals: SignalSender,
    signo: i32,
    sent: bool,
}

impl Write for SignalOnReady {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        if !self.sent && text(&self.out).contains("ready") {
            self.sent = true;
            self.signals.send(self.signo).unwrap();
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn signals_reach_the_container() {
    let (_d, layers, blobs) = busybox_image();
    let s = spec(
        &[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 5' TERM; echo ready; while :; do sleep 0.05; done",
        ],
        layers,
    );
    let guest = Guest::start();
    let mut w = SignalOnReady {
        out: Vec::new(),
        signals: guest.signals(),
        signo: 15,
        sent: false,
    };
    let (r, _) = guest.run(&s, &blobs, None, &mut w);
    assert_eq!(r.unwrap().outcome, exited(5));
    assert_eq!(text(&w.out), "ready\ngot TERM\n");
}

#[test]
fn guest_gone_without_exit_is_an_error() {
    let (_d, layers, blobs) = busybox_image();
    let s = spec(&["sleep", "30"], layers);
    let guest = Guest::start();
    let pid = nix::unistd::Pid::from_raw(guest.child.id() as i32);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    });
    let start = Instant::now();
    let (r, _) = guest.run(&s, &blobs, None, &mut Vec::new());
    killer.join().unwrap();
    assert!(matches!(r, Err(SessionError::Closed { .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn version_mismatch_is_a_clear_error() {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let peer = std::thread::spawn(move || {
        let mut b = b;
        protocol::write_message(&mut b, &protocol::Message::Hello { version: 99 }).unwrap();
    });
    let session = skiff::session::Session::new(a).unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let io = skiff::session::SessionIo {
        stdin: None,
        stdout: &mut out,
        stderr: &mut err,
    };
    let r = session.run(&spec(&["true"], vec![]), &[], io);
    peer.join().unwrap();
    let e = r.unwrap_err();
    assert!(matches!(
        e,
        SessionError::Version {
            guest: 99,
            host: protocol::VERSION
        }
    ));
    assert!(e.to_string().contains("version 99"), "{e}");
}

#[test]
fn three_layers_with_whiteouts_links_and_all_compressions() {
    let (dir, mut layers, mut blobs) = busybox_image();
    let l1 = Layer::new()
        .dir("a", 0o755)
        .file("a/keep", 0o644, b"keep\n")
        .file("a/gone", 0o644, b"gone\n")
        .dir("d", 0o755)
        .file("d/x", 0o644, b"x\n")
        .dir("d/sub", 0o755)
        .file("d/sub/y", 0o644, b"y\n")
        .dir("o", 0o755)
        .file("o/lower1", 0o644, b"l1\n")
        .dir("o/lowerdir", 0o755)
        .file("o/lowerdir/z", 0o644, b"z\n")
        .dir("h", 0o755)
        .file("h/orig", 0o644, b"hard\n");
    let l2 = Layer::new()
        .file("a/.wh.gone", 0o644, b"")
        .file(".wh.d", 0o644, b"")
        .dir("o", 0o750)
        .file("o/same1", 0o644, b"s1\n")
        .file("o/.wh..wh..opq", 0o644, b"")
        .file("o/same2", 0o644, b"s2\n")
        .dir("l", 0o755)
        .hardlink("l/hard", "h/orig")
        .symlink("l/sym", "../h/orig")
        .symlink("l/abs", "/h/orig");
    let l3 = Layer::new()
        .file_owned("a/new", 0o4755, (1000, 29), b"new\n")
        .dir("d", 0o700)
        .file("d/fresh", 0o644, b"fresh\n");
    for (l, c) in [(l1, Comp::Gzip), (l2, Comp::Zstd), (l3, Comp::Plain)] {
        let (s, p) = l.blob(dir.path(), c);
        layers.push(s);
        blobs.push(p);
    }
    let script = "cd / && find a d o l h | sort; cat l/hard l/sym l/abs; \
                  stat -c '%a %u:%g' a/new d o; stat -c '%h %i' h/orig l/hard | sort -u | wc -l; \
                  echo hi >> h/orig; cat l/hard";
    let (r, out, err) = run(&spec(&["sh", "-c", script], layers), &blobs, None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    let want =
        "a\na/keep\na/new\nd\nd/fresh\nh\nh/orig\nl\nl/abs\nl/hard\nl/sym\no\no/same1\no/same2\n\
                hard\nhard\nhard\n\
                4755 1000:29\n700 0:0\n750 0:0\n1\n\
                hard\nhi\n";
    assert_eq!(text(&out), want);
}

/// A unique name for a host path that hostile layers try to reach.
fn marker(tag: &str) -> PathBuf {
    PathBuf::from(format!(
        "/tmp/skiff-escape-{}-{tag}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ))
}

fn expect_setup_failure(outcome: Outcome, needle: &str) {
    match outcome {
        Outcome::Failed { kind, message } => {
            assert_eq!(kind, FailureKind::Setup);
            assert!(message.contains(needle), "{message}");
        }
        other => panic!("hostile layer accepted: {other:?}"),
    }
}

#[test]
fn dotdot_names_and_link_targets_are_rejected() {
    let (dir, layers, blobs) = busybox_image();
    let target = marker("dotdot");
    let climbing = format!("../../../../../../../..{}", target.display());
    for hostile in [
        Layer::new().raw(tar::EntryType::Regular, &climbing, "", b"pwned"),
        Layer::new().raw(
            tar::EntryType::Link,
            "passwd-link",
            "../../../../../../etc/passwd",
            b"",
        ),
        Layer::new().raw(tar::EntryType::Regular, "a/../../x", "", b"pwned"),
    ] {
        let (s, p) = hostile.blob(dir.path(), Comp::Gzip);
        let mut all_layers = layers.clone();
        all_layers.push(s);
        let mut all_blobs = blobs.clone();
        all_blobs.push(p);
        let (r, _, _) = run(&spec(&["true"], all_layers), &all_blobs, None);
        expect_setup_failure(r.outcome, "escapes the root");
        assert!(!target.exists(), "{} was written", target.display());
    }
}

#[test]
fn absolute_names_land_inside_the_root() {
    let (dir, mut layers, mut blobs) = busybox_image();
    let target = marker("abs");
    let (s, p) = Layer::new()
        .raw(
            tar::EntryType::Regular,
            &target.to_string_lossy(),
            "",
            b"inside\n",
        )
        .blob(dir.path(), Comp::Plain);
    layers.push(s);
    blobs.push(p);
    let cmd = format!("cat {}", target.display());
    let (r, out, _) = run(&spec(&["sh", "-c", &cmd], layers), &blobs, None);
    assert_eq!(r.outcome, exited(0));
    assert_eq!(text(&out), "inside\n");
    assert!(
        !target.exists(),
        "{} was written on the host",
        target.display()
    );
}

#[test]
fn writes_through_planted_symlinks_stay_inside_the_root() {
    let (dir, mut layers, mut blobs) = busybox_image();
    let host_dir = marker("symlink");
    std::fs::create_dir(&host_dir).unwrap();
    let inside = host_dir.display().to_string();
    let rel = format!("../../../../../../..{inside}");
    let planted = Layer::new()
        .dir(&inside[1..], 0o755)
        .symlink("evil-abs", &inside)
        .symlink("evil-rel", &rel);
    let through = Layer::new()
        .file("evil-abs/one", 0o644, b"1\n")
        .file("evil-rel/two", 0o644, b"2\n")
        .symlink("evil-same", &rel)
        .file("evil-same/three", 0o644, b"3\n")
        .hardlink("four", "evil-abs/one");
    for l in [planted, through] {
        let (s, p) = l.blob(dir.path(), Comp::Gzip);
        layers.push(s);
        blobs.push(p);
    }
    let cmd = format!("cd {inside} && cat one two three /four");
    let (r, out, err) = run(&spec(&["sh", "-c", &cmd], layers), &blobs, None);
    let host_entries: Vec<_> = std::fs::read_dir(&host_dir).unwrap().collect();
    std::fs::remove_dir(&host_dir).unwrap();
    assert!(
        host_entries.is_empty(),
        "written on the host: {host_entries:?}"
    );
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    assert_eq!(text(&out), "1\n2\n3\n1\n");
}

#[test]
fn corrupt_and_mislabelled_layers_fail_cleanly() {
    let (dir, layers, blobs) = busybox_image();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"this is not gzip at all").unwrap();
    let cases = [
        ("application/vnd.oci.image.layer.v1.tar+gzip", "tar stream"),
        ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd"),
        ("application/x-unknown", "unsupported layer media type"),
    ];
    for (media_type, needle) in cases {
        let mut l = layers.clone();
        l.push(LayerSpec {
            media_type: media_type.into(),
            digest: "sha256:00".into(),
            size: 23,
        });
        let mut b = blobs.clone();
        b.push(garbage.clone());
        let (r, _, _) = run(&spec(&["true"], l), &b, None);
        expect_setup_failure(r.outcome, needle);
    }
}

/// Median and minimum of guest-init's container setup natively vs `crun run` of the same
/// rootfs. Run with `cargo test -p guest-init --release --test native -- --ignored
/// bench_container_setup --nocapture`; prints one `BENCH` line per figure.
///
/// guest-init's own figure is what it logs as `setup_us`: from the layers unpacked to the
/// container's exec confirmed (namespaces, mounts, pivot_root, user, exec), the work `crun run`
/// does on a ready rootfs. The host-side figures also hold the unpacking still under way when
/// the host has written the last layer.
#[test]
#[ignore = "benchmark"]
fn bench_container_setup() {
    const RUNS: usize = 20;
    let (dir, mut layers, mut blobs) = busybox_image();
    // A tiny last layer, so the timing from its LayerEnd is the container setup alone.
    let (s, p) = Layer::new()
        .file("etc/hostname", 0o644, b"box\n")
        .blob(dir.path(), Comp::Plain);
    layers.push(s);
    blobs.push(p);
    let s = spec(&["true"], layers.clone());
    let mut start = Vec::new();
    let mut exit = Vec::new();
    let mut setup = Vec::new();
    let log = dir.path().join("guest-init.log");
    for _ in 0..RUNS {
        let (r, _) = Guest::start_logged(&log).run(&s, &blobs, None, &mut std::io::sink());
        let r = r.unwrap();
        assert_eq!(r.outcome, exited(0));
        start.push(r.timings.start);
        exit.push(r.timings.exit.unwrap());
        let text = std::fs::read_to_string(&log).unwrap();
        let us: u64 = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("setup_us="))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no setup_us in guest-init's log: {text}"));
        setup.push(Duration::from_micros(us));
    }
    let crun = crun_runs(dir.path(), RUNS);
    let gib = stdout_gib(&layers, &blobs);
    let (smin, smed) = support::min_median(start);
    let (emin, emed) = support::min_median(exit);
    let (gmin, gmed) = support::min_median(setup);
    let (cmin, cmed) = support::min_median(crun);
    println!("BENCH guest_init_own_setup_ms min={gmin:.3} median={gmed:.3}");
    println!("BENCH guest_init_setup_to_exec_ms min={smin:.3} median={smed:.3}");
    println!("BENCH guest_init_setup_to_exit_ms min={emin:.3} median={emed:.3}");
    println!("BENCH crun_run_true_ms min={cmin:.3} median={cmed:.3}");
    println!(
        "BENCH guest_init_stdout_1gib_ms {:.1}",
        gib.as_secs_f64() * 1e3
    );
    println!(
        "BENCH ratio_own_setup_vs_crun median={:.2} min={:.2}",
        gmed / cmed,
        gmin / cmin
    );
    println!(
        "BENCH ratio_host_setup_to_exit_vs_crun median={:.2} min={:.2}",
        emed / cmed,
        emin / cmin
    );
}

/// Counts bytes, keeps none.
struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Time from `Started` to `Exit` of a container writing 1 GiB to stdout (`dd bs=1M`: busybox
/// `head -c` alone needs seconds for a GiB).
fn stdout_gib(layers: &[LayerSpec], blobs: &[PathBuf]) -> Duration {
    let s = spec(
        &["dd", "if=/dev/zero", "bs=1M", "count=1024"],
        layers.to_vec(),
    );
    let mut sink = Sink(0);
    let (r, _) = Guest::start().run(&s, blobs, None, &mut sink);
    let r = r.unwrap();
    assert_eq!(r.outcome, exited(0));
    assert_eq!(sink.0, 1 << 30);
    r.timings.exit.unwrap() - r.timings.start
}

/// Times `crun run` of `true` in the busybox rootfs, in a private mount namespace without
/// the cgroup2 hierarchy that crun rejects on this hybrid layout.
fn crun_runs(dir: &Path, runs: usize) -> Vec<Duration> {
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let tar_path = dir.join("busybox.tar");
    std::fs::write(&tar_path, busybox_layer().into_tar()).unwrap();
    let ok = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = std::process::Command::new("crun")
        .args(["spec"])
        .current_dir(&bundle)
        .status()
        .expect("crun is needed for this benchmark: apt-get install crun");
    assert!(ok.success());
    let config = std::fs::read_to_string(bundle.join("config.json")).unwrap();
    let config = config
        .replace("\"terminal\": true", "\"terminal\": false")
        .replace("\"sh\"", "\"true\"");
    std::fs::write(bundle.join("config.json"), config).unwrap();
    // This thread only: own mount namespace, cgroup2 unmounted (crun refuses the hybrid layout).
    std::thread::scope(|sc| {
        sc.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            let _ = nix::mount::umount2("/sys/fs/cgroup/unified", nix::mount::MntFlags::MNT_DETACH);
            (0..runs)
                .map(|i| {
                    let id = format!("skiff-bench-{}-{i}", std::process::id());
                    let t = Instant::now();
                    let status = std::process::Command::new("crun")
                        .args(["run", "--bundle"])
                        .arg(&bundle)
                        .arg(&id)
                        .stdin(std::process::Stdio::null())
                        .status()
                        .unwrap();
                    let elapsed = t.elapsed();
                    assert!(status.success(), "crun run failed: {status}");
                    elapsed
                })
                .collect()
        })
        .join()
        .unwrap()
    })
}
