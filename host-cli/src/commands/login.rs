//! `skiff login` and `skiff logout`: registry credentials in `$SKIFF_ROOT/auth.json` (0600).

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use clap::Args;
use image::registry::{auth, Client, Connect, Credentials};
use image::{ImageName, Store};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (HOST or HOST:PORT; docker.io when omitted).
    pub registry: Option<String>,
    /// User name.
    #[arg(short, long)]
    pub username: String,
    /// Password (prefer --password-stdin: a command line is visible to other users).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Allow plain HTTP to a registry that is not on a loopback address.
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (docker.io when omitted).
    pub registry: Option<String>,
}

/// A registry argument as a name the client can use (`HOST[:PORT]`).
fn registry_name(arg: Option<&str>) -> Result<ImageName> {
    let registry = arg.unwrap_or(image::DEFAULT_REGISTRY);
    let registry = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    format!("{registry}/x/x")
        .parse::<ImageName>()
        .ok()
        .filter(|n| n.registry == registry || registry == "index.docker.io")
        .with_context(|| format!("invalid registry {registry:?}: use HOST or HOST:PORT"))
}

pub fn login(args: LoginArgs) -> Result<i32> {
    let name = registry_name(args.registry.as_deref())?;
    let password = match (args.password, args.password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
        (None, false) => bail!("give the password with --password-stdin or -p"),
    };
    let creds = Credentials {
        username: args.username,
        password,
    };
    let connect = Connect {
        insecure: args.insecure,
        credentials: Some(creds.clone()),
    };
    Client::new(&name, &connect).ping()?;
    let root = Store::default_root();
    auth::save(&root, &name.registry, &creds)?;
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(args: LogoutArgs) -> Result<i32> {
    let name = registry_name(args.registry.as_deref())?;
    if auth::remove(&Store::default_root(), &name.registry)? {
        println!("Removing login credentials for {}", name.registry);
    } else {
        println!("Not logged in to {}", name.registry);
    }
    Ok(0)
}
