//! Creates the container: a child cloned into new mount, pid, uts and ipc namespaces that
//! pivots into the image root, sets up /proc, /dev and /sys, takes the image's user and
//! execs the command. Exec errors come back over a close-on-exec pipe; end of file on it
//! means the execve succeeded.
//!
//! /dev is a fresh tmpfs with the standard nodes (null, zero, full, random, urandom, tty),
//! the usual /proc/self/fd links, a private devpts instance and a /dev/shm tmpfs — as runc does,
//! so the container never sees the guest's (or, natively, the host's) devices.
//! Special mounts are made after pivot_root, so a symlink in the image cannot point them
//! outside the container's root.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::{self, DirBuilder, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::stat::{makedev, mknod, umask, Mode, SFlag};
use nix::unistd::{self, Gid, Pid, Uid};
use protocol::{ExecSpec, FailureKind, Rlimit, RunSpec, Security, TermSize};

use crate::container_init;
use crate::error::{Context, Error, Result};
use crate::etc_files;
use crate::privileges;
use crate::rlimits;
use crate::rootfs;
use crate::{terminal, user};

/// PATH used to find the command when the spec's environment has none (docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Stack of the cloned child until it execs.
const CHILD_STACK: usize = 2 << 20;
/// Longest error message the child reports.
const MAX_ERROR: usize = 4096;

/// The process's standard streams.
pub enum ChildStdio {
    /// The process's ends of three pipes (or /dev/null).
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A terminal the process opens inside the container (so it lives in the container's
    /// devpts) as its controlling terminal; the master side goes back over `socket`
    /// (SCM_RIGHTS).
    Terminal {
        socket: OwnedFd,
        size: Option<TermSize>,
    },
}

/// What to execute and as whom: shared by the container's first process and exec'd ones.
pub struct Process<'a> {
    pub argv: &'a [String],
    pub env: &'a [String],
    pub cwd: &'a str,
    pub user: &'a str,
    pub security: &'a Security,
    pub rlimits: &'a [Rlimit],
}

impl<'a> Process<'a> {
    pub fn of_run(spec: &'a RunSpec) -> Process<'a> {
        Process {
            argv: &spec.argv,
            env: &spec.env,
            cwd: &spec.cwd,
            user: &spec.user,
            security: &spec.security,
            rlimits: &spec.rlimits,
        }
    }

    pub fn of_exec(spec: &'a ExecSpec) -> Process<'a> {
        Process {
            argv: &spec.argv,
            env: &spec.env,
            cwd: &spec.cwd,
            user: &spec.user,
            security: &spec.security,
            rlimits: &spec.rlimits,
        }
    }
}

/// Starts `spec`'s command in a new container rooted at `root`; returns once it was executed.
pub fn start(root: &Path, spec: &RunSpec, stdio: ChildStdio) -> Result<Pid> {
    let (report_r, report_w) =
        unistd::pipe2(OFlag::O_CLOEXEC).ctx(|| "create the exec report pipe".into())?;
    let mut stack = vec![0u8; CHILD_STACK];
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    let report_fd = report_w.as_raw_fd();
    let child = Box::new(|| {
        let error = match child_main(root, spec, &stdio, report_fd) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        report(report_fd, &error);
        127
    });
    // SAFETY: the caller is single-threaded here (the relay threads start later), so the child
    // may allocate; it only runs `child_main`, which ends in execve or in reporting the error
    // and returning.
    let pid = unsafe { nix::sched::clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }
        .ctx(|| "clone the container process".into())?;
    drop(report_w);
    drop(stdio);
    await_exec(report_r, pid)
}

/// Makes this thread's root and mounts those of the container whose first process is `init`
/// (its filesystem attributes unshared first, so the rest of guest-init keeps its own).
pub fn join_mounts(init: Pid) -> Result<()> {
    let path = format!("/proc/{init}/ns/mnt");
    let ns = File::open(&path).ctx(|| format!("open {path}"))?;
    nix::sched::unshare(CloneFlags::CLONE_FS).ctx(|| "unshare the filesystem attributes".into())?;
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWNS)
        .ctx(|| "join the container's mount namespace".into())?;
    unistd::chdir("/").ctx(|| "chdir /".into())
}

/// Starts `process` inside the running container whose first process is `init`: it joins
/// that process's namespaces (and so its root) and becomes a child of this process; returns
/// once it was executed.
///
/// Joining a mount namespace needs a single-threaded caller, so a forked helper joins them and
/// clones the process with `CLONE_PARENT` (the joined pid namespace applies to its children
/// only), reports its pid and exits.
pub fn enter(init: Pid, process: &Process<'_>, stdio: ChildStdio) -> Result<Pid> {
    let mut namespaces = Vec::new();
    // The mount namespace goes last: after it, /proc is the container's.
    for ns in ["ipc", "uts", "pid", "mnt"] {
        let path = format!("/proc/{init}/ns/{ns}");
        let f = File::open(&path).ctx(|| format!("open {path}"))?;
        namespaces.push(OwnedFd::from(f));
    }
    let (report_r, report_w) =
        unistd::pipe2(OFlag::O_CLOEXEC).ctx(|| "create the exec report pipe".into())?;
    let (pid_r, pid_w) =
        unistd::pipe2(OFlag::O_CLOEXEC).ctx(|| "create the exec pid pipe".into())?;
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: glibc's fork leaves the allocator usable in the child; the child runs only
    // `helper_main` and leaves with `_exit`, never returning into the caller's code.
    match unsafe { unistd::fork() }.ctx(|| "fork the exec helper".into())? {
        unistd::ForkResult::Child => {
            let code = match helper_main(&namespaces, process, &stdio, &mut stack, &report_w) {
                Ok(pid) => {
                    let mut w = File::from(pid_w);
                    match w.write_all(&pid.as_raw().to_le_bytes()) {
                        Ok(()) => 0,
                        Err(_) => 1,
                    }
                }
                Err(e) => {
                    report(report_w.as_raw_fd(), &e);
                    1
                }
            };
            // SAFETY: leaving the forked helper without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        unistd::ForkResult::Parent { child: helper } => {
            drop((report_w, pid_w, stdio, namespaces));
            let mut raw = [0u8; 4];
            let got = File::from(pid_r).read_exact(&mut raw);
            let _ = nix::sys::wait::waitpid(helper, None);
            match got {
                Ok(()) => await_exec(report_r, Pid::from_raw(i32::from_le_bytes(raw))),
                Err(_) => match read_report(report_r)? {
                    Some(e) => Err(e),
                    None => Err(Error::Invalid(
                        "the exec helper ended without a report".into(),
                    )),
                },
            }
        }
    }
}

/// In the forked helper: join the namespaces, clone the process into them.
fn helper_main(
    namespaces: &[OwnedFd],
    process: &Process<'_>,
    stdio: &ChildStdio,
    stack: &mut [u8],
    report_w: &OwnedFd,
) -> Result<Pid> {
    crate::cgroup::join()?;
    for fd in namespaces {
        nix::sched::setns(fd, CloneFlags::empty())
            .ctx(|| "join the container's namespaces".into())?;
    }
    let report_fd = report_w.as_raw_fd();
    let child = Box::new(|| {
        let error = match exec_process(process, stdio) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        report(report_fd, &error);
        127
    });
    // SAFETY: the helper is single-threaded; the child only runs `exec_process`.
    unsafe { nix::sched::clone(child, stack, CloneFlags::CLONE_PARENT, Some(libc::SIGCHLD)) }
        .ctx(|| "clone the exec process".into())
}

/// Waits for the child's execve: `Ok(pid)` when it succeeded, else its error (child reaped).
fn await_exec(report_r: OwnedFd, pid: Pid) -> Result<Pid> {
    match read_report(report_r)? {
        None => Ok(pid),
        Some(e) => {
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(e)
        }
    }
}

/// Reads the exec report pipe to its end: `None` when it closed empty (execve succeeded).
fn read_report(report_r: OwnedFd) -> Result<Option<Error>> {
    let mut msg = Vec::new();
    File::from(report_r)
        .take(MAX_ERROR as u64 + 1)
        .read_to_end(&mut msg)
        .ctx(|| "read the exec report pipe".into())?;
    let Some((&kind, text)) = msg.split_first() else {
        return Ok(None);
    };
    let kind = match kind {
        1 => FailureKind::NotFound,
        2 => FailureKind::CannotExecute,
        _ => FailureKind::Setup,
    };
    Ok(Some(Error::Exec {
        kind,
        message: String::from_utf8_lossy(text).into_owned(),
    }))
}

fn report(fd: RawFd, error: &Error) {
    let kind = match error.kind() {
        FailureKind::NotFound => 1,
        FailureKind::CannotExecute => 2,
        FailureKind::Setup => 0,
    };
    let mut msg = vec![kind];
    msg.extend(error.to_string().bytes().take(MAX_ERROR - 1));
    // SAFETY: `fd` is the write end of the report pipe, open in this child until it exits;
    // ManuallyDrop leaves closing it to the exit.
    let mut pipe = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let _ = pipe.write_all(&msg);
}

fn child_main(
    root: &Path,
    spec: &RunSpec,
    stdio: &ChildStdio,
    report_fd: RawFd,
) -> Result<Infallible> {
    crate::cgroup::join()?;
    enter_root(root)?;
    mount_specials()?;
    privileges::mask_kernel_files(&spec.security)?;
    etc_files::write(&spec.etc_files)?;
    rootfs::finish_inside(&spec.root, &spec.tmpfs, &spec.shares)?;
    if !spec.hostname.is_empty() {
        unistd::sethostname(&spec.hostname).ctx(|| format!("set hostname {:?}", spec.hostname))?;
    }
    if spec.hold {
        hold(report_fd);
    }
    if spec.init {
        container_init::run(
            || exec_process(&Process::of_run(spec), stdio),
            |e| report(report_fd, e),
            report_fd,
        );
    }
    exec_process(&Process::of_run(spec), stdio)
}

/// The container's first process when the spec asks it to hold: reports its start (the report
/// pipe closes empty, as after an execve) and sleeps until it is killed.
fn hold(report_fd: RawFd) -> ! {
    // SAFETY: the write end of the report pipe, owned by this child; nothing uses it after.
    unsafe { libc::close(report_fd) };
    loop {
        unistd::pause();
    }
}

/// Inside the container: take the user, environment and working directory, the stdio, and
/// execve the command.
fn exec_process(process: &Process<'_>, stdio: &ChildStdio) -> Result<Infallible> {
    let passwd = user::read_db("/etc/passwd").map_err(Error::Invalid)?;
    let group = user::read_db("/etc/group").map_err(Error::Invalid)?;
    let user = user::resolve(process.user, &passwd, &group).map_err(Error::Invalid)?;

    let mut env = process.env.to_vec();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let env = cstrings(&env, "environment entry")?;
    let argv = cstrings(process.argv, "argument")?;
    let cmd = process
        .argv
        .first()
        .ok_or_else(|| Error::Invalid("no command specified".into()))?;

    let cwd = if process.cwd.is_empty() {
        "/"
    } else {
        process.cwd
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(cwd)
        .ctx(|| format!("create the working directory {cwd}"))?;
    unistd::chdir(cwd).ctx(|| format!("chdir to {cwd}"))?;

    umask(Mode::from_bits_truncate(0o022));
    rlimits::apply(process.rlimits)?;
    privileges::limit_bounding_set(process.security)?;
    let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    unistd::setgroups(&groups).ctx(|| "setgroups".into())?;
    unistd::setgid(Gid::from_raw(user.gid)).ctx(|| format!("setgid {}", user.gid))?;
    unistd::setuid(Uid::from_raw(user.uid)).ctx(|| format!("setuid {}", user.uid))?;
    // If guest-init dies, the container dies with it (credential changes clear this, so it
    // comes after setuid).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).ctx(|| "set the parent-death signal".into())?;
    privileges::apply(process.security, user.uid)?;

    // Signal state is inherited across execve: give the command the default one.
    // SAFETY: resetting dispositions to SIG_DFL installs no handler code.
    unsafe { signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) }
        .ctx(|| "reset SIGPIPE".into())?;
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .ctx(|| "reset the signal mask".into())?;

    match stdio {
        ChildStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            for (fd, target) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
                unistd::dup2(fd.as_raw_fd(), target).ctx(|| format!("dup2 onto fd {target}"))?;
            }
        }
        ChildStdio::Terminal { socket, size } => {
            let slave = terminal::open_in_container(socket, *size)?;
            for target in 0..3 {
                unistd::dup2(slave.as_raw_fd(), target).ctx(|| format!("dup2 onto fd {target}"))?;
            }
            drop(slave);
            unistd::setsid().ctx(|| "start a session".into())?;
            terminal::make_controlling(0)?;
        }
    }

    let program = if cmd.contains('/') {
        cmd.clone()
    } else {
        find_in_path(cmd, &path_var).ok_or_else(|| Error::Exec {
            kind: FailureKind::NotFound,
            message: format!("exec: \"{cmd}\": executable file not found in $PATH"),
        })?
    };
    let program_c = CString::new(program.as_bytes())
        .map_err(|_| Error::Invalid(format!("command {program:?} contains a NUL byte")))?;
    let errno = match unistd::execve(&program_c, &argv, &env) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    Err(exec_error(cmd, &program, errno))
}

/// docker's wording and exit-code class for an execve failure.
fn exec_error(cmd: &str, program: &str, errno: Errno) -> Error {
    let (kind, message) = match errno {
        Errno::ENOENT => (
            FailureKind::NotFound,
            format!("exec: \"{cmd}\": stat {program}: no such file or directory"),
        ),
        Errno::EACCES => (
            FailureKind::CannotExecute,
            format!("exec: \"{cmd}\": permission denied"),
        ),
        Errno::ENOEXEC => (
            FailureKind::CannotExecute,
            format!("exec: \"{cmd}\": exec format error"),
        ),
        other => (
            FailureKind::Setup,
            format!("exec: \"{cmd}\": {}", other.desc()),
        ),
    };
    Error::Exec { kind, message }
}

/// Like Go's `exec.LookPath` (what docker uses): the first regular file with an execute bit.
fn find_in_path(cmd: &str, path_var: &str) -> Option<String> {
    path_var.split(':').find_map(|dir| {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = format!("{dir}/{cmd}");
        let meta = fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}

fn cstrings(items: &[String], what: &str) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::Invalid(format!("{what} {s:?} contains a NUL byte")))
        })
        .collect()
}

/// Stops mount events from reaching the parent mount namespace (and back).
pub fn make_mounts_private() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .ctx(|| "make the mounts private".into())
}

/// Makes `root` the root of this (new) mount namespace.
fn enter_root(root: &Path) -> Result<()> {
    make_mounts_private()?;
    mount(
        Some(root),
        root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind {} onto itself", root.display()))?;
    unistd::chdir(root).ctx(|| format!("chdir {}", root.display()))?;
    unistd::pivot_root(".", ".").ctx(|| format!("pivot_root into {}", root.display()))?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "detach the old root".into())?;
    unistd::chdir("/").ctx(|| "chdir /".into())
}

/// A directory to mount on: created if missing; a symlink or file there is an error.
fn mount_point(path: &str, mode: u32) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Invalid(format!(
            "{path} in the image is not a directory; cannot mount on it"
        ))),
        Err(_) => DirBuilder::new()
            .mode(mode)
            .create(path)
            .ctx(|| format!("mkdir {path}")),
    }
}

fn mount_fs(fstype: &str, target: &str, flags: MsFlags, data: Option<&str>) -> Result<()> {
    mount(Some(fstype), target, Some(fstype), flags, data)
        .ctx(|| format!("mount {fstype} on {target}"))
}

fn mount_specials() -> Result<()> {
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_point("/proc", 0o555)?;
    mount_fs("proc", "/proc", hardened, None)?;

    mount_point("/dev", 0o755)?;
    mount_fs(
        "tmpfs",
        "/dev",
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    umask(Mode::empty());
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = format!("/dev/{name}");
        mknod(
            path.as_str(),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .ctx(|| format!("mknod {path}"))?;
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, link).ctx(|| format!("symlink {link}"))?;
    }
    mount_point("/dev/pts", 0o755)?;
    mount_fs(
        "devpts",
        "/dev/pts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mount_point("/dev/shm", 0o1777)?;
    mount_fs("tmpfs", "/dev/shm", hardened, Some("mode=1777,size=65536k"))?;

    mount_point("/sys", 0o555)?;
    mount_fs("sysfs", "/sys", hardened | MsFlags::MS_RDONLY, None)
}
