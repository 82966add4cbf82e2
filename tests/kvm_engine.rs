//! `--engine kvm` as a user meets it through `skiff run`: the clear one-line errors (exit 125)
//! for a host without /dev/kvm, without permission on it, or with a kernel skiff's VMM cannot
//! boot, the warning when guest code would be emulated, and a probe that could not open
//! /dev/kvm not deciding for the host's other processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use skiff_tests::{images, run_with_deadline, skiff_bin};

fn archive() -> PathBuf {
    images().join("archives/busybox-latest.oci.tar")
}

fn run(mut cmd: Command) -> Output {
    run_with_deadline(
        {
            cmd.env("SKIFF_BOOT_TIMEOUT", "5");
            cmd
        },
        b"",
        Duration::from_secs(120),
    )
    .expect("skiff run")
}

/// `skiff run --engine kvm oci-archive:ARCHIVE true`, wrapped in `prefix` (e.g. `unshare …`).
fn skiff_kvm(prefix: &[&str], archive: &Path) -> Command {
    let mut c = Command::new(prefix.first().copied().unwrap_or("env"));
    c.args(prefix.iter().skip(1))
        .arg(skiff_bin())
        .args(["run", "--engine", "kvm"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg("true");
    c
}

#[track_caller]
fn assert_one_line_error(o: &Output, what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("skiff: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(what), "{what:?} not in {err}");
}

/// The kernel, guest-init and image copied where an unprivileged user can read them.
fn readable_assets(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let info = Command::new(skiff_bin()).arg("info").output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| PathBuf::from(v.trim()))
            .unwrap_or_else(|| panic!("skiff info has no {k} line: {info}"))
    };
    let kernel = dir.join("vmlinux");
    let init = dir.join("guest-init");
    std::fs::copy(field("kernel:"), &kernel).unwrap();
    std::fs::copy(field("guest-init:"), &init).unwrap();
    let image = dir.join("image.tar");
    std::fs::copy(archive(), &image).unwrap();
    (kernel, init, image)
}

/// A command prefix: `script` runs as root in a private mount namespace, then execs `then`
/// followed by the rest of the command.
fn in_private_mounts<'a>(script: &'a str, then: &[&'a str]) -> Vec<&'a str> {
    let mut p = vec![
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ];
    p.extend_from_slice(then);
    p
}

/// For [`in_private_mounts`]: a /dev that holds only null and urandom.
const NO_DEV_KVM: &str = "mount -t tmpfs none /dev && mknod -m 666 /dev/null c 1 3 && \
                          mknod -m 666 /dev/urandom c 1 9 && exec \"$@\"";

#[test]
fn no_dev_kvm_is_a_clear_error() {
    let o = run(skiff_kvm(&in_private_mounts(NO_DEV_KVM, &[]), &archive()));
    assert_one_line_error(&o, "/dev/kvm does not exist");
}

#[test]
fn a_probe_that_could_not_open_dev_kvm_is_not_kept() {
    // Where /dev/kvm is missing for this process only (a private mount namespace), the probe's
    // "no KVM guest could run" must not be cached for the host's other processes.
    let cache = tempfile::tempdir().unwrap();
    let prefix = in_private_mounts(NO_DEV_KVM, &[]);
    let mut c = Command::new(prefix[0]);
    c.args(&prefix[1..])
        .arg(skiff_bin())
        .arg("info")
        .env("SKIFF_CACHE", cache.path());
    let o = run(c);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("kvm: emulated: no KVM guest could run"),
        "{out}"
    );
    let kept: Vec<_> = std::fs::read_dir(cache.path().join("probe"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(kept.is_empty(), "verdict kept: {kept:?}");
}

#[test]
fn no_permission_on_dev_kvm_names_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let (kernel, init, image) = readable_assets(dir.path());
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(dir.path())
        .status()
        .unwrap();
    // /dev/kvm replaced, in a private mount namespace, by a node owned by group nogroup, mode
    // 0660; skiff runs as a user outside that group.
    let node = dir.path().join("kvm");
    let script = format!(
        "mknod -m 0660 {n} c 10 232 && chgrp nogroup {n} && mount --bind {n} /dev/kvm && exec \"$@\"",
        n = node.display()
    );
    let prefix = in_private_mounts(
        &script,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65533",
            "--clear-groups",
        ],
    );
    let mut c = skiff_kvm(&prefix, &image);
    c.env("SKIFF_KERNEL", &kernel)
        .env("SKIFF_GUEST_INIT", &init)
        .env("SKIFF_CACHE", &cache)
        .env("HOME", dir.path());
    let o = run(c);
    assert_one_line_error(
        &o,
        "no permission to open /dev/kvm (owned by group `nogroup`)",
    );
}

#[test]
fn kernel_without_pvh_entry_is_a_clear_error() {
    let mut c = skiff_kvm(&[], &archive());
    c.env("SKIFF_KERNEL", "/bin/busybox");
    let o = run(c);
    assert_one_line_error(&o, "PVH");
}

#[test]
fn emulated_guest_code_is_warned_about() {
    let info = Command::new(skiff_bin()).arg("info").output().unwrap();
    let emulated = String::from_utf8_lossy(&info.stdout).contains("kvm: emulated");
    let o = run(skiff_kvm(&[], &archive()));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        err.contains("warning: guest code is emulated on this host"),
        emulated,
        "{err}"
    );
    if emulated {
        // The emulated guest cannot reach user space in 5 s: the boot deadline ends it cleanly.
        assert_one_line_error(&o, "guest-init did not connect within 5s");
    }
}
