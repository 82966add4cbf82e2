//! Host edits wake the container's file watchers: a thread per VM watches its shared
//! directories with inotify (every directory of a share mounted whole, only the directory of
//! a share whose files are bound one by one), gathers what changed for a moment, and sends it
//! on the session ([`protocol::Message::FilesChanged`]), where guest-init makes the guest
//! kernel report it. Mode changes are not watched: guest-init's touch of a file (its mode set
//! again) comes back as one through virtiofsd.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use protocol::{ChangedFile, ShareMount};

use super::HostShare;
use crate::session::SignalSender;

/// Events that mean a file's content or presence changed.
fn interesting() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DONT_FOLLOW
        | AddWatchFlags::IN_ONLYDIR
}

/// How long changes are gathered after the first, so a burst of writes is sent once.
const GATHER: Duration = Duration::from_millis(20);
/// Most directories watched per VM (each costs the kernel about 1 KiB).
const MAX_WATCHES: usize = 65_536;
/// Most changed files sent in one message (the frame stays well below its limit).
const MAX_BATCH: usize = 128;

/// The running watch; dropping it stops the thread.
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One watched directory: its share and its path in it.
struct Watched {
    share: usize,
    rel: PathBuf,
}

struct Watcher {
    inotify: Inotify,
    shares: Vec<(HostShare, bool)>,
    dirs: HashMap<WatchDescriptor, Watched>,
    full: bool,
}

impl Watcher {
    /// Watches `rel` of share `share`, and below it when the share is watched whole.
    fn add(&mut self, share: usize, rel: &Path) {
        let (host, recursive) = &self.shares[share];
        let dir = host.dir.join(rel);
        if self.dirs.len() >= MAX_WATCHES {
            if !self.full {
                self.full = true;
                tracing::warn!(
                    "more than {MAX_WATCHES} directories are shared: edits below some are not told to the container"
                );
            }
            return;
        }
        let Ok(wd) = self.inotify.add_watch(&dir, interesting()) else {
            return;
        };
        self.dirs.insert(
            wd,
            Watched {
                share,
                rel: rel.to_path_buf(),
            },
        );
        if !recursive {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                self.add(share, &rel.join(e.file_name()));
            }
        }
    }
}

/// Starts watching `shares` (mounted as `mounts` say) for the session behind `session`.
pub fn start(shares: &[HostShare], mounts: &[ShareMount], session: SignalSender) -> Option<Watch> {
    if shares.is_empty() {
        return None;
    }
    let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!("cannot watch the shared directories ({e}): the container's watchers miss host edits");
            return None;
        }
    };
    let shares: Vec<(HostShare, bool)> = shares
        .iter()
        .map(|s| {
            let whole = mounts.iter().any(|m| m.tag == s.tag && m.entry.is_empty());
            (s.clone(), whole)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("share-watch".into())
        .spawn(move || {
            let mut w = Watcher {
                inotify,
                shares,
                dirs: HashMap::new(),
                full: false,
            };
            for i in 0..w.shares.len() {
                w.add(i, Path::new(""));
            }
            tracing::debug!(dirs = w.dirs.len(), "watching the shared directories");
            run(&mut w, &flag, &session);
        })
        .ok()?;
    Some(Watch {
        stop,
        thread: Some(thread),
    })
}

fn run(w: &mut Watcher, stop: &AtomicBool, session: &SignalSender) {
    // changed paths of each share, gathered since `first`
    let mut pending: BTreeMap<(usize, PathBuf), ()> = BTreeMap::new();
    let mut first: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let wait = match first {
            Some(t) => GATHER.saturating_sub(t.elapsed()),
            None => Duration::from_millis(100),
        };
        let mut fds = [PollFd::new(w.inotify.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(wait.as_millis() as i32).unwrap_or(PollTimeout::ZERO);
        if poll(&mut fds, timeout).is_ok_and(|n| n > 0) {
            for ev in w.inotify.read_events().unwrap_or_default() {
                let Some(name) = ev.name else {
                    if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                        w.dirs.remove(&ev.wd);
                    }
                    continue;
                };
                let Some(dir) = w.dirs.get(&ev.wd) else {
                    continue;
                };
                let (share, rel) = (dir.share, dir.rel.join(&name));
                let new_dir = ev.mask.contains(AddWatchFlags::IN_ISDIR)
                    && ev
                        .mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
                if new_dir && w.shares[share].1 {
                    w.add(share, &rel);
                }
                pending.insert((share, rel), ());
                first.get_or_insert_with(Instant::now);
            }
        }
        if first.is_some_and(|t| t.elapsed() >= GATHER) {
            first = None;
            let changed: Vec<ChangedFile> = std::mem::take(&mut pending)
                .into_keys()
                .filter_map(|(share, rel)| describe(&w.shares[share].0, rel))
                .collect();
            for batch in changed.chunks(MAX_BATCH) {
                if session.files_changed(batch.to_vec()).is_err() {
                    return;
                }
            }
        }
    }
}

/// What to tell the guest of `rel` in `share`: the file, or, when it is gone (or a symlink,
/// which has no mode of its own), its directory.
fn describe(share: &HostShare, rel: PathBuf) -> Option<ChangedFile> {
    let mut rel = rel;
    loop {
        match std::fs::symlink_metadata(share.dir.join(&rel)) {
            Ok(m) if !m.file_type().is_symlink() => {
                return Some(ChangedFile {
                    tag: share.tag.clone(),
                    path: rel.to_str()?.to_string(),
                })
            }
            _ if rel.as_os_str().is_empty() => return None,
            _ => rel = rel.parent().map(Path::to_path_buf).unwrap_or_default(),
        }
    }
}
