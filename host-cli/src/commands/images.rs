//! `skiff images`, `rmi`, `tag`, `image inspect` and `image prune`: the store's names and
//! blobs as docker users know them.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use image::store::{self, Summary};
use image::{ImageName, StoreError};
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Show only image IDs.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Images: names or image IDs.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove even images that running containers use (their blobs stay until they stop).
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to name: a name or an image ID.
    pub source: String,
    /// The new name: NAME[:TAG].
    pub target: String,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    Ls(ImagesArgs),
    /// Show an image's details as JSON.
    Inspect(InspectArgs),
    /// Delete blobs no image and no running container uses.
    Prune,
    /// Remove images.
    Rm(RmiArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images: names or image IDs.
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn image(cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Ls(a) => images(a),
        ImageCommand::Inspect(a) => inspect(a),
        ImageCommand::Prune => prune(),
        ImageCommand::Rm(a) => rmi(a),
    }
}

/// Repository and tag columns of a full name (`<none>` tag for digest names).
fn repo_tag(name: &str) -> (String, String) {
    match name.parse::<ImageName>() {
        Ok(n) if n.digest.is_none() => (
            n.familiar_repository(),
            n.tag.unwrap_or_else(|| image::DEFAULT_TAG.into()),
        ),
        Ok(n) => (n.familiar_repository(), "<none>".into()),
        Err(_) => (name.to_owned(), "<none>".into()),
    }
}

fn short_id(id: &str) -> String {
    id.strip_prefix("sha256:")
        .unwrap_or(id)
        .chars()
        .take(12)
        .collect()
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}{}", UNITS[unit]).replacen(".000", "", 1)
    }
}

fn summaries() -> Result<Vec<Summary>> {
    let store = super::store()?;
    store
        .entries()?
        .iter()
        .map(|e| store.summary(e).map_err(Into::into))
        .collect()
}

pub fn images(args: ImagesArgs) -> Result<i32> {
    let list = summaries()?;
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for s in &list {
            if seen.insert(s.id.clone()) {
                println!("{}", short_id(&s.id));
            }
        }
        return Ok(0);
    }
    match args.format {
        Format::Json => {
            let rows: Vec<Value> = list
                .iter()
                .map(|s| {
                    let (repo, tag) = repo_tag(&s.name);
                    json!({
                        "Name": s.name, "Repository": repo, "Tag": tag,
                        "ID": s.id, "Digest": s.source_digest.as_ref().unwrap_or(&s.manifest),
                        "Manifest": s.manifest, "Created": s.created, "Size": s.size,
                        "Platform": format!("{}/{}", s.os, s.architecture),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Table => {
            println!(
                "{:<40} {:<16} {:<14} {:<22} {:>10}",
                "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"
            );
            for s in &list {
                let (repo, tag) = repo_tag(&s.name);
                let created = s
                    .created
                    .as_deref()
                    .map(|c| c.chars().take(19).collect::<String>().replace('T', " "))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<40} {:<16} {:<14} {:<22} {:>10}",
                    repo,
                    tag,
                    short_id(&s.id),
                    created,
                    human_size(s.size)
                );
            }
        }
    }
    Ok(0)
}

pub fn rmi(args: RmiArgs) -> Result<i32> {
    let store = super::store()?;
    for user in &args.images {
        let entry = store
            .find(user)?
            .ok_or_else(|| StoreError::NoSuchImage(user.clone()))?;
        if !args.force && store.is_pinned(&entry.digest)? {
            return Err(StoreError::InUse {
                name: entry.name().to_owned(),
            }
            .into());
        }
        let by_name = user
            .parse::<ImageName>()
            .is_ok_and(|n| n.canonical() == entry.name());
        let gone = store.remove_names(|e| {
            if by_name {
                e.name() == entry.name()
            } else {
                e.digest == entry.digest
            }
        })?;
        for e in gone {
            println!("Untagged: {}", e.name());
        }
    }
    let swept = store.sweep()?;
    println!(
        "Deleted: {} blob(s), {} image disk(s), {} bytes",
        swept.blobs,
        swept.disks,
        swept.bytes + swept.disk_bytes
    );
    Ok(0)
}

pub fn tag(args: TagArgs) -> Result<i32> {
    let store = super::store()?;
    let source = store
        .find(&args.source)?
        .ok_or_else(|| StoreError::NoSuchImage(args.source.clone()))?;
    let target: ImageName = args.target.parse()?;
    if target.digest.is_some() {
        bail!("a tag target cannot carry a digest: use NAME[:TAG]");
    }
    let digest = image::Digest::parse(&source.digest)
        .with_context(|| format!("the store names a bad digest for {}", args.source))?;
    store.set_name(store::entry(
        &target.canonical(),
        &source.media_type,
        &digest,
        source.size,
    ))?;
    Ok(0)
}

pub fn inspect(args: InspectArgs) -> Result<i32> {
    let store = super::store()?;
    let mut out = Vec::new();
    for user in &args.images {
        let entry = store
            .find(user)?
            .ok_or_else(|| StoreError::NoSuchImage(user.clone()))?;
        let s = store.summary(&entry)?;
        let config: Value = store.json_blob(&s.id)?;
        let names: Vec<String> = store
            .entries()?
            .into_iter()
            .filter(|e| e.digest == entry.digest)
            .map(|e| e.name().to_owned())
            .collect();
        let (tags, digests): (Vec<String>, Vec<String>) =
            names.into_iter().partition(|n| !n.contains('@'));
        out.push(json!({
            "Id": s.id,
            "RepoTags": tags,
            "RepoDigests": digests,
            "Manifest": s.manifest,
            "SourceDigest": s.source_digest,
            "Created": s.created,
            "Os": s.os,
            "Architecture": s.architecture,
            "Size": s.size,
            "Layers": s.layers,
            "Config": config.get("config").cloned().unwrap_or(Value::Null),
            "RootFS": config.get("rootfs").cloned().unwrap_or(Value::Null),
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

pub fn prune() -> Result<i32> {
    let store = super::store()?;
    let swept = store.sweep()?;
    println!(
        "Deleted: {} blob(s), {} image disk(s); reclaimed {} bytes",
        swept.blobs,
        swept.disks,
        swept.bytes + swept.disk_bytes
    );
    Ok(0)
}
