//! Many containers at once on this small host: 50 concurrent `skiff run --rm` of 128 MiB
//! guests on the engine of `$SKIFF_TEST_ENGINE` all succeed. (A guest kernel whose vCPU the
//! host starved used to fail its boot-time timer check and panic.)

use std::process::Stdio;
use std::time::{Duration, Instant};

use skiff_tests::{busybox, stderr, stdout, Root};

const RUNS: usize = 50;

#[test]
fn fifty_concurrent_runs_all_succeed() {
    let root = Root::new();
    let img = busybox();
    let started = Instant::now();
    let children: Vec<_> = (0..RUNS)
        .map(|i| {
            root.cmd(&[
                "run",
                "--rm",
                "--memory",
                "128m",
                &img,
                "echo",
                &format!("run {i}"),
            ])
            // the guests share two cores: boots take long
            .env("SKIFF_BOOT_TIMEOUT", "600")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("skiff run")
        })
        .collect();
    let mut failures = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let o = child.wait_with_output().expect("wait for skiff run");
        if o.status.code() != Some(0) || stdout(&o) != format!("run {i}\n") {
            failures.push(format!(
                "run {i}: {:?}: {}{}",
                o.status.code(),
                stdout(&o),
                stderr(&o)
            ));
        }
    }
    eprintln!("{RUNS} concurrent runs in {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {RUNS} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(started.elapsed() < Duration::from_secs(900));
}
