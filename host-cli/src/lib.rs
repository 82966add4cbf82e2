//! The skiff library: what the `skiff` command is built from.

pub mod session;
