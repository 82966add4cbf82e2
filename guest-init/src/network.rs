//! The guest's network, over rtnetlink (no `ip`, no DHCP client): `lo` up, and when the spec
//! has one, `eth0` with its MAC, MTU, static IPv4 address and default route. IPv6 comes from
//! the kernel's own autoconfiguration on the backend's router advertisements.

use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::FromRawFd;

use protocol::NetworkSpec;

use crate::error::{Context, Error, Result};

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_ADDRESS: u16 = 1;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const IFF_UP: u32 = 0x1;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

/// Brings `lo` up, and `eth0` as `spec` says.
pub fn configure(spec: Option<&NetworkSpec>) -> Result<()> {
    let mut nl = Netlink::open()?;
    let lo = index_of("lo")?;
    nl.link_up(lo, None, None)?;
    let Some(spec) = spec else {
        return Ok(());
    };
    let eth0 = index_of("eth0")?;
    nl.link_up(eth0, Some(spec.mtu), Some(spec.mac))?;
    nl.add_address(eth0, spec.address, spec.prefix_len)?;
    nl.add_default_route(eth0, spec.gateway)
}

fn index_of(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| Error::Invalid(format!("bad name {name}")))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()).ctx(|| format!("find the interface {name}")),
        i => Ok(i),
    }
}

/// A NETLINK_ROUTE socket that sends one request at a time and waits for its acknowledgement.
struct Netlink {
    sock: File,
    seq: u32,
}

/// A request being built: the netlink header is filled in by [`Netlink::request`].
struct Request {
    kind: u16,
    flags: u16,
    body: Vec<u8>,
}

impl Request {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Request {
        Request {
            kind,
            flags,
            body: fixed.to_vec(),
        }
    }

    /// Appends a route attribute, padded to 4 bytes.
    fn attr(mut self, kind: u16, data: &[u8]) -> Request {
        let len = 4 + data.len();
        self.body.extend_from_slice(&(len as u16).to_ne_bytes());
        self.body.extend_from_slice(&kind.to_ne_bytes());
        self.body.extend_from_slice(data);
        self.body.resize(self.body.len().next_multiple_of(4), 0);
        self
    }
}

impl Netlink {
    fn open() -> Result<Netlink> {
        // SAFETY: plain socket(2); the descriptor is owned by the File below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).ctx(|| "open a netlink socket".into());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let sock = unsafe { File::from_raw_fd(fd) };
        Ok(Netlink { sock, seq: 0 })
    }

    fn link_up(&mut self, index: u32, mtu: Option<u32>, mac: Option<[u8; 6]>) -> Result<()> {
        // struct ifinfomsg: family, pad, type, index, flags, change
        let mut fixed = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
        fixed.extend_from_slice(&(index as i32).to_ne_bytes());
        fixed.extend_from_slice(&IFF_UP.to_ne_bytes());
        fixed.extend_from_slice(&IFF_UP.to_ne_bytes());
        let mut req = Request::new(RTM_NEWLINK, 0, &fixed);
        if let Some(mtu) = mtu {
            req = req.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        if let Some(mac) = mac {
            req = req.attr(IFLA_ADDRESS, &mac);
        }
        self.request(req)
            .ctx(|| format!("bring up interface {index}"))
    }

    fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix_len: u8) -> Result<()> {
        // struct ifaddrmsg: family, prefixlen, flags, scope, index
        let mut fixed = vec![libc::AF_INET as u8, prefix_len, 0, RT_SCOPE_UNIVERSE];
        fixed.extend_from_slice(&index.to_ne_bytes());
        let req = Request::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &fixed)
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.request(req)
            .ctx(|| format!("add the address {addr}/{prefix_len}"))
    }

    fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> Result<()> {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
        let mut fixed = vec![
            libc::AF_INET as u8,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ];
        fixed.extend_from_slice(&0u32.to_ne_bytes());
        let req = Request::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, &fixed)
            .attr(RTA_GATEWAY, &gateway.octets())
            .attr(RTA_OIF, &index.to_ne_bytes());
        self.request(req)
            .ctx(|| format!("add the default route via {gateway}"))
    }

    /// Sends `req` and waits for the kernel's acknowledgement.
    fn request(&mut self, req: Request) -> std::io::Result<()> {
        self.seq += 1;
        let len = 16 + req.body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&req.kind.to_ne_bytes());
        msg.extend_from_slice(&(req.flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&req.body);
        self.sock.write_all(&msg)?;
        let mut buf = [0u8; 4096];
        loop {
            let n = self.sock.read(&mut buf)?;
            match ack_of(&buf[..n], self.seq)? {
                Some(0) => return Ok(()),
                Some(e) => return Err(std::io::Error::from_raw_os_error(e.saturating_neg())),
                None => {}
            }
        }
    }
}

/// The error code of the acknowledgement for `seq` in `buf`, if it holds one.
fn ack_of(buf: &[u8], seq: u32) -> std::io::Result<Option<i32>> {
    let mut rest = buf;
    while rest.len() >= 16 {
        let word =
            |at: usize| u32::from_ne_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let len = word(0) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < 16 || len > rest.len() {
            return Err(std::io::Error::other(format!(
                "a netlink message of {len} bytes"
            )));
        }
        if kind == NLMSG_ERROR && word(8) == seq && len >= 20 {
            return Ok(Some(word(16) as i32));
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    Ok(None)
}
