//! Device tests: a guest driver on mock virtqueues against real Unix sockets on the host side.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use super::connection::CONN_BUF_ALLOC;
use super::packet::{Op, SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::test_driver::{RxPacket, TestGuest, GUEST_CID};

const GUEST_PORT: u32 = 5000;
const HOST_PORT: u32 = 1024;

fn has_op(pkts: &[RxPacket], op: Op) -> bool {
    pkts.iter().any(|p| p.op() == op)
}

fn data_of(pkts: &[RxPacket]) -> Vec<u8> {
    pkts.iter()
        .filter(|p| p.op() == Op::Rw)
        .flat_map(|p| p.data.clone())
        .collect()
}

fn read_exactly(stream: &mut UnixStream, n: usize) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).unwrap();
    buf
}

fn assert_closed(stream: &mut UnixStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 16];
    match stream.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {n} bytes"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

/// Guest connects to `HOST_PORT`; returns the host end accepted from `U_1024`.
fn guest_connect(g: &mut TestGuest) -> (UnixListener, UnixStream) {
    g.connect_from_guest(GUEST_PORT, HOST_PORT)
}

#[test]
fn guest_initiated_connection_carries_data_both_ways() {
    let mut g = TestGuest::new();
    let (_l, mut host) = guest_connect(&mut g);
    assert_eq!(g.device.connections(), 1);

    g.send_data(GUEST_PORT, HOST_PORT, b"hello host");
    g.pump();
    assert_eq!(g.tx_completed(), 2);
    assert_eq!(read_exactly(&mut host, 10), b"hello host");

    host.write_all(b"hello guest").unwrap();
    let pkts = g.pump_until(|p| data_of(p).len() >= 11);
    assert_eq!(data_of(&pkts), b"hello guest");
    let rw = pkts.iter().find(|p| p.op() == Op::Rw).unwrap();
    assert_eq!((rw.hdr.src_port, rw.hdr.dst_port), (HOST_PORT, GUEST_PORT));
    assert_eq!(rw.hdr.fwd_cnt, 10, "device reports the bytes it forwarded");
}

#[test]
fn host_initiated_connect_gets_ok_and_carries_data() {
    let mut g = TestGuest::new();
    g.offer_rx(8, &[4096]);
    let mut host = UnixStream::connect(&g.uds).unwrap();
    host.write_all(b"CONNECT 52\n").unwrap();
    let pkts = g.pump_until(|p| !p.is_empty());
    let req = &pkts[0];
    assert_eq!(req.op(), Op::Request);
    assert_eq!(req.hdr.dst_port, 52);
    let local_port = req.hdr.src_port;
    assert!(local_port >= 1 << 30);

    g.send_op(Op::Response, 52, local_port);
    g.pump();
    let ok = format!("OK {local_port}\n");
    assert_eq!(read_exactly(&mut host, ok.len()), ok.as_bytes());

    host.write_all(b"ping").unwrap();
    let pkts = g.pump_until(|p| data_of(p).len() >= 4);
    assert_eq!(data_of(&pkts), b"ping");
    g.send_data(52, local_port, b"pong");
    g.pump();
    assert_eq!(read_exactly(&mut host, 4), b"pong");
}

#[test]
fn host_connect_refused_by_guest_closes_host_stream() {
    let mut g = TestGuest::new();
    g.offer_rx(4, &[4096]);
    let mut host = UnixStream::connect(&g.uds).unwrap();
    host.write_all(b"CONNECT 77\n").unwrap();
    let pkts = g.pump_until(|p| !p.is_empty());
    let local_port = pkts[0].hdr.src_port;
    g.send_op(Op::Rst, 77, local_port);
    g.pump();
    assert_eq!(g.device.connections(), 0);
    assert_closed(&mut host);
}

#[test]
fn bad_connect_line_is_closed() {
    let mut g = TestGuest::new();
    let mut host = UnixStream::connect(&g.uds).unwrap();
    host.write_all(b"HELLO\n").unwrap();
    g.pump();
    g.wait_for_backend(Duration::from_millis(50));
    g.pump();
    assert_closed(&mut host);
    assert_eq!(g.device.connections(), 0);
}

#[test]
fn connect_to_unknown_port_is_reset() {
    let mut g = TestGuest::new();
    g.offer_rx(4, &[4096]);
    g.send_op(Op::Request, GUEST_PORT, 9999);
    let pkts = g.pump_until(|p| !p.is_empty());
    assert_eq!(pkts.len(), 1);
    assert_eq!(pkts[0].op(), Op::Rst);
    assert_eq!(
        (pkts[0].hdr.src_port, pkts[0].hdr.dst_port),
        (9999, GUEST_PORT)
    );
    assert_eq!(g.device.connections(), 0);

    // Data for a connection that does not exist is answered with RST as well.
    g.send_data(GUEST_PORT, 9999, b"stray");
    let pkts = g.pump_until(|p| !p.is_empty());
    assert_eq!(pkts[0].op(), Op::Rst);
    assert_eq!(g.tx_completed(), 2);
}

#[test]
fn guest_credit_limits_host_to_guest_data() {
    let mut g = TestGuest::new();
    g.buf_alloc = 1000;
    let (_l, mut host) = guest_connect(&mut g);
    let sent: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    host.write_all(&sent).unwrap();

    let pkts = g.pump_until(|p| has_op(p, Op::CreditRequest));
    assert_eq!(
        data_of(&pkts),
        &sent[..1000],
        "device stops at the guest's credit"
    );
    // Nothing more flows without credit.
    g.wait_for_backend(Duration::from_millis(50));
    g.pump();
    assert!(g.received().is_empty());

    let mut got = data_of(&pkts);
    while got.len() < sent.len() {
        g.fwd_cnt = got.len() as u32;
        g.send_op(Op::CreditUpdate, GUEST_PORT, HOST_PORT);
        let want = (got.len() + 1000).min(sent.len());
        let pkts = g.pump_until(|p| got.len() + data_of(p).len() >= want);
        got.extend(data_of(&pkts));
        assert_eq!(got.len(), want, "never more than the credit");
    }
    assert_eq!(got, sent);
}

#[test]
fn slow_host_stalls_guest_through_credit_not_loss() {
    let mut g = TestGuest::new();
    let (_l, mut host) = guest_connect(&mut g);
    let chunk: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    // Guest-side view of the device's credit.
    let mut credit_fwd = 0u32;
    let mut sent = 0usize;
    // The host does not read: send while the credit allows.
    loop {
        let credit = CONN_BUF_ALLOC as usize - (sent - credit_fwd as usize);
        if credit == 0 {
            break;
        }
        let n = credit.min(chunk.len());
        g.send_data(GUEST_PORT, HOST_PORT, &chunk[..n]);
        sent += n;
        g.pump();
        for p in g.received() {
            credit_fwd = p.hdr.fwd_cnt;
        }
    }
    assert_eq!(
        g.device.connections(),
        1,
        "credit-honouring guest is not reset"
    );
    assert!(sent >= CONN_BUF_ALLOC as usize);

    // The host drains; the device flushes its buffer and grants credit again.
    let mut host_got = Vec::new();
    host.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while host_got.len() < sent {
        let mut b = vec![0u8; 65536];
        match host.read(&mut b) {
            Ok(n) => host_got.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        g.pump();
        for p in g.received() {
            credit_fwd = p.hdr.fwd_cnt;
        }
        assert!(std::time::Instant::now() < deadline);
    }
    assert_eq!(host_got.len(), sent);
    assert!(host_got.chunks(60_000).all(|c| c == &chunk[..c.len()]));
    g.pump();
    for p in g.received() {
        credit_fwd = p.hdr.fwd_cnt;
    }
    assert_eq!(
        credit_fwd as usize, sent,
        "credit update announces everything forwarded"
    );
}

#[test]
fn guest_exceeding_credit_is_reset() {
    let mut g = TestGuest::new();
    let (_l, mut host) = guest_connect(&mut g);
    let chunk = vec![0x5au8; 64 * 1024];
    let mut reset = false;
    let mut sent = 0;
    for _ in 0..64 {
        g.send_data(GUEST_PORT, HOST_PORT, &chunk);
        sent += chunk.len();
        g.pump();
        if g.received().iter().any(|p| p.op() == Op::Rst) {
            reset = true;
            break;
        }
    }
    assert!(reset, "credit overrun resets the connection");
    assert_eq!(g.device.connections(), 0);
    host.set_nonblocking(false).unwrap();
    let mut sink = Vec::new();
    host.read_to_end(&mut sink).unwrap();
    assert!(!sink.is_empty() && sink.iter().all(|&b| b == 0x5a));
    // Reset only once the guest had more unforwarded bytes than its credit allows.
    assert!(sent > sink.len() + CONN_BUF_ALLOC as usize);
    assert!(sent - chunk.len() <= sink.len() + CONN_BUF_ALLOC as usize);
}

#[test]
fn shutdown_in_both_directions() {
    let mut g = TestGuest::new();
    let (_l, mut host) = guest_connect(&mut g);

    // Guest stops sending: host sees EOF after the data, can still write.
    g.send_data(GUEST_PORT, HOST_PORT, b"last words");
    let mut sd = g.header(Op::Shutdown, GUEST_PORT, HOST_PORT, 0);
    sd.flags = SHUTDOWN_SEND;
    g.send(&sd, &[], &[]);
    g.pump();
    let mut all = Vec::new();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    host.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"last words");
    host.write_all(b"reply").unwrap();

    // Host stops sending: guest gets the data, then SHUTDOWN(SEND).
    host.shutdown(Shutdown::Write).unwrap();
    let pkts = g.pump_until(|p| has_op(p, Op::Shutdown));
    assert_eq!(data_of(&pkts), b"reply");
    let s = pkts.iter().find(|p| p.op() == Op::Shutdown).unwrap();
    assert_ne!(s.hdr.flags & SHUTDOWN_SEND, 0);
    assert_eq!(g.device.connections(), 1);

    // Guest closes fully: the device answers RST and forgets the connection.
    sd.flags = SHUTDOWN_SEND | SHUTDOWN_RCV;
    g.send(&sd, &[], &[]);
    let pkts = g.pump_until(|p| has_op(p, Op::Rst));
    assert_eq!(pkts.last().unwrap().op(), Op::Rst);
    assert_eq!(g.device.connections(), 0);
}

#[test]
fn host_close_tells_guest_both_directions_are_done() {
    let mut g = TestGuest::new();
    let (_l, host) = guest_connect(&mut g);
    drop(host);
    let pkts = g.pump_until(|p| has_op(p, Op::Shutdown));
    let s = pkts.iter().find(|p| p.op() == Op::Shutdown).unwrap();
    assert_eq!(s.hdr.flags, SHUTDOWN_SEND | SHUTDOWN_RCV);
    g.send_op(Op::Rst, GUEST_PORT, HOST_PORT);
    g.pump();
    assert_eq!(g.device.connections(), 0);
}

#[test]
fn header_and_payload_split_over_many_descriptors() {
    let mut g = TestGuest::new();
    let (_l, mut host) = guest_connect(&mut g);
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    let hdr = g.header(Op::Rw, GUEST_PORT, HOST_PORT, payload.len() as u32);
    // Header split mid-field (20 + 3 + 21), payload in 1-byte, odd and large pieces.
    g.send(&hdr, &payload, &[20, 3, 21, 1, 999, 1, 7]);
    g.pump();
    assert_eq!(g.tx_completed(), 2);
    assert_eq!(read_exactly(&mut host, payload.len()), payload);

    // RX the same way: buffers made of small writable descriptors, header split too.
    g.received();
    g.offer_rx(4, &[10, 34, 5, 100]);
    let back: Vec<u8> = payload.iter().rev().copied().collect();
    host.write_all(&back[..100]).unwrap();
    let pkts = g.pump_until(|p| data_of(p).len() >= 100);
    assert_eq!(data_of(&pkts), &back[..100]);
}

#[test]
fn one_mib_guest_write_arrives_byte_exact() {
    let mut g = TestGuest::new();
    let (_l, mut host) = guest_connect(&mut g);
    let total = 1 << 20;
    let data: Vec<u8> = (0..total as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let expect = data.clone();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; total];
        host.read_exact(&mut got).unwrap();
        got
    });
    let mut sent = 0usize;
    let mut device_fwd = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sent < total {
        let credit = CONN_BUF_ALLOC as usize - (sent - device_fwd);
        let n = credit.min(64 * 1024).min(total - sent);
        if n > 0 {
            let hdr = g.header(Op::Rw, GUEST_PORT, HOST_PORT, n as u32);
            // The way a 6.12 guest splits a 64 KiB packet: header, 32768, rest.
            g.send(&hdr, &data[sent..sent + n], &[44, 32768]);
            sent += n;
        } else {
            g.wait_for_backend(Duration::from_millis(10));
        }
        g.pump();
        g.tx_completed();
        for p in g.received() {
            device_fwd = p.hdr.fwd_cnt as usize;
        }
        assert!(std::time::Instant::now() < deadline, "stalled at {sent}");
    }
    while g.device.connections() == 1 && device_fwd < total {
        g.wait_for_backend(Duration::from_millis(10));
        g.pump();
        for p in g.received() {
            device_fwd = p.hdr.fwd_cnt as usize;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "flush stalled at {device_fwd}"
        );
    }
    let got = reader.join().unwrap();
    assert!(got == expect, "host received different bytes");
}

#[test]
fn malformed_packet_resets_connection_and_returns_descriptor() {
    let mut g = TestGuest::new();
    let (_l, mut host) = guest_connect(&mut g);
    g.tx_completed();
    // Claims 5000 payload bytes, carries 100.
    let hdr = g.header(Op::Rw, GUEST_PORT, HOST_PORT, 5000);
    g.send(&hdr, &[1u8; 100], &[]);
    let pkts = g.pump_until(|p| !p.is_empty());
    assert_eq!(pkts[0].op(), Op::Rst);
    assert_eq!(
        (pkts[0].hdr.src_port, pkts[0].hdr.dst_port),
        (HOST_PORT, GUEST_PORT)
    );
    assert_eq!(g.tx_completed(), 1, "descriptor went back to the used ring");
    assert_eq!(g.device.connections(), 0);
    assert_closed(&mut host);
}

#[test]
fn wrong_type_cid_or_size_resets_the_connection() {
    for corrupt in [
        |h: &mut super::packet::Header| h.type_ = 2,
        |h: &mut super::packet::Header| h.src_cid = 99,
        |h: &mut super::packet::Header| h.len = 70_000,
        |h: &mut super::packet::Header| h.op = 42,
    ] {
        let mut g = TestGuest::new();
        let (_l, mut host) = guest_connect(&mut g);
        let mut hdr = g.header(Op::Rw, GUEST_PORT, HOST_PORT, 4);
        corrupt(&mut hdr);
        g.send(&hdr, &[0u8; 70_000], &[]);
        let pkts = g.pump_until(|p| !p.is_empty());
        assert_eq!(pkts[0].op(), Op::Rst);
        assert_eq!(g.device.connections(), 0);
        assert_closed(&mut host);
    }
}

#[test]
fn runt_tx_chain_is_returned() {
    let mut g = TestGuest::new();
    g.offer_rx(2, &[4096]);
    g.send_bytes(&[0u8; 20], &[]);
    g.pump();
    assert_eq!(g.tx_completed(), 1);
    assert!(g.received().is_empty());
}

#[test]
fn config_space_holds_the_guest_cid() {
    let g = TestGuest::new();
    assert_eq!(g.device.config_space(), GUEST_CID.to_le_bytes());
    let mut b = [0xffu8; 4];
    g.device.read_config(6, &mut b);
    assert_eq!(b, [0, 0, 0, 0]);
    assert!(super::VsockDevice::new(2, g.uds.with_extension("x")).is_err());
}
