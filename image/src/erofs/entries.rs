//! A layer tar read entry by entry, with PAX records and GNU long names applied to the entry
//! they describe. The tar crate runs in raw mode and the extension records are read here, each
//! at most [`MAX_META_BYTES`], so a hostile header cannot make the reader allocate without limit.

use std::io::{self, Read};

use tar::EntryType;

use super::ErofsError;

/// Largest PAX extension block or GNU long name accepted.
pub const MAX_META_BYTES: u64 = 1 << 20;
/// The longest path (or link target) an entry may have: the kernel's `PATH_MAX`.
const MAX_PATH: usize = 4096;

/// What kind of file an entry makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
    HardLink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// One entry's metadata after PAX records and GNU long names were applied.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: Kind,
    pub path: Vec<u8>,
    pub link: Option<Vec<u8>>,
    /// Permission bits (with set-id and sticky bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    pub device: (u32, u32),
    pub size: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    /// The entry's name as the container sees it, for messages.
    pub fn shown(&self) -> String {
        format!(
            "/{}",
            String::from_utf8_lossy(&self.path).trim_start_matches('/')
        )
    }
}

/// Extension records waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

fn bad(msg: impl Into<String>) -> ErofsError {
    ErofsError::Layer(msg.into())
}

fn tar_err(e: io::Error) -> ErofsError {
    bad(format!("tar stream: {e}"))
}

/// Calls `apply` for each entry of the tar in `reader`, with a reader of its data.
pub fn for_each(
    reader: impl Read,
    mut apply: impl FnMut(Meta, &mut dyn Read) -> Result<(), ErofsError>,
) -> Result<(), ErofsError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(tar_err)?.raw(true);
    let mut pending = Pending::default();
    for entry in entries {
        let mut entry = entry.map_err(tar_err)?;
        let kind = match entry.header().entry_type() {
            EntryType::XHeader => {
                pending.pax = Some(read_meta_block(&mut entry)?);
                continue;
            }
            EntryType::XGlobalHeader => {
                read_meta_block(&mut entry)?;
                continue;
            }
            EntryType::GNULongName => {
                pending.long_name = Some(trim_nul(read_meta_block(&mut entry)?));
                continue;
            }
            EntryType::GNULongLink => {
                pending.long_link = Some(trim_nul(read_meta_block(&mut entry)?));
                continue;
            }
            EntryType::GNUSparse => return Err(bad("GNU sparse entries are not supported")),
            EntryType::Regular | EntryType::Continuous => Kind::Regular,
            EntryType::Directory => Kind::Directory,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Link => Kind::HardLink,
            EntryType::Char => Kind::CharDevice,
            EntryType::Block => Kind::BlockDevice,
            EntryType::Fifo => Kind::Fifo,
            other => {
                tracing::debug!(kind = ?other, "skipping a tar entry of unsupported type");
                pending = Pending::default();
                continue;
            }
        };
        let meta = meta(&entry, kind, std::mem::take(&mut pending))?;
        let shown = meta.shown();
        apply(meta, &mut entry).map_err(|e| match e {
            ErofsError::Layer(m) => bad(format!("{shown}: {m}")),
            other => other,
        })?;
    }
    Ok(())
}

fn read_meta_block<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<u8>, ErofsError> {
    let size = entry.header().entry_size().map_err(tar_err)?;
    if size > MAX_META_BYTES {
        return Err(bad(format!(
            "extension header of {size} bytes exceeds {MAX_META_BYTES}"
        )));
    }
    let mut v = Vec::with_capacity(size as usize);
    entry.read_to_end(&mut v).map_err(tar_err)?;
    Ok(v)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn id32(v: u64, what: &str) -> Result<u32, ErofsError> {
    u32::try_from(v).map_err(|_| bad(format!("{what} {v} out of range")))
}

/// A PAX time: seconds, optionally with a fraction (up to nanoseconds), possibly negative.
fn parse_time(s: &str) -> Result<(i64, u32), ErofsError> {
    let invalid = || bad(format!("bad PAX mtime {s:?}"));
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().map_err(|_| invalid())?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    let nanos = if digits.is_empty() {
        0
    } else {
        let n: u32 = digits.parse().map_err(|_| invalid())?;
        n * 10u32.pow(9 - digits.len() as u32)
    };
    // "-1.5" is 1.5 s before the epoch: -2 s + 0.5 s
    if s.starts_with('-') && nanos > 0 {
        Ok((secs - 1, 1_000_000_000 - nanos))
    } else {
        Ok((secs, nanos))
    }
}

fn meta<R: Read>(
    entry: &tar::Entry<'_, R>,
    kind: Kind,
    pending: Pending,
) -> Result<Meta, ErofsError> {
    let h = entry.header();
    let mut meta = Meta {
        kind,
        path: pending
            .long_name
            .unwrap_or_else(|| h.path_bytes().into_owned()),
        link: pending
            .long_link
            .or_else(|| h.link_name_bytes().map(|l| l.into_owned())),
        mode: h.mode().map_err(tar_err)? & 0o7777,
        uid: id32(h.uid().map_err(tar_err)?, "uid")?,
        gid: id32(h.gid().map_err(tar_err)?, "gid")?,
        mtime: (
            i64::try_from(h.mtime().map_err(tar_err)?).map_err(|_| bad("mtime out of range"))?,
            0,
        ),
        device: (0, 0),
        size: h.entry_size().map_err(tar_err)?,
        xattrs: Vec::new(),
    };
    if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
        meta.device = (
            h.device_major().map_err(tar_err)?.unwrap_or(0),
            h.device_minor().map_err(tar_err)?.unwrap_or(0),
        );
    }
    if let Some(pax) = pending.pax {
        for ext in tar::PaxExtensions::new(&pax) {
            let ext = ext.map_err(|e| bad(format!("PAX record: {e}")))?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let text = || String::from_utf8_lossy(value);
            match key {
                b"path" => meta.path = value.to_vec(),
                b"linkpath" => meta.link = Some(value.to_vec()),
                b"uid" => meta.uid = text().parse().map_err(|_| bad("bad PAX uid"))?,
                b"gid" => meta.gid = text().parse().map_err(|_| bad("bad PAX gid"))?,
                b"mtime" => meta.mtime = parse_time(&text())?,
                b"size" => {
                    let size: u64 = text().parse().map_err(|_| bad("bad PAX size"))?;
                    if size != meta.size {
                        return Err(bad("PAX size overrides of the header are not supported"));
                    }
                }
                _ => {
                    if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                        // a repeated name: the last record wins
                        meta.xattrs.retain(|(n, _)| n != name);
                        meta.xattrs.push((name.to_vec(), value.to_vec()));
                    }
                }
            }
        }
    }
    if meta.path.len() > MAX_PATH || meta.link.as_ref().is_some_and(|l| l.len() > MAX_PATH) {
        return Err(bad(format!(
            "a path or link target is longer than {MAX_PATH} bytes"
        )));
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times_keep_their_fraction() {
        assert_eq!(parse_time("12").unwrap(), (12, 0));
        assert_eq!(parse_time("12.5").unwrap(), (12, 500_000_000));
        assert_eq!(parse_time("12.123456789123").unwrap(), (12, 123_456_789));
        assert_eq!(parse_time("-1.5").unwrap(), (-2, 500_000_000));
        assert!(parse_time("x").is_err());
        assert!(parse_time("1.x").is_err());
        assert!(parse_time("1.-5").is_err());
    }
}
