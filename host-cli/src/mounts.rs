//! What `skiff run` mounts into the container besides its root: `--tmpfs PATH[:OPTIONS]`.

use protocol::TmpfsMount;

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
