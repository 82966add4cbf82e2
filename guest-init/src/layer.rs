//! One layer blob as it arrives: `LayerData` frames read as a byte stream until `LayerEnd`,
//! checked against the announced size, and decompressed as its media type says.

use std::io::{self, Read};

use protocol::{read_message, Message};

use crate::error::{Error, Result};

/// How a layer's tar is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression an OCI or Docker layer media type announces.
pub fn compression(media_type: &str) -> Result<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Compression::Zstd),
        other => Err(Error::Invalid(format!(
            "unsupported layer media type {other:?}"
        ))),
    }
}

/// Wraps the compressed stream in the matching decoder.
pub fn decoder<'a, R: Read + 'a>(compression: Compression, raw: R) -> Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(raw)
                .map_err(|e| Error::Invalid(format!("zstd stream: {e}")))?,
        ),
    })
}

/// The bytes of one layer, read from the session as `LayerData` frames up to `LayerEnd`.
pub struct LayerStream<'a, R: Read> {
    conn: &'a mut R,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
    received: u64,
    expected: u64,
    /// Set when the session itself failed; then nothing more can be read from it.
    broken: bool,
}

impl<'a, R: Read> LayerStream<'a, R> {
    pub fn new(conn: &'a mut R, expected: u64) -> Self {
        LayerStream {
            conn,
            chunk: Vec::new(),
            pos: 0,
            ended: false,
            received: 0,
            expected,
            broken: false,
        }
    }

    /// Whether the session stream failed (as opposed to the layer's contents being bad).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Reads and discards the rest of the layer, up to its `LayerEnd`.
    pub fn drain(&mut self) -> io::Result<()> {
        loop {
            self.pos = self.chunk.len();
            if self.ended {
                return Ok(());
            }
            self.next_frame()?;
        }
    }

    fn next_frame(&mut self) -> io::Result<()> {
        let fail = |this: &mut Self, msg: String| {
            this.broken = true;
            Err(io::Error::new(io::ErrorKind::InvalidData, msg))
        };
        match read_message(self.conn) {
            Ok(Some(Message::LayerData(bytes))) => {
                self.received += bytes.len() as u64;
                if self.received > self.expected {
                    return fail(
                        self,
                        format!("layer is larger than the {} bytes announced", self.expected),
                    );
                }
                self.chunk = bytes;
                self.pos = 0;
                Ok(())
            }
            Ok(Some(Message::LayerEnd)) => {
                self.ended = true;
                if self.received != self.expected {
                    return fail(
                        self,
                        format!(
                            "layer ended after {} bytes, {} were announced",
                            self.received, self.expected
                        ),
                    );
                }
                Ok(())
            }
            Ok(Some(other)) => fail(
                self,
                format!("unexpected message inside a layer: {other:?}"),
            ),
            Ok(None) => fail(self, "the host closed the session inside a layer".into()),
            Err(e) => fail(self, format!("reading a layer: {e}")),
        }
    }
}

impl<R: Read> Read for LayerStream<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            self.next_frame()?;
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::write_message;

    fn wire(msgs: &[Message]) -> Vec<u8> {
        let mut w = Vec::new();
        for m in msgs {
            write_message(&mut w, m).unwrap();
        }
        w
    }

    #[test]
    fn frames_read_as_one_stream_up_to_layer_end() {
        let bytes = wire(&[
            Message::LayerData(b"hello ".to_vec()),
            Message::LayerData(b"world".to_vec()),
            Message::LayerEnd,
            Message::Started,
        ]);
        let mut r = bytes.as_slice();
        let mut s = LayerStream::new(&mut r, 11);
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
        assert_eq!(read_message(&mut r).unwrap(), Some(Message::Started));
    }

    #[test]
    fn sizes_other_than_announced_are_errors() {
        let bytes = wire(&[Message::LayerData(b"12345".to_vec()), Message::LayerEnd]);
        let mut r = bytes.as_slice();
        assert!(LayerStream::new(&mut r, 4)
            .read_to_end(&mut Vec::new())
            .is_err());
        let mut r = bytes.as_slice();
        assert!(LayerStream::new(&mut r, 6).drain().is_err());
        let mut r = bytes.as_slice();
        LayerStream::new(&mut r, 5).drain().unwrap();
    }

    #[test]
    fn media_types_pick_the_decoder() {
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            compression("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(),
            Compression::Gzip
        );
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar").unwrap(),
            Compression::None
        );
        assert!(compression("text/plain").is_err());
    }
}
