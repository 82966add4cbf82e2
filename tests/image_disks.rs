//! Image disks and the container's filesystem, the whole stack on either engine: the EROFS disk
//! skiff writes reads back through the guest kernel exactly as umoci unpacks the same image;
//! the Debian image's package tools work on it; a container's writable layer lasts across
//! `skiff start`s and goes with `rm`; `--read-only` and `--tmpfs`; concurrent first runs of a
//! new image build its disk once; a damaged cached disk is rebuilt; a corrupt layer is an error
//! that leaves no disk behind.

use std::path::Path;
use std::process::Command;

use skiff_tests::oci::{layer_tar, stack_layers, Entry};
use skiff_tests::{assert_code, busybox, images, stderr, stdout, Root};

/// Lists a root filesystem: every entry's type, permissions, owner, mtime (ns), size (not for
/// directories, whose size is the filesystem's), link target and link count (not the root's:
/// overlayfs counts 1 for it); the contents of the test layers' files and of a few real trees
/// by sha256 (all of Debian's would take minutes in the nested test VM); device numbers;
/// hard-link groups; xattrs (hex). Paths guest-init writes or mounts over are left out. Run by bash with `$R` the root, in the guest and on the host alike.
const LISTING: &str = r#"
cd "$R" || exit 1
skip='^\./(proc|sys|dev|etc/hosts|etc/resolv\.conf|etc/hostname)(/|\|)|^\./etc\|'
find . -xdev -printf '%p|%y|%m|%U|%G|%T@|%s|%l|%n\n' | awk -F'|' -v OFS='|' '$2=="d"{$7="-"} $1=="."{$9="-"} 1' | grep -Ev "$skip" | LC_ALL=C sort
echo ==contents
find ./skiff ./etc ./usr/share/doc ./var/lib/dpkg -xdev -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | grep -Ev '  \./etc/(hosts|resolv\.conf|hostname)$'
echo ==devices
find . -xdev \( -type b -o -type c \) -printf '%p\n' | LC_ALL=C sort | while read -r p; do stat -c '%n|%t|%T' "$p"; done
echo ==hardlinks
find . -xdev ! -type d -links +1 -printf '%i|%p\n' | LC_ALL=C sort -t'|' -k2 | awk -F'|' '{g[$1]=g[$1] " " $2} END {for (i in g) print g[i]}' | LC_ALL=C sort
echo ==xattrs
find . -xdev -print0 | perl -0ne '
    chomp; my $p = $_; my $list = "\0" x 65536;
    my $n = syscall(194, $p, $list, 65536);  # llistxattr
    next if $n <= 0;
    for my $name (sort split /\0/, substr($list, 0, $n)) {
        next if $name =~ /^security\.selinux$/;
        my $v = "\0" x 65536;
        my $m = syscall(192, $p, $name, $v, 65536);  # lgetxattr
        printf "%s|%s=%s\n", $p, $name, unpack("H*", substr($v, 0, $m));
    }' | LC_ALL=C sort
"#;

/// Held exclusively by the cases that boot many or large guests, and shared by the others, so
/// that nothing runs beside a heavy case: inside the nested test VM one vCPU runs every guest,
/// and a guest booting beside ten others misses its boot timeout.
static HEAVY: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn heavy() -> std::sync::RwLockWriteGuard<'static, ()> {
    HEAVY.write().unwrap_or_else(|e| e.into_inner())
}

fn light() -> std::sync::RwLockReadGuard<'static, ()> {
    HEAVY.read().unwrap_or_else(|e| e.into_inner())
}

/// security.capability granting CAP_NET_RAW, effective (VFS_CAP_REVISION_2).
const CAP_NET_RAW: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// The Debian test image with two layers on top holding every kind of entry the writer has
/// to get right.
fn rich_layers() -> Vec<Vec<u8>> {
    let long_pax = format!("./skiff/long/{}.pax", "p".repeat(140));
    let long_gnu = format!("./skiff/long/{}.gnu", "g".repeat(200));
    let a = layer_tar(&[
        Entry::dir("./skiff/", 0o755),
        Entry::file("./skiff/suid", 0o4755, b"#!/bin/sh\necho suid\n"),
        Entry::file("./skiff/sgid", 0o2711, b"sgid").owned(0, 50),
        Entry::file("./skiff/owned", 0o640, b"owned by alice").owned(1000, 1000),
        Entry::dir("./skiff/sticky/", 0o1777),
        Entry::file("./skiff/sticky/old", 0o644, b"hidden by an opaque dir"),
        Entry::file("./skiff/fine-time", 0o644, b"t").pax("mtime", b"1600000000.123456789"),
        Entry::symlink("./skiff/sym", "suid"),
        Entry::symlink("./skiff/abs", "/etc/passwd"),
        Entry::symlink("./skiff/dangling", "/no/such/file"),
        Entry::hardlink("./skiff/hard", "./skiff/owned"),
        Entry::hardlink("./skiff/hard-lower", "./etc/debian_version"),
        Entry::device(b'3', "./skiff/null", 1, 3),
        Entry::device(b'4', "./skiff/loop", 7, 300),
        Entry::device(b'6', "./skiff/fifo", 0, 0),
        Entry::file("./skiff/xattr-user", 0o644, b"x").pax("SCHILY.xattr.user.skiff", b"hello"),
        Entry::file("./skiff/ping", 0o755, b"cap")
            .pax("SCHILY.xattr.security.capability", &CAP_NET_RAW),
        Entry::dir("./skiff/long/", 0o755),
        Entry::file(&long_pax, 0o644, b"pax name"),
        Entry::file(&long_gnu, 0o644, b"gnu name").gnu_long_name(),
        Entry::dir("./skiff/empty/", 0o700),
        Entry::file("./skiff/big", 0o644, &vec![7u8; 3 * 4096 + 5]),
        Entry::file("./etc/.wh.motd", 0o644, b""),
        Entry::dir("./usr/share/doc/", 0o755),
        Entry::file("./usr/share/doc/.wh..wh..opq", 0o644, b""),
        Entry::file("./usr/share/doc/only-this", 0o644, b"the rest is hidden"),
    ]);
    let b = layer_tar(&[
        Entry::file("./skiff/.wh.sgid", 0o644, b""),
        Entry::dir("./skiff/sticky/", 0o1777),
        Entry::file("./skiff/sticky/.wh..wh..opq", 0o644, b""),
        Entry::file("./skiff/sticky/new", 0o600, b"new"),
        Entry::file(
            "./skiff/owned",
            0o600,
            b"rewritten: the hard link keeps the old data",
        ),
    ]);
    vec![a, b]
}

/// The containers' directories the state root holds.
fn containers(root: &Root) -> Vec<String> {
    std::fs::read_dir(root.0.path().join("containers"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

fn listing_on_host(root: &Path) -> String {
    let o = Command::new("bash")
        .arg("-c")
        .arg(LISTING)
        .env("R", root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_image_disk_reads_back_in_the_guest_as_umoci_unpacks_the_image() {
    let _heavy = heavy();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    stack_layers(
        &images().join("oci/debian"),
        "latest",
        &layout,
        "rich",
        &rich_layers(),
    );

    let bundle = tmp.path().join("bundle");
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:rich", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let want = listing_on_host(&bundle.join("rootfs"));
    assert!(want.contains("./skiff/ping|security.capability="), "{want}");

    let root = Root::new();
    let image = format!("oci:{}:rich", layout.display());
    let o = root.skiff(&[
        "run", "--rm", "--memory", "768m", &image, "env", "R=/", "bash", "-c", LISTING,
    ]);
    assert_code(&o, 0);
    let got = stdout(&o);
    if got != want {
        let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
        let only_want: Vec<&&str> = w.iter().filter(|l| !g.contains(l)).take(20).collect();
        let only_got: Vec<&&str> = g.iter().filter(|l| !w.contains(l)).take(20).collect();
        panic!(
            "the guest's view differs from umoci's ({} vs {} lines)\numoci only: {only_want:#?}\nguest only: {only_got:#?}",
            w.len(),
            g.len()
        );
    }
}

#[test]
fn the_debian_image_runs_its_package_tools() {
    let _heavy = heavy();
    let root = Root::new();
    let debian = format!("oci:{}:latest", images().join("oci/debian").display());
    let o = root.skiff(&[
        "run",
        "--rm",
        "--memory",
        "768m",
        &debian,
        "sh",
        "-c",
        "dpkg -l | grep -c '^ii'; apt-get --version | head -n1",
    ]);
    assert_code(&o, 0);
    let out = stdout(&o);
    let mut lines = out.lines();
    let packages: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(packages > 50, "{out}");
    assert!(lines.next().is_some_and(|l| l.starts_with("apt ")), "{out}");
}

#[test]
fn a_containers_files_last_across_starts_until_it_is_removed() {
    let _light = light();
    let root = Root::new();
    let img = busybox();
    let script = "cat /data 2>/dev/null; echo run >> /data; rm -f /bin/true";
    let o = root.skiff(&[
        "run", "--name", "keeper", "--memory", "128m", &img, "sh", "-c", script,
    ]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "");
    let o = root.skiff(&["start", "-a", "keeper"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "run\n", "{}", stderr(&o));
    // detached, then attached again: the third run sees both earlier ones
    let o = root.skiff(&["start", "keeper"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "keeper\n");
    let o = root.skiff(&["wait", "keeper"]);
    assert_code(&o, 0);
    let o = root.skiff(&["start", "-a", "keeper"]);
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "run\nrun\nrun\n");
    let o = root.skiff(&["inspect", "keeper"]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let data = &v[0]["GraphDriver"]["Data"];
    for key in ["ImageDisk", "WritableDisk"] {
        let path = data[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {data}"));
        assert!(Path::new(path).is_file(), "{key} {path}");
    }
    // sparse: the 32 GiB layer takes a few MiB
    let used = data["WritableDiskBytesUsed"].as_u64().unwrap();
    assert!(used < 64 << 20, "the writable layer takes {used} bytes");
    // a deletion lasts too, and a fresh container of the same image has its own layer
    let o = root.skiff(&["run", "--rm", "--memory", "128m", &img, "ls", "/bin/true"]);
    assert_code(&o, 0);
    assert_eq!(containers(&root).len(), 1, "{:?}", containers(&root));
    let o = root.skiff(&["rm", "keeper"]);
    assert_code(&o, 0);
    assert_eq!(
        containers(&root),
        Vec::<String>::new(),
        "rm left the container's files"
    );
    // as docker: a container that is not there is told, and the exit code is 1
    let o = root.skiff(&["start", "keeper"]);
    assert_code(&o, 1);
    assert!(
        stderr(&o).contains("No such container: keeper"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_read_only_root_refuses_writes_while_tmpfs_takes_them() {
    let _light = light();
    let root = Root::new();
    let o = root.skiff(&[
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/scratch:size=8m",
        "--memory",
        "128m",
        &busybox(),
        "sh",
        "-c",
        "touch /x 2>&1 | grep -q 'Read-only file system' && echo refused; \
         echo hi > /scratch/x && cat /scratch/x; grep -c . /etc/hosts >/dev/null && echo hosts; \
         grep ' /scratch ' /proc/mounts | grep -q 'nosuid,nodev,noexec' && echo tmpfs-flags",
    ]);
    assert_code(&o, 0);
    assert_eq!(
        stdout(&o),
        "refused\nhi\nhosts\ntmpfs-flags\n",
        "{}",
        stderr(&o)
    );
    let o = root.skiff(&["run", "--rm", "--tmpfs", "relative", &busybox(), "true"]);
    assert_code(&o, 125);
    assert!(stderr(&o).contains("invalid tmpfs path"), "{}", stderr(&o));
}

#[test]
fn concurrent_first_runs_of_a_new_image_build_its_disk_once() {
    let _heavy = heavy();
    let root = Root::new();
    let img = busybox();
    let runs: Vec<_> = (0..10)
        .map(|_| {
            let mut c = root.cmd(&["run", "--rm", "--memory", "128m", &img, "echo", "ok"]);
            // ten guests booting at once on a one-vCPU nested test VM take minutes
            c.env("SKIFF_LOG", "skiff_image=info")
                .env("SKIFF_BOOT_TIMEOUT", "600")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let mut builds = 0;
    for child in runs {
        let o = child.wait_with_output().unwrap();
        assert_code(&o, 0);
        assert_eq!(stdout(&o), "ok\n");
        builds += stderr(&o).matches("built the image disk").count();
    }
    assert_eq!(builds, 1, "the disk was built {builds} times");
    let disks = std::fs::read_dir(root.0.path().join("images/disks"))
        .unwrap()
        .count();
    assert_eq!(disks, 1);
    let tmp = std::fs::read_dir(root.0.path().join("images/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "temporary files left behind");
}

#[test]
fn rmi_and_prune_remove_the_disks_no_image_uses() {
    let _light = light();
    let root = Root::new();
    let archive = format!("{}/archives/busybox-latest.oci.tar", images().display());
    let o = root.skiff(&["load", "-i", &archive]);
    assert_code(&o, 0);
    let name = "localhost/busybox-latest:latest";
    let o = root.skiff(&["run", "--rm", "--memory", "128m", name, "true"]);
    assert_code(&o, 0);
    let disks = || {
        std::fs::read_dir(root.0.path().join("images/disks"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(disks(), 1);
    // a sweep keeps the disk of a named image
    let o = root.skiff(&["image", "prune"]);
    assert_code(&o, 0);
    assert_eq!(disks(), 1);
    let o = root.skiff(&["rmi", name]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("1 image disk(s)"), "{}", stdout(&o));
    assert_eq!(disks(), 0);
}

#[test]
fn a_cached_disk_that_is_not_what_its_name_says_is_rebuilt() {
    let _light = light();
    let root = Root::new();
    let img = busybox();
    let o = root.skiff(&["run", "--rm", "--memory", "128m", &img, "true"]);
    assert_code(&o, 0);
    let disks = root.0.path().join("images/disks");
    let disk = std::fs::read_dir(&disks)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // a damaged superblock (the file is replaced, as a rebuild would: no container shares it)
    let mut bytes = std::fs::read(&disk).unwrap();
    bytes[1024..1152].fill(0);
    std::fs::remove_file(&disk).unwrap();
    std::fs::write(&disk, &bytes).unwrap();
    let mut c = root.cmd(&["run", "--rm", "--memory", "128m", &img, "echo", "rebuilt"]);
    c.env("SKIFF_LOG", "skiff_image=info");
    let o = skiff_tests::run_with_deadline(c, b"", std::time::Duration::from_secs(180)).unwrap();
    assert_code(&o, 0);
    assert_eq!(stdout(&o), "rebuilt\n");
    assert!(
        stderr(&o).contains("built the image disk"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_corrupt_layer_is_an_error_that_leaves_no_disk() {
    let _light = light();
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let mut garbage = layer_tar(&[Entry::file("./ok", 0o644, b"fine")]);
    garbage.truncate(700);
    garbage.extend((0..5000u32).map(|i| (i * 37 % 253) as u8));
    stack_layers(
        &images().join("oci/busybox"),
        "latest",
        &layout,
        "bad",
        &[garbage],
    );
    let root = Root::new();
    let o = root.skiff(&[
        "run",
        "--rm",
        &format!("oci:{}:bad", layout.display()),
        "true",
    ]);
    assert_code(&o, 125);
    let err = stderr(&o);
    assert!(err.contains("layer 2 (sha256:"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let disks = root.0.path().join("images/disks");
    let left = std::fs::read_dir(&disks).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "a broken disk was cached");
    let tmp_left = std::fs::read_dir(root.0.path().join("images/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp_left, 0);
    assert_eq!(
        containers(&root),
        Vec::<String>::new(),
        "the failed run left its container"
    );
}
