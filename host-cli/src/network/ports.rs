//! `-p/--publish [IP:]HOSTPORT[-END]:CPORT[-END][/tcp|/udp]`: parsed into one mapping per port,
//! bound to 127.0.0.1 unless an address is given (docker binds 0.0.0.0; skiff publishes to
//! this machine only unless asked, e.g. `-p 0.0.0.0:8080:80`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use protocol::Transport;
use serde::{Deserialize, Serialize};

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Where the host listens.
    pub host: SocketAddr,
    /// The container's port.
    pub container_port: u16,
    pub transport: Transport,
}

impl PortMapping {
    /// docker's `80/tcp`.
    pub fn container_side(&self) -> String {
        format!("{}/{}", self.container_port, self.transport.name())
    }
}

impl std::fmt::Display for PortMapping {
    /// docker's `ps` form: `127.0.0.1:8080->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}->{}", self.host, self.container_side())
    }
}

/// A port of 127.0.0.1 free for `transport` now (the kernel picks it).
pub fn free_loopback_port(transport: Transport) -> std::io::Result<SocketAddr> {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    match transport {
        Transport::Tcp => std::net::TcpListener::bind(any)?.local_addr(),
        Transport::Udp => std::net::UdpSocket::bind(any)?.local_addr(),
    }
}

/// Parses every `-p` value; the error names the value and the form expected.
pub fn parse_all(specs: &[String]) -> Result<Vec<PortMapping>, String> {
    let mut all = Vec::new();
    for s in specs {
        for m in parse(s)? {
            if all
                .iter()
                .any(|o: &PortMapping| o.host == m.host && o.transport == m.transport)
            {
                return Err(format!("host port {} is published twice", m.host));
            }
            all.push(m);
        }
    }
    Ok(all)
}

fn parse(spec: &str) -> Result<Vec<PortMapping>, String> {
    let bad = |why: &str| {
        format!(
            "invalid -p {spec:?}: {why} (use [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp], e.g. -p 8080:80)"
        )
    };
    let (rest, transport) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Transport::Tcp),
        Some((r, "udp")) => (r, Transport::Udp),
        Some((_, p)) => return Err(bad(&format!("unknown protocol {p:?}"))),
        None => (spec, Transport::Tcp),
    };
    let (ip, host, container) =
        split(rest).ok_or_else(|| bad("a host and a container port are needed"))?;
    let ip: IpAddr = match ip {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(a) => a
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| bad(&format!("{a:?} is not an IP address")))?,
    };
    let host = range(host).map_err(|e| bad(&e))?;
    let container = range(container).map_err(|e| bad(&e))?;
    if host.1 - host.0 != container.1 - container.0 {
        return Err(bad("the host and container ranges differ in length"));
    }
    Ok((0..=host.1 - host.0)
        .map(|i| PortMapping {
            host: SocketAddr::new(ip, host.0 + i),
            container_port: container.0 + i,
            transport,
        })
        .collect())
}

/// `IP:HOST:CONTAINER` or `HOST:CONTAINER` (an IPv6 address in brackets).
fn split(s: &str) -> Option<(Option<&str>, &str, &str)> {
    let (left, container) = s.rsplit_once(':')?;
    match left.rsplit_once(':') {
        Some((ip, host)) if !ip.is_empty() => Some((Some(ip), host, container)),
        Some(_) => None,
        None => Some((None, left, container)),
    }
}

/// `N` or `N-M`, each in 1..=65535.
fn range(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| match p.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        Ok(n) => Err(format!("port {n} is out of range 1-65535")),
        Err(_) => Err(format!("{p:?} is not a port number")),
    };
    match s.split_once('-') {
        None => port(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a > b {
                return Err(format!("the range {s} runs backwards"));
            }
            Ok((a, b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortMapping {
        let v = parse(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v[0]
    }

    #[test]
    fn forms_docker_accepts() {
        let m = one("8080:80");
        assert_eq!(m.host, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((m.container_port, m.transport), (80, Transport::Tcp));
        assert_eq!(m.to_string(), "127.0.0.1:8080->80/tcp");
        assert_eq!(
            one("0.0.0.0:53:5353/udp").host,
            "0.0.0.0:53".parse().unwrap()
        );
        assert_eq!(one("0.0.0.0:53:5353/udp").transport, Transport::Udp);
        assert_eq!(one("[::1]:8080:80").host, "[::1]:8080".parse().unwrap());
        let r = parse("127.0.0.2:9000-9002:80-82/tcp").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r[2].host.port(), r[2].container_port), (9002, 82));
    }

    #[test]
    fn malformed_values_say_why() {
        for (bad, why) in [
            ("80", "a host and a container port"),
            ("a:b", "not a port number"),
            ("0:80", "out of range"),
            ("8080:70000", "out of range"),
            ("8080:80/sctp", "unknown protocol"),
            ("x.y:8080:80", "not an IP address"),
            ("9000-9002:80", "differ in length"),
            ("9002-9000:80-78", "runs backwards"),
            (":8080:80", "a host and a container port"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
        let dup = parse_all(&["8080:80".into(), "8080:81".into()]).unwrap_err();
        assert!(dup.contains("twice"), "{dup}");
        assert!(parse_all(&["8080:80".into(), "8080:80/udp".into()]).is_ok());
    }
}
