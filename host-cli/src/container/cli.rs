//! The lifecycle subcommands' command line (flattened into `skiff`'s own) and their dispatch.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers.
    Ps(PsArgs),
    /// Show a container's output.
    Logs(LogsArgs),
    /// Stop running containers: SIGTERM, then SIGKILL after the timeout.
    Stop(StopArgs),
    /// Send a signal to running containers.
    Kill(KillArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// Wait for containers to end and print their exit codes.
    Wait(WaitArgs),
    /// Show containers' configuration and state as JSON.
    Inspect(InspectArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Copy files between a running container and the host (docker's `cp`).
    Cp(CpArgs),
    /// Start exited containers again, on their own filesystem.
    Start(StartArgs),
    /// List a container's published ports.
    Port(PortArgs),
    /// The monitor of a detached container (started by `run -d`).
    #[command(name = "container-monitor", hide = true)]
    Monitor(MonitorArgs),
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Only print ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// `json`: one JSON object per container and line.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep following the output.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<usize>,
    /// Put each line's time in front of it.
    #[arg(short, long)]
    pub timestamps: bool,
    pub container: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before SIGKILL (default: the container's
    /// --stop-timeout, else 10).
    #[arg(short = 't', long = "time")]
    pub time: Option<u64>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal: a name (KILL, SIGTERM) or a number.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running containers first.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    pub container: String,
    /// Only this container port: PORT or PORT/tcp|udp.
    pub port: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open and send it to the process.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to take the host's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container (default: the container's).
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: USER[:GROUP] (default: the container's).
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `skiff cp [-a] [-L] SRC DST`: one side `CONTAINER:PATH`, the other a host path or `-` (a tar
/// stream on stdin or stdout).
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Archive mode: keep uid and gid (else copies into the container belong to root, copies
    /// out to the user running skiff).
    #[arg(short, long)]
    pub archive: bool,
    /// Follow SRC_PATH when it is a symlink.
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// CONTAINER:SRC_PATH, a host path, or `-` (a tar stream on stdin).
    #[arg(value_name = "SRC")]
    pub src: String,
    /// CONTAINER:DEST_PATH, a host path, or `-` (a tar stream on stdout).
    #[arg(value_name = "DST")]
    pub dst: String,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach the container's output (and exit with its code).
    #[arg(short, long)]
    pub attach: bool,
    /// Attach its stdin too (for containers created with -i).
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The container's state directory.
    pub dir: PathBuf,
}

/// Runs a lifecycle subcommand; returns skiff's exit code.
pub fn dispatch(cmd: ContainerCommand) -> Result<i32> {
    use super::commands as c;
    match cmd {
        ContainerCommand::Ps(a) => c::ps(&a),
        ContainerCommand::Logs(a) => c::logs(&a),
        ContainerCommand::Stop(a) => c::stop(&a),
        ContainerCommand::Kill(a) => c::kill(&a),
        ContainerCommand::Rm(a) => c::rm(&a),
        ContainerCommand::Wait(a) => c::wait(&a),
        ContainerCommand::Inspect(a) => c::inspect(&a),
        ContainerCommand::Exec(a) => super::exec::exec(a),
        ContainerCommand::Cp(a) => super::copy::cp(a),
        ContainerCommand::Start(a) => super::start::start(&a),
        ContainerCommand::Port(a) => c::port(&a),
        ContainerCommand::Monitor(a) => super::monitor::run(&a.dir),
    }
}
