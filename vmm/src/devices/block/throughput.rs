//! Throughput of the device model: 1 GiB of sequential reads through the request queue from
//! a disk file in the page cache, in requests as a guest kernel sends them, against plain
//! `pread` of the same file in the same sizes, measured in the same run, best of three
//! alternating rounds. Run with
//! `cargo test --release -p skiff-vmm --lib block_throughput -- --ignored --nocapture`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use tempfile::NamedTempFile;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN};
use vm_memory::{Address, Bytes, GuestAddress};

use super::device::BlockDevice;
use super::request::{HEADER_LEN, SECTOR_SIZE};
use super::test_driver::{TestGuest, SERIAL};
use crate::devices::test_ring::QUEUE_SIZE;

const ROUNDS: usize = 3;
const DISK: usize = 1 << 30;
/// A read as a guest's page cache sends it when readahead has grown: 256 KiB in 64 pages
/// that are not contiguous (`seg_max` of them).
const REQUEST: usize = 256 << 10;
const PAGE: usize = 4096;
const PAGES: usize = REQUEST / PAGE;
/// Requests in flight, as many as the test queue's descriptors hold (a header, the pages and
/// a status byte each).
const SLOTS: usize = QUEUE_SIZE as usize / (PAGES + 2);
const HEADERS: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;
const DATA: u64 = 0x40_0000;

/// A 1 GiB disk file, read once so that it is in the page cache.
fn disk() -> NamedTempFile {
    let mut file = NamedTempFile::new().unwrap();
    let chunk: Vec<u8> = (0..REQUEST).map(|i| (i * 13) as u8).collect();
    for _ in 0..DISK / REQUEST {
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
    let mut sink = vec![0u8; REQUEST];
    let mut reader = file.reopen().unwrap();
    while reader.read(&mut sink).unwrap() > 0 {}
    file
}

/// Guest page `page` of request slot `slot`: the slots' pages interleave, so no two pages of
/// one request are adjacent.
fn page_addr(slot: usize, page: usize) -> GuestAddress {
    GuestAddress(DATA + ((page * SLOTS + slot) * PAGE) as u64)
}

/// The same bytes with plain `pread`s of the request size, into as many buffers as the guest
/// has slots (as much memory for the copies to land in).
fn pread_seconds(file: &File) -> f64 {
    let mut bufs = vec![vec![1u8; REQUEST]; SLOTS];
    let start = Instant::now();
    for i in 0..DISK / REQUEST {
        file.read_exact_at(&mut bufs[i % SLOTS], (i * REQUEST) as u64)
            .unwrap();
    }
    start.elapsed().as_secs_f64()
}

/// 1 GiB through the device: the driver keeps `SLOTS` requests on the queue, each a header,
/// `PAGES` page descriptors and a status byte, and reuses a slot once it completes.
fn device_seconds(g: &mut TestGuest) -> f64 {
    let requests = DISK / REQUEST;
    let mut free: Vec<usize> = (0..SLOTS).collect();
    let (mut offered, mut completed) = (0, 0);
    let start = Instant::now();
    while completed < requests {
        while offered < requests {
            let Some(slot) = free.pop() else { break };
            let header = GuestAddress(HEADERS + (slot * 64) as u64);
            let sector = (offered * REQUEST) as u64 / SECTOR_SIZE;
            g.mem
                .write_slice(&sector.to_le_bytes(), header.unchecked_add(8))
                .unwrap();
            let mut descs = vec![(header, HEADER_LEN as u32, false)];
            descs.extend((0..PAGES).map(|p| (page_addr(slot, p), PAGE as u32, true)));
            descs.push((GuestAddress(STATUS + slot as u64), 1, true));
            g.ring.offer_descriptors(&g.mem, &descs);
            offered += 1;
        }
        g.pump();
        for (segs, len) in g.ring.take_used(&g.mem) {
            assert_eq!(len as usize, REQUEST + 1);
            let slot = ((segs[0].0 .0 - HEADERS) / 64) as usize;
            let status: u8 = g.mem.read_obj(GuestAddress(STATUS + slot as u64)).unwrap();
            assert_eq!(status, VIRTIO_BLK_S_OK as u8);
            free.push(slot);
            completed += 1;
        }
    }
    start.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn block_throughput_1gib_vs_pread() {
    let file = disk();
    let device = BlockDevice::new(file.reopen().unwrap(), true, SERIAL).unwrap();
    let reference = file.reopen().unwrap();
    let mut g = TestGuest::on(file, device);
    for slot in 0..SLOTS {
        let header = GuestAddress(HEADERS + (slot * 64) as u64);
        g.mem.write_obj(VIRTIO_BLK_T_IN, header).unwrap();
        for p in 0..PAGES {
            // Touch the guest pages, as the reference's buffer is.
            g.mem.write_slice(&[1u8; PAGE], page_addr(slot, p)).unwrap();
        }
    }
    // Alternating rounds, best of each: the machine is shared and noisy.
    let (mut pread, mut device) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        pread = pread.min(pread_seconds(&reference));
        device = device.min(device_seconds(&mut g));
    }
    let mib = (DISK >> 20) as f64;
    let (pread_rate, device_rate) = (mib / pread, mib / device);
    println!(
        "block device {} reads of {} KiB in {PAGES} pages from the page cache: {device_rate:.0} \
         MiB/s ({device:.3} s); pread alone: {pread_rate:.0} MiB/s ({pread:.3} s); ratio {:.2}",
        DISK / REQUEST,
        REQUEST >> 10,
        device_rate / pread_rate
    );
}
