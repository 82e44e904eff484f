//! gzip members made of stored (uncompressed) deflate blocks, for content that is already
//! compressed (image layers): the output size is known before a byte is written
//! ([`stored_size`]), so a `.tgz` can be reserved on the partition and streamed into place, and
//! no CPU is spent compressing again.
//!
//! flate2 with `Compression::none()` also emits stored blocks, but their boundaries follow its
//! internal buffering, so its output size is not predictable; the framing here is RFC 1951 §3.2.4
//! and RFC 1952 written out (a 10-byte header, blocks of at most 65,535 bytes with a 5-byte
//! header each, the CRC-32 and length trailer), with flate2's CRC-32.

use std::io::{self, Write};

/// Largest payload of one stored deflate block.
const BLOCK: usize = 65_535;
/// gzip header: magic, CM=deflate, no flags, MTIME 0, XFL 0, OS 255 (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// Size in bytes of the gzip member [`StoredGzip`] writes for `n` bytes of input.
pub fn stored_size(n: u64) -> u64 {
    // A full block is written out only when more data follows, so the last block holds 1 to
    // BLOCK bytes (0 only for empty input).
    let blocks = n.div_ceil(BLOCK as u64).max(1);
    HEADER.len() as u64 + blocks * 5 + n + 8
}

/// Writes one gzip member of stored blocks into `W`. Call [`StoredGzip::finish`] at the end.
pub struct StoredGzip<W: Write> {
    out: W,
    buf: Vec<u8>,
    crc: flate2::Crc,
    started: bool,
}

impl<W: Write> StoredGzip<W> {
    /// A writer that emits the member into `out`.
    pub fn new(out: W) -> StoredGzip<W> {
        StoredGzip {
            out,
            buf: Vec::with_capacity(BLOCK),
            crc: flate2::Crc::new(),
            started: false,
        }
    }

    fn header(&mut self) -> io::Result<()> {
        if !self.started {
            self.out.write_all(&HEADER)?;
            self.started = true;
        }
        Ok(())
    }

    fn block(&mut self, last: bool) -> io::Result<()> {
        let len = self.buf.len() as u16;
        let mut h = [0u8; 5];
        h[0] = u8::from(last); // BFINAL, BTYPE=00 (stored), then padding to the byte boundary
        h[1..3].copy_from_slice(&len.to_le_bytes());
        h[3..5].copy_from_slice(&(!len).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the final block and the trailer; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header()?;
        self.block(true)?;
        let mut t = [0u8; 8];
        t[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        t[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.out.write_all(&t)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for StoredGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.header()?;
        let mut rest = data;
        while !rest.is_empty() {
            if self.buf.len() == BLOCK {
                self.block(false)?;
            }
            let n = (BLOCK - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            self.crc.update(&rest[..n]);
            rest = &rest[n..];
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn sizes_are_exact_and_gunzip_reads_the_input_back() {
        for n in [
            0usize,
            1,
            100,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            3 * BLOCK,
            200_000,
        ] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + i / 300) as u8).collect();
            let mut g = StoredGzip::new(Vec::new());
            // Uneven writes exercise the block boundaries.
            for c in data.chunks(40_000) {
                g.write_all(c).unwrap();
            }
            let out = g.finish().unwrap();
            assert_eq!(out.len() as u64, stored_size(n as u64), "n = {n}");
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "n = {n}");
        }
    }
}
