//! `skiff cp`: files between the host and a container, docker's `docker cp`. The command
//! connects to guest-init's copy port on the VM's hybrid-vsock socket (as `exec` does), sends a
//! [`CopyRequest`] and moves one tar archive: written here from the host's files and extracted by
//! the guest inside the container, or written by the guest and extracted here by the extractor
//! that never follows a symlink out of the destination (the container may be hostile). `-` on
//! the host side is a tar stream on stdin or stdout. A stopped container's filesystem is
//! reached through a VM booted only to hold it ([`super::hold`]).

use std::fs;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context, Result};
use protocol::copy::{
    archive, extract, parent_of, place, read_control, source_name, write_control, ChunkReader,
    ChunkWriter, CopyReply, CopyRequest, Direction, FailKind, Source, Target,
};
use tracing::debug;

use super::cli::CpArgs;
use super::exec::connect;
use super::state::{self, Status};

/// One side of a copy as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side<'a> {
    /// `-`: a tar stream on stdin or stdout.
    Stream,
    Host(&'a str),
    Container {
        name: &'a str,
        path: &'a str,
    },
}

/// docker's reading: `NAME:PATH` names a container unless the argument starts like a local path
/// (`/`, `.`) or has no `:`.
fn side(arg: &str) -> Side<'_> {
    if arg == "-" {
        return Side::Stream;
    }
    if arg.starts_with('/') || arg.starts_with('.') {
        return Side::Host(arg);
    }
    match arg.split_once(':') {
        Some((name, path)) if !name.is_empty() => Side::Container { name, path },
        _ => Side::Host(arg),
    }
}

/// A one-line failure of the copy itself (docker's exit code 1).
fn failure(msg: impl std::fmt::Display) -> Result<i32> {
    eprintln!("skiff: {msg}");
    Ok(1)
}

pub fn cp(args: CpArgs) -> Result<i32> {
    let (src, dst) = (side(&args.src), side(&args.dst));
    let (name, inward) = match (&src, &dst) {
        (Side::Container { .. }, Side::Container { .. }) => {
            bail!("copying between containers is not supported")
        }
        (Side::Container { name, .. }, _) => (*name, false),
        (_, Side::Container { name, .. }) => (*name, true),
        _ => bail!("must specify at least one container source"),
    };
    let c = state::find(&state::containers_dir(), name)?;
    let s = c.state()?;
    let copy = |vm_dir: &Path| -> Result<i32> {
        let mut conn = connect(vm_dir, protocol::COPY_PORT)?;
        let not_found = |path: &str| format!("could not find the file {path} in container {name}");
        match (&src, &dst) {
            (Side::Container { path, .. }, host) => {
                copy_out(&mut conn, path, *host, &args, &not_found)
            }
            (host, Side::Container { path, .. }) => {
                copy_in(&mut conn, *host, path, &args, &not_found)
            }
            _ => unreachable!("one side is a container: checked above"),
        }
    };
    match (&s.status, &s.vm_dir) {
        (Status::Running, Some(d)) => copy(d),
        // a stopped container's filesystem outlives its VM: boot one to reach it
        _ => super::hold::with_filesystem(&c, copy),
    }
    .inspect(|code| debug!(inward, code, "copy ended"))
}

/// The guest's one-line reason.
fn guest_failure(kind: FailKind, message: &str, not_found: &dyn Fn(&str) -> String) -> Result<i32> {
    match kind {
        FailKind::NotFound => failure(not_found(message)),
        FailKind::Other => failure(message),
    }
}

/// The guest's last word: `Done`, or why not.
fn finish(conn: &mut UnixStream, not_found: &dyn Fn(&str) -> String) -> Result<i32> {
    match read_control(conn).context("the guest ended the copy without an answer")? {
        CopyReply::Done => Ok(0),
        CopyReply::Failed { kind, message } => guest_failure(kind, &message, not_found),
        other => bail!("unexpected answer of the guest: {other:?}"),
    }
}

/// What is at a host destination, for docker's rules.
fn host_target(path: &str) -> Result<Target> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(Target::Dir),
        Ok(_) => Ok(Target::Other),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(Target::Other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Target::Missing {
            parent_is_dir: fs::metadata(parent_of(path.trim_end_matches('/')))
                .map(|m| m.is_dir())
                .unwrap_or(false),
        }),
        Err(e) => Err(e).with_context(|| format!("cannot look at {path}")),
    }
}

fn copy_out(
    conn: &mut UnixStream,
    path: &str,
    host: Side<'_>,
    args: &CpArgs,
    not_found: &dyn Fn(&str) -> String,
) -> Result<i32> {
    let target = match host {
        Side::Host(dst) => Some((dst, host_target(dst)?)),
        _ => None,
    };
    let name = source_name(path);
    let request = CopyRequest {
        version: protocol::VERSION,
        direction: Direction::Out {
            path: path.to_string(),
            follow_link: args.follow_link,
            name: name.clone(),
        },
    };
    write_control(conn, &request).context("cannot send the copy request")?;
    let is_dir = match read_control(conn).context("the guest refused the copy")? {
        CopyReply::Source { is_dir } => is_dir,
        CopyReply::Failed { kind, message } => return guest_failure(kind, &message, not_found),
        other => bail!("unexpected answer of the guest: {other:?}"),
    };
    let Some((dst, target)) = target else {
        let mut out = io::stdout().lock();
        io::copy(&mut ChunkReader::new(&mut *conn), &mut out)
            .context("cannot copy the archive to stdout")?;
        out.flush().context("cannot write to stdout")?;
        return finish(conn, not_found);
    };
    let placement = match place(is_dir, name.as_deref(), dst, target) {
        Ok(p) => p,
        Err(msg) => return failure(msg),
    };
    let opts = extract::Options {
        strip: name,
        rename: placement.name,
        keep_owners: args.archive,
        follow_dir_symlinks: false,
        devices: false,
    };
    let mut chunks = ChunkReader::new(&mut *conn);
    let extracted = extract::extract(Path::new(&placement.dir), &mut chunks, &opts);
    let drained = chunks.finish_within(MAX_TRAILER);
    match (extracted, drained) {
        (Ok(summary), Ok(_)) => {
            debug!(?summary, "extracted");
            finish(conn, not_found)
        }
        // The archive was cut: the guest's own reason, when it gave one, says more.
        (Err(e @ extract::ExtractError::Read(_)), Ok(_)) => match read_control(conn) {
            Ok(CopyReply::Failed { kind, message }) => guest_failure(kind, &message, not_found),
            _ => failure(e),
        },
        (Err(e), _) => failure(e),
        (Ok(_), Err(e)) => failure(format_args!("bad archive from the container: {e}")),
    }
}

/// What may follow the end of the container's tar archive (tar pads to its record size).
const MAX_TRAILER: u64 = 1 << 20;

fn copy_in(
    conn: &mut UnixStream,
    host: Side<'_>,
    path: &str,
    args: &CpArgs,
    not_found: &dyn Fn(&str) -> String,
) -> Result<i32> {
    let (source, local) = match host {
        Side::Host(src) => {
            let name = source_name(src);
            let is_dir = match archive::is_dir(Path::new(src), args.follow_link) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return failure(format_args!("no such file or directory: {src}"))
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return failure(format_args!("not a directory: {src}"))
                }
                Err(e) => return failure(format_args!("{src}: {e}")),
            };
            (
                Source::Entry {
                    name: name.clone(),
                    is_dir,
                },
                Some((src, name)),
            )
        }
        _ => (Source::Stream, None),
    };
    let request = CopyRequest {
        version: protocol::VERSION,
        direction: Direction::In {
            path: path.to_string(),
            source,
            archive: args.archive,
        },
    };
    write_control(conn, &request).context("cannot send the copy request")?;
    match read_control(conn).context("the guest refused the copy")? {
        CopyReply::Ready => {}
        CopyReply::Failed { kind, message } => return guest_failure(kind, &message, not_found),
        other => bail!("unexpected answer of the guest: {other:?}"),
    }
    let mut chunks = ChunkWriter::new(&mut *conn);
    let sent = match local {
        Some((src, name)) => archive::write(
            Path::new(src),
            name.as_deref(),
            args.follow_link,
            &mut chunks,
        )
        .map(drop)
        .with_context(|| format!("cannot archive {src}")),
        None => io::copy(&mut io::stdin().lock(), &mut chunks)
            .map(drop)
            .context("cannot read the archive from stdin"),
    };
    // The guest reads to the stream's end before it answers.
    chunks.finish().context("cannot send the archive")?;
    sent?;
    finish(conn, not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_are_read_as_docker_does() {
        assert_eq!(side("-"), Side::Stream);
        assert_eq!(
            side("c:/x"),
            Side::Container {
                name: "c",
                path: "/x"
            }
        );
        assert_eq!(
            side("c:x"),
            Side::Container {
                name: "c",
                path: "x"
            }
        );
        assert_eq!(side("./a:b"), Side::Host("./a:b"));
        assert_eq!(side("/a:b"), Side::Host("/a:b"));
        assert_eq!(side("file"), Side::Host("file"));
        assert_eq!(side(":x"), Side::Host(":x"));
    }
}
