//! Device tests: a guest driver on a mock virtqueue against a real temporary disk file.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::device::{BlockDevice, CONFIG_LEN, ID_LEN, QUEUE_MAX_SIZE, VIRTIO_ID_BLOCK};
use super::error::BlockError;
use super::request::{HEADER_LEN, MAX_REQUEST_LEN, SEG_MAX, SIZE_MAX};
use super::test_driver::{pattern, Data, TestGuest, MEM_SIZE, SERIAL, UNWRITTEN};
use crate::bus::BusDevice;
use crate::devices::mmio::{reg, status, MmioTransport};
use crate::devices::virtio::INT_USED_RING;
use crate::devices::virtio_block::VirtioBlock;

const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
const UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;
/// 4 MiB: room for the largest request and then some.
const SECTORS: u64 = 8192;
const PAGE: usize = 4096;
/// Guest memory the guest does not have.
const NOWHERE: GuestAddress = GuestAddress(1 << 40);
const MEM_END: u64 = MEM_SIZE as u64;

/// Reads `len` bytes at `sector` through the device, into pages.
fn read(g: &mut TestGuest, sector: u64, len: usize) -> Vec<u8> {
    read_in(g, sector, len, PAGE)
}

/// Reads `len` bytes at `sector` through the device, into pieces of `piece` bytes.
fn read_in(g: &mut TestGuest, sector: u64, len: usize, piece: usize) -> Vec<u8> {
    g.request(VIRTIO_BLK_T_IN, sector, Data::In(len), piece);
    let done = g.run_one();
    assert_eq!(done.status, Some(OK));
    assert_eq!(done.len as usize, len + 1, "data and status written");
    done.data
}

/// The status of a request with `data` at `sector`, in pieces of `piece` bytes.
fn status_of(
    g: &mut TestGuest,
    request_type: u32,
    sector: u64,
    data: Data<'_>,
    piece: usize,
) -> u8 {
    g.request(request_type, sector, data, piece);
    let done = g.run_one();
    if done.status != Some(OK) {
        assert_eq!(done.len, 1, "a failed request writes only its status");
    }
    done.status.unwrap()
}

/// The disk file's bytes.
fn file_contents(g: &TestGuest) -> Vec<u8> {
    let mut bytes = Vec::new();
    g.disk().read_to_end(&mut bytes).unwrap();
    bytes
}

#[test]
fn reads_return_the_disk_contents() {
    let mut g = TestGuest::new(SECTORS);
    assert_eq!(read(&mut g, 0, 512), pattern(0, 512));
    assert_eq!(read(&mut g, 7, 64 << 10), pattern(7 * 512, 64 << 10));
    assert_eq!(
        read(&mut g, SECTORS - 8, PAGE),
        pattern((SECTORS - 8) * 512, PAGE),
        "the last sectors"
    );
    // An empty read is a valid no-op.
    assert!(read(&mut g, SECTORS, 0).is_empty());
}

#[test]
fn a_write_reads_back_and_reaches_the_file() {
    let mut g = TestGuest::new(SECTORS);
    let data: Vec<u8> = (0..40_960).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_OUT, 100, Data::Out(&data), PAGE),
        OK
    );
    assert_eq!(read(&mut g, 100, data.len()), data);
    let file = file_contents(&g);
    assert_eq!(&file[100 * 512..100 * 512 + data.len()], &data[..]);
    assert_eq!(
        &file[..100 * 512],
        &pattern(0, 100 * 512)[..],
        "nothing else changed"
    );
    let end = 100 * 512 + data.len();
    assert_eq!(&file[end..], &pattern(end as u64, file.len() - end)[..]);
}

#[test]
fn a_flush_succeeds_after_writes() {
    let mut g = TestGuest::new(SECTORS);
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_OUT, 1, Data::Out(&[9; 1024]), PAGE),
        OK
    );
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_FLUSH, 0, Data::None, PAGE),
        OK
    );
    assert_eq!(file_contents(&g)[512..1536], [9; 1024]);
    // A flush carries no data.
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_FLUSH, 0, Data::In(512), PAGE),
        IOERR
    );
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_FLUSH, 0, Data::Out(&[0; 512]), PAGE),
        IOERR
    );
}

#[test]
fn get_id_returns_the_serial_nul_padded() {
    let mut g = TestGuest::new(8);
    g.request(VIRTIO_BLK_T_GET_ID, 0, Data::In(ID_LEN), ID_LEN);
    let done = g.run_one();
    assert_eq!((done.status, done.len), (Some(OK), ID_LEN as u32 + 1));
    let mut want = SERIAL.as_bytes().to_vec();
    want.resize(ID_LEN, 0);
    assert_eq!(done.data, want);

    // A serial of all 20 bytes has no NUL; a smaller buffer gets what fits.
    let serial = "0123456789abcdefghij";
    let mut g = TestGuest::with_disk(&[0; 512], false, serial);
    g.request(VIRTIO_BLK_T_GET_ID, 0, Data::In(ID_LEN), ID_LEN);
    assert_eq!(g.run_one().data, serial.as_bytes());
    g.request(VIRTIO_BLK_T_GET_ID, 0, Data::In(4), ID_LEN);
    let done = g.run_one();
    assert_eq!((done.status, done.len), (Some(OK), 5));
    assert_eq!(done.data, b"0123");
    // The id goes into device-writable memory only.
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_GET_ID, 0, Data::Out(&[0; 20]), 20),
        IOERR
    );
}

#[test]
fn a_serial_longer_than_20_bytes_is_refused() {
    let file = tempfile::tempfile().unwrap();
    let err = BlockDevice::new(file, false, "0123456789abcdefghijk").err();
    assert!(matches!(err, Some(BlockError::SerialTooLong(_))), "{err:?}");
}

#[test]
fn the_capacity_is_the_file_size_in_whole_sectors() {
    for (size, sectors) in [(0, 0), (511, 0), (1000, 1), (1 << 20, 2048)] {
        let g = TestGuest::with_disk(&vec![1; size], false, SERIAL);
        assert_eq!(g.device.capacity(), sectors, "{size} bytes");
    }
    // The tail past the last whole sector cannot be read.
    let mut g = TestGuest::with_disk(&[1; 1000], false, SERIAL);
    assert_eq!(read(&mut g, 0, 512), [1; 512]);
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_IN, 1, Data::In(512), PAGE),
        IOERR
    );
}

#[test]
fn sectors_beyond_the_capacity_fail() {
    let mut g = TestGuest::new(SECTORS);
    for (sector, len) in [
        (SECTORS, 512),
        (SECTORS - 1, 1024),
        (SECTORS + 1000, 512),
        // sector * 512 overflows.
        (u64::MAX / 512 + 1, 512),
        (u64::MAX, 512),
        // sector * 512 + len overflows.
        (u64::MAX / 512, 1024),
    ] {
        assert_eq!(
            status_of(&mut g, VIRTIO_BLK_T_IN, sector, Data::In(len), PAGE),
            IOERR,
            "read at {sector}"
        );
        assert_eq!(
            status_of(
                &mut g,
                VIRTIO_BLK_T_OUT,
                sector,
                Data::Out(&vec![1; len]),
                PAGE
            ),
            IOERR,
            "write at {sector}"
        );
    }
    assert_eq!(file_contents(&g), pattern(0, SECTORS as usize * 512));
    // The file did not grow.
    assert_eq!(g.disk().seek(SeekFrom::End(0)).unwrap(), SECTORS * 512);
}

#[test]
fn writes_to_a_read_only_disk_fail_and_change_nothing() {
    let contents = pattern(0, 64 << 10);
    let mut g = TestGuest::with_disk(&contents, true, SERIAL);
    assert_ne!(g.device.features() & 1 << 5, 0, "VIRTIO_BLK_F_RO offered");
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_OUT, 0, Data::Out(&[0; 4096]), PAGE),
        IOERR
    );
    assert_eq!(read(&mut g, 0, 4096), contents[..4096]);
    assert_eq!(file_contents(&g), contents);
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_FLUSH, 0, Data::None, PAGE),
        OK
    );

    let g = TestGuest::new(8);
    assert_eq!(g.device.features() & 1 << 5, 0, "a writable disk is not RO");
}

#[test]
fn requests_beyond_the_limits_fail_and_the_largest_passes() {
    let mut g = TestGuest::new(SECTORS);
    // The largest request: SEG_MAX pieces of SIZE_MAX.
    let piece = SIZE_MAX as usize;
    assert_eq!(
        read_in(&mut g, 3, MAX_REQUEST_LEN, piece),
        pattern(3 * 512, MAX_REQUEST_LEN)
    );
    let big = pattern(12345, MAX_REQUEST_LEN);
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_OUT, 0, Data::Out(&big), piece),
        OK
    );
    assert_eq!(file_contents(&g)[..MAX_REQUEST_LEN], big[..]);

    // One sector more.
    let over = MAX_REQUEST_LEN + 512;
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_IN, 0, Data::In(over), piece),
        IOERR
    );
    assert_eq!(
        status_of(
            &mut g,
            VIRTIO_BLK_T_OUT,
            0,
            Data::Out(&vec![0; over]),
            piece
        ),
        IOERR
    );
    // One piece more than SEG_MAX, small as they are.
    let many = (SEG_MAX as usize + 1) * 512;
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_IN, 0, Data::In(many), 512),
        IOERR
    );
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_OUT, 0, Data::Out(&vec![0; many]), 512),
        IOERR
    );
    // Data that is not whole sectors.
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_IN, 0, Data::In(1000), PAGE),
        IOERR
    );
    assert_eq!(
        status_of(&mut g, VIRTIO_BLK_T_OUT, 0, Data::Out(&[0; 513]), PAGE),
        IOERR
    );
    assert_eq!(
        file_contents(&g)[..MAX_REQUEST_LEN],
        big[..],
        "no failed write landed"
    );
}

#[test]
fn unsupported_request_types_complete_with_unsupp() {
    let mut g = TestGuest::new(SECTORS);
    for t in [
        VIRTIO_BLK_T_DISCARD,
        VIRTIO_BLK_T_WRITE_ZEROES,
        2,
        0x8000_0001,
    ] {
        assert_eq!(
            status_of(&mut g, t, 0, Data::Out(&[0; 16]), PAGE),
            UNSUPP,
            "type {t}"
        );
    }
    assert_eq!(file_contents(&g), pattern(0, SECTORS as usize * 512));
}

#[test]
fn a_request_split_over_many_descriptors_reads_and_writes_whole() {
    let mut g = TestGuest::new(SECTORS);
    let data = pattern(999, 6 * 512);
    // The header in three pieces, the last of which goes on with the data's first 100 bytes;
    // then the data in uneven pieces.
    let header = g.header(VIRTIO_BLK_T_OUT, 20);
    let mut header_bytes = [0u8; HEADER_LEN];
    g.mem.read_slice(&mut header_bytes, header).unwrap();
    let shared = g.alloc(1 + 100);
    g.mem.write_obj(header_bytes[15], shared).unwrap();
    g.mem
        .write_slice(&data[..100], shared.unchecked_add(1))
        .unwrap();
    let mut descs = vec![
        (header, 5, false),
        (header.unchecked_add(5), 10, false),
        (shared, 101, false),
    ];
    let mut off = 100;
    for piece in [1, 511, 1000, 7, data.len() - 1619] {
        let addr = g.alloc(piece);
        g.mem.write_slice(&data[off..off + piece], addr).unwrap();
        descs.push((addr, piece as u32, false));
        off += piece;
    }
    assert_eq!(off, data.len());
    let status = g.status_byte();
    descs.push((status, 1, true));
    g.submit(&descs, Some(status));
    let done = g.run_one();
    assert_eq!((done.status, done.len), (Some(OK), 1));
    assert_eq!(file_contents(&g)[20 * 512..26 * 512], data[..]);

    // A read in uneven pieces whose status byte ends the data's last descriptor.
    let header = g.header(VIRTIO_BLK_T_IN, 20);
    let mut descs = vec![(header, HEADER_LEN as u32, false)];
    let mut pieces = Vec::new();
    for piece in [100, 412, 2048, 1, 1] {
        let addr = g.alloc(piece);
        descs.push((addr, piece as u32, true));
        pieces.push((addr, piece));
    }
    let rest = data.len() - 2562;
    let tail = g.alloc(rest + 1);
    let status = tail.unchecked_add(rest as u64);
    g.mem.write_obj(UNWRITTEN, status).unwrap();
    descs.push((tail, rest as u32 + 1, true));
    pieces.push((tail, rest));
    g.submit(&descs, Some(status));
    let done = g.run_one();
    assert_eq!((done.status, done.len), (Some(OK), data.len() as u32 + 1));
    let mut got = Vec::new();
    for (addr, len) in pieces {
        let mut b = vec![0u8; len];
        g.mem.read_slice(&mut b, addr).unwrap();
        got.extend(b);
    }
    assert_eq!(got, data);
}

#[test]
fn malformed_chains_never_panic_and_the_queue_keeps_working() {
    let mut g = TestGuest::new(SECTORS);
    // (what, the chain, where its status byte is, the status and used length expected)
    type Case = (
        &'static str,
        Vec<(GuestAddress, u32, bool)>,
        Option<GuestAddress>,
        Option<u8>,
        u32,
    );
    let mut cases: Vec<Case> = Vec::new();

    let h = g.header(VIRTIO_BLK_T_IN, 0);
    let d = g.alloc(512);
    cases.push((
        "no status: all readable",
        vec![(h, 16, false), (d, 512, false)],
        None,
        None,
        0,
    ));
    let h = g.header(VIRTIO_BLK_T_FLUSH, 0);
    cases.push(("header only", vec![(h, 16, false)], None, None, 0));

    let h = g.header(VIRTIO_BLK_T_IN, 0);
    let s = g.status_byte();
    cases.push((
        "header too short",
        vec![(h, 10, false), (s, 1, true)],
        Some(s),
        Some(IOERR),
        1,
    ));
    let s = g.status_byte();
    cases.push(("no header", vec![(s, 1, true)], Some(s), Some(IOERR), 1));

    let h = g.header(VIRTIO_BLK_T_IN, 0);
    let (d, s) = (g.alloc(512), g.status_byte());
    cases.push((
        "writable header",
        vec![(h, 16, true), (d, 512, true), (s, 1, true)],
        Some(s),
        Some(IOERR),
        1,
    ));

    let h = g.header(VIRTIO_BLK_T_IN, 0);
    let (d, s) = (g.alloc(512), g.status_byte());
    cases.push((
        "read into readable data",
        vec![(h, 16, false), (d, 512, false), (s, 1, true)],
        Some(s),
        Some(IOERR),
        1,
    ));
    let h = g.header(VIRTIO_BLK_T_OUT, 0);
    let (d, s) = (g.alloc(512), g.status_byte());
    cases.push((
        "write from writable data",
        vec![(h, 16, false), (d, 512, true), (s, 1, true)],
        Some(s),
        Some(IOERR),
        1,
    ));
    let h = g.header(VIRTIO_BLK_T_OUT, 0);
    let (d, s) = (g.alloc(512), g.status_byte());
    cases.push((
        "readable after writable",
        vec![(h, 16, false), (s, 1, true), (d, 512, false)],
        Some(s),
        Some(IOERR),
        1,
    ));
    let h = g.header(VIRTIO_BLK_T_IN, 0);
    let (d, s) = (g.alloc(512), g.status_byte());
    cases.push((
        "readable status",
        vec![(h, 16, false), (d, 512, true), (s, 1, false)],
        // The device may write the last writable byte, the data's.
        None,
        None,
        1,
    ));

    let s = g.status_byte();
    cases.push((
        "header outside guest memory",
        vec![(NOWHERE, 16, false), (s, 1, true)],
        Some(s),
        Some(IOERR),
        1,
    ));
    let h = g.header(VIRTIO_BLK_T_IN, 0);
    let s = g.status_byte();
    cases.push((
        "read into memory the guest does not have",
        vec![(h, 16, false), (NOWHERE, 4096, true), (s, 1, true)],
        Some(s),
        Some(IOERR),
        1,
    ));
    let h = g.header(VIRTIO_BLK_T_OUT, 0);
    let s = g.status_byte();
    cases.push((
        "write from memory the guest does not have",
        vec![(h, 16, false), (NOWHERE, 4096, false), (s, 1, true)],
        Some(s),
        Some(IOERR),
        1,
    ));
    let h = g.header(VIRTIO_BLK_T_IN, 0);
    let d = g.alloc(512);
    let last = GuestAddress(MEM_END - 256);
    cases.push((
        "data running off the end of guest memory",
        vec![(h, 16, false), (d, 512, true), (last, 512, true)],
        None,
        None,
        0,
    ));
    let h = g.header(VIRTIO_BLK_T_IN, 0);
    let d = g.alloc(512);
    cases.push((
        "status outside guest memory",
        vec![(h, 16, false), (d, 512, true), (NOWHERE, 1, true)],
        None,
        None,
        0,
    ));

    for (what, descs, status, want_status, want_len) in &cases {
        g.submit(descs, *status);
        let done = g.run_one();
        assert_eq!(done.len, *want_len, "{what}: used length");
        if let Some(want) = want_status {
            assert_eq!(done.status, Some(*want), "{what}: status");
        }
    }
    assert_eq!(
        file_contents(&g),
        pattern(0, SECTORS as usize * 512),
        "no write landed"
    );

    // The queue still works, for all of them at once too.
    for (_, descs, status, ..) in &cases {
        if let Some(s) = status {
            g.mem.write_obj(UNWRITTEN, *s).unwrap();
        }
        g.submit(descs, *status);
    }
    g.request(VIRTIO_BLK_T_IN, 0, Data::In(512), PAGE);
    assert!(g.pump());
    let done = g.completed();
    assert_eq!(done.len(), cases.len() + 1);
    let last = done.last().unwrap();
    assert_eq!(
        (last.status, &last.data[..]),
        (Some(OK), &pattern(0, 512)[..])
    );
}

#[test]
fn an_available_index_beyond_the_queue_size_does_not_hang_the_device() {
    let mut g = TestGuest::new(SECTORS);
    g.request(VIRTIO_BLK_T_IN, 0, Data::In(512), PAGE);
    assert_eq!(g.run_one().status, Some(OK));
    // The driver claims 1000 new chains in a 256-entry queue.
    let avail_idx = g.ring.areas()[1].unchecked_add(2);
    g.mem.write_obj(1001u16, avail_idx).unwrap();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let used = g.pump();
        done.send((used, g)).unwrap();
    });
    let (used, mut g) = result
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the device returns");
    assert!(!used);
    // Once the driver puts the index right, requests run again.
    g.mem.write_obj(1u16, avail_idx).unwrap();
    g.request(VIRTIO_BLK_T_IN, 1, Data::In(512), PAGE);
    assert_eq!(g.run_one().data, pattern(512, 512));
}

#[test]
fn requests_through_the_mmio_transport_interrupt_the_guest() {
    let mut g = TestGuest::new(SECTORS);
    let device = BlockDevice::new(g.disk(), false, SERIAL).unwrap();
    let mut t = MmioTransport::new(
        Box::new(VirtioBlock::new(device)),
        g.mem.clone(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    )
    .unwrap();
    let (read, write) = (
        crate::devices::test_ring::reg_read,
        crate::devices::test_ring::reg_write,
    );
    assert_eq!(read(&mut t, reg::DEVICE_ID), VIRTIO_ID_BLOCK);
    write(&mut t, reg::DEVICE_FEATURES_SEL, 0);
    let low = read(&mut t, reg::DEVICE_FEATURES);
    assert_eq!(
        low,
        1 << 1 | 1 << 2 | 1 << 6 | 1 << 9,
        "SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH"
    );
    write(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    let high = read(&mut t, reg::DEVICE_FEATURES);
    assert_eq!(high, 1, "VERSION_1");
    for (queue, max) in [(0, u32::from(QUEUE_MAX_SIZE)), (1, 0)] {
        write(&mut t, reg::QUEUE_SEL, queue);
        assert_eq!(read(&mut t, reg::QUEUE_NUM_MAX), max, "queue {queue}");
    }
    let mut config = [0xffu8; CONFIG_LEN + 4];
    t.read(reg::CONFIG, &mut config);
    let word = |at: usize| u32::from_le_bytes(config[at..at + 4].try_into().unwrap());
    assert_eq!(
        u64::from_le_bytes(config[..8].try_into().unwrap()),
        SECTORS,
        "capacity"
    );
    assert_eq!(word(8), SIZE_MAX, "size_max");
    assert_eq!(word(12), SEG_MAX, "seg_max");
    assert_eq!(word(16), 0, "no geometry");
    assert_eq!(word(20), 512, "blk_size");
    assert_eq!(config[CONFIG_LEN..], [0; 4], "past the end reads 0");

    // The driver starts the device on the test ring's queue.
    write(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    write(&mut t, reg::DRIVER_FEATURES_SEL, 0);
    write(&mut t, reg::DRIVER_FEATURES, low);
    write(&mut t, reg::DRIVER_FEATURES_SEL, 1);
    write(&mut t, reg::DRIVER_FEATURES, high);
    write(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    write(&mut t, reg::QUEUE_SEL, 0);
    write(
        &mut t,
        reg::QUEUE_NUM,
        u32::from(crate::devices::test_ring::QUEUE_SIZE),
    );
    let [desc, avail, used] = g.ring.areas();
    for (reg_low, addr) in [
        (reg::QUEUE_DESC_LOW, desc),
        (reg::QUEUE_DRIVER_LOW, avail),
        (reg::QUEUE_DEVICE_LOW, used),
    ] {
        write(&mut t, reg_low, addr.0 as u32);
        write(&mut t, reg_low + 4, (addr.0 >> 32) as u32);
    }
    write(&mut t, reg::QUEUE_READY, 1);
    write(
        &mut t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
    );
    assert!(t.is_active());
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), 0);

    g.request(VIRTIO_BLK_T_IN, 16, Data::In(8192), PAGE);
    write(&mut t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), INT_USED_RING);
    let done = g.completed();
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].status, &done[0].data[..]),
        (Some(OK), &pattern(16 * 512, 8192)[..])
    );
    write(&mut t, reg::INTERRUPT_ACK, INT_USED_RING);
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), 0);

    // A write, seen in the file.
    g.request(VIRTIO_BLK_T_OUT, 2, Data::Out(&[7; 512]), PAGE);
    write(&mut t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), INT_USED_RING);
    assert_eq!(g.completed()[0].status, Some(OK));
    let mut sector = [0u8; 512];
    g.disk().read_exact_at(&mut sector, 1024).unwrap();
    assert_eq!(sector, [7; 512]);
    // Nothing to do, no interrupt.
    write(&mut t, reg::INTERRUPT_ACK, INT_USED_RING);
    write(&mut t, reg::QUEUE_NOTIFY, 0);
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), 0);
}
