//! `skiff run`: resolve the image, merge its config with the flags into a RunSpec, then either
//! run the container in this process (foreground: stdio, signals and the terminal are the
//! user's) or hand it to a monitor process of its own (`-d`) and print its id.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Result;
use protocol::{LayerSpec, RunSpec};

use crate::cli::RunArgs;
use crate::launch::{self, Attach, VmConfig, Watcher};
use crate::session::SignalSender;
use crate::{container, engine, forward, terminal};

/// Runs the container and returns the exit code skiff should exit with.
pub fn run(args: RunArgs, debug: bool) -> Result<i32> {
    let image = crate::commands::pull::resolve_for_run(&args.image, args.pull, &args.registry)?;
    let hostname = args.hostname.clone().unwrap_or_else(container_id);
    let process = image::merge(&image.config, &overrides(&args, &hostname))?;
    let spec = RunSpec {
        argv: process.argv,
        env: process.env,
        cwd: process.cwd,
        user: process.user,
        hostname,
        tty: args.tty,
        term_size: args.tty.then(terminal::current_size).flatten(),
        stdin: args.interactive,
        layers: image
            .layers
            .iter()
            .map(|l| LayerSpec {
                media_type: l.media_type.clone(),
                digest: l.digest.clone(),
                size: l.size,
            })
            .collect(),
        host_time_ns: 0,
    };
    let layer_paths: Vec<PathBuf> = image.layers.iter().map(|l| l.path.clone()).collect();
    let vm = VmConfig {
        engine: engine::resolve(args.engine),
        cpus: args.cpus,
        memory_mib: args.memory,
        debug,
    };
    if args.detach {
        let store_manifest = (!crate::commands::pull::is_image_path(&args.image))
            .then(|| image.manifest_digest.clone());
        return container::detach::start(&args, vm, spec, layer_paths, store_manifest);
    }
    let blocked = forward::block()?;
    let _raw = if args.tty {
        terminal::RawMode::enter()?
    } else {
        None
    };
    let attach = Attach {
        stdin: args
            .interactive
            .then(|| Box::new(std::io::stdin()) as Box<dyn Read + Send>),
        stdout: Box::new(std::io::stdout()),
        stderr: Box::new(std::io::stderr()),
    };
    let mut watcher = Foreground {
        blocked,
        tty: args.tty,
    };
    let outcome = launch::launch(&vm, spec, layer_paths, attach, &mut watcher)?;
    Ok(launch::exit_code(outcome))
}

/// A foreground run forwards the user's signals and terminal size.
struct Foreground {
    blocked: forward::Blocked,
    tty: bool,
}

impl Watcher for Foreground {
    fn session(&mut self, signals: &SignalSender) {
        if let Err(e) = self.blocked.forward(signals.clone(), self.tty) {
            tracing::warn!("{e:#}");
        }
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

/// A random 12-hex-digit id, docker's default hostname form.
fn container_id() -> String {
    let mut b = [0u8; 6];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    hex::encode(b)
}
