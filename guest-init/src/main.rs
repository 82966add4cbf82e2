//! guest-init: PID 1 of the skiff guest, and the same session as a plain host process for tests.
//!
//! Modes:
//! - run as PID 1 (the initramfs's `/init`; arguments are ignored): VM mode, see [`vm`];
//! - `guest-init --connect-unix PATH [--exec-unix EXEC]` as root on a host: native mode, see
//!   [`native`].
//!
//! `SKIFF_GUEST_LOG=debug` (environment, or the kernel command line in the VM) turns on the
//! timing logs on stderr.

mod cgroup;
mod changes;
mod container;
mod container_init;
mod copy;
mod error;
mod etc_files;
mod log;
mod native;
mod network;
mod privileges;
mod publish;
mod reaper;
mod rlimits;
mod rootfs;
mod seccomp;
mod session;
mod shares;
mod stdin;
mod terminal;
mod user;
mod vm;

use std::path::Path;

const USAGE: &str = "usage: guest-init                      (as PID 1 of a skiff guest)\n       \
                     guest-init --connect-unix PATH [--exec-unix EXEC]\n       \
                     \x20                               (native session over a Unix socket)";

fn main() {
    log::init();
    if std::process::id() == 1 {
        vm::run();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, path, rest @ ..] if flag == "--connect-unix" => {
            let exec = match rest {
                [] => None,
                [f, exec] if f == "--exec-unix" => Some(Path::new(exec)),
                _ => {
                    eprintln!("{USAGE}");
                    std::process::exit(2);
                }
            };
            if let Err(e) = native::run(Path::new(path), exec) {
                eprintln!("guest-init: {e}");
                std::process::exit(1);
            }
        }
        [flag] if flag == "--help" || flag == "-h" => println!("{USAGE}"),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
