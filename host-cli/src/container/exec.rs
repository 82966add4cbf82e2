//! `skiff exec`: a second process in a running container, through guest-init in the same VM.
//! The command connects straight to the VM's hybrid-vsock socket (its path is in the
//! container's state), asks for guest-init's exec port with `CONNECT <port>\n`, and carries an
//! exec session through; stdio, signals and the terminal are handled as for a foreground run.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use protocol::ExecSpec;

use super::cli::ExecArgs;
use super::state::{self, short_id, Status};
use crate::session::{Session, SessionIo};
use crate::{forward, launch, terminal};

/// Longest answer line of the vsock device to `CONNECT`.
const MAX_REPLY: usize = 64;

pub fn exec(args: ExecArgs) -> Result<i32> {
    let c = state::find(&state::containers_dir(), &args.container)?;
    let s = c.state()?;
    let vm_dir = match (&s.status, &s.vm_dir) {
        (Status::Running, Some(d)) => d.clone(),
        _ => bail!("container {} is not running", short_id(&c.config.id)),
    };
    let spec = ExecSpec {
        argv: args.command.clone(),
        env: environment(&c.config.spec.env, args.tty, &args.env)?,
        cwd: args
            .workdir
            .clone()
            .unwrap_or_else(|| c.config.spec.cwd.clone()),
        user: args
            .user
            .clone()
            .unwrap_or_else(|| c.config.spec.user.clone()),
        tty: args.tty,
        term_size: args.tty.then(terminal::current_size).flatten(),
        stdin: args.interactive,
        security: c.config.spec.security,
        rlimits: c.config.spec.rlimits.clone(),
    };
    let blocked = forward::block()?;
    let stream = connect(&vm_dir, protocol::EXEC_PORT)?;
    let session = Session::new(stream)?;
    blocked.forward(session.signal_sender(), args.tty)?;
    let _raw = if args.tty {
        terminal::RawMode::enter()?
    } else {
        None
    };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let io = SessionIo {
        stdin: args
            .interactive
            .then(|| Box::new(std::io::stdin()) as Box<dyn Read + Send>),
        stdout: &mut out,
        stderr: &mut err,
    };
    let report = session
        .exec(&spec, io)
        .with_context(|| format!("exec in container {}", short_id(&c.config.id)))?;
    Ok(launch::exit_code(report.outcome))
}

/// The container's environment, `TERM` with a terminal, then the `-e` values (docker's order).
fn environment(base: &[String], tty: bool, flags: &[String]) -> Result<Vec<String>> {
    let mut env: Vec<(String, String)> = base
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut set = |k: &str, v: Option<String>| {
        env.retain(|(key, _)| key != k);
        if let Some(v) = v {
            env.push((k.to_string(), v));
        }
    };
    if tty {
        set("TERM", Some("xterm".into()));
    }
    for flag in flags {
        match image::EnvEntry::parse(flag)? {
            image::EnvEntry::Set { key, value } => set(&key, Some(value)),
            image::EnvEntry::Inherit(key) => set(&key, std::env::var(&key).ok()),
        }
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// A stream to guest port `port` through the VM's hybrid-vsock socket in `vm_dir`.
pub fn connect(vm_dir: &Path, port: u32) -> Result<UnixStream> {
    let path = vm_dir.join("vsock");
    let mut s = UnixStream::connect(&path)
        .with_context(|| format!("cannot reach the VM at {}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .context("cannot configure the vsock stream")?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .context("cannot ask the VM for a connection")?;
    // Byte by byte: what follows the line belongs to the session.
    let mut reply = Vec::new();
    let mut b = [0u8; 1];
    while reply.len() < MAX_REPLY {
        match s.read(&mut b) {
            Ok(0) => bail!("the guest refused a connection to vsock port {port}"),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => reply.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("no answer from the VM's vsock device"),
        }
    }
    if !reply.starts_with(b"OK ") {
        bail!(
            "the VM's vsock device answered {:?} to CONNECT {port}",
            String::from_utf8_lossy(&reply)
        );
    }
    s.set_read_timeout(None)
        .context("cannot configure the vsock stream")?;
    Ok(s)
}
