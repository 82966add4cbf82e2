//! A first look at an archive file before its entries are read for real: the tar crate reads a
//! GNU long-name or PAX extension entry whole into memory, bounded only by the size its own
//! header claims, so every such entry is held to [`MAX_EXTENSION`] first. The look reads
//! headers only and seeks over entry data.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use tar::EntryType;

/// The largest long-name or PAX extension entry an archive may carry.
pub const MAX_EXTENSION: u64 = 1 << 20;

/// Checks the extension entries of the archive in `file`, then rewinds it.
pub fn check_extensions(mut file: &File) -> Result<(), String> {
    let mut tar = tar::Archive::new(file);
    let entries = tar
        .entries_with_seek()
        .map_err(|e| e.to_string())?
        .raw(true);
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let header = entry.header();
        let kind = header.entry_type();
        if matches!(
            kind,
            EntryType::GNULongName
                | EntryType::GNULongLink
                | EntryType::XHeader
                | EntryType::XGlobalHeader
        ) {
            let size = header.entry_size().map_err(|e| e.to_string())?;
            if size > MAX_EXTENSION {
                return Err(format!(
                    "an extension header of {size} bytes exceeds the limit of {MAX_EXTENSION}"
                ));
            }
        }
    }
    file.seek(SeekFrom::Start(0))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn archive_with_long_name(len: usize) -> tempfile::NamedTempFile {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(2);
        h.set_mode(0o644);
        let name = "n".repeat(len);
        b.append_data(&mut h, &name, b"hi".as_slice()).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&b.into_inner().unwrap()).unwrap();
        f
    }

    #[test]
    fn long_names_pass_and_the_file_is_rewound() {
        let f = archive_with_long_name(300);
        let file = f.reopen().unwrap();
        check_extensions(&file).unwrap();
        let mut tar = tar::Archive::new(&file);
        let names: Vec<usize> = tar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().as_os_str().len())
            .collect();
        assert_eq!(names, [300]);
    }

    #[test]
    fn oversized_extension_entries_are_refused() {
        let f = archive_with_long_name(MAX_EXTENSION as usize + 10);
        let err = check_extensions(&f.reopen().unwrap()).unwrap_err();
        assert!(err.contains("exceeds the limit"), "{err}");
    }
}
