//! `skiff cp` between the host and containers on the engine of `$SKIFF_TEST_ENGINE`:
//! a 16 MiB file both ways (equal sha256), a tree with a symlink and a hard link, tar streams on
//! `-` both ways, owners with and without `-a`, docker's trailing-slash and `/.` rules, a
//! container symlink that points at a host path, a stopped container (its filesystem outlives
//! its VM), and the errors (no such container, a missing file, both sides local or in
//! containers) that leave the host as it was. The
//! extractor's answer to crafted hostile archives is tested where it lives
//! (`protocol/src/copy/extract/tests.rs`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use skiff_tests::{assert_code, run_with_deadline, sha256_hex, stderr, stdout, Root};

const DEADLINE: Duration = Duration::from_secs(180);

/// A running container named `box`.
fn running_box() -> Root {
    let root = Root::new();
    root.detach(&["--name", "box"], &["sleep", "1000"]);
    root
}

fn sh(root: &Root, script: &str) -> String {
    let o = root.skiff(&["exec", "box", "sh", "-c", script]);
    assert_code(&o, 0);
    stdout(&o)
}

/// Exit 1 and one line on stderr, `skiff: …`, that says `what`.
#[track_caller]
fn assert_copy_error(o: &Output, what: &str) {
    assert_code(o, 1);
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("skiff: "), "{err}");
    assert!(lines[0].contains(what), "{what:?} not in: {err}");
}

/// Deterministic bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn a_16_mib_file_in_and_out_keeps_its_bytes() {
    let root = running_box();
    let tmp = tempfile::tempdir().unwrap();
    let data = noise(16 << 20);
    let src = tmp.path().join("big");
    fs::write(&src, &data).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).unwrap();
    let o = root.skiff(&["cp", src.to_str().unwrap(), "box:/big"]);
    assert_code(&o, 0);
    let inside = sh(&root, "sha256sum /big; stat -c '%a %u:%g' /big");
    let want = sha256_hex(&data);
    assert_eq!(inside, format!("{want}  /big\n640 0:0\n"));
    let back = tmp.path().join("back");
    let o = root.skiff(&["cp", "box:/big", back.to_str().unwrap()]);
    assert_code(&o, 0);
    assert_eq!(sha256_hex(&fs::read(&back).unwrap()), want);
    assert_eq!(fs::metadata(&back).unwrap().mode() & 0o7777, 0o640);
}

#[test]
fn a_tree_keeps_symlinks_and_hard_links_and_never_writes_through_them() {
    let root = running_box();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("file"), b"content\n").unwrap();
    std::os::unix::fs::symlink("../file", src.join("sub/link")).unwrap();
    fs::hard_link(src.join("file"), src.join("sub/hard")).unwrap();
    assert_code(&root.skiff(&["cp", src.to_str().unwrap(), "box:/t"]), 0);
    let inside = sh(
        &root,
        "cd /t && readlink sub/link && stat -c '%h %i' file && stat -c '%h %i' sub/hard \
         && cat sub/link",
    );
    let lines: Vec<&str> = inside.lines().collect();
    assert_eq!(lines[0], "../file", "{inside}");
    assert_eq!(lines[1], lines[2], "the hard link is one inode: {inside}");
    assert!(lines[1].starts_with("2 "), "{inside}");
    assert_eq!(lines[3], "content");

    // Out again, with a symlink the container made that names a host directory.
    let victim = tmp.path().join("victim");
    fs::create_dir(&victim).unwrap();
    sh(&root, &format!("ln -s {} /t/escape", victim.display()));
    let out = tmp.path().join("out");
    assert_code(&root.skiff(&["cp", "box:/t", out.to_str().unwrap()]), 0);
    assert_eq!(
        fs::read_link(out.join("sub/link")).unwrap(),
        Path::new("../file")
    );
    let (a, b) = (
        fs::metadata(out.join("file")).unwrap(),
        fs::metadata(out.join("sub/hard")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(fs::read_link(out.join("escape")).unwrap(), victim);
    assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    // -L follows the source itself: the container's file, not the host's.
    sh(
        &root,
        "echo in-the-container > /etc/mine; ln -s /etc/mine /t/alias",
    );
    let followed = tmp.path().join("followed");
    let o = root.skiff(&["cp", "-L", "box:/t/alias", followed.to_str().unwrap()]);
    assert_code(&o, 0);
    assert_eq!(fs::read(&followed).unwrap(), b"in-the-container\n");
    let kept = tmp.path().join("kept");
    assert_code(
        &root.skiff(&["cp", "box:/t/alias", kept.to_str().unwrap()]),
        0,
    );
    assert_eq!(fs::read_link(&kept).unwrap(), Path::new("/etc/mine"));
}

#[test]
fn tar_streams_on_dash_both_ways() {
    let root = running_box();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/x"), b"streamed\n").unwrap();
    let tar = Command::new("tar")
        .args(["-C", src.to_str().unwrap(), "-cf", "-", "d"])
        .output()
        .unwrap();
    assert!(tar.status.success());
    sh(&root, "mkdir /in");
    let o = run_with_deadline(root.cmd(&["cp", "-", "box:/in"]), &tar.stdout, DEADLINE).unwrap();
    assert_code(&o, 0);
    assert_eq!(sh(&root, "cat /in/d/x"), "streamed\n");
    // Into a file: docker's "must be a directory".
    let o =
        run_with_deadline(root.cmd(&["cp", "-", "box:/in/d/x"]), &tar.stdout, DEADLINE).unwrap();
    assert_copy_error(&o, "must be a directory");

    let o = root.skiff(&["cp", "box:/in/d", "-"]);
    assert_code(&o, 0);
    let listing = run_with_deadline(
        {
            let mut c = Command::new("tar");
            c.args(["-tvf", "-"]);
            c
        },
        &o.stdout,
        DEADLINE,
    )
    .unwrap();
    let names = stdout(&listing);
    assert!(names.contains(" d/\n") || names.contains(" d\n"), "{names}");
    assert!(names.contains(" d/x\n"), "{names}");
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let untar = run_with_deadline(
        {
            let mut c = Command::new("tar");
            c.args(["-C", out.to_str().unwrap(), "-xf", "-"]);
            c
        },
        &o.stdout,
        DEADLINE,
    )
    .unwrap();
    assert_code(&untar, 0);
    assert_eq!(fs::read(out.join("d/x")).unwrap(), b"streamed\n");
}

#[test]
fn owners_are_root_or_the_user_unless_archive_mode_keeps_them() {
    let root = running_box();
    let tmp = tempfile::tempdir().unwrap();
    let me = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    sh(&root, "echo owned > /owned; chown 1234:5678 /owned");
    let plain = tmp.path().join("plain");
    assert_code(
        &root.skiff(&["cp", "box:/owned", plain.to_str().unwrap()]),
        0,
    );
    let m = fs::metadata(&plain).unwrap();
    assert_eq!((m.uid(), m.gid()), me);
    let kept = tmp.path().join("kept");
    assert_code(
        &root.skiff(&["cp", "-a", "box:/owned", kept.to_str().unwrap()]),
        0,
    );
    let m = fs::metadata(&kept).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));

    let src = tmp.path().join("mine");
    fs::write(&src, b"x").unwrap();
    std::os::unix::fs::chown(&src, Some(4321), Some(8765)).unwrap();
    assert_code(
        &root.skiff(&["cp", src.to_str().unwrap(), "box:/in-plain"]),
        0,
    );
    assert_code(
        &root.skiff(&["cp", "-a", src.to_str().unwrap(), "box:/in-kept"]),
        0,
    );
    assert_eq!(
        sh(&root, "stat -c '%u:%g' /in-plain /in-kept"),
        "0:0\n4321:8765\n"
    );
}

#[test]
fn trailing_slash_and_dot_rules_are_dockers() {
    let root = running_box();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("dir");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"f").unwrap();
    let s = src.to_str().unwrap();
    let dot = format!("{s}/.");
    let file = src.join("f");
    let file = file.to_str().unwrap();
    sh(&root, "mkdir /exists; echo old > /afile");
    // A directory into a missing path: created with the directory's content.
    assert_code(&root.skiff(&["cp", s, "box:/fresh"]), 0);
    // Into an existing directory: the directory itself goes in.
    assert_code(&root.skiff(&["cp", s, "box:/exists"]), 0);
    // SRC/. : the content goes in.
    assert_code(&root.skiff(&["cp", &dot, "box:/exists"]), 0);
    // A file onto a file: replaced; into a directory: by its own name.
    assert_code(&root.skiff(&["cp", file, "box:/afile"]), 0);
    assert_code(&root.skiff(&["cp", file, "box:/exists/"]), 0);
    assert_eq!(
        sh(&root, "ls /fresh; ls /exists; cat /afile; echo"),
        "f\ndir\nf\nf\n"
    );
    // A file to a missing path ending in `/`: the directory must exist.
    assert_copy_error(&root.skiff(&["cp", file, "box:/nodir/"]), "must exist");
    // A directory onto a file.
    assert_copy_error(
        &root.skiff(&["cp", s, "box:/afile"]),
        "cannot copy a directory to a file",
    );
    // Out: the same rules on the host.
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let o = out.to_str().unwrap();
    assert_code(&root.skiff(&["cp", "box:/exists/.", o]), 0);
    let mut names: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["dir", "f"]);
    let missing = tmp.path().join("missing/");
    assert_copy_error(
        &root.skiff(&["cp", "box:/afile", &format!("{}/", missing.display())]),
        "must exist",
    );
    assert!(!missing.exists());
}

#[test]
fn errors_are_one_line_and_leave_the_host_alone() {
    let root = running_box();
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("dst");
    let d = dst.to_str().unwrap();
    // No such container: skiff's own error, as every command.
    let o = root.skiff(&["cp", "nosuch:/etc/hostname", d]);
    assert_code(&o, 125);
    assert_eq!(
        stderr(&o).trim_end(),
        "skiff: error: No such container: nosuch"
    );
    let o = root.skiff(&["cp", d, "nosuch:/x"]);
    assert_code(&o, 125);
    assert!(!dst.exists());
    // A file the container does not have.
    let o = root.skiff(&["cp", "box:/no/such/file", d]);
    assert_copy_error(&o, "could not find the file /no/such/file in container box");
    assert!(!dst.exists());
    // A host file that does not exist.
    assert_copy_error(
        &root.skiff(&["cp", d, "box:/x"]),
        "no such file or directory",
    );
    // Both sides local, both in containers: usage errors.
    let o = root.skiff(&["cp", "box:/a", "box:/b"]);
    assert_code(&o, 125);
    assert!(stderr(&o).contains("copying between containers is not supported"));
    let o = root.skiff(&["cp", "/etc/hostname", d]);
    assert_code(&o, 125);
    assert!(!dst.exists());
}

#[test]
fn a_stopped_container_is_copied_to_and_from_and_keeps_what_came_in() {
    let root = Root::new();
    let img = skiff_tests::busybox();
    // its first run leaves a file and fails for want of the one that comes in later
    let o = root.skiff(&[
        "run",
        "--name",
        "idle",
        "--memory",
        "128m",
        &img,
        "sh",
        "-c",
        "echo from the first run > /left; cat /came-in",
    ]);
    assert_code(&o, 1);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("left");
    let o = root.skiff(&["cp", "idle:/left", out.to_str().unwrap()]);
    assert_code(&o, 0);
    assert_eq!(fs::read_to_string(&out).unwrap(), "from the first run\n");
    let inward = tmp.path().join("came-in");
    fs::write(&inward, b"copied while stopped\n").unwrap();
    assert_code(
        &root.skiff(&["cp", inward.to_str().unwrap(), "idle:/came-in"]),
        0,
    );
    // the copy changed neither the container's state nor its exit code
    let o = root.skiff(&["inspect", "idle"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["State"]["Status"], "exited", "{v}");
    assert_eq!(v[0]["State"]["ExitCode"], 1, "{v}");
    let o = root.skiff(&["start", "-a", "idle"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "copied while stopped\n");
}
