//! The user's files in the container, the whole stack on either engine: `-v` and `--mount`
//! bind mounts of host directories and files over virtio-fs (served by a real virtiofsd),
//! read-only mounts, owners as the container writes them, named volumes that outlive their
//! containers and start with the image's files, `--mount type=tmpfs`, `skiff volume`, host
//! edits that wake a watcher in the container within a second, and bad input that is refused
//! with one line and changes nothing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use skiff_tests::oci::{layer_tar, stack_layers, Entry};
use skiff_tests::{
    assert_code, assert_skiff_error, busybox, images, processes_mentioning, stderr, stdout, Root,
};

/// `skiff run --rm` of busybox with `extra` flags before the image and `cmd` after it.
fn run(root: &Root, extra: &[&str], cmd: &[&str]) -> std::process::Output {
    let img = busybox();
    let mut args = vec!["run", "--rm", "--memory", "128m"];
    args.extend_from_slice(extra);
    args.push(&img);
    args.extend_from_slice(cmd);
    root.skiff(&args)
}

/// No virtiofsd serving `dir` is left, within a few seconds.
#[track_caller]
fn no_virtiofsd_for(dir: &Path) {
    let needle = format!("--shared-dir={}", dir.display());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_mentioning(&needle);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "virtiofsd outlived its VM: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bind_mount_reads_and_writes_the_host_directory_live() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().canonicalize().unwrap();
    std::fs::write(dir.join("in.txt"), b"from the host\n").unwrap();
    let v = format!("{}:/src", dir.display());
    let o = run(
        &root,
        &["-v", &v, "-w", "/src"],
        &[
            "sh",
            "-c",
            "cat in.txt && echo from the container > out.txt && mkdir -p sub && echo x > sub/y",
        ],
    );
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "from the host\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "from the container\n"
    );
    assert_eq!(std::fs::read_to_string(dir.join("sub/y")).unwrap(), "x\n");
    no_virtiofsd_for(&dir);
}

#[test]
fn read_only_mounts_refuse_writes_and_leave_the_host_unchanged() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().canonicalize().unwrap();
    std::fs::write(dir.join("keep"), b"original").unwrap();
    for flag in [
        vec!["-v".to_string(), format!("{}:/data:ro", dir.display())],
        vec![
            "--mount".to_string(),
            format!("type=bind,source={},target=/data,readonly", dir.display()),
        ],
    ] {
        let flag: Vec<&str> = flag.iter().map(String::as_str).collect();
        let o = run(
            &root,
            &flag,
            &["sh", "-c", "cat /data/keep; echo new > /data/new; echo changed > /data/keep; rm -f /data/keep; echo status=$?"],
        );
        assert_code(&o, 0);
        assert!(stdout(&o).starts_with("original"), "{}", stdout(&o));
        assert!(
            stdout(&o).contains("status=1"),
            "rm succeeded: {}",
            stdout(&o)
        );
        assert!(
            stderr(&o).contains("Read-only file system"),
            "{}",
            stderr(&o)
        );
        assert!(!dir.join("new").exists());
        assert_eq!(std::fs::read(dir.join("keep")).unwrap(), b"original");
    }
}

#[test]
fn files_keep_the_owner_the_container_writes_them_with() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().canonicalize().unwrap();
    // the container's user 1234 must be able to write there
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let v = format!("{}:/out", dir.display());
    let o = run(
        &root,
        &["-v", &v, "-u", "1234:5678"],
        &["sh", "-c", "echo hi > /out/f; mkdir /out/d"],
    );
    assert_code(&o, 0);
    for name in ["f", "d"] {
        let m = std::fs::metadata(dir.join(name)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678), "{name}");
    }
}

#[test]
fn a_single_host_file_is_mounted_alone() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().canonicalize().unwrap();
    std::fs::write(dir.join("app.conf"), b"setting=1\n").unwrap();
    std::fs::write(dir.join("secret"), b"not for the container").unwrap();
    let v = format!(
        "{}:/etc/app/app.conf",
        dir.display().to_string() + "/app.conf"
    );
    let o = run(
        &root,
        &["-v", &v],
        &[
            "sh",
            "-c",
            "cat /etc/app/app.conf; ls /etc/app; echo setting=2 > /etc/app/app.conf",
        ],
    );
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "setting=1\napp.conf\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("app.conf")).unwrap(),
        "setting=2\n"
    );
}

#[test]
fn a_named_volume_starts_with_the_image_files_and_outlives_its_containers() {
    let root = Root::new();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    stack_layers(
        &images().join("oci/busybox"),
        "latest",
        &layout,
        "seeded",
        &[layer_tar(&[
            Entry::dir("./data", 0o750).owned(7, 8),
            Entry::file("./data/seed", 0o640, b"from the image\n").owned(7, 8),
            Entry::symlink("./data/link", "seed"),
        ])],
    );
    let img = format!("oci:{}:seeded", layout.display());
    let run_img = |cmd: &str| {
        root.skiff(&[
            "run",
            "--rm",
            "--memory",
            "128m",
            "-v",
            "cache:/data",
            &img,
            "sh",
            "-c",
            cmd,
        ])
    };
    let o = run_img("cat /data/seed; readlink /data/link; stat -c '%u:%g %a' /data /data/seed; echo kept > /data/mine");
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "from the image\nseed\n7:8 750\n7:8 640\n");
    // a second container finds what the first one left, and the image's files are not copied
    // over it again
    let o = run_img("cat /data/mine; echo changed > /data/seed; cat /data/seed");
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "kept\nchanged\n");
    let o = run_img("cat /data/seed");
    assert_eq!(stdout(&o), "changed\n");

    let o = root.skiff(&["volume", "ls", "-q"]);
    assert_eq!(stdout(&o), "cache\n");
    let o = root.skiff(&["volume", "inspect", "cache"]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let mountpoint = v[0]["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(Path::new(&mountpoint).join("mine")).unwrap(),
        "kept\n"
    );
    assert_code(&root.skiff(&["volume", "rm", "cache"]), 0);
    assert!(!Path::new(&mountpoint).exists());
}

#[test]
fn volume_commands_and_a_volume_in_use() {
    let root = Root::new();
    let o = root.skiff(&["volume", "create", "notes"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "notes\n");
    let id = root.detach(&["--name", "user", "-v", "notes:/n"], &["sleep", "600"]);
    let o = root.skiff(&["exec", "user", "sh", "-c", "echo hello > /n/a; cat /n/a"]);
    assert_eq!(stdout(&o), "hello\n");
    let o = root.skiff(&["inspect", &id]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["Mounts"][0]["Type"], "volume");
    assert_eq!(v[0]["Mounts"][0]["Name"], "notes");
    assert_eq!(v[0]["Mounts"][0]["Destination"], "/n");

    // --volumes-from: the same volume at the same place, here read-only
    let img = busybox();
    let o = root.skiff(&[
        "run",
        "--rm",
        "--memory",
        "128m",
        "--volumes-from",
        "user:ro",
        &img,
        "sh",
        "-c",
        "cat /n/a; touch /n/b",
    ]);
    assert_code(&o, 1);
    assert_eq!(stdout(&o), "hello\n");
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );

    // in use (running, then exited): refused, the files stay
    let o = root.skiff(&["volume", "rm", "notes"]);
    assert_skiff_error(&o, "volume notes is in use");
    assert_code(&root.skiff(&["stop", "-t", "1", "user"]), 0);
    let o = root.skiff(&["volume", "prune", "--all"]);
    assert_code(&o, 0);
    assert!(!stdout(&o).contains("notes"), "{}", stdout(&o));
    assert_skiff_error(&root.skiff(&["volume", "rm", "notes"]), "in use");
    let data = root.0.path().join("volumes/notes/_data/a");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "hello\n");

    // once the container is gone: prune without --all keeps named volumes, with it they go
    assert_code(&root.skiff(&["rm", "user"]), 0);
    let o = root.skiff(&["volume", "prune"]);
    assert_code(&o, 0);
    assert!(data.exists());
    let o = root.skiff(&["volume", "prune", "-a"]);
    assert!(stdout(&o).contains("notes"), "{}", stdout(&o));
    assert!(!data.exists());
    assert_eq!(stdout(&root.skiff(&["volume", "ls", "-q"])), "");
}

#[test]
fn a_tmpfs_mount_and_a_bind_inside_it() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().canonicalize().unwrap();
    std::fs::write(dir.join("f"), b"shared\n").unwrap();
    let bind = format!("type=bind,src={},dst=/scratch/host", dir.display());
    let o = run(
        &root,
        &[
            "--mount",
            "type=tmpfs,target=/scratch,tmpfs-size=4m",
            "--mount",
            &bind,
        ],
        &[
            "sh",
            "-c",
            "grep ' /scratch ' /proc/mounts | cut -d' ' -f3; cat /scratch/host/f",
        ],
    );
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "tmpfs\nshared\n");
}

/// `skiff run --rm` of busybox with `dir` mounted at `/w` running `script`, once the container
/// runs (its stdout and stderr piped).
fn started(root: &Root, dir: &Path, script: &str) -> std::process::Child {
    let v = format!("{}:/w", dir.display());
    let script = format!("touch /w/up; {script}");
    let mut child = root
        .cmd(&[
            "run",
            "--rm",
            "--memory",
            "128m",
            "-v",
            &v,
            &busybox(),
            "sh",
            "-c",
            &script,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !dir.join("up").exists() {
        assert!(Instant::now() < deadline, "the container never started");
        assert!(child.try_wait().unwrap().is_none(), "skiff ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn a_killed_skiff_leaves_no_virtiofsd() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().canonicalize().unwrap();
    let mut child = started(&root, &dir, "sleep 600");
    assert!(!processes_mentioning(&format!("--shared-dir={}", dir.display())).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    no_virtiofsd_for(&dir);
}

#[test]
fn a_virtiofsd_that_dies_mid_run_is_reported() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().canonicalize().unwrap();
    let child = started(&root, &dir, "sleep 4; echo done");
    let needle = format!("--shared-dir={}", dir.display());
    let status = std::process::Command::new("pkill")
        .args(["-KILL", "-f", "--", &needle])
        .status()
        .unwrap();
    assert!(status.success(), "no virtiofsd to kill");
    let o = child.wait_with_output().unwrap();
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "done\n");
    assert!(
        stderr(&o).contains("skiff: the container lost a shared directory: virtiofsd of"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_mounts_are_one_line_errors_that_change_nothing() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().canonicalize().unwrap();
    let missing = dir.join("missing");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--mount".into(),
                format!("type=bind,source={},target=/x", missing.display()),
            ],
            "bind source path does not exist",
        ),
        (
            vec!["-v".into(), "relative/dir:/x".into()],
            "host paths must be absolute",
        ),
        (
            vec!["-v".into(), format!("{}:/x:bogus", dir.display())],
            "invalid volume option \"bogus\"",
        ),
        (
            vec!["-v".into(), "./here:/x".into()],
            "host paths must be absolute",
        ),
        (
            vec!["--mount".into(), "type=volume,src=a/b,dst=/x".into()],
            "host paths must be absolute",
        ),
        (
            vec![
                "-v".into(),
                format!("{}:/x", dir.display()),
                "--tmpfs".into(),
                "/x".into(),
            ],
            "duplicate mount point",
        ),
    ];
    for (flags, what) in cases {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let o = run(&root, &flags, &["true"]);
        assert_code(&o, 125);
        let err = stderr(&o);
        assert_eq!(
            err.lines().filter(|l| !l.is_empty()).count(),
            1,
            "{flags:?}: {err}"
        );
        assert!(err.starts_with("skiff: error: "), "{flags:?}: {err}");
        assert!(err.contains(what), "{flags:?}: {what:?} not in {err}");
    }
    assert!(!missing.exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the host directory changed"
    );
    assert!(!root.0.path().join("volumes").exists(), "a volume was made");
    let o = root.skiff(&["ps", "-aq"]);
    assert_eq!(stdout(&o), "", "a container was left");
    assert_skiff_error(
        &root.skiff(&["volume", "create", "a/b"]),
        "invalid volume name",
    );
    assert_skiff_error(
        &root.skiff(&["volume", "rm", "nothing"]),
        "no such volume: nothing",
    );
    // a bind source removed after the container was made: its start says so
    let gone = dir.join("gone");
    std::fs::create_dir(&gone).unwrap();
    let v = format!("{}:/g", gone.display());
    let img = busybox();
    let o = root.skiff(&[
        "run", "--name", "later", "--memory", "128m", "-v", &v, &img, "true",
    ]);
    assert_code(&o, 0);
    std::fs::remove_dir(&gone).unwrap();
    assert_skiff_error(
        &root.skiff(&["start", "-a", "later"]),
        "bind source path does not exist",
    );
}

/// A file watcher for the container (busybox has none): watches the directory `argv[1]`,
/// prints `ready`, then one line per inotify event (`NAME MASK`, `-` for the directory
/// itself), until a file named `stop` appears.
const WATCHER_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char buf[65536];
    int fd = inotify_init1(0);
    if (fd < 0 || argc < 2 || inotify_add_watch(fd, argv[1], IN_ALL_EVENTS) < 0) { perror("watch"); return 2; }
    printf("ready\n"); fflush(stdout);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) return 3;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            const char *name = e->len ? e->name : "-";
            printf("%s %x\n", name, e->mask); fflush(stdout);
            if (!strcmp(name, "stop")) return 0;
            p += sizeof *e + e->len;
        }
    }
}
"#;

/// Builds the watcher, static, into `dir`.
fn build_watcher(dir: &Path) {
    let src = dir.join("watch.c");
    std::fs::write(&src, WATCHER_C).unwrap();
    let o = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("watch"))
        .arg(&src)
        .output()
        .expect("cc (build-essential)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A container running the watcher on the host directory `dir` mounted at `/w`; its output
/// lines arrive stamped with the time they reached the host.
struct WatchedRun {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
    _tools: tempfile::TempDir,
}

impl WatchedRun {
    fn start(root: &Root, dir: &Path) -> WatchedRun {
        use std::io::BufRead;
        let tools = tempfile::tempdir().unwrap();
        build_watcher(tools.path());
        let w = format!("{}:/w", dir.display());
        let t = format!("{}:/t:ro", tools.path().display());
        let mut child = root
            .cmd(&[
                "run",
                "--rm",
                "--memory",
                "128m",
                "-v",
                &w,
                "-v",
                &t,
                &busybox(),
                "/t/watch",
                "/w",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((Instant::now(), line));
            }
        });
        let (_, first) = lines
            .recv_timeout(Duration::from_secs(180))
            .expect("the watcher never started");
        assert_eq!(first, "ready");
        WatchedRun {
            child,
            lines,
            _tools: tools,
        }
    }

    /// Makes `edit` and returns how long until the watcher reported an event for `name`, or
    /// `None` after a second.
    fn latency(&self, edit: impl FnOnce(), name: &str) -> Option<Duration> {
        // what came before (the guest's own reads) is not what this edit causes
        while self.lines.try_recv().is_ok() {}
        let t0 = Instant::now();
        edit();
        loop {
            let left = Duration::from_secs(1).checked_sub(t0.elapsed())?;
            let (at, line) = self.lines.recv_timeout(left).ok()?;
            if line.split(' ').next() == Some(name) {
                return Some(at - t0);
            }
        }
    }

    /// Ends the watcher with a file named `stop` in `dir`.
    fn stop(mut self, dir: &Path) {
        std::fs::write(dir.join("stop"), b"").unwrap();
        assert_eq!(self.child.wait().unwrap().code(), Some(0));
    }
}

#[test]
fn host_edits_wake_a_watcher_in_the_container_within_a_second() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().canonicalize().unwrap();
    std::fs::write(dir.join("edited"), b"v1").unwrap();
    std::fs::write(dir.join("removed"), b"x").unwrap();
    let run = WatchedRun::start(&root, &dir);
    // each edit on the host, and the name the watcher must report
    let edits: [(&str, &dyn Fn(), &str); 4] = [
        (
            "modify",
            &|| std::fs::write(dir.join("edited"), b"v2").unwrap(),
            "edited",
        ),
        (
            "create",
            &|| std::fs::write(dir.join("created"), b"new").unwrap(),
            "created",
        ),
        (
            "mkdir",
            &|| std::fs::create_dir(dir.join("newdir")).unwrap(),
            "newdir",
        ),
        (
            "remove",
            &|| std::fs::remove_file(dir.join("removed")).unwrap(),
            "-",
        ),
    ];
    let mut latencies = Vec::new();
    for (what, edit, name) in edits {
        let took = run.latency(edit, name);
        latencies.push((
            what,
            took.unwrap_or_else(|| panic!("{what}: no event within 1 s")),
        ));
    }
    eprintln!("host edit -> container watcher: {latencies:?}");
    run.stop(&dir);
}

/// Shared directories' figures (scripts/bench.sh), each against its reference in the same VM:
/// 1000 small files made, stat'ed and read on a bind mount vs on the guest's tmpfs; a 256 MiB
/// host file read (1 MiB `read`s, as a program reads: `cat` would `sendfile`, which tmpfs
/// serves without a copy) vs the same bytes from tmpfs; host edit → container watcher latency.
#[test]
#[ignore = "benchmark: scripts/bench.sh runs it"]
fn bench_shared_directories() {
    let root = Root::new();
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().canonicalize().unwrap();
    let big = vec![7u8; 256 << 20];
    std::fs::write(dir.join("big"), &big).unwrap();
    drop(big);
    let v = format!("{}:/bind", dir.display());
    // milliseconds of each step, timed inside the guest (its uptime counts in 10 ms steps)
    let script = r#"
ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
small() { t0=$(ms); i=0; mkdir $1/s; while [ $i -lt 1000 ]; do echo x > $1/s/f$i; i=$((i+1)); done
  stat $1/s/* > /dev/null; cat $1/s/* > /dev/null; echo "$2 $(($(ms) - t0))"; }
small /bind small-bind; small /tmpfs small-tmpfs
cp /bind/big /tmpfs/big
sync; echo 3 > /proc/sys/vm/drop_caches
t0=$(ms); dd if=/bind/big of=/dev/null bs=1M 2>/dev/null; echo "read-bind $(($(ms) - t0))"
t0=$(ms); dd if=/tmpfs/big of=/dev/null bs=1M 2>/dev/null; echo "read-tmpfs $(($(ms) - t0))"
"#;
    let img = busybox();
    let o = root.skiff(&[
        "run",
        "--rm",
        "--memory",
        "1g",
        // to drop the guest's page cache between the reads
        "--privileged",
        "-v",
        &v,
        "--tmpfs",
        "/tmpfs:size=600m",
        &img,
        "sh",
        "-c",
        script,
    ]);
    assert_code(&o, 0);
    let out = stdout(&o);
    let ms = |key: &str| -> f64 {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {out}"))
    };
    let (sb, st) = (ms("small-bind "), ms("small-tmpfs "));
    println!("1000 small files create+stat+read: bind mount {sb} ms, tmpfs {st} ms, ratio {:.2}x (aim <= 3)", sb / st.max(1.0));
    let (rb, rt) = (ms("read-bind "), ms("read-tmpfs "));
    println!("256 MiB sequential read: bind mount {rb} ms, tmpfs {rt} ms, throughput ratio {:.2}x (aim >= 0.5)", rt / rb.max(1.0));

    std::fs::remove_dir_all(dir.join("s")).unwrap();
    std::fs::remove_file(dir.join("big")).unwrap();
    std::fs::write(dir.join("edited"), b"0").unwrap();
    let watched = WatchedRun::start(&root, &dir);
    let mut took: Vec<Duration> = (0..50)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(50));
            watched
                .latency(
                    || std::fs::write(dir.join("edited"), i.to_string()).unwrap(),
                    "edited",
                )
                .expect("an edit the watcher never saw")
        })
        .collect();
    watched.stop(&dir);
    took.sort();
    println!(
        "host edit -> container watcher (50 edits): median {:.1} ms, p90 {:.1} ms",
        took[25].as_secs_f64() * 1e3,
        took[45].as_secs_f64() * 1e3
    );
}
