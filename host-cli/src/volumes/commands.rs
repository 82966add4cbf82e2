//! `skiff volume create|ls|inspect|rm|prune`, as docker's.

use std::path::Path;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use super::{ensure, get, list, remove, root, users};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a random name when none is given).
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes as JSON.
    Inspect(NamesArgs),
    /// Remove volumes no container uses.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused volumes (named ones only with --all, as docker since 23.0).
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Accepted as docker does; a volume in use is still refused.
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove named volumes (skiff's volumes all are).
    #[arg(short, long)]
    pub all: bool,
    /// Do not ask (skiff never does).
    #[arg(short, long)]
    pub force: bool,
}

pub fn volume(cmd: VolumeCommand) -> Result<i32> {
    let root = root();
    match cmd {
        VolumeCommand::Create(a) => {
            let name = a.name.unwrap_or_else(crate::container::state::random_id);
            ensure(&root, &name)?;
            println!("{name}");
        }
        VolumeCommand::Ls(a) => {
            let volumes = list(&root)?;
            if !a.quiet {
                println!("{:<15} VOLUME NAME", "DRIVER");
            }
            for v in volumes {
                if a.quiet {
                    println!("{}", v.name);
                } else {
                    println!("{:<15} {}", "local", v.name);
                }
            }
        }
        VolumeCommand::Inspect(a) => {
            let mut out = Vec::new();
            for name in &a.names {
                let v =
                    get(&root, name)?.ok_or_else(|| anyhow::anyhow!("no such volume: {name}"))?;
                out.push(serde_json::json!({
                    "CreatedAt": v.meta.created,
                    "Driver": "local",
                    "Labels": {},
                    "Mountpoint": v.data(),
                    "Name": v.name,
                    "Options": {},
                    "Scope": "local",
                    "UsageData": { "RefCount": users(&v.name)?.len() },
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        VolumeCommand::Rm(a) => {
            // every name is checked before anything is removed
            for name in &a.names {
                if get(&root, name)?.is_none() {
                    bail!("no such volume: {name}");
                }
            }
            for name in &a.names {
                remove(&root, name)?;
                println!("{name}");
            }
        }
        VolumeCommand::Prune(a) => {
            let mut reclaimed = 0;
            if a.all {
                println!("Deleted Volumes:");
                for v in list(&root)? {
                    if users(&v.name)?.is_empty() {
                        reclaimed += size(&v.dir);
                        remove(&root, &v.name)?;
                        println!("{}", v.name);
                    }
                }
                println!();
            }
            println!("Total reclaimed space: {reclaimed}B");
            if !a.all {
                println!("(named volumes are removed only with --all)");
            }
        }
    }
    Ok(0)
}

/// Bytes of the files under `dir` (not following symlinks).
fn size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
