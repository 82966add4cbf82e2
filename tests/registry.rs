//! `skiff pull` and the image store against a real registry: `docker-registry` (Debian's
//! distribution 2.8) started on a free loopback port with its own storage, open or with htpasswd
//! basic auth, the test images pushed with skopeo. A relay between skiff and the registry counts
//! requests and cuts a download on demand; a small HTTP server serves broken answers.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use skiff_tests::{
    assert_code, assert_skiff_error, free_port, images, run_with_deadline, sha256_hex, skiff_bin,
    stderr, stdout,
};
use tempfile::TempDir;

const DEADLINE: Duration = Duration::from_secs(240);

/// A `docker-registry` process with its own storage; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Registry {
    fn open() -> Registry {
        Registry::start(None)
    }

    fn with_htpasswd(user: &str, password: &str) -> Registry {
        Registry::start(Some((user, password)))
    }

    fn start(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) is needed: run scripts/deps.sh");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            fs::write(&file, &out.stdout).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                file.display()
            );
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is needed: run scripts/deps.sh");
        let registry = Registry {
            child,
            port,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(15);
        while http_status(port, "/v2/").is_none() {
            assert!(
                Instant::now() < end,
                "docker-registry did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies `oci/<layout_tag>` of the test images to `<host>/<dest>` (`--all` for indexes).
    fn push(&self, layout_tag: &str, dest: &str, creds: Option<&str>) {
        let creds = creds.map(|c| format!("--dest-creds={c}"));
        self.push_with(layout_tag, dest, creds.as_slice());
    }

    /// [`Registry::push`] with more skopeo flags.
    fn push_with(&self, layout_tag: &str, dest: &str, flags: &[String]) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--all", "--dest-tls-verify=false"]);
        let out = cmd
            .args(flags)
            .arg(format!("oci:{}/oci/{layout_tag}", images().display()))
            .arg(format!("docker://{}/{dest}", self.host()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of `GET path`, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// skiff's cache (kernel, initramfs) as the real user has it, since tests give skiff another
/// home.
fn cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("SKIFF_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("skiff");
    }
    PathBuf::from(var("HOME").unwrap_or_else(|| "/".into())).join(".cache/skiff")
}

/// A private state root and home for one skiff user.
struct User {
    root: TempDir,
    home: TempDir,
}

impl User {
    fn new() -> User {
        User {
            root: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(skiff_bin());
        c.args(args)
            .env("SKIFF_CACHE", cache_dir())
            .env("SKIFF_ROOT", root)
            .env("HOME", self.home.path())
            .env_remove("DOCKER_CONFIG")
            .env_remove("XDG_DATA_HOME");
        c
    }

    fn skiff(&self, args: &[&str]) -> Output {
        self.skiff_in(self.root.path(), args, b"")
    }

    fn skiff_in(&self, root: &Path, args: &[&str], stdin: &[u8]) -> Output {
        run_with_deadline(self.cmd(root, args), stdin, DEADLINE).unwrap()
    }

    fn store(&self) -> PathBuf {
        self.root.path().join("images")
    }
}

#[track_caller]
fn ok(o: &Output) -> String {
    assert_code(o, 0);
    stdout(o)
}

/// The blobs (name and size) and the names of a store: what "unchanged" compares.
fn snapshot(store: &Path) -> (Vec<(String, u64)>, String) {
    let mut blobs: Vec<(String, u64)> = fs::read_dir(store.join("blobs/sha256"))
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let len = e.metadata().unwrap().len();
                    (e.file_name().to_string_lossy().into_owned(), len)
                })
                .collect()
        })
        .unwrap_or_default();
    blobs.sort();
    let index = fs::read_to_string(store.join("index.json")).unwrap_or_default();
    (blobs, index)
}

/// Files left in the store's scratch directory.
fn scratch(store: &Path) -> Vec<String> {
    fs::read_dir(store.join("tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A skiff error (exit 125, one line that says `what`) that left the store as it was.
#[track_caller]
fn refused(o: &Output, what: &str, store: &Path, before: &(Vec<(String, u64)>, String)) {
    assert_skiff_error(o, what);
    assert_eq!(&snapshot(store), before, "the store changed");
    assert_eq!(
        scratch(store),
        Vec::<String>::new(),
        "leftover partial files"
    );
}

fn inspect(user: &User, name: &str) -> Value {
    let out = ok(&user.skiff(&["image", "inspect", name]));
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// The digest line of `skiff pull`.
fn pulled_digest(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .expect("pull prints the digest")
        .to_owned()
}

/// The config digest of `oci/<name>:<tag>` in the test images.
fn layout_config_digest(name: &str, tag: &str) -> String {
    let manifest = layout_manifest_digest(name, tag);
    let path = images()
        .join("oci")
        .join(name)
        .join("blobs/sha256")
        .join(manifest.trim_start_matches("sha256:"));
    let manifest: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    manifest["config"]["digest"].as_str().unwrap().to_owned()
}

#[test]
fn pull_by_tag_then_by_digest() {
    let reg = Registry::open();
    reg.push("busybox:latest", "team/busybox:v1", None);
    let user = User::new();
    let name = format!("{}/team/busybox:v1", reg.host());
    let out = ok(&user.skiff(&["pull", &name]));
    let digest = pulled_digest(&out);
    let info = inspect(&user, &name);
    assert_eq!(info["Id"], layout_config_digest("busybox", "latest"));
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["RepoTags"], json!([name.clone()]));

    let by_digest = format!("{}/team/busybox@{digest}", reg.host());
    let other = User::new();
    let out = ok(&other.skiff(&["pull", &by_digest]));
    assert_eq!(pulled_digest(&out), digest);
    assert_eq!(inspect(&other, &by_digest)["Id"], info["Id"]);

    let list: Value =
        serde_json::from_str(&ok(&user.skiff(&["images", "--format", "json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        list[0]["Repository"],
        format!("{}/team/busybox", reg.host())
    );
    assert_eq!(list[0]["Tag"], "v1");
    let table = ok(&user.skiff(&["images"]));
    assert!(
        table.contains("team/busybox") && table.contains("v1"),
        "{table}"
    );
}

#[test]
fn multi_platform_index_picks_amd64_unless_told() {
    let reg = Registry::open();
    reg.push("busybox:multi", "busybox:multi", None);
    let user = User::new();
    let name = format!("{}/busybox:multi", reg.host());
    ok(&user.skiff(&["pull", &name]));
    let info = inspect(&user, &name);
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Id"], layout_config_digest("busybox", "latest"));
    assert_ne!(
        info["SourceDigest"], info["Manifest"],
        "the index digest is kept"
    );

    let arm = User::new();
    ok(&arm.skiff(&["pull", "--platform", "linux/arm64", &name]));
    assert_eq!(inspect(&arm, &name)["Architecture"], "arm64");

    let before = snapshot(&arm.store());
    let o = arm.skiff(&["pull", "--platform", "linux/s390x", &name]);
    refused(&o, "has no image for linux/s390x", &arm.store(), &before);
}

/// A relay from a loopback port to the registry that records each request head and can cut
/// the first blob answer longer than `cut_after` bytes.
struct Relay {
    port: u16,
    state: Arc<RelayState>,
}

/// What a relay's connections share.
#[derive(Default)]
struct RelayState {
    heads: Mutex<Vec<String>>,
    /// Blob answers cut so far.
    cuts: AtomicUsize,
    /// Cut the next blob answer after this many bytes.
    armed: Mutex<Option<usize>>,
    /// Pass blob answers on slowly (about 16 MB/s).
    slow: std::sync::atomic::AtomicBool,
}

impl Relay {
    fn start(upstream: u16, cut_after: Option<usize>) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(RelayState {
            armed: Mutex::new(cut_after),
            ..RelayState::default()
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let state = shared.clone();
                std::thread::spawn(move || relay(client, server, state));
            }
        });
        Relay { port, state }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn blob_gets(&self) -> usize {
        let heads = self.state.heads.lock().unwrap();
        heads
            .iter()
            .filter(|h| h.starts_with("GET ") && h.contains("/blobs/"))
            .count()
    }

    fn ranged_gets(&self) -> usize {
        let heads = self.state.heads.lock().unwrap();
        heads
            .iter()
            .filter(|h| h.to_ascii_lowercase().contains("\r\nrange: bytes="))
            .count()
    }
}

fn relay(client: TcpStream, server: TcpStream, state: Arc<RelayState>) {
    let (tx, rx) = mpsc::channel::<String>();
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let requests = state.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending = Vec::new();
        loop {
            let n = match c_in.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&pending[..end + 4]).into_owned();
                pending.drain(..end + 4);
                requests.heads.lock().unwrap().push(head.clone());
                let _ = tx.send(head);
            }
            if s_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    let mut buf = vec![0u8; 16 * 1024];
    let mut limit: Option<usize> = None;
    let mut slow = false;
    let mut sent = 0usize;
    loop {
        let n = match s_in.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while let Ok(head) = rx.try_recv() {
            sent = 0;
            limit = None;
            slow = false;
            if head.starts_with("GET ") && head.contains("/blobs/") {
                limit = *state.armed.lock().unwrap();
                slow = state.slow.load(Ordering::SeqCst);
            }
        }
        if let Some(max) = limit {
            if sent + n > max {
                let _ = c_out.write_all(&buf[..max - sent]);
                *state.armed.lock().unwrap() = None;
                state.cuts.fetch_add(1, Ordering::SeqCst);
                let _ = c_out.shutdown(Shutdown::Both);
                let _ = s_in.shutdown(Shutdown::Both);
                return;
            }
        }
        sent += n;
        if slow {
            std::thread::sleep(Duration::from_millis(1));
        }
        if c_out.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = c_out.shutdown(Shutdown::Write);
}

#[test]
fn second_pull_downloads_nothing() {
    let reg = Registry::open();
    reg.push("busybox:latest", "busybox:latest", None);
    reg.push("busybox:entry", "busybox:entry", None);
    let relay = Relay::start(reg.port, None);
    let user = User::new();
    let name = format!("{}/busybox:latest", relay.host());
    ok(&user.skiff(&["pull", &name]));
    let first = relay.blob_gets();
    assert_eq!(first, 2, "config and one layer");
    let before = snapshot(&user.store());
    let out = ok(&user.skiff(&["pull", &name]));
    assert_eq!(relay.blob_gets(), first, "the second pull fetched blobs");
    assert!(out.contains("0 layer(s) downloaded"), "{out}");
    assert_eq!(snapshot(&user.store()), before);
    // a second image with the same layer fetches only its config
    ok(&user.skiff(&["pull", &format!("{}/busybox:entry", relay.host())]));
    assert_eq!(relay.blob_gets(), first + 1);
}

#[test]
fn interrupted_pull_resumes_with_a_range_request() {
    let reg = Registry::open();
    reg.push("busybox:latest", "busybox:latest", None);
    let relay = Relay::start(reg.port, Some(300_000));
    let user = User::new();
    let name = format!("{}/busybox:latest", relay.host());
    ok(&user.skiff(&["pull", &name]));
    assert_eq!(
        relay.state.cuts.load(Ordering::SeqCst),
        1,
        "the download was not cut"
    );
    assert!(relay.ranged_gets() >= 1, "no Range request after the cut");
    assert_eq!(
        inspect(&user, &name)["Id"],
        layout_config_digest("busybox", "latest")
    );
    assert!(scratch(&user.store()).is_empty());
}

#[test]
fn a_pull_killed_mid_layer_leaves_no_trace_and_the_next_one_resumes() {
    let reg = Registry::open();
    reg.push("debian:latest", "debian:latest", None);
    let relay = Relay::start(reg.port, None);
    relay.state.slow.store(true, Ordering::SeqCst);
    let user = User::new();
    ok(&user.skiff(&["images"]));
    let before = snapshot(&user.store());
    let name = format!("{}/debian:latest", relay.host());
    let mut child = user
        .cmd(user.root.path(), &["pull", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let partial_len = || -> u64 {
        fs::read_dir(user.store().join("tmp"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.metadata().map_or(0, |m| m.len()))
                    .sum()
            })
            .unwrap_or(0)
    };
    while partial_len() < 4 << 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before it was killed"
        );
        assert!(Instant::now() < end, "the pull made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let held = partial_len();
    assert_eq!(
        snapshot(&user.store()),
        before,
        "a killed pull changed the store"
    );

    relay.state.slow.store(false, Ordering::SeqCst);
    ok(&user.skiff(&["pull", &name]));
    assert!(
        relay.ranged_gets() >= 1,
        "the second pull did not resume the {held} bytes held"
    );
    assert_eq!(
        inspect(&user, &name)["Id"],
        layout_config_digest("debian", "latest")
    );
    assert!(scratch(&user.store()).is_empty());
}

#[test]
fn concurrent_pulls_of_one_image_store_one_copy() {
    let reg = Registry::open();
    reg.push("debian:2layer", "debian:2layer", None);
    let user = User::new();
    let name = format!("{}/debian:2layer", reg.host());
    let a = user.cmd(user.root.path(), &["pull", &name]);
    let b = user.cmd(user.root.path(), &["pull", &name]);
    let ta = std::thread::spawn(move || run_with_deadline(a, b"", DEADLINE).unwrap());
    let tb = std::thread::spawn(move || run_with_deadline(b, b"", DEADLINE).unwrap());
    let (oa, ob) = (ta.join().unwrap(), tb.join().unwrap());
    ok(&oa);
    ok(&ob);
    let (blobs, index) = snapshot(&user.store());
    // manifest, config, two layers
    assert_eq!(blobs.len(), 4, "{blobs:?}");
    assert_eq!(
        index.matches("org.opencontainers.image.ref.name").count(),
        1
    );
    assert!(scratch(&user.store()).is_empty());
    let info = inspect(&user, &name);
    assert_eq!(info["Layers"], 2);
}

#[test]
fn rmi_and_prune_free_blobs() {
    let reg = Registry::open();
    reg.push("busybox:latest", "busybox:latest", None);
    reg.push("busybox:2layer", "busybox:2layer", None);
    let user = User::new();
    let latest = format!("{}/busybox:latest", reg.host());
    let two = format!("{}/busybox:2layer", reg.host());
    ok(&user.skiff(&["pull", &latest]));
    let (only_latest, _) = snapshot(&user.store());
    ok(&user.skiff(&["pull", &two]));
    ok(&user.skiff(&["tag", &two, "local/copy:1"]));
    let out = ok(&user.skiff(&["rmi", &two]));
    assert!(out.contains("Untagged:"), "{out}");
    // 2layer adds its manifest, config and second layer; the other name keeps them
    assert_eq!(snapshot(&user.store()).0.len(), only_latest.len() + 3);
    ok(&user.skiff(&["rmi", "local/copy:1"]));
    assert_eq!(
        snapshot(&user.store()).0,
        only_latest,
        "2layer's own blobs stay"
    );

    // a stray blob (as left by a killed load) goes with prune
    let stray = b"stray bytes";
    fs::write(
        user.store().join("blobs/sha256").join(sha256_hex(stray)),
        stray,
    )
    .unwrap();
    fs::write(user.store().join("tmp/leftover.partial"), b"x").unwrap();
    let out = ok(&user.skiff(&["image", "prune"]));
    assert!(out.contains("Deleted: 1 blob(s)"), "{out}");
    assert_eq!(snapshot(&user.store()).0, only_latest);
    assert!(scratch(&user.store()).is_empty());

    ok(&user.skiff(&["rmi", &latest]));
    assert!(snapshot(&user.store()).0.is_empty());

    let before = snapshot(&user.store());
    let o = user.skiff(&["rmi", "no/such:image"]);
    refused(
        &o,
        "no image no/such:image in the store",
        &user.store(),
        &before,
    );
}

#[test]
fn basic_auth_login_and_docker_config() {
    let reg = Registry::with_htpasswd("alice", "s3cret");
    reg.push("busybox:latest", "busybox:latest", Some("alice:s3cret"));
    let name = format!("{}/busybox:latest", reg.host());

    let user = User::new();
    ok(&user.skiff(&["images"]));
    let before = snapshot(&user.store());
    let o = user.skiff(&["pull", &name]);
    refused(&o, "log in with `skiff login`", &user.store(), &before);
    let o = user.skiff_in(
        user.root.path(),
        &["login", &reg.host(), "-u", "alice", "--password-stdin"],
        b"wrong\n",
    );
    refused(&o, "refused the credentials", &user.store(), &before);
    assert!(!user.root.path().join("auth.json").exists());
    ok(&user.skiff_in(
        user.root.path(),
        &["login", &reg.host(), "-u", "alice", "--password-stdin"],
        b"s3cret\n",
    ));
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(user.root.path().join("auth.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    ok(&user.skiff(&["pull", &name]));
    ok(&user.skiff(&["logout", &reg.host()]));

    // docker's config file
    let docker_user = User::new();
    let cfg = docker_user.home.path().join(".docker");
    fs::create_dir_all(&cfg).unwrap();
    let write_cfg = |pw: &str| {
        let auth = base64_encode(format!("alice:{pw}").as_bytes());
        fs::write(
            cfg.join("config.json"),
            json!({"auths": {reg.host(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
    };
    write_cfg("nope");
    ok(&docker_user.skiff(&["images"]));
    let before = snapshot(&docker_user.store());
    let o = docker_user.skiff(&["pull", &name]);
    refused(
        &o,
        "wrong user name or password",
        &docker_user.store(),
        &before,
    );
    write_cfg("s3cret");
    ok(&docker_user.skiff(&["pull", &name]));
}

fn base64_encode(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One canned answer of [`serve`].
struct Canned {
    path: String,
    content_type: &'static str,
    body: Vec<u8>,
    /// Content-Length to claim (the body's length when `None`).
    claim: Option<usize>,
}

/// A small HTTP server answering GET `/v2/` and the canned paths (404 otherwise).
fn serve(routes: Vec<Canned>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let routes = Arc::new(routes);
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let routes = routes.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    return;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (status, ctype, body, claim) = match routes.iter().find(|r| r.path == path) {
                    Some(r) => ("200 OK", r.content_type, r.body.clone(), r.claim),
                    None if path == "/v2/" => ("200 OK", "application/json", b"{}".to_vec(), None),
                    None => (
                        "404 Not Found",
                        "application/json",
                        b"{\"errors\":[{\"code\":\"NOT_FOUND\",\"message\":\"no\"}]}".to_vec(),
                        None,
                    ),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    claim.unwrap_or(body.len())
                );
                let _ = conn.write_all(&body);
            });
        }
    });
    port
}

fn blob_route(bytes: &[u8], digest_of: &[u8]) -> (Canned, Value) {
    let digest = format!("sha256:{}", sha256_hex(digest_of));
    (
        Canned {
            path: format!("/v2/bad/blobs/{digest}"),
            content_type: "application/octet-stream",
            body: bytes.to_vec(),
            claim: None,
        },
        json!({"digest": digest, "size": digest_of.len()}),
    )
}

fn manifest_route(
    reference: &str,
    content_type: &'static str,
    body: Vec<u8>,
    claim: Option<usize>,
) -> Canned {
    Canned {
        path: format!("/v2/bad/manifests/{reference}"),
        content_type,
        body,
        claim,
    }
}

#[test]
fn bad_input_is_one_line_exit_125_and_leaves_the_store_unchanged() {
    let reg = Registry::open();
    reg.push("busybox:latest", "busybox:latest", None);
    let user = User::new();
    ok(&user.skiff(&["pull", &format!("{}/busybox:latest", reg.host())]));
    let store = user.store();
    let before = snapshot(&store);

    let o = user.skiff(&["pull", &format!("{}/busybox:nope", reg.host())]);
    refused(&o, "not found in registry", &store, &before);
    let o = user.skiff(&["pull", &format!("127.0.0.1:{}/busybox:latest", free_port())]);
    refused(&o, "is unreachable", &store, &before);
    let o = user.skiff(&["rmi", "missing:image"]);
    refused(&o, "no image missing:image in the store", &store, &before);
    let o = user.skiff(&["run", "--pull", "never", "missing:image"]);
    refused(&o, "no image missing:image in the store", &store, &before);

    // a layer whose bytes do not match its digest
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}})).unwrap();
    let (config_route, config_desc) = blob_route(&config, &config);
    let good_layer = vec![7u8; 200_000];
    let mut evil_layer = good_layer.clone();
    evil_layer[100_000] = 8;
    let (layer_route, layer_desc) = blob_route(&evil_layer, &good_layer);
    let manifest = |layer_type: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_desc["digest"], "size": config_desc["size"]},
            "layers": [{"mediaType": layer_type, "digest": layer_desc["digest"], "size": layer_desc["size"]}],
        }))
        .unwrap()
    };
    let good = manifest("application/vnd.oci.image.layer.v1.tar+gzip");
    let oci = "application/vnd.oci.image.manifest.v1+json";
    let port = serve(vec![
        config_route,
        layer_route,
        manifest_route("evil", oci, good.clone(), None),
        manifest_route(
            "truncated",
            oci,
            good[..good.len() / 2].to_vec(),
            Some(good.len()),
        ),
        manifest_route("cut-json", oci, good[..good.len() / 2].to_vec(), None),
        manifest_route(
            "strange",
            "application/vnd.example.thing+json",
            b"{}".to_vec(),
            None,
        ),
        manifest_route(
            "layer-type",
            oci,
            manifest("application/vnd.example.layer"),
            None,
        ),
        manifest_route(
            "schema1",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            b"{}".to_vec(),
            None,
        ),
        manifest_route("huge", oci, vec![b' '; 5 << 20], None),
    ]);
    let bad = |r: &str| format!("127.0.0.1:{port}/bad:{r}");
    let o = user.skiff(&["pull", &bad("evil")]);
    refused(&o, "does not match its digest", &store, &before);
    let o = user.skiff(&["pull", &bad("truncated")]);
    refused(&o, "ended early", &store, &before);
    let o = user.skiff(&["pull", &bad("cut-json")]);
    refused(&o, "is not valid", &store, &before);
    let o = user.skiff(&["pull", &bad("strange")]);
    refused(&o, "application/vnd.example.thing+json", &store, &before);
    let o = user.skiff(&["pull", &bad("layer-type")]);
    refused(&o, "application/vnd.example.layer", &store, &before);
    let o = user.skiff(&["pull", &bad("schema1")]);
    refused(&o, "schema 1", &store, &before);
    let o = user.skiff(&["pull", &bad("huge")]);
    refused(&o, "more than the limit of 4194304", &store, &before);
}

/// A tmpfs mounted on a temporary directory; unmounted on drop.
struct Tmpfs(TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs needs root");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn disk_full_during_a_pull_leaves_the_store_unchanged() {
    let reg = Registry::open();
    reg.push("busybox:latest", "busybox:latest", None);
    let fs = Tmpfs::mount("512k");
    let user = User::new();
    let root = fs.0.path().to_owned();
    ok(&user.skiff_in(&root, &["images"], b""));
    let store = root.join("images");
    let before = snapshot(&store);
    let o = user.skiff_in(
        &root,
        &["pull", &format!("{}/busybox:latest", reg.host())],
        b"",
    );
    refused(&o, "No space left on device", &store, &before);
}

#[test]
fn run_pulls_a_named_image_and_runs_it() {
    let reg = Registry::open();
    reg.push("busybox:latest", "busybox:latest", None);
    let user = User::new();
    let name = format!("{}/busybox:latest", reg.host());
    let out = user.skiff(&["run", "--engine", "qemu", &name, "echo", "hi"]);
    assert_eq!(ok(&out), "hi\n");
    assert!(
        stderr(&out).contains("Unable to find image"),
        "{}",
        stderr(&out)
    );
    let blobs = snapshot(&user.store()).0;
    // a second run finds it in the store and pulls nothing
    let out = user.skiff(&[
        "run", "--engine", "qemu", "--pull", "never", &name, "echo", "again",
    ]);
    assert_eq!(ok(&out), "again\n");
    assert_eq!(snapshot(&user.store()).0, blobs);
}

fn archive_path(name: &str) -> String {
    images().join("archives").join(name).display().to_string()
}

/// The manifest digest `oci/<name>:<tag>` of the test images names.
fn layout_manifest_digest(name: &str, tag: &str) -> String {
    let dir = images().join("oci").join(name);
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn load_and_save_round_trip_with_equal_digests() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = |f: &str| out_dir.path().join(f).display().to_string();

    // docker-archive
    let a = User::new();
    let loaded = ok(&a.skiff(&["load", "-i", &archive_path("busybox-latest.docker.tar")]));
    assert_eq!(loaded, "Loaded image: docker.io/library/busybox:latest\n");
    let first = inspect(&a, "busybox");
    assert_eq!(first["Id"], layout_config_digest("busybox", "latest"));
    ok(&a.skiff(&["save", "-o", &out("a.docker.tar"), "busybox"]));
    let b = User::new();
    ok(&b.skiff(&["load", "-i", &out("a.docker.tar")]));
    let second = inspect(&b, "busybox:latest");
    assert_eq!(second["Id"], first["Id"]);
    assert_eq!(second["Manifest"], first["Manifest"]);
    ok(&b.skiff(&["save", "-o", &out("b.docker.tar"), "busybox"]));
    assert_eq!(
        fs::read(out("a.docker.tar")).unwrap(),
        fs::read(out("b.docker.tar")).unwrap()
    );
    let config = Command::new("skopeo")
        .args([
            "inspect",
            "--config",
            &format!("docker-archive:{}", out("a.docker.tar")),
        ])
        .output()
        .unwrap();
    assert!(
        config.status.success(),
        "skopeo cannot read skiff's docker-archive"
    );
    assert_eq!(sha256_hex(&config.stdout).len(), 64);

    // oci-archive
    let c = User::new();
    let loaded = ok(&c.skiff(&["load", "-i", &archive_path("busybox-3layer.oci.tar")]));
    assert_eq!(loaded, "Loaded image: localhost/busybox-3layer:3layer\n");
    let name = "localhost/busybox-3layer:3layer";
    let first = inspect(&c, name);
    assert_eq!(
        first["Manifest"],
        layout_manifest_digest("busybox", "3layer")
    );
    ok(&c.skiff(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        &out("c.oci.tar"),
        name,
    ]));
    let d = User::new();
    ok(&d.skiff(&["load", "-i", &out("c.oci.tar")]));
    let second = inspect(&d, name);
    assert_eq!(second["Manifest"], first["Manifest"]);
    assert_eq!(second["Id"], first["Id"]);
    let outside = Command::new("skopeo")
        .args(["inspect", &format!("oci-archive:{}", out("c.oci.tar"))])
        .output()
        .unwrap();
    let outside: Value =
        serde_json::from_slice(&outside.stdout).expect("skopeo reads skiff's oci-archive");
    assert_eq!(outside["Digest"], first["Manifest"]);

    // a truncated archive is refused and leaves the store as it was
    let bytes = fs::read(out("a.docker.tar")).unwrap();
    fs::write(out("cut.tar"), &bytes[..bytes.len() / 2]).unwrap();
    let e = User::new();
    ok(&e.skiff(&["images"]));
    let before = snapshot(&e.store());
    let o = e.skiff(&["load", "-i", &out("cut.tar")]);
    refused(&o, "cut.tar", &e.store(), &before);
    let o = e.skiff(&["save", "-o", &out("x.tar"), "no/such"]);
    refused(&o, "no image no/such in the store", &e.store(), &before);
    assert!(!out_dir.path().join("x.tar").exists());
}

#[test]
fn import_makes_a_one_layer_image_from_a_rootfs_tarball() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/hello"), b"hi\n").unwrap();
    let tar = dir.path().join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("gzip").arg("-k").arg(&tar).status().unwrap();
    assert!(st.success());
    let user = User::new();
    let id = ok(&user.skiff(&["import", tar.to_str().unwrap(), "local/rootfs:plain"]));
    let info = inspect(&user, "local/rootfs:plain");
    assert_eq!(info["Id"], id.trim());
    assert_eq!(info["Layers"], 1);
    assert_eq!(info["Architecture"], "amd64");
    let diff_id = format!("sha256:{}", sha256_hex(&fs::read(&tar).unwrap()));
    assert_eq!(info["RootFS"]["diff_ids"], json!([diff_id.clone()]));
    let gz = dir.path().join("rootfs.tar.gz");
    ok(&user.skiff(&["import", gz.to_str().unwrap(), "local/rootfs:gzip"]));
    assert_eq!(
        inspect(&user, "local/rootfs:gzip")["RootFS"]["diff_ids"],
        json!([diff_id])
    );
}

/// A token-auth front for the registry, the way Docker Hub works: a request without
/// `Authorization: Bearer <token>` gets a 401 with a Bearer challenge whose realm is this
/// server's `/token`, which hands out the token for the right basic credentials (or to anyone
/// when `user` is `None`). Authorized requests are forwarded to the registry, one per
/// connection.
fn token_front(
    upstream: u16,
    user: Option<(&'static str, &'static str)>,
) -> (u16, Arc<AtomicUsize>) {
    const TOKEN: &str = "t0ken-for-skiff";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tokens = Arc::new(AtomicUsize::new(0));
    let issued = tokens.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let issued = issued.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut lines = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    lines.push(line);
                }
                let Some(first) = lines.first().cloned() else {
                    return;
                };
                let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
                let header = |name: &str| {
                    lines.iter().find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let reply = |conn: &mut TcpStream, status: &str, extra: &str, body: &str| {
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                };
                if path.starts_with("/token?") {
                    let ok = match user {
                        None => true,
                        Some((u, p)) => {
                            header("authorization")
                                == Some(format!(
                                    "Basic {}",
                                    base64_encode(format!("{u}:{p}").as_bytes())
                                ))
                        }
                    };
                    if ok && path.contains("scope=repository%3Abusybox%3Apull") {
                        issued.fetch_add(1, Ordering::SeqCst);
                        reply(
                            &mut conn,
                            "200 OK",
                            "",
                            &format!("{{\"token\":\"{TOKEN}\"}}"),
                        );
                    } else {
                        reply(&mut conn, "401 Unauthorized", "", "{}");
                    }
                    return;
                }
                if header("authorization") != Some(format!("Bearer {TOKEN}")) {
                    let challenge = format!(
                        "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"skiff-test\",scope=\"repository:busybox:pull\"\r\n"
                    );
                    reply(
                        &mut conn,
                        "401 Unauthorized",
                        &challenge,
                        "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"token needed\"}]}",
                    );
                    return;
                }
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let mut head = first;
                for l in &lines[1..] {
                    let name = l.split(':').next().unwrap_or("").to_ascii_lowercase();
                    if name != "authorization" && name != "connection" {
                        head += l;
                    }
                }
                head += "Connection: close\r\n\r\n";
                if up.write_all(head.as_bytes()).is_ok() {
                    let _ = std::io::copy(&mut up, &mut conn);
                }
            });
        }
    });
    (port, tokens)
}

#[test]
fn bearer_token_challenges_are_met() {
    let reg = Registry::open();
    reg.push("busybox:latest", "busybox:latest", None);

    // anonymous token
    let (port, tokens) = token_front(reg.port, None);
    let user = User::new();
    let name = format!("127.0.0.1:{port}/busybox:latest");
    ok(&user.skiff(&["pull", &name]));
    assert!(tokens.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        inspect(&user, &name)["Id"],
        layout_config_digest("busybox", "latest")
    );

    // token for credentials only
    let (port, tokens) = token_front(reg.port, Some(("bob", "pw")));
    let host = format!("127.0.0.1:{port}");
    let name = format!("{host}/busybox:latest");
    let user = User::new();
    ok(&user.skiff(&["images"]));
    let before = snapshot(&user.store());
    let o = user.skiff(&["pull", &name]);
    refused(&o, "log in with `skiff login`", &user.store(), &before);
    assert_eq!(tokens.load(Ordering::SeqCst), 0);
    ok(&user.skiff_in(
        user.root.path(),
        &["login", &host, "-u", "bob", "--password-stdin"],
        b"pw\n",
    ));
    ok(&user.skiff(&["pull", &name]));
    assert!(
        tokens.load(Ordering::SeqCst) >= 2,
        "login and pull each got a token"
    );
}

#[test]
fn rmi_refuses_an_image_a_running_container_uses() {
    let reg = Registry::open();
    reg.push("busybox:latest", "busybox:latest", None);
    let user = User::new();
    let name = format!("{}/busybox:latest", reg.host());
    ok(&user.skiff(&["pull", &name]));
    let manifest = inspect(&user, &name)["Manifest"]
        .as_str()
        .unwrap()
        .to_owned();
    let pin = user
        .store()
        .join("locks")
        .join(format!("pin-{}", manifest.trim_start_matches("sha256:")));
    let run = user.cmd(
        user.root.path(),
        &[
            "run", "--engine", "qemu", "--pull", "never", &name, "sleep", "6",
        ],
    );
    let running = std::thread::spawn(move || run_with_deadline(run, b"", DEADLINE).unwrap());
    let end = Instant::now() + Duration::from_secs(30);
    while !pin.exists() {
        assert!(Instant::now() < end, "the run never pinned its image");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = snapshot(&user.store());
    let o = user.skiff(&["rmi", &name]);
    refused(&o, "is used by a running container", &user.store(), &before);
    let out = ok(&user.skiff(&["rmi", "-f", &name]));
    assert!(out.contains("Untagged:"), "{out}");
    assert_eq!(
        snapshot(&user.store()).0,
        before.0,
        "blobs of a running image were deleted"
    );
    ok(&running.join().unwrap());
    let out = ok(&user.skiff(&["image", "prune"]));
    assert!(out.contains("Deleted: 3 blob(s)"), "{out}");
}

#[test]
fn a_detached_container_keeps_its_image_in_use() {
    let reg = Registry::open();
    reg.push("busybox:latest", "busybox:latest", None);
    let user = User::new();
    let name = format!("{}/busybox:latest", reg.host());
    ok(&user.skiff(&["pull", &name]));
    let id = ok(&user.skiff(&[
        "run", "-d", "--engine", "qemu", "--memory", "128m", "--pull", "never", &name, "sleep",
        "60",
    ]));
    let before = snapshot(&user.store());
    let o = user.skiff(&["rmi", &name]);
    refused(&o, "is used by a running container", &user.store(), &before);
    ok(&user.skiff(&["rm", "-f", id.trim()]));
    let out = ok(&user.skiff(&["rmi", &name]));
    assert!(out.contains("Untagged:"), "{out}");
}

#[test]
fn docker_schema2_and_zstd_images_pull() {
    let reg = Registry::open();
    reg.push_with(
        "busybox:latest",
        "busybox:v2s2",
        &["--format=v2s2".to_owned()],
    );
    reg.push("busybox:zstd", "busybox:zstd", None);
    let user = User::new();
    let v2 = format!("{}/busybox:v2s2", reg.host());
    ok(&user.skiff(&["pull", &v2]));
    let index = fs::read_to_string(user.store().join("index.json")).unwrap();
    assert!(
        index.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{index}"
    );
    assert_eq!(inspect(&user, &v2)["Layers"], 1);

    let zstd = format!("{}/busybox:zstd", reg.host());
    ok(&user.skiff(&["pull", &zstd]));
    assert_eq!(
        inspect(&user, &zstd)["Id"],
        layout_config_digest("busybox", "zstd")
    );
    // the same config as busybox:latest, so one image ID for two manifests
    let ids = ok(&user.skiff(&["images", "-q"]));
    assert_eq!(ids.lines().count(), 1, "{ids}");
    let list: Value =
        serde_json::from_str(&ok(&user.skiff(&["images", "--format", "json"]))).unwrap();
    assert_ne!(list[0]["Manifest"], list[1]["Manifest"]);
}
