//! The frontend against a real virtiofsd: negotiation, the memory table and rings, then a FUSE
//! INIT and LOOKUPs carried through the request queue from test code, as a guest driver would.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::fs::virtio_fs;
use crate::devices::test_ring::Ring;
use crate::devices::virtio::{VirtioDevice, VirtioInterrupt, INT_USED_RING, VIRTIO_F_VERSION_1};
use crate::memory::create_guest_memory;

const FUSE_LOOKUP: u32 = 1;
const FUSE_INIT: u32 = 26;
const IN_HEADER: usize = 40;
const OUT_HEADER: usize = 16;
/// The high-priority queue is 0; requests go to queue 1.
const REQUEST_QUEUE: u16 = 1;
const REQUEST_AT: u64 = 0x10_0000;
const REPLY_AT: u64 = 0x20_0000;
const REPLY_LEN: u32 = 8192;

/// virtiofsd from `SKIFF_VIRTIOFSD`, else on PATH (scripts/deps.sh installs it).
fn virtiofsd() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_VIRTIOFSD") {
        return p.into();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("virtiofsd"))
        .find(|p| p.is_file())
        .expect("virtiofsd not found: run scripts/deps.sh, or set SKIFF_VIRTIOFSD to its path")
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fuse_request(opcode: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(IN_HEADER + body.len());
    r.extend_from_slice(&((IN_HEADER + body.len()) as u32).to_le_bytes());
    r.extend_from_slice(&opcode.to_le_bytes());
    r.extend_from_slice(&unique.to_le_bytes());
    r.extend_from_slice(&nodeid.to_le_bytes());
    r.extend_from_slice(&[0u8; 16]); // uid, gid, pid, extension length, padding
    r.extend_from_slice(body);
    r
}

/// Sends one FUSE request through the request queue and returns (error, reply body).
fn call(
    dev: &mut dyn VirtioDevice,
    mem: &GuestMemoryMmap,
    ring: &mut Ring,
    interrupt: &VirtioInterrupt,
    request: &[u8],
) -> (i32, Vec<u8>) {
    mem.write_slice(request, GuestAddress(REQUEST_AT)).unwrap();
    ring.offer_descriptors(
        mem,
        &[
            (GuestAddress(REQUEST_AT), request.len() as u32, false),
            (GuestAddress(REPLY_AT), REPLY_LEN, true),
        ],
    );
    dev.queue_notify(REQUEST_QUEUE);
    let deadline = Instant::now() + Duration::from_secs(10);
    let fd = dev
        .backend_fd()
        .expect("the frontend polls the backend's call eventfd");
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        if pfd.revents & libc::POLLIN != 0 {
            dev.backend_ready();
            if let [(_, len)] = ring.take_used(mem)[..] {
                assert_ne!(interrupt.status() & INT_USED_RING, 0, "no interrupt raised");
                interrupt.ack(INT_USED_RING);
                let mut reply = vec![0u8; len as usize];
                mem.read_slice(&mut reply, GuestAddress(REPLY_AT)).unwrap();
                assert!(reply.len() >= OUT_HEADER, "short reply {reply:?}");
                assert_eq!(u32::from_le_bytes(reply[..4].try_into().unwrap()), len);
                let error = i32::from_le_bytes(reply[4..8].try_into().unwrap());
                return (error, reply[OUT_HEADER..].to_vec());
            }
        }
        assert!(Instant::now() < deadline, "virtiofsd did not answer");
    }
}

#[test]
fn a_real_virtiofsd_answers_init_and_lookup_through_the_queues() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("hello"), b"hello").unwrap();
    let socket = dir.path().join("fs.sock");
    let mut daemon = Daemon(
        Command::new(virtiofsd())
            .arg(format!("--socket-path={}", socket.display()))
            .arg(format!("--shared-dir={}", shared.display()))
            .args(["--cache=auto", "--sandbox=none"])
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot start virtiofsd"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "virtiofsd made no socket");
        assert!(daemon.0.try_wait().unwrap().is_none(), "virtiofsd exited");
        std::thread::sleep(Duration::from_millis(10));
    }

    let mem = create_guest_memory(16, true).unwrap();
    let mut dev = virtio_fs(&socket, "share").unwrap();
    assert_eq!(dev.device_type(), 26);
    assert_ne!(dev.features() & VIRTIO_F_VERSION_1, 0);
    let mut tag = [0u8; 6];
    dev.read_config(0, &mut tag);
    assert_eq!(&tag, b"share\0");
    let (_hiprio, q0) = Ring::new(&mem, 0x1000);
    let (mut ring, q1) = Ring::new(&mem, 0x8000);
    let interrupt = Arc::new(VirtioInterrupt::new(
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    ));
    dev.activate(
        mem.clone(),
        VIRTIO_F_VERSION_1,
        vec![q0, q1],
        interrupt.clone(),
    )
    .unwrap();

    // INIT: protocol 7.31, as the guest kernel's driver starts.
    let mut init = Vec::new();
    for v in [7u32, 31, 0, 0] {
        init.extend_from_slice(&v.to_le_bytes());
    }
    let (error, body) = call(
        &mut dev,
        &mem,
        &mut ring,
        &interrupt,
        &fuse_request(FUSE_INIT, 1, 0, &init),
    );
    assert_eq!(error, 0);
    assert_eq!(
        u32::from_le_bytes(body[..4].try_into().unwrap()),
        7,
        "major version"
    );

    // LOOKUP of a file in the shared root (node 1): its attributes carry its size.
    let lookup =
        |name: &str, unique| fuse_request(FUSE_LOOKUP, unique, 1, format!("{name}\0").as_bytes());
    let (error, body) = call(&mut dev, &mem, &mut ring, &interrupt, &lookup("hello", 2));
    assert_eq!(error, 0);
    // fuse_entry_out: nodeid, generation, two validities, two nsecs, then fuse_attr (ino, size)
    let size = u64::from_le_bytes(body[48..56].try_into().unwrap());
    assert_eq!(size, 5);
    let (error, _) = call(&mut dev, &mem, &mut ring, &interrupt, &lookup("missing", 3));
    assert_eq!(error, -libc::ENOENT);

    // The backend serves one frontend: it ends when the device goes away.
    drop(dev);
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "virtiofsd outlived its frontend");
        std::thread::sleep(Duration::from_millis(10));
    }
}
