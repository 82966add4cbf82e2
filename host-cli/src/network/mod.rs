//! The container's network: what `--network`, `--dns`, `--add-host`, `-p` ask for
//! ([`NetworkArgs`] → [`NetworkConfig`], kept with the container), the guest's addressing and
//! `/etc` files ([`guest_setup`]), the backend that carries the guest's frames ([`passt`]), and
//! the relay of published ports over vsock ([`relay`]).
//!
//! Addressing, the same in every VM: the guest is 10.0.2.15/24 behind a gateway 10.0.2.2 that
//! is the host's own loopback (`host.docker.internal`); DNS queries to 10.0.2.3 are answered
//! through the host's resolver configuration. Published ports do not use the network device.

pub mod passt;
pub mod ports;
pub mod relay;

use std::net::{IpAddr, Ipv4Addr};

use clap::Args;
use protocol::{EtcFile, NetworkSpec};
use serde::{Deserialize, Serialize};

pub use ports::PortMapping;

/// The guest's address on its network.
pub const GUEST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const PREFIX_LEN: u8 = 24;
/// The gateway: connections to it reach the host's loopback.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// Where the guest sends DNS queries; the backend forwards them to the host's resolver.
pub const DNS_FORWARDER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The backend terminates TCP, so the largest MTU costs nothing and saves segments.
pub const MTU: u16 = 65520;

/// Which network a container gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Outbound TCP/UDP and DNS through the host, as docker's default bridge.
    #[default]
    Default,
    /// Only the loopback interface.
    None,
}

/// The network flags of `skiff run`.
#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// The container's network: default (outbound through the host) or none (only lo).
    #[arg(long, default_value = "default", value_name = "NETWORK")]
    pub network: String,
    /// A DNS server for the container (instead of the host's resolvers).
    #[arg(long, value_name = "IP")]
    pub dns: Vec<IpAddr>,
    /// A DNS search domain for the container.
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// Add a line to /etc/hosts: NAME:IP, or NAME:host-gateway for the host.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// The container's MAC address.
    #[arg(long = "mac-address", value_name = "MAC", value_parser = parse_mac)]
    pub mac_address: Option<Mac>,
    /// Publish a container port: [IP:]HOSTPORT:CONTAINERPORT[/tcp|/udp]; without IP, on
    /// 127.0.0.1 only (use 0.0.0.0: to publish on every interface).
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOSTPORT:PORT")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes on a free port of the host's 127.0.0.1.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    /// `02:53:00:00:00:0f`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

fn parse_mac(s: &str) -> Result<Mac, String> {
    let bad = || format!("invalid MAC address {s:?}: use six hex pairs, e.g. 02:42:ac:11:00:02");
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(format!(
            "invalid MAC address {s:?}: it is a multicast address"
        ));
    }
    Ok(Mac(mac))
}

/// A line of /etc/hosts from `--add-host`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub name: String,
    pub ip: IpAddr,
}

/// The network a container was created with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub mode: NetworkMode,
    pub dns: Vec<IpAddr>,
    pub dns_search: Vec<String>,
    pub extra_hosts: Vec<ExtraHost>,
    pub mac: Option<Mac>,
    pub publish: Vec<PortMapping>,
}

impl NetworkArgs {
    /// Checks the flags; each error is one line naming the value and the form expected.
    pub fn config(&self) -> Result<NetworkConfig, String> {
        let extra_hosts = self
            .add_host
            .iter()
            .map(|h| {
                let bad = || format!("invalid --add-host {h:?}: use NAME:IP or NAME:host-gateway");
                let (name, ip) = h.split_once(':').ok_or_else(bad)?;
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(bad());
                }
                let ip = match ip {
                    "host-gateway" => IpAddr::V4(GATEWAY),
                    ip => ip.trim_matches(['[', ']']).parse().map_err(|_| bad())?,
                };
                Ok(ExtraHost {
                    name: name.to_string(),
                    ip,
                })
            })
            .collect::<Result<_, String>>()?;
        for d in &self.dns_search {
            if d.is_empty() || d.contains(char::is_whitespace) {
                return Err(format!("invalid --dns-search {d:?}: use a domain name"));
            }
        }
        let mode = match self.network.as_str() {
            "default" | "bridge" => NetworkMode::Default,
            "none" => NetworkMode::None,
            other => {
                return Err(format!(
                    "unknown network {other:?}: use --network default or --network none"
                ))
            }
        };
        Ok(NetworkConfig {
            mode,
            dns: self.dns.clone(),
            dns_search: self.dns_search.clone(),
            extra_hosts,
            mac: self.mac_address,
            publish: ports::parse_all(&self.publish)?,
        })
    }
}

impl NetworkConfig {
    /// `-P`: publishes each of the image's `exposed` ports (`80/tcp`) not published already on
    /// a free port of 127.0.0.1.
    pub fn publish_exposed(&mut self, exposed: &[String]) -> Result<(), String> {
        for e in exposed {
            let (port, proto) = e.split_once('/').unwrap_or((e, "tcp"));
            let transport = match proto {
                "tcp" => protocol::Transport::Tcp,
                "udp" => protocol::Transport::Udp,
                // docker skips what it cannot publish (sctp) as well
                _ => continue,
            };
            let Ok(port) = port.parse::<u16>() else {
                return Err(format!("the image exposes an invalid port {e:?}"));
            };
            if self
                .publish
                .iter()
                .any(|m| m.container_port == port && m.transport == transport)
            {
                continue;
            }
            let host = ports::free_loopback_port(transport)
                .map_err(|err| format!("cannot find a free host port for {e}: {err}"))?;
            self.publish.push(PortMapping {
                host,
                container_port: port,
                transport,
            });
        }
        Ok(())
    }

    /// Whether the VM gets a network device.
    pub fn has_device(&self) -> bool {
        self.mode == NetworkMode::Default
    }

    /// The MAC address of the guest's interface: the one asked for, else one derived from the
    /// container's id (locally administered, unicast).
    pub fn mac_for(&self, id: &str) -> [u8; 6] {
        if let Some(Mac(m)) = self.mac {
            return m;
        }
        let mut mac = [0x02, 0x53, 0, 0, 0, 0];
        for (i, b) in id.bytes().take(8).enumerate() {
            let nibble = (b as char).to_digit(16).unwrap_or(0) as u8;
            mac[2 + i / 2] |= nibble << if i % 2 == 0 { 4 } else { 0 };
        }
        mac
    }
}

/// What guest-init configures for the container: its interface (none with `--network none`)
/// and its `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
pub fn guest_setup(
    config: &NetworkConfig,
    id: &str,
    hostname: &str,
    host_resolv_conf: &str,
) -> (Option<NetworkSpec>, Vec<EtcFile>) {
    let file = |name: &str, contents: String| EtcFile {
        name: name.to_string(),
        contents,
    };
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mut files = vec![file("hostname", format!("{hostname}\n"))];
    let spec = config.has_device().then(|| NetworkSpec {
        mac: config.mac_for(id),
        address: GUEST_ADDRESS,
        prefix_len: PREFIX_LEN,
        gateway: GATEWAY,
        mtu: u32::from(MTU),
    });
    if spec.is_some() {
        hosts.push_str(&format!("{GUEST_ADDRESS}\t{hostname}\n"));
        hosts.push_str(&format!(
            "{GATEWAY}\thost.docker.internal host.containers.internal\n"
        ));
        files.push(file("resolv.conf", resolv_conf(config, host_resolv_conf)));
    } else {
        hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for h in &config.extra_hosts {
        hosts.push_str(&format!("{}\t{}\n", h.ip, h.name));
    }
    files.push(file("hosts", hosts));
    (spec, files)
}

/// The container's resolv.conf: `--dns` servers, else the forwarder that asks the host's
/// resolvers; `--dns-search`, else the host's search list; the host's options.
fn resolv_conf(config: &NetworkConfig, host: &str) -> String {
    let mut out = String::new();
    if config.dns.is_empty() {
        out.push_str(&format!("nameserver {DNS_FORWARDER}\n"));
    }
    for d in &config.dns {
        out.push_str(&format!("nameserver {d}\n"));
    }
    let host_line = |key: &str| {
        host.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .rfind(|rest| rest.starts_with([' ', '\t']))
            .map(|rest| rest.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|v| !v.is_empty())
    };
    let search = match config.dns_search.is_empty() {
        true => host_line("search"),
        false => Some(config.dns_search.join(" ")),
    };
    if let Some(s) = search {
        out.push_str(&format!("search {s}\n"));
    }
    if let Some(o) = host_line("options") {
        out.push_str(&format!("options {o}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> NetworkArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            n: NetworkArgs,
        }
        T::try_parse_from(std::iter::once("t").chain(extra.iter().copied()))
            .unwrap()
            .n
    }

    fn contents<'a>(files: &'a [EtcFile], name: &str) -> &'a str {
        &files.iter().find(|f| f.name == name).unwrap().contents
    }

    #[test]
    fn default_network_files_name_the_host_and_forward_dns() {
        let c = args(&["--add-host", "db:10.1.2.3", "--add-host", "gw:host-gateway"])
            .config()
            .unwrap();
        let host =
            "# comment\nnameserver 127.0.0.53\nsearch corp.example lan\noptions edns0 trust-ad\n";
        let (spec, files) = guest_setup(&c, "0123456789abcdef", "web", host);
        let spec = spec.unwrap();
        assert_eq!(
            (spec.address, spec.gateway, spec.mtu),
            (GUEST_ADDRESS, GATEWAY, u32::from(MTU))
        );
        assert_eq!(spec.mac, [0x02, 0x53, 0x01, 0x23, 0x45, 0x67]);
        let hosts = contents(&files, "hosts");
        for want in [
            "127.0.0.1\tlocalhost\n",
            "10.0.2.15\tweb\n",
            "10.0.2.2\thost.docker.internal host.containers.internal\n",
            "10.1.2.3\tdb\n",
            "10.0.2.2\tgw\n",
        ] {
            assert!(hosts.contains(want), "{want:?} in {hosts}");
        }
        assert_eq!(
            contents(&files, "resolv.conf"),
            "nameserver 10.0.2.3\nsearch corp.example lan\noptions edns0 trust-ad\n"
        );
        assert_eq!(contents(&files, "hostname"), "web\n");
    }

    #[test]
    fn dns_flags_replace_the_hosts_resolvers() {
        let c = args(&[
            "--dns",
            "192.0.2.53",
            "--dns-search",
            "a.example",
            "--mac-address",
            "02:00:00:aa:bb:cc",
        ])
        .config()
        .unwrap();
        let (spec, files) = guest_setup(&c, "00", "h", "search x\n");
        assert_eq!(
            contents(&files, "resolv.conf"),
            "nameserver 192.0.2.53\nsearch a.example\n"
        );
        assert_eq!(spec.unwrap().mac, [2, 0, 0, 0xaa, 0xbb, 0xcc]);
        assert_eq!(
            Mac([2, 0, 0, 0xaa, 0xbb, 0xcc]).to_string(),
            "02:00:00:aa:bb:cc"
        );
    }

    #[test]
    fn network_none_has_no_device_and_no_resolver() {
        let c = args(&["--network", "none"]).config().unwrap();
        let (spec, files) = guest_setup(&c, "00", "h", "nameserver 1.1.1.1\n");
        assert!(spec.is_none());
        assert!(files.iter().all(|f| f.name != "resolv.conf"));
        assert!(!contents(&files, "hosts").contains("host.docker.internal"));
    }

    #[test]
    fn publish_all_adds_the_exposed_ports_not_published_yet() {
        let mut c = args(&["-P", "-p", "8080:80"]).config().unwrap();
        c.publish_exposed(&["80/tcp".into(), "53/udp".into(), "9/sctp".into()])
            .unwrap();
        assert_eq!(c.publish.len(), 2, "{:?}", c.publish);
        assert_eq!(c.publish[0].host.port(), 8080);
        let added = c.publish[1];
        assert_eq!(
            (added.container_port, added.transport),
            (53, protocol::Transport::Udp)
        );
        assert!(added.host.ip().is_loopback() && added.host.port() != 0);
        assert!(c
            .publish_exposed(&["http/tcp".into()])
            .unwrap_err()
            .contains("http/tcp"));
    }

    #[test]
    fn bad_flags_are_one_line_errors() {
        for bad in [
            ["--add-host", "nocolon"],
            ["--add-host", "x:notanip"],
            ["--dns-search", "a b"],
        ] {
            let e = args(&bad).config().unwrap_err();
            assert!(e.contains(bad[1]) && !e.contains('\n'), "{e}");
        }
        let e = args(&["--network", "host"]).config().unwrap_err();
        assert!(e.contains("unknown network \"host\""), "{e}");
        for mac in ["02:00:00:00:00", "zz:00:00:00:00:00", "01:00:00:00:00:00"] {
            assert!(parse_mac(mac).is_err(), "{mac}");
        }
    }
}
