//! Booting L1: its kernel, its initramfs (a static busybox and `init.sh`), the command it runs
//! and how the status comes back, and the QEMU process, which never outlives the runner.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use skiff::initramfs::{write_archive, Member};
use skiff_tests::workspace;

/// L1's PID 1.
const INIT: &str = include_str!("init.sh");
/// The static busybox of Debian's busybox-static, L1's only tool before it reaches the host's.
const BUSYBOX: &str = "/bin/busybox";

/// The cached L1 test kernel, built first when missing (`kernel-config/build.sh --l1`).
pub fn cached_kernel() -> Result<PathBuf> {
    let script = workspace().join("kernel-config/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--l1")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!("{} --l1 failed: no L1 kernel", script.display());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(path))
}

/// The part of the runner's environment the command gets: PATH, HOME, LANG, SKIFF_* and RUST_*,
/// and SKIFF_TEST_ENGINE=kvm unless it is set.
pub fn passed_env(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vars
        .filter(|(k, _)| {
            matches!(k.as_str(), "PATH" | "HOME" | "LANG")
                || k.starts_with("SKIFF_")
                || k.starts_with("RUST_")
        })
        .collect();
    if !env.iter().any(|(k, _)| k == "SKIFF_TEST_ENGINE") {
        env.push(("SKIFF_TEST_ENGINE".into(), "kvm".into()));
    }
    env
}

/// `s` as one word for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One boot of L1, with its directory on the host (shared read-write as 9p tag `run`).
pub struct Boot {
    pub kernel: PathBuf,
    pub cpus: u8,
    pub memory_mib: u32,
    pub tsc_khz: u64,
    pub dir: PathBuf,
}

impl Boot {
    /// Writes the script L1 runs: `cd CWD`, the environment, `exec COMMAND…`.
    pub fn write_command(
        &self,
        cwd: &Path,
        env: &[(String, String)],
        command: &[String],
    ) -> Result<()> {
        let cwd = cwd.to_str().context("the current directory is not UTF-8")?;
        let mut script = format!("cd {} || exit 125\n", quote(cwd));
        for (k, v) in env {
            script.push_str(&format!("export {k}={}\n", quote(v)));
        }
        let words: Vec<String> = command.iter().map(|w| quote(w)).collect();
        script.push_str(&format!("exec {}\n", words.join(" ")));
        let path = self.dir.join("command");
        std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The initramfs: `/init` (init.sh), `/bin/busybox`, `/dev/console`.
    fn write_initramfs(&self) -> Result<PathBuf> {
        let busybox = std::fs::read(BUSYBOX).with_context(|| {
            format!("cannot read {BUSYBOX}: install busybox-static (scripts/deps.sh)")
        })?;
        let mut cpio = Vec::with_capacity(busybox.len() + 4096);
        write_archive(
            &mut cpio,
            &[
                Member::dir("bin", 0o755),
                Member::file("bin/busybox", 0o755, &busybox),
                Member::dir("dev", 0o755),
                Member::char_device("dev/console", 0o600, 5, 1),
                Member::file("init", 0o755, INIT.as_bytes()),
            ],
        )
        .context("cannot build L1's initramfs")?;
        let path = self.dir.join("l1.cpio");
        std::fs::write(&path, cpio).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Starts QEMU with L1; its serial console is our stdout. QEMU gets SIGKILL when the
    /// runner dies, however it dies.
    pub fn start(&self) -> Result<Child> {
        if !self.kernel.is_file() {
            bail!(
                "no L1 kernel at {}: build it with kernel-config/build.sh --l1",
                self.kernel.display()
            );
        }
        let initramfs = self.write_initramfs()?;
        let qemu = std::env::var_os("SKIFF_QEMU").unwrap_or_else(|| "qemu-system-x86_64".into());
        let cmdline = format!(
            "console=ttyS0 quiet reboot=t panic=-1 8250.nr_uarts=1 random.trust_cpu=on rdinit=/init tsc=reliable tsc_early_khz={}",
            self.tsc_khz
        );
        let mut cmd = Command::new(&qemu);
        cmd.arg("-name")
            .arg(format!("nested-vm-{}", std::process::id()))
            .args([
                "-M",
                "microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off",
            ])
            .args(["-accel", "tcg", "-cpu", "max"])
            .args([
                "-smp",
                &self.cpus.to_string(),
                "-m",
                &self.memory_mib.to_string(),
            ])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-monitor",
                "none",
            ])
            .args([
                "-chardev",
                "stdio,id=console,signal=off",
                "-serial",
                "chardev:console",
            ])
            .args([
                "-fsdev",
                "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
            ])
            .args([
                "-device",
                "virtio-9p-device,fsdev=hostroot,mount_tag=hostroot",
            ])
            .arg("-fsdev")
            .arg(format!(
                "local,id=run,path={},security_model=none",
                self.dir.display()
            ))
            .args(["-device", "virtio-9p-device,fsdev=run,mount_tag=run"])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&initramfs)
            .args(["-append", &cmdline, "-no-reboot"])
            .stdin(Stdio::null());
        let runner = std::process::id();
        // SAFETY: between fork and exec the closure only calls prctl and getppid, which are
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                // The runner died before the parent-death signal was armed: do not start L1.
                if nix::unistd::getppid().as_raw() as u32 != runner {
                    return Err(std::io::Error::other("the runner is gone"));
                }
                Ok(())
            });
        }
        cmd.spawn().with_context(|| {
            format!(
                "cannot start {}: install qemu-system-x86 (scripts/deps.sh)",
                qemu.to_string_lossy()
            )
        })
    }

    /// How long ago (host time) L1 last wrote its heartbeat; `None` before the first one.
    pub fn since_heartbeat(&self) -> Option<Duration> {
        let written = std::fs::metadata(self.dir.join("heartbeat"))
            .and_then(|m| m.modified())
            .ok()?;
        Some(written.elapsed().unwrap_or_default())
    }

    /// The command's exit status, when L1 recorded one.
    pub fn status(&self) -> Option<u8> {
        let text = std::fs::read_to_string(self.dir.join("status")).ok()?;
        text.trim().parse::<u8>().ok()
    }
}
