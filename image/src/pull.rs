//! `pull`: fetches an image from a registry into the store. The manifest (or index, then the
//! manifest for the wanted platform) and config are read in memory (bounded); layers stream
//! straight into the store, several at a time, each checked against its digest and size while
//! it is written and resumed with `Range` after a cut connection. The name is recorded last, so
//! a failed pull leaves the names as they were, and the blobs it added are removed again.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::digest::Digest;
use crate::layout::{MAX_DEPTH, MAX_JSON, MAX_LAYERS};
use crate::name::ImageName;
use crate::registry::{self, Client, Connect, FetchedManifest};
use crate::spec::{self, ConfigFile, Descriptor, Index, LayerKind, Manifest};
use crate::store::{self, Store, StoreError, StoreResult, SOURCE_DIGEST};

/// How often one blob download is retried after a cut connection.
const RETRIES: u32 = 4;
/// Layers downloaded at once, unless the caller says otherwise.
pub const DEFAULT_JOBS: usize = 4;

pub use crate::spec::Platform;

impl Platform {
    /// The platform of this machine (`linux/amd64` on x86-64).
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    fn matches(&self, p: &Platform) -> bool {
        p.os == self.os
            && p.architecture == self.architecture
            && self
                .variant
                .as_ref()
                .is_none_or(|v| p.variant.as_deref() == Some(v))
    }
}

impl std::str::FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "invalid platform {s:?}: use OS/ARCH[/VARIANT], e.g. linux/amd64"
            )),
        }
    }
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub platform: Platform,
    pub connect: Connect,
    /// Layers downloaded at once.
    pub jobs: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: Platform::host(),
            connect: Connect::default(),
            jobs: DEFAULT_JOBS,
        }
    }
}

/// Receives the progress of a pull (implemented with progress bars by the CLI).
pub trait Progress: Sync {
    /// A blob of `size` bytes starts; the returned handle follows it.
    fn blob(&self, digest: &str, size: u64) -> Box<dyn BlobProgress>;
}

/// The progress of one blob.
pub trait BlobProgress: Send {
    /// `n` bytes are held (after a resume, or as the download goes).
    fn position(&self, n: u64);
    /// The blob is done; `how` says in a word or two (`downloaded`, `already present`).
    fn finish(&self, how: &str);
}

/// Progress that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn blob(&self, _: &str, _: u64) -> Box<dyn BlobProgress> {
        Box::new(NoProgress)
    }
}

impl BlobProgress for NoProgress {
    fn position(&self, _: u64) {}
    fn finish(&self, _: &str) {}
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The name recorded in the store.
    pub name: String,
    /// The digest the registry gave for the name (an index's for multi-platform images).
    pub digest: String,
    /// The image manifest stored (after platform selection).
    pub manifest: String,
    /// Blobs downloaded, and bytes received for them.
    pub fetched: usize,
    pub bytes: u64,
    /// Layers the store already held.
    pub present: usize,
}

/// Pulls `name` into `store`; see the module docs.
pub fn pull(
    store: &Store,
    name: &ImageName,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> StoreResult<PullReport> {
    let started = Instant::now();
    let adding = store.adding()?;
    let added = Mutex::new(Vec::new());
    let result = Puller {
        store,
        name,
        opts,
        client: Client::new(name, &opts.connect),
        added: &added,
        bytes: AtomicU64::new(0),
        present: AtomicUsize::new(0),
    }
    .run(progress);
    drop(adding);
    match result {
        Ok(report) => {
            info!(name = %report.name, manifest = %report.manifest, bytes = report.bytes, elapsed = ?started.elapsed(), "pulled");
            Ok(report)
        }
        Err(e) => {
            let added = added.into_inner().unwrap_or_else(|p| p.into_inner());
            store.discard_unreferenced(&added);
            Err(e)
        }
    }
}

struct Puller<'a> {
    store: &'a Store,
    name: &'a ImageName,
    opts: &'a PullOptions,
    client: Client,
    added: &'a Mutex<Vec<Digest>>,
    bytes: AtomicU64,
    present: AtomicUsize,
}

impl Puller<'_> {
    fn run(&self, progress: &dyn Progress) -> StoreResult<PullReport> {
        let top = self.client.manifest(self.name, &self.name.reference())?;
        let top_digest = Digest::of(&top.bytes);
        if let Some(want) = &self.name.digest {
            if *want != top_digest {
                return Err(self.mismatch(want));
            }
        }
        let mut docs = vec![(top_digest.clone(), top)];
        let mut depth = 0;
        while is_index_doc(&docs[docs.len() - 1].1) {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(self.invalid(
                    "its image indexes",
                    format!("nest deeper than {MAX_DEPTH} levels"),
                ));
            }
            let (digest, doc) = &docs[docs.len() - 1];
            let index: Index = self.parse(&format!("image index {digest}"), &doc.bytes)?;
            let entry = self.choose(&index)?;
            let want = self.digest(&entry.digest)?;
            let child = self.client.manifest(self.name, want.as_str())?;
            if child.bytes.len() as u64 != entry.size {
                return Err(self.invalid(
                    &format!("manifest {want}"),
                    format!(
                        "{} bytes, its descriptor says {}",
                        child.bytes.len(),
                        entry.size
                    ),
                ));
            }
            if Digest::of(&child.bytes) != want {
                return Err(self.mismatch(&want));
            }
            debug!(index = %digest, manifest = %want, platform = %self.opts.platform, "chose a platform");
            docs.push((want, child));
        }
        let (manifest_digest, fetched) = &docs[docs.len() - 1];
        let media_type = match fetched.media_type.as_str() {
            spec::OCI_MANIFEST | spec::DOCKER_MANIFEST => fetched.media_type.clone(),
            "" | "application/json" => spec::OCI_MANIFEST.to_owned(),
            other => {
                return Err(StoreError::UnsupportedMediaType {
                    what: "the manifest",
                    name: self.name.to_string(),
                    media_type: other.to_owned(),
                })
            }
        };
        let manifest: Manifest =
            self.parse(&format!("manifest {manifest_digest}"), &fetched.bytes)?;
        self.check_manifest(manifest_digest, &manifest)?;
        let config_bytes = self.config(&manifest.config)?;

        let fetched_count = AtomicUsize::new(0);
        self.layers(&manifest.layers, progress, &fetched_count)?;

        let config_digest = self.store.put_blob(&config_bytes)?;
        self.note_added(config_digest);
        for (digest, doc) in docs.iter().rev() {
            let stored = self.store.put_blob(&doc.bytes)?;
            debug_assert_eq!(&stored, digest);
            self.note_added(stored);
        }
        let canonical = self.name.canonical();
        let mut entry = store::entry(
            &canonical,
            &media_type,
            manifest_digest,
            fetched.bytes.len() as u64,
        );
        entry
            .annotations
            .insert(SOURCE_DIGEST.to_owned(), top_digest.to_string());
        self.store.set_name(entry)?;
        Ok(PullReport {
            name: canonical,
            digest: top_digest.to_string(),
            manifest: manifest_digest.to_string(),
            fetched: fetched_count.into_inner(),
            bytes: self.bytes.load(Ordering::Relaxed),
            present: self.present.load(Ordering::Relaxed),
        })
    }

    /// The index entry for the wanted platform.
    fn choose<'i>(&self, index: &'i Index) -> StoreResult<&'i Descriptor> {
        let want = &self.opts.platform;
        index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
            .ok_or_else(|| StoreError::NoPlatform {
                name: self.name.to_string(),
                platform: want.to_string(),
                platforms: index.platform_list(20),
            })
    }

    fn check_manifest(&self, digest: &Digest, m: &Manifest) -> StoreResult<()> {
        if m.schema_version != 2 {
            return Err(self.invalid(
                &format!("manifest {digest}"),
                format!("schemaVersion {}, expected 2", m.schema_version),
            ));
        }
        if m.layers.len() > MAX_LAYERS {
            return Err(self.invalid(
                &format!("manifest {digest}"),
                format!("{} layers, more than {MAX_LAYERS}", m.layers.len()),
            ));
        }
        match m.config.media_type.as_deref() {
            None | Some(spec::OCI_CONFIG | spec::DOCKER_CONFIG) => {}
            Some(other) => {
                return Err(StoreError::UnsupportedMediaType {
                    what: "the config",
                    name: self.name.to_string(),
                    media_type: other.to_owned(),
                })
            }
        }
        for l in &m.layers {
            let media_type = l.media_type.clone().unwrap_or_default();
            if !matches!(spec::layer_kind(&media_type), LayerKind::Tar(_)) {
                return Err(StoreError::UnsupportedMediaType {
                    what: "a layer",
                    name: self.name.to_string(),
                    media_type,
                });
            }
            self.digest(&l.digest)?;
        }
        Ok(())
    }

    /// Downloads the config (bounded), verifies it and checks its platform.
    fn config(&self, desc: &Descriptor) -> StoreResult<Vec<u8>> {
        let digest = self.digest(&desc.digest)?;
        if desc.size > MAX_JSON {
            return Err(StoreError::TooLarge {
                what: format!("the config of {}", self.name),
                size: desc.size,
                limit: MAX_JSON,
            });
        }
        let bytes = if self.store.has_blob(&digest, desc.size) {
            self.store.small_blob(digest.as_str())?
        } else {
            let (body, _) = self.client.blob(digest.as_str(), 0)?;
            let mut bytes = Vec::new();
            body.take(desc.size + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| StoreError::Unreachable {
                    registry: self.client.registry().to_owned(),
                    reason: e.to_string(),
                })?;
            bytes
        };
        if bytes.len() as u64 != desc.size {
            return Err(StoreError::SizeMismatch {
                digest: digest.to_string(),
                source_name: self.name.to_string(),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        if Digest::of(&bytes) != digest {
            return Err(self.mismatch(&digest));
        }
        let config: ConfigFile = self.parse(&format!("config {digest}"), &bytes)?;
        let want = &self.opts.platform;
        let os_ok = config.os.is_empty() || config.os == want.os;
        let arch_ok = config.architecture.is_empty() || config.architecture == want.architecture;
        if !os_ok || !arch_ok {
            return Err(StoreError::WrongPlatform {
                name: self.name.to_string(),
                actual: format!("{}/{}", config.os, config.architecture),
                wanted: want.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Downloads the layers the store lacks, `jobs` at a time; stops at the first error.
    fn layers(
        &self,
        layers: &[Descriptor],
        progress: &dyn Progress,
        fetched: &AtomicUsize,
    ) -> StoreResult<()> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error = Mutex::new(None);
        let jobs = self.opts.jobs.clamp(1, 16).min(layers.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(layer) = layers.get(i) else { return };
                    match self.layer(layer, progress, &failed) {
                        Ok(true) => {
                            fetched.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {
                            self.present.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            slot.get_or_insert(e);
                            return;
                        }
                    }
                });
            }
        });
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Downloads one layer into the store, resuming after cut connections. `Ok(false)` when
    /// the store already held it.
    fn layer(
        &self,
        desc: &Descriptor,
        progress: &dyn Progress,
        failed: &AtomicBool,
    ) -> StoreResult<bool> {
        let digest = self.digest(&desc.digest)?;
        let bar = progress.blob(digest.as_str(), desc.size);
        let source = self.name.to_string();
        let Some(mut writer) = self.store.blob_writer(&digest, desc.size, &source)? else {
            bar.finish("already present");
            return Ok(false);
        };
        let mut attempt = 0;
        // a partial file may already hold every byte (a pull killed just before the rename)
        while writer.offset() < desc.size {
            bar.position(writer.offset());
            match self.download(&digest, &mut writer, &*bar, failed) {
                Ok(()) => break,
                Err(Interrupted::Fatal(e)) => {
                    if matches!(e, StoreError::Io { .. } | StoreError::SizeMismatch { .. }) {
                        writer.discard();
                    }
                    return Err(e);
                }
                Err(Interrupted::Cut(reason))
                    if attempt < RETRIES && !failed.load(Ordering::Relaxed) =>
                {
                    attempt += 1;
                    warn!(%digest, at = writer.offset(), attempt, %reason, "download cut; resuming");
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                }
                Err(Interrupted::Cut(reason)) => {
                    return Err(StoreError::Unreachable {
                        registry: self.client.registry().to_owned(),
                        reason: format!(
                            "download of {digest} cut at byte {}: {reason}",
                            writer.offset()
                        ),
                    })
                }
            }
        }
        writer.finish()?;
        self.note_added(digest);
        bar.finish("downloaded");
        Ok(true)
    }

    /// One attempt at the rest of a blob.
    fn download(
        &self,
        digest: &Digest,
        writer: &mut store::BlobWriter,
        bar: &dyn BlobProgress,
        failed: &AtomicBool,
    ) -> Result<(), Interrupted> {
        let offset = writer.offset();
        let (mut body, start) = match self.client.blob(digest.as_str(), offset) {
            Ok(b) => b,
            Err(StoreError::Unreachable { reason, .. }) => return Err(Interrupted::Cut(reason)),
            Err(e) => return Err(Interrupted::Fatal(e)),
        };
        if start != offset {
            writer.restart().map_err(Interrupted::Fatal)?;
            bar.position(0);
        }
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if failed.load(Ordering::Relaxed) {
                return Err(Interrupted::Cut("another download failed".into()));
            }
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Interrupted::Cut(e.to_string())),
            };
            writer.write(&buf[..n]).map_err(Interrupted::Fatal)?;
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            bar.position(writer.offset());
        }
        if writer.offset() < writer.size() {
            return Err(Interrupted::Cut("the answer ended early".into()));
        }
        Ok(())
    }

    fn note_added(&self, d: Digest) {
        self.added.lock().unwrap_or_else(|p| p.into_inner()).push(d);
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> StoreResult<T> {
        serde_json::from_slice(bytes).map_err(|e| self.invalid(what, e.to_string()))
    }

    fn digest(&self, s: &str) -> StoreResult<Digest> {
        Digest::parse(s).ok_or_else(|| {
            self.invalid(
                &format!("digest {:?}", store::error::one_line(s, 100)),
                "only sha256:<64 lowercase hex digits> is supported".into(),
            )
        })
    }

    fn invalid(&self, what: &str, reason: String) -> StoreError {
        StoreError::Invalid {
            what: format!("{what} of {}", self.name),
            reason: store::error::one_line(&reason, 200),
        }
    }

    fn mismatch(&self, digest: &Digest) -> StoreError {
        StoreError::DigestMismatch {
            digest: digest.to_string(),
            source_name: self.name.to_string(),
        }
    }
}

/// Why a blob download attempt stopped.
enum Interrupted {
    /// The connection failed or was cut: resume.
    Cut(String),
    /// Anything else: give up.
    Fatal(StoreError),
}

/// Whether a fetched document is an image index (by media type, or by shape when untyped).
fn is_index_doc(doc: &FetchedManifest) -> bool {
    if registry::is_index(&doc.media_type) {
        return true;
    }
    if matches!(doc.media_type.as_str(), "" | "application/json") {
        #[derive(serde::Deserialize)]
        struct Probe {
            manifests: Option<serde_json::Value>,
        }
        return serde_json::from_slice::<Probe>(&doc.bytes).is_ok_and(|p| p.manifests.is_some());
    }
    false
}
