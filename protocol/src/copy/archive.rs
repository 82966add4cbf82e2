//! The archive writer of `skiff cp`: one file, symlink or directory tree as a tar stream, owners,
//! modes and times kept, symlinks as symlinks, hard links within the tree as hard links.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header, HeaderMode};

/// Writes the archive of `path` to `out`: its top entry named `name` (`None`: a directory's
/// content at the archive's root). `follow_link`: `path` itself is followed when it is a
/// symlink (never the tree's own symlinks). Returns `out` (give it `&mut W` to keep `W` when
/// this fails).
pub fn write<W: Write>(
    path: &Path,
    name: Option<&str>,
    follow_link: bool,
    out: W,
) -> io::Result<W> {
    let meta = if follow_link {
        fs::metadata(path)?
    } else {
        fs::symlink_metadata(path)?
    };
    let mut builder = Builder::new(out);
    builder.follow_symlinks(false);
    let mut w = Walker {
        builder,
        links: HashMap::new(),
        follow_top: false,
    };
    let top = name
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    w.follow_top = follow_link;
    w.entry(path, &top, &meta, name.is_none())?;
    w.builder.into_inner()
}

struct Walker<W: Write> {
    builder: Builder<W>,
    /// (device, inode) of files with more than one link → their first name in the archive.
    links: HashMap<(u64, u64), PathBuf>,
    /// The next file opened is the top one, which `-L` follows.
    follow_top: bool,
}

impl<W: Write> Walker<W> {
    fn entry(&mut self, path: &Path, name: &Path, meta: &Metadata, root: bool) -> io::Result<()> {
        let mut header = Header::new_gnu();
        header.set_metadata_in_mode(meta, HeaderMode::Complete);
        let ft = meta.file_type();
        if ft.is_dir() {
            self.follow_top = false;
            header.set_size(0);
            if !root {
                self.builder.append_data(&mut header, name, io::empty())?;
            } else {
                // "." itself: the tar crate takes it as a path of its own.
                self.builder.append_data(&mut header, ".", io::empty())?;
            }
            let mut children: Vec<_> = fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            children.sort();
            for child in children {
                let child_path = path.join(&child);
                let child_name = if root {
                    PathBuf::from(&child)
                } else {
                    name.join(&child)
                };
                let child_meta = match fs::symlink_metadata(&child_path) {
                    Ok(m) => m,
                    // Gone meanwhile: the tree changed under the copy.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                self.entry(&child_path, &child_name, &child_meta, false)?;
            }
            return Ok(());
        }
        if ft.is_symlink() {
            let target = fs::read_link(path)?;
            header.set_size(0);
            return self.builder.append_link(&mut header, name, target);
        }
        if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.links.get(&key) {
                    let first = first.clone();
                    header.set_entry_type(EntryType::Link);
                    header.set_size(0);
                    return self.builder.append_link(&mut header, name, first);
                }
                self.links.insert(key, name.to_path_buf());
            }
            let nofollow = if std::mem::take(&mut self.follow_top) {
                0
            } else {
                libc::O_NOFOLLOW
            };
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(nofollow)
                .open(path)?;
            let size = meta.len();
            // Exactly `size` bytes whatever the file does meanwhile: cut or padded with zeros.
            let data = file.take(size).chain(io::repeat(0)).take(size);
            return self.builder.append_data(&mut header, name, data);
        }
        if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            header.set_size(0);
            return self.builder.append_data(&mut header, name, io::empty());
        }
        // Sockets and the like have no place in an archive.
        tracing::debug!(path = %path.display(), "skipping a socket");
        Ok(())
    }
}

/// Whether `path` (followed when `follow_link`) is a directory.
pub fn is_dir(path: &Path, follow_link: bool) -> io::Result<bool> {
    let meta = if follow_link {
        fs::metadata(path)?
    } else {
        fs::symlink_metadata(path)?
    };
    Ok(meta.is_dir())
}
