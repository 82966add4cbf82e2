//! What `skiff run` mounts into the container besides its root, as its flags say it:
//! `-v`/`--volume`, `--mount` and `--tmpfs`. Parsing only: whether a host path exists is
//! checked when the container is made (`crate::shares`).

use std::path::PathBuf;

use protocol::TmpfsMount;

/// Where a shared mount's files live on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A host directory or file; `create`: a missing directory is made (`-v`), else a
    /// missing source is an error (`--mount type=bind`).
    Bind { path: PathBuf, create: bool },
    /// A named volume, created on first use.
    Volume { name: String },
}

/// A host directory, file or named volume to mount in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub source: Source,
    /// Absolute path in the container.
    pub target: String,
    pub read_only: bool,
}

/// One `--mount`: a share or a tmpfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountFlag {
    Share(Share),
    Tmpfs(TmpfsMount),
}

/// Whether `name` is a valid volume name (docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
pub fn valid_volume_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && name.len() <= 128
}

/// A container path to mount on: absolute, not `/`, no `..`.
fn check_target(target: &str, flag: &str) -> Result<(), String> {
    if !target.starts_with('/') || target == "/" || target.split('/').any(|c| c == "..") {
        return Err(format!(
            "invalid {flag} target {target:?}: give an absolute container path other than / (e.g. /data)"
        ));
    }
    Ok(())
}

/// The source of a `-v` or `--mount`: an absolute host path, or a volume name.
fn source(s: &str, create: bool, flag: &str) -> Result<Source, String> {
    if s.starts_with('/') {
        if s.split('/').any(|c| c == "..") {
            return Err(format!(
                "invalid {flag} host path {s:?}: it has a .. component"
            ));
        }
        Ok(Source::Bind {
            path: PathBuf::from(s),
            create,
        })
    } else if valid_volume_name(s) {
        Ok(Source::Volume {
            name: s.to_string(),
        })
    } else if s.contains('/') || s.starts_with('.') {
        Err(format!(
            "invalid {flag} host path {s:?}: host paths must be absolute (e.g. \"$PWD/{}\")",
            s.trim_start_matches("./")
        ))
    } else {
        Err(format!(
            "invalid volume name {s:?}: use letters, digits, _ . - (starting with a letter or digit)"
        ))
    }
}

/// Parses `-v SOURCE:TARGET[:OPTIONS]` (options `ro`, `rw`; `z`, `Z` and `nocopy` are
/// accepted as docker does, the first two meaning nothing without SELinux).
pub fn parse_volume(s: &str) -> Result<Share, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, target, opts) = match parts[..] {
        [_] => {
            return Err(format!(
                "anonymous volumes are not supported: name one (-v NAME:{s}) or give a host path (-v /HOST:{s})"
            ))
        }
        [src, target] => (src, target, ""),
        [src, target, opts] => (src, target, opts),
        _ => return Err(format!("invalid volume {s:?}: use SOURCE:TARGET[:ro|rw]")),
    };
    let mut read_only = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "z" | "Z" | "nocopy" => {}
            other => {
                return Err(format!(
                    "invalid volume option {other:?} in {s:?}: use ro or rw"
                ))
            }
        }
    }
    check_target(target, "volume")?;
    Ok(Share {
        source: source(src, true, "volume")?,
        target: target.to_string(),
        read_only,
    })
}

/// Whether a `readonly` value means true.
fn truth(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("invalid value {v:?} for {key}: use true or false")),
    }
}

/// Parses `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]` (docker's keys:
/// `src`, `dst`, `destination`, `ro`, `tmpfs-size`, `tmpfs-mode`, `volume-nocopy`).
pub fn parse_mount(s: &str) -> Result<MountFlag, String> {
    let (mut kind, mut src, mut target) = ("volume", None, None);
    let mut read_only = false;
    let mut tmpfs_options = Vec::new();
    for field in s.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => kind = v,
            "source" | "src" => src = Some(v),
            "target" | "destination" | "dst" => target = Some(v),
            "readonly" | "ro" => read_only = truth(k, v)?,
            "tmpfs-size" => tmpfs_options.push(format!("size={v}")),
            "tmpfs-mode" => tmpfs_options.push(format!("mode={v}")),
            "volume-nocopy" | "bind-propagation" | "consistency" => {}
            other => return Err(format!("invalid --mount field {other:?} in {s:?}")),
        }
    }
    let target =
        target.ok_or_else(|| format!("--mount {s:?} has no target=: name the container path"))?;
    match kind {
        "tmpfs" => {
            if src.is_some() {
                return Err(format!("--mount {s:?}: a tmpfs takes no source"));
            }
            if read_only {
                tmpfs_options.push("ro".into());
            }
            parse_tmpfs(&format!("{target}:{}", tmpfs_options.join(","))).map(MountFlag::Tmpfs)
        }
        "bind" | "volume" => {
            let src = src.ok_or_else(|| {
                format!("--mount {s:?} has no source=: name the host path or volume")
            })?;
            check_target(target, "--mount")?;
            let source = source(src, false, "--mount")?;
            match (&source, kind) {
                (Source::Bind { .. }, "volume") => {
                    return Err(format!(
                        "--mount {s:?}: a volume source is a name, not a path (use type=bind)"
                    ))
                }
                (Source::Volume { .. }, "bind") => {
                    return Err(format!(
                        "--mount {s:?}: a bind source must be an absolute host path"
                    ))
                }
                _ => {}
            }
            Ok(MountFlag::Share(Share {
                source,
                target: target.to_string(),
                read_only,
            }))
        }
        other => Err(format!(
            "invalid --mount type {other:?}: use bind, volume or tmpfs"
        )),
    }
}

/// tmpfs options that take a value, and the flags, that `--tmpfs` accepts (docker's set).
const VALUED: [&str; 5] = ["size", "mode", "uid", "gid", "nr_inodes"];
const FLAGS: [&str; 9] = [
    "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "noatime",
];

/// A value tmpfs takes for `key`: `mode` octal, `uid`/`gid` decimal, `size` and `nr_inodes`
/// a number with an optional `k`, `m`, `g` (or, for `size`, `%`) suffix.
fn valid_value(key: &str, v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match key {
        "mode" => !v.is_empty() && v.bytes().all(|b| (b'0'..=b'7').contains(&b)),
        "uid" | "gid" => digits(v),
        _ => {
            let number = v.trim_end_matches(['k', 'm', 'g', 'K', 'M', 'G']);
            let number = if key == "size" {
                number.trim_end_matches('%')
            } else {
                number
            };
            digits(number) && v.len() - number.len() <= 1
        }
    }
}

/// Parses `--tmpfs PATH[:OPT,OPT…]`.
pub fn parse_tmpfs(s: &str) -> Result<TmpfsMount, String> {
    let (path, opts) = s.split_once(':').unwrap_or((s, ""));
    if !path.starts_with('/') || path == "/" || path.split('/').any(|c| c == "..") {
        return Err(format!(
            "invalid tmpfs path {path:?}: give an absolute path other than / (e.g. --tmpfs /tmp)"
        ));
    }
    let mut options = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let ok = match o.split_once('=') {
            Some((k, v)) => VALUED.contains(&k) && valid_value(k, v),
            None => FLAGS.contains(&o),
        };
        if !ok {
            return Err(format!(
                "invalid tmpfs option {o:?} in {s:?}: use size=, mode=, uid=, gid=, nr_inodes= or {}",
                FLAGS.join(", ")
            ));
        }
        options.push(o.to_string());
    }
    Ok(TmpfsMount {
        path: path.to_string(),
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_as_docker_writes_them() {
        let v = parse_volume("/src:/work:ro").unwrap();
        assert_eq!(
            v.source,
            Source::Bind {
                path: "/src".into(),
                create: true
            }
        );
        assert_eq!((v.target.as_str(), v.read_only), ("/work", true));
        let v = parse_volume("data:/var/lib/x").unwrap();
        assert_eq!(
            v.source,
            Source::Volume {
                name: "data".into()
            }
        );
        assert!(!v.read_only);
        for bad in [
            "rel/x:/d",
            "./x:/d",
            "/a:/b:bogus",
            "/a:rel",
            "/a:/",
            "a/b",
            "/x",
            "-x:/d",
            "/a/../b:/d",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn mounts_parse_as_docker_writes_them() {
        let m = parse_mount("type=bind,source=/h,target=/c,readonly").unwrap();
        let MountFlag::Share(s) = m else {
            panic!("{m:?}")
        };
        assert_eq!(
            s.source,
            Source::Bind {
                path: "/h".into(),
                create: false
            }
        );
        assert!(s.read_only);
        let m = parse_mount("src=vol,dst=/d").unwrap();
        assert!(matches!(
            m,
            MountFlag::Share(Share {
                source: Source::Volume { .. },
                ..
            })
        ));
        let m = parse_mount("type=tmpfs,target=/t,tmpfs-size=1m").unwrap();
        let MountFlag::Tmpfs(t) = m else {
            panic!("{m:?}")
        };
        assert_eq!(t.options, ["size=1m"]);
        for bad in [
            "type=bind,source=/h",
            "type=bind,src=rel/x,dst=/c",
            "type=volume,src=/h,dst=/c",
            "type=nfs,src=a,dst=/c",
            "type=bind,src=/h,dst=/c,bogus=1",
            "type=bind,src=/h,dst=/c,ro=maybe",
            "src=a/b,dst=/c",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn tmpfs_flags_parse_as_docker_writes_them() {
        let t = parse_tmpfs("/run:size=64m,mode=1777,exec").unwrap();
        assert_eq!(t.path, "/run");
        assert_eq!(t.options, ["size=64m", "mode=1777", "exec"]);
        assert!(parse_tmpfs("/tmp").unwrap().options.is_empty());
        for bad in [
            "tmp",
            "/",
            "/a/../b",
            "/x:size=",
            "/x:bogus",
            "/x:size=1,mode=7;rm",
        ] {
            assert!(parse_tmpfs(bad).is_err(), "{bad} accepted");
        }
    }
}
