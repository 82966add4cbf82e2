//! Containers, foreground and detached: state on disk, their supervision (by the foreground
//! `skiff run` itself, or by the monitor process of a detached container), its API, logs, and
//! the lifecycle subcommands (`ps`, `logs`, `stop`, `kill`, `rm`, `wait`, `inspect`, `exec`, `cp`).

pub mod api;
pub mod cli;
pub mod commands;
pub mod copy;
pub mod detach;
pub mod disks;
pub mod exec;
pub mod hold;
pub mod logs;
pub mod monitor;
pub mod start;
pub mod state;
pub mod time;
