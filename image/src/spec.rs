//! The OCI image-spec and Docker schema2 documents skiff reads, and their media types.

use serde::Deserialize;
use std::collections::BTreeMap;

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
/// The annotation that names a manifest in an OCI layout's index.json.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// How a layer blob is compressed; the guest decompresses it while unpacking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What a layer media type means to skiff.
pub enum LayerKind {
    /// A tar of the layer's changes, compressed like this.
    Tar(Compression),
    /// Non-distributable (OCI) or foreign (Docker): the bytes may be missing from the image.
    Foreign,
    Unknown,
}

/// Classifies a layer media type.
pub fn layer_kind(media_type: &str) -> LayerKind {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => LayerKind::Tar(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => LayerKind::Tar(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd" => LayerKind::Tar(Compression::Zstd),
        "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => LayerKind::Foreign,
        _ => LayerKind::Unknown,
    }
}

/// The `oci-layout` file.
#[derive(Debug, Deserialize)]
pub struct OciLayout {
    #[serde(rename = "imageLayoutVersion")]
    pub version: String,
}

/// A content descriptor; the digest is validated by whoever uses it.
#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// The layout tag of an index.json entry.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

/// An `os/arch[/variant]` platform, as indexes name them and `--platform` asks for them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// An image index (index.json, an OCI index blob, a Docker manifest list).
#[derive(Debug, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

impl Index {
    /// The platforms the index offers, for an error that none fits: at most `limit` of them,
    /// comma-separated, or "none".
    pub fn platform_list(&self, limit: usize) -> String {
        let names: Vec<String> = self
            .manifests
            .iter()
            .map(|d| {
                d.platform
                    .as_ref()
                    .map_or_else(|| "unspecified".to_owned(), |p| p.to_string())
            })
            .take(limit)
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }
}

/// An image manifest (OCI or Docker schema2).
#[derive(Debug, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// Either kind of document a manifest descriptor may point at, told apart by media type or,
/// when a descriptor has none, by shape.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ManifestOrIndex {
    Manifest(Manifest),
    Index(Index),
}

/// The image configuration blob (the parts skiff uses).
#[derive(Debug, Default, Deserialize)]
pub struct ConfigFile {
    /// RFC 3339 creation time, when the image says.
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// The `config` object of an image configuration. Docker writes `null` for empty lists.
#[derive(Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    /// `{"80/tcp": {}}`: only the keys matter.
    #[serde(rename = "ExposedPorts", default)]
    pub exposed_ports: Option<std::collections::BTreeMap<String, serde::de::IgnoredAny>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}
