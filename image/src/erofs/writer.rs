//! Writes the image file: regular files' data as the layers stream by ([`DataArea`]), then,
//! once the tree is final, directory and long-symlink blocks, the metadata area (every inode
//! with its xattrs and inline data, root first) and the superblock.
//!
//! Layout: block 0 holds the superblock; file data from block 1 on, each file in whole blocks;
//! then the blocks of directories too large to be inline; then the metadata area. An inode
//! with inline data (small directories, symlinks) never crosses a block boundary, as the kernel
//! requires.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

use tracing::warn;

use super::format::{self, DataLayout, Dirent, FileType, Inode, Superblock, BLOCK, SLOT};
use super::tree::{DataSink, NodeId, NodeKind, Tree, ROOT};
use super::ErofsError;

const COPY_BUF: usize = 128 << 10;
/// Most bytes of inline xattrs one inode may carry: it and its xattrs fit one block.
const MAX_XATTR_BODY: u64 = BLOCK - format::INODE_SIZE;

fn io_err(what: &str) -> impl FnOnce(io::Error) -> ErofsError + '_ {
    move |source| ErofsError::Io {
        what: what.to_string(),
        source,
    }
}

/// The data area being filled with regular files' contents, each from a block boundary.
pub struct DataArea<'a> {
    file: &'a File,
    next_block: u64,
    buf: Vec<u8>,
    pub data_bytes: u64,
    pub dead_bytes: u64,
}

impl<'a> DataArea<'a> {
    pub fn new(file: &'a File) -> DataArea<'a> {
        DataArea {
            file,
            next_block: 1,
            buf: vec![0; COPY_BUF],
            data_bytes: 0,
            dead_bytes: 0,
        }
    }
}

impl DataSink for DataArea<'_> {
    fn append(&mut self, data: &mut dyn Read, size: u64) -> Result<u32, ErofsError> {
        if size == 0 {
            return Ok(0);
        }
        let first = self.next_block;
        let blocks = size.div_ceil(BLOCK);
        if first + blocks > u64::from(u32::MAX) {
            return Err(ErofsError::TooLarge);
        }
        let mut out = self.file;
        out.seek(SeekFrom::Start(first * BLOCK))
            .map_err(io_err("seek in the image"))?;
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => return Err(ErofsError::Layer("the file's data ends early".into())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ErofsError::Layer(format!("tar stream: {e}"))),
            };
            out.write_all(&self.buf[..n])
                .map_err(io_err("write the image"))?;
            left -= n as u64;
        }
        self.next_block += blocks;
        self.data_bytes += size;
        Ok(first as u32)
    }

    fn forget(&mut self, size: u64) {
        self.dead_bytes += size;
    }
}

/// What the finished image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub inodes: u64,
    pub blocks: u64,
}

/// One inode's place and shape in the metadata area.
struct Placed {
    id: NodeId,
    parent: NodeId,
    nid: u64,
    layout: DataLayout,
    xattrs: Vec<u8>,
    /// Bytes of the inode's data (directory entries, symlink target, file data).
    size: u64,
    /// First block of its data for `Plain` directories and symlinks.
    blkaddr: u32,
    nlink: u32,
}

/// A node's directory-entry type and its `st_mode` type bits.
fn kind_of(kind: &NodeKind) -> (FileType, u32) {
    match kind {
        NodeKind::Directory(_) => (FileType::Directory, libc::S_IFDIR),
        NodeKind::Regular { .. } => (FileType::Regular, libc::S_IFREG),
        NodeKind::Symlink(_) => (FileType::Symlink, libc::S_IFLNK),
        NodeKind::CharDevice { .. } => (FileType::CharDevice, libc::S_IFCHR),
        NodeKind::BlockDevice { .. } => (FileType::BlockDevice, libc::S_IFBLK),
        NodeKind::Fifo => (FileType::Fifo, libc::S_IFIFO),
    }
}

/// The xattr body of a node: names EROFS cannot hold and overlayfs's own (`trusted.overlay.*`,
/// which would steer the overlay mounted on the image) are dropped with a warning.
fn xattr_body(tree: &Tree, id: NodeId) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut size = 0;
    for (name, value) in &tree.node(id).xattrs {
        let shown = || String::from_utf8_lossy(name).into_owned();
        if name.starts_with(b"trusted.overlay.") {
            warn!(xattr = %shown(), "dropping an overlayfs xattr carried by the image");
            continue;
        }
        let Some((index, suffix)) = format::xattr_index(name) else {
            warn!(xattr = %shown(), "dropping an xattr EROFS cannot name");
            continue;
        };
        if suffix.len() > 255 || value.len() > usize::from(u16::MAX) {
            warn!(xattr = %shown(), "dropping an oversized xattr");
            continue;
        }
        let entry = format::xattr_entry_size(suffix.len(), value.len());
        if format::xattr_body_size(size + entry) > MAX_XATTR_BODY {
            warn!(xattr = %shown(), "dropping an xattr: the file's xattrs exceed one block");
            continue;
        }
        size += entry;
        entries.push((index, suffix, value.as_slice()));
    }
    format::encode_xattrs(&entries)
}

/// A directory's names with `.` and `..`, sorted by bytes as the kernel's lookup needs.
fn dir_names(children: &BTreeMap<Vec<u8>, NodeId>) -> Vec<&[u8]> {
    let mut names: Vec<&[u8]> = vec![b".", b".."];
    names.extend(children.keys().map(|n| n.as_slice()));
    names.sort_unstable();
    names
}

/// The entries of directory `id`, in [`dir_names`] order.
fn dirents<'t>(
    tree: &'t Tree,
    id: NodeId,
    parent: NodeId,
    nids: &HashMap<NodeId, u64>,
) -> Vec<Dirent<'t>> {
    let NodeKind::Directory(children) = &tree.node(id).kind else {
        return Vec::new();
    };
    dir_names(children)
        .into_iter()
        .map(|name| {
            let target = match name {
                b"." => id,
                b".." => parent,
                _ => children[name],
            };
            Dirent {
                name,
                nid: nids[&target],
                file_type: kind_of(&tree.node(target).kind).0,
            }
        })
        .collect()
}

/// Lays out and writes everything after the data area, then the superblock.
pub fn finish(
    tree: &Tree,
    data: DataArea<'_>,
    uuid: [u8; 16],
    build_time: u64,
) -> Result<Written, ErofsError> {
    // Every reachable node once, breadth first from the root, with its link count.
    let mut order: Vec<(NodeId, NodeId)> = Vec::new();
    let mut links: HashMap<NodeId, u32> = HashMap::new();
    let mut queue = VecDeque::from([(ROOT, ROOT)]);
    links.insert(ROOT, 1);
    while let Some((id, parent)) = queue.pop_front() {
        order.push((id, parent));
        if let NodeKind::Directory(children) = &tree.node(id).kind {
            for &child in children.values() {
                let n = links.entry(child).or_insert(0);
                *n += 1;
                if *n == 1 {
                    queue.push_back((child, id));
                }
            }
        }
    }

    // Shapes, then blocks for data that is not inline, then places in the metadata area.
    let mut next_block = data.next_block;
    let mut placed: Vec<Placed> = Vec::with_capacity(order.len());
    for &(id, parent) in &order {
        let node = tree.node(id);
        let xattrs = xattr_body(tree, id);
        let head = format::INODE_SIZE + xattrs.len() as u64;
        let (size, nlink) = match &node.kind {
            NodeKind::Directory(children) => {
                let subdirs = children
                    .values()
                    .filter(|&&c| matches!(tree.node(c).kind, NodeKind::Directory(_)))
                    .count() as u32;
                let names = dir_names(children);
                (format::dir_size(names.iter().map(|n| n.len())), 2 + subdirs)
            }
            NodeKind::Regular { size, .. } => (*size, links[&id]),
            NodeKind::Symlink(target) => (target.len() as u64, links[&id]),
            _ => (0, links[&id]),
        };
        let has_blocks = matches!(node.kind, NodeKind::Directory(_) | NodeKind::Symlink(_));
        let (layout, blkaddr) = if has_blocks && head + size > BLOCK {
            let first = next_block;
            next_block += size.div_ceil(BLOCK);
            (DataLayout::Plain, first)
        } else if has_blocks {
            (DataLayout::Inline, 0)
        } else {
            (DataLayout::Plain, 0)
        };
        if next_block > u64::from(u32::MAX) {
            return Err(ErofsError::TooLarge);
        }
        placed.push(Placed {
            id,
            parent,
            nid: 0,
            layout,
            xattrs,
            size,
            blkaddr: blkaddr as u32,
            nlink,
        });
    }
    let meta_blkaddr = next_block;
    let mut pos = 0u64;
    let mut nids = HashMap::with_capacity(placed.len());
    for p in &mut placed {
        let len = format::INODE_SIZE
            + p.xattrs.len() as u64
            + if p.layout == DataLayout::Inline {
                p.size
            } else {
                0
            };
        if pos % BLOCK + len > BLOCK {
            pos = pos.next_multiple_of(BLOCK);
        }
        p.nid = pos / SLOT;
        nids.insert(p.id, p.nid);
        pos = (pos + len).next_multiple_of(SLOT);
    }
    let meta_bytes = pos;
    let total_blocks = meta_blkaddr + meta_bytes.div_ceil(BLOCK);
    if total_blocks > u64::from(u32::MAX)
        || placed.first().is_none_or(|p| p.nid > u64::from(u16::MAX))
    {
        return Err(ErofsError::TooLarge);
    }

    let file = data.file;
    // Directory and symlink blocks.
    for p in placed
        .iter()
        .filter(|p| p.layout == DataLayout::Plain && p.blkaddr != 0)
    {
        let bytes = inline_or_block_data(tree, p, &nids);
        let mut out = file;
        out.seek(SeekFrom::Start(u64::from(p.blkaddr) * BLOCK))
            .map_err(io_err("seek in the image"))?;
        out.write_all(&bytes).map_err(io_err("write the image"))?;
    }
    // The metadata area, in one sequential pass.
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.seek(SeekFrom::Start(meta_blkaddr * BLOCK))
        .map_err(io_err("seek in the image"))?;
    let mut at = 0u64;
    for (ino, p) in placed.iter().enumerate() {
        let node = tree.node(p.id);
        let start = p.nid * SLOT;
        write_zeros(&mut out, start - at)?;
        let u = match &node.kind {
            NodeKind::Regular { blkaddr, size } if *size > 0 => *blkaddr,
            NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                format::encode_dev(*major, *minor)
            }
            _ => p.blkaddr,
        };
        let inode = Inode {
            layout: p.layout,
            // a symlink's permissions mean nothing; every Linux filesystem shows 0777
            mode: (kind_of(&node.kind).1
                | if matches!(node.kind, NodeKind::Symlink(_)) {
                    0o777
                } else {
                    node.perm & 0o7777
                }) as u16,
            size: p.size,
            u,
            ino: ino as u32 + 1,
            uid: node.uid,
            gid: node.gid,
            mtime: node.mtime.0,
            mtime_nsec: node.mtime.1,
            nlink: p.nlink,
            xattr_icount: format::xattr_icount(p.xattrs.len().saturating_sub(12) as u64),
        };
        out.write_all(&inode.encode())
            .map_err(io_err("write the image"))?;
        out.write_all(&p.xattrs)
            .map_err(io_err("write the image"))?;
        let mut len = format::INODE_SIZE + p.xattrs.len() as u64;
        if p.layout == DataLayout::Inline {
            let bytes = inline_or_block_data(tree, p, &nids);
            out.write_all(&bytes).map_err(io_err("write the image"))?;
            len += bytes.len() as u64;
        }
        at = start + len;
    }
    write_zeros(&mut out, total_blocks * BLOCK - meta_blkaddr * BLOCK - at)?;
    out.flush().map_err(io_err("write the image"))?;
    drop(out);

    let sb = Superblock {
        root_nid: placed[0].nid as u16,
        inodes: placed.len() as u64,
        blocks: total_blocks as u32,
        meta_blkaddr: meta_blkaddr as u32,
        build_time,
        uuid,
        volume_name: *b"skiff-image\0\0\0\0\0",
    };
    let mut out = file;
    out.seek(SeekFrom::Start(format::SUPER_OFFSET))
        .map_err(io_err("seek in the image"))?;
    out.write_all(&sb.encode())
        .map_err(io_err("write the superblock"))?;
    file.set_len(total_blocks * BLOCK)
        .map_err(io_err("size the image"))?;
    Ok(Written {
        inodes: placed.len() as u64,
        blocks: total_blocks,
    })
}

/// A directory's entries or a symlink's target, as stored.
fn inline_or_block_data(tree: &Tree, p: &Placed, nids: &HashMap<NodeId, u64>) -> Vec<u8> {
    match &tree.node(p.id).kind {
        NodeKind::Directory(_) => {
            format::encode_dir_blocks(&dirents(tree, p.id, p.parent, nids)).concat()
        }
        NodeKind::Symlink(target) => target.clone(),
        _ => Vec::new(),
    }
}

fn write_zeros(out: &mut impl Write, mut n: u64) -> Result<(), ErofsError> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..k])
            .map_err(io_err("write the image"))?;
        n -= k as u64;
    }
    Ok(())
}
