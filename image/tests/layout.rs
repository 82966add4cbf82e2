//! Opening OCI image layouts written by the tests: selection by tag, digest and platform,
//! media types, and verification of every blob.

mod common;

use common::*;
use serde_json::json;
use skiff_image::{open, Compression, ImageError};

fn busybox_like(layout: &TestLayout) -> serde_json::Value {
    layout.image(
        json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/w", "User": "app"}),
        &[
            (TAR_GZIP, b"layer one"),
            (TAR, b"layer two"),
            (TAR_ZSTD, b"layer three"),
        ],
    )
}

#[test]
fn opens_a_tagged_image_with_config_and_layers() {
    let l = TestLayout::new();
    let m = busybox_like(&l);
    l.tag(&m, "v1");
    let img = open(&l.reference("v1")).unwrap();
    assert_eq!(img.manifest_digest, m["digest"].as_str().unwrap());
    assert_eq!(img.config.cmd, ["/bin/sh"]);
    assert!(img.config.entrypoint.is_empty());
    assert_eq!(img.config.env, ["PATH=/bin"]);
    assert_eq!(
        (img.config.working_dir.as_str(), img.config.user.as_str()),
        ("/w", "app")
    );
    assert_eq!(
        (img.config.os.as_str(), img.config.architecture.as_str()),
        ("linux", "amd64")
    );
    let compressions: Vec<Compression> = img.layers.iter().map(|l| l.compression).collect();
    assert_eq!(
        compressions,
        [Compression::Gzip, Compression::None, Compression::Zstd]
    );
    assert_eq!(std::fs::read(&img.layers[1].path).unwrap(), b"layer two");
    assert_eq!(img.layers[1].size, 9);
    assert_eq!(img.layers[0].media_type, TAR_GZIP);
    assert_eq!(img.reference, l.reference("v1"));
}

#[test]
fn default_is_the_only_image_else_latest() {
    let l = TestLayout::new();
    let only = l.image(json!({"Cmd": ["only"]}), &[]);
    l.tag(&only, "whatever");
    let r = format!("oci:{}", l.path().display());
    assert_eq!(open(&r).unwrap().config.cmd, ["only"]);

    let latest = l.image(json!({"Cmd": ["latest"]}), &[]);
    l.tag(&latest, "latest");
    assert_eq!(open(&r).unwrap().config.cmd, ["latest"]);
}

#[test]
fn several_images_without_latest_need_a_tag() {
    let l = TestLayout::new();
    l.tag(&l.image(json!({"Cmd": ["a"]}), &[]), "a");
    l.tag(&l.image(json!({"Cmd": ["b"]}), &[]), "b");
    let err = open(&format!("oci:{}", l.path().display())).unwrap_err();
    assert!(
        matches!(err, ImageError::Ambiguous { count: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("tags: a, b"), "{err}");
}

#[test]
fn missing_tag_names_the_tags_there_are() {
    let l = TestLayout::new();
    l.tag(&l.image(json!({}), &[]), "a");
    l.tag(&l.image(json!({}), &[]), "b");
    let err = open(&l.reference("foo")).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no image tagged \"foo\" in {0} (tags: a, b); name one as oci:{0}:TAG",
            l.path().display()
        )
    );
}

#[test]
fn selects_by_digest() {
    let l = TestLayout::new();
    let a = l.image(json!({"Cmd": ["a"]}), &[]);
    let b = l.image(json!({"Cmd": ["b"]}), &[]);
    l.tag(&a, "a");
    l.tag(&b, "b");
    let r = format!(
        "oci:{}@{}",
        l.path().display(),
        b["digest"].as_str().unwrap()
    );
    assert_eq!(open(&r).unwrap().config.cmd, ["b"]);
    let absent = format!("oci:{}@sha256:{}", l.path().display(), "0".repeat(64));
    assert!(matches!(
        open(&absent).unwrap_err(),
        ImageError::DigestNotFound { .. }
    ));
}

#[test]
fn an_index_of_arm64_and_amd64_picks_amd64() {
    let l = TestLayout::new();
    let amd = l.image(json!({"Cmd": ["amd64"]}), &[(TAR, b"x")]);
    let arm_config = l.json_blob(OCI_CONFIG, &json!({"architecture": "arm64", "os": "linux"}));
    let arm = l.manifest(arm_config, vec![]);
    let index = l.index(&[(&arm, "arm64"), (&amd, "amd64")]);
    l.tag(&index, "multi");
    let img = open(&l.reference("multi")).unwrap();
    assert_eq!(img.config.cmd, ["amd64"]);
    assert_eq!(img.manifest_digest, amd["digest"].as_str().unwrap());

    // the same index nested in another, and index.json entries without a media type
    let outer = l.index(&[(&index, "amd64")]);
    let mut untyped = outer.clone();
    untyped.as_object_mut().unwrap().remove("mediaType");
    l.tag(&untyped, "nested");
    assert_eq!(open(&l.reference("nested")).unwrap().config.cmd, ["amd64"]);
}

#[test]
fn an_index_without_amd64_lists_its_platforms() {
    let l = TestLayout::new();
    let m = l.image(json!({}), &[]);
    l.tag(&l.index(&[(&m, "arm64"), (&m, "s390x")]), "x");
    let err = open(&l.reference("x")).unwrap_err();
    assert!(matches!(err, ImageError::NoPlatform { .. }), "{err}");
    assert!(
        err.to_string().contains("linux/arm64, linux/s390x"),
        "{err}"
    );
}

#[test]
fn an_image_for_another_platform_is_refused() {
    let l = TestLayout::new();
    let config = l.json_blob(OCI_CONFIG, &json!({"architecture": "arm64", "os": "linux"}));
    l.tag(&l.manifest(config, vec![]), "arm");
    let err = open(&l.reference("arm")).unwrap_err();
    assert!(matches!(err, ImageError::WrongPlatform { .. }), "{err}");
}

#[test]
fn indexes_nested_too_deep_are_refused() {
    let l = TestLayout::new();
    let mut desc = l.image(json!({}), &[]);
    for _ in 0..6 {
        desc = l.index(&[(&desc, "amd64")]);
    }
    l.tag(&desc, "deep");
    assert!(matches!(
        open(&l.reference("deep")).unwrap_err(),
        ImageError::TooDeep { .. }
    ));
}

#[test]
fn docker_schema2_media_types() {
    let l = TestLayout::new();
    let layer = l.blob(
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        b"docker layer",
    );
    let config = l.json_blob(
        "application/vnd.docker.container.image.v1+json",
        &json!({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/e"], "Cmd": null, "Env": null}}),
    );
    let manifest_type = "application/vnd.docker.distribution.manifest.v2+json";
    let m = l.json_blob(
        manifest_type,
        &json!({"schemaVersion": 2, "mediaType": manifest_type, "config": config, "layers": [layer]}),
    );
    let list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    let mut entry = m.clone();
    entry["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let list = l.json_blob(
        list_type,
        &json!({"schemaVersion": 2, "mediaType": list_type, "manifests": [entry]}),
    );
    l.tag(&list, "docker");
    let img = open(&l.reference("docker")).unwrap();
    assert_eq!(img.config.entrypoint, ["/e"]);
    assert!(img.config.cmd.is_empty() && img.config.env.is_empty());
    assert_eq!(img.layers[0].compression, Compression::Gzip);
}

#[test]
fn unsupported_and_foreign_layers_are_refused() {
    for (media_type, foreign) in [
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            true,
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            true,
        ),
        ("application/vnd.oci.image.layer.v1.tar+bzip2", false),
        ("application/vnd.cncf.helm.chart.content.v1.tar+gzip", false),
    ] {
        let l = TestLayout::new();
        l.tag(&l.image(json!({}), &[(media_type, b"x")]), "t");
        let err = open(&l.reference("t")).unwrap_err();
        match err {
            ImageError::ForeignLayer { .. } => assert!(foreign, "{media_type}: {err}"),
            ImageError::UnsupportedMediaType { what: "layer", .. } => {
                assert!(!foreign, "{media_type}: {err}")
            }
            other => panic!("{media_type}: {other}"),
        }
    }
}

#[test]
fn a_non_image_config_is_refused() {
    let l = TestLayout::new();
    let config = l.json_blob("application/vnd.cncf.helm.config.v1+json", &json!({}));
    l.tag(&l.manifest(config, vec![]), "chart");
    let err = open(&l.reference("chart")).unwrap_err();
    assert!(
        matches!(err, ImageError::UnsupportedMediaType { what: "config", .. }),
        "{err}"
    );
}

#[test]
fn a_corrupt_layer_is_detected_where_its_bytes_are_read() {
    let l = TestLayout::new();
    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "f", &b"good"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let mut evil = tar.clone();
    evil[512..516].copy_from_slice(b"evil"); // same size, other bytes
    let m = l.image(json!({}), &[(TAR, &tar)]);
    l.tag(&m, "t");
    let path = open(&l.reference("t")).unwrap().layers[0].path.clone();
    std::fs::write(&path, &evil).unwrap();
    // opening checks sizes only: a run whose disk is cached reads no layer
    let image = open(&l.reference("t")).unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = skiff_image::Store::open(store_dir.path()).unwrap();
    let err = store.image_disk(&image, &|_| {}).unwrap_err().to_string();
    assert!(
        err.contains("does not match its digest: the image is corrupt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(store_dir.path().join("images/disks")).map_or(0, |d| d.count()),
        0,
        "a disk of corrupt bytes was kept"
    );
}

#[test]
fn a_layer_of_the_wrong_size_is_detected() {
    let l = TestLayout::new();
    l.tag(&l.image(json!({}), &[(TAR, b"good bytes")]), "t");
    let path = open(&l.reference("t")).unwrap().layers[0].path.clone();
    std::fs::write(&path, b"good bytes and more").unwrap();
    let err = open(&l.reference("t")).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::SizeMismatch {
                expected: 10,
                actual: 19,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_descriptor_with_the_wrong_size_is_detected() {
    let l = TestLayout::new();
    let mut m = l.image(json!({}), &[]);
    m["size"] = json!(m["size"].as_u64().unwrap() - 1);
    l.tag(&m, "t");
    assert!(matches!(
        open(&l.reference("t")).unwrap_err(),
        ImageError::SizeMismatch { .. }
    ));
}

#[test]
fn corrupt_manifest_and_config_are_detected() {
    let l = TestLayout::new();
    let m = l.image(json!({}), &[]);
    l.tag(&m, "t");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.blob_path(&m)).unwrap()).unwrap();
    let config_path = l.blob_path(&manifest["config"]);
    let mut bytes = std::fs::read(&config_path).unwrap();
    bytes[0] = b' ';
    std::fs::write(&config_path, &bytes).unwrap();
    assert!(matches!(
        open(&l.reference("t")).unwrap_err(),
        ImageError::DigestMismatch { .. }
    ));

    let mut bytes = std::fs::read(l.blob_path(&m)).unwrap();
    bytes[0] = b' ';
    std::fs::write(l.blob_path(&m), &bytes).unwrap();
    assert!(matches!(
        open(&l.reference("t")).unwrap_err(),
        ImageError::DigestMismatch { .. }
    ));
}

#[test]
fn a_missing_blob_is_reported() {
    let l = TestLayout::new();
    let m = l.image(json!({}), &[(TAR, b"x")]);
    l.tag(&m, "t");
    let path = open(&l.reference("t")).unwrap().layers[0].path.clone();
    std::fs::remove_file(path).unwrap();
    let err = open(&l.reference("t")).unwrap_err();
    assert!(matches!(err, ImageError::MissingBlob { .. }), "{err}");
}

#[test]
fn hostile_digests_never_become_paths() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "{}").unwrap();
    let escape = format!(
        "sha256:../../../../../../..{}/secret",
        outside.path().display()
    );
    for digest in [
        escape.as_str(),
        "sha256:/etc/passwd",
        "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "",
    ] {
        // as the index.json entry
        let l = TestLayout::new();
        l.tag(&json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": 2}), "t");
        let err = open(&l.reference("t")).unwrap_err();
        assert!(matches!(err, ImageError::BadDigest { .. }), "{digest}: {err}");

        // as a layer of a valid manifest
        let l = TestLayout::new();
        let config = l.json_blob(OCI_CONFIG, &json!({"architecture": "amd64", "os": "linux"}));
        let layer = json!({"mediaType": TAR, "digest": digest, "size": 2});
        l.tag(&l.manifest(config, vec![layer]), "t");
        let err = open(&l.reference("t")).unwrap_err();
        assert!(matches!(err, ImageError::BadDigest { .. }), "{digest}: {err}");
    }
}

#[test]
fn oversized_json_is_refused_before_reading() {
    let l = TestLayout::new();
    let m = l.image(json!({}), &[]);
    let mut big = m.clone();
    big["size"] = json!(1u64 << 40);
    l.tag(&big, "t");
    let err = open(&l.reference("t")).unwrap_err();
    assert!(
        matches!(err, ImageError::TooLarge { limit, .. } if limit == 4 << 20),
        "{err}"
    );

    let l = TestLayout::new();
    std::fs::write(l.path().join("index.json"), vec![b' '; (4 << 20) + 1]).unwrap();
    assert!(matches!(
        open(&l.reference("t")).unwrap_err(),
        ImageError::TooLarge { .. }
    ));
}

#[test]
fn layer_count_must_match_diff_ids() {
    let l = TestLayout::new();
    let layer = l.blob(TAR, b"x");
    let config = l.json_blob(
        OCI_CONFIG,
        &json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}),
    );
    l.tag(&l.manifest(config, vec![layer]), "t");
    let err = open(&l.reference("t")).unwrap_err();
    assert!(err.to_string().contains("0 diff_ids for 1 layers"), "{err}");
}

#[test]
fn not_a_layout() {
    let missing = open("oci:/nonexistent/skiff/image").unwrap_err();
    assert_eq!(
        missing.to_string(),
        "image path /nonexistent/skiff/image does not exist"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = open(&format!("oci:{}", empty.path().display())).unwrap_err();
    assert!(matches!(err, ImageError::NotALayout { .. }), "{err}");
    assert!(err.to_string().contains("no oci-layout file"), "{err}");

    let l = TestLayout::new();
    std::fs::write(l.path().join("index.json"), b"{not json").unwrap();
    let err = open(&l.reference("t")).unwrap_err();
    assert!(matches!(err, ImageError::Invalid { .. }), "{err}");

    let l = TestLayout::new();
    std::fs::write(
        l.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    assert!(matches!(
        open(&l.reference("t")).unwrap_err(),
        ImageError::NotALayout { .. }
    ));
}

#[test]
fn a_fifo_in_place_of_a_layout_file_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let fifo = dir.path().join("index.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let arg = format!("oci:{}", dir.path().display());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(
            skiff_image::open(&arg)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("opening a layout whose index.json is a FIFO must not block");
    let err = r.unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
}
