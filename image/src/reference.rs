//! Image arguments of the local transports: `oci:DIR[:TAG]`, `oci:DIR@sha256:…` and
//! `oci-archive:FILE[:TAG]` (likewise with a digest).
//!
//! The path may itself hold `:`: the last `:` starts a tag only when what follows it has no `/`
//! (`oci:/a:b/c` is the path `/a:b/c`; `oci:/a:b` is the path `/a` with tag `b`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::ImageError;

/// Where the image is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An OCI image layout directory.
    Oci,
    /// A tar of an OCI image layout.
    OciArchive,
}

impl Transport {
    /// The prefix that names this transport in an image argument.
    pub fn prefix(self) -> &'static str {
        match self {
            Transport::Oci => "oci",
            Transport::OciArchive => "oci-archive",
        }
    }
}

/// Which image of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The only image of the layout, else the one tagged `latest`.
    Default,
    /// The manifest whose `org.opencontainers.image.ref.name` is this.
    Tag(String),
    /// The manifest or index with this digest.
    Digest(Digest),
}

/// A parsed image argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub transport: Transport,
    pub path: PathBuf,
    pub selector: Selector,
}

impl FromStr for ImageRef {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (transport, rest) = if let Some(rest) = s.strip_prefix("oci:") {
            (Transport::Oci, rest)
        } else if let Some(rest) = s.strip_prefix("oci-archive:") {
            (Transport::OciArchive, rest)
        } else {
            return Err(ImageError::UnsupportedReference(s.to_owned()));
        };
        let bad = |reason: &str| ImageError::BadReference {
            reference: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (path, selector) = match rest.rsplit_once('@') {
            Some((path, digest)) if digest.contains(':') && !digest.contains('/') => {
                let digest = Digest::parse(digest).ok_or_else(|| {
                    bad("the digest after '@' must be sha256:<64 lowercase hex digits>")
                })?;
                (path, Selector::Digest(digest))
            }
            _ => match rest.rsplit_once(':') {
                Some((path, tag)) if !tag.contains('/') => {
                    if tag.is_empty() {
                        return Err(bad("the tag after the last ':' is empty"));
                    }
                    (path, Selector::Tag(tag.to_owned()))
                }
                _ => (rest, Selector::Default),
            },
        };
        if path.is_empty() {
            return Err(bad("the path is empty"));
        }
        Ok(ImageRef {
            transport,
            path: PathBuf::from(path),
            selector,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport.prefix(), self.path.display())?;
        match &self.selector {
            Selector::Default => Ok(()),
            Selector::Tag(t) => write!(f, ":{t}"),
            Selector::Digest(d) => write!(f, "@{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn parse(s: &str) -> (Transport, String, Selector) {
        let r: ImageRef = s.parse().unwrap();
        (r.transport, r.path.display().to_string(), r.selector)
    }

    fn tag(t: &str) -> Selector {
        Selector::Tag(t.to_owned())
    }

    #[test]
    fn forms() {
        use Transport::*;
        let digest = Selector::Digest(Digest::parse(D).unwrap());
        let cases = [
            ("oci:/img", (Oci, "/img", Selector::Default)),
            ("oci:/img:latest", (Oci, "/img", tag("latest"))),
            ("oci:rel/dir:v1.2-x", (Oci, "rel/dir", tag("v1.2-x"))),
            ("oci:/a:b/c", (Oci, "/a:b/c", Selector::Default)),
            ("oci:/a:b/c:t", (Oci, "/a:b/c", tag("t"))),
            ("oci:/a:b:t", (Oci, "/a:b", tag("t"))),
            (
                "oci-archive:/x.tar",
                (OciArchive, "/x.tar", Selector::Default),
            ),
            (
                "oci-archive:/x.tar:3layer",
                (OciArchive, "/x.tar", tag("3layer")),
            ),
            (&*format!("oci:/img@{D}"), (Oci, "/img", digest.clone())),
            (
                &*format!("oci-archive:/a:b/x.tar@{D}"),
                (OciArchive, "/a:b/x.tar", digest),
            ),
            (
                "oci:/mail@host/dir",
                (Oci, "/mail@host/dir", Selector::Default),
            ),
        ];
        for (input, (t, p, s)) in cases {
            assert_eq!(parse(input), (t, p.to_owned(), s), "{input}");
            assert_eq!(input.parse::<ImageRef>().unwrap().to_string(), input);
        }
    }

    #[test]
    fn bad_forms() {
        for s in [
            "busybox",
            "docker://busybox",
            "oci:",
            "oci::tag",
            "oci:/img:",
            "oci:/img@sha256:abc",
            "oci:/x@sha512:00",
        ] {
            let err = s.parse::<ImageRef>().unwrap_err();
            assert!(
                matches!(
                    err,
                    ImageError::UnsupportedReference(_) | ImageError::BadReference { .. }
                ),
                "{s}: {err}"
            );
        }
    }
}
