//! Containers that live, on the engine of `$SKIFF_TEST_ENGINE` (qemu by default, under QEMU's
//! software CPU; kvm inside the nested test VM): `run -d` under a monitor, `ps`, `logs -f`,
//! `stop`, `kill`, `rm`, `wait`, `inspect`, `exec` (also with a terminal), foreground runs as
//! containers (listed, named, exec'd into, stopped, killed with SIGKILL), the short id as
//! hostname, signal forwarding of a foreground run, a real terminal driven through tmux, monitors killed with SIGKILL, many
//! containers at once, bad input, and the exec-vs-run and idle-memory figures.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_tests::{
    assert_code, assert_no_vm_left, assert_skiff_error, busybox, processes_mentioning,
    run_with_deadline, skiff_bin, stderr, stdout, test_engine, Root,
};

const DEADLINE: Duration = Duration::from_secs(180);

const COUNTER: &str = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done";

/// The case that boots ten guests at once runs alone: inside the nested test VM one vCPU runs
/// every guest, and another case's boots beside them starve both.
static GUESTS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    GUESTS.read().unwrap_or_else(|e| e.into_inner())
}

fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    GUESTS.write().unwrap_or_else(|e| e.into_inner())
}
#[test]
fn detached_counter_ps_logs_follow_stop_rm() {
    let _shared = shared();
    let root = Root::new();
    let id = root.detach(&["--name", "counter"], &["sh", "-c", COUNTER]);

    let ps = root.skiff(&["ps"]);
    assert_code(&ps, 0);
    assert!(stdout(&ps).contains(&id[..12]), "{}", stdout(&ps));
    assert!(stdout(&ps).contains("counter"));
    assert!(stdout(&ps).contains("Up "));
    let q = root.skiff(&["ps", "-q"]);
    assert_eq!(stdout(&q).trim(), &id[..12]);

    // logs -f streams: lines keep coming while we read.
    let mut follow = root
        .cmd(&["logs", "-f", "counter"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first: u64 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    let mut last = first;
    while last < first + 15 {
        last = lines.next().unwrap().unwrap().trim().parse().unwrap();
    }

    let t0 = Instant::now();
    let stop = root.skiff(&["stop", "-t", "1", "counter"]);
    assert_code(&stop, 0);
    let took = t0.elapsed();
    // The shell is PID 1 of its namespace and ignores SIGTERM: SIGKILL after 1 s.
    assert!(took < Duration::from_secs(6), "stop took {took:?}");
    // logs -f ends once the container has.
    let deadline = Instant::now() + Duration::from_secs(10);
    while follow.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "logs -f did not end");
        std::thread::sleep(Duration::from_millis(50));
    }

    let ps = root.skiff(&["ps"]);
    assert!(!stdout(&ps).contains("counter"), "{}", stdout(&ps));
    let ps = root.skiff(&["ps", "-a", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&ps).trim()).unwrap();
    assert_eq!(v["ExitCode"], 137);
    assert_eq!(v["State"], "exited");
    assert!(v["Status"].as_str().unwrap().starts_with("Exited (137)"));

    let tail = root.skiff(&["logs", "--tail", "2", "--timestamps", "counter"]);
    let tail_lines: Vec<String> = stdout(&tail).lines().map(String::from).collect();
    assert_eq!(tail_lines.len(), 2, "{tail_lines:?}");
    assert!(tail_lines[0].starts_with("20") && tail_lines[0].contains("Z "));

    let wait = root.skiff(&["wait", "counter"]);
    assert_eq!(stdout(&wait).trim(), "137");
    let inspect = root.skiff(&["inspect", &id[..6]]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&inspect)).unwrap();
    assert_eq!(v[0]["Id"], id.as_str());
    assert_eq!(v[0]["State"]["ExitCode"], 137);

    assert_code(&root.skiff(&["rm", "counter"]), 0);
    assert!(!root.0.path().join("containers").join(&id).exists());
    assert_eq!(stdout(&root.skiff(&["ps", "-a", "-q"])).trim(), "");
}

#[test]
fn exec_into_a_running_container() {
    let _shared = shared();
    let root = Root::new();
    root.detach(
        &["--name", "box", "-e", "FROM_RUN=yes"],
        &["sh", "-c", "echo from-pid1 > /tmp/mark; sleep 1000"],
    );
    let o = root.skiff(&[
        "exec",
        "box",
        "sh",
        "-c",
        "cat /tmp/mark; echo $FROM_RUN; ls /bin/busybox",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "from-pid1\nyes\n/bin/busybox\n");
    assert_code(&root.skiff(&["exec", "box", "sh", "-c", "exit 42"]), 42);
    let o = root.skiff(&[
        "exec",
        "-e",
        "A=b",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        "box",
        "sh",
        "-c",
        "echo $A; pwd; id -u",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "b\n/tmp\n1000\n");
    let mut c = root.cmd(&["exec", "-i", "box", "cat"]);
    c.stdin(Stdio::piped());
    let o = run_with_deadline(c, b"piped in", DEADLINE).unwrap();
    assert_eq!(stdout(&o), "piped in");
    // -it: a terminal in the guest (stdin here is a pipe, so no raw mode on this side).
    let o = root.skiff(&["exec", "-it", "box", "sh", "-c", "tty; exit 3"]);
    assert_code(&o, 3);
    assert!(stdout(&o).starts_with("/dev/pts/"), "{}", stdout(&o));
    assert_code(&root.skiff(&["exec", "box", "nosuchcmd"]), 127);
    assert_code(&root.skiff(&["rm", "-f", "box"]), 0);
}

#[test]
fn foreground_run_forwards_sigterm() {
    let _shared = shared();
    let root = Root::new();
    let img = busybox();
    let mut child = root
        .cmd(&[
            "run",
            &img,
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo ready; sleep 100 & wait",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "skiff did not end after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(7));
}

fn tmux(socket: &Path, args: &[&str]) -> String {
    let o = Command::new("tmux")
        .arg("-S")
        .arg(socket)
        .args(args)
        .output()
        .expect("tmux is needed for the terminal test: apt-get install tmux");
    assert!(
        o.status.success(),
        "tmux {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits until the pane shows `needle`; returns the pane.
fn pane_until(socket: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pane = tmux(socket, &["capture-pane", "-p", "-t", "t"]);
        if pane.contains(needle) {
            return pane;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never showed; pane:\n{pane}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn interactive_terminal_through_tmux() {
    let _shared = shared();
    let root = Root::new();
    let sock = root.0.path().join("tmux.sock");
    let script = root.0.path().join("session.sh");
    let marker = root.0.path().join("exit-code");
    std::fs::write(
        &script,
        format!(
            "SKIFF_ROOT={} SKIFF_ENGINE={} {} run -it {} sh; echo \"skiff-exit=$?\" > {m}.part; stty -a >> {m}.part; mv {m}.part {m}; sleep 100\n",
            root.0.path().display(),
            test_engine(),
            skiff_bin().display(),
            busybox(),
            m = marker.display()
        ),
    )
    .unwrap();
    tmux(
        &sock,
        &[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "80",
            "-y",
            "24",
            &format!("sh {}", script.display()),
        ],
    );
    let guard = TmuxKill(sock.clone());
    pane_until(&sock, "/ #");
    tmux(
        &sock,
        &["send-keys", "-t", "t", "echo hello-$((6*7))", "Enter"],
    );
    pane_until(&sock, "hello-42");
    tmux(&sock, &["send-keys", "-t", "t", "stty size", "Enter"]);
    pane_until(&sock, "24 80");
    tmux(
        &sock,
        &["resize-window", "-t", "t", "-x", "100", "-y", "30"],
    );
    std::thread::sleep(Duration::from_millis(500));
    tmux(&sock, &["send-keys", "-t", "t", "stty size", "Enter"]);
    pane_until(&sock, "30 100");
    tmux(
        &sock,
        &[
            "send-keys",
            "-t",
            "t",
            "sleep 100; echo after-sleep-$?",
            "Enter",
        ],
    );
    std::thread::sleep(Duration::from_millis(800));
    tmux(&sock, &["send-keys", "-t", "t", "C-c"]);
    tmux(
        &sock,
        &["send-keys", "-t", "t", "echo after-sleep-$?", "Enter"],
    );
    pane_until(&sock, "after-sleep-130");
    tmux(&sock, &["send-keys", "-t", "t", "exit 5", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "skiff did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The marker is renamed into place whole: skiff's status, then the terminal's settings.
    let after = std::fs::read_to_string(&marker).unwrap();
    let (status, stty) = after.split_once('\n').unwrap_or((&after, ""));
    assert_eq!(status, "skiff-exit=5");
    // The terminal is sane again: canonical mode and echo are back on.
    assert!(
        stty.contains(" icanon") && stty.contains(" echo "),
        "{stty}"
    );
    drop(guard);
}

struct TmuxKill(PathBuf);

impl Drop for TmuxKill {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.0)
            .arg("kill-server")
            .output();
    }
}

#[test]
fn killed_monitor_shows_as_exited_and_is_removable() {
    let _shared = shared();
    let root = Root::new();
    let id = root.detach(&["--name", "doomed"], &["sleep", "1000"]);
    let dirs = root.vm_dirs();
    let state = root.state(&id);
    let pid = state["monitor_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_no_vm_left(&dirs);
    let ps = root.skiff(&["ps", "-a"]);
    assert!(stdout(&ps).contains("monitor died"), "{}", stdout(&ps));
    assert!(!stdout(&root.skiff(&["ps"])).contains("doomed"));
    assert_skiff_error(&root.skiff(&["exec", "doomed", "true"]), "is not running");
    assert_code(&root.skiff(&["rm", "doomed"]), 0);
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    root.detach(&["--name", "doomed"], &["true"]);
    assert_code(&root.skiff(&["rm", "-f", "doomed"]), 0);
}

#[test]
fn ten_detached_containers_then_stop_all() {
    let _alone = alone();
    let root = Root::new();
    let ids: Vec<String> = (0..10)
        .map(|_| {
            root.detach(
                &[],
                &[
                    "sh",
                    "-c",
                    "trap 'exit 0' TERM; while :; do sleep 0.2; done",
                ],
            )
        })
        .collect();
    let dirs = root.vm_dirs();
    assert_eq!(dirs.len(), 10, "{}", stdout(&root.skiff(&["ps", "-a"])));
    let running = root.skiff(&["ps", "-q"]);
    assert_eq!(stdout(&running).lines().count(), 10);
    let mut args = vec!["stop", "-t", "5"];
    args.extend(ids.iter().map(|s| s.as_str()));
    assert_code(&root.skiff(&args), 0);
    assert_eq!(stdout(&root.skiff(&["ps", "-q"])).trim(), "");
    let all = root.skiff(&["ps", "-a", "--format", "json"]);
    for line in stdout(&all).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["ExitCode"], 0, "{line}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_no_vm_left(&dirs);
    let monitors = processes_mentioning(&root.0.path().display().to_string());
    assert!(monitors.is_empty(), "monitors left: {monitors:?}");
}

#[test]
fn bad_input_is_a_one_line_error_and_changes_nothing() {
    let _shared = shared();
    let root = Root::new();
    for args in [
        &["logs", "nosuch"][..],
        &["stop", "nosuch"],
        &["kill", "nosuch"],
        &["rm", "nosuch"],
        &["exec", "nosuch", "true"],
        &["inspect", "nosuch"],
        &["wait", "nosuch"],
    ] {
        assert_skiff_error(&root.skiff(args), "No such container: nosuch");
    }
    root.detach(&["--name", "busy"], &["sleep", "1000"]);
    root.detach(&["--name", "done"], &["true"]);
    assert_skiff_error(&root.skiff(&["rm", "busy"]), "container is running");
    let img = busybox();
    assert_skiff_error(
        &root.skiff(&["run", "-d", "--name", "busy", &img, "true"]),
        "already in use",
    );
    // `done` ends by itself; exec into it is refused.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stdout(&root.skiff(&["ps", "-q"])).lines().count() != 1 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_skiff_error(&root.skiff(&["exec", "done", "true"]), "is not running");
    assert_skiff_error(&root.skiff(&["kill", "done"]), "is not running");
    // Nothing changed: both still there, busy still running.
    let ps = stdout(&root.skiff(&["ps", "-a"]));
    assert!(ps.contains("busy") && ps.contains("done"), "{ps}");
    assert!(stdout(&root.skiff(&["ps"])).contains("busy"));
    assert_code(&root.skiff(&["rm", "-f", "busy", "done"]), 0);
}

/// Status lines of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn min_median(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[0]), ms(v[v.len() / 2]))
}

#[test]
fn bench_exec_vs_run_and_idle_memory() {
    let _shared = shared();
    let root = Root::new();
    let id = root.detach(&["--name", "idle"], &["sleep", "1000"]);
    let img = busybox();
    let mut exec_times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        assert_code(&root.skiff(&["exec", "idle", "true"]), 0);
        exec_times.push(t.elapsed());
    }
    let mut run_times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        assert_code(
            &root.skiff(&["run", "--rm", "--memory", "128m", &img, "true"]),
            0,
        );
        run_times.push(t.elapsed());
    }
    let (exec_min, exec_med) = min_median(exec_times);
    let (run_min, run_med) = min_median(run_times);
    let ratio = exec_med / run_med;
    println!(
        "exec true: min {exec_min:.1} ms, median {exec_med:.1} ms; run --rm true: min {run_min:.1} ms, median {run_med:.1} ms; ratio {ratio:.3} (goal <= 0.2)"
    );

    std::thread::sleep(Duration::from_secs(1));
    let state = root.state(&id);
    let monitor = state["monitor_pid"].as_u64().unwrap() as u32;
    let monitor_rss = status_kib(monitor, "VmRSS:");
    if test_engine() == "qemu" {
        let vm_dir = state["vm_dir"].as_str().unwrap();
        let qemu: u32 = processes_mentioning(vm_dir)
            .first()
            .and_then(|l| l.split(':').next()?.parse().ok())
            .expect("the qemu process");
        // Guest memory is qemu's shared memfd (RssShmem); the rest is qemu's own.
        let qemu_own = status_kib(qemu, "RssAnon:") + status_kib(qemu, "RssFile:");
        println!(
            "idle detached container: monitor RSS {:.1} MiB, qemu RSS without guest memory {:.1} MiB, total {:.1} MiB (goal <= 10 MiB)",
            monitor_rss as f64 / 1024.0,
            qemu_own as f64 / 1024.0,
            (monitor_rss + qemu_own) as f64 / 1024.0
        );
    } else {
        // skiff's VMM runs in the monitor: its anonymous memory holds the guest pages touched.
        println!(
            "idle detached container: monitor with the VMM inside: RSS {:.1} MiB, of it file-backed {:.1} MiB and anonymous (guest memory touched included) {:.1} MiB",
            monitor_rss as f64 / 1024.0,
            status_kib(monitor, "RssFile:") as f64 / 1024.0,
            status_kib(monitor, "RssAnon:") as f64 / 1024.0
        );
    }
    assert!(
        ratio <= 0.2,
        "exec must not pay for a VM boot: ratio {ratio:.3}"
    );
    assert_code(&root.skiff(&["rm", "-f", "idle"]), 0);
}

/// Starts a foreground `skiff run` with its stdout piped and waits for `ready` on it.
fn foreground_until_ready(root: &Root, extra: &[&str], script: &str) -> std::process::Child {
    let img = busybox();
    let mut args = vec!["run", "--memory", "128m"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[&img, "sh", "-c", script]);
    let mut child = root
        .cmd(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line != "ready\n" {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "skiff ended early");
    }
    child
}

/// Waits for `child` to end; its exit code.
fn exit_of(child: &mut std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        assert!(Instant::now() < deadline, "skiff did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn inspect(root: &Root, name: &str) -> serde_json::Value {
    let o = root.skiff(&["inspect", name]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    v[0].clone()
}

#[test]
fn foreground_run_is_a_container_listed_named_exec_logs_stop_rm() {
    let _shared = shared();
    let root = Root::new();
    let mut child = foreground_until_ready(
        &root,
        &["--name", "fg"],
        "echo to-out; echo to-err >&2; echo ready; sleep 1000",
    );
    let v = inspect(&root, "fg");
    let id = v["Id"].as_str().unwrap().to_string();
    assert_eq!(v["State"]["Status"], "running");
    assert_eq!(v["State"]["MonitorPid"], child.id());
    assert_eq!(v["Config"]["Hostname"], &id[..12]);
    let ps = stdout(&root.skiff(&["ps"]));
    assert!(
        ps.contains(&id[..12]) && ps.contains("fg") && ps.contains("Up "),
        "{ps}"
    );
    // exec reaches the same container: its hostname is the short id.
    let o = root.skiff(&["exec", "fg", "sh", "-c", "hostname; echo $HOSTNAME"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), format!("{0}\n{0}\n", &id[..12]));
    // The name is taken: one line, 125, nothing started.
    let img = busybox();
    assert_skiff_error(
        &root.skiff(&["run", "--name", "fg", &img, "true"]),
        "already in use",
    );
    assert_eq!(stdout(&root.skiff(&["ps", "-a", "-q"])).trim(), &id[..12]);
    // The foreground skiff serves the API: stop ends it (the shell ignores SIGTERM as PID 1).
    assert_code(&root.skiff(&["stop", "-t", "1", "fg"]), 0);
    assert_eq!(exit_of(&mut child), Some(137));
    let ps = root.skiff(&["ps", "-a", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&ps).trim()).unwrap();
    assert_eq!(v["ExitCode"], 137);
    assert_eq!(v["State"], "exited");
    assert_eq!(stdout(&root.skiff(&["ps", "-q"])).trim(), "");
    // A foreground container's output went to the user only.
    let logs = root.skiff(&["logs", "fg"]);
    assert_code(&logs, 0);
    assert_eq!(stdout(&logs), "");
    assert_code(&root.skiff(&["rm", "fg"]), 0);
    assert_eq!(stdout(&root.skiff(&["ps", "-a", "-q"])).trim(), "");
    assert!(!root.0.path().join("containers").join(&id).exists());
}

#[test]
fn foreground_exit_code_stays_listed_and_rm_flag_leaves_nothing() {
    let _shared = shared();
    let root = Root::new();
    let img = busybox();
    let o = root.skiff(&[
        "run",
        "--memory",
        "128m",
        "--name",
        "quick",
        &img,
        "sh",
        "-c",
        "hostname; echo $HOSTNAME; exit 3",
    ]);
    assert_code(&o, 3);
    let v = inspect(&root, "quick");
    let id = v["Id"].as_str().unwrap();
    assert_eq!(stdout(&o), format!("{0}\n{0}\n", &id[..12]));
    assert_eq!(v["State"]["Status"], "exited");
    assert_eq!(v["State"]["ExitCode"], 3);
    let ps = stdout(&root.skiff(&["ps", "-a"]));
    assert!(ps.contains("Exited (3)") && ps.contains("quick"), "{ps}");
    assert_code(&root.skiff(&["rm", "quick"]), 0);

    let o = root.skiff(&[
        "run",
        "--rm",
        "--memory",
        "128m",
        "--hostname",
        "given",
        &img,
        "sh",
        "-c",
        "hostname; echo $HOSTNAME",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "given\ngiven\n");
    assert_eq!(stdout(&root.skiff(&["ps", "-a", "-q"])).trim(), "");
    let left: Vec<_> = std::fs::read_dir(root.0.path().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".names")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn killed_foreground_run_shows_as_exited_and_is_removable() {
    let _shared = shared();
    let root = Root::new();
    let mut child = foreground_until_ready(&root, &["--name", "gone"], "echo ready; sleep 1000");
    let dirs = root.vm_dirs();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(exit_of(&mut child), None);
    std::thread::sleep(Duration::from_millis(500));
    assert_no_vm_left(&dirs);
    let ps = root.skiff(&["ps", "-a"]);
    assert!(
        stdout(&ps).contains("Exited (137) (monitor died)"),
        "{}",
        stdout(&ps)
    );
    assert_eq!(stdout(&root.skiff(&["ps", "-q"])).trim(), "");
    assert_skiff_error(&root.skiff(&["exec", "gone", "true"]), "is not running");
    assert_code(&root.skiff(&["rm", "gone"]), 0);
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn detached_hostname_is_the_short_id_and_detach_with_stdin_is_refused() {
    let _shared = shared();
    let root = Root::new();
    let id = root.detach(&["--name", "host"], &["sleep", "1000"]);
    let o = root.skiff(&["exec", "host", "sh", "-c", "hostname; echo $HOSTNAME"]);
    assert_eq!(stdout(&o), format!("{0}\n{0}\n", &id[..12]));
    assert_code(&root.skiff(&["rm", "-f", "host"]), 0);
    let img = busybox();
    assert_skiff_error(
        &root.skiff(&["run", "-d", "-i", &img, "cat"]),
        "-i with -d needs attach, which skiff does not have yet",
    );
    assert_eq!(stdout(&root.skiff(&["ps", "-a", "-q"])).trim(), "");
}

#[test]
fn detached_rm_container_reports_how_it_started_even_when_gone_at_once() {
    let _shared = shared();
    let root = Root::new();
    let img = busybox();
    // Ends before `run -d` could see it running, and removes itself: the code still comes back.
    let o = root.skiff(&[
        "run",
        "-d",
        "--rm",
        "--memory",
        "128m",
        &img,
        "no-such-command",
    ]);
    assert_code(&o, 127);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("skiff: error: ") && err.contains("no-such-command"),
        "{err}"
    );
    // Ends at once but did run: `run -d` prints its id and succeeds, as docker does.
    let o = root.skiff(&["run", "-d", "--rm", "--memory", "128m", &img, "true"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o).trim().len(), 64, "{}", stdout(&o));
    let end = Instant::now() + Duration::from_secs(30);
    while !stdout(&root.skiff(&["ps", "-a", "-q"])).trim().is_empty() {
        assert!(Instant::now() < end, "the --rm container was not removed");
        std::thread::sleep(Duration::from_millis(100));
    }
}
