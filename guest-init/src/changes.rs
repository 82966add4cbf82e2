//! Host edits under shared directories, made visible to the container's file watchers. A
//! change made on the host reaches the guest's page cache through virtio-fs but never the
//! guest kernel's inotify: the host tells guest-init which files changed
//! ([`protocol::Message::FilesChanged`]) and a thread of guest-init, inside the container's
//! mount namespace, sets each file's mode to what it is: read from the server at that moment
//! (`AT_STATX_FORCE_SYNC`, which also refreshes the guest's view of the file's size and
//! times), never a value from earlier that could undo a newer change. That changes nothing on
//! the host, and the guest kernel reports it to watchers of the file and of its directory
//! (`IN_ATTRIB`, which `inotifywait`, node's `fs.watch` and their kind take as a change).

use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use nix::sys::stat::{fchmodat, FchmodatFlags, Mode};
use nix::unistd::Pid;
use protocol::{ChangedFile, ShareMount};
use tracing::{debug, warn};

/// Passes changed files to the thread that touches them in the container.
pub struct Toucher {
    tx: mpsc::Sender<Vec<ChangedFile>>,
}

impl Toucher {
    /// Starts the thread for the container whose first process is `init`, with its `shares`.
    pub fn start(init: Pid, shares: Vec<ShareMount>) -> std::io::Result<Toucher> {
        let (tx, rx) = mpsc::channel::<Vec<ChangedFile>>();
        thread::Builder::new()
            .name("file-changes".into())
            .spawn(move || {
                if let Err(e) = crate::container::join_mounts(init) {
                    warn!(error = %e, "cannot enter the container's mounts: host edits stay unseen by its watchers");
                    return;
                }
                for files in rx {
                    for f in &files {
                        for path in container_paths(&shares, f) {
                            touch(&path);
                        }
                    }
                }
            })?;
        Ok(Toucher { tx })
    }

    /// Queues `files`; nothing waits for them.
    pub fn changed(&self, files: Vec<ChangedFile>) {
        let _ = self.tx.send(files);
    }
}

/// Where a changed file of a share appears in the container: under each mount of the whole
/// share, and at a file bind of that very file.
fn container_paths(shares: &[ShareMount], f: &ChangedFile) -> Vec<PathBuf> {
    let rel = Path::new(&f.path);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        warn!(path = f.path, "ignoring a changed file outside its share");
        return Vec::new();
    }
    shares
        .iter()
        .filter(|s| s.tag == f.tag)
        .filter_map(|s| {
            if s.entry.is_empty() {
                Some(Path::new(&s.target).join(rel))
            } else {
                (rel == Path::new(&s.entry)).then(|| PathBuf::from(&s.target))
            }
        })
        .collect()
}

/// The mode of `path` (not through a symlink) as the file server has it now; `None` for a
/// symlink or a file that is gone.
fn fresh_mode(path: &Path) -> Option<u32> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: an all-zero statx is a valid value to be overwritten.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statx buffer that outlive the call.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_FORCE_SYNC,
            libc::STATX_MODE | libc::STATX_SIZE | libc::STATX_MTIME,
            &mut st,
        )
    };
    let mode = u32::from(st.stx_mode);
    (r == 0 && mode & libc::S_IFMT != libc::S_IFLNK).then_some(mode & 0o7777)
}

/// Sets the mode of `path` to what it is, so the guest kernel reports a change.
fn touch(path: &Path) {
    let Some(mode) = fresh_mode(path) else {
        debug!(path = %path.display(), "a changed file is not there");
        return;
    };
    let mode = Mode::from_bits_truncate(mode);
    if let Err(e) = fchmodat(None, path, mode, FchmodatFlags::FollowSymlink) {
        debug!(path = %path.display(), error = %e, "cannot touch a changed file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_map_to_every_mount_of_their_share() {
        let share = |tag: &str, entry: &str, target: &str| ShareMount {
            tag: tag.into(),
            entry: entry.into(),
            target: target.into(),
            read_only: false,
            populate: false,
        };
        let shares = [
            share("a", "", "/src"),
            share("a", "app.conf", "/etc/app.conf"),
            share("b", "", "/other"),
        ];
        let changed = |path: &str| ChangedFile {
            tag: "a".into(),
            path: path.into(),
        };
        assert_eq!(
            container_paths(&shares, &changed("x/y.rs")),
            [PathBuf::from("/src/x/y.rs")]
        );
        assert_eq!(
            container_paths(&shares, &changed("app.conf")),
            [
                PathBuf::from("/src/app.conf"),
                PathBuf::from("/etc/app.conf")
            ]
        );
        assert_eq!(
            container_paths(&shares, &changed("")),
            [PathBuf::from("/src")]
        );
        for bad in ["../etc/passwd", "/etc/passwd", "a/../../b"] {
            assert!(container_paths(&shares, &changed(bad)).is_empty(), "{bad}");
        }
    }
}
