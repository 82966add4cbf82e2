//! Opening oci-archive tars: a good archive behaves like its layout, hostile or broken ones are
//! refused with an error naming the archive.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;
use skiff_image::{open, ImageError};
use tar::{EntryType, Header};

/// Writes the layout as an oci-archive at `dir/name`, then `extra` raw entries.
fn archive(
    layout: &TestLayout,
    dir: &Path,
    name: &str,
    extra: &[(&[u8], EntryType, &[u8])],
) -> PathBuf {
    let path = dir.join(name);
    let mut b = tar::Builder::new(File::create(&path).unwrap());
    b.append_dir_all(".", layout.path()).unwrap();
    for (entry_name, kind, data) in extra {
        append_raw(&mut b, entry_name, *kind, data);
    }
    b.into_inner().unwrap();
    path
}

/// An entry whose name is written verbatim (the tar crate's own setters refuse `..`).
fn append_raw(b: &mut tar::Builder<File>, name: &[u8], kind: EntryType, data: &[u8]) {
    let mut h = Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    if matches!(kind, EntryType::Symlink | EntryType::Link) {
        h.set_link_name("blobs").unwrap();
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn one_image() -> TestLayout {
    let l = TestLayout::new();
    let m = l.image(json!({"Cmd": ["/bin/true"]}), &[(TAR, &[7u8; 100_000][..])]);
    l.tag(&m, "v1");
    l
}

#[test]
fn an_archive_opens_like_its_layout_and_is_cleaned_up() {
    let l = one_image();
    let dir = tempfile::tempdir().unwrap();
    let tar = archive(&l, dir.path(), "img.tar", &[]);
    let img = open(&format!("oci-archive:{}:v1", tar.display())).unwrap();
    assert_eq!(img.config.cmd, ["/bin/true"]);
    let layer = img.layers[0].path.clone();
    assert_eq!(std::fs::read(&layer).unwrap(), [7u8; 100_000]);
    assert!(
        !layer.starts_with(l.path()),
        "layers come from the unpacked archive"
    );
    drop(img);
    assert!(!layer.exists(), "the unpacked archive outlived the image");

    let default = open(&format!("oci-archive:{}", tar.display())).unwrap();
    assert_eq!(default.config.cmd, ["/bin/true"]);
}

#[test]
fn errors_inside_an_archive_name_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let tar = archive(&one_image(), dir.path(), "img.tar", &[]);
    let err = open(&format!("oci-archive:{}:nope", tar.display())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no image tagged \"nope\" in {0} (tags: v1); name one as oci-archive:{0}:TAG",
            tar.display()
        )
    );
}

#[test]
fn entries_leaving_the_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let escapee = format!("skiff-escape-test-{}", std::process::id());
    let up = format!("../{escapee}");
    let deep = format!("blobs/../../{escapee}");
    let abs = format!("{}/abs", dir.path().display());
    for name in [up.as_str(), deep.as_str(), abs.as_str()] {
        let tar = archive(
            &one_image(),
            dir.path(),
            "evil.tar",
            &[(name.as_bytes(), EntryType::Regular, b"pwned")],
        );
        let err = open(&format!("oci-archive:{}", tar.display())).unwrap_err();
        assert!(
            matches!(err, ImageError::CorruptArchive { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains("escapes the archive"), "{err}");
        assert!(
            err.to_string().contains(&tar.display().to_string()),
            "{err}"
        );
        assert!(!std::env::temp_dir().join(&escapee).exists());
        assert!(!dir.path().join("abs").exists());
    }
}

#[test]
fn links_and_special_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [
        EntryType::Symlink,
        EntryType::Link,
        EntryType::Fifo,
        EntryType::Char,
    ] {
        let tar = archive(
            &one_image(),
            dir.path(),
            "links.tar",
            &[(b"blobs/sha256/x", kind, b"")],
        );
        let err = open(&format!("oci-archive:{}", tar.display())).unwrap_err();
        assert!(
            matches!(err, ImageError::CorruptArchive { .. }),
            "{kind:?}: {err}"
        );
        assert!(
            err.to_string()
                .contains("may only hold files and directories"),
            "{err}"
        );
    }
}

#[test]
fn a_truncated_archive_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let tar = archive(&one_image(), dir.path(), "cut.tar", &[]);
    let len = std::fs::metadata(&tar).unwrap().len();
    // cut inside the 100 kB layer blob, and on a block boundary past all headers
    for keep in [len / 2, len / 2 / 512 * 512] {
        let bytes = std::fs::read(&tar).unwrap();
        let cut = dir.path().join("cut-short.tar");
        std::fs::write(&cut, &bytes[..keep as usize]).unwrap();
        let err = open(&format!("oci-archive:{}", cut.display())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("oci-archive {} is corrupt", cut.display())),
            "{keep}: {err}"
        );
    }
}

#[test]
fn garbage_and_empty_files_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [("garbage.tar", vec![0x5au8; 4096]), ("empty.tar", vec![])] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = open(&format!("oci-archive:{}", path.display())).unwrap_err();
        assert!(
            matches!(err, ImageError::CorruptArchive { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn an_entry_larger_than_the_archive_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.tar");
    let mut b = tar::Builder::new(File::create(&path).unwrap());
    let mut h = Header::new_gnu();
    h.set_path("index.json").unwrap();
    h.set_size(1 << 40);
    h.set_cksum();
    b.append(&h, &b"{}"[..]).unwrap();
    b.into_inner().unwrap();
    let err = open(&format!("oci-archive:{}", path.display())).unwrap_err();
    assert!(
        err.to_string().contains("more than the whole archive"),
        "{err}"
    );
}

#[test]
fn a_missing_archive_is_named() {
    let err = open("oci-archive:/nonexistent/x.tar").unwrap_err();
    assert_eq!(
        err.to_string(),
        "image path /nonexistent/x.tar does not exist"
    );
}
