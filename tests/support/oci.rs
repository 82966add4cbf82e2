//! Test images made here: layer tars written entry by entry (PAX records, xattrs, devices, raw
//! names) and an OCI layout that stacks them on a copy of a test image.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::sha256_hex;

/// One tar entry: kind, name, mode, owner, data or link target, PAX records.
pub struct Entry {
    pub kind: u8,
    pub name: String,
    pub mode: u32,
    pub owner: (u64, u64),
    pub mtime: u64,
    pub data: Vec<u8>,
    pub link: String,
    pub device: (u32, u32),
    pub pax: Vec<(String, Vec<u8>)>,
    /// A long name goes into a GNU long-name entry instead of a PAX record.
    pub gnu: bool,
}

impl Entry {
    fn new(kind: u8, name: &str, mode: u32) -> Entry {
        Entry {
            kind,
            name: name.to_string(),
            mode,
            owner: (0, 0),
            mtime: 1_650_000_000,
            data: Vec::new(),
            link: String::new(),
            device: (0, 0),
            pax: Vec::new(),
            gnu: false,
        }
    }

    pub fn dir(name: &str, mode: u32) -> Entry {
        Entry::new(b'5', name, mode)
    }

    pub fn file(name: &str, mode: u32, data: &[u8]) -> Entry {
        Entry {
            data: data.to_vec(),
            ..Entry::new(b'0', name, mode)
        }
    }

    pub fn symlink(name: &str, target: &str) -> Entry {
        Entry {
            link: target.to_string(),
            ..Entry::new(b'2', name, 0o777)
        }
    }

    pub fn hardlink(name: &str, target: &str) -> Entry {
        Entry {
            link: target.to_string(),
            ..Entry::new(b'1', name, 0o644)
        }
    }

    pub fn device(kind: u8, name: &str, major: u32, minor: u32) -> Entry {
        Entry {
            device: (major, minor),
            ..Entry::new(kind, name, 0o640)
        }
    }

    pub fn owned(self, uid: u64, gid: u64) -> Entry {
        Entry {
            owner: (uid, gid),
            ..self
        }
    }

    /// Its long name as a GNU long-name entry.
    pub fn gnu_long_name(self) -> Entry {
        Entry { gnu: true, ..self }
    }

    /// A PAX record (`SCHILY.xattr.NAME` for an xattr, `mtime` for a fine-grained time).
    pub fn pax(mut self, key: &str, value: &[u8]) -> Entry {
        self.pax.push((key.to_string(), value.to_vec()));
        self
    }
}

/// A layer tar of `entries`; names and link targets longer than the header's fields go into
/// PAX records (or a GNU long-name entry).
pub fn layer_tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut pax = e.pax.clone();
        if e.name.len() > 100 && e.gnu {
            let long = [e.name.as_bytes(), b"\0"].concat();
            push(
                &mut out,
                header(b'L', "././@LongLink", 0o644, long.len()),
                &long,
            );
        } else if e.name.len() > 100 {
            pax.push(("path".into(), e.name.clone().into_bytes()));
        }
        if e.link.len() > 100 {
            pax.push(("linkpath".into(), e.link.clone().into_bytes()));
        }
        if !pax.is_empty() {
            let mut records = Vec::new();
            for (k, v) in &pax {
                let body = [k.as_bytes(), b"=", v, b"\n"].concat();
                let mut len = body.len() + 1;
                while len.to_string().len() + 1 + body.len() != len {
                    len += 1;
                }
                records.extend_from_slice(format!("{len} ").as_bytes());
                records.extend_from_slice(&body);
            }
            push(
                &mut out,
                header(b'x', "PaxHeader", 0o644, records.len()),
                &records,
            );
        }
        let mut h = header(e.kind, &e.name, e.mode, e.data.len());
        let link = &e.link.as_bytes()[..e.link.len().min(100)];
        h[157..157 + link.len()].copy_from_slice(link);
        octal(&mut h[108..116], e.owner.0);
        octal(&mut h[116..124], e.owner.1);
        octal(&mut h[136..148], e.mtime);
        octal(&mut h[329..337], u64::from(e.device.0));
        octal(&mut h[337..345], u64::from(e.device.1));
        push(&mut out, h, &e.data);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// A ustar header with `name` cut to its 100-byte field (a PAX record carries the rest).
fn header(kind: u8, name: &str, mode: u32, size: usize) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = &name.as_bytes()[..name.len().min(100)];
    h[..n.len()].copy_from_slice(n);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size as u64);
    octal(&mut h[136..148], 0);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h
}

fn push(out: &mut Vec<u8>, mut h: [u8; 512], data: &[u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn put_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let hex = sha256_hex(bytes);
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    (format!("sha256:{hex}"), bytes.len())
}

/// Copies the OCI layout `base` to `dst` (blobs hard-linked where possible) and tags there, as `tag`, the
/// image `base_tag` with `layers` (uncompressed tars) stacked on top.
pub fn stack_layers(base: &Path, base_tag: &str, dst: &Path, tag: &str, layers: &[Vec<u8>]) {
    // hard links where base and dst share a filesystem (not in the nested test VM)
    let linked = Command::new("cp")
        .arg("-al")
        .arg(base)
        .arg(dst)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    if !linked.success() {
        let _ = std::fs::remove_dir_all(dst);
        let copied = Command::new("cp")
            .arg("-a")
            .arg(base)
            .arg(dst)
            .status()
            .unwrap();
        assert!(
            copied.success(),
            "cp -a {} {}",
            base.display(),
            dst.display()
        );
    }
    let index_path = dst.join("index.json");
    let mut index = read_json(&index_path);
    let blob = |d: &Value| {
        dst.join("blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == base_tag)
        .unwrap_or_else(|| panic!("no {base_tag} in {}", base.display()))
        .clone();
    let mut manifest = read_json(&blob(&desc["digest"]));
    let mut config = read_json(&blob(&manifest["config"]["digest"]));
    for layer in layers {
        let (digest, size) = put_blob(dst, layer);
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(json!(digest));
        manifest["layers"].as_array_mut().unwrap().push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest,
            "size": size,
        }));
    }
    let (digest, size) = put_blob(dst, &serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = json!(digest);
    manifest["config"]["size"] = json!(size);
    let (digest, size) = put_blob(dst, &serde_json::to_vec(&manifest).unwrap());
    index["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest,
        "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    // the index was hard-linked from the base: replace, never modify, it
    fs::remove_file(&index_path).unwrap();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}
