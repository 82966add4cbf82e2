//! docker's container defaults inside the VM, the whole stack on either engine: the
//! capability sets of the container's processes (docker's default set; `--cap-add`,
//! `--cap-drop`, `--privileged`; none for another user; the same for exec'd processes),
//! `--security-opt no-new-privileges`, docker's seccomp profile (and `seccomp=unconfined`), and
//! docker's masked and read-only paths of `/proc`, `--init`, `--stop-signal`, `--stop-timeout`
//! `--ulimit` and `--pids-limit`.

use skiff_tests::{assert_code, assert_skiff_error, busybox, stderr, stdout, Root};

/// The `Cap*` and `NoNewPrivs` lines of the container's /proc/self/status, as `KEY=VALUE`.
const STATUS: &str =
    "grep -E '^(Cap(Inh|Prm|Eff|Bnd)|NoNewPrivs):' /proc/self/status | tr -d '\\t' | tr ':' '='";

fn status(root: &Root, flags: &[&str]) -> String {
    let img = busybox();
    let mut args = vec!["run", "--rm", "--memory", "128m"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[&img, "sh", "-c", STATUS]);
    let o = root.skiff(&args);
    assert_code(&o, 0);
    stdout(&o)
}

fn field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
}

#[test]
fn capabilities_are_dockers_and_follow_the_flags() {
    let root = Root::new();
    let s = status(&root, &[]);
    for key in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(field(&s, key), "00000000a80425fb", "{key}: {s}");
    }
    assert_eq!(field(&s, "CapInh"), "0000000000000000");
    assert_eq!(field(&s, "NoNewPrivs"), "0");

    let s = status(&root, &["--cap-add", "NET_ADMIN"]);
    assert_eq!(field(&s, "CapEff"), "00000000a80435fb", "bit 12 added: {s}");
    let s = status(&root, &["--cap-drop", "ALL", "--cap-add", "cap_chown"]);
    assert_eq!(field(&s, "CapEff"), "0000000000000001", "{s}");
    let s = status(&root, &["--privileged"]);
    assert_eq!(
        field(&s, "CapEff"),
        "000001ffffffffff",
        "every capability: {s}"
    );
    let s = status(&root, &["--security-opt", "no-new-privileges"]);
    assert_eq!(field(&s, "NoNewPrivs"), "1", "{s}");
    // another user starts with nothing, within the same bounding set
    let s = status(&root, &["-u", "1000"]);
    assert_eq!(field(&s, "CapEff"), "0000000000000000", "{s}");
    assert_eq!(field(&s, "CapBnd"), "00000000a80425fb", "{s}");
}

#[test]
fn an_exec_gets_the_containers_capabilities() {
    let root = Root::new();
    root.detach(
        &["--name", "caps", "--cap-drop", "NET_RAW"],
        &["sleep", "600"],
    );
    let o = root.skiff(&["exec", "caps", "sh", "-c", STATUS]);
    assert_code(&o, 0);
    assert_eq!(
        field(&stdout(&o), "CapEff"),
        "00000000a80405fb",
        "{}",
        stdout(&o)
    );
    assert_code(&root.skiff(&["rm", "-f", "caps"]), 0);
}

#[test]
fn proc_is_masked_as_docker_masks_it_unless_privileged() {
    let root = Root::new();
    let img = busybox();
    let script = "wc -c < /proc/timer_list; grep -c ' /proc/sys proc ro' /proc/mounts; \
                  echo 1 > /proc/sys/kernel/printk && echo written";
    let o = root.skiff(&["run", "--rm", "--memory", "128m", &img, "sh", "-c", script]);
    assert_code(&o, 1);
    assert_eq!(stdout(&o), "0\n1\n", "masked and read-only");
    let o = root.skiff(&[
        "run",
        "--rm",
        "--memory",
        "128m",
        "--privileged",
        &img,
        "sh",
        "-c",
        script,
    ]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].parse::<u64>().unwrap() > 0, "{out}");
    assert_eq!(&lines[1..], ["0", "written"], "{out}");
}

#[test]
fn the_seccomp_profile_refuses_what_dockers_refuses() {
    let root = Root::new();
    let img = busybox();
    // a user namespace needs no capability, only a profile that lets it through
    let script = "grep Seccomp: /proc/self/status | tr -d '\t'; unshare -U true && echo unshared";
    let run = |flags: &[&str]| {
        let mut args = vec!["run", "--rm", "--memory", "128m"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&img, "sh", "-c", script]);
        root.skiff(&args)
    };
    let o = run(&[]);
    assert_eq!(stdout(&o), "Seccomp:2\n");
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--security-opt", "seccomp=unconfined"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "Seccomp:0\nunshared\n");
    // a granted capability lifts what it allows: CAP_SYS_ADMIN, namespaces
    let o = run(&["--cap-add", "SYS_ADMIN"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "Seccomp:2\nunshared\n");
}

#[test]
fn with_init_a_command_without_a_sigterm_handler_stops_at_once() {
    let root = Root::new();
    let id = root.detach(&["--init"], &["sleep", "100"]);
    let t = std::time::Instant::now();
    assert_code(&root.skiff(&["stop", "-t", "30", &id]), 0);
    let took = t.elapsed();
    assert!(
        took <= std::time::Duration::from_secs(2),
        "stop took {took:?}"
    );
    let o = root.skiff(&["inspect", &id]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["State"]["ExitCode"], 143, "{v}");
    // the command is the init's child; its exit code is the container's
    let img = busybox();
    let o = root.skiff(&[
        "run",
        "--rm",
        "--init",
        "--memory",
        "128m",
        &img,
        "sh",
        "-c",
        "echo $$; exit 7",
    ]);
    assert_code(&o, 7);
    assert_eq!(stdout(&o), "2\n");
    let o = root.skiff(&[
        "run",
        "--rm",
        "--init",
        "--memory",
        "128m",
        &img,
        "no-such-command",
    ]);
    assert_code(&o, 127);
}

#[test]
fn stop_sends_the_stop_signal_and_waits_the_stop_timeout() {
    let root = Root::new();
    let code = |id: &str| {
        let o = root.skiff(&["inspect", id]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        v[0]["State"]["ExitCode"].clone()
    };
    // the init passes SIGUSR1 on: sleep dies of it (128 + 10)
    let id = root.detach(&["--init", "--stop-signal", "SIGUSR1"], &["sleep", "100"]);
    assert_code(&root.skiff(&["stop", &id]), 0);
    assert_eq!(code(&id), 138);
    // PID 1 without a handler ignores SIGTERM: SIGKILL after the container's 1 s
    let id = root.detach(&["--stop-timeout", "1"], &["sleep", "100"]);
    let t = std::time::Instant::now();
    assert_code(&root.skiff(&["stop", &id]), 0);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(code(&id), 137);
}

#[test]
fn ulimits_apply_to_the_container_and_its_execs() {
    let root = Root::new();
    let img = busybox();
    let o = root.skiff(&[
        "run",
        "--rm",
        "--memory",
        "128m",
        "--ulimit",
        "nofile=123:456",
        "--ulimit",
        "core=-1",
        &img,
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn; ulimit -c",
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "123\n456\nunlimited\n");
    root.detach(
        &["--name", "lim", "--ulimit", "nproc=77"],
        &["sleep", "600"],
    );
    let o = root.skiff(&["exec", "lim", "sh", "-c", "ulimit -u"]);
    assert_eq!(stdout(&o), "77\n");
    assert_code(&root.skiff(&["rm", "-f", "lim"]), 0);
    let o = root.skiff(&["run", "--rm", "--ulimit", "nofile=2:1", &img, "true"]);
    assert_code(&o, 125);
}

#[test]
fn the_pids_limit_caps_the_containers_processes_and_its_execs() {
    let root = Root::new();
    let img = busybox();
    let forks = "i=0; while [ $i -lt 8 ]; do sleep 2 & i=$((i+1)); done; wait; echo done";
    let o = root.skiff(&[
        "run",
        "--rm",
        "--memory",
        "128m",
        "--pids-limit",
        "5",
        &img,
        "sh",
        "-c",
        forks,
    ]);
    assert!(stderr(&o).contains("can't fork"), "{}", stderr(&o));
    let o = root.skiff(&["run", "--rm", "--memory", "128m", &img, "sh", "-c", forks]);
    assert_code(&o, 0);
    assert_eq!(stderr(&o), "", "without a limit");
    // an exec'd process counts toward the container's limit
    root.detach(
        &["--name", "few", "--pids-limit", "4"],
        &["sh", "-c", "sleep 600 & sleep 600"],
    );
    let o = root.skiff(&["exec", "few", "sh", "-c", "sleep 1 & sleep 1 & wait"]);
    assert!(stderr(&o).contains("can't fork"), "{}", stderr(&o));
    assert_code(&root.skiff(&["rm", "-f", "few"]), 0);
}

#[test]
fn bad_security_flags_are_one_line_errors() {
    let root = Root::new();
    let img = busybox();
    let o = root.skiff(&["run", "--rm", "--cap-add", "BOGUS", &img, "true"]);
    assert_skiff_error(&o, "unknown capability \"BOGUS\"");
    let o = root.skiff(&["run", "--rm", "--security-opt", "apparmor=x", &img, "true"]);
    assert_skiff_error(&o, "unsupported --security-opt");
    assert_eq!(stdout(&root.skiff(&["ps", "-aq"])), "");
}
