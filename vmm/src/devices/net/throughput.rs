//! Throughput of the device model: 1 GiB of MTU-sized frames guest → backend through the TX
//! queue into a Unix socket in the stream framing, against the same bytes from as many
//! buffers through a Unix socket pair alone, both pairs with the send buffers skiff's host side
//! sets, measured in the same run, best of three alternating rounds. Run with
//! `cargo test --release -p skiff-vmm --lib net_throughput -- --ignored --nocapture`.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};

use super::device::NET_HDR_LEN;
use super::test_driver::TestGuest;
use crate::devices::test_drain::drain;

const ROUNDS: usize = 3;
/// A frame of the 65520 MTU: Ethernet header and payload.
const FRAME: usize = 65534;
const FRAMES: usize = (1 << 30) / 65536;
/// Bytes on the wire: length prefix and frame, for every frame.
const WIRE: usize = FRAMES * (4 + FRAME);
const SLOTS: usize = 64;
const HDR_SLOTS: u64 = 0x200_0000;
const DATA_SLOTS: u64 = 0x210_0000;

/// A socket pair with the send buffers skiff's host side asks for, for the device and its
/// reference alike.
fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    for s in [&a, &b] {
        super::large_send_buffer(s);
    }
    (a, b)
}

/// The same bytes through a Unix socket pair, one write per framed frame, from as many
/// buffers as the guest has slots (the same memory the kernel copies from): the ceiling of
/// the device's host side.
fn unix_socket_seconds() -> f64 {
    let (reader, mut writer) = pair();
    let chunks: Vec<Vec<u8>> = (0..SLOTS)
        .map(|slot| {
            let mut chunk = (FRAME as u32).to_be_bytes().to_vec();
            chunk.resize(4 + FRAME, slot as u8);
            chunk
        })
        .collect();
    let start = Instant::now();
    let rx = std::thread::spawn(move || drain(reader, WIRE));
    for i in 0..FRAMES {
        writer.write_all(&chunks[i % SLOTS]).unwrap();
    }
    drop(writer);
    assert_eq!(rx.join().unwrap(), WIRE);
    start.elapsed().as_secs_f64()
}

/// 1 GiB guest → backend through the device: the driver offers pre-filled frames split as a
/// guest without offloads does (header, then the frame in two pieces); a host thread reads
/// the peer end.
fn device_seconds() -> f64 {
    let (ours, peer) = pair();
    let mut g = TestGuest::on(ours, peer);
    for slot in 0..SLOTS as u64 {
        let fill = vec![slot as u8; FRAME];
        g.mem
            .write_slice(&fill, GuestAddress(DATA_SLOTS + slot * FRAME as u64))
            .unwrap();
        g.mem
            .write_slice(&[0u8; NET_HDR_LEN], GuestAddress(HDR_SLOTS + slot * 64))
            .unwrap();
    }
    let peer = g.peer.try_clone().unwrap();
    let start = Instant::now();
    let rx = std::thread::spawn(move || drain(peer, WIRE));
    let mut free_slots: Vec<u64> = (0..SLOTS as u64).collect();
    let mut offered = 0;
    let mut idle_since = Instant::now();
    while !rx.is_finished() {
        while offered < FRAMES {
            let Some(slot) = free_slots.pop() else { break };
            let data = DATA_SLOTS + slot * FRAME as u64;
            g.tx_ring.offer(
                &g.mem,
                &[
                    (GuestAddress(HDR_SLOTS + slot * 64), NET_HDR_LEN as u32),
                    (GuestAddress(data), 32768),
                    (GuestAddress(data + 32768), (FRAME - 32768) as u32),
                ],
                false,
            );
            offered += 1;
        }
        g.pump();
        let used = g.tx_ring.take_used(&g.mem);
        if used.is_empty() {
            g.wait_for_backend(Duration::from_millis(1));
        } else {
            idle_since = Instant::now();
        }
        for (segs, _) in used {
            free_slots.push((segs[0].0 .0 - HDR_SLOTS) / 64);
        }
        assert!(
            idle_since.elapsed() < Duration::from_secs(10),
            "stalled after {offered} frames"
        );
    }
    assert_eq!(rx.join().unwrap(), WIRE);
    start.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn net_throughput_1gib_vs_unix_socket() {
    // Alternating rounds, best of each: the machine is shared and noisy.
    let (mut unix, mut device) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        unix = unix.min(unix_socket_seconds());
        device = device.min(device_seconds());
    }
    let mib = (WIRE >> 20) as f64;
    let (unix_rate, device_rate) = (mib / unix, mib / device);
    println!(
        "net device {FRAMES} frames of {FRAME} bytes guest->backend: {device_rate:.0} MiB/s \
         ({device:.3} s); Unix socket pair alone: {unix_rate:.0} MiB/s ({unix:.3} s); ratio \
         {:.2}",
        device_rate / unix_rate
    );
}
