//! Boots a VM for one container and carries its session through: used in-process by a
//! foreground `skiff run` and by a detached container's monitor. What differs between the two
//! (where stdio goes, who forwards signals, what is recorded) comes in as [`Attach`] and a
//! [`Watcher`].

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use protocol::RunSpec;

use crate::cli::EngineKind;
use crate::engine::{self, BootConfig, Disk, Machine, NetAttachment, SharedDir};
use crate::network::passt::Passt;
use crate::network::relay::{self, Relay};
use crate::network::PortMapping;
use crate::session::{Outcome, Session, SessionError, SessionIo, SignalSender};
use crate::shares::virtiofsd::Virtiofsd;
use crate::shares::HostShare;
use crate::{assets, console, dirs, initramfs};

/// How long the guest may take from VM start to guest-init's connection
/// (`$SKIFF_BOOT_TIMEOUT` seconds overrides).
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a VM may take to power off after the container's exit was reported.
const POWEROFF_GRACE: Duration = Duration::from_secs(5);

/// The VM to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Resolved: never `Auto`.
    pub engine: EngineKind,
    pub cpus: u8,
    pub memory_mib: u32,
    /// Copy the guest's console to stderr, and boot without `quiet`.
    pub debug: bool,
    /// The MAC address of the VM's network device; `None`: no network device.
    pub net_mac: Option<[u8; 6]>,
    /// Ports relayed to the container.
    pub publish: Vec<PortMapping>,
    /// The container's disks (its image, its writable layer).
    pub disks: Vec<Disk>,
    /// The host directories the VM shares.
    pub shares: Vec<HostShare>,
}

/// Where the container's stdio goes.
pub struct Attach {
    /// Sent as the container's stdin when the spec asks for it.
    pub stdin: Option<Box<dyn Read + Send>>,
    pub stdout: Box<dyn Write + Send>,
    pub stderr: Box<dyn Write + Send>,
}

/// What the caller does along the way.
pub trait Watcher {
    /// The VM is booting; its sockets are in `vm_dir` (exec reaches guest-init through
    /// `<vm_dir>/vsock`).
    fn vm_started(&mut self, _vm_dir: &Path) -> Result<()> {
        Ok(())
    }
    /// guest-init connected; `signals` controls the session from now on.
    fn session(&mut self, _signals: &SignalSender) {}
    /// Called every 50 ms until the session ends, and as soon as the container runs (before
    /// any of its output is relayed); `true` cuts the VM off.
    fn tick(&mut self, _signals: &SignalSender) -> bool {
        false
    }
}

/// Boots the VM, runs the container, powers the VM off; returns how the container ended.
pub fn launch(
    vm: &VmConfig,
    spec: RunSpec,
    attach: Attach,
    watcher: &mut dyn Watcher,
) -> Result<Outcome> {
    let started = Instant::now();
    let cache = dirs::cache_dir();
    let kernel = assets::kernel(&cache)?;
    let initramfs = initramfs::cached(&assets::guest_init()?, &cache)?;
    if vm.engine == EngineKind::Kvm {
        if let Err(why) = engine::kvm::probe() {
            eprintln!(
                "skiff: warning: guest code is emulated on this host: the kvm engine will be very slow ({why})"
            );
        }
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
    let ports = relay::bind(&vm.publish)?;
    let (mut passt, network) = match vm.net_mac {
        Some(mac) => {
            let (passt, socket) = Passt::start(dir.path())?;
            (Some(passt), Some(NetAttachment { mac, socket }))
        }
        None => (None, None),
    };
    let mut servers = Vec::new();
    let mut shared = Vec::new();
    for share in &vm.shares {
        let socket = dir.path().join(format!("{}.sock", share.tag));
        servers.push(Virtiofsd::start(share, &socket)?);
        shared.push(SharedDir {
            tag: share.tag.clone(),
            socket,
        });
    }
    let boot = BootConfig {
        kernel,
        initramfs,
        cmdline: cmdline(vm.debug),
        cpus: vm.cpus,
        memory_mib: vm.memory_mib,
        vsock_uds,
        console_log: dir.path().join("console.log"),
        network,
        disks: vm.disks.clone(),
        shares: shared,
    };
    let console = vm
        .debug
        .then(|| console::Follower::start(&boot.console_log));
    let mut machine = engine::start(vm.engine, &boot)?;
    tracing::debug!(elapsed = ?started.elapsed(), engine = ?vm.engine, "VM process launched");

    let result = Relay::start(ports, dir.path()).and_then(|relay| {
        watcher.vm_started(dir.path())?;
        let r = drive(
            &listener,
            machine.as_mut(),
            &mut passt,
            &mut servers,
            spec,
            attach,
            watcher,
        );
        drop(relay);
        r
    });
    // A VM whose container ended powers off by itself; after an error there is nothing to wait for.
    let grace = if result.is_ok() {
        POWEROFF_GRACE
    } else {
        Duration::ZERO
    };
    let ended = machine.shutdown(grace);
    drop(passt);
    drop(servers);
    if let Some(c) = console {
        c.stop();
    }
    result.map_err(|e| {
        // One line naming the cause, how the VM ended and the console log, each said once.
        let mut msg = format!("{e:#}");
        let log = dir.keep().join("console.log");
        let log = log.display().to_string();
        if let Ok(how) = ended {
            if !msg.contains(&how) {
                msg.push_str(&format!("; the VM: {how}"));
            }
        }
        if !msg.contains(&log) {
            msg.push_str(&format!(" (console log: {log})"));
        }
        anyhow!(msg)
    })
}

/// What the session thread tells the loop that watches the VM.
enum Event {
    /// The container runs; the session relays its output once this is answered.
    Started(mpsc::Sender<()>),
    /// The session is over.
    Ended(Result<Outcome, SessionError>),
}

/// Waits for guest-init, runs the session while watching the VM, returns the outcome.
fn drive(
    listener: &UnixListener,
    vm: &mut dyn Machine,
    passt: &mut Option<Passt>,
    servers: &mut [Virtiofsd],
    spec: RunSpec,
    attach: Attach,
    watcher: &mut dyn Watcher,
) -> Result<Outcome> {
    let stream = accept(listener, vm, boot_timeout())?;
    let watch = stream
        .try_clone()
        .context("cannot duplicate the session socket")?;
    let mut session = Session::new(stream)?;
    let signals = session.signal_sender();
    watcher.session(&signals);
    let shares: Vec<HostShare> = servers.iter().map(|s| s.share().clone()).collect();
    let _watch = crate::shares::watch::start(&shares, &spec.shares, signals.clone());
    let (tx, rx) = mpsc::channel();
    // The watcher hears of the start before any output of the container is relayed.
    let started = tx.clone();
    session.on_started(move || {
        let (ack, acked) = mpsc::channel();
        if started.send(Event::Started(ack)).is_ok() {
            let _ = acked.recv_timeout(Duration::from_secs(1));
        }
    });
    std::thread::spawn(move || {
        let Attach {
            stdin,
            mut stdout,
            mut stderr,
        } = attach;
        let io = SessionIo {
            stdin,
            stdout: &mut *stdout,
            stderr: &mut *stderr,
        };
        let _ = tx.send(Event::Ended(session.run(&spec, io).map(|r| r.outcome)));
    });
    let mut vm_gone: Option<(String, Instant)> = None;
    let mut cut = false;
    let result = loop {
        let mut started = None;
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Started(ack)) => started = Some(ack),
            Ok(Event::Ended(r)) => {
                // Closing a completed session tells guest-init that everything it sent has
                // arrived: only then does it power the VM off. (After a failed session the VM
                // is left as it is, so that its own end, if any, can be told apart.)
                if r.is_ok() {
                    let _ = watch.shutdown(std::net::Shutdown::Both);
                }
                break r;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the session ended without a result")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !cut && watcher.tick(&signals) {
            tracing::debug!("cutting the VM off");
            cut = true;
            vm.shutdown(Duration::ZERO)?;
        }
        // The watcher has seen the container running: its output may flow.
        if let Some(ack) = started {
            let _ = ack.send(());
        }
        if vm_gone.is_none() {
            vm_gone = vm.poll_exit()?.map(|how| (how, Instant::now()));
        }
        // The network backend died under a running container: it goes on without a network.
        if let Some(why) = passt.as_mut().and_then(Passt::poll_gone) {
            if vm_gone.is_none() {
                eprintln!("skiff: the container lost its network: {why}");
            }
        }
        // A shared directory's server died: the container's files there are gone for it.
        for why in servers.iter_mut().filter_map(Virtiofsd::poll_gone) {
            if vm_gone.is_none() {
                eprintln!("skiff: the container lost a shared directory: {why}");
            }
        }
        // The VM is gone: give the session a moment to drain what already arrived, then cut it.
        if let Some((_, at)) = &vm_gone {
            if at.elapsed() > Duration::from_secs(1) {
                let _ = watch.shutdown(std::net::Shutdown::Both);
            }
        }
    };
    match result {
        Ok(outcome) => Ok(outcome),
        // The user forced the end (the third interrupt): the process was killed, as docker
        // reports a forcibly killed container.
        Err(SessionError::CutOff) => {
            Ok(Outcome::Exited(protocol::ExitStatus::Signal(libc::SIGKILL)))
        }
        Err(e) => {
            // A session cut short by the end of the VM is reported as that.
            let how = match vm_gone {
                Some((how, _)) => Some(how),
                None => wait_for_exit(vm, Duration::from_millis(500))?,
            };
            Err(match how {
                Some(how) => anyhow!("the VM stopped before the container finished: {how}"),
                None => e.into(),
            })
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

/// The kernel command line common to all engines. `no_timer_check`: the kernel's boot-time
/// check that the IO-APIC delivers timer interrupts counts ticks against a busy loop, and a
/// vCPU the host starves (dozens of VMs starting at once on two cores) fails it and panics
/// ("IO-APIC + timer doesn't work!") although the timer works.
fn cmdline(debug: bool) -> String {
    let mut c = String::from(
        "console=ttyS0 reboot=t panic=-1 8250.nr_uarts=1 random.trust_cpu=on no_timer_check",
    );
    if !debug {
        c.push_str(" quiet");
    }
    c
}

/// docker's exit code for an outcome; a failure's message goes to stderr.
pub fn exit_code(outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Exited(status) => status.docker_code(),
        Outcome::Failed { kind, message } => {
            eprintln!("skiff: {message}");
            kind.docker_code()
        }
    }
}
