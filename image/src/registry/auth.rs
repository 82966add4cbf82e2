//! Registry credentials and authentication: `WWW-Authenticate` challenges (Basic, Bearer),
//! credentials saved by `skiff login` (`$SKIFF_ROOT/auth.json`, mode 0600) and docker's
//! `~/.docker/config.json` (`$DOCKER_CONFIG`), both in docker's `auths` format.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::name::DEFAULT_REGISTRY;
use crate::store::error::{StoreError, StoreResult};

/// Largest credentials file read.
const MAX_AUTH_FILE: u64 = 1 << 20;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization` header value of basic auth.
    pub fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", BASE64.encode(raw))
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a challenge: `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(params);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `k="v",k2=v2` pairs; quoted values may hold commas and `\"`.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            continue;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_owned();
        }
        out.insert(key, value);
    }
    out
}

/// Docker's config file format (the parts skiff reads and writes).
#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    /// Everything else of docker's file, kept as it is.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// skiff's own credentials file.
pub fn skiff_auth_file(root: &Path) -> PathBuf {
    root.join("auth.json")
}

/// docker's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_file() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The registry a key of an `auths` map names: `https://index.docker.io/v1/` → `docker.io`,
/// `https://host:5000` → `host:5000`.
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_owned(),
        h => h.to_owned(),
    }
}

fn read_auth_file(path: &Path) -> StoreResult<Option<AuthFile>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("open", path, e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_AUTH_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| StoreError::io("read", path, e))?;
    if bytes.len() as u64 > MAX_AUTH_FILE {
        return Err(StoreError::TooLarge {
            what: path.display().to_string(),
            size: bytes.len() as u64,
            limit: MAX_AUTH_FILE,
        });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Invalid {
            what: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// The credentials for `registry` from one file, if it has them.
fn from_file(path: &Path, registry: &str) -> StoreResult<Option<Credentials>> {
    let Some(file) = read_auth_file(path)? else {
        return Ok(None);
    };
    let Some(entry) = file
        .auths
        .iter()
        .find(|(k, _)| normalize_key(k) == registry)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    let Some(auth) = &entry.auth else {
        return Ok(None);
    };
    let invalid = |reason: &str| StoreError::Invalid {
        what: format!("the credentials for {registry} in {}", path.display()),
        reason: reason.to_owned(),
    };
    let raw = BASE64
        .decode(auth.trim())
        .map_err(|_| invalid("auth is not base64"))?;
    let raw = String::from_utf8(raw).map_err(|_| invalid("auth is not UTF-8"))?;
    let (user, pass) = raw
        .split_once(':')
        .ok_or_else(|| invalid("auth is not USER:PASSWORD"))?;
    debug!(registry, file = %path.display(), "using stored credentials");
    Ok(Some(Credentials {
        username: user.to_owned(),
        password: pass.to_owned(),
    }))
}

/// The credentials for `registry`: skiff's own file first, then docker's.
pub fn lookup(root: &Path, registry: &str) -> StoreResult<Option<Credentials>> {
    if let Some(c) = from_file(&skiff_auth_file(root), registry)? {
        return Ok(Some(c));
    }
    match docker_config_file() {
        Some(p) => from_file(&p, registry),
        None => Ok(None),
    }
}

/// Saves credentials for `registry` in skiff's file (mode 0600, replaced atomically).
pub fn save(root: &Path, registry: &str, creds: &Credentials) -> StoreResult<()> {
    let path = skiff_auth_file(root);
    std::fs::create_dir_all(root).map_err(|e| StoreError::io("create", root, e))?;
    let mut file = read_auth_file(&path)?.unwrap_or_default();
    file.auths.retain(|k, _| normalize_key(k) != registry);
    let raw = format!("{}:{}", creds.username, creds.password);
    file.auths.insert(
        registry.to_owned(),
        AuthEntry {
            auth: Some(BASE64.encode(raw)),
            other: BTreeMap::new(),
        },
    );
    write_private(&path, &file)
}

/// Removes the credentials for `registry` from skiff's file; whether there were any.
pub fn remove(root: &Path, registry: &str) -> StoreResult<bool> {
    let path = skiff_auth_file(root);
    let Some(mut file) = read_auth_file(&path)? else {
        return Ok(false);
    };
    let before = file.auths.len();
    file.auths.retain(|k, _| normalize_key(k) != registry);
    if file.auths.len() == before {
        return Ok(false);
    }
    write_private(&path, &file)?;
    Ok(true)
}

/// Writes the auth file; the temporary file is created 0600, so the secret is never readable
/// by others, not even briefly.
fn write_private(path: &Path, file: &AuthFile) -> StoreResult<()> {
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| StoreError::Invalid {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    crate::store::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=http://x/t , service = "a\"b""#),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: Some("a\"b".into()),
                scope: None,
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn docker_keys() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("localhost:5000"), "localhost:5000");
        assert_eq!(normalize_key("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
    }

    #[test]
    fn save_lookup_remove_keep_the_file_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let creds = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        save(root.path(), "127.0.0.1:5000", &creds).unwrap();
        let mode = std::fs::metadata(skiff_auth_file(root.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            from_file(&skiff_auth_file(root.path()), "127.0.0.1:5000").unwrap(),
            Some(creds)
        );
        assert!(remove(root.path(), "127.0.0.1:5000").unwrap());
        assert!(!remove(root.path(), "127.0.0.1:5000").unwrap());
    }
}
