//! The content-addressed image store under skiff's state root: an OCI image layout
//! (`$SKIFF_ROOT/images`) whose blobs are verified as they are written and whose `index.json`
//! maps full image names to manifests.
//!
//! Concurrency (all flock, so a killed process releases everything):
//! - `locks/store`: shared by whoever adds blobs before naming them (pull, load, import);
//!   exclusive while unreferenced blobs are deleted (rmi, prune), so a sweep never deletes the
//!   blobs of an image being added;
//! - `locks/index`: exclusive around each read-modify-write of `index.json`;
//! - `locks/blob-<hex>`: one writer per blob; the others wait and then find it stored;
//! - `locks/disk-<key>`: one builder per image disk (see `disks`);
//! - `locks/pin-<hex>`: shared by each container running that manifest; rmi and sweeps treat a
//!   pinned manifest as in use.
//!
//! Blobs and `index.json` are written to temporary files and renamed, so a kill at any point
//! leaves either the old or the new state, plus temporary files that prune removes.

mod blob;
mod disks;
pub mod error;
mod inflate;
mod lock;
mod names;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tracing::{debug, info};

pub use blob::{BlobWriter, Ingested};
pub use disks::{disk_key, ImageDisk};
pub use error::{StoreError, StoreResult};
pub use lock::{Lock, Mode};
pub use names::{write_atomic, Entry, SOURCE_DIGEST};

use crate::digest::Digest;
use crate::layout::{Layout, MAX_JSON};
use crate::name::ImageName;
use crate::reference::{Selector, Transport};
use crate::resolved::ResolvedImage;
use crate::spec::{self, ConfigFile, Manifest, REF_NAME};

/// The image store; see the module docs.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    dir: PathBuf,
}

/// What `skiff images` shows of one named image.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: String,
    /// The image manifest's digest.
    pub manifest: String,
    /// The digest the registry gave for the name, when it was pulled.
    pub source_digest: Option<String>,
    /// The config's digest (docker's image ID).
    pub id: String,
    pub created: Option<String>,
    pub os: String,
    pub architecture: String,
    /// Bytes of config and layer blobs.
    pub size: u64,
    pub layers: usize,
}

/// What a sweep of unreferenced blobs removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub blobs: usize,
    pub bytes: u64,
    /// Image disks removed, and their bytes.
    pub disks: usize,
    pub disk_bytes: u64,
}

impl Store {
    /// skiff's state root: `$SKIFF_ROOT`, else `$XDG_DATA_HOME/skiff`, else
    /// `~/.local/share/skiff`.
    pub fn default_root() -> PathBuf {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(d) = var("SKIFF_ROOT") {
            return PathBuf::from(d);
        }
        if let Some(d) = var("XDG_DATA_HOME") {
            return PathBuf::from(d).join("skiff");
        }
        let home = var("HOME").unwrap_or_else(|| "/".into());
        PathBuf::from(home).join(".local/share/skiff")
    }

    /// Opens the store under `root`, creating it when missing.
    pub fn open(root: &Path) -> StoreResult<Store> {
        let store = Store {
            root: root.to_owned(),
            dir: root.join("images"),
        };
        for d in [
            store.dir.join("blobs/sha256"),
            store.tmp_dir(),
            store.locks_dir(),
        ] {
            fs::create_dir_all(&d).map_err(|e| StoreError::io("create", &d, e))?;
        }
        let marker = store.dir.join(spec::OCI_LAYOUT_FILE);
        if !marker.exists() {
            names::write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = store.index_path();
        if !index.exists() {
            let _lock = store.index_lock()?;
            if !index.exists() {
                names::write(&index, Vec::new())?;
            }
        }
        Ok(store)
    }

    /// The state root the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's OCI image layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.dir.join("locks")
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join(spec::INDEX_FILE)
    }

    fn lock(&self, name: &str, mode: Mode) -> StoreResult<Lock> {
        let path = self.locks_dir().join(name);
        Lock::acquire(&path, mode).map_err(|e| StoreError::io("lock", &path, e))
    }

    fn index_lock(&self) -> StoreResult<Lock> {
        self.lock("index", Mode::Exclusive)
    }

    /// Held (shared) while blobs are added that no name references yet.
    pub fn adding(&self) -> StoreResult<Lock> {
        self.lock("store", Mode::Shared)
    }

    /// The path of a blob (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        digest.blob_path(&self.dir)
    }

    /// Whether the store holds this blob with this size (blobs are verified when written).
    pub fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        fs::metadata(self.blob_path(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// A writer for one blob, or `None` when the store already holds it.
    pub fn blob_writer(
        &self,
        digest: &Digest,
        size: u64,
        source_name: &str,
    ) -> StoreResult<Option<BlobWriter>> {
        BlobWriter::open(self, digest, size, source_name)
    }

    /// Stores a stream whose digest is not known in advance; returns what it was.
    pub fn ingest(&self, reader: impl std::io::Read) -> StoreResult<Ingested> {
        blob::ingest(self, reader)
    }

    /// Copies a file that must hold `digest` (`size` bytes) into the store, verifying it.
    pub fn copy_blob(&self, path: &Path, digest: &Digest, size: u64) -> StoreResult<bool> {
        let Some(mut w) = self.blob_writer(digest, size, &path.display().to_string())? else {
            return Ok(false);
        };
        let file = fs::File::open(path).map_err(|e| StoreError::io("open", path, e))?;
        match w.copy_from(file) {
            Ok(Ok(())) => w.finish().map(|()| true),
            Ok(Err(e)) => {
                w.discard();
                Err(e)
            }
            Err(e) => {
                w.discard();
                Err(StoreError::io("read", path, e))
            }
        }
    }

    /// Stores a small blob held in memory; returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> StoreResult<Digest> {
        let digest = Digest::of(bytes);
        if let Some(mut w) = self.blob_writer(&digest, bytes.len() as u64, "memory")? {
            let written = w.write(bytes);
            match written {
                Ok(()) => w.finish()?,
                Err(e) => {
                    w.discard();
                    return Err(e);
                }
            }
        }
        Ok(digest)
    }

    /// Reads and parses a JSON blob of the store (bounded by [`MAX_JSON`]).
    pub fn json_blob<T: DeserializeOwned>(&self, digest: &str) -> StoreResult<T> {
        let bytes = self.small_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid {
            what: format!("blob {digest} in the store"),
            reason: e.to_string(),
        })
    }

    /// The bytes of a small blob of the store (bounded by [`MAX_JSON`]).
    pub fn small_blob(&self, digest: &str) -> StoreResult<Vec<u8>> {
        let d = parse_digest(digest)?;
        let path = self.blob_path(&d);
        let len = fs::metadata(&path)
            .map_err(|e| StoreError::io("read", &path, e))?
            .len();
        if len > MAX_JSON {
            return Err(StoreError::TooLarge {
                what: format!("blob {digest}"),
                size: len,
                limit: MAX_JSON,
            });
        }
        fs::read(&path).map_err(|e| StoreError::io("read", &path, e))
    }

    /// All named images.
    pub fn entries(&self) -> StoreResult<Vec<Entry>> {
        names::read(&self.index_path())
    }

    /// The image a user names: a name (`alpine`, `host:5000/x:t`, `x@sha256:…`), or an image
    /// ID (a unique prefix, ≥ 4 hex digits, of a config digest).
    pub fn find(&self, user: &str) -> StoreResult<Option<Entry>> {
        let entries = self.entries()?;
        if let Ok(name) = user.parse::<ImageName>() {
            let canonical = name.canonical();
            if let Some(e) = entries.iter().find(|e| e.name() == canonical) {
                return Ok(Some(e.clone()));
            }
        }
        let hex = user.strip_prefix("sha256:").unwrap_or(user);
        if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut found: Option<Entry> = None;
        for e in &entries {
            let Ok(m) = self.json_blob::<Manifest>(&e.digest) else {
                continue;
            };
            if m.config
                .digest
                .trim_start_matches("sha256:")
                .starts_with(hex)
            {
                match &found {
                    Some(f) if f.digest != e.digest => {
                        return Err(StoreError::Invalid {
                            what: format!("image ID {user}"),
                            reason: "it matches more than one image; give more digits".into(),
                        })
                    }
                    _ => found = Some(e.clone()),
                }
            }
        }
        Ok(found)
    }

    /// Names an image: adds or replaces the entry for `entry.name()`.
    pub fn set_name(&self, entry: Entry) -> StoreResult<()> {
        let _lock = self.index_lock()?;
        let mut entries = self.entries()?;
        entries.retain(|e| e.name() != entry.name());
        info!(name = entry.name(), manifest = %entry.digest, "named image");
        entries.push(entry);
        entries.sort_by(|a, b| a.name().cmp(b.name()));
        names::write(&self.index_path(), entries)
    }

    /// Removes the entries `remove` picks; returns them.
    pub fn remove_names(&self, remove: impl Fn(&Entry) -> bool) -> StoreResult<Vec<Entry>> {
        let _lock = self.index_lock()?;
        let (gone, kept): (Vec<Entry>, Vec<Entry>) = self.entries()?.into_iter().partition(remove);
        if !gone.is_empty() {
            names::write(&self.index_path(), kept)?;
        }
        Ok(gone)
    }

    /// Pins a manifest for a running container (released when the lock drops). The pin is
    /// taken under the shared store lock, so a sweep, which holds that lock exclusively while
    /// it unlinks the files of unheld pins, never unlinks one that is being taken.
    pub fn pin(&self, manifest: &Digest) -> StoreResult<Lock> {
        let _store = self.lock("store", Mode::Shared)?;
        self.lock(&format!("pin-{}", manifest.hex()), Mode::Shared)
    }

    /// Whether a running container pins this manifest.
    pub fn is_pinned(&self, manifest: &str) -> StoreResult<bool> {
        let d = parse_digest(manifest)?;
        let path = self.locks_dir().join(format!("pin-{}", d.hex()));
        if !path.exists() {
            return Ok(false);
        }
        let free = Lock::try_acquire(&path, Mode::Exclusive)
            .map_err(|e| StoreError::io("lock", &path, e))?;
        Ok(free.is_none())
    }

    /// Opens the named image for running: pins its manifest and verifies it like an OCI layout
    /// (manifest, config, every layer against digest and size).
    pub fn resolve(&self, user: &str) -> StoreResult<ResolvedImage> {
        let (entry, pin) = {
            let _adding = self.adding()?;
            let entry = self
                .find(user)?
                .ok_or_else(|| StoreError::NoSuchImage(user.to_owned()))?;
            let digest = parse_digest(&entry.digest)?;
            let pin = self.pin(&digest)?;
            (entry, pin)
        };
        let layout = Layout::open(&self.dir, &self.dir, Transport::Oci)?;
        let digest = parse_digest(&entry.digest)?;
        let mut image = layout.resolve(&Selector::Digest(digest))?;
        image.reference = entry.name().to_owned();
        image._keep = Some(Box::new(pin));
        Ok(image)
    }

    /// The facts `skiff images` shows about an entry.
    pub fn summary(&self, entry: &Entry) -> StoreResult<Summary> {
        let m: Manifest = self.json_blob(&entry.digest)?;
        let config: ConfigFile = self.json_blob(&m.config.digest)?;
        Ok(Summary {
            name: entry.name().to_owned(),
            manifest: entry.digest.clone(),
            source_digest: entry.annotations.get(SOURCE_DIGEST).cloned(),
            id: m.config.digest.clone(),
            created: config.created,
            os: config.os,
            architecture: config.architecture,
            size: m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>(),
            layers: m.layers.len(),
        })
    }

    /// The blobs an entry references: manifest, config, layers, and the index it came from.
    pub fn blobs_of(&self, entry: &Entry) -> StoreResult<Vec<String>> {
        let mut blobs = vec![entry.digest.clone()];
        if let Some(src) = entry.annotations.get(SOURCE_DIGEST) {
            blobs.push(src.clone());
        }
        let m: Manifest = self.json_blob(&entry.digest)?;
        blobs.push(m.config.digest);
        blobs.extend(m.layers.into_iter().map(|l| l.digest));
        Ok(blobs)
    }

    /// Deletes every blob that no name and no running container references, and leftover
    /// temporary files. Waits until no pull, load or import is adding blobs.
    pub fn sweep(&self) -> StoreResult<Swept> {
        let _exclusive = self.lock("store", Mode::Exclusive)?;
        let mut keep: HashSet<String> = HashSet::new();
        let mut manifests: Vec<String> = Vec::new();
        for e in self.entries()? {
            keep.extend(self.blobs_of(&e)?);
            manifests.push(e.digest.clone());
        }
        let pins = fs::read_dir(self.locks_dir())
            .map_err(|e| StoreError::io("list", self.locks_dir(), e))?;
        for p in pins.flatten() {
            let name = p.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_prefix("pin-") {
                let manifest = format!("sha256:{hex}");
                if self.is_pinned(&manifest)? {
                    let entry = Entry {
                        media_type: String::new(),
                        digest: manifest,
                        size: 0,
                        annotations: Default::default(),
                    };
                    // a restarted container may pin a manifest removed while it was stopped
                    if let Ok(blobs) = self.blobs_of(&entry) {
                        keep.extend(blobs);
                        manifests.push(entry.digest);
                    }
                } else {
                    let _ = fs::remove_file(p.path());
                }
            } else if name.starts_with("blob-") {
                let _ = fs::remove_file(p.path());
            }
        }
        let mut disks = HashSet::new();
        for m in &manifests {
            let m: Manifest = self.json_blob(m)?;
            disks.insert(disk_key(m.layers.iter().map(|l| l.digest.as_str())));
        }
        let mut swept = Swept::default();
        (swept.disks, swept.disk_bytes) = self.sweep_disks(&disks);
        let blobs = self.dir.join("blobs/sha256");
        for b in fs::read_dir(&blobs)
            .map_err(|e| StoreError::io("list", &blobs, e))?
            .flatten()
        {
            let digest = format!("sha256:{}", b.file_name().to_string_lossy());
            if keep.contains(&digest) {
                continue;
            }
            let len = b.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(b.path()).map_err(|e| StoreError::io("remove", b.path(), e))?;
            debug!(%digest, "removed unreferenced blob");
            swept.blobs += 1;
            swept.bytes += len;
        }
        for t in fs::read_dir(self.tmp_dir())
            .map_err(|e| StoreError::io("list", self.tmp_dir(), e))?
            .flatten()
        {
            swept.bytes += t.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = fs::remove_file(t.path());
        }
        Ok(swept)
    }

    /// Deletes the given blobs if nothing references them and nobody else is adding blobs
    /// (used to leave the store as it was after a failed pull or load).
    pub fn discard_unreferenced(&self, added: &[Digest]) {
        if added.is_empty() {
            return;
        }
        let path = self.locks_dir().join("store");
        let Ok(Some(_exclusive)) = Lock::try_acquire(&path, Mode::Exclusive) else {
            debug!("store in use: unreferenced blobs stay until `skiff image prune`");
            return;
        };
        let mut keep: HashSet<String> = HashSet::new();
        let Ok(entries) = self.entries() else { return };
        for e in entries {
            match self.blobs_of(&e) {
                Ok(b) => keep.extend(b),
                Err(_) => return,
            }
        }
        for d in added {
            if !keep.contains(d.as_str()) {
                let _ = fs::remove_file(self.blob_path(d));
            }
        }
    }
}

/// A digest read from the store's own files.
fn parse_digest(s: &str) -> StoreResult<Digest> {
    Digest::parse(s).ok_or_else(|| StoreError::Invalid {
        what: format!("digest {:?}", error::one_line(s, 100)),
        reason: "only sha256:<64 lowercase hex digits> is supported".into(),
    })
}

/// A new entry naming `manifest` (of `media_type`, `size` bytes) as `name`.
pub fn entry(name: &str, media_type: &str, manifest: &Digest, size: u64) -> Entry {
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(REF_NAME.to_owned(), name.to_owned());
    Entry {
        media_type: media_type.to_owned(),
        digest: manifest.to_string(),
        size,
        annotations,
    }
}
