//! `skiff info`: what skiff would boot and which engines this host can use, one `key: value`
//! line each (scripts read the `kvm:` line to know whether guest code runs natively).

use anyhow::Result;

use crate::engine::kvm;
use crate::{assets, dirs};

pub fn info() -> Result<i32> {
    let cache = dirs::cache_dir();
    let show = |r: Result<std::path::PathBuf>| match r {
        Ok(p) => p.display().to_string(),
        Err(e) => format!("missing: {e:#}"),
    };
    println!("version: {}", env!("CARGO_PKG_VERSION"));
    println!("kernel: {}", show(assets::kernel(&cache)));
    println!("guest-init: {}", show(assets::guest_init()));
    println!("cache: {}", cache.display());
    match kvm::probe() {
        Ok(()) => println!("kvm: native"),
        Err(why) => println!("kvm: emulated: {why}"),
    }
    Ok(0)
}
