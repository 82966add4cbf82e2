//! `skiff pull`, and how `skiff run` finds its image: `oci:`/`oci-archive:` paths are opened
//! directly, anything else is a name resolved through the store, pulled per `--pull`.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use image::pull::{Platform, PullOptions, PullReport, DEFAULT_JOBS};
use image::registry::{auth, Connect};
use image::{ImageName, ResolvedImage, Store};

use super::progress;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: NAME[:TAG] or NAME@sha256:DIGEST (e.g. alpine, localhost:5000/team/app:1.2).
    pub name: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print only the image's digest.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Flags of every command that may pull.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// The platform to pull from a multi-platform image (OS/ARCH[/VARIANT]; default: this host's).
    #[arg(long, value_parser = parse_platform)]
    pub platform: Option<Platform>,
    /// Allow plain HTTP to a registry that is not on a loopback address.
    #[arg(long)]
    pub insecure: bool,
    /// Layers downloaded at once.
    #[arg(long, default_value_t = DEFAULT_JOBS as u8, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub jobs: u8,
}

/// When `skiff run` pulls its image (docker's `--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PullPolicy {
    /// Pull when the store does not hold the image.
    #[default]
    Missing,
    /// Pull before every run.
    Always,
    /// Never pull: fail when the store does not hold the image.
    Never,
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    s.parse()
}

/// Pulls `name` into `store` with the credentials stored for its registry.
fn pull_into(store: &Store, name: &ImageName, flags: &RegistryArgs) -> Result<PullReport> {
    let credentials = auth::lookup(store.root(), &name.registry)?;
    let opts = PullOptions {
        platform: flags.platform.clone().unwrap_or_else(Platform::host),
        connect: Connect {
            insecure: flags.insecure,
            credentials,
        },
        jobs: usize::from(flags.jobs),
    };
    let bars = progress::for_stderr();
    Ok(image::pull(store, name, &opts, &*bars)?)
}

fn parse_name(s: &str) -> Result<ImageName> {
    Ok(s.parse::<ImageName>()?)
}

pub fn pull(args: PullArgs) -> Result<i32> {
    let name = parse_name(&args.name)?;
    let store = super::store()?;
    let report = pull_into(&store, &name, &args.registry)?;
    if args.quiet {
        println!("{}", report.digest);
    } else {
        println!(
            "{}: {} layer(s) downloaded ({} bytes), {} already present",
            report.name, report.fetched, report.bytes, report.present
        );
        println!("Digest: {}", report.digest);
    }
    Ok(0)
}

/// The image `skiff run` runs: an `oci:`/`oci-archive:` argument as it is, else a name (or
/// image ID) from the store, pulled first as `policy` says.
/// Whether a run argument names an image on disk (`oci:DIR`, `oci-archive:FILE`) rather than
/// one in the store.
pub fn is_image_path(arg: &str) -> bool {
    arg.starts_with("oci:") || arg.starts_with("oci-archive:")
}

pub fn resolve_for_run(
    arg: &str,
    policy: PullPolicy,
    flags: &RegistryArgs,
) -> Result<ResolvedImage> {
    if is_image_path(arg) {
        return Ok(image::open(arg)?);
    }
    let store = super::store()?;
    let present = store.find(arg)?.is_some();
    let pull = match policy {
        PullPolicy::Always => true,
        PullPolicy::Missing => !present,
        PullPolicy::Never => false,
    };
    if pull {
        let name = parse_name(arg)?;
        if !present {
            eprintln!("Unable to find image '{name}' locally");
        }
        let report =
            pull_into(&store, &name, flags).with_context(|| format!("cannot pull {name}"))?;
        eprintln!("{}: downloaded {} layer(s)", report.name, report.fetched);
    }
    Ok(store.resolve(arg)?)
}
