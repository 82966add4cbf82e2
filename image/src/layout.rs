//! Reading an OCI image layout: index.json, tag and platform selection, manifest, config, and
//! layer blobs, each checked against its descriptor before it is used or handed out (a layer's
//! size here, its bytes by whoever reads them).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tracing::debug;

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::reference::{Selector, Transport};
use crate::resolved::{ImageConfig, Layer, ResolvedImage};
use crate::spec::{
    self, ConfigFile, Descriptor, Index, LayerKind, Manifest, ManifestOrIndex, OciLayout,
};

/// Upper bound for index.json, manifests, indexes and configs.
pub const MAX_JSON: u64 = 4 << 20;
/// Upper bound for the number of layers of one image.
pub const MAX_LAYERS: usize = 512;
/// How many image indexes may nest.
pub const MAX_DEPTH: usize = 4;
/// The platform skiff's guests run.
const OS: &str = "linux";
const ARCH: &str = "amd64";
/// How many tags an error message lists.
const TAGS_SHOWN: usize = 20;
/// How much of one tag an error message shows.
const TAG_CHARS: usize = 128;

/// An OCI image layout on disk.
pub struct Layout {
    dir: PathBuf,
    /// How messages name the image: the directory, or the archive it came from.
    name: String,
    transport: Transport,
}

impl Layout {
    /// Opens the layout in `dir`, checking its `oci-layout` marker. `name` is how errors call it.
    pub fn open(dir: &Path, name: &Path, transport: Transport) -> Result<Layout> {
        let meta = fs::metadata(dir).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::NotFound(name.to_owned()),
            _ => ImageError::Io {
                what: "the directory".into(),
                image: name.display().to_string(),
                source: e,
            },
        })?;
        let layout = Layout {
            dir: dir.to_owned(),
            name: name.display().to_string(),
            transport,
        };
        if !meta.is_dir() {
            return Err(layout.not_a_layout("it is not a directory"));
        }
        let marker = layout.read_file(spec::OCI_LAYOUT_FILE)?;
        let marker: OciLayout = serde_json::from_slice(&marker)
            .map_err(|e| layout.invalid(spec::OCI_LAYOUT_FILE, e))?;
        if !marker.version.starts_with("1.") {
            return Err(layout.not_a_layout(&format!(
                "unsupported imageLayoutVersion {:?}",
                marker.version
            )));
        }
        Ok(layout)
    }

    /// Resolves `selector` to a runnable image: verified manifest and config, and layers of the
    /// right size.
    pub fn resolve(&self, selector: &Selector) -> Result<ResolvedImage> {
        let index_json = self.read_file(spec::INDEX_FILE)?;
        let index: Index =
            serde_json::from_slice(&index_json).map_err(|e| self.invalid(spec::INDEX_FILE, e))?;
        let top = self.select(&index, selector)?;
        let (manifest_digest, manifest) = self.manifest(&top, 0)?;
        if manifest.layers.len() > MAX_LAYERS {
            return Err(self.invalid_msg(
                &format!("manifest {manifest_digest}"),
                format!("{} layers, more than {MAX_LAYERS}", manifest.layers.len()),
            ));
        }
        let (config_digest, config) = self.config(&manifest.config)?;
        if let Some(rootfs) = &config.rootfs {
            if rootfs.diff_ids.len() != manifest.layers.len() {
                return Err(self.invalid_msg(
                    &format!("config {config_digest}"),
                    format!(
                        "it lists {} diff_ids for {} layers",
                        rootfs.diff_ids.len(),
                        manifest.layers.len()
                    ),
                ));
            }
        }
        let layers = manifest
            .layers
            .iter()
            .map(|d| self.layer(d))
            .collect::<Result<Vec<_>>>()?;
        let runtime = config.config.unwrap_or_default();
        Ok(ResolvedImage {
            reference: String::new(),
            manifest_digest: manifest_digest.to_string(),
            config_digest: config_digest.to_string(),
            config: ImageConfig {
                architecture: config.architecture,
                os: config.os,
                entrypoint: runtime.entrypoint.unwrap_or_default(),
                cmd: runtime.cmd.unwrap_or_default(),
                env: runtime.env.unwrap_or_default(),
                working_dir: runtime.working_dir.unwrap_or_default(),
                user: runtime.user.unwrap_or_default(),
                exposed_ports: runtime
                    .exposed_ports
                    .unwrap_or_default()
                    .into_keys()
                    .collect(),
            },
            layers,
            _keep: None,
        })
    }

    /// Picks the index.json entry `selector` names.
    fn select(&self, index: &Index, selector: &Selector) -> Result<Descriptor> {
        let entries = &index.manifests;
        let found: Vec<&Descriptor> = match selector {
            Selector::Default if entries.len() == 1 => entries.iter().collect(),
            Selector::Default => entries
                .iter()
                .filter(|d| d.ref_name() == Some("latest"))
                .collect(),
            Selector::Tag(tag) => entries
                .iter()
                .filter(|d| d.ref_name() == Some(tag))
                .collect(),
            Selector::Digest(digest) => entries
                .iter()
                .filter(|d| d.digest == digest.as_str())
                .take(1)
                .collect(),
        };
        match (found.as_slice(), selector) {
            ([one], _) => Ok((*one).clone()),
            ([], Selector::Digest(digest)) => Err(ImageError::DigestNotFound {
                digest: digest.to_string(),
                image: self.name.clone(),
            }),
            ([], Selector::Default) if entries.is_empty() => {
                Err(self.invalid_msg(spec::INDEX_FILE, "it lists no images".into()))
            }
            ([], Selector::Default) => Err(ImageError::Ambiguous {
                image: self.name.clone(),
                count: entries.len(),
                tags: tag_list(entries),
                transport: self.transport.prefix(),
            }),
            ([], Selector::Tag(tag)) => Err(ImageError::TagNotFound {
                tag: tag.clone(),
                image: self.name.clone(),
                tags: tag_list(entries),
                transport: self.transport.prefix(),
            }),
            (many, _) => Err(self.invalid_msg(
                spec::INDEX_FILE,
                format!("{} entries carry the same tag", many.len()),
            )),
        }
    }

    /// Follows `desc` through image indexes (choosing linux/amd64) to an image manifest.
    fn manifest(&self, desc: &Descriptor, depth: usize) -> Result<(Digest, Manifest)> {
        if depth > MAX_DEPTH {
            return Err(ImageError::TooDeep {
                image: self.name.clone(),
                limit: MAX_DEPTH,
            });
        }
        let (digest, doc) = match desc.media_type.as_deref() {
            Some(spec::OCI_INDEX | spec::DOCKER_LIST) => {
                let (digest, index) = self.json_blob::<Index>("image index", desc)?;
                (digest, ManifestOrIndex::Index(index))
            }
            Some(spec::OCI_MANIFEST | spec::DOCKER_MANIFEST) => {
                let (digest, manifest) = self.json_blob::<Manifest>("manifest", desc)?;
                (digest, ManifestOrIndex::Manifest(manifest))
            }
            None => self.json_blob::<ManifestOrIndex>("manifest", desc)?,
            Some(other) => {
                return Err(ImageError::UnsupportedMediaType {
                    what: "manifest",
                    digest: desc.digest.clone(),
                    image: self.name.clone(),
                    media_type: other.to_owned(),
                })
            }
        };
        let (schema, declared) = match &doc {
            ManifestOrIndex::Manifest(m) => (m.schema_version, &m.media_type),
            ManifestOrIndex::Index(i) => (i.schema_version, &i.media_type),
        };
        if schema != 2 {
            return Err(self.invalid_msg(
                &format!("manifest {digest}"),
                format!("schemaVersion {schema}, expected 2"),
            ));
        }
        if let (Some(declared), Some(expected)) = (declared, &desc.media_type) {
            if declared != expected {
                return Err(self.invalid_msg(
                    &format!("manifest {digest}"),
                    format!(
                        "it declares media type {declared:?}, its descriptor says {expected:?}"
                    ),
                ));
            }
        }
        match doc {
            ManifestOrIndex::Manifest(m) => Ok((digest, m)),
            ManifestOrIndex::Index(index) => {
                let chosen = self.platform_entry(&digest, &index)?;
                debug!(index = %digest, manifest = %chosen.digest, "chose the linux/amd64 entry of an image index");
                self.manifest(chosen, depth + 1)
            }
        }
    }

    /// The linux/amd64 entry of an image index.
    fn platform_entry<'a>(&self, digest: &Digest, index: &'a Index) -> Result<&'a Descriptor> {
        let matches = |d: &&Descriptor| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == OS && p.architecture == ARCH)
        };
        index
            .manifests
            .iter()
            .find(matches)
            .ok_or_else(|| ImageError::NoPlatform {
                digest: digest.to_string(),
                image: self.name.clone(),
                platforms: index.platform_list(usize::MAX),
            })
    }

    /// Reads and checks the image configuration.
    fn config(&self, desc: &Descriptor) -> Result<(Digest, ConfigFile)> {
        match desc.media_type.as_deref() {
            None | Some(spec::OCI_CONFIG | spec::DOCKER_CONFIG) => {}
            Some(other) => {
                return Err(ImageError::UnsupportedMediaType {
                    what: "config",
                    digest: desc.digest.clone(),
                    image: self.name.clone(),
                    media_type: other.to_owned(),
                })
            }
        }
        let (digest, config) = self.json_blob::<ConfigFile>("config", desc)?;
        let os_ok = config.os.is_empty() || config.os == OS;
        let arch_ok = config.architecture.is_empty() || config.architecture == ARCH;
        if !os_ok || !arch_ok {
            return Err(ImageError::WrongPlatform {
                image: self.name.clone(),
                platform: format!("{}/{}", config.os, config.architecture),
            });
        }
        Ok((digest, config))
    }

    /// Checks one layer's media type and blob.
    fn layer(&self, desc: &Descriptor) -> Result<Layer> {
        let media_type = desc.media_type.clone().unwrap_or_default();
        let compression = match spec::layer_kind(&media_type) {
            LayerKind::Tar(c) => c,
            LayerKind::Foreign => {
                return Err(ImageError::ForeignLayer {
                    digest: desc.digest.clone(),
                    image: self.name.clone(),
                    media_type,
                })
            }
            LayerKind::Unknown => {
                return Err(ImageError::UnsupportedMediaType {
                    what: "layer",
                    digest: desc.digest.clone(),
                    image: self.name.clone(),
                    media_type,
                })
            }
        };
        let digest = self.digest(&desc.digest)?;
        let path = self.layer_blob(&digest, desc.size)?;
        Ok(Layer {
            media_type,
            compression,
            digest: digest.to_string(),
            size: desc.size,
            path,
        })
    }

    /// Reads a JSON blob (bounded by [`MAX_JSON`]), checks size and digest, then parses it.
    fn json_blob<T: DeserializeOwned>(&self, what: &str, desc: &Descriptor) -> Result<(Digest, T)> {
        let digest = self.digest(&desc.digest)?;
        if desc.size > MAX_JSON {
            return Err(ImageError::TooLarge {
                what: format!("{what} {digest}"),
                image: self.name.clone(),
                size: desc.size,
                limit: MAX_JSON,
            });
        }
        let file = crate::digest::open_regular(&digest.blob_path(&self.dir))
            .map_err(|e| self.blob_error(&digest, e))?;
        let mut bytes = Vec::with_capacity(desc.size as usize);
        file.take(desc.size + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.blob_error(&digest, e))?;
        self.check(&digest, desc.size, bytes.len() as u64, &Digest::of(&bytes))?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(&format!("{what} {digest}"), e))?;
        Ok((digest, value))
    }

    /// The path of a layer blob once it is a regular file of `size` bytes. Its bytes are not
    /// read here: whoever reads them hashes them as they go (the image disk writer, `load`'s
    /// copy into the store), so a run whose disk is cached reads no layer at all, whatever the
    /// image's size.
    fn layer_blob(&self, digest: &Digest, size: u64) -> Result<PathBuf> {
        let path = digest.blob_path(&self.dir);
        let meta = fs::metadata(&path).map_err(|e| self.blob_error(digest, e))?;
        if !meta.is_file() {
            return Err(
                self.invalid_msg(&format!("blob {digest}"), "it is not a regular file".into())
            );
        }
        self.check(digest, size, meta.len(), digest)?;
        Ok(path)
    }

    fn check(
        &self,
        digest: &Digest,
        expected: u64,
        actual: u64,
        actual_digest: &Digest,
    ) -> Result<()> {
        if actual != expected {
            return Err(ImageError::SizeMismatch {
                digest: digest.to_string(),
                image: self.name.clone(),
                expected,
                actual,
            });
        }
        if actual_digest != digest {
            return Err(ImageError::DigestMismatch {
                digest: digest.to_string(),
                image: self.name.clone(),
            });
        }
        Ok(())
    }

    fn digest(&self, s: &str) -> Result<Digest> {
        Digest::parse(s).ok_or_else(|| ImageError::BadDigest {
            digest: s.chars().take(100).collect(),
            image: self.name.clone(),
        })
    }

    /// Reads a small top-level file of the layout (bounded by [`MAX_JSON`]).
    fn read_file(&self, file: &str) -> Result<Vec<u8>> {
        let f = crate::digest::open_regular(&self.dir.join(file)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => self.not_a_layout(&format!("no {file} file")),
            _ => self.io(file, e),
        })?;
        let mut bytes = Vec::new();
        f.take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.io(file, e))?;
        if bytes.len() as u64 > MAX_JSON {
            return Err(ImageError::TooLarge {
                what: file.to_owned(),
                image: self.name.clone(),
                size: bytes.len() as u64,
                limit: MAX_JSON,
            });
        }
        Ok(bytes)
    }

    fn blob_error(&self, digest: &Digest, e: io::Error) -> ImageError {
        match e.kind() {
            io::ErrorKind::NotFound => ImageError::MissingBlob {
                digest: digest.to_string(),
                image: self.name.clone(),
            },
            _ => self.io(&format!("blob {digest}"), e),
        }
    }

    fn io(&self, what: &str, source: io::Error) -> ImageError {
        ImageError::Io {
            what: what.to_owned(),
            image: self.name.clone(),
            source,
        }
    }

    fn invalid(&self, what: &str, e: serde_json::Error) -> ImageError {
        self.invalid_msg(what, e.to_string())
    }

    fn invalid_msg(&self, what: &str, reason: String) -> ImageError {
        ImageError::Invalid {
            what: what.to_owned(),
            image: self.name.clone(),
            reason,
        }
    }

    fn not_a_layout(&self, reason: &str) -> ImageError {
        ImageError::NotALayout {
            path: self.name.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// The tags of index.json entries, for messages (each cut to [`TAG_CHARS`] characters).
fn tag_list(entries: &[Descriptor]) -> String {
    let tags: Vec<String> = entries
        .iter()
        .filter_map(Descriptor::ref_name)
        .map(|t| t.chars().take(TAG_CHARS).collect())
        .collect();
    match tags.len() {
        0 => "none".to_owned(),
        n if n > TAGS_SHOWN => format!(
            "{}, … {} more",
            tags[..TAGS_SHOWN].join(", "),
            n - TAGS_SHOWN
        ),
        _ => tags.join(", "),
    }
}
