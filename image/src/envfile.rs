//! `--env-file` and `-e` values, parsed the way the docker CLI parses them.
//!
//! An env file holds one `KEY=VALUE` per line; leading whitespace is ignored, blank lines and
//! lines starting with `#` are skipped, the value is taken verbatim (no quote removal, no
//! trimming), a UTF-8 byte order mark is dropped from the first line, and a line holding only
//! `KEY` takes the host's value of KEY, or is skipped when the host has none.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Upper bound on an env file's size.
pub const MAX_ENV_FILE: u64 = 4 << 20;

/// One environment setting from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvEntry {
    /// `KEY=VALUE`.
    Set { key: String, value: String },
    /// `-e KEY`: the host's value of KEY; unset in the container when the host has none.
    Inherit(String),
}

/// Why an `-e` value or an env file was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("invalid environment variable {0:?}: the name is empty")]
    EmptyName(String),
    #[error("invalid environment variable {0:?}: it contains a NUL byte")]
    Nul(String),
    #[error("cannot read env file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("env file {path} is larger than {MAX_ENV_FILE} bytes")]
    TooLarge { path: PathBuf },
    #[error("env file {path} contains invalid UTF-8 at line {line}")]
    Utf8 { path: PathBuf, line: usize },
    #[error("env file {path} line {line}: variable {name:?} contains whitespace")]
    Whitespace {
        path: PathBuf,
        line: usize,
        name: String,
    },
    #[error("env file {path} line {line}: no variable name in {text:?}")]
    NoName {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

impl EnvEntry {
    /// Parses an `-e` value: `KEY=VALUE` or `KEY`.
    pub fn parse(s: &str) -> Result<EnvEntry, EnvError> {
        if s.contains('\0') {
            return Err(EnvError::Nul(s.to_owned()));
        }
        match s.split_once('=') {
            Some(("", _)) => Err(EnvError::EmptyName(s.to_owned())),
            Some((key, value)) => Ok(EnvEntry::Set {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            None if s.is_empty() => Err(EnvError::EmptyName(s.to_owned())),
            None => Ok(EnvEntry::Inherit(s.to_owned())),
        }
    }
}

/// Reads an env file; `host` gives the host's variables for lines that hold only a name.
pub fn read_env_file(
    path: &Path,
    host: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<EnvEntry>, EnvError> {
    let read = |source| EnvError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(read)?
        .take(MAX_ENV_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_ENV_FILE {
        return Err(EnvError::TooLarge {
            path: path.to_owned(),
        });
    }
    parse_env_file(path, &bytes, host)
}

/// Parses env file content (see the module docs); `path` is for messages only.
pub fn parse_env_file(
    path: &Path,
    bytes: &[u8],
    host: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<EnvEntry>, EnvError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut entries = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw).map_err(|_| EnvError::Utf8 {
            path: path.to_owned(),
            line: line_no,
        })?;
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains('\0') {
            return Err(EnvError::Nul(line.to_owned()));
        }
        let (name, value) = match line.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (line, None),
        };
        if name.contains([' ', '\t']) {
            return Err(EnvError::Whitespace {
                path: path.to_owned(),
                line: line_no,
                name: name.to_owned(),
            });
        }
        if name.is_empty() {
            return Err(EnvError::NoName {
                path: path.to_owned(),
                line: line_no,
                text: line.to_owned(),
            });
        }
        let value = match value {
            Some(v) => v.to_owned(),
            None => match host(name) {
                Some(v) => v,
                None => continue,
            },
        };
        entries.push(EnvEntry::Set {
            key: name.to_owned(),
            value,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(k: &str) -> Option<String> {
        (k == "FROM_HOST").then(|| "host value".to_owned())
    }

    fn set(k: &str, v: &str) -> EnvEntry {
        EnvEntry::Set {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn env_file_like_docker() {
        let text = "\u{feff}A=1\n# comment\n\n   \t  # indented comment\n  B=two words  \nC=\"quoted\"\r\n\
                    D=x=y\nE=\nFROM_HOST\nNOT_ON_HOST\n\tF=tab";
        let got = parse_env_file(Path::new("f"), text.as_bytes(), &host).unwrap();
        assert_eq!(
            got,
            [
                set("A", "1"),
                set("B", "two words  "),
                set("C", "\"quoted\""),
                set("D", "x=y"),
                set("E", ""),
                set("FROM_HOST", "host value"),
                set("F", "tab"),
            ]
        );
    }

    #[test]
    fn env_file_errors() {
        let p = Path::new("f");
        assert!(matches!(
            parse_env_file(p, b"OK=1\nBAD KEY=1", &host),
            Err(EnvError::Whitespace { line: 2, .. })
        ));
        assert!(matches!(
            parse_env_file(p, b"=1", &host),
            Err(EnvError::NoName { line: 1, .. })
        ));
        assert!(matches!(
            parse_env_file(p, b"A=1\nB=\xff", &host),
            Err(EnvError::Utf8 { line: 2, .. })
        ));
        assert!(matches!(
            parse_env_file(p, b"KEY \n", &host),
            Err(EnvError::Whitespace { .. })
        ));
    }

    #[test]
    fn flag_values() {
        assert_eq!(EnvEntry::parse("A=b=c").unwrap(), set("A", "b=c"));
        assert_eq!(EnvEntry::parse("A=").unwrap(), set("A", ""));
        assert_eq!(EnvEntry::parse("A").unwrap(), EnvEntry::Inherit("A".into()));
        assert!(matches!(EnvEntry::parse("=x"), Err(EnvError::EmptyName(_))));
        assert!(matches!(EnvEntry::parse(""), Err(EnvError::EmptyName(_))));
        assert!(matches!(EnvEntry::parse("A=\0"), Err(EnvError::Nul(_))));
    }

    #[test]
    fn reads_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("env");
        std::fs::write(&path, "X=1\n").unwrap();
        assert_eq!(read_env_file(&path, &host).unwrap(), [set("X", "1")]);
        let missing = read_env_file(&dir.path().join("nope"), &host).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
