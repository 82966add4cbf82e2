//! Container state on disk: `<root>/containers/<id>/` holds `config.json` (written once at
//! creation), `state.json` (rewritten by the monitor), `container.log`, `monitor.log`, the
//! monitor's lock and its API socket. Names are symlinks `<root>/containers/.names/<name>` →
//! id, created atomically so two skiff processes never get the same name. Every JSON file is
//! written to a temporary file and renamed into place.
//!
//! A container is alive while its monitor holds `monitor.lock` (an exclusive `flock`); a
//! container whose state says running but whose lock is free lost its monitor (killed, crashed)
//! and is reported as exited with that reason.
//!
//! Files are written without waiting for the disk, which would cost milliseconds on the path of
//! every run: `config.json` is synced by the supervisor once the VM is booting
//! ([`Container::sync_config`]); `state.json` never is (a host crash ends every VM anyway, and
//! a state lost in one reads as exited).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use protocol::RunSpec;
use serde::{Deserialize, Serialize};

use crate::cli::EngineKind;

/// Largest state or config file read back.
const MAX_JSON: u64 = 4 << 20;

/// What a container was created with; never changes afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub id: String,
    pub name: String,
    /// The image as given on the command line.
    pub image: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub spec: RunSpec,
    /// `--read-only`: no writable layer.
    #[serde(default)]
    pub read_only: bool,
    pub engine: EngineKind,
    pub cpus: u8,
    pub memory_mib: u32,
    /// `--rm`: the monitor removes the container when it ends.
    pub auto_remove: bool,
    pub debug: bool,
    /// The manifest of a store image, which the container keeps in use (pinned) for its life.
    #[serde(default)]
    pub store_manifest: Option<String>,
    #[serde(default)]
    pub network: crate::network::NetworkConfig,
    /// `--stop-signal`: what `stop` sends first (default SIGTERM).
    #[serde(default)]
    pub stop_signal: Option<i32>,
    /// `--stop-timeout`: seconds `stop` waits before SIGKILL (default 10).
    #[serde(default)]
    pub stop_timeout: Option<u64>,
    /// The host directories the VM shares (`-v`, `--mount`).
    #[serde(default)]
    pub shares: Vec<crate::shares::HostShare>,
    /// The container's mounts, as `inspect` shows them.
    #[serde(default)]
    pub mounts: Vec<crate::shares::MountRecord>,
}

impl Config {
    /// The names of the volumes the container mounts.
    pub fn volumes(&self) -> impl Iterator<Item = &str> {
        self.mounts.iter().filter_map(|m| m.name.as_deref())
    }
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// The container's changing state, owned by its monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    pub monitor_pid: Option<u32>,
    /// The VM's directory of sockets: exec reaches guest-init through `<vm_dir>/vsock`.
    pub vm_dir: Option<PathBuf>,
    pub started: Option<String>,
    pub finished: Option<String>,
    /// docker's exit code: the process's code, 128 + signal, or 125–127 when it never ran.
    pub exit_code: Option<i32>,
    /// Why it ended when that was not the process's own doing.
    pub error: Option<String>,
}

impl State {
    pub fn created() -> State {
        State {
            status: Status::Created,
            monitor_pid: None,
            vm_dir: None,
            started: None,
            finished: None,
            exit_code: None,
            error: None,
        }
    }
}

/// skiff's container directory: `<root>/containers`.
pub fn containers_dir() -> PathBuf {
    image::Store::default_root().join("containers")
}

fn names_dir(root: &Path) -> PathBuf {
    root.join(".names")
}

/// One container's directory and files.
#[derive(Debug, Clone)]
pub struct Container {
    pub dir: PathBuf,
    pub config: Config,
}

impl Container {
    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("container.log")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("monitor.lock")
    }

    /// The state as written, corrected for a monitor that died: such a container is exited.
    pub fn state(&self) -> Result<State> {
        let mut state: State = match read_json(&self.state_path()) {
            Ok(s) => s,
            Err(e) if !self.monitor_alive() => State {
                status: Status::Exited,
                exit_code: Some(137),
                error: Some(format!(
                    "the container's monitor died and left no state: {e:#}"
                )),
                ..State::created()
            },
            Err(e) => return Err(e),
        };
        if state.status != Status::Exited && !self.monitor_alive() {
            state.status = Status::Exited;
            state.exit_code = state.exit_code.or(Some(137));
            state.error = Some(match state.monitor_pid {
                Some(pid) => format!("the container's monitor (pid {pid}) died"),
                None => "the container's monitor died before it started".into(),
            });
        }
        Ok(state)
    }

    pub fn write_state(&self, state: &State) -> Result<()> {
        write_json(&self.state_path(), state)
    }

    /// Waits until `config.json` is on disk.
    pub fn sync_config(&self) -> Result<()> {
        let path = self.dir.join("config.json");
        File::open(&path)
            .and_then(|f| f.sync_data())
            .with_context(|| format!("cannot sync {}", path.display()))
    }

    /// Whether a monitor holds this container's lock.
    pub fn monitor_alive(&self) -> bool {
        let Ok(f) = File::open(self.lock_path()) else {
            return false;
        };
        // SAFETY: flock on a descriptor this function owns.
        let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        !free
    }

    /// Takes the monitor's lock for the life of the returned file.
    pub fn lock_monitor(&self) -> Result<File> {
        let path = self.lock_path();
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("container {} already has a monitor", self.config.id);
        }
        Ok(f)
    }

    /// Removes the container's files and its name; the caller made sure it is not running.
    pub fn remove(&self) -> Result<()> {
        let root = self
            .dir
            .parent()
            .context("container directory has no parent")?;
        let link = names_dir(root).join(&self.config.name);
        if fs::read_link(&link).is_ok_and(|t| t == Path::new(&self.config.id)) {
            let _ = fs::remove_file(&link);
        }
        if let Ok(state) = read_json::<State>(&self.state_path()) {
            if let Some(vm_dir) = state.vm_dir {
                let _ = fs::remove_dir_all(vm_dir);
            }
        }
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))
    }
}

/// Creates the directory of the container `id` (from [`random_id`]) and reserves its name
/// (`None`: a generated one).
pub fn create(
    root: &Path,
    id: String,
    name: Option<&str>,
    make: impl FnOnce(String, String) -> Config,
) -> Result<Container> {
    fs::create_dir_all(names_dir(root))
        .with_context(|| format!("cannot create {}", names_dir(root).display()))?;
    let name = match name {
        Some(n) => {
            check_name(n)?;
            reserve(root, n, &id)?;
            n.to_string()
        }
        None => reserve_generated(root, &id)?,
    };
    let dir = root.join(&id);
    let config = make(id, name);
    let made = fs::create_dir(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .and_then(|()| write_json(&dir.join("config.json"), &config))
        .and_then(|()| write_json(&dir.join("state.json"), &State::created()));
    let c = Container { dir, config };
    if let Err(e) = made {
        let _ = c.remove();
        return Err(e);
    }
    Ok(c)
}

fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!("invalid container name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    }
    Ok(())
}

fn reserve(root: &Path, name: &str, id: &str) -> Result<()> {
    let link = names_dir(root).join(name);
    match std::os::unix::fs::symlink(id, &link) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let owner = fs::read_link(&link).unwrap_or_default();
            bail!(
                "the container name \"{name}\" is already in use by container {}: remove it or pick another name",
                short_id(&owner.to_string_lossy())
            )
        }
        Err(e) => Err(e).with_context(|| format!("cannot reserve the name in {}", link.display())),
    }
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nimble", "proud", "quiet", "swift", "tidy", "witty",
];
const NOUNS: &[&str] = &[
    "albatross",
    "barge",
    "canoe",
    "dinghy",
    "ferry",
    "galley",
    "junk",
    "kayak",
    "ketch",
    "launch",
    "punt",
    "raft",
    "schooner",
    "sloop",
    "tender",
    "yawl",
];

fn reserve_generated(root: &Path, id: &str) -> Result<String> {
    let bytes = hex::decode(id).unwrap_or_default();
    for attempt in 0..64usize {
        let pick = |i: usize| usize::from(bytes.get(i % bytes.len().max(1)).copied().unwrap_or(0));
        let mut name = format!(
            "{}_{}",
            ADJECTIVES[pick(attempt * 2) % ADJECTIVES.len()],
            NOUNS[pick(attempt * 2 + 1) % NOUNS.len()]
        );
        if attempt >= 16 {
            name.push_str(&format!("{}", attempt));
        }
        if reserve(root, &name, id).is_ok() {
            return Ok(name);
        }
    }
    bail!("cannot find a free container name")
}

/// A random 64-hex-digit id.
pub fn random_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    hex::encode(b)
}

/// docker's short form of an id.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Opens the container at `dir`.
pub fn open(dir: &Path) -> Result<Container> {
    let config: Config = read_json(&dir.join("config.json"))?;
    Ok(Container {
        dir: dir.to_path_buf(),
        config,
    })
}

/// Every container, oldest first.
pub fn list(root: &Path) -> Result<Vec<Container>> {
    let mut all = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(all),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", root.display())),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.len() != 64 || !name.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        // A container being created or removed right now has no complete config: skip it.
        if let Ok(c) = open(&entry.path()) {
            all.push(c);
        }
    }
    all.sort_by(|a, b| a.config.created.cmp(&b.config.created));
    Ok(all)
}

/// Finds a container by name, full id or unique id prefix (docker's rules).
pub fn find(root: &Path, query: &str) -> Result<Container> {
    if !query.is_empty() {
        if let Ok(id) = fs::read_link(names_dir(root).join(query)) {
            if let Ok(c) = open(&root.join(id)) {
                return Ok(c);
            }
        }
        let lower = query.to_ascii_lowercase();
        if lower.chars().all(|c| c.is_ascii_hexdigit()) {
            let matches: Vec<Container> = list(root)?
                .into_iter()
                .filter(|c| c.config.id.starts_with(&lower))
                .collect();
            match matches.len() {
                1 => return Ok(matches.into_iter().next().expect("one match")),
                0 => {}
                n => bail!("{n} containers match the id prefix {query:?}: give more digits"),
            }
        }
    }
    Err(anyhow!("No such container: {query}"))
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_JSON).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", path.display()))
}

/// Writes `value` as JSON to `path` atomically (temporary file + rename; not synced).
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().context("state path has no directory")?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    // Encoded first: one write, not one per token.
    let mut bytes = serde_json::to_vec_pretty(value).context("cannot encode the state")?;
    bytes.push(b'\n');
    tmp.write_all(&bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: String, name: String) -> Config {
        Config {
            id,
            name,
            image: "oci:x".into(),
            created: crate::container::time::now(),
            spec: RunSpec {
                argv: vec!["true".into()],
                env: vec![],
                cwd: "/".into(),
                user: String::new(),
                hostname: "h".into(),
                tty: false,
                term_size: None,
                stdin: false,
                root: crate::container::disks::root_spec(false),
                tmpfs: vec![],
                shares: vec![],
                security: Default::default(),
                rlimits: vec![],
                pids_limit: None,
                init: false,
                hold: false,
                host_time_ns: 0,
                network: None,
                etc_files: vec![],
            },
            read_only: false,
            engine: EngineKind::Qemu,
            cpus: 1,
            memory_mib: 256,
            auto_remove: false,
            debug: false,
            store_manifest: None,
            network: Default::default(),
            stop_signal: None,
            stop_timeout: None,
            shares: vec![],
            mounts: vec![],
        }
    }

    #[test]
    fn names_ids_and_prefixes() {
        let root = tempfile::tempdir().unwrap();
        let a = create(root.path(), random_id(), Some("web"), config).unwrap();
        let b = create(root.path(), random_id(), None, config).unwrap();
        assert!(b.config.name.contains('_'));
        let err = create(root.path(), random_id(), Some("web"), config).unwrap_err();
        assert!(err.to_string().contains("already in use"), "{err}");
        assert!(create(root.path(), random_id(), Some("bad/name"), config).is_err());
        assert_eq!(find(root.path(), "web").unwrap().config.id, a.config.id);
        assert_eq!(
            find(root.path(), &a.config.id[..10]).unwrap().config.id,
            a.config.id
        );
        assert_eq!(
            find(root.path(), &b.config.name).unwrap().config.id,
            b.config.id
        );
        assert!(find(root.path(), "nope")
            .unwrap_err()
            .to_string()
            .contains("No such container"));
        assert_eq!(list(root.path()).unwrap().len(), 2);
        // No monitor holds the lock: the container counts as exited.
        let s = a.state().unwrap();
        assert_eq!(s.status, Status::Exited);
        assert!(s.error.unwrap().contains("monitor"));
        a.remove().unwrap();
        assert!(find(root.path(), "web").is_err());
        create(root.path(), random_id(), Some("web"), config).unwrap();
    }
}
