//! guest-init run natively (`--connect-unix`) as root with real namespaces, driven by skiff's
//! own host-side session, on images its EROFS writer made from layer tars: exit codes,
//! env/cwd/user, stdio, the container's view of layers with whiteouts and links, hostile layers
//! (refused by the writer), the root's writable layer, a read-only root with a tmpfs, and the
//! container-setup benchmark against crun.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use protocol::{EtcFile, ExitStatus, FailureKind, ImageRoot, RootSpec, TmpfsMount, WritableLayer};
use sha2::{Digest, Sha256};
use skiff::session::{Outcome, SessionError, SignalSender};
use support::{busybox_layer, run, spec, write_erofs, Guest, Image, Layer};

fn exited(code: i32) -> Outcome {
    Outcome::Exited(ExitStatus::Code(code))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exit_codes_zero_and_three() {
    let image = Image::busybox();
    let (r, _, _) = run(&image.spec(&["true"]), None);
    assert_eq!(r.outcome, exited(0));
    let (r, _, _) = run(&image.spec(&["sh", "-c", "exit 3"]), None);
    assert_eq!(r.outcome, exited(3));
}

#[test]
fn non_executable_file_is_126() {
    let image = Image::busybox();
    let (r, _, _) = run(&image.spec(&["/etc/passwd"]), None);
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
    let image = Image::busybox();
    let (r, _, _) = run(&image.spec(&["nosuchcmd", "x"]), None);
    assert_eq!(
        r.outcome,
        Outcome::Failed {
            kind: FailureKind::NotFound,
            message: "exec: \"nosuchcmd\": executable file not found in $PATH".into()
        }
    );
    let (r, _, _) = run(&image.spec(&["/bin/nope"]), None);
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
    let image = Image::busybox();
    let s = image.spec(&["sh", "-c", "kill -9 $$; echo ready; sleep 30"]);
    let guest = Guest::start();
    let mut w = SignalOnReady {
        out: Vec::new(),
        signals: guest.signals(),
        signo: 9,
        sent: false,
    };
    let (r, _) = guest.run(&s, None, &mut w);
    let outcome = r.unwrap().outcome;
    assert_eq!(outcome, Outcome::Exited(ExitStatus::Signal(9)));
    match outcome {
        Outcome::Exited(s) => assert_eq!(s.docker_code(), 137),
        Outcome::Failed { .. } => unreachable!(),
    }
    // A process that is not PID 1 dies by its own SIGKILL; the shell reports 128 + 9.
    let image = Image::busybox();
    let (r, _, _) = run(
        &image.spec(&["sh", "-c", "sh -c 'kill -9 $$'; exit $?"]),
        None,
    );
    assert_eq!(r.outcome, exited(137));
}

#[test]
fn env_cwd_and_hostname_apply() {
    let image = Image::busybox();
    let mut s = image.spec(&["sh", "-c", "echo $FOO; pwd; hostname; echo $HOME; echo $$"]);
    s.env.push("FOO=bar baz".into());
    s.cwd = "/work/made/here".into();
    let (r, out, err) = run(&s, None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    assert_eq!(text(&out), "bar baz\n/work/made/here\nbox\n/root\n1\n");
}

#[test]
fn user_forms_resolve_against_the_image() {
    let image = Image::busybox();
    let cmd = ["sh", "-c", "id -u; id -g; id -G; echo $HOME"];
    let mut s = image.spec(&cmd);
    s.user = "1234:4321".into();
    let (r, out, err) = run(&s, None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    assert_eq!(text(&out), "1234\n4321\n4321\n/\n");

    s.user = "alice".into();
    let (r, out, err) = run(&s, None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    assert_eq!(text(&out), "1000\n1000\n1000 10 29\n/home/alice\n");

    s.user = "nobody-here".into();
    let (r, _, _) = run(&s, None);
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
    let image = Image::busybox();
    let mut data = vec![0u8; 50 << 20];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let want = Sha256::digest(&data);
    let mut s = image.spec(&["cat"]);
    s.stdin = true;
    let start = Instant::now();
    let (r, out, _) = run(&s, Some(data));
    println!("50 MiB through cat in {:?}", start.elapsed());
    assert_eq!(r.outcome, exited(0));
    assert_eq!(out.len(), 50 << 20);
    assert_eq!(Sha256::digest(&out), want);
}

#[test]
fn stdout_and_stderr_stay_separate_and_no_stdin_is_dev_null() {
    let image = Image::busybox();
    let s = image.spec(&[
        "sh",
        "-c",
        "echo out; echo err >&2; cat; echo out2; readlink /proc/self/fd/0 >&2",
    ]);
    let (r, out, err) = run(&s, None);
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
    let image = Image::busybox();
    let s = image.spec(&[
        "sh",
        "-c",
        "trap 'echo got TERM; exit 5' TERM; echo ready; while :; do sleep 0.05; done",
    ]);
    let guest = Guest::start();
    let mut w = SignalOnReady {
        out: Vec::new(),
        signals: guest.signals(),
        signo: 15,
        sent: false,
    };
    let (r, _) = guest.run(&s, None, &mut w);
    assert_eq!(r.unwrap().outcome, exited(5));
    assert_eq!(text(&w.out), "ready\ngot TERM\n");
}

#[test]
fn guest_gone_without_exit_is_an_error() {
    let image = Image::busybox();
    let s = image.spec(&["sleep", "30"]);
    let guest = Guest::start();
    let pid = nix::unistd::Pid::from_raw(guest.child.id() as i32);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    });
    let start = Instant::now();
    let (r, _) = guest.run(&s, None, &mut Vec::new());
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
    let root = RootSpec {
        image: ImageRoot::Directory {
            path: "/nonexistent".into(),
        },
        writable: WritableLayer::Memory,
    };
    let r = session.run(&spec(&["true"], root), io);
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

/// Whiteouts, opaque directories, hard links and symlinks across three layers, as the EROFS
/// writer applies them, seen from inside the container. (The layers are plain tars:
/// decompressing gzip and zstd layers is the host's store's work and tested there.)
///
/// A hard link of the image is one inode until the container writes to it: overlayfs (without
/// `index=on`, as docker's overlay2 mounts it) copies up only the name written through, so
/// the other name keeps the image's contents.
#[test]
fn three_layers_with_whiteouts_and_links() {
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
    let image = Image::from_layers(vec![busybox_layer(), l1, l2, l3]);
    let script = "cd / && find a d o l h | sort; cat l/hard l/sym l/abs; \
                  stat -c '%a %u:%g' a/new d o; stat -c '%h %i' h/orig l/hard | sort -u | wc -l; \
                  echo hi >> h/orig; cat h/orig l/hard";
    let (r, out, err) = run(&image.spec(&["sh", "-c", script]), None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    let want =
        "a\na/keep\na/new\nd\nd/fresh\nh\nh/orig\nl\nl/abs\nl/hard\nl/sym\no\no/same1\no/same2\n\
                hard\nhard\nhard\n\
                4755 1000:29\n700 0:0\n750 0:0\n1\n\
                hard\nhi\nhard\n";
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

/// Names and hard link targets that climb above the root with `..` never reach the guest: the
/// EROFS writer refuses the layer.
#[test]
fn dotdot_names_and_link_targets_are_refused_by_the_writer() {
    let target = marker("dotdot");
    let climbing = format!("../../../../../../../..{}", target.display());
    let dir = tempfile::tempdir().unwrap();
    for (i, hostile) in [
        Layer::new().raw(tar::EntryType::Regular, &climbing, "", b"pwned"),
        Layer::new().raw(
            tar::EntryType::Link,
            "passwd-link",
            "../../../../../../etc/passwd",
            b"",
        ),
        Layer::new().raw(tar::EntryType::Regular, "a/../../x", "", b"pwned"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = std::fs::File::create_new(dir.path().join(format!("{i}.erofs"))).unwrap();
        match write_erofs(&[busybox_layer().into_tar(), hostile.into_tar()], &out) {
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("layer 2") && e.contains("escapes the root"),
                    "{e}"
                );
            }
            Ok(built) => panic!("hostile layer {i} accepted: {built:?}"),
        }
        assert!(!target.exists(), "{} was written", target.display());
    }
}

/// A layer that is not a tar, or one cut off in an entry's data, is refused by the EROFS
/// writer with an error naming the layer. (Gzip and zstd layers that do not decompress, and
/// media types skiff does not know, no longer reach guest-init or the writer: the host's
/// store decompresses layers and its tests cover those.)
#[test]
fn corrupt_layers_are_refused_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cut = Layer::new().file("big", 0o644, &[7u8; 4096]).into_tar();
    cut.truncate(512 + 1000);
    let garbage: Vec<u8> = (0..2048u32).map(|i| (i * 31 % 251) as u8 + 1).collect();
    for (i, bad) in [garbage, cut].into_iter().enumerate() {
        let out = std::fs::File::create_new(dir.path().join(format!("{i}.erofs"))).unwrap();
        match write_erofs(&[busybox_layer().into_tar(), bad], &out) {
            Err(e) => assert!(e.to_string().starts_with("layer 2: "), "{e}"),
            Ok(built) => panic!("corrupt layer {i} accepted: {built:?}"),
        }
    }
}

#[test]
fn absolute_names_land_inside_the_root() {
    let target = marker("abs");
    let image = Image::from_layers(vec![
        busybox_layer(),
        Layer::new().raw(
            tar::EntryType::Regular,
            &target.to_string_lossy(),
            "",
            b"inside\n",
        ),
    ]);
    let cmd = format!("cat {}", target.display());
    let (r, out, _) = run(&image.spec(&["sh", "-c", &cmd]), None);
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
    let built = Image::build(vec![busybox_layer(), planted, through]);
    let host_entries: Vec<_> = std::fs::read_dir(&host_dir).unwrap().collect();
    std::fs::remove_dir(&host_dir).unwrap();
    assert!(
        host_entries.is_empty(),
        "written on the host: {host_entries:?}"
    );
    let image = built.unwrap();
    let cmd = format!("cd {inside} && cat one two three /four");
    let (r, out, err) = run(&image.spec(&["sh", "-c", &cmd]), None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    assert_eq!(text(&out), "1\n2\n3\n1\n");
}

/// The container changes the image's files freely; the changes go to its writable layer (in
/// memory natively), never to the image, and the next container of the image starts from the
/// image's files again.
#[test]
fn writes_land_in_the_writable_layer_not_the_image() {
    let image = Image::from_layers(vec![
        busybox_layer(),
        Layer::new()
            .dir("data", 0o755)
            .file("data/old", 0o644, b"old\n")
            .file("data/gone", 0o644, b"gone\n"),
    ]);
    let script = "rm /data/gone && echo changed > /data/old && echo new > /data/new && \
                  mkdir /data/sub && rm /etc/group && ls /data && cat /data/old /data/new";
    let (r, out, err) = run(&image.spec(&["sh", "-c", script]), None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    assert_eq!(text(&out), "new\nold\nsub\nchanged\nnew\n");

    // The image's own files, on the host, are as the layers made them.
    let data = image.path().join("data");
    let mut names: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["gone", "old"]);
    assert_eq!(std::fs::read(data.join("old")).unwrap(), b"old\n");
    assert!(image.path().join("etc/group").exists());

    let script = "ls /data; cat /data/old /data/gone; test -e /etc/group && echo group";
    let (r, out, err) = run(&image.spec(&["sh", "-c", script]), None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    assert_eq!(text(&out), "gone\nold\nold\ngone\ngroup\n");
}

/// `--read-only` with `--tmpfs /scratch`: the root refuses writes, the tmpfs takes them, and the
/// `/etc` files the host composed are in place all the same.
#[test]
fn read_only_root_with_a_tmpfs_and_etc_files() {
    let image = Image::busybox();
    let mut s = image.spec(&[
        "sh",
        "-c",
        "echo x > /x || echo refused; echo y > /scratch/x && cat /scratch/x; \
         cat /etc/hosts; grep -w /scratch /proc/mounts | cut -d' ' -f3",
    ]);
    s.root.writable = WritableLayer::ReadOnly;
    s.tmpfs = vec![TmpfsMount {
        path: "/scratch".into(),
        options: vec![],
    }];
    s.etc_files = vec![EtcFile {
        name: "hosts".into(),
        contents: "127.0.0.1\tlocalhost\n10.0.2.15\tbox\n".into(),
    }];
    let (r, out, err) = run(&s, None);
    assert_eq!(r.outcome, exited(0), "{}", text(&err));
    assert_eq!(
        text(&out),
        "refused\ny\n127.0.0.1\tlocalhost\n10.0.2.15\tbox\ntmpfs\n"
    );
    assert!(
        text(&err).contains("Read-only file system"),
        "{}",
        text(&err)
    );
}

/// Median and minimum of guest-init's container setup natively vs `crun run` of the same
/// rootfs. Run with `cargo test -p guest-init --release --test native -- --ignored
/// bench_container_setup --nocapture`; prints one `BENCH` line per figure.
///
/// guest-init's own figure is the sum of what it logs as `rootfs_us` (the root assembled: the
/// overlay of the image directory and a writable layer in memory) and `setup_us` (from there to
/// the container's exec confirmed: namespaces, mounts, pivot_root, user, exec), the work `crun
/// run` does on a ready rootfs. The image is built and mounted before the runs, as the host's
/// store has the image's disk ready before a VM starts. The host-side figures add the session
/// around it (spec sent → `Started`, → `Exit`).
#[test]
#[ignore = "benchmark"]
fn bench_container_setup() {
    const RUNS: usize = 20;
    let image = Image::busybox();
    let s = image.spec(&["true"]);
    let mut start = Vec::new();
    let mut exit = Vec::new();
    let mut root = Vec::new();
    let mut setup = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("guest-init.log");
    for _ in 0..RUNS {
        let (r, _) = Guest::start_logged(&log).run(&s, None, &mut std::io::sink());
        let r = r.unwrap();
        assert_eq!(r.outcome, exited(0));
        start.push(r.timings.start);
        exit.push(r.timings.exit.unwrap());
        let text = std::fs::read_to_string(&log).unwrap();
        let logged = |key: &str| -> Duration {
            let us: u64 = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in guest-init's log: {text}"));
            Duration::from_micros(us)
        };
        let (rootfs, exec) = (logged("rootfs_us="), logged("setup_us="));
        root.push(rootfs);
        setup.push(rootfs + exec);
    }
    let crun = crun_runs(dir.path(), RUNS);
    let gib = stdout_gib(&image);
    let (smin, smed) = support::min_median(start);
    let (emin, emed) = support::min_median(exit);
    let (rmin, rmed) = support::min_median(root);
    let (gmin, gmed) = support::min_median(setup);
    let (cmin, cmed) = support::min_median(crun);
    println!("BENCH guest_init_own_setup_ms min={gmin:.3} median={gmed:.3}");
    println!("BENCH guest_init_root_assembly_ms min={rmin:.3} median={rmed:.3}");
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
fn stdout_gib(image: &Image) -> Duration {
    let s = image.spec(&["dd", "if=/dev/zero", "bs=1M", "count=1024"]);
    let mut sink = Sink(0);
    let (r, _) = Guest::start().run(&s, None, &mut sink);
    let r = r.unwrap();
    assert_eq!(r.outcome, exited(0));
    assert_eq!(sink.0, 1 << 30);
    r.timings.exit.unwrap() - r.timings.start
}

/// Times `crun run` of `true` in the busybox rootfs (the image's one layer unpacked into a
/// directory: crun makes its mount points in the rootfs), in a private mount namespace without
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
