//! Test-only: the reading end of the throughput benchmarks, which counts what arrives.

use std::io::Read;

/// Reads `total` bytes from `src` in 64 KiB reads; returns how many arrived before it ended.
pub fn drain(mut src: impl Read, total: usize) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < total {
        match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reader: {e}"),
        }
    }
    got
}
