//! The container's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`, as the host composed
//! them. Written from inside the container's root, so that a symlink in the image cannot point
//! the write anywhere else; an existing file or link of that name is replaced, never followed.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use protocol::EtcFile;

use crate::error::{Context, Error, Result};

/// The only names the host may write.
const ALLOWED: [&str; 3] = ["hosts", "resolv.conf", "hostname"];

/// Writes `files` into `/etc` of the current root.
pub fn write(files: &[EtcFile]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create("/etc")
        .ctx(|| "create /etc".into())?;
    for f in files {
        if !ALLOWED.contains(&f.name.as_str()) {
            return Err(Error::Invalid(format!(
                "the host may not write /etc/{:?}",
                f.name
            )));
        }
        let path = format!("/etc/{}", f.name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).ctx(|| format!("replace {path}"))
            }
            _ => {}
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|mut file| file.write_all(f.contents.as_bytes()))
            .ctx(|| format!("write {path}"))?;
    }
    Ok(())
}
