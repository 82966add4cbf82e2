//! `ps`, `logs`, `stop`, `kill`, `rm`, `wait`, `inspect`, `port`: read the state directory and talk to
//! the monitors. Every container named is looked up (and checked) before anything changes.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use super::api::{self, Request};
use super::cli::{InspectArgs, KillArgs, LogsArgs, PortArgs, PsArgs, RmArgs, StopArgs, WaitArgs};
use super::logs::{self, LogReader};
use super::state::{self, short_id, Container, State, Status};
use super::time;
use crate::network::{Mac, PortMapping};

/// How long `rm -f` waits for a killed container's monitor to go.
const RM_WAIT: Duration = Duration::from_secs(15);

fn find_all(names: &[String]) -> Result<Vec<Container>> {
    let root = state::containers_dir();
    names.iter().map(|n| state::find(&root, n)).collect()
}

fn running(state: &State) -> bool {
    state.status != Status::Exited
}

fn status_text(s: &State) -> String {
    match s.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", since(s.started.as_deref())),
        Status::Exited => {
            let code = s.exit_code.unwrap_or(0);
            let when = s.finished.as_deref().map(time::ago).unwrap_or_default();
            match &s.error {
                Some(e) if e.contains("monitor") => format!("Exited ({code}) (monitor died)"),
                _ if when.is_empty() => format!("Exited ({code})"),
                _ => format!("Exited ({code}) {when}"),
            }
        }
    }
}

/// "5 seconds" from "5 seconds ago".
fn since(t: Option<&str>) -> String {
    let ago = t.map(time::ago).unwrap_or_default();
    ago.strip_suffix(" ago").unwrap_or(&ago).to_string()
}

/// docker's PORTS column: the published ports of a running container.
fn ports_text(c: &Container, s: &State) -> String {
    if !running(s) {
        return String::new();
    }
    let ports: Vec<String> = c
        .config
        .network
        .publish
        .iter()
        .map(|m| m.to_string())
        .collect();
    ports.join(", ")
}

fn command_text(c: &Container) -> String {
    let cmd = c.config.spec.argv.join(" ");
    let cmd: String = cmd.chars().take(20).collect();
    format!("\"{cmd}\"")
}

pub fn ps(args: &PsArgs) -> Result<i32> {
    let json = match args.format.as_deref() {
        None | Some("table") => false,
        Some("json" | "{{json .}}") => true,
        Some(other) => bail!("unsupported --format {other:?}: use json or table"),
    };
    let mut rows = Vec::new();
    for c in state::list(&state::containers_dir())?.into_iter().rev() {
        let Ok(s) = c.state() else { continue };
        if args.all || running(&s) {
            rows.push((c, s));
        }
    }
    if args.quiet {
        for (c, _) in &rows {
            println!("{}", short_id(&c.config.id));
        }
        return Ok(0);
    }
    if json {
        for (c, s) in &rows {
            let v = json!({
                "ID": short_id(&c.config.id),
                "Image": c.config.image,
                "Command": command_text(c),
                "CreatedAt": c.config.created,
                "Status": status_text(s),
                "State": s.status,
                "ExitCode": s.exit_code,
                "Names": c.config.name,
                "Ports": ports_text(c, s),
            });
            println!("{v}");
        }
        return Ok(0);
    }
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|(c, s)| {
            [
                short_id(&c.config.id).to_string(),
                c.config.image.clone(),
                command_text(c),
                time::ago(&c.config.created),
                status_text(s),
                ports_text(c, s),
                c.config.name.clone(),
            ]
        })
        .collect();
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&table) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(0)
}

pub fn logs(args: &LogsArgs) -> Result<i32> {
    let c = state::find(&state::containers_dir(), &args.container)?;
    let path = c.log_path();
    let mut reader = match LogReader::open(&path) {
        Ok(r) => Some(r),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if let Some(r) = reader.as_mut() {
        let recs = r.read_new().context("cannot read the log")?;
        let skip = args.tail.map_or(0, |n| recs.len().saturating_sub(n));
        for rec in &recs[skip..] {
            logs::print(rec, args.timestamps).context("cannot write the log")?;
        }
    }
    if !args.follow {
        return Ok(0);
    }
    loop {
        // Read once more after the container ended: what it wrote last is in the file.
        let ended = c.state().map_or(true, |s| !running(&s));
        if reader.is_none() {
            reader = LogReader::open(&path).ok();
        }
        if let Some(r) = reader.as_mut() {
            for rec in r.read_new().context("cannot read the log")? {
                logs::print(&rec, args.timestamps).context("cannot write the log")?;
            }
        }
        if ended {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Seconds `stop` waits for the stop signal to end a container before SIGKILL (docker's).
const DEFAULT_STOP_TIMEOUT: u64 = 10;

pub fn stop(args: &StopArgs) -> Result<i32> {
    let all = find_all(&args.containers)?;
    for (c, name) in all.iter().zip(&args.containers) {
        if running(&c.state()?) {
            let stop = Request::Stop {
                timeout: args
                    .time
                    .or(c.config.stop_timeout)
                    .unwrap_or(DEFAULT_STOP_TIMEOUT),
                signal: c.config.stop_signal.unwrap_or(libc::SIGTERM),
            };
            let r = api::call(&c.dir, stop, None)?;
            if let Some(e) = r.error {
                bail!("cannot stop container {name}: {e}");
            }
        }
        println!("{name}");
    }
    Ok(0)
}

/// A signal given by name (`KILL`, `SIGKILL`) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|sig| sig as i32)
            .map_err(|_| anyhow!("invalid signal: {s}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| anyhow!("invalid signal: {s}"))
}

pub fn kill(args: &KillArgs) -> Result<i32> {
    let signal = parse_signal(&args.signal)?;
    let all = find_all(&args.containers)?;
    for (c, name) in all.iter().zip(&args.containers) {
        if !running(&c.state()?) {
            bail!(
                "cannot kill container {name}: container {} is not running",
                short_id(&c.config.id)
            );
        }
    }
    for (c, name) in all.iter().zip(&args.containers) {
        let r = api::call(
            &c.dir,
            Request::Kill { signal },
            Some(Duration::from_secs(10)),
        )?;
        if let Some(e) = r.error {
            bail!("cannot kill container {name}: {e}");
        }
        println!("{name}");
    }
    Ok(0)
}

pub fn rm(args: &RmArgs) -> Result<i32> {
    let all = find_all(&args.containers)?;
    if !args.force {
        for (c, name) in all.iter().zip(&args.containers) {
            if running(&c.state()?) {
                bail!(
                    "cannot remove container {name}: container is running: stop the container before removing or force remove"
                );
            }
        }
    }
    for (c, name) in all.iter().zip(&args.containers) {
        if running(&c.state()?) {
            let _ = api::call(
                &c.dir,
                Request::Kill {
                    signal: libc::SIGKILL,
                },
                Some(RM_WAIT),
            );
            let deadline = std::time::Instant::now() + RM_WAIT;
            while c.monitor_alive() {
                if std::time::Instant::now() >= deadline {
                    bail!("cannot remove container {name}: its monitor does not stop");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // A `--rm` container may have removed itself meanwhile.
        if c.dir.exists() {
            c.remove()?;
        }
        println!("{name}");
    }
    Ok(0)
}

pub fn wait(args: &WaitArgs) -> Result<i32> {
    let all = find_all(&args.containers)?;
    for c in &all {
        let s = c.state()?;
        let code = if running(&s) {
            match api::call(&c.dir, Request::Wait, None) {
                Ok(r) => r.exit_code,
                // The monitor went away while we waited: what it left behind says the rest.
                Err(_) => c.state()?.exit_code,
            }
        } else {
            s.exit_code
        };
        println!("{}", code.unwrap_or(-1));
    }
    Ok(0)
}

/// docker's `{"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}`.
fn port_bindings(publish: &[PortMapping]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for m in publish {
        let entry = map
            .entry(m.container_side())
            .or_insert_with(|| serde_json::Value::Array(vec![]));
        if let serde_json::Value::Array(v) = entry {
            v.push(
                json!({"HostIp": m.host.ip().to_string(), "HostPort": m.host.port().to_string()}),
            );
        }
    }
    serde_json::Value::Object(map)
}

/// `skiff port CONTAINER [PORT[/PROTO]]`: docker's `80/tcp -> 127.0.0.1:8080` lines.
pub fn port(args: &PortArgs) -> Result<i32> {
    let c = state::find(&state::containers_dir(), &args.container)?;
    let want = match &args.port {
        None => None,
        Some(p) => {
            let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            let num: u16 = num
                .parse()
                .map_err(|_| anyhow!("invalid port {p:?}: use PORT or PORT/tcp|udp"))?;
            Some((num, proto.to_string()))
        }
    };
    let mut found = false;
    for m in &c.config.network.publish {
        if let Some((num, proto)) = &want {
            if m.container_port != *num || m.transport.name() != proto {
                continue;
            }
            println!("{}", m.host);
        } else {
            println!("{} -> {}", m.container_side(), m.host);
        }
        found = true;
    }
    if let (Some(p), false) = (&args.port, found) {
        bail!("no public port {p:?} published for {}", c.config.name);
    }
    Ok(0)
}

pub fn inspect(args: &InspectArgs) -> Result<i32> {
    let all = find_all(&args.containers)?;
    let mut out = Vec::new();
    for c in &all {
        let s = c.state()?;
        let spec = &c.config.spec;
        out.push(json!({
            "Id": c.config.id,
            "Name": c.config.name,
            "Created": c.config.created,
            "Image": c.config.image,
            "Path": spec.argv.first(),
            "Args": spec.argv.get(1..).unwrap_or_default(),
            "State": {
                "Status": s.status,
                "Running": running(&s),
                "ExitCode": s.exit_code,
                "Error": s.error,
                "StartedAt": s.started,
                "FinishedAt": s.finished,
                "MonitorPid": s.monitor_pid,
            },
            "Config": {
                "Hostname": spec.hostname,
                "Env": spec.env,
                "Cmd": spec.argv,
                "WorkingDir": spec.cwd,
                "User": spec.user,
                "Tty": spec.tty,
                "OpenStdin": spec.stdin,
            },
            "HostConfig": {
                "AutoRemove": c.config.auto_remove,
                "Engine": c.config.engine,
                "Cpus": c.config.cpus,
                "MemoryMiB": c.config.memory_mib,
                "NetworkMode": c.config.network.mode,
                "PortBindings": port_bindings(&c.config.network.publish),
                "Dns": c.config.network.dns,
                "DnsSearch": c.config.network.dns_search,
                "ExtraHosts": c.config.network.extra_hosts.iter()
                    .map(|h| format!("{}:{}", h.name, h.ip)).collect::<Vec<_>>(),
                "ReadonlyRootfs": c.config.read_only,
                "Tmpfs": spec.tmpfs.iter()
                    .map(|t| (t.path.clone(), t.options.join(",")))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            },
            "Mounts": c.config.mounts.iter().map(|m| serde_json::json!({
                "Type": m.kind,
                "Name": m.name,
                "Source": m.source,
                "Destination": m.target,
                "RW": !m.read_only,
            })).collect::<Vec<_>>(),
            "GraphDriver": {
                "Name": "erofs+overlay",
                "Data": super::disks::inspect(&c.dir, c.config.read_only),
            },
            "NetworkSettings": {
                "Ports": port_bindings(&c.config.network.publish),
                "IPAddress": spec.network.as_ref().map(|n| n.address.to_string()).unwrap_or_default(),
                "Gateway": spec.network.as_ref().map(|n| n.gateway.to_string()).unwrap_or_default(),
                "MacAddress": spec.network.as_ref()
                    .map(|n| Mac(n.mac).to_string()).unwrap_or_default(),
            },
            "StateDir": c.dir,
        }));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&out).context("cannot encode")?
    );
    Ok(0)
}
