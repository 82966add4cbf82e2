//! The image subcommands: pull, login/logout, images, rmi, tag, image inspect/prune, load,
//! save, import, and the name resolution `skiff run` uses.

pub mod archive;
pub mod images;
pub mod login;
pub mod progress;
pub mod pull;

use anyhow::{Context, Result};
use image::Store;

/// Opens the image store under skiff's state root.
pub fn store() -> Result<Store> {
    let root = Store::default_root();
    Store::open(&root).with_context(|| format!("cannot open the image store in {}", root.display()))
}
