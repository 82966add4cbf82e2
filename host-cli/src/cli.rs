//! The command line: clap definitions of `skiff` and its subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run OCI containers, each in its own lightweight virtual machine.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, propagate_version = true)]
pub struct Cli {
    /// Show debug logs and the guest's console output.
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new container.
    Run(Box<RunArgs>),
    /// Show the guest kernel, guest-init and which engines this host can use.
    Info,
    /// Pull an image from a registry into the store.
    Pull(crate::commands::pull::PullArgs),
    /// Save credentials for a registry.
    Login(crate::commands::login::LoginArgs),
    /// Remove saved credentials for a registry.
    Logout(crate::commands::login::LogoutArgs),
    /// List images.
    Images(crate::commands::images::ImagesArgs),
    /// Remove images.
    Rmi(crate::commands::images::RmiArgs),
    /// Give an image another name.
    Tag(crate::commands::images::TagArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(crate::commands::images::ImageCommand),
    /// Load images from an oci-archive or docker-archive tarball.
    Load(crate::commands::archive::LoadArgs),
    /// Save images to an oci-archive or docker-archive tarball.
    Save(crate::commands::archive::SaveArgs),
    /// Create an image from a root filesystem tarball.
    Import(crate::commands::archive::ImportArgs),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(crate::volumes::commands::VolumeCommand),
    #[command(flatten)]
    Container(crate::container::cli::ContainerCommand),
}

/// Which virtual machine monitor runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// skiff's own VMM when guest code runs natively on this host, else qemu.
    Auto,
    /// skiff's own VMM on /dev/kvm.
    Kvm,
    /// qemu-system-x86_64 -M microvm (KVM when usable, else software emulation).
    Qemu,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits (else it stays listed as exited until `rm`).
    #[arg(long)]
    pub rm: bool,
    /// Run in the background under a monitor process and print the container's id.
    #[arg(short, long)]
    pub detach: bool,
    /// Name the container (default: a generated name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Give the container a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Keep stdin open and send it to the container (not with -d: that needs attach).
    #[arg(short, long)]
    pub interactive: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to take the host's value).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file (one KEY=VALUE per line).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User to run as: USER[:GROUP], names or numeric ids.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Override the image's entrypoint ("" clears it).
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// The container's hostname (default: its short id).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Number of virtual CPUs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub cpus: u8,
    /// Guest memory, e.g. 512m or 2g.
    #[arg(long, default_value = "512m", value_parser = parse_memory_mib)]
    pub memory: u32,
    /// The virtual machine monitor.
    #[arg(long, value_enum, default_value_t = EngineKind::Auto, env = "SKIFF_ENGINE")]
    pub engine: EngineKind,
    /// When to pull the image.
    #[arg(long, value_enum, default_value_t)]
    pub pull: crate::commands::pull::PullPolicy,
    #[command(flatten)]
    pub registry: crate::commands::pull::RegistryArgs,
    #[command(flatten)]
    pub network: crate::network::NetworkArgs,
    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
    /// A resource limit of the container's processes: NAME=SOFT[:HARD] (nofile, nproc, core,
    /// stack, …; -1 for unlimited).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]", value_parser = crate::limits::parse_ulimit)]
    pub ulimits: Vec<protocol::Rlimit>,
    /// Most processes the container may have at once.
    #[arg(long = "pids-limit", value_name = "N")]
    pub pids_limit: Option<u64>,
    /// The signal `skiff stop` sends the container first (default SIGTERM).
    #[arg(long = "stop-signal", value_name = "SIGNAL", value_parser = |s: &str| crate::container::commands::parse_signal(s).map_err(|e| e.to_string()))]
    pub stop_signal: Option<i32>,
    /// Seconds `skiff stop` waits for the stop signal before SIGKILL (default 10).
    #[arg(long = "stop-timeout", value_name = "SECONDS")]
    pub stop_timeout: Option<u64>,
    /// Run a minimal init as the container's first process: it passes signals on to the
    /// command and reaps orphans (a command without a SIGTERM handler still stops).
    #[arg(long)]
    pub init: bool,
    /// Mount the container's root filesystem read-only (no writable layer).
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Mount a tmpfs at PATH (options: size=, mode=, uid=, gid=, nr_inodes=, ro, exec, suid,
    /// dev, noatime).
    #[arg(long, value_name = "PATH[:OPTIONS]", value_parser = crate::mounts::parse_tmpfs)]
    pub tmpfs: Vec<protocol::TmpfsMount>,
    /// Mount a host directory or file (an absolute path; a missing directory is created) or a
    /// named volume at a container path, read-only with `:ro`.
    #[arg(short = 'v', long = "volume", value_name = "SOURCE:TARGET[:ro|rw]", value_parser = crate::mounts::parse_volume)]
    pub volumes: Vec<crate::mounts::Share>,
    /// Mount as docker's --mount: type=bind|volume|tmpfs,source=…,target=…[,readonly] (a
    /// missing bind source is an error).
    #[arg(long = "mount", value_name = "type=…,source=…,target=…", value_parser = crate::mounts::parse_mount)]
    pub mounts: Vec<crate::mounts::MountFlag>,
    /// Mount what another container mounts (its binds and volumes), read-only with `:ro`.
    #[arg(long = "volumes-from", value_name = "CONTAINER[:ro|rw]")]
    pub volumes_from: Vec<String>,
    /// The image: NAME[:TAG], NAME@sha256:DIGEST, an image ID, oci:DIR[:TAG] or
    /// oci-archive:FILE[:TAG].
    pub image: String,
    /// The command and its arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Parses a memory size (`512m`, `2g`, `1048576k`, plain bytes) into MiB.
pub fn parse_memory_mib(s: &str) -> Result<u32, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid memory size {s:?}: use a number with k, m or g"))?;
    let bytes = match unit {
        "" => Some(n),
        "k" => n.checked_mul(1 << 10),
        "m" => n.checked_mul(1 << 20),
        "g" => n.checked_mul(1 << 30),
        _ => return Err(format!("invalid memory size {s:?}: use k, m or g")),
    }
    .ok_or_else(|| format!("memory size {s:?} is too large"))?;
    let mib = bytes >> 20;
    if mib < 64 {
        return Err(format!(
            "memory size {s:?} is too small: the guest needs at least 64m"
        ));
    }
    u32::try_from(mib)
        .ok()
        .filter(|&m| m <= 1 << 20)
        .ok_or_else(|| format!("memory size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_mib("512m"), Ok(512));
        assert_eq!(parse_memory_mib("2G"), Ok(2048));
        assert_eq!(parse_memory_mib("1gb"), Ok(1024));
        assert_eq!(parse_memory_mib("131072k"), Ok(128));
        assert_eq!(parse_memory_mib("268435456"), Ok(256));
        assert!(parse_memory_mib("1m").is_err());
        assert!(parse_memory_mib("12x").is_err());
        assert!(parse_memory_mib("").is_err());
        assert!(parse_memory_mib("99999999999999999999g").is_err());
    }

    #[test]
    fn command_after_image_keeps_its_flags() {
        let cli = Cli::try_parse_from([
            "skiff",
            "run",
            "-e",
            "A=1",
            "oci:x",
            "sh",
            "-c",
            "echo -n hi",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(r.image, "oci:x");
        assert_eq!(r.command, ["sh", "-c", "echo -n hi"]);
        assert_eq!(r.env, ["A=1"]);
    }
}
