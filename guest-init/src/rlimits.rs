//! The resource limits of a container's process (`--ulimit`), set before its change of user (a
//! raised hard limit needs CAP_SYS_RESOURCE, which it may not keep).

use protocol::Rlimit;

use crate::error::{Context, Error, Result};

/// The resource docker's name stands for.
fn resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// Sets every limit of `limits` on this process.
pub fn apply(limits: &[Rlimit]) -> Result<()> {
    for l in limits {
        let r = resource(&l.resource)
            .ok_or_else(|| Error::Invalid(format!("unknown resource limit {:?}", l.resource)))?;
        let value = libc::rlimit {
            rlim_cur: l.soft,
            rlim_max: l.hard,
        };
        // SAFETY: a valid resource and a pointer to a limit that outlives the call.
        if unsafe { libc::setrlimit(r, &value) } != 0 {
            return Err(std::io::Error::last_os_error())
                .ctx(|| format!("set the {} limit to {}:{}", l.resource, l.soft, l.hard));
        }
    }
    Ok(())
}
