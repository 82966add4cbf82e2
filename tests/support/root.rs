//! A private state root for tests that keep containers (`SKIFF_ROOT`), so that tests never see
//! each other's containers and a failed test leaves none running.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::{
    assert_code, images, processes_mentioning, run_with_deadline, skiff_bin, stdout, test_engine,
};

/// How long one skiff command of these tests may take.
const DEADLINE: Duration = Duration::from_secs(180);

/// The busybox test image as an oci-archive reference.
pub fn busybox() -> String {
    format!(
        "oci-archive:{}/archives/busybox-latest.oci.tar",
        images().display()
    )
}

/// A private state root, so tests never see each other's containers.
pub struct Root(pub tempfile::TempDir);

impl Drop for Root {
    /// A test that failed half way leaves no container running: every supervisor still
    /// recorded (a monitor, or a foreground skiff) is killed, and its VM dies with it.
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir(self.0.path().join("containers")) else {
            return;
        };
        for e in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path().join("state.json")) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let Some(pid) = v["monitor_pid"]
                .as_i64()
                .filter(|_| v["status"] != "exited")
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("skiff") {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Default for Root {
    fn default() -> Root {
        Root(tempfile::tempdir().unwrap())
    }
}

impl Root {
    pub fn new() -> Root {
        Root::default()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(skiff_bin());
        c.args(args)
            .env("SKIFF_ROOT", self.0.path())
            .env("SKIFF_ENGINE", test_engine());
        c
    }

    pub fn skiff(&self, args: &[&str]) -> Output {
        run_with_deadline(self.cmd(args), b"", DEADLINE).expect("skiff")
    }

    /// `run -d` with a small VM; returns the id.
    pub fn detach(&self, extra: &[&str], cmd: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--memory", "128m"];
        args.extend_from_slice(extra);
        let img = busybox();
        args.push(&img);
        args.extend_from_slice(cmd);
        let o = self.skiff(&args);
        assert_code(&o, 0);
        let id = stdout(&o).trim().to_string();
        assert_eq!(id.len(), 64, "{id:?}");
        id
    }

    /// The container's `state.json`.
    pub fn state(&self, id: &str) -> serde_json::Value {
        let path = self.0.path().join("containers").join(id).join("state.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// The VM socket directories recorded for running containers.
    pub fn vm_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for e in std::fs::read_dir(self.0.path().join("containers"))
            .unwrap()
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(e.path().join("state.json")) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if let Some(d) = v["vm_dir"].as_str() {
                dirs.push(PathBuf::from(d));
            }
        }
        dirs
    }
}

#[track_caller]
pub fn assert_no_vm_left(dirs: &[PathBuf]) {
    assert!(!dirs.is_empty());
    for d in dirs {
        let left = processes_mentioning(&d.display().to_string());
        assert!(left.is_empty(), "VM processes leaked: {left:?}");
    }
}
