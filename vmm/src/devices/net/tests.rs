//! Device tests: a guest driver on mock virtqueues against a real Unix socket pair whose far
//! end plays the `-netdev stream` peer.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::backend::MAX_FRAME_LEN;
use super::device::{NetDevice, CONFIG_LEN, NET_HDR_LEN, QUEUE_MAX_SIZE, VIRTIO_ID_NET};
use super::stream::StreamBackend;
use super::test_driver::{frame, read_frame, TestGuest, MAC, MTU};
use crate::bus::BusDevice;
use crate::devices::mmio::{reg, MmioTransport};
use crate::devices::virtio_net::VirtioNet;

/// An RX buffer as a 6.12 guest posts it without mergeable buffers for a 65520 MTU: the
/// header and frame over pages.
const BIG_RX: [u32; 17] = [4096; 17];
const FRAMES: u32 = 10_000;

/// Frame sizes for the long runs: 60 ..= 9059 bytes, varied.
fn size(i: u32) -> usize {
    60 + (i as usize * 7919) % 9000
}

/// Whether the peer has nothing to read right now.
fn peer_is_empty(peer: &UnixStream) -> bool {
    peer.set_nonblocking(true).unwrap();
    let r = (&*peer).read(&mut [0u8; 1]);
    peer.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[test]
fn frames_cross_both_ways() {
    let mut g = TestGuest::new();
    let out = frame(1, 1514);
    g.send_frame(&out, &[]);
    let activity = g.pump();
    assert!(activity.tx_used && !activity.rx_used && !activity.link_changed);
    assert_eq!(g.tx_completed(), vec![0]);
    assert_eq!(g.peer_recv(), out);

    g.offer_rx(4, &BIG_RX);
    let inbound = frame(2, 1000);
    g.peer_send(&inbound);
    let got = g.pump_until(|f| !f.is_empty());
    assert_eq!(got, vec![inbound]);
    let used: Vec<_> = g.received().iter().map(|u| u.len).collect();
    assert!(used.is_empty(), "one buffer per frame: {used:?}");
}

#[test]
fn a_tx_frame_split_over_many_descriptors_arrives_whole() {
    let mut g = TestGuest::new();
    // The header itself split in three, then odd-sized pieces.
    let f = frame(3, 9000);
    g.send_frame(&f, &[5, 6, 1, 1000, 1, 3000, 17]);
    // The largest frame, in pages after a header descriptor of its own.
    let max = frame(4, MAX_FRAME_LEN);
    g.send_frame(
        &max,
        &[NET_HDR_LEN, 4096, 4096, 4096, 4096, 4096, 4096, 4096],
    );
    g.pump();
    assert_eq!(g.tx_completed(), vec![0, 0]);
    assert_eq!(g.peer_recv(), f);
    assert_eq!(g.peer_recv(), max);
}

#[test]
fn an_rx_frame_spans_many_writable_descriptors() {
    let mut g = TestGuest::new();
    g.offer_rx(1, &[7, 5, 1000, 4096, 4096]);
    g.offer_rx(1, &BIG_RX);
    let small = frame(5, 9000);
    let max = frame(6, MAX_FRAME_LEN);
    g.peer_send(&small);
    g.peer_send(&max);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut used = Vec::new();
    while used.len() < 2 {
        g.pump();
        used.extend(g.received());
        assert!(Instant::now() < deadline, "got {used:?}");
        g.wait_for_backend(Duration::from_millis(10));
    }
    assert_eq!(used[0].len as usize, NET_HDR_LEN + small.len());
    assert_eq!(used[0].frame(), small);
    assert_eq!(used[1].len as usize, NET_HDR_LEN + max.len());
    assert_eq!(used[1].frame(), max);
}

#[test]
fn malformed_tx_chains_are_dropped_and_the_queue_keeps_working() {
    let mut g = TestGuest::new();
    // Shorter than the header.
    g.send_bytes(&[0u8; 8], &[]);
    // A header and no frame.
    g.send_bytes(&[0u8; NET_HDR_LEN], &[]);
    // One byte more than the largest frame.
    g.send_frame(&frame(7, MAX_FRAME_LEN + 1), &[NET_HDR_LEN, 32768]);
    // A device-writable descriptor in a TX chain.
    let a = g.rx_alloc(NET_HDR_LEN as u32);
    let b = g.rx_alloc(100);
    g.tx_ring
        .offer_descriptors(&g.mem, &[(a, NET_HDR_LEN as u32, false), (b, 100, true)]);
    // Memory the guest does not have.
    let a = g.rx_alloc(NET_HDR_LEN as u32);
    g.tx_ring.offer_descriptors(
        &g.mem,
        &[
            (a, NET_HDR_LEN as u32, false),
            (GuestAddress(1 << 40), 100, false),
        ],
    );
    let good = frame(8, 600);
    g.send_frame(&good, &[]);
    g.pump();
    assert_eq!(g.tx_completed(), vec![0; 6]);
    assert_eq!(g.peer_recv(), good, "the only frame that went out");
    assert!(peer_is_empty(&g.peer));
    assert!(g.device.link_up());

    // The queue still works afterwards.
    let again = frame(9, 1514);
    g.send_frame(&again, &[100]);
    g.pump();
    assert_eq!(g.tx_completed(), vec![0]);
    assert_eq!(g.peer_recv(), again);
}

#[test]
fn unusable_rx_buffers_drop_their_frame_and_the_next_one_is_delivered() {
    let mut g = TestGuest::new();
    // Too small for the first frame.
    g.offer_rx(1, &[64]);
    // A device-readable descriptor in an RX chain.
    let a = g.rx_alloc(4096);
    let b = g.rx_alloc(4096);
    g.rx_ring
        .offer_descriptors(&g.mem, &[(a, 4096, true), (b, 4096, false)]);
    // Memory the guest does not have.
    g.rx_ring
        .offer_descriptors(&g.mem, &[(GuestAddress(1 << 40), 4096, true)]);
    g.offer_rx(1, &[4096]);
    let frames: Vec<_> = (0..4).map(|i| frame(10 + i, 1000)).collect();
    for f in &frames {
        g.peer_send(f);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut used = Vec::new();
    while used.len() < 4 {
        g.pump();
        used.extend(g.received());
        assert!(Instant::now() < deadline, "got {used:?}");
        g.wait_for_backend(Duration::from_millis(10));
    }
    let lens: Vec<_> = used.iter().map(|u| u.len).collect();
    assert_eq!(lens, vec![0, 0, 0, (NET_HDR_LEN + 1000) as u32]);
    assert_eq!(used[3].frame(), frames[3]);

    // And the next buffer takes the next frame.
    g.offer_rx(1, &[2048]);
    let next = frame(20, 2000);
    g.peer_send(&next);
    assert_eq!(g.pump_until(|f| !f.is_empty()), vec![next]);
}

#[test]
fn tx_back_pressure_holds_chains_and_loses_or_reorders_no_frame() {
    let mut g = TestGuest::new();
    let mut next = 0;
    let offer = |g: &mut TestGuest, next: &mut u32| {
        while *next < FRAMES && g.tx_ring.in_flight() < 64 {
            g.send_frame(&frame(*next, size(*next)), &[NET_HDR_LEN, 1000]);
            *next += 1;
        }
    };
    // The peer does not read: the socket fills and the device stops taking chains.
    let mut done = 0;
    let mut idle_rounds = 0;
    while idle_rounds < 3 {
        offer(&mut g, &mut next);
        g.pump();
        let completed = g.tx_completed();
        assert!(completed.iter().all(|&l| l == 0));
        done += completed.len();
        idle_rounds = if completed.is_empty() {
            idle_rounds + 1
        } else {
            0
        };
    }
    assert!(next < FRAMES, "the socket never filled");
    assert_eq!(
        g.tx_ring.in_flight(),
        64,
        "chains stay on the queue while the backend is full"
    );
    assert!(
        !g.wait_for_backend(Duration::from_millis(50)),
        "nothing to do until the peer reads"
    );

    let mut peer = g.peer.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        for i in 0..FRAMES {
            let f = read_frame(&mut peer);
            assert_eq!(f.len(), size(i), "length of frame {i}");
            assert!(f == frame(i, size(i)), "contents of frame {i}");
        }
        peer
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while done < FRAMES as usize {
        offer(&mut g, &mut next);
        g.pump();
        let completed = g.tx_completed().len();
        done += completed;
        if completed == 0 {
            assert!(
                g.wait_for_backend(Duration::from_secs(5)),
                "stalled at {done}"
            );
        }
        assert!(Instant::now() < deadline, "stalled at {done}");
    }
    g.pump();
    let peer = reader.join().unwrap();
    assert!(peer_is_empty(&peer), "no frame beyond the {FRAMES} sent");
}

#[test]
fn rx_back_pressure_stops_reading_until_the_guest_posts_buffers() {
    let mut g = TestGuest::new();
    let mut peer = g.peer.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..FRAMES {
            let f = frame(i, size(i));
            std::io::Write::write_all(&mut peer, &(f.len() as u32).to_be_bytes()).unwrap();
            std::io::Write::write_all(&mut peer, &f).unwrap();
        }
    });
    g.offer_rx(8, &[9100]);
    let mut got = g.pump_until(|f| f.len() >= 8);
    assert_eq!(got.len(), 8);
    assert!(
        !g.wait_for_backend(Duration::from_millis(50)),
        "the device does not poll the backend while a frame waits for a buffer"
    );
    g.pump();
    assert!(g.received().is_empty());
    assert!(!writer.is_finished(), "the peer is held back");

    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < FRAMES as usize {
        let room = 64 - g.rx_ring.in_flight();
        g.offer_rx(room, &[9100]);
        let activity = g.pump();
        let frames = g.received_frames();
        assert_eq!(activity.rx_used, !frames.is_empty());
        if frames.is_empty() {
            g.wait_for_backend(Duration::from_millis(10));
        }
        got.extend(frames);
        assert!(Instant::now() < deadline, "stalled at {}", got.len());
    }
    writer.join().unwrap();
    assert_eq!(got.len(), FRAMES as usize);
    for (i, f) in got.iter().enumerate() {
        assert!(*f == frame(i as u32, size(i as u32)), "frame {i}");
    }
    g.pump();
    assert!(g.received().is_empty(), "no frame beyond the {FRAMES} sent");
}

#[test]
fn a_zero_length_from_the_peer_takes_the_link_down_and_tx_still_completes() {
    let mut g = TestGuest::new();
    g.offer_rx(2, &[4096]);
    std::io::Write::write_all(&mut g.peer, &0u32.to_be_bytes()).unwrap();
    let activity = g.pump();
    assert!(activity.link_changed);
    assert!(!g.device.link_up());
    let mut status = [0u8; 2];
    g.device.read_config(6, &mut status);
    assert_eq!(status, [0, 0], "link status reads down");
    // The backend is closed: the peer sees EOF.
    assert_eq!(g.peer.read(&mut [0u8; 8]).unwrap(), 0);
    // TX chains still complete (the frames go nowhere), RX buffers stay posted.
    g.send_frame(&frame(30, 100), &[]);
    let activity = g.pump();
    assert!(activity.tx_used && !activity.link_changed);
    assert_eq!(g.tx_completed(), vec![0]);
    assert_eq!(g.rx_ring.in_flight(), 2);
}

#[test]
fn a_peer_hanging_up_while_rx_waits_for_buffers_takes_the_link_down() {
    let mut g = TestGuest::new();
    g.peer_send(&frame(40, 500));
    g.pump();
    assert!(g.received().is_empty(), "no RX buffer posted");
    let (_, replacement) = UnixStream::pair().unwrap();
    drop(std::mem::replace(&mut g.peer, replacement));
    assert!(
        g.wait_for_backend(Duration::from_secs(5)),
        "the hang-up wakes the device"
    );
    assert!(g.pump().link_changed);
    assert!(!g.device.link_up());
    assert!(
        !g.wait_for_backend(Duration::from_millis(50)),
        "nothing left to poll"
    );
}

#[test]
fn config_space_and_registers_announce_a_net_device_with_mac_and_mtu() {
    let g = TestGuest::new();
    let mut config = [0xffu8; CONFIG_LEN + 4];
    g.device.read_config(0, &mut config);
    assert_eq!(config[..6], MAC);
    assert_eq!(u16::from_le_bytes([config[6], config[7]]), 1, "link up");
    assert_eq!(u16::from_le_bytes([config[10], config[11]]), MTU);
    assert_eq!(config[CONFIG_LEN..], [0; 4], "past the end reads 0");

    let (ours, _peer) = UnixStream::pair().unwrap();
    let device = NetDevice::new(
        MAC,
        MTU,
        Box::new(StreamBackend::from_stream(ours).unwrap()),
    )
    .unwrap();
    let mut t = MmioTransport::new(
        Box::new(VirtioNet::new(device)),
        g.mem.clone(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    )
    .unwrap();
    let (read, write) = (
        crate::devices::test_ring::reg_read,
        crate::devices::test_ring::reg_write,
    );
    assert_eq!(read(&mut t, reg::DEVICE_ID), VIRTIO_ID_NET);
    write(&mut t, reg::DEVICE_FEATURES_SEL, 0);
    let low = read(&mut t, reg::DEVICE_FEATURES);
    assert_eq!(
        low,
        1 << 3 | 1 << 5 | 1 << 16,
        "MTU, MAC, STATUS; no offloads"
    );
    write(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(read(&mut t, reg::DEVICE_FEATURES), 1, "VERSION_1");
    for (queue, max) in [
        (0, u32::from(QUEUE_MAX_SIZE)),
        (1, u32::from(QUEUE_MAX_SIZE)),
        (2, 0),
    ] {
        write(&mut t, reg::QUEUE_SEL, queue);
        assert_eq!(read(&mut t, reg::QUEUE_NUM_MAX), max, "queue {queue}");
    }
    let mut mac = [0u8; 6];
    t.read(reg::CONFIG, &mut mac);
    assert_eq!(mac, MAC);
    let mut mtu = [0u8; 2];
    t.read(reg::CONFIG + 10, &mut mtu);
    assert_eq!(u16::from_le_bytes(mtu), 65520);
}

#[test]
fn an_mtu_outside_the_spec_is_refused() {
    for mtu in [0, 67, 65522] {
        let (ours, _peer) = UnixStream::pair().unwrap();
        let backend = Box::new(StreamBackend::from_stream(ours).unwrap());
        assert!(
            NetDevice::new(MAC, mtu, backend).is_err(),
            "MTU {mtu} accepted"
        );
    }
}
