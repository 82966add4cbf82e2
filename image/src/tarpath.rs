//! The path rules of image layers: where a tar entry lands below the root, and which names are
//! OCI whiteouts. Pure functions, so the rules are tested on their own.
//!
//! A name is cleaned lexically like docker does: a leading `/` is dropped (absolute names land
//! below the root), `.` and empty components vanish, `a/../b` folds to `b`, and a `..` that would
//! climb above the root rejects the whole layer. Symlinks are not looked at here; they are
//! followed inside the image root by the EROFS writer's tree (see `erofs::tree`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Prefix of a whiteout entry: `.wh.NAME` deletes `NAME` of lower layers.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Opaque marker: hides every lower-layer entry of the directory holding it.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Other names starting with this are aufs bookkeeping and carry nothing.
const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// A name that breaks the rules.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("entry {0:?} escapes the root with `..`")]
    Escapes(String),
    #[error("entry {0:?} contains a NUL byte")]
    Nul(String),
    #[error("whiteout {0:?} names nothing")]
    EmptyWhiteout(String),
}

/// Cleans a tar name into a path relative to the root; the empty path is the root itself.
pub fn clean(name: &[u8]) -> Result<PathBuf, PathError> {
    let shown = || String::from_utf8_lossy(name).into_owned();
    if name.contains(&0) {
        return Err(PathError::Nul(shown()));
    }
    let mut out = PathBuf::new();
    for comp in Path::new(OsStr::from_bytes(name)).components() {
        match comp {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err(PathError::Escapes(shown()));
                }
            }
            Component::Normal(c) => out.push(c),
        }
    }
    Ok(out)
}

/// What a cleaned entry path means under the OCI layer rules.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    /// A plain entry to create at this path.
    Plain,
    /// Delete this path of lower layers.
    Whiteout(PathBuf),
    /// Hide all lower-layer contents of this directory.
    Opaque(PathBuf),
    /// aufs bookkeeping (`.wh..wh.*` other than the opaque marker): skipped.
    Ignored,
}

/// Classifies a cleaned path.
pub fn classify(path: &Path) -> Result<Entry, PathError> {
    let Some(name) = path.file_name() else {
        return Ok(Entry::Plain);
    };
    let name = name.as_bytes();
    let parent = path.parent().unwrap_or(Path::new(""));
    if name == OPAQUE_MARKER {
        return Ok(Entry::Opaque(parent.to_path_buf()));
    }
    if name.starts_with(AUFS_META_PREFIX) {
        return Ok(Entry::Ignored);
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => Ok(Entry::Plain),
        Some(target) if target.is_empty() || target == b"." || target == b".." => Err(
            PathError::EmptyWhiteout(path.to_string_lossy().into_owned()),
        ),
        Some(target) => Ok(Entry::Whiteout(parent.join(OsStr::from_bytes(target)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Result<PathBuf, PathError> {
        clean(s.as_bytes())
    }

    #[test]
    fn names_are_cleaned_below_the_root() {
        assert_eq!(c("a/b/c").unwrap(), Path::new("a/b/c"));
        assert_eq!(c("./a//b/./c/").unwrap(), Path::new("a/b/c"));
        assert_eq!(c("/etc/passwd").unwrap(), Path::new("etc/passwd"));
        assert_eq!(c("//x").unwrap(), Path::new("x"));
        assert_eq!(c("a/../b").unwrap(), Path::new("b"));
        assert_eq!(c("a/b/../../c").unwrap(), Path::new("c"));
        assert_eq!(c("./").unwrap(), Path::new(""));
        assert_eq!(c("/").unwrap(), Path::new(""));
        assert_eq!(c("a/..").unwrap(), Path::new(""));
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for bad in [
            "..",
            "../x",
            "a/../../x",
            "/../etc/passwd",
            "./../..",
            "a/b/../../../c",
        ] {
            assert!(
                matches!(c(bad), Err(PathError::Escapes(_))),
                "{bad} accepted"
            );
        }
        assert!(matches!(clean(b"a\0b"), Err(PathError::Nul(_))));
    }

    #[test]
    fn whiteouts_are_recognised() {
        let k = |s: &str| classify(&c(s).unwrap());
        assert_eq!(k("etc/passwd").unwrap(), Entry::Plain);
        assert_eq!(k("").unwrap(), Entry::Plain);
        assert_eq!(
            k("etc/.wh.passwd").unwrap(),
            Entry::Whiteout("etc/passwd".into())
        );
        assert_eq!(k(".wh.top").unwrap(), Entry::Whiteout("top".into()));
        assert_eq!(k("usr/.wh..wh..opq").unwrap(), Entry::Opaque("usr".into()));
        assert_eq!(k(".wh..wh..opq").unwrap(), Entry::Opaque("".into()));
        assert_eq!(k("a/.wh..wh.plnk").unwrap(), Entry::Ignored);
        assert_eq!(k("a/x.wh.y").unwrap(), Entry::Plain);
        for bad in ["a/.wh.", "a/.wh..", "a/.wh..."] {
            assert!(matches!(k(bad), Err(PathError::EmptyWhiteout(_))), "{bad}");
        }
    }
}
