//! Helpers of the skiff-image tests: OCI layouts written blob by blob into temporary
//! directories, and the test images of `tests/images/build.sh`.
#![allow(dead_code)] // each test binary uses its own part of these helpers

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// An OCI image layout in a temporary directory.
pub struct TestLayout {
    pub dir: TempDir,
}

impl TestLayout {
    /// An empty layout: `oci-layout` and an index.json without entries.
    pub fn new() -> TestLayout {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        let layout = TestLayout { dir };
        layout.write_index(&[]);
        layout
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `oci:<dir>:<tag>`.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.path().display())
    }

    /// Stores `bytes` as a blob; returns its descriptor (digest and size).
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(self.path().join("blobs/sha256").join(&hex), bytes).unwrap();
        json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    }

    pub fn json_blob(&self, media_type: &str, value: &Value) -> Value {
        self.blob(media_type, &serde_json::to_vec(value).unwrap())
    }

    /// An image with this runtime config (`config` object) and these layers; returns the
    /// manifest descriptor.
    pub fn image(&self, runtime: Value, layers: &[(&str, &[u8])]) -> Value {
        let layers: Vec<Value> = layers
            .iter()
            .map(|(mt, bytes)| self.blob(mt, bytes))
            .collect();
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect();
        let config = json!({
            "architecture": "amd64", "os": "linux", "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        self.manifest(self.json_blob(OCI_CONFIG, &config), layers)
    }

    /// A manifest over a config descriptor and layer descriptors; returns its descriptor.
    pub fn manifest(&self, config: Value, layers: Vec<Value>) -> Value {
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers});
        self.json_blob(OCI_MANIFEST, &m)
    }

    /// An image index over `(manifest descriptor, architecture)`; returns its descriptor.
    pub fn index(&self, entries: &[(&Value, &str)]) -> Value {
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(d, arch)| {
                let mut d = (*d).clone();
                d["platform"] = json!({"architecture": arch, "os": "linux"});
                d
            })
            .collect();
        self.json_blob(
            OCI_INDEX,
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
        )
    }

    /// Adds `desc` to index.json under `tag`.
    pub fn tag(&self, desc: &Value, tag: &str) {
        let mut entries = self.entries();
        let mut d = desc.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        entries.push(d);
        self.write_index(&entries);
    }

    pub fn entries(&self) -> Vec<Value> {
        let index: Value =
            serde_json::from_slice(&std::fs::read(self.path().join("index.json")).unwrap())
                .unwrap();
        index["manifests"].as_array().unwrap().clone()
    }

    pub fn write_index(&self, entries: &[Value]) {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        std::fs::write(
            self.path().join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    pub fn blob_path(&self, desc: &Value) -> PathBuf {
        let digest = desc["digest"].as_str().unwrap();
        self.path()
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    }
}

/// The directory of the test images, built (or found in the cache) by `tests/images/build.sh`
/// once per test binary.
pub fn test_images() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(build_test_images).clone()
}

fn build_test_images() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/images/build.sh");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed; run it by hand to build the test images (install its tools with scripts/deps.sh):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build.sh printed no directory"),
    )
}
