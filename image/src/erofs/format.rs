//! EROFS's on-disk structures, as the Linux kernel reads them (`fs/erofs/erofs_fs.h`): the
//! superblock, the 64-byte extended inode, inline xattrs and directory entries, little-endian.
//! Only the uncompressed layouts are written: `FLAT_PLAIN` (data in whole blocks) and
//! `FLAT_INLINE` (all the data right after the inode, in the same block).

/// Block size (bits); EROFS needs it to be at most the guest's page size.
pub const BLOCK_BITS: u8 = 12;
pub const BLOCK: u64 = 1 << BLOCK_BITS;
/// Where the superblock starts in block 0.
pub const SUPER_OFFSET: u64 = 1024;
const MAGIC: u32 = 0xE0F5_E1E2;
/// An inode number (nid) counts 32-byte slots from the start of the metadata area.
pub const SLOT: u64 = 32;
pub const INODE_SIZE: u64 = 64;
pub const DIRENT_SIZE: u64 = 12;
/// The longest name a directory entry may carry.
pub const NAME_MAX: usize = 255;
const XATTR_HEADER: u64 = 12;

/// How an inode's data is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataLayout {
    /// Data in whole blocks from `raw_blkaddr` on.
    Plain,
    /// All data right after the inode and its xattrs, within one block.
    Inline,
}

/// File types of directory entries (the kernel's `FT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FileType {
    Regular = 1,
    Directory = 2,
    CharDevice = 3,
    BlockDevice = 4,
    Fifo = 5,
    Symlink = 7,
}

/// The superblock's variable fields.
pub struct Superblock {
    pub root_nid: u16,
    pub inodes: u64,
    pub blocks: u32,
    pub meta_blkaddr: u32,
    pub build_time: u64,
    /// Identifies what the image holds (skiff stores its cache key here).
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
}

impl Superblock {
    /// The 128 bytes at [`SUPER_OFFSET`].
    pub fn encode(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        // checksum (4..8) and feature_compat (8..12): none
        b[12] = BLOCK_BITS;
        b[14..16].copy_from_slice(&self.root_nid.to_le_bytes());
        b[16..24].copy_from_slice(&self.inodes.to_le_bytes());
        b[24..32].copy_from_slice(&self.build_time.to_le_bytes());
        b[36..40].copy_from_slice(&self.blocks.to_le_bytes());
        b[40..44].copy_from_slice(&self.meta_blkaddr.to_le_bytes());
        // xattr_blkaddr (44..48): no shared xattrs
        b[48..64].copy_from_slice(&self.uuid);
        b[64..80].copy_from_slice(&self.volume_name);
        // feature_incompat (80..84): none; dirblkbits (90): directory blocks are fs blocks
        b
    }

    /// Reads back the fields skiff checks on a cached image: magic and block size, then the
    /// uuid and the block count.
    pub fn uuid_of(block0: &[u8]) -> Option<([u8; 16], u32)> {
        let sb = block0.get(SUPER_OFFSET as usize..SUPER_OFFSET as usize + 128)?;
        if sb[0..4] != MAGIC.to_le_bytes() || sb[12] != BLOCK_BITS {
            return None;
        }
        let blocks = u32::from_le_bytes(sb[36..40].try_into().ok()?);
        Some((sb[48..64].try_into().ok()?, blocks))
    }
}

/// One extended inode's fields.
pub struct Inode {
    pub layout: DataLayout,
    /// File type and permission bits, as `st_mode`.
    pub mode: u16,
    pub size: u64,
    /// `raw_blkaddr` for data in blocks, the encoded device number for devices, else 0.
    pub u: u32,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub nlink: u32,
    /// `i_xattr_icount`, from [`xattr_icount`].
    pub xattr_icount: u16,
}

impl Inode {
    pub fn encode(&self) -> [u8; INODE_SIZE as usize] {
        let layout = match self.layout {
            DataLayout::Plain => 0u16,
            DataLayout::Inline => 2,
        };
        let mut b = [0u8; INODE_SIZE as usize];
        // bit 0: the extended (64-byte) inode; bits 1-3: the data layout
        b[0..2].copy_from_slice(&(1 | layout << 1).to_le_bytes());
        b[2..4].copy_from_slice(&self.xattr_icount.to_le_bytes());
        b[4..6].copy_from_slice(&self.mode.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..20].copy_from_slice(&self.u.to_le_bytes());
        b[20..24].copy_from_slice(&self.ino.to_le_bytes());
        b[24..28].copy_from_slice(&self.uid.to_le_bytes());
        b[28..32].copy_from_slice(&self.gid.to_le_bytes());
        b[32..40].copy_from_slice(&self.mtime.to_le_bytes());
        b[40..44].copy_from_slice(&self.mtime_nsec.to_le_bytes());
        b[44..48].copy_from_slice(&self.nlink.to_le_bytes());
        b
    }
}

/// The kernel's `new_encode_dev`.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// An xattr name split into EROFS's prefix index and the rest, or `None` for a namespace EROFS
/// cannot name.
pub fn xattr_index(name: &[u8]) -> Option<(u8, &[u8])> {
    const PREFIXES: [(&[u8], u8); 6] = [
        (b"user.", 1),
        (b"system.posix_acl_access", 2),
        (b"system.posix_acl_default", 3),
        (b"trusted.", 4),
        (b"lustre.", 5),
        (b"security.", 6),
    ];
    PREFIXES.iter().find_map(|(prefix, index)| {
        name.strip_prefix(*prefix).and_then(|rest| {
            // the ACL names are whole names, the others prefixes of something
            let whole = *index == 2 || *index == 3;
            (whole == rest.is_empty()).then_some((*index, rest))
        })
    })
}

/// Bytes of one xattr entry (header, name, value, padded to 4).
pub fn xattr_entry_size(name_len: usize, value_len: usize) -> u64 {
    (4 + name_len as u64 + value_len as u64).div_ceil(4) * 4
}

/// `i_xattr_icount` for inline xattr entries of `entries_size` bytes (0: no xattrs).
pub fn xattr_icount(entries_size: u64) -> u16 {
    if entries_size == 0 {
        0
    } else {
        (1 + entries_size / 4) as u16
    }
}

/// The inline xattr body: the 12-byte header, then each `(index, suffix, value)` entry.
pub fn encode_xattrs(entries: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
    if entries.is_empty() {
        return Vec::new();
    }
    let mut b = vec![0u8; XATTR_HEADER as usize];
    // h_name_filter (0..4) stays 0: a set bit would say "not present" were the filter on (it
    // is off: no XATTR_FILTER feature)
    for (index, name, value) in entries {
        let start = b.len();
        b.push(name.len() as u8);
        b.push(*index);
        b.extend_from_slice(&(value.len() as u16).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(value);
        b.resize(
            start + xattr_entry_size(name.len(), value.len()) as usize,
            0,
        );
    }
    b
}

/// Size of the xattr body for entries of `entries_size` bytes.
pub fn xattr_body_size(entries_size: u64) -> u64 {
    if entries_size == 0 {
        0
    } else {
        XATTR_HEADER + entries_size
    }
}

/// A directory entry to encode.
pub struct Dirent<'a> {
    pub name: &'a [u8],
    pub nid: u64,
    pub file_type: FileType,
}

/// Splits sorted entries into directory blocks: each holds as many entries as fit, their
/// 12-byte records first, then the names. Returns each block's bytes; every block but the last
/// is [`BLOCK`] long (zero-padded), the last as long as it needs.
pub fn encode_dir_blocks(entries: &[Dirent<'_>]) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let mut end = start;
        let mut used = 0u64;
        while end < entries.len() {
            let need = DIRENT_SIZE + entries[end].name.len() as u64;
            if used + need > BLOCK {
                break;
            }
            used += need;
            end += 1;
        }
        // names are at most NAME_MAX bytes, so each entry fits a block; never loop on one that
        // would not
        let end = end.max(start + 1);
        let chunk = &entries[start..end];
        let mut b = Vec::with_capacity(used as usize);
        let mut nameoff = DIRENT_SIZE * chunk.len() as u64;
        for e in chunk {
            b.extend_from_slice(&e.nid.to_le_bytes());
            b.extend_from_slice(&(nameoff as u16).to_le_bytes());
            b.push(e.file_type as u8);
            b.push(0);
            nameoff += e.name.len() as u64;
        }
        for e in chunk {
            b.extend_from_slice(e.name);
        }
        blocks.push(b);
        start = end;
    }
    let last = blocks.len().saturating_sub(1);
    for b in &mut blocks[..last] {
        b.resize(BLOCK as usize, 0);
    }
    blocks
}

/// Size in bytes of a directory whose entries have names of these lengths (as
/// [`encode_dir_blocks`] lays them out).
pub fn dir_size(name_lens: impl Iterator<Item = usize>) -> u64 {
    let mut full = 0u64;
    let mut used = 0u64;
    for len in name_lens {
        let need = DIRENT_SIZE + len as u64;
        if used + need > BLOCK {
            full += 1;
            used = 0;
        }
        used += need;
    }
    full * BLOCK + used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_encode_as_the_kernel_decodes() {
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(
            encode_dev(8, 0x12345),
            0x12345_u32 & 0xff | 8 << 8 | (0x12300 << 12)
        );
    }

    #[test]
    fn xattr_names_map_to_prefix_indexes() {
        assert_eq!(xattr_index(b"user.a"), Some((1, &b"a"[..])));
        assert_eq!(
            xattr_index(b"security.capability"),
            Some((6, &b"capability"[..]))
        );
        assert_eq!(xattr_index(b"system.posix_acl_access"), Some((2, &b""[..])));
        assert_eq!(xattr_index(b"system.posix_acl_accessx"), None);
        assert_eq!(xattr_index(b"system.other"), None);
        assert_eq!(xattr_index(b"user."), None);
        let body = encode_xattrs(&[(1, b"a", b"xyz")]);
        assert_eq!(body.len() as u64, xattr_body_size(xattr_entry_size(1, 3)));
        assert_eq!(xattr_icount(8), 3);
    }

    #[test]
    fn directory_blocks_split_where_entries_no_longer_fit() {
        let names: Vec<Vec<u8>> = (0..400)
            .map(|i| format!("name-{i:05}").into_bytes())
            .collect();
        let entries: Vec<Dirent<'_>> = names
            .iter()
            .map(|n| Dirent {
                name: n,
                nid: 7,
                file_type: FileType::Regular,
            })
            .collect();
        let blocks = encode_dir_blocks(&entries);
        let total: u64 = blocks.iter().map(|b| b.len() as u64).sum();
        assert_eq!(total, dir_size(names.iter().map(|n| n.len())));
        assert!(blocks.len() > 1);
        for b in &blocks[..blocks.len() - 1] {
            assert_eq!(b.len() as u64, BLOCK);
        }
        // the first entry's name offset says how many entries the block holds
        let first = u16::from_le_bytes([blocks[0][8], blocks[0][9]]) as u64;
        assert_eq!(first % DIRENT_SIZE, 0);
        assert_eq!(first / DIRENT_SIZE, (BLOCK / (DIRENT_SIZE + 10)));
    }
}
