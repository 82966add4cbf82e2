//! `skiff cp` in the guest: each connection to [`protocol::COPY_PORT`] is served on a thread of
//! its own that joins the container's mount namespace (after unsharing its filesystem
//! attributes, so the rest of guest-init keeps its own root), where its root is the container's:
//! paths and their symlinks resolve as the container sees them (volumes and tmpfs mounts
//! included) and never above its root. Then it writes the archive of a path, or extracts one at
//! a path by docker's rules, as the request says.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::thread;

use nix::sys::socket::{accept4, SockFlag};
use nix::unistd::Pid;
use protocol::copy::{
    archive, extract, parent_of, place, read_control, write_control, ChunkReader, ChunkWriter,
    CopyReply, CopyRequest, Direction, FailKind, Source, Target,
};
use tracing::{debug, warn};

use crate::error::{Context, Error, Result};

/// Accepts copy connections for the container whose first process is `init`, each on its own
/// thread, for as long as guest-init runs.
pub fn spawn_listener(listener: OwnedFd, init: Pid) -> Result<()> {
    thread::Builder::new()
        .name("copy-listener".into())
        .spawn(move || loop {
            let conn = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                // SAFETY: accept4 returned a new descriptor that nothing else owns.
                Ok(fd) => File::from(unsafe { OwnedFd::from_raw_fd(fd) }),
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::ECONNABORTED) => continue,
                Err(e) => {
                    warn!(error = %e, "the copy listener failed; no more copies");
                    return;
                }
            };
            let spawned = thread::Builder::new().name("copy".into()).spawn(move || {
                if let Err(e) = serve(conn, init) {
                    warn!(error = %e, "copy failed");
                }
            });
            if let Err(e) = spawned {
                warn!(error = %e, "cannot start a copy thread");
            }
        })
        .map(drop)
        .ctx(|| "start the copy listener thread".into())
}

fn failed(kind: FailKind, message: String) -> CopyReply {
    CopyReply::Failed { kind, message }
}

/// One copy connection.
fn serve(conn: File, init: Pid) -> Result<()> {
    let mut r = &conn;
    let request: CopyRequest = read_control(&mut r)?;
    let mut w = &conn;
    if request.version != protocol::VERSION {
        let msg = format!(
            "the host speaks protocol version {}, the guest {}",
            request.version,
            protocol::VERSION
        );
        return reply(&mut w, &failed(FailKind::Other, msg));
    }
    if let Err(e) = crate::container::join_mounts(init) {
        return reply(&mut w, &failed(FailKind::Other, e.to_string()));
    }
    debug!(?request.direction, "copy");
    match request.direction {
        Direction::Out {
            path,
            follow_link,
            name,
        } => copy_out(&conn, &path, follow_link, name.as_deref()),
        Direction::In {
            path,
            source,
            archive,
        } => copy_in(&conn, &path, &source, archive),
    }
}

fn reply(w: &mut &File, msg: &CopyReply) -> Result<()> {
    write_control(w, msg).map_err(Error::from)
}

/// The one-line reason a path cannot be used.
fn path_error(path: &str, e: &io::Error) -> CopyReply {
    match e.raw_os_error() {
        Some(libc::ENOENT) => failed(FailKind::NotFound, path.to_string()),
        Some(libc::ENOTDIR) => failed(FailKind::Other, format!("not a directory: {path}")),
        _ => failed(FailKind::Other, format!("{path}: {e}")),
    }
}

fn copy_out(conn: &File, path: &str, follow_link: bool, name: Option<&str>) -> Result<()> {
    let mut w = conn;
    let meta = match follow_link {
        true => fs::metadata(path),
        false => fs::symlink_metadata(path),
    };
    let is_dir = match meta {
        Ok(m) => m.is_dir(),
        Err(e) => return reply(&mut w, &path_error(path, &e)),
    };
    reply(&mut w, &CopyReply::Source { is_dir })?;
    let mut chunks = ChunkWriter::new(conn);
    let written = archive::write(Path::new(path), name, follow_link, &mut chunks).map(drop);
    let ended = chunks.finish();
    match (written, ended) {
        (Ok(_), Ok(_)) => reply(&mut w, &CopyReply::Done),
        (Err(e), Ok(_)) => reply(
            &mut w,
            &failed(FailKind::Other, format!("cannot archive {path}: {e}")),
        ),
        // The host went away (it may have refused the copy after seeing the source).
        (_, Err(e)) => {
            debug!(error = %e, "the host closed the copy");
            Ok(())
        }
    }
}

/// What is at `path` for docker's rules.
fn target(path: &str) -> io::Result<Target> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(Target::Dir),
        Ok(_) => Ok(Target::Other),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(Target::Other),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Target::Missing {
            parent_is_dir: fs::metadata(parent_of(path.trim_end_matches('/')))
                .map(|m| m.is_dir())
                .unwrap_or(false),
        }),
        Err(e) => Err(e),
    }
}

fn copy_in(conn: &File, path: &str, source: &Source, keep_owners: bool) -> Result<()> {
    let mut w = conn;
    let target = match target(path) {
        Ok(t) => t,
        Err(e) => return reply(&mut w, &path_error(path, &e)),
    };
    let (dir, opts) = match source {
        Source::Stream if target == Target::Dir => (path.to_string(), extract::Options::default()),
        Source::Stream => {
            let msg = format!("destination {path:?} must be a directory");
            return reply(&mut w, &failed(FailKind::Other, msg));
        }
        Source::Entry { name, is_dir } => match place(*is_dir, name.as_deref(), path, target) {
            Ok(p) => (
                p.dir,
                extract::Options {
                    strip: name.clone(),
                    rename: p.name,
                    ..extract::Options::default()
                },
            ),
            Err(msg) => return reply(&mut w, &failed(FailKind::Other, msg)),
        },
    };
    let opts = extract::Options {
        keep_owners,
        follow_dir_symlinks: true,
        devices: true,
        ..opts
    };
    reply(&mut w, &CopyReply::Ready)?;
    let mut chunks = ChunkReader::new(conn);
    let extracted = extract::extract(Path::new(&dir), &mut chunks, &opts);
    // The host sends the whole stream before it reads the answer.
    if let Err(e) = chunks.finish() {
        debug!(error = %e, "the host's archive stream ended badly");
    }
    match extracted {
        Ok(summary) => {
            debug!(?summary, dir, "extracted");
            reply(&mut w, &CopyReply::Done)
        }
        Err(e) => reply(&mut w, &failed(FailKind::Other, e.to_string())),
    }
}
