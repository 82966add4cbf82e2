//! A client of the OCI distribution API (`/v2/`): manifests with content negotiation, blobs with
//! `Range` resumption, and authentication answering `WWW-Authenticate` challenges (Basic, or a
//! Bearer token from the challenge's realm).
//!
//! HTTP is `ureq` 2 (blocking, rustls on ring, no OpenSSL, no gzip decoding so blobs arrive as
//! stored). Plain HTTP is used only for loopback registries or when the caller asks for it.

pub mod auth;

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tracing::debug;

use crate::layout::MAX_JSON;
use crate::name::ImageName;
use crate::spec;
use crate::store::error::{one_line, StoreError, StoreResult};

use auth::Challenge;
pub use auth::Credentials;

/// The manifest media types skiff asks for, best first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 1 media types (refused).
const SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Longest error body or token answer read.
const MAX_SMALL_BODY: u64 = 64 << 10;

/// A manifest or index as the registry sent it.
#[derive(Debug)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// Allow plain HTTP to a registry that is not on a loopback address.
    pub insecure: bool,
    pub credentials: Option<Credentials>,
}

/// A client for one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    registry: String,
    repository: String,
    credentials: Option<Credentials>,
    /// The `Authorization` header that last worked (Basic, or Bearer with a token).
    authorization: Mutex<Option<String>>,
}

impl Client {
    pub fn new(name: &ImageName, connect: &Connect) -> Client {
        let scheme = if name.is_loopback() || connect.insecure {
            "http"
        } else {
            "https"
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            .timeout_write(Duration::from_secs(60))
            .redirects(5)
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent,
            base: format!("{scheme}://{}/v2", name.api_host()),
            registry: name.registry.clone(),
            repository: name.repository.clone(),
            credentials: connect.credentials.clone(),
            authorization: Mutex::new(None),
        }
    }

    /// Checks that the registry answers and accepts the credentials (`GET /v2/`).
    pub fn ping(&self) -> StoreResult<()> {
        let url = format!("{}/", self.base);
        self.get(&url, None, None, "GET /v2/").map(drop)
    }

    /// Fetches a manifest or index by tag or digest, bounded by [`MAX_JSON`]; refuses schema 1.
    pub fn manifest(&self, name: &ImageName, reference: &str) -> StoreResult<FetchedManifest> {
        let url = format!("{}/{}/manifests/{reference}", self.base, self.repository);
        let what = format!("the manifest of {name}");
        let resp = self
            .get(&url, Some(MANIFEST_ACCEPT), None, &what)
            .map_err(|e| match e {
                StoreError::Registry { status: 404, .. } => StoreError::ManifestUnknown {
                    name: name.to_string(),
                    registry: self.registry.clone(),
                },
                e => e,
            })?;
        let media_type = resp
            .header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        if SCHEMA1.contains(&media_type.as_str()) {
            return Err(StoreError::Schema1 {
                name: name.to_string(),
            });
        }
        if let Some(len) = resp
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
        {
            if len > MAX_JSON {
                return Err(StoreError::TooLarge {
                    what,
                    size: len,
                    limit: MAX_JSON,
                });
            }
        }
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::Invalid {
                what: what.clone(),
                reason: format!("its body ended early ({})", one_line(&e.to_string(), 100)),
            })?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(StoreError::TooLarge {
                what,
                size: bytes.len() as u64,
                limit: MAX_JSON,
            });
        }
        Ok(FetchedManifest { bytes, media_type })
    }

    /// Starts downloading a blob at byte `offset`. Returns the body and the offset it really
    /// starts at (0 when the registry ignored the range).
    pub fn blob(&self, digest: &str, offset: u64) -> StoreResult<(Box<dyn Read + Send>, u64)> {
        let url = format!("{}/{}/blobs/{digest}", self.base, self.repository);
        let range = (offset > 0).then_some(offset);
        let resp = self.get(&url, None, range, &format!("blob {digest}"))?;
        let start = if resp.status() == 206 {
            content_range_start(resp.header("content-range").unwrap_or("")).ok_or_else(|| {
                StoreError::Invalid {
                    what: format!("the answer of {} for blob {digest}", self.registry),
                    reason: "a partial answer without a valid Content-Range".into(),
                }
            })?
        } else {
            0
        };
        if start != 0 && start != offset {
            return Err(StoreError::Invalid {
                what: format!("the answer of {} for blob {digest}", self.registry),
                reason: format!("asked for bytes from {offset}, got from {start}"),
            });
        }
        Ok((Box::new(resp.into_reader()), start))
    }

    /// GET with authentication: on a 401 answer the challenge is met once and the request
    /// repeated.
    fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        range: Option<u64>,
        what: &str,
    ) -> StoreResult<ureq::Response> {
        for attempt in 0..2 {
            let mut req = self.agent.get(url);
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            if let Some(off) = range {
                req = req.set("Range", &format!("bytes={off}-"));
            }
            if let Some(h) = self.current_authorization() {
                req = req.set("Authorization", &h);
            }
            debug!(url, ?range, "GET");
            match req.call() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if attempt == 0 => {
                    let challenge = resp.header("www-authenticate").unwrap_or("").to_owned();
                    self.authenticate(&challenge)?;
                }
                Err(ureq::Error::Status(401 | 403, _)) => return Err(self.unauthorized()),
                Err(ureq::Error::Status(status, resp)) => {
                    return Err(StoreError::Registry {
                        registry: self.registry.clone(),
                        what: what.to_owned(),
                        status,
                        message: error_message(resp),
                    })
                }
                Err(ureq::Error::Transport(t)) => return Err(self.unreachable(&t.to_string())),
            }
        }
        Err(self.unauthorized())
    }

    fn current_authorization(&self) -> Option<String> {
        self.authorization
            .lock()
            .map(|a| a.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Meets a challenge: Basic uses the credentials; Bearer fetches a token from the realm
    /// (with the credentials, if any).
    fn authenticate(&self, header: &str) -> StoreResult<()> {
        let value = match auth::parse_challenge(header) {
            Some(Challenge::Basic) => match &self.credentials {
                Some(c) => c.basic(),
                None => return Err(self.unauthorized()),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => format!("Bearer {}", self.token(&realm, service, scope)?),
            None => {
                return Err(StoreError::Registry {
                    registry: self.registry.clone(),
                    what: "a request".into(),
                    status: 401,
                    message: format!(
                        "unsupported authentication challenge {:?}",
                        one_line(header, 100)
                    ),
                })
            }
        };
        let mut slot = self.authorization.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(value);
        Ok(())
    }

    /// Fetches a bearer token for pulling this repository.
    fn token(
        &self,
        realm: &str,
        service: Option<String>,
        scope: Option<String>,
    ) -> StoreResult<String> {
        if !(realm.starts_with("https://")
            || realm.starts_with("http://") && self.base.starts_with("http://"))
        {
            return Err(StoreError::Invalid {
                what: format!("the token realm of {}", self.registry),
                reason: format!("{:?} is not an https URL", one_line(realm, 100)),
            });
        }
        let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let mut req = self.agent.get(realm).query("scope", &scope);
        if let Some(s) = &service {
            req = req.query("service", s);
        }
        if let Some(c) = &self.credentials {
            req = req.set("Authorization", &c.basic());
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(401 | 403, _)) => return Err(self.unauthorized()),
            Err(ureq::Error::Status(status, resp)) => {
                return Err(StoreError::Registry {
                    registry: self.registry.clone(),
                    what: "a token request".into(),
                    status,
                    message: error_message(resp),
                })
            }
            Err(ureq::Error::Transport(t)) => return Err(self.unreachable(&t.to_string())),
        };
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_SMALL_BODY)
            .read_to_end(&mut bytes)
            .map_err(|e| self.unreachable(&e.to_string()))?;
        let token: Token = serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid {
            what: format!("the token answer of {}", self.registry),
            reason: e.to_string(),
        })?;
        token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| StoreError::Invalid {
                what: format!("the token answer of {}", self.registry),
                reason: "it holds no token".into(),
            })
    }

    fn unauthorized(&self) -> StoreError {
        StoreError::Unauthorized {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            hint: if self.credentials.is_some() {
                " (wrong user name or password?)"
            } else {
                "; log in with `skiff login`"
            },
        }
    }

    fn unreachable(&self, reason: &str) -> StoreError {
        StoreError::Unreachable {
            registry: self.registry.clone(),
            reason: one_line(reason, 200),
        }
    }

    /// The registry this client talks to.
    pub fn registry(&self) -> &str {
        &self.registry
    }
}

/// The start of `bytes START-END/TOTAL`.
fn content_range_start(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The message of a registry error body (`{"errors":[{"code":…,"message":…}]}`), one line.
fn error_message(resp: ureq::Response) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let mut bytes = Vec::new();
    let _ = resp
        .into_reader()
        .take(MAX_SMALL_BODY)
        .read_to_end(&mut bytes);
    match serde_json::from_slice::<Errors>(&bytes) {
        Ok(e) if !e.errors.is_empty() => one_line(
            &e.errors
                .iter()
                .map(|i| format!("{} {}", i.code, i.message))
                .collect::<Vec<_>>()
                .join("; "),
            200,
        ),
        _ => one_line(&String::from_utf8_lossy(&bytes), 200),
    }
}

/// Whether `media_type` names an image index or manifest list.
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, spec::OCI_INDEX | spec::DOCKER_LIST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes 0-0/1"), Some(0));
        assert_eq!(content_range_start("items 1-2"), None);
        assert_eq!(content_range_start("bytes x-1/2"), None);
    }
}
