//! The extractor against hostile archives (crafted byte by byte) and round trips of the writer.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use tar::{EntryType, Header};

use super::{extract, ExtractError, Options};
use crate::copy::archive;

/// A test area: `outside/sentinel` must survive, archives go into `dst/`.
struct Area {
    _tmp: tempfile::TempDir,
    outside: std::path::PathBuf,
    dst: std::path::PathBuf,
}

fn area() -> Area {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let dst = tmp.path().join("dst");
    fs::create_dir(&outside).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(outside.join("sentinel"), b"keep").unwrap();
    Area {
        _tmp: tmp,
        outside,
        dst,
    }
}

impl Area {
    /// Nothing outside `dst` changed.
    fn intact(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["sentinel"], "something was written outside");
        assert_eq!(fs::read(self.outside.join("sentinel")).unwrap(), b"keep");
        let parent: Vec<_> = fs::read_dir(self.dst.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            parent.len(),
            2,
            "something was written beside dst: {parent:?}"
        );
    }
}

/// One raw entry, its name and link written into the header as given (no checks).
fn raw(out: &mut Vec<u8>, name: &[u8], kind: EntryType, link: &[u8], data: &[u8]) {
    let mut h = Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_000_000);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn end(mut out: Vec<u8>) -> Vec<u8> {
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn run(a: &Area, bytes: &[u8]) -> Result<super::Summary, ExtractError> {
    extract(&a.dst, bytes, &Options::default())
}

fn entry_error(r: Result<super::Summary, ExtractError>, entry: &str) -> String {
    match r {
        Err(e @ ExtractError::Entry { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(entry), "{msg:?} does not name {entry:?}");
            assert!(!msg.contains('\n'));
            msg
        }
        other => panic!("expected a bad entry error for {entry}, got {other:?}"),
    }
}

#[test]
fn dotdot_is_refused() {
    let a = area();
    for name in [&b"../escape"[..], b"a/../../escape", b"./../outside/x"] {
        let mut t = Vec::new();
        raw(&mut t, name, EntryType::Regular, b"", b"evil");
        entry_error(run(&a, &end(t)), std::str::from_utf8(name).unwrap());
        a.intact();
    }
}

#[test]
fn absolute_paths_are_refused() {
    let a = area();
    let target = a.outside.join("abs");
    let mut t = Vec::new();
    raw(
        &mut t,
        target.as_os_str().as_encoded_bytes(),
        EntryType::Regular,
        b"",
        b"evil",
    );
    entry_error(run(&a, &end(t)), "absolute");
    a.intact();
    assert!(!target.exists());
}

#[test]
fn a_file_through_a_planted_symlink_fails() {
    let a = area();
    let out = a.outside.as_os_str().as_encoded_bytes();
    let mut t = Vec::new();
    raw(&mut t, b"link", EntryType::Symlink, out, b"");
    raw(&mut t, b"link/pwned", EntryType::Regular, b"", b"evil");
    entry_error(run(&a, &end(t)), "link/pwned");
    a.intact();
    assert!(fs::symlink_metadata(a.dst.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    // A directory entry through it, and deeper paths, fail the same way.
    let mut t = Vec::new();
    raw(&mut t, b"l2", EntryType::Symlink, out, b"");
    raw(&mut t, b"l2/", EntryType::Directory, b"", b"");
    entry_error(run(&a, &end(t)), "l2");
    let mut t = Vec::new();
    raw(&mut t, b"l3", EntryType::Symlink, out, b"");
    raw(&mut t, b"l3/sub/deep", EntryType::Regular, b"", b"evil");
    entry_error(run(&a, &end(t)), "l3/sub/deep");
    a.intact();
}

#[test]
fn a_file_over_a_symlink_replaces_it() {
    let a = area();
    let victim = a.outside.join("sentinel");
    let mut t = Vec::new();
    raw(
        &mut t,
        b"s",
        EntryType::Symlink,
        victim.as_os_str().as_encoded_bytes(),
        b"",
    );
    raw(&mut t, b"s", EntryType::Regular, b"", b"plain");
    run(&a, &end(t)).unwrap();
    a.intact();
    let m = fs::symlink_metadata(a.dst.join("s")).unwrap();
    assert!(m.is_file());
    assert_eq!(fs::read(a.dst.join("s")).unwrap(), b"plain");
}

#[test]
fn hard_links_out_of_the_destination_are_refused() {
    let a = area();
    for target in [&b"/etc/passwd"[..], b"../outside/sentinel", b"missing"] {
        let mut t = Vec::new();
        raw(&mut t, b"h", EntryType::Link, target, b"");
        entry_error(run(&a, &end(t)), "h");
        assert!(!a.dst.join("h").exists());
    }
    // Through a planted symlink to a directory outside.
    let mut t = Vec::new();
    raw(
        &mut t,
        b"d",
        EntryType::Symlink,
        a.outside.as_os_str().as_encoded_bytes(),
        b"",
    );
    raw(&mut t, b"h", EntryType::Link, b"d/sentinel", b"");
    entry_error(run(&a, &end(t)), "h");
    assert!(!a.dst.join("h").exists());
    assert_eq!(fs::metadata(a.outside.join("sentinel")).unwrap().nlink(), 1);
    a.intact();
}

#[test]
fn long_names_and_pax_paths_are_checked_too() {
    let a = area();
    let mut t = Vec::new();
    raw(
        &mut t,
        b"././@LongLink",
        EntryType::GNULongName,
        b"",
        b"../escape\0",
    );
    raw(&mut t, b"innocent", EntryType::Regular, b"", b"evil");
    entry_error(run(&a, &end(t)), "../escape");
    let mut t = Vec::new();
    let rec = b"18 path=../escape\n";
    raw(&mut t, b"pax", EntryType::XHeader, b"", rec);
    raw(&mut t, b"innocent", EntryType::Regular, b"", b"evil");
    entry_error(run(&a, &end(t)), "../escape");
    a.intact();
    assert!(!a.dst.join("innocent").exists());
}

#[test]
fn oversized_headers_are_refused_before_reading() {
    let a = area();
    // A long name claiming 1 GiB, with no data behind it.
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..5].copy_from_slice(b"huge!");
    h.set_entry_type(EntryType::GNULongName);
    h.set_size(1 << 30);
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.extend_from_slice(&[0u8; 1024]);
    entry_error(run(&a, &t), "huge!");
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..3].copy_from_slice(b"pax");
    h.set_entry_type(EntryType::XHeader);
    h.set_size(1 << 30);
    h.set_cksum();
    entry_error(run(&a, h.as_bytes()), "pax");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let a = area();
    let mut seed = 0x2545_f491_u64;
    for len in [1usize, 100, 512, 513, 4096, 20000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = run(&a, &bytes);
    }
    // A header whose checksum is wrong.
    let mut t = Vec::new();
    raw(&mut t, b"f", EntryType::Regular, b"", b"x");
    t[0] = b'g';
    assert!(run(&a, &end(t)).is_err());
    // A file cut short.
    let mut h = Header::new_gnu();
    h.as_old_mut().name[..3].copy_from_slice(b"cut");
    h.set_entry_type(EntryType::Regular);
    h.set_size(10_000);
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.extend_from_slice(&[7u8; 100]);
    assert!(run(&a, &t).is_err());
    a.intact();
}

#[test]
fn entries_outside_the_copied_top_are_refused() {
    let a = area();
    let mut t = Vec::new();
    raw(&mut t, b"src/ok", EntryType::Regular, b"", b"fine");
    raw(&mut t, b"other", EntryType::Regular, b"", b"evil");
    let opts = Options {
        strip: Some("src".into()),
        rename: Some("out".into()),
        ..Options::default()
    };
    let r = extract(&a.dst, &end(t)[..], &opts);
    entry_error(r, "other");
    assert_eq!(fs::read(a.dst.join("out/ok")).unwrap(), b"fine");
    assert!(!a.dst.join("other").exists());
}

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::write(root.join("file"), b"hello").unwrap();
    fs::set_permissions(root.join("file"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(root.join("sub/deeper/data"), vec![42u8; 300_000]).unwrap();
    std::os::unix::fs::symlink("../file", root.join("sub/link")).unwrap();
    fs::hard_link(root.join("file"), root.join("sub/hard")).unwrap();
    fs::create_dir(root.join("ro")).unwrap();
    fs::write(root.join("ro/inside"), b"x").unwrap();
    fs::set_permissions(root.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
}

#[test]
fn round_trip_of_a_tree() {
    let a = area();
    let src = a.outside.parent().unwrap().join("src");
    sample_tree(&src);
    let bytes = archive::write(&src, Some("src"), false, Vec::new()).unwrap();
    let opts = Options {
        strip: Some("src".into()),
        rename: Some("copy".into()),
        ..Options::default()
    };
    let s = extract(&a.dst, &bytes[..], &opts).unwrap();
    assert!(s.entries >= 8, "{s:?}");
    let out = a.dst.join("copy");
    assert_eq!(fs::read(out.join("file")).unwrap(), b"hello");
    let m = fs::metadata(out.join("file")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o750);
    assert_eq!(m.nlink(), 2);
    assert_eq!(m.ino(), fs::metadata(out.join("sub/hard")).unwrap().ino());
    assert_eq!(
        fs::read_link(out.join("sub/link")).unwrap(),
        Path::new("../file")
    );
    assert_eq!(
        fs::read(out.join("sub/deeper/data")).unwrap().len(),
        300_000
    );
    assert_eq!(fs::metadata(out.join("ro")).unwrap().mode() & 0o777, 0o555);
    assert_eq!(fs::read(out.join("ro/inside")).unwrap(), b"x");
    assert_eq!(
        fs::metadata(out.join("file")).unwrap().mtime(),
        fs::metadata(src.join("file")).unwrap().mtime()
    );
}

#[test]
fn content_of_a_directory_merges() {
    let a = area();
    let src = a.outside.parent().unwrap().join("src");
    sample_tree(&src);
    fs::write(a.dst.join("already"), b"here").unwrap();
    let bytes = archive::write(&src, None, false, Vec::new()).unwrap();
    extract(&a.dst, &bytes[..], &Options::default()).unwrap();
    assert_eq!(fs::read(a.dst.join("file")).unwrap(), b"hello");
    assert_eq!(fs::read(a.dst.join("already")).unwrap(), b"here");
    assert!(!a.dst.join("src").exists());
}

#[test]
fn a_symlink_source_stays_a_symlink_unless_followed() {
    let a = area();
    let base = a.outside.parent().unwrap();
    fs::write(base.join("real"), b"content").unwrap();
    std::os::unix::fs::symlink("real", base.join("alias")).unwrap();
    let bytes = archive::write(&base.join("alias"), Some("alias"), false, Vec::new()).unwrap();
    let opts = |rename: &str| Options {
        strip: Some("alias".into()),
        rename: Some(rename.into()),
        ..Options::default()
    };
    extract(&a.dst, &bytes[..], &opts("kept")).unwrap();
    assert_eq!(
        fs::read_link(a.dst.join("kept")).unwrap(),
        Path::new("real")
    );
    let bytes = archive::write(&base.join("alias"), Some("alias"), true, Vec::new()).unwrap();
    extract(&a.dst, &bytes[..], &opts("followed")).unwrap();
    assert_eq!(fs::read(a.dst.join("followed")).unwrap(), b"content");
}
