//! The writer against `fsck.erofs` (Debian's erofs-utils): the images it writes pass the check,
//! and extracting them gives back what the layers say; bad layers give errors, never a panic.
//! (Reading the images through the guest kernel, against umoci, is a full-stack test.)

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::{write, Built, ErofsError};

/// A tar layer built entry by entry, with raw names (no checks), PAX records and xattrs.
#[derive(Default)]
struct Layer(Vec<u8>);

struct E<'a> {
    name: &'a str,
    kind: tar::EntryType,
    mode: u32,
    data: &'a [u8],
    link: &'a str,
    uid: u64,
    mtime: u64,
    pax: Vec<(String, Vec<u8>)>,
    dev: (u32, u32),
}

fn e(name: &str, kind: tar::EntryType) -> E<'_> {
    E {
        name,
        kind,
        mode: if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        },
        data: b"",
        link: "",
        uid: 0,
        mtime: 1_600_000_000,
        pax: Vec::new(),
        dev: (0, 0),
    }
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        data,
        ..e(name, tar::EntryType::Regular)
    }
}

fn dir(name: &str) -> E<'_> {
    e(name, tar::EntryType::Directory)
}

fn link<'a>(name: &'a str, kind: tar::EntryType, target: &'a str) -> E<'a> {
    E {
        link: target,
        ..e(name, kind)
    }
}

fn header(kind: tar::EntryType, name: &[u8], size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    h
}

impl Layer {
    fn add(mut self, entry: E<'_>) -> Layer {
        let mut pax = entry.pax.clone();
        if entry.name.len() > 100 {
            pax.push(("path".into(), entry.name.as_bytes().to_vec()));
        }
        if entry.link.len() > 100 {
            pax.push(("linkpath".into(), entry.link.as_bytes().to_vec()));
        }
        if !pax.is_empty() {
            let mut records = Vec::new();
            for (k, v) in &pax {
                let body = [k.as_bytes(), b"=", v, b"\n"].concat();
                // the length counts itself
                let mut len = body.len() + 2;
                while format!("{len} ").len() + body.len() != len {
                    len += 1;
                }
                records.extend_from_slice(format!("{len} ").as_bytes());
                records.extend_from_slice(&body);
            }
            self.push(
                header(tar::EntryType::XHeader, b"pax", records.len() as u64),
                &records,
            );
        }
        let mut h = header(entry.kind, entry.name.as_bytes(), entry.data.len() as u64);
        h.set_mode(entry.mode);
        h.set_uid(entry.uid);
        h.set_gid(entry.uid);
        h.set_mtime(entry.mtime);
        if !entry.link.is_empty() {
            let l = &entry.link.as_bytes()[..entry.link.len().min(100)];
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        if entry.dev != (0, 0) {
            h.set_device_major(entry.dev.0).unwrap();
            h.set_device_minor(entry.dev.1).unwrap();
        }
        self.push(h, entry.data);
        self
    }

    fn push(&mut self, mut h: tar::Header, data: &[u8]) {
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(512), 0);
    }

    fn done(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        self.0
    }
}

fn build(layers: &[Vec<u8>], out: &Path) -> Result<Built, ErofsError> {
    let file = fs::File::create(out).unwrap();
    write(
        layers.iter().map(|l| l.as_slice()),
        &file,
        [7; 16],
        |i, e| ErofsError::Layer(format!("layer {i}: {e}")),
    )
}

/// Runs `fsck.erofs --extract` on the image; returns the extracted root.
fn fsck_extract(image: &Path, dir: &Path) -> std::path::PathBuf {
    let root = dir.join("x");
    let out = Command::new("fsck.erofs")
        .arg(format!("--extract={}", root.display()))
        .arg("--preserve")
        .arg(image)
        .output()
        .expect("fsck.erofs runs (apt-get install erofs-utils)");
    assert!(
        out.status.success(),
        "fsck.erofs failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    root
}

#[test]
fn a_rich_layer_passes_fsck_and_extracts_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i * 7 % 251) as u8).collect();
    let long_name = format!("dir/{}", "n".repeat(250));
    let long_target = "t/".repeat(1500);
    let mut layer = Layer::default()
        .add(dir("./"))
        .add(dir("dir"))
        .add(E {
            mode: 0o4755,
            uid: 1000,
            ..file("dir/suid", b"#!/bin/sh\n")
        })
        .add(file("dir/big", &big))
        .add(file("dir/empty", b""))
        .add(link("dir/hard", tar::EntryType::Link, "dir/suid"))
        .add(link("dir/sym", tar::EntryType::Symlink, "suid"))
        .add(link("dir/longsym", tar::EntryType::Symlink, &long_target))
        .add(E {
            dev: (1, 3),
            ..e("dir/null", tar::EntryType::Char)
        })
        .add(E {
            dev: (8, 300),
            ..e("dir/blk", tar::EntryType::Block)
        })
        .add(e("dir/fifo", tar::EntryType::Fifo))
        .add(dir("emptydir"))
        .add(file(&long_name, b"long"))
        .add(E {
            pax: vec![
                ("SCHILY.xattr.user.note".into(), b"hello".to_vec()),
                ("SCHILY.xattr.trusted.overlay.opaque".into(), b"y".to_vec()),
                ("mtime".into(), b"1600000000.25".to_vec()),
            ],
            ..file("xattrs", b"x")
        });
    let names: Vec<String> = (0..600)
        .map(|i| format!("many/entry-with-a-name-{i:04}"))
        .collect();
    layer = layer.add(dir("many"));
    for n in &names {
        layer = layer.add(file(n, b"m"));
    }
    let image = tmp.path().join("image.erofs");
    let built = build(&[layer.done()], &image).unwrap();
    assert_eq!(built.bytes, fs::metadata(&image).unwrap().len());
    assert_eq!(built.dead_bytes, 0);

    let root = fsck_extract(&image, tmp.path());
    let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(fs::read(root.join("dir/big")).unwrap(), big);
    assert_eq!(fs::read(root.join("dir/empty")).unwrap(), b"");
    // (fsck.erofs's extraction drops set-id bits: chown after chmod; the full-stack readback
    // through the guest kernel checks them)
    assert_eq!(meta("dir/suid").permissions().mode() & 0o777, 0o755);
    assert_eq!(meta("dir/suid").uid(), 1000);
    assert_eq!(meta("dir/suid").mtime(), 1_600_000_000);
    assert_eq!(
        fs::read_link(root.join("dir/sym")).unwrap(),
        Path::new("suid")
    );
    assert_eq!(
        fs::read_link(root.join("dir/longsym")).unwrap(),
        Path::new(&long_target)
    );
    assert!(meta("dir/null").file_type().is_char_device());
    assert_eq!(meta("dir/null").rdev(), libc::makedev(1, 3));
    assert!(meta("dir/blk").file_type().is_block_device());
    assert_eq!(meta("dir/blk").rdev(), libc::makedev(8, 300));
    assert!(meta("dir/fifo").file_type().is_fifo());
    assert!(meta("emptydir").is_dir());
    assert_eq!(fs::read(root.join(&long_name)).unwrap(), b"long");
    assert_eq!(fs::read(root.join("dir/hard")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(
        fs::read_dir(root.join("many")).unwrap().count(),
        names.len()
    );
    for n in &names {
        assert_eq!(fs::read(root.join(n)).unwrap(), b"m", "{n}");
    }
}

#[test]
fn later_layers_whiteout_replace_and_hide_lower_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let lower = Layer::default()
        .add(dir("a"))
        .add(file("a/gone", b"1"))
        .add(file("a/kept", b"2"))
        .add(dir("a/sub"))
        .add(file("a/sub/x", b"3"))
        .add(dir("opq"))
        .add(file("opq/old", b"4"))
        .add(dir("opq/olddir"))
        .add(file("becomes-dir", b"5"))
        .add(dir("becomes-file"))
        .add(file("becomes-file/inner", b"6"))
        .add(file("linked", b"7"))
        .add(link("linked2", tar::EntryType::Link, "linked"))
        .add(dir("real"))
        .add(link("via", tar::EntryType::Symlink, "/real"))
        .done();
    let upper = Layer::default()
        .add(file("a/.wh.gone", b""))
        .add(file("a/.wh.sub", b""))
        .add(dir("opq"))
        .add(file("opq/.wh..wh..opq", b""))
        .add(file("opq/new", b"8"))
        .add(dir("becomes-dir"))
        .add(file("becomes-file", b"9"))
        .add(file("linked", b"overwritten"))
        .add(file("via/through", b"10"))
        .add(file("fresh", b"11"))
        .add(file(".wh.fresh", b""))
        .done();
    let image = tmp.path().join("image.erofs");
    let built = build(&[lower, upper], &image).unwrap();
    assert!(built.dead_bytes >= 4, "{built:?}");
    let root = fsck_extract(&image, tmp.path());
    let exists = |p: &str| fs::symlink_metadata(root.join(p)).is_ok();
    assert!(!exists("a/gone"));
    assert!(!exists("a/sub"));
    assert!(exists("a/kept"));
    assert!(!exists("opq/old"));
    assert!(!exists("opq/olddir"));
    assert_eq!(fs::read(root.join("opq/new")).unwrap(), b"8");
    assert!(root.join("becomes-dir").is_dir());
    assert_eq!(fs::read(root.join("becomes-file")).unwrap(), b"9");
    assert_eq!(fs::read(root.join("linked")).unwrap(), b"overwritten");
    assert_eq!(fs::read(root.join("linked2")).unwrap(), b"7");
    assert_eq!(fs::read(root.join("real/through")).unwrap(), b"10");
    assert!(exists("fresh"), "a whiteout spares its own layer's entries");
}

#[test]
fn bad_layers_are_errors_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.erofs");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("escape", Layer::default().add(file("../x", b"1")).done()),
        (
            "missing link target",
            Layer::default()
                .add(link("l", tar::EntryType::Link, "nope"))
                .done(),
        ),
        (
            "link to a directory",
            Layer::default()
                .add(dir("d"))
                .add(link("l", tar::EntryType::Link, "d"))
                .done(),
        ),
        (
            "long name",
            Layer::default().add(file(&"x".repeat(256), b"1")).done(),
        ),
        (
            "long parent name",
            Layer::default()
                .add(file(&format!("{}/f", "x".repeat(5000)), b"1"))
                .done(),
        ),
        (
            "long name through a symlink",
            Layer::default()
                .add(link("l", tar::EntryType::Symlink, &"y".repeat(4095)))
                .add(file("l/f", b"1"))
                .done(),
        ),
        (
            "long opaque directory",
            Layer::default()
                .add(file(&format!("{}/.wh..wh..opq", "z".repeat(300)), b""))
                .done(),
        ),
        (
            "path beyond PATH_MAX",
            Layer::default().add(file(&"a/".repeat(3000), b"1")).done(),
        ),
        (
            "device number out of range",
            Layer::default()
                .add(E {
                    dev: (0x1000, 1),
                    ..e("d", tar::EntryType::Char)
                })
                .done(),
        ),
        (
            "file as parent",
            Layer::default()
                .add(file("f", b"1"))
                .add(file("f/g", b"2"))
                .done(),
        ),
        (
            "symlink loop",
            Layer::default()
                .add(link("l", tar::EntryType::Symlink, "l"))
                .add(file("l/x", b"1"))
                .done(),
        ),
        ("truncated", {
            let mut t = Layer::default().add(file("f", &[1; 5000])).done();
            t.truncate(2048);
            t
        }),
        (
            "garbage",
            (0..4096u32).map(|i| (i * 31 % 256) as u8).collect(),
        ),
    ];
    for (what, layer) in cases {
        assert!(build(&[layer], &image).is_err(), "{what} accepted");
    }
}

#[test]
fn mutated_layers_never_panic_and_what_is_written_passes_fsck() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.erofs");
    let base = Layer::default()
        .add(dir("d"))
        .add(file("d/f", b"some data here"))
        .add(link("d/s", tar::EntryType::Symlink, "f"))
        .add(link("d/h", tar::EntryType::Link, "d/f"))
        .add(E {
            pax: vec![("SCHILY.xattr.user.k".into(), b"v".to_vec())],
            ..file("p", b"pp")
        })
        .done();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut written = 0;
    for _ in 0..300 {
        let mut layer = base.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % layer.len() as u64) as usize;
            layer[at] = next() as u8;
        }
        if build(&[layer], &image).is_ok() {
            written += 1;
            let check = Command::new("fsck.erofs").arg(&image).output().unwrap();
            assert!(
                check.status.success(),
                "{}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
    }
    assert!(
        written > 0,
        "no mutation was accepted: the check proves nothing"
    );
}
