//! Image names the docker way: `alpine` is `docker.io/library/alpine:latest`; a name may carry a
//! registry (`host`, `host:port`, `localhost`), a tag, and an `@sha256:` digest.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::ImageError;

/// The registry of names that give none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag of names that give neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// docker.io's registry API host.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Longest accepted name, as docker.
const MAX_NAME: usize = 255;
/// Longest accepted tag, as docker.
const MAX_TAG: usize = 128;

/// A parsed, normalized image name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageName {
    /// `docker.io`, `localhost:5000`, `registry.example.com`.
    pub registry: String,
    /// `library/alpine`, `team/app`.
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageName {
    /// What the registry is asked for: the digest when there is one, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The host (and port) the registry API is served on.
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn repo_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name the store records: `registry/repository@digest` when pulled by digest, else
    /// `registry/repository:tag`.
    pub fn canonical(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{d}", self.repo_path()),
            None => format!("{}:{}", self.repo_path(), self.reference()),
        }
    }

    /// The same name with this digest instead of its tag.
    pub fn with_digest(&self, digest: Digest) -> ImageName {
        ImageName {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// Whether the registry is on this machine (plain HTTP is allowed for it).
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => &self.registry,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// `repository[:tag]` the way docker shows it: without `docker.io/` and `library/`.
    pub fn familiar_repository(&self) -> String {
        if self.registry != DEFAULT_REGISTRY {
            return self.repo_path();
        }
        self.repository
            .strip_prefix("library/")
            .unwrap_or(&self.repository)
            .to_owned()
    }
}

impl FromStr for ImageName {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ImageError::BadReference {
            reference: s.chars().take(MAX_NAME + 80).collect(),
            reason: reason.to_owned(),
        };
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = Digest::parse(d).ok_or_else(|| {
                    bad("the digest after '@' must be sha256:<64 lowercase hex digits>")
                })?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        let (path, tag) = match rest.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            let first_ok = tag
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
            let ok = first_ok
                && tag.len() <= MAX_TAG
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !ok {
                return Err(bad(
                    "a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (registry, repository) = match path.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_registry(first) {
                    return Err(bad("the registry must be HOST or HOST:PORT"));
                }
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), path.to_owned()),
        };
        let registry = if registry == "index.docker.io" {
            DEFAULT_REGISTRY.to_owned()
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.len() > MAX_NAME || !repository.split('/').all(valid_component) {
            return Err(bad(
                "a repository is lower-case letters and digits, separated by '/', '.', '_' or '-'",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(ImageName {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repo_path())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// One path component: `[a-z0-9]+` joined by `.`, `_`, `__` or `-`s.
fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes
            .iter()
            .all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        && !c.contains("..")
        && !c.contains("___")
}

/// `host` or `host:port`, host being DNS labels, an IPv4 address or a bracketed IPv6 address.
fn valid_registry(r: &str) -> bool {
    let (host, port) = if let Some(v6) = r.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, rest)) => {
                if addr.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (None, rest.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(r), None),
        }
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty()
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    });
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn canon(s: &str) -> String {
        s.parse::<ImageName>().unwrap().canonical()
    }

    #[test]
    fn docker_normalization() {
        assert_eq!(canon("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(canon("alpine:3.19"), "docker.io/library/alpine:3.19");
        assert_eq!(canon("team/app"), "docker.io/team/app:latest");
        assert_eq!(canon("index.docker.io/x/y:1"), "docker.io/x/y:1");
        assert_eq!(canon("localhost/x"), "localhost/x:latest");
        assert_eq!(canon("localhost:5000/x:v1"), "localhost:5000/x:v1");
        assert_eq!(canon("127.0.0.1:5000/a/b/c:t"), "127.0.0.1:5000/a/b/c:t");
        assert_eq!(
            canon("registry.example.com/team/app:1.2"),
            "registry.example.com/team/app:1.2"
        );
        assert_eq!(
            canon(&format!("alpine@{D}")),
            format!("docker.io/library/alpine@{D}")
        );
        let both: ImageName = format!("r.io:443/x:t@{D}").parse().unwrap();
        assert_eq!(both.reference(), D);
        assert_eq!(both.tag.as_deref(), Some("t"));
        assert_eq!(both.to_string(), format!("r.io:443/x:t@{D}"));
    }

    #[test]
    fn hosts() {
        let n: ImageName = "alpine".parse().unwrap();
        assert_eq!(n.api_host(), "registry-1.docker.io");
        assert_eq!(n.familiar_repository(), "alpine");
        assert!(!n.is_loopback());
        for s in [
            "localhost:5000/x",
            "127.0.0.1:1/x",
            "[::1]:5000/x",
            "localhost/x",
        ] {
            assert!(s.parse::<ImageName>().unwrap().is_loopback(), "{s}");
        }
        assert!(!"10.0.0.1:5000/x"
            .parse::<ImageName>()
            .unwrap()
            .is_loopback());
    }

    #[test]
    fn bad_names() {
        for s in [
            "",
            "UPPER",
            "a//b",
            "a:",
            "a:-x",
            "a@sha256:12",
            "a/../b",
            "host:99999/x",
            "-x",
            "x-",
            "a:b:c",
            &format!("a:{}", "t".repeat(129)),
            "a b",
            "a/b\0",
        ] {
            assert!(s.parse::<ImageName>().is_err(), "{s:?} accepted");
        }
    }
}
