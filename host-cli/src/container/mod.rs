//! Containers that outlive the command that started them: state on disk, the per-container
//! monitor process that owns a detached container's VM, its API, logs, and the lifecycle
//! subcommands (`ps`, `logs`, `stop`, `kill`, `rm`, `wait`, `inspect`, `exec`).

pub mod api;
pub mod cli;
pub mod commands;
pub mod detach;
pub mod exec;
pub mod logs;
pub mod monitor;
pub mod state;
pub mod time;
