//! `skiff load`, `skiff save` and `skiff import`: images in and out of the store as tarballs.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use image::transfer::{self, ArchiveFormat};
use image::ImageName;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The archive to read (oci-archive or docker-archive; the kind is detected).
    #[arg(short, long)]
    pub input: PathBuf,
    /// Print nothing.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A tar of an OCI image layout.
    OciArchive,
    /// The format of `docker save`.
    DockerArchive,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The archive to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// The kind of archive.
    #[arg(long, value_enum, default_value_t = Format::DockerArchive)]
    pub format: Format,
    /// Images: names or image IDs.
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A root filesystem tarball (plain or gzip).
    pub file: PathBuf,
    /// The image's name: NAME[:TAG].
    pub name: String,
}

pub fn load(args: LoadArgs) -> Result<i32> {
    let store = super::store()?;
    let names = transfer::load(&store, &args.input)?;
    if !args.quiet {
        for n in names {
            println!("Loaded image: {n}");
        }
    }
    Ok(0)
}

pub fn save(args: SaveArgs) -> Result<i32> {
    let store = super::store()?;
    let format = match args.format {
        Format::OciArchive => ArchiveFormat::Oci,
        Format::DockerArchive => ArchiveFormat::Docker,
    };
    transfer::save(&store, &args.images, &args.output, format)?;
    Ok(0)
}

pub fn import(args: ImportArgs) -> Result<i32> {
    let store = super::store()?;
    let name: ImageName = args.name.parse()?;
    let id = transfer::import(&store, &args.file, &name)?;
    println!("{id}");
    Ok(0)
}
