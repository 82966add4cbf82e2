//! skiff's EROFS writer: turns an image's layers into one uncompressed EROFS filesystem image,
//! the read-only root disk a container's VM mounts (under an overlay with a writable upper).
//!
//! The layers stream through once, bottom first: each tar entry is applied to an in-memory
//! tree of metadata ([`tree`]) under OCI's whiteout rules, and a regular file's data goes
//! straight from the (decompressed) tar to the image's data area ([`writer::DataArea`]), so no
//! layer is ever held in memory; memory grows with the number of files, not their size. Once
//! the last layer is in, [`writer::finish`] lays out and writes directories, inodes and the
//! superblock. Data of files a later layer deletes stays in the image as dead blocks (counted in
//! [`Built::dead_bytes`]).

mod entries;
mod format;
mod tree;
mod writer;

use std::fs::File;
use std::io::{self, Read};

/// Why an image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ErofsError {
    /// The layer's content breaks the rules (the message names the entry).
    #[error("{0}")]
    Layer(String),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the image does not fit an EROFS filesystem (16 TiB of 4 KiB blocks)")]
    TooLarge,
}

/// What a written image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Built {
    pub inodes: u64,
    /// Size of the image file.
    pub bytes: u64,
    /// Bytes of regular files' data written.
    pub data_bytes: u64,
    /// Of those, bytes of files later layers replaced or deleted.
    pub dead_bytes: u64,
}

/// Writes the layers (uncompressed tar streams, bottom first) into the empty file `out` as an
/// EROFS image whose superblock carries `uuid`. `layer_error` gives an error of layer `i` its
/// context.
pub fn write<R: Read>(
    layers: impl IntoIterator<Item = R>,
    out: &File,
    uuid: [u8; 16],
    layer_error: impl Fn(usize, ErofsError) -> ErofsError,
) -> Result<Built, ErofsError> {
    let mut tree = tree::Tree::new();
    let mut data = writer::DataArea::new(out);
    for (index, layer) in layers.into_iter().enumerate() {
        tree.next_layer();
        entries::for_each(layer, |meta, bytes| tree.apply(meta, bytes, &mut data))
            .map_err(|e| layer_error(index, e))?;
    }
    let (data_bytes, dead_bytes) = (data.data_bytes, data.dead_bytes);
    let written = writer::finish(&tree, data, uuid, 0)?;
    Ok(Built {
        inodes: written.inodes,
        bytes: written.blocks * format::BLOCK,
        data_bytes,
        dead_bytes,
    })
}

/// The uuid in the superblock of the image file `file`, or `None` when it is not an EROFS image
/// this writer made or not as long as its superblock says.
pub fn uuid_of(file: &File) -> Option<[u8; 16]> {
    use std::os::unix::fs::FileExt;
    let mut block0 = vec![0u8; 2048];
    file.read_exact_at(&mut block0, 0).ok()?;
    let (uuid, blocks) = format::Superblock::uuid_of(&block0)?;
    let len = file.metadata().ok()?.len();
    (len == u64::from(blocks) * format::BLOCK).then_some(uuid)
}

#[cfg(test)]
mod tests;
