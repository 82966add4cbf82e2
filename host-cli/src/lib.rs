//! skiff: run OCI containers, each in its own lightweight virtual machine. The `skiff` binary
//! is a thin front over these modules.

pub mod assets;
pub mod cli;
pub mod commands;
pub mod console;
pub mod container;
pub mod dirs;
pub mod engine;
pub mod forward;
pub mod info;
pub mod initramfs;
pub mod launch;
pub mod limits;
pub mod mounts;
pub mod network;
pub mod programs;
pub mod run;
pub mod security;
pub mod session;
pub mod shares;
pub mod terminal;
pub mod volumes;
