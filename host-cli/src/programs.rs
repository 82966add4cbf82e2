//! The helper programs skiff starts (qemu, passt, mke2fs): `$SKIFF_<NAME>` when set, else the
//! first match on `PATH`, then the system directories an ordinary user's `PATH` may lack
//! (`/usr/sbin`, `/sbin`). What a missing one means is each caller's to say.

use std::path::PathBuf;

/// The program `name`: the path in environment variable `var` when it is set and not empty,
/// else `name` in the first directory of `PATH` that has it.
pub fn find(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
