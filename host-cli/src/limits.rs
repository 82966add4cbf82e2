//! `--ulimit NAME=SOFT[:HARD]`, docker's resource limits of the container's processes.

use protocol::Rlimit;

/// The resources docker names.
const RESOURCES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

fn value(v: &str, s: &str) -> Result<u64, String> {
    match v {
        "-1" | "unlimited" => Ok(u64::MAX),
        _ => v
            .parse()
            .map_err(|_| format!("invalid ulimit value {v:?} in {s:?}: use a number or -1")),
    }
}

/// Parses `--ulimit NAME=SOFT[:HARD]` (the hard limit defaults to the soft one).
pub fn parse_ulimit(s: &str) -> Result<Rlimit, String> {
    let (name, values) = s.split_once('=').ok_or_else(|| {
        format!("invalid ulimit {s:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048")
    })?;
    if !RESOURCES.contains(&name) {
        return Err(format!(
            "unknown ulimit {name:?}: use one of {}",
            RESOURCES.join(", ")
        ));
    }
    let (soft, hard) = values.split_once(':').unwrap_or((values, values));
    let (soft, hard) = (value(soft, s)?, value(hard, s)?);
    if soft > hard {
        return Err(format!(
            "invalid ulimit {s:?}: the soft limit is above the hard one"
        ));
    }
    Ok(Rlimit {
        resource: name.to_string(),
        soft,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_parse_as_docker_writes_them() {
        let l = parse_ulimit("nofile=1024:2048").unwrap();
        assert_eq!(
            (l.resource.as_str(), l.soft, l.hard),
            ("nofile", 1024, 2048)
        );
        let l = parse_ulimit("core=-1").unwrap();
        assert_eq!((l.soft, l.hard), (u64::MAX, u64::MAX));
        for bad in ["nofile", "bogus=1", "nofile=2:1", "nofile=x"] {
            assert!(parse_ulimit(bad).is_err(), "{bad}");
        }
    }
}
