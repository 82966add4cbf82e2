//! `skiff start [-a] [-i] CONTAINER…`: runs an exited container's command again, on its own
//! filesystem (its writable layer keeps what earlier runs changed), as docker does. Without
//! `-a` each container gets its monitor and its name is printed (one that cannot start is told
//! and the others still start; the exit code is then 1); with `-a` (one container) its output
//! comes here and skiff exits with its code; `-i` also sends stdin when the container was
//! created with `-i`.

use anyhow::{bail, Result};

use super::cli::StartArgs;
use super::state::{self, Status};

pub fn start(args: &StartArgs) -> Result<i32> {
    if (args.attach || args.interactive) && args.containers.len() > 1 {
        bail!("you cannot start and attach multiple containers at once");
    }
    let root = state::containers_dir();
    if args.attach || args.interactive {
        let c = state::find(&root, &args.containers[0])?;
        if c.state()?.status != Status::Exited && c.monitor_alive() {
            bail!(
                "container {} is running: attach needs `skiff attach`, which skiff does not have yet",
                args.containers[0]
            );
        }
        let blocked = crate::forward::block()?;
        let stdin = args.interactive && c.config.spec.stdin;
        return crate::run::foreground(&c, c.config.spec.tty, stdin, blocked);
    }
    // as docker: each container is tried, the failures are told at the end
    let mut failed = 0;
    for name in &args.containers {
        let started = state::find(&root, name).and_then(|c| {
            if c.state()?.status != Status::Exited && c.monitor_alive() {
                println!("{name}");
                return Ok(0);
            }
            super::detach::start(c, name, false)
        });
        match started {
            Ok(0) => {}
            Ok(_) => failed += 1,
            Err(e) => {
                eprintln!("skiff: error: {e:#}");
                failed += 1;
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
