//! `skiff start [-a] [-i] CONTAINER…`: runs an exited container's command again, on its own
//! filesystem (its writable layer keeps what earlier runs changed), as docker does. Without
//! `-a` each container gets its monitor and its name is printed; with `-a` (one container) its
//! output comes here and skiff exits with its code; `-i` also sends stdin when the container
//! was created with `-i`.

use anyhow::{bail, Result};

use super::cli::StartArgs;
use super::state::{self, Status};

pub fn start(args: &StartArgs) -> Result<i32> {
    if (args.attach || args.interactive) && args.containers.len() > 1 {
        bail!("you cannot start and attach multiple containers at once");
    }
    let root = state::containers_dir();
    let all: Vec<_> = args
        .containers
        .iter()
        .map(|n| state::find(&root, n))
        .collect::<Result<_>>()?;
    for (c, name) in all.iter().zip(&args.containers) {
        if c.state()?.status != Status::Exited && c.monitor_alive() {
            if args.attach || args.interactive {
                bail!("container {name} is running: attach needs `skiff attach`, which skiff does not have yet");
            }
            println!("{name}");
            continue;
        }
        if args.attach || args.interactive {
            let blocked = crate::forward::block()?;
            let stdin = args.interactive && c.config.spec.stdin;
            return crate::run::foreground(c, c.config.spec.tty, stdin, blocked);
        }
        let code = super::detach::start(c.clone(), name, false)?;
        if code != 0 {
            return Ok(code);
        }
    }
    Ok(0)
}
