//! `skiff run`: resolve the image, merge its config with the flags into a RunSpec, boot a VM
//! with the chosen engine, hand the spec and the layers to guest-init, relay stdio, and return
//! the container's exit code.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use protocol::{LayerSpec, RunSpec};

use crate::cli::{EngineKind, RunArgs};
use crate::engine::{self, BootConfig, Machine};
use crate::session::{Outcome, Session, SessionIo};
use crate::{assets, console, dirs, initramfs};

/// How long the guest may take from VM start to guest-init's connection
/// (`$SKIFF_BOOT_TIMEOUT` seconds overrides).
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a VM may take to power off after the container's exit was reported.
const POWEROFF_GRACE: Duration = Duration::from_secs(5);

/// Runs the container and returns the exit code skiff should exit with.
pub fn run(args: RunArgs, debug: bool) -> Result<i32> {
    let started = Instant::now();
    let image = crate::commands::pull::resolve_for_run(&args.image, args.pull, &args.registry)?;
    let hostname = args.hostname.clone().unwrap_or_else(container_id);
    let process = image::merge(&image.config, &overrides(&args, &hostname))?;
    let spec = RunSpec {
        argv: process.argv,
        env: process.env,
        cwd: process.cwd,
        user: process.user,
        hostname,
        tty: false,
        term_size: None,
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
    };
    let layer_paths: Vec<PathBuf> = image.layers.iter().map(|l| l.path.clone()).collect();

    let cache = dirs::cache_dir();
    let kernel = assets::kernel(&cache)?;
    let initramfs = initramfs::cached(&assets::guest_init()?, &cache)?;
    let kind = engine::resolve(args.engine);
    if kind == EngineKind::Kvm && engine::kvm::probe().is_err() {
        eprintln!(
            "skiff: warning: guest code is emulated on this host: the kvm engine will be very slow"
        );
    }

    let dir = dirs::run_dir().context("cannot create a directory for the VM's sockets")?;
    let vsock_uds = dir.path().join("vsock");
    let session_sock = PathBuf::from(format!(
        "{}_{}",
        vsock_uds.display(),
        protocol::SESSION_PORT
    ));
    let listener = UnixListener::bind(&session_sock)
        .with_context(|| format!("cannot listen on {}", session_sock.display()))?;
    let boot = BootConfig {
        kernel,
        initramfs,
        cmdline: cmdline(debug),
        cpus: args.cpus,
        memory_mib: args.memory,
        vsock_uds,
        console_log: dir.path().join("console.log"),
    };
    let console = debug.then(|| console::Follower::start(&boot.console_log));
    let mut vm = engine::start(kind, &boot)?;
    tracing::debug!(elapsed = ?started.elapsed(), ?kind, "VM process launched");

    let result = drive(&listener, vm.as_mut(), spec, layer_paths, args.interactive);
    // A VM whose container ended powers off by itself; after an error there is nothing to wait for.
    let grace = if result.is_ok() {
        POWEROFF_GRACE
    } else {
        Duration::ZERO
    };
    let ended = vm.shutdown(grace);
    if let Some(c) = console {
        c.stop();
    }
    result.map_err(|e| {
        let log = dir.keep().join("console.log");
        let vm = ended.map(|s| format!("; the VM: {s}")).unwrap_or_default();
        anyhow!("{e:#} (console log: {}{vm})", log.display())
    })
}

/// Waits for guest-init, runs the session while watching the VM, returns the exit code.
fn drive(
    listener: &UnixListener,
    vm: &mut dyn Machine,
    spec: RunSpec,
    layers: Vec<PathBuf>,
    interactive: bool,
) -> Result<i32> {
    let stream = accept(listener, vm, boot_timeout())?;
    let watch = stream
        .try_clone()
        .context("cannot duplicate the session socket")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let stdin: Option<Box<dyn Read + Send>> = if interactive {
            Some(Box::new(std::io::stdin()))
        } else {
            None
        };
        let result = Session::new(stream).and_then(|session| {
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            let io = SessionIo {
                stdin,
                stdout: &mut out,
                stderr: &mut err,
            };
            session.run(&spec, &layers, io)
        });
        let _ = tx.send(result.map(|report| report.outcome));
    });
    let mut vm_gone: Option<(String, Instant)> = None;
    let result = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => break r,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the session ended without a result")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if vm_gone.is_none() {
            vm_gone = vm.poll_exit()?.map(|how| (how, Instant::now()));
        }
        // The VM is gone: give the session a moment to drain what already arrived, then cut it.
        if let Some((_, at)) = &vm_gone {
            if at.elapsed() > Duration::from_secs(1) {
                let _ = watch.shutdown(std::net::Shutdown::Both);
            }
        }
    };
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            // A session cut short by the end of the VM is reported as that.
            let how = match vm_gone {
                Some((how, _)) => Some(how),
                None => wait_for_exit(vm, Duration::from_millis(500))?,
            };
            return Err(match how {
                Some(how) => anyhow!("the VM stopped before the container finished: {how}"),
                None => e.into(),
            });
        }
    };
    match outcome {
        Outcome::Exited(status) => Ok(status.docker_code()),
        Outcome::Failed { kind, message } => {
            eprintln!("skiff: {message}");
            Ok(kind.docker_code())
        }
    }
}

/// `Some(how it ended)` if the VM ends within `timeout`.
fn wait_for_exit(vm: &mut dyn Machine, timeout: Duration) -> Result<Option<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(how) = vm.poll_exit()? {
            return Ok(Some(how));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Accepts guest-init's connection, failing if the VM ends or the deadline passes first.
fn accept(listener: &UnixListener, vm: &mut dyn Machine, timeout: Duration) -> Result<UnixStream> {
    listener
        .set_nonblocking(true)
        .context("cannot poll the session socket")?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .context("cannot configure the session socket")?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("cannot accept guest-init's connection"),
        }
        if let Some(how) = vm.poll_exit()? {
            bail!("the VM stopped before guest-init connected: {how}");
        }
        if Instant::now() >= deadline {
            bail!(
                "guest-init did not connect within {}s: the guest kernel or init is stuck",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn boot_timeout() -> Duration {
    std::env::var("SKIFF_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(BOOT_TIMEOUT)
}

/// The kernel command line common to all engines.
fn cmdline(debug: bool) -> String {
    let mut c = String::from("console=ttyS0 reboot=t panic=-1 8250.nr_uarts=1 random.trust_cpu=on");
    if !debug {
        c.push_str(" quiet");
    }
    c
}

fn overrides(args: &RunArgs, hostname: &str) -> image::RunOverrides {
    image::RunOverrides {
        hostname: hostname.to_string(),
        tty: false,
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
