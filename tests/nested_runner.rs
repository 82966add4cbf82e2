//! The nested test VM's runner (`nested-vm`, tests/nested/) keeps its promises: the command runs
//! inside L1 at the host's paths with a working /dev/kvm and its exit status comes back (so a
//! test binary that fails inside L1 fails here) even when it leaves processes behind, L1's writes
//! never reach the host, a hung L1 is
//! killed at its deadline with a clear message, a frozen L1 (no heartbeat) is told apart from a
//! hung command (exit 75), and killing the runner with SIGKILL stops L1.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_tests::{processes_mentioning, run_with_deadline, stderr, stdout, workspace};

fn runner(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nested-vm"));
    c.args(["--cpus", "1", "--memory", "1024"])
        .args(args)
        .current_dir(workspace());
    c
}

/// The QEMU processes of the runner with this pid (`-name nested-vm-PID`).
fn l1_of(runner_pid: u32) -> Vec<String> {
    processes_mentioning(&format!("nested-vm-{runner_pid} "))
}

#[test]
fn command_runs_in_l1_and_its_status_comes_back() {
    let started = Instant::now();
    let marker = workspace().join("target/nested-vm-write-check");
    let _ = std::fs::remove_file(&marker);
    let script = format!(
        "echo \"cwd=$(pwd)\"; echo \"engine=$SKIFF_TEST_ENGINE\"; echo \"extra=$EXTRA\"; \
         test -c /dev/kvm && echo kvm-ok; test -f Cargo.toml && echo workspace-ok; \
         touch {m} && test -f {m} && echo wrote-in-l1; sleep 600 & exit 7",
        m = marker.display()
    );
    let o = run_with_deadline(
        runner(&["--env", "EXTRA=a b'c", "--", "sh", "-c", &script]),
        b"",
        Duration::from_secs(300),
    )
    .unwrap();
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(7), "{out}\n{}", stderr(&o));
    for line in [
        format!("cwd={}", workspace().display()),
        "engine=kvm".into(),
        "extra=a b'c".into(),
        "kvm-ok".into(),
        "workspace-ok".into(),
        "wrote-in-l1".into(),
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} not in:\n{out}");
    }
    assert!(out.contains("nested-vm: L1: up in "), "{out}");
    assert!(!marker.exists(), "a write inside L1 reached the host");
    // The `sleep` left behind holding the output did not keep L1 up.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn hung_l1_is_killed_at_its_deadline() {
    let started = Instant::now();
    let mut c = runner(&["--timeout", "20", "--", "sleep", "600"]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nested-vm: error: L1 did not finish within 20s: killed it"),
        "{}",
        stderr(&o)
    );
    assert!(elapsed < Duration::from_secs(40), "took {elapsed:?}");
    assert_eq!(l1_of(pid), Vec::<String>::new(), "qemu left running");
}

#[test]
fn frozen_l1_is_told_apart_and_killed() {
    // SIGSTOP to L1's heartbeat loop (a child of its init, which ignores the signal itself).
    let mut c = runner(&[
        "--heartbeat-limit",
        "10",
        "--",
        "sh",
        "-c",
        "pkill -STOP -f '^/bin/busybox sh /init'; sleep 600",
    ]);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let child = c.spawn().unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nested-vm: error: L1 froze: no heartbeat for 10s"),
        "{}",
        stderr(&o)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(l1_of(pid), Vec::<String>::new(), "qemu left running");
}

#[test]
fn killed_runner_takes_l1_with_it() {
    let mut child = runner(&["--", "sleep", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let until = Instant::now() + Duration::from_secs(60);
    while l1_of(pid).is_empty() {
        assert!(Instant::now() < until, "L1 never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while !l1_of(pid).is_empty() {
        assert!(
            Instant::now() < until,
            "qemu outlived the runner: {:?}",
            l1_of(pid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
