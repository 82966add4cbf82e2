//! docker's rules for combining an image's config with `skiff run`'s flags into the process to
//! start: entrypoint and command, environment, working directory and user.

use std::path::PathBuf;

use tracing::warn;

use crate::envfile::{read_env_file, EnvEntry, EnvError};
use crate::resolved::ImageConfig;

/// docker's `PATH` for a container whose image and flags set none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The flags of `skiff run` that change how the image's process starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOverrides {
    /// The command and arguments after the image name; replaces the image's Cmd when not empty.
    pub command: Vec<String>,
    /// `--entrypoint`: replaces the image's Entrypoint and drops its Cmd; `""` clears both.
    pub entrypoint: Option<String>,
    /// `-e KEY=VALUE` / `-e KEY`, in command-line order.
    pub env: Vec<String>,
    /// `--env-file`, in command-line order; applied before the `-e` values.
    pub env_files: Vec<PathBuf>,
    /// `-w`: must be absolute.
    pub workdir: Option<String>,
    /// `-u USER[:GROUP]`.
    pub user: Option<String>,
    /// The container's hostname, exported as `HOSTNAME` (empty: not exported).
    pub hostname: String,
    /// `-t`: exports `TERM=xterm`.
    pub tty: bool,
}

/// The process to start in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub argv: Vec<String>,
    /// `KEY=VALUE`, each key once.
    pub env: Vec<String>,
    /// Absolute.
    pub cwd: String,
    /// `USER[:GROUP]` to resolve in the container's /etc/passwd and /etc/group; empty for root.
    pub user: String,
}

/// Why the flags and the image do not make a process.
#[derive(Debug, thiserror::Error)]
pub enum RunConfigError {
    #[error("no command specified: the image has no Entrypoint or Cmd; give a command after the image name")]
    NoCommand,
    #[error("the working directory {0:?} is invalid: it needs to be an absolute path")]
    RelativeWorkdir(String),
    #[error("the image's WorkingDir {0:?} is not an absolute path; pass -w with an absolute path")]
    ImageRelativeWorkdir(String),
    #[error(transparent)]
    Env(#[from] EnvError),
}

/// [`merge_with`] against this process's environment (for `-e KEY` and bare names in env files).
pub fn merge(config: &ImageConfig, overrides: &RunOverrides) -> Result<Process, RunConfigError> {
    merge_with(config, overrides, &|key| std::env::var(key).ok())
}

/// Applies docker's override rules; `host` looks up the host's environment variables.
pub fn merge_with(
    config: &ImageConfig,
    overrides: &RunOverrides,
    host: &dyn Fn(&str) -> Option<String>,
) -> Result<Process, RunConfigError> {
    Ok(Process {
        argv: argv(config, overrides)?,
        env: env(config, overrides, host)?,
        cwd: cwd(config, overrides)?,
        user: match overrides.user.as_deref() {
            Some(u) if !u.is_empty() => u.to_owned(),
            _ => config.user.clone(),
        },
    })
}

/// Entrypoint + command. `--entrypoint` drops the image's Cmd (docker: "passing --entrypoint
/// clears out any default command set on the image").
fn argv(config: &ImageConfig, overrides: &RunOverrides) -> Result<Vec<String>, RunConfigError> {
    let (entrypoint, cmd): (Vec<String>, &[String]) = match overrides.entrypoint.as_deref() {
        Some("") => (Vec::new(), &overrides.command),
        Some(e) => (vec![e.to_owned()], &overrides.command),
        None if overrides.command.is_empty() => (config.entrypoint.clone(), &config.cmd),
        None => (config.entrypoint.clone(), &overrides.command),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd.iter().cloned()).collect();
    match argv.first() {
        Some(first) if !first.is_empty() => Ok(argv),
        _ => Err(RunConfigError::NoCommand),
    }
}

fn cwd(config: &ImageConfig, overrides: &RunOverrides) -> Result<String, RunConfigError> {
    match overrides.workdir.as_deref() {
        Some(w) if !w.is_empty() && !w.starts_with('/') => {
            Err(RunConfigError::RelativeWorkdir(w.to_owned()))
        }
        Some(w) if !w.is_empty() => Ok(w.to_owned()),
        _ if config.working_dir.is_empty() => Ok("/".to_owned()),
        _ if !config.working_dir.starts_with('/') => Err(RunConfigError::ImageRelativeWorkdir(
            config.working_dir.clone(),
        )),
        _ => Ok(config.working_dir.clone()),
    }
}

/// docker's defaults (PATH, HOSTNAME, TERM with a tty), then the image's Env, the env files and
/// the `-e` values: a later value replaces an earlier one in place; `-e KEY` with KEY unset on
/// the host removes KEY.
fn env(
    config: &ImageConfig,
    overrides: &RunOverrides,
    host: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, RunConfigError> {
    let mut env = EnvList::default();
    env.set("PATH", DEFAULT_PATH);
    if !overrides.hostname.is_empty() {
        env.set("HOSTNAME", &overrides.hostname);
    }
    if overrides.tty {
        env.set("TERM", "xterm");
    }
    for entry in &config.env {
        match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() && !entry.contains('\0') => env.set(key, value),
            _ => warn!(entry = %entry, "ignoring a malformed Env entry of the image"),
        }
    }
    for path in &overrides.env_files {
        for entry in read_env_file(path, host)? {
            env.apply(entry, host);
        }
    }
    for flag in &overrides.env {
        env.apply(EnvEntry::parse(flag)?, host);
    }
    Ok(env.0.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// An ordered environment with unique keys.
#[derive(Default)]
struct EnvList(Vec<(String, String)>);

impl EnvList {
    fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.0.push((key.to_owned(), value.to_owned())),
        }
    }

    fn apply(&mut self, entry: EnvEntry, host: &dyn Fn(&str) -> Option<String>) {
        match entry {
            EnvEntry::Set { key, value } => self.set(&key, &value),
            EnvEntry::Inherit(key) => match host(&key) {
                Some(value) => self.set(&key, &value),
                None => self.0.retain(|(k, _)| *k != key),
            },
        }
    }
}
