//! Resolves the spec's `user` (`""`, `name`, `uid`, `uid:gid`, `name:group`, …) against the
//! image's /etc/passwd and /etc/group, with runc's rules: a named user gets its passwd gid and
//! the supplementary groups that list it; an explicit group replaces the gid and adds none; a
//! numeric uid missing from passwd runs with gid 0 and HOME=/.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

/// Largest passwd/group file read from an image.
const MAX_DB_BYTES: u64 = 4 << 20;

/// Who the container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub home: String,
}

#[derive(Clone, Copy)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(db: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    db.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(db: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    db.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Resolves `spec` against the contents of passwd and group; the error is docker's wording.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ExecUser, String> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_arg = if user_arg.is_empty() { "0" } else { user_arg };
    let numeric_uid = user_arg.parse::<u32>().ok();
    let entry = passwd_entries(passwd).find(|e| match numeric_uid {
        Some(uid) => e.uid == uid,
        None => e.name == user_arg,
    });
    let mut user = match (entry, numeric_uid) {
        (Some(e), _) => ExecUser {
            uid: e.uid,
            gid: e.gid,
            groups: Vec::new(),
            home: e.home.to_string(),
        },
        (None, Some(uid)) => ExecUser {
            uid,
            gid: 0,
            groups: Vec::new(),
            home: "/".to_string(),
        },
        (None, None) => {
            return Err(format!(
                "unable to find user {user_arg}: no matching entries in passwd file"
            ))
        }
    };
    match group_arg.filter(|g| !g.is_empty()) {
        Some(g) => {
            user.gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_entries(group)
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| {
                        format!("unable to find group {g}: no matching entries in group file")
                    })?,
            };
        }
        None => {
            if let Some(name) = entry.map(|e| e.name) {
                user.groups = group_entries(group)
                    .filter(|e| e.members.contains(&name))
                    .map(|e| e.gid)
                    .collect();
            }
        }
    }
    Ok(user)
}

/// Reads an account database of the image; a missing file reads as empty. Only regular files
/// are read (a FIFO planted by an image must not block the container's start), and at most
/// [`MAX_DB_BYTES`].
pub fn read_db(path: &str) -> Result<String, String> {
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(format!("open {path}: {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("stat {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_DB_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read {path}: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        garbage line\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
        bob:x:1001:100::/home/bob:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:\nalice:x:1000:\n\
        wheel:x:10:alice,bob\naudio:x:29:alice\n";

    fn r(spec: &str) -> Result<ExecUser, String> {
        resolve(spec, PASSWD, GROUP)
    }

    #[test]
    fn names_and_numbers_resolve_like_runc() {
        assert_eq!(
            r("").unwrap(),
            ExecUser {
                uid: 0,
                gid: 0,
                groups: vec![],
                home: "/root".into()
            }
        );
        assert_eq!(
            r("alice").unwrap(),
            ExecUser {
                uid: 1000,
                gid: 1000,
                groups: vec![10, 29],
                home: "/home/alice".into()
            }
        );
        assert_eq!(r("1001").unwrap().groups, vec![10]);
        assert_eq!(r("1001").unwrap().gid, 100);
        assert_eq!(
            r("4242").unwrap(),
            ExecUser {
                uid: 4242,
                gid: 0,
                groups: vec![],
                home: "/".into()
            }
        );
        assert_eq!(
            r("4242:77").unwrap(),
            ExecUser {
                uid: 4242,
                gid: 77,
                groups: vec![],
                home: "/".into()
            }
        );
        let a = r("alice:users").unwrap();
        assert_eq!((a.uid, a.gid, a.groups.as_slice()), (1000, 100, &[][..]));
        assert_eq!(r("bob:5").unwrap().gid, 5);
    }

    #[test]
    fn unknown_names_fail_with_docker_wording() {
        assert_eq!(
            r("mallory").unwrap_err(),
            "unable to find user mallory: no matching entries in passwd file"
        );
        assert_eq!(
            r("alice:nogroup").unwrap_err(),
            "unable to find group nogroup: no matching entries in group file"
        );
    }
}
