//! The kvm engine: skiff's own VMM (the `vmm` crate) running the guest on threads of this
//! process, and the probe that tells whether guest code runs natively on this host.

use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vmm::{
    DiskConfig, NetConfig, SerialOutput, ShareConfig, StopHandle, VmConfig, VmExit, VmmError,
};

use crate::network::MTU;

use super::{BootConfig, Machine, GUEST_CID};

/// `Ok` when /dev/kvm runs guest code natively; otherwise why not. The probe boots a tiny
/// guest loop (≈30 ms of CPU time at most); its verdict is kept for the life of this process
/// and, when a guest did run, per boot of the host in the cache.
pub fn probe() -> Result<(), String> {
    static VERDICT: OnceLock<Result<(), String>> = OnceLock::new();
    VERDICT.get_or_init(probe_cached).clone()
}

fn probe_cached() -> Result<(), String> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let file = crate::dirs::cache_dir().join("probe").join(boot_id.trim());
    if !boot_id.trim().is_empty() {
        if let Ok(saved) = std::fs::read_to_string(&file) {
            return match saved.strip_prefix("native\n") {
                Some(_) => Ok(()),
                None => Err(saved.trim().to_string()),
            };
        }
    }
    let r = vmm::guest_code_runs_natively();
    tracing::debug!(
        native = r.native,
        rate = r.iterations_per_sec,
        "{}",
        r.detail
    );
    let verdict = if r.native { Ok(()) } else { Err(r.detail) };
    // Only a guest that ran says something of this host: a process that could not open /dev/kvm
    // (another mount namespace, another user) must not decide for the others.
    if r.measured && !boot_id.trim().is_empty() {
        let text = match &verdict {
            Ok(()) => "native\n".to_string(),
            Err(why) => format!("{why}\n"),
        };
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&file, text));
        }
    }
    verdict
}

/// A VM run by skiff's VMM on its own thread.
pub struct KvmMachine {
    stop: StopHandle,
    done: mpsc::Receiver<Result<VmExit, VmmError>>,
    ended: Option<String>,
}

/// Boots the guest with skiff's own VMM. Configuration errors (no /dev/kvm, a bad kernel,
/// too little memory) are reported here, before any guest runs.
pub fn start(boot: &BootConfig) -> Result<Box<dyn Machine>> {
    let net = match &boot.network {
        Some(n) => Some(NetConfig {
            socket: Arc::new(UnixStream::from(
                n.socket
                    .try_clone()
                    .context("cannot duplicate the network device's socket")?,
            )),
            mac: n.mac,
            mtu: MTU,
        }),
        None => None,
    };
    let disks = boot
        .disks
        .iter()
        .map(|d| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(!d.read_only)
                .open(&d.path)
                .with_context(|| format!("cannot open the disk {}", d.path.display()))?;
            Ok(DiskConfig {
                file,
                read_only: d.read_only,
                serial: d.serial.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let config = VmConfig {
        vcpus: boot.cpus,
        memory_mib: u64::from(boot.memory_mib),
        kernel: boot.kernel.clone(),
        initramfs: Some(boot.initramfs.clone()),
        cmdline: boot.cmdline.clone(),
        serial: SerialOutput::File(boot.console_log.clone()),
        vsock: Some((GUEST_CID, boot.vsock_uds.clone())),
        net,
        disks,
        shares: boot
            .shares
            .iter()
            .map(|s| ShareConfig {
                tag: s.tag.clone(),
                socket: s.socket.clone(),
            })
            .collect(),
    };
    let stop = StopHandle::new();
    let (tx, done) = mpsc::channel();
    let handle = stop.clone();
    std::thread::Builder::new()
        .name("vmm".into())
        .spawn(move || {
            let _ = tx.send(vmm::run_vm(&config, &handle));
        })
        .context("cannot start the VMM thread")?;
    let mut machine = KvmMachine {
        stop,
        done,
        ended: None,
    };
    // Errors in the configuration come back at once; give them a moment to arrive.
    if let Ok(result) = machine.done.recv_timeout(Duration::from_millis(20)) {
        match result {
            Err(e) => return Err(e.into()),
            Ok(exit) => machine.ended = Some(exit.to_string()),
        }
    }
    Ok(Box::new(machine))
}

impl KvmMachine {
    fn describe(result: Result<VmExit, VmmError>) -> String {
        match result {
            Ok(exit) => exit.to_string(),
            Err(e) => e.to_string(),
        }
    }
}

impl Machine for KvmMachine {
    fn poll_exit(&mut self) -> Result<Option<String>> {
        if self.ended.is_none() {
            match self.done.try_recv() {
                Ok(r) => self.ended = Some(Self::describe(r)),
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.ended = Some("the VMM thread ended without a result".into())
                }
            }
        }
        Ok(self.ended.clone())
    }

    fn shutdown(&mut self, grace: Duration) -> Result<String> {
        let deadline = Instant::now() + grace;
        while self.poll_exit()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.ended.is_none() {
            self.stop.stop();
            let r = self
                .done
                .recv_timeout(Duration::from_secs(5))
                .context("the VMM did not stop")?;
            self.ended = Some(Self::describe(r));
        }
        Ok(self.ended.clone().unwrap_or_default())
    }
}

impl Drop for KvmMachine {
    fn drop(&mut self) {
        if self.ended.is_none() {
            self.stop.stop();
        }
    }
}
