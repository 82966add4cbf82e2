//! `skiff run`: resolve the image, create the container (its id first: the id's short form is
//! the default hostname) with its disks, merge the image's config with the flags into a RunSpec,
//! then either
//! supervise the container in this process (foreground: stdio, signals and the terminal are
//! the user's) or hand it to a monitor process of its own (`-d`) and print its id.

use std::io::Read;

use anyhow::{bail, Result};
use protocol::RunSpec;

use crate::cli::RunArgs;
use crate::container::monitor::{self, Forward};
use crate::container::state::{self, short_id, Config, Container};
use crate::launch::{self, Attach};
use crate::mounts::MountFlag;
use crate::{container, engine, forward, terminal};

/// Runs the container and returns the exit code skiff should exit with.
pub fn run(args: RunArgs, debug: bool) -> Result<i32> {
    if args.detach && args.interactive {
        bail!("-i with -d needs attach, which skiff does not have yet");
    }
    let mut network = args.network.config().map_err(anyhow::Error::msg)?;
    let security = args.security.security().map_err(anyhow::Error::msg)?;
    // A host port in use fails here, before anything is created (the VM binds it for real).
    drop(crate::network::relay::bind(&network.publish)?);
    // --mount type=tmpfs joins --tmpfs; the shares are checked (and made) before the image is
    // fetched, so a bad one changes nothing
    let mut tmpfs = args.tmpfs.clone();
    let mut requests = args.volumes.clone();
    for from in &args.volumes_from {
        requests.extend(crate::shares::volumes_from(from)?);
    }
    for m in &args.mounts {
        match m {
            MountFlag::Share(s) => requests.push(s.clone()),
            MountFlag::Tmpfs(t) => tmpfs.push(t.clone()),
        }
    }
    let tmpfs_targets: Vec<String> = tmpfs.iter().map(|t| t.path.clone()).collect();
    let shares = crate::shares::plan(&requests, &tmpfs_targets)?;
    let image = crate::commands::pull::resolve_for_run(&args.image, args.pull, &args.registry)?;
    if args.network.publish_all {
        network
            .publish_exposed(&image.config.exposed_ports)
            .map_err(anyhow::Error::msg)?;
    }
    let id = state::random_id();
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| short_id(&id).to_string());
    let process = image::merge(&image.config, &overrides(&args, &hostname))?;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (net_spec, etc_files) = crate::network::guest_setup(&network, &id, &hostname, &resolv);
    let spec = RunSpec {
        argv: process.argv,
        env: process.env,
        cwd: process.cwd,
        user: process.user,
        hostname,
        tty: args.tty,
        term_size: args.tty.then(terminal::current_size).flatten(),
        stdin: args.interactive,
        root: container::disks::root_spec(args.read_only),
        tmpfs,
        shares: shares.mounts,
        security,
        rlimits: args.ulimits.clone(),
        pids_limit: args.pids_limit,
        init: args.init,
        hold: false,
        host_time_ns: 0,
        network: net_spec,
        etc_files,
    };
    let store_manifest =
        (!crate::commands::pull::is_image_path(&args.image)).then(|| image.manifest_digest.clone());
    let config = |id, name| Config {
        id,
        name,
        image: args.image.clone(),
        created: container::time::now(),
        spec,
        read_only: args.read_only,
        engine: engine::resolve(args.engine),
        cpus: args.cpus,
        memory_mib: args.memory,
        auto_remove: args.rm,
        debug,
        store_manifest,
        network: network.clone(),
        stop_signal: args.stop_signal,
        stop_timeout: args.stop_timeout,
        shares: shares.shares.clone(),
        mounts: shares.records.clone(),
    };
    let create = || -> Result<Container> {
        let c = state::create(&state::containers_dir(), id, args.name.as_deref(), config)?;
        if let Err(e) = container::disks::prepare(&c.dir, &image, args.read_only) {
            let _ = c.remove();
            return Err(e);
        }
        Ok(c)
    };
    if args.detach {
        let c = create()?;
        let id = c.config.id.clone();
        return container::detach::start(c, &id, true);
    }
    // Before any thread starts: the signals are blocked in all of them.
    let blocked = forward::block()?;
    let c = create()?;
    // interrupted while the disks were made: the container goes, as docker's would not start
    if let Some(sig) = blocked.take_pending() {
        let _ = c.remove();
        return Ok(128 + sig as i32);
    }
    let result = foreground(&c, args.tty, args.interactive, blocked);
    if result.is_err() && c.config.auto_remove && c.dir.exists() {
        let _ = c.remove();
    }
    result
}

/// Supervises the container in this process, its stdio the user's (stdin with `interactive`).
/// The output is not copied to the container's log: recording every line costs a large stream
/// a measurable share of its speed.
pub fn foreground(
    c: &Container,
    tty: bool,
    interactive: bool,
    blocked: forward::Blocked,
) -> Result<i32> {
    let _lock = c.lock_monitor()?;
    let _raw = if tty {
        terminal::RawMode::enter()?
    } else {
        None
    };
    let attach = Attach {
        stdin: interactive.then(|| Box::new(std::io::stdin()) as Box<dyn Read + Send>),
        stdout: Box::new(std::io::stdout()),
        stderr: Box::new(std::io::stderr()),
    };
    let forward = Forward { blocked, tty };
    let finished = monitor::supervise(c, attach, Some(forward), None)?;
    match finished.outcome {
        Ok(outcome) => Ok(launch::exit_code(outcome)),
        // Killed through the API (kill, stop, rm -f) before the guest could report it.
        Err(_) if finished.cut => Ok(finished.code),
        Err(e) => Err(e),
    }
}

fn overrides(args: &RunArgs, hostname: &str) -> image::RunOverrides {
    image::RunOverrides {
        hostname: hostname.to_string(),
        tty: args.tty,
        command: args.command.clone(),
        entrypoint: args.entrypoint.clone(),
        env: args.env.clone(),
        env_files: args.env_file.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
    }
}
