//! The qemu engine: `qemu-system-x86_64 -M microvm`, with KVM when guest code runs natively and
//! QEMU's software CPU (TCG) otherwise. Guest memory is a shared memfd so that skiff's own
//! virtio-vsock device, served over vhost-user from a thread of this process, can reach it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vmm::devices::vsock::vhost_user::{serve_vhost_user, VhostUserServer};

use super::serial_log::SerialLog;
use super::{BootConfig, Machine, GUEST_CID};

/// A running qemu process, the vsock backend serving it and the copy of its console.
pub struct Qemu {
    child: Child,
    backend: Option<VhostUserServer>,
    console: SerialLog,
    qemu_log: PathBuf,
}

/// The qemu binary: `$SKIFF_QEMU`, else `qemu-system-x86_64` on `PATH`.
fn qemu_binary() -> Result<PathBuf> {
    crate::programs::find("SKIFF_QEMU", "qemu-system-x86_64").context(
        "qemu-system-x86_64 is not installed: install it (apt-get install qemu-system-x86) or use --engine kvm",
    )
}

/// The qemu command line for `boot`, with the vhost-user socket at `vhost` and the serial
/// console connected to the socket `console`.
fn arguments(boot: &BootConfig, vhost: &Path, console: &Path, accel_kvm: bool) -> Vec<String> {
    let mem = boot.memory_mib;
    let (accel, cpu) = if accel_kvm {
        ("kvm", "host")
    } else {
        ("tcg", "max")
    };
    let mut args = [
        "-M",
        "microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off,memory-backend=mem",
        "-accel",
        accel,
        "-cpu",
        cpu,
        "-m",
        &format!("{mem}M"),
        "-smp",
        &boot.cpus.to_string(),
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-chardev",
        &format!("socket,id=console,path={}", console.display()),
        "-serial",
        "chardev:console",
        "-chardev",
        &format!("socket,id=vhost,path={}", vhost.display()),
        "-device",
        "vhost-user-vsock-device,chardev=vhost",
        "-global",
        "virtio-mmio.force-legacy=false",
        "-kernel",
        &boot.kernel.display().to_string(),
        "-initrd",
        &boot.initramfs.display().to_string(),
        "-append",
        &boot.cmdline,
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect::<Vec<_>>();
    if let Some(net) = &boot.network {
        let mac = crate::network::Mac(net.mac);
        args.extend([
            "-netdev".to_string(),
            format!(
                "stream,id=net0,server=off,addr.type=fd,addr.str={}",
                net.socket.as_raw_fd()
            ),
            "-device".into(),
            format!("virtio-net-device,netdev=net0,mac={mac}"),
        ]);
    }
    for (i, disk) in boot.disks.iter().enumerate() {
        // absolute (qemu would take a relative `a:b` for a protocol), and a comma inside a
        // value doubled, as qemu's option syntax wants
        let path = std::path::absolute(&disk.path).unwrap_or_else(|_| disk.path.clone());
        let file = path.display().to_string().replace(',', ",,");
        let ro = if disk.read_only { "on" } else { "off" };
        args.extend([
            "-drive".to_string(),
            format!("file={file},if=none,id=disk{i},format=raw,readonly={ro}"),
            "-device".into(),
            format!("virtio-blk-device,drive=disk{i},serial={}", disk.serial),
        ]);
    }
    for (i, share) in boot.shares.iter().enumerate() {
        args.extend([
            "-chardev".to_string(),
            format!(
                "socket,id=fs{i},path={}",
                share.socket.display().to_string().replace(',', ",,")
            ),
            "-device".into(),
            // as many entries as skiff's own VMM gives the queue (qemu's default is 128), so
            // requests of up to 1 MiB fit
            format!(
                "vhost-user-fs-device,chardev=fs{i},tag={},queue-size=1024",
                share.tag
            ),
        ]);
    }
    args
}

impl Qemu {
    /// Starts the vsock backend and the console copy, then qemu.
    pub fn start(boot: &BootConfig) -> Result<Qemu> {
        let qemu = qemu_binary()?;
        let dir = boot
            .vsock_uds
            .parent()
            .context("the vsock socket path has no directory")?;
        let vhost = dir.join("vhost.sock");
        let backend = serve_vhost_user(&vhost, GUEST_CID, &boot.vsock_uds)
            .with_context(|| format!("cannot serve the vsock device on {}", vhost.display()))?;
        let accel_kvm = super::kvm::probe().is_ok();
        let qemu_log = dir.join("qemu.log");
        let log = File::create(&qemu_log)
            .with_context(|| format!("cannot create {}", qemu_log.display()))?;
        let log2 = log
            .try_clone()
            .context("cannot duplicate the qemu log file")?;
        let console_sock = dir.join("console.sock");
        let console = SerialLog::listen(&console_sock, &boot.console_log)?;
        let args = arguments(boot, &vhost, &console_sock, accel_kvm);
        tracing::debug!(qemu = %qemu.display(), ?args, "starting qemu");
        let mut cmd = Command::new(&qemu);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Out of the terminal's process group: Ctrl-C is for the container, not for qemu.
            .process_group(0);
        // qemu dies with the thread that started it, so a killed skiff (or monitor) leaves no
        // VM behind; the network device's socket survives the exec (`-netdev …,addr.type=fd`).
        let inherit = boot.network.as_ref().map(|n| n.socket.as_raw_fd());
        crate::programs::tie_to_parent(&mut cmd, inherit.into_iter().collect());
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", qemu.display()))?;
        Ok(Qemu {
            child,
            backend: Some(backend),
            console,
            qemu_log,
        })
    }

    /// How qemu ended, once it has: the console copy is complete by then.
    fn describe(&mut self, status: std::process::ExitStatus) -> String {
        self.console.finish();
        if let Some(line) = self.console.panic() {
            return format!("guest kernel panic: {line}");
        }
        let log = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
        let last = log.lines().rev().find(|l| !l.trim().is_empty());
        match (status.code(), last) {
            (Some(0), _) => "the VM powered off".to_string(),
            (_, Some(line)) => format!("qemu failed ({status}): {}", line.trim()),
            (_, None) => format!("qemu ended ({status})"),
        }
    }

    fn stop_backend(&mut self) {
        if let Some(b) = self.backend.take() {
            if let Err(e) = b.stop() {
                tracing::warn!("vsock backend: {e}");
            }
        }
    }
}

impl Machine for Qemu {
    fn poll_exit(&mut self) -> Result<Option<String>> {
        match self.child.try_wait().context("cannot wait for qemu")? {
            Some(status) => {
                self.stop_backend();
                Ok(Some(self.describe(status)))
            }
            None => Ok(None),
        }
    }

    fn shutdown(&mut self, grace: Duration) -> Result<String> {
        let deadline = Instant::now() + grace;
        let status = loop {
            if let Some(s) = self.child.try_wait().context("cannot wait for qemu")? {
                break s;
            }
            if Instant::now() >= deadline {
                tracing::debug!("qemu did not stop by itself; killing it");
                let _ = self.child.kill();
                break self.child.wait().context("cannot wait for qemu")?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.stop_backend();
        Ok(self.describe(status))
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.stop_backend();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_arguments_carry_the_boot_config() {
        let boot = BootConfig {
            kernel: "/k/vmlinux".into(),
            initramfs: "/c/init.cpio".into(),
            cmdline: "console=ttyS0 quiet".into(),
            cpus: 2,
            memory_mib: 768,
            vsock_uds: "/r/vsock".into(),
            console_log: "/r/console.log".into(),
            network: None,
            disks: vec![
                super::super::Disk {
                    path: "/d/a,b/image.erofs".into(),
                    read_only: true,
                    serial: "img",
                },
                super::super::Disk {
                    path: "/d/rw.ext4".into(),
                    read_only: false,
                    serial: "rw",
                },
            ],
            shares: vec![super::super::SharedDir {
                tag: "skiff-0".into(),
                socket: "/r/skiff-0.sock".into(),
            }],
        };
        let a = arguments(
            &boot,
            Path::new("/r/vhost.sock"),
            Path::new("/r/console.sock"),
            false,
        )
        .join(" ");
        for want in [
            "acpi=off",
            "-accel tcg -cpu max",
            "-m 768M",
            "-smp 2",
            "memory-backend-memfd,id=mem,size=768M,share=on",
            "socket,id=console,path=/r/console.sock",
            "socket,id=vhost,path=/r/vhost.sock",
            "vhost-user-vsock-device,chardev=vhost",
            "-kernel /k/vmlinux -initrd /c/init.cpio",
            "-append console=ttyS0 quiet",
            "-no-reboot",
            "-drive file=/d/a,,b/image.erofs,if=none,id=disk0,format=raw,readonly=on",
            "-device virtio-blk-device,drive=disk0,serial=img",
            "-drive file=/d/rw.ext4,if=none,id=disk1,format=raw,readonly=off",
            "-device virtio-blk-device,drive=disk1,serial=rw",
            "-chardev socket,id=fs0,path=/r/skiff-0.sock -device vhost-user-fs-device,chardev=fs0,tag=skiff-0,queue-size=1024",
        ] {
            assert!(a.contains(want), "{want:?} missing from {a}");
        }
        assert!(arguments(&boot, Path::new("/v"), Path::new("/c"), true)
            .join(" ")
            .contains("-accel kvm -cpu host"));
        assert!(!a.contains("-netdev"), "{a}");
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = ours.as_raw_fd();
        let boot = BootConfig {
            network: Some(super::super::NetAttachment {
                mac: [2, 0x53, 0, 0, 0, 0x0f],
                socket: ours.into(),
            }),
            ..boot
        };
        let a = arguments(&boot, Path::new("/v"), Path::new("/c"), false).join(" ");
        for want in [
            format!("-netdev stream,id=net0,server=off,addr.type=fd,addr.str={fd}"),
            "-device virtio-net-device,netdev=net0,mac=02:53:00:00:00:0f".into(),
        ] {
            assert!(a.contains(&want), "{want:?} missing from {a}");
        }
    }
}
