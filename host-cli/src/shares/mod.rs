//! The user's files in a container: `-v` and `--mount` requests become the VM's shared
//! directories (virtio-fs, one virtiofsd each, deduplicated by host directory and access) and
//! the spec's [`ShareMount`]s, which guest-init mounts at their targets. A host file is shared
//! through its directory and bound alone inside the guest. What a container mounts is kept in
//! its config ([`MountRecord`]), so `start` serves the same directories again and `inspect`
//! shows them as docker's `Mounts`.

pub mod virtiofsd;
pub mod watch;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use protocol::ShareMount;
use serde::{Deserialize, Serialize};

use crate::mounts::{Share, Source};

/// A directory the VM shares, with the tag the guest mounts it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostShare {
    pub tag: String,
    pub dir: PathBuf,
    pub read_only: bool,
}

/// One mount of a container, as `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    /// `bind` or `volume`.
    pub kind: String,
    /// The volume's name.
    pub name: Option<String>,
    /// The host path (a volume's `_data`).
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// What a container's mounts make of its VM and spec.
#[derive(Debug, Default)]
pub struct Plan {
    pub shares: Vec<HostShare>,
    pub mounts: Vec<ShareMount>,
    pub records: Vec<MountRecord>,
}

/// The mounts of another container, for `--volumes-from CONTAINER[:ro|rw]`: its binds (whose
/// sources must still exist) and volumes, at the same targets, read-only where they were or
/// where `:ro` says.
pub fn volumes_from(arg: &str) -> Result<Vec<Share>> {
    let (name, mode) = match arg.rsplit_once(':') {
        Some((n, m @ ("ro" | "rw"))) => (n, Some(m)),
        _ => (arg, None),
    };
    let c = crate::container::state::find(&crate::container::state::containers_dir(), name)?;
    Ok(c.config
        .mounts
        .iter()
        .map(|m| Share {
            source: match &m.name {
                Some(volume) => Source::Volume {
                    name: volume.clone(),
                },
                None => Source::Bind {
                    path: m.source.clone(),
                    create: false,
                },
            },
            target: m.target.clone(),
            read_only: match mode {
                Some(mode) => mode == "ro",
                None => m.read_only,
            },
        })
        .collect())
}

/// Resolves the requests: a missing `-v` host directory is created (docker does), a missing
/// `--mount` bind source is an error, named volumes are made on first use (and filled from
/// the image while empty). `tmpfs_targets` are checked for clashes too.
pub fn plan(requests: &[Share], tmpfs_targets: &[String]) -> Result<Plan> {
    // Every request is checked before anything is made.
    let mut targets: Vec<&str> = tmpfs_targets.iter().map(String::as_str).collect();
    for r in requests {
        let target = r.target.trim_end_matches('/');
        if targets.contains(&target) {
            bail!("duplicate mount point: {target}: give each mount its own container path");
        }
        targets.push(target);
        if let Source::Bind {
            path,
            create: false,
        } = &r.source
        {
            if !path.exists() {
                bail!(
                    "bind source path does not exist: {}: create it first (or use -v, which creates a missing directory)",
                    path.display()
                );
            }
        }
    }
    let mut plan = Plan::default();
    for r in requests {
        let target = r.target.trim_end_matches('/');
        let (kind, name, path, populate) = match &r.source {
            Source::Bind { path, .. } => {
                if !path.exists() {
                    std::fs::create_dir_all(path).with_context(|| {
                        format!("cannot create the host directory {}", path.display())
                    })?;
                }
                let path = path
                    .canonicalize()
                    .with_context(|| format!("cannot resolve the host path {}", path.display()))?;
                ("bind", None, path, false)
            }
            Source::Volume { name } => {
                let (v, _) = crate::volumes::ensure(&crate::volumes::root(), name)?;
                let data = v.data();
                let empty = std::fs::read_dir(&data)
                    .with_context(|| format!("cannot read volume {name}"))?
                    .next()
                    .is_none();
                ("volume", Some(name.clone()), data, empty && !r.read_only)
            }
        };
        let meta = std::fs::metadata(&path)
            .with_context(|| format!("cannot stat the host path {}", path.display()))?;
        let (dir, entry) = if meta.is_dir() {
            (path.clone(), String::new())
        } else if meta.is_file() {
            let parent = path
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| "/".into());
            let entry = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (parent, entry)
        } else {
            bail!(
                "cannot share {}: only directories and regular files can be mounted",
                path.display()
            );
        };
        let tag = match plan
            .shares
            .iter()
            .find(|s| s.dir == dir && s.read_only == r.read_only)
        {
            Some(s) => s.tag.clone(),
            None => {
                let tag = format!("skiff-{}", plan.shares.len());
                plan.shares.push(HostShare {
                    tag: tag.clone(),
                    dir,
                    read_only: r.read_only,
                });
                tag
            }
        };
        plan.mounts.push(ShareMount {
            tag,
            entry,
            target: target.to_string(),
            read_only: r.read_only,
            populate,
        });
        plan.records.push(MountRecord {
            kind: kind.into(),
            name,
            source: path,
            target: target.to_string(),
            read_only: r.read_only,
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(path: &std::path::Path, target: &str, read_only: bool) -> Share {
        Share {
            source: Source::Bind {
                path: path.to_path_buf(),
                create: true,
            },
            target: target.into(),
            read_only,
        }
    }

    #[test]
    fn one_share_per_directory_and_access_and_files_through_their_directory() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().canonicalize().unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        let p = plan(
            &[
                bind(&dir, "/a", false),
                bind(&dir.join("f"), "/etc/f", false),
                bind(&dir, "/b", true),
                bind(&dir.join("new"), "/c", false),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(p.shares.len(), 3, "{:?}", p.shares);
        assert_eq!(p.mounts[0].tag, p.mounts[1].tag);
        assert_eq!(p.mounts[1].entry, "f");
        assert_ne!(p.mounts[2].tag, p.mounts[0].tag);
        assert!(dir.join("new").is_dir(), "-v creates a missing directory");
        assert!(plan(&[bind(&dir, "/a", false), bind(&dir, "/a/", true)], &[]).is_err());
        assert!(plan(&[bind(&dir, "/t", false)], &["/t".into()]).is_err());
        let missing = Share {
            source: Source::Bind {
                path: dir.join("nothing"),
                create: false,
            },
            target: "/x".into(),
            read_only: false,
        };
        let e = plan(&[missing], &[]).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(!dir.join("nothing").exists());
    }
}
