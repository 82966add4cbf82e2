//! The network backend: one unprivileged `passt` process per VM, speaking QEMU's stream framing
//! (4-byte big-endian length + Ethernet frame) on one end of a socket pair whose other end is
//! the VM's network device. passt ends when that end closes, so it cannot outlive its VM even
//! when skiff is killed (it changes user, which drops a parent-death signal); skiff also stops
//! it on every path of its own.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use super::{DNS_FORWARDER, GATEWAY, GUEST_ADDRESS, MTU, PREFIX_LEN};

/// A running passt and the VM's end of its socket.
pub struct Passt {
    child: Child,
    log: PathBuf,
    /// The VM's end: handed to the engine's network device.
    vm_end: Option<OwnedFd>,
    reported: bool,
}

/// The passt binary: `$SKIFF_PASST`, else `passt` on `PATH`.
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SKIFF_PASST").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        anyhow::ensure!(
            p.is_file(),
            "passt is not at {} (SKIFF_PASST): install it (apt-get install passt) or run with --network none",
            p.display()
        );
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("passt"))
        .find(|p| p.is_file())
        .context(
            "passt is not installed: install it (apt-get install passt) or run with --network none",
        )
}

/// passt's command line for the guest's fixed addressing, its socket at descriptor `fd`.
fn arguments(fd: i32) -> Vec<String> {
    let mut a: Vec<String> = ["--foreground", "--quiet", "--fd"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(fd.to_string());
    for (flag, value) in [
        ("--address", GUEST_ADDRESS.to_string()),
        ("--netmask", PREFIX_LEN.to_string()),
        ("--gateway", GATEWAY.to_string()),
        ("--dns-forward", DNS_FORWARDER.to_string()),
        ("--mtu", MTU.to_string()),
        // guest-init configures the address itself; passt's own port forwarding stays off:
        // published ports go through skiff's relay.
        ("--tcp-ports", "none".into()),
        ("--udp-ports", "none".into()),
    ] {
        a.push(flag.into());
        a.push(value);
    }
    a.extend(["--no-dhcp", "--no-dhcpv6"].map(String::from));
    a
}

/// Socket buffer of each end of the pair.
const SEND_BUFFER: libc::c_int = 8 << 20;

/// Lets `end` hold [`SEND_BUFFER`] bytes in flight: passt drops frames it cannot write at once
/// (the guest's TCP then waits for a retransmission), so a guest that reads its network slowly
/// needs room. Measured under QEMU's software CPU, 32 MiB fetched from the host: 0.20–0.46 s
/// with it, 0.47–13 s without (the system's default, `wmem_max`). Beyond `wmem_max` only with
/// CAP_NET_ADMIN; an unprivileged skiff gets what the system allows.
fn large_send_buffer(end: &UnixStream) {
    let size = SEND_BUFFER;
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_SNDBUF] {
        // SAFETY: setsockopt reads `size` (an int) for the length given.
        let r = unsafe {
            libc::setsockopt(
                end.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

impl Passt {
    /// Starts passt for a VM whose files live in `vm_dir`.
    pub fn start(vm_dir: &Path) -> Result<Passt> {
        let bin = binary()?;
        let (vm_end, passt_end) =
            UnixStream::pair().context("cannot create the network device's socket pair")?;
        for end in [&vm_end, &passt_end] {
            large_send_buffer(end);
        }
        let log = vm_dir.join("passt.log");
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("cannot duplicate the passt log")?;
        let fd = passt_end.as_raw_fd();
        let mut cmd = Command::new(&bin);
        cmd.args(arguments(fd))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: fcntl and prctl are async-signal-safe; they only change this child's state.
        unsafe {
            cmd.pre_exec(move || {
                // passt's end of the pair survives the exec; every other descriptor of skiff's
                // stays close-on-exec.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        drop(passt_end);
        tracing::debug!(pid = child.id(), "passt started");
        Ok(Passt {
            child,
            log,
            vm_end: Some(OwnedFd::from(vm_end)),
            reported: false,
        })
    }

    /// The VM's end of the socket, for the engine (once).
    pub fn take_vm_end(&mut self) -> Option<OwnedFd> {
        self.vm_end.take()
    }

    /// `Some(why)` the first time passt is found gone while the VM runs.
    pub fn poll_gone(&mut self) -> Option<String> {
        if self.reported {
            return None;
        }
        let status = self.child.try_wait().ok().flatten()?;
        self.reported = true;
        Some(self.describe(status))
    }

    fn describe(&self, status: std::process::ExitStatus) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let last = log.lines().rev().map(str::trim).find(|l| {
            !l.is_empty() && !l.starts_with("Failed to send") && !l.starts_with("Don't run as root")
        });
        match last {
            Some(line) => format!("passt ended ({status}): {line}"),
            None => format!("passt ended ({status})"),
        }
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        self.vm_end = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passt_gets_the_guests_addressing_and_no_port_forwarding() {
        let a = arguments(7).join(" ");
        for want in [
            "--foreground",
            "--fd 7",
            "--address 10.0.2.15 --netmask 24 --gateway 10.0.2.2",
            "--dns-forward 10.0.2.3",
            "--mtu 65520",
            "--tcp-ports none --udp-ports none",
            "--no-dhcp",
        ] {
            assert!(a.contains(want), "{want:?} in {a}");
        }
    }
}
