//! The network backend: one unprivileged `passt` process per VM, speaking QEMU's stream framing
//! (4-byte big-endian length + Ethernet frame) on one end of a socket pair whose other end is
//! the VM's network device. passt ends when that end closes, so it cannot outlive its VM even
//! when skiff is killed (it changes user, which drops a parent-death signal); skiff also stops
//! it on every path of its own.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::programs::Helper;

use super::{DNS_FORWARDER, GATEWAY, GUEST_ADDRESS, MTU, PREFIX_LEN};

/// A running passt.
pub struct Passt {
    helper: Helper,
}

/// The passt binary: `$SKIFF_PASST`, else `passt` on `PATH`.
pub fn binary() -> Result<PathBuf> {
    let hint = "install it (apt-get install passt) or run with --network none";
    let p = crate::programs::find("SKIFF_PASST", "passt")
        .with_context(|| format!("passt is not installed: {hint}"))?;
    // An override that names nothing says so here, not as a failed start later.
    anyhow::ensure!(
        p.is_file(),
        "passt is not at {} (SKIFF_PASST): {hint}",
        p.display()
    );
    Ok(p)
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

impl Passt {
    /// Starts passt for a VM whose files live in `vm_dir`; returns it and the VM's end of its
    /// socket, for the engine's network device.
    pub fn start(vm_dir: &Path) -> Result<(Passt, OwnedFd)> {
        let bin = binary()?;
        let (vm_end, passt_end) =
            UnixStream::pair().context("cannot create the network device's socket pair")?;
        // passt drops frames it cannot write at once (the guest's TCP then waits for a
        // retransmission): a guest that reads its network slowly needs room. Measured under
        // QEMU's software CPU, 32 MiB fetched from the host: 0.20–0.46 s with 8 MiB, 0.47–13 s
        // with the system's default.
        for end in [&vm_end, &passt_end] {
            vmm::devices::net::large_send_buffer(end);
        }
        // passt's end of the pair survives the exec
        let fd = passt_end.as_raw_fd();
        let helper = Helper::spawn(
            &bin,
            &arguments(fd),
            fd,
            "passt".into(),
            vm_dir.join("passt.log"),
        )?;
        drop(passt_end);
        Ok((Passt { helper }, OwnedFd::from(vm_end)))
    }

    /// `Some(why)` the first time passt is found gone while the VM runs.
    pub fn poll_gone(&mut self) -> Option<String> {
        let telling =
            |l: &str| !l.starts_with("Failed to send") && !l.starts_with("Don't run as root");
        self.helper.poll_gone(telling)
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
