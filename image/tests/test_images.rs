//! The real test images of `tests/images/build.sh` (built on first use, then cached): layouts,
//! index platform selection, zstd layers and oci-archives as umoci and skopeo write them.

mod common;

use common::test_images;
use skiff_image::{merge_with, open, Compression, ImageError, RunOverrides};

fn oci(name_tag: &str) -> String {
    let (name, tag) = name_tag.split_once(':').unwrap();
    format!("oci:{}/oci/{name}:{tag}", test_images().display())
}

fn no_host(_: &str) -> Option<String> {
    None
}

#[test]
fn busybox_latest() {
    let img = open(&oci("busybox:latest")).unwrap();
    assert_eq!(img.config.cmd, ["/bin/sh"]);
    assert!(img.config.entrypoint.is_empty());
    assert_eq!(
        img.config.env,
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    );
    assert_eq!(img.config.working_dir, "/");
    assert_eq!(img.layers.len(), 1);
    assert_eq!(img.layers[0].compression, Compression::Gzip);
    assert!(
        img.layers[0].size > 500_000,
        "busybox layer is only {} bytes",
        img.layers[0].size
    );
}

#[test]
fn default_selection_picks_latest() {
    let dir = test_images().join("oci/busybox");
    let default = open(&format!("oci:{}", dir.display())).unwrap();
    assert_eq!(
        default.manifest_digest,
        open(&oci("busybox:latest")).unwrap().manifest_digest
    );
}

#[test]
fn busybox_entry_follows_docker_rules() {
    let img = open(&oci("busybox:entry")).unwrap();
    let run = |o: RunOverrides| merge_with(&img.config, &o, &no_host).unwrap().argv;
    assert_eq!(
        run(RunOverrides::default()),
        ["/bin/echo", "from-entrypoint", "default-arg"]
    );
    let args = RunOverrides {
        command: vec!["x".into()],
        ..RunOverrides::default()
    };
    assert_eq!(run(args), ["/bin/echo", "from-entrypoint", "x"]);
    let ep = RunOverrides {
        entrypoint: Some("/bin/true".into()),
        ..RunOverrides::default()
    };
    assert_eq!(run(ep), ["/bin/true"]);
}

#[test]
fn busybox_user() {
    let img = open(&oci("busybox:user")).unwrap();
    let p = merge_with(&img.config, &RunOverrides::default(), &no_host).unwrap();
    assert_eq!((p.user.as_str(), p.cwd.as_str()), ("app", "/tmp"));
}

#[test]
fn three_layer_images() {
    for name in ["busybox:3layer", "debian:3layer"] {
        let img = open(&oci(name)).unwrap();
        assert_eq!(img.layers.len(), 3, "{name}");
        assert!(img.layers.iter().all(|l| l.path.is_file()), "{name}");
    }
}

#[test]
fn zstd_layers() {
    let img = open(&oci("busybox:zstd")).unwrap();
    assert_eq!(img.layers[0].compression, Compression::Zstd);
    assert_eq!(
        img.layers[0].media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
}

#[test]
fn multi_platform_index_resolves_to_amd64() {
    let multi = open(&oci("busybox:multi")).unwrap();
    let latest = open(&oci("busybox:latest")).unwrap();
    assert_eq!(multi.manifest_digest, latest.manifest_digest);
    let err = open(&oci("busybox:arm64-fake")).unwrap_err();
    assert!(matches!(err, ImageError::WrongPlatform { .. }), "{err}");
}

#[test]
fn oci_archives() {
    let dir = test_images().join("archives");
    for (file, layers) in [
        ("busybox-3layer.oci.tar", 3),
        ("busybox-entry.oci.tar", 1),
        ("debian-3layer.oci.tar", 3),
    ] {
        let path = dir.join(file);
        let img = open(&format!("oci-archive:{}", path.display())).unwrap();
        assert_eq!(img.layers.len(), layers, "{file}");
        let tag = file.split(['-', '.']).nth(1).unwrap();
        let tagged = open(&format!("oci-archive:{}:{tag}", path.display())).unwrap();
        assert_eq!(tagged.manifest_digest, img.manifest_digest, "{file}");
    }
}

#[test]
fn a_docker_archive_is_not_an_oci_archive() {
    let path = test_images().join("archives/busybox-latest.docker.tar");
    let err = open(&format!("oci-archive:{}", path.display())).unwrap_err();
    assert!(matches!(err, ImageError::DockerArchive(_)), "{err}");
    let expected = format!("{} is a docker-archive", path.display());
    assert!(err.to_string().starts_with(&expected), "{err}");
}
