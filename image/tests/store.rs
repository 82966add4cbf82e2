//! The image store on its own: names, pins against sweeps, resumable blob writes, refused
//! mismatches, and concurrent name updates.

use serde_json::json;
use skiff_image::store::{self, Store, StoreError};
use skiff_image::Digest;

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Adds a one-layer image named `name`; returns the manifest digest.
fn add_image(store: &Store, name: &str, layer: &[u8]) -> Digest {
    let layer_digest = store.put_blob(layer).unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    }))
    .unwrap();
    let config_digest = store.put_blob(&config).unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": LAYER, "digest": layer_digest.to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let digest = store.put_blob(&manifest).unwrap();
    store
        .set_name(store::entry(name, MANIFEST, &digest, manifest.len() as u64))
        .unwrap();
    digest
}

fn blob_count(store: &Store) -> usize {
    std::fs::read_dir(store.dir().join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn a_running_image_is_pinned_and_its_blobs_survive_a_sweep() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let digest = add_image(&store, "docker.io/local/x:1", b"layer bytes");
    let image = store.resolve("local/x:1").unwrap();
    assert_eq!(image.manifest_digest, digest.to_string());
    assert_eq!(image.config.cmd, ["/bin/sh"]);
    assert!(image.layers[0].path.is_file());
    assert!(store.is_pinned(digest.as_str()).unwrap());

    store.remove_names(|_| true).unwrap();
    assert_eq!(store.sweep().unwrap().blobs, 0, "a pinned image lost blobs");
    assert_eq!(blob_count(&store), 3);
    drop(image);
    assert!(!store.is_pinned(digest.as_str()).unwrap());
    assert_eq!(store.sweep().unwrap().blobs, 3);
    assert!(matches!(
        store.resolve("local/x:1"),
        Err(StoreError::NoSuchImage(_))
    ));
}

#[test]
fn image_ids_find_images() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    add_image(&store, "docker.io/library/a:latest", b"a");
    let entry = store.find("a").unwrap().unwrap();
    let id = store.summary(&entry).unwrap().id;
    let short = &id["sha256:".len().."sha256:".len() + 12];
    assert_eq!(store.find(short).unwrap().unwrap().digest, entry.digest);
    assert!(store.find("0000000000").unwrap().is_none());
}

#[test]
fn a_cut_blob_write_resumes_and_a_wrong_one_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let bytes = vec![42u8; 1 << 20];
    let digest = Digest::of(&bytes);
    let size = bytes.len() as u64;
    let mut w = store.blob_writer(&digest, size, "test").unwrap().unwrap();
    w.write(&bytes[..300_000]).unwrap();
    drop(w); // the connection was cut
    let mut w = store.blob_writer(&digest, size, "test").unwrap().unwrap();
    assert_eq!(w.offset(), 300_000);
    w.write(&bytes[300_000..]).unwrap();
    assert!(
        w.write(b"x").is_err(),
        "bytes beyond the size were accepted"
    );
    w.finish().unwrap();
    assert!(store.has_blob(&digest, size));
    assert!(store.blob_writer(&digest, size, "test").unwrap().is_none());

    let other = Digest::of(b"expected");
    let mut w = store.blob_writer(&other, 8, "test").unwrap().unwrap();
    w.write(b"Expected").unwrap();
    assert!(matches!(w.finish(), Err(StoreError::DigestMismatch { .. })));
    assert!(!store.has_blob(&other, 8));
    assert_eq!(
        std::fs::read_dir(store.dir().join("tmp")).unwrap().count(),
        0,
        "the refused partial file stayed"
    );
}

#[test]
fn concurrent_name_updates_are_all_kept() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    std::thread::scope(|s| {
        for i in 0..8 {
            let store = store.clone();
            s.spawn(move || add_image(&store, &format!("docker.io/local/n{i}:latest"), b"same"));
        }
    });
    assert_eq!(store.entries().unwrap().len(), 8);
    assert_eq!(blob_count(&store), 3, "one copy of each blob");
}
