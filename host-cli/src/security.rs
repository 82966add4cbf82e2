//! What the container's processes may do, as `skiff run`'s flags say it: `--cap-add`,
//! `--cap-drop` (names with or without `CAP_`, any case, or `ALL`), `--privileged` and
//! `--security-opt no-new-privileges|seccomp=unconfined`, turned into the spec's [`Security`] by docker's rules:
//! its default set, minus the drops, plus the adds (an add wins over a drop).

use clap::Args;
use protocol::{Security, DEFAULT_CAPABILITIES};

/// Linux's capabilities, by number.
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Every capability named in [`NAMES`].
const ALL: u64 = (1 << NAMES.len()) - 1;

#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// Add a Linux capability (e.g. NET_ADMIN), or ALL.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability (e.g. NET_RAW), or ALL.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Give the container every capability and /proc and /sys without docker's masks.
    #[arg(long)]
    pub privileged: bool,
    /// Security options: no-new-privileges[:true|false], seccomp=unconfined.
    #[arg(long = "security-opt", value_name = "OPTION")]
    pub security_opt: Vec<String>,
}

/// The capability bits `name` stands for.
fn capability(name: &str) -> Result<u64, String> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if bare == "ALL" {
        return Ok(ALL);
    }
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| 1 << i)
        .ok_or_else(|| format!("unknown capability {name:?}: use a name such as NET_ADMIN, or ALL"))
}

impl SecurityArgs {
    pub fn security(&self) -> Result<Security, String> {
        let mut caps = DEFAULT_CAPABILITIES;
        for d in &self.cap_drop {
            caps &= !capability(d)?;
        }
        for a in &self.cap_add {
            caps |= capability(a)?;
        }
        let mut no_new_privileges = false;
        let mut seccomp = true;
        for o in &self.security_opt {
            let (key, value) = o.split_once([':', '=']).unwrap_or((o, "true"));
            match (key, value) {
                ("no-new-privileges", "true") => no_new_privileges = true,
                ("no-new-privileges", "false") => no_new_privileges = false,
                ("seccomp", "unconfined") => seccomp = false,
                _ => {
                    return Err(format!(
                        "unsupported --security-opt {o:?}: use no-new-privileges[:true|false] or seccomp=unconfined"
                    ))
                }
            }
        }
        Ok(Security {
            capabilities: if self.privileged { ALL } else { caps },
            no_new_privileges,
            privileged: self.privileged,
            seccomp: seccomp && !self.privileged,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(add: &[&str], drop: &[&str], opts: &[&str]) -> SecurityArgs {
        SecurityArgs {
            cap_add: add.iter().map(|s| s.to_string()).collect(),
            cap_drop: drop.iter().map(|s| s.to_string()).collect(),
            privileged: false,
            security_opt: opts.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn capabilities_follow_dockers_rules() {
        let s = |a, d| args(a, d, &[]).security().unwrap().capabilities;
        assert_eq!(s(&[], &[]), 0xa804_25fb);
        assert_eq!(s(&["NET_ADMIN"], &[]), 0xa804_25fb | 1 << 12);
        assert_eq!(s(&["cap_net_admin"], &[]), 0xa804_25fb | 1 << 12);
        assert_eq!(s(&[], &["ALL"]), 0);
        assert_eq!(s(&["CHOWN"], &["ALL"]), 1);
        assert_eq!(s(&[], &["NET_RAW"]), 0xa804_25fb & !(1 << 13));
        assert_eq!(s(&["ALL"], &[]), ALL);
        assert!(args(&["BOGUS"], &[], &[]).security().is_err());
        let sec = args(&[], &[], &["no-new-privileges"]).security().unwrap();
        assert!(sec.no_new_privileges);
        assert!(
            !args(&[], &[], &["no-new-privileges:false"])
                .security()
                .unwrap()
                .no_new_privileges
        );
        assert!(args(&[], &[], &["apparmor=x"]).security().is_err());
        assert!(args(&[], &[], &[]).security().unwrap().seccomp);
        assert!(
            !args(&[], &[], &["seccomp=unconfined"])
                .security()
                .unwrap()
                .seccomp
        );
        assert_eq!(NAMES[12], "NET_ADMIN");
        assert_eq!(NAMES[40], "CHECKPOINT_RESTORE");
    }
}
