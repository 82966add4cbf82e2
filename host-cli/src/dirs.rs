//! Where skiff keeps things on the host: the cache (kernel builds, initramfs images) and the
//! per-run directories holding sockets and console logs.

use std::path::PathBuf;

/// The cache root: `$SKIFF_CACHE`, else `$XDG_CACHE_HOME/skiff`, else `~/.cache/skiff`.
/// `kernel-config/build.sh` uses the same rule.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SKIFF_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("skiff");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".cache").join("skiff")
}

/// A fresh private directory for one VM's sockets and logs. Unix socket paths are limited to
/// 108 bytes, so it lives directly under the temporary directory.
pub fn run_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("skiff-")
        .tempdir_in(std::env::temp_dir())
}
