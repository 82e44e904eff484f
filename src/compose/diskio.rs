//! Positioned I/O over disk images: the small `ReadAt` abstraction that lets the filesystem
//! reader and `verify` work the same way on a sparse partition file, a raw disk image (through a
//! partition-offset view) and a qcow2 image; and the data ranges of sparse files.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Reads exact byte ranges at absolute offsets. Reads past the end of the device are errors.
pub trait ReadAt: Sync {
    /// Fill `buf` from `offset`; short reads are errors.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Size of the device in bytes.
    fn size(&self) -> u64;
}

impl ReadAt for File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
}

/// A window `[start, start + len)` of another device, e.g. one partition of a disk image.
pub struct Window<R> {
    inner: R,
    start: u64,
    len: u64,
}

impl<R: ReadAt> Window<R> {
    /// A view of `len` bytes of `inner` starting at `start`.
    pub fn new(inner: R, start: u64, len: u64) -> Self {
        Window { inner, start, len }
    }
}

impl<R: ReadAt> ReadAt for Window<R> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {offset} is beyond the end of a {}-byte partition",
                        buf.len(),
                        self.len
                    ),
                )
            })?;
        let _ = end;
        self.inner.read_at(self.start + offset, buf)
    }
    fn size(&self) -> u64 {
        self.len
    }
}

/// Data ranges of a sparse file (SEEK_DATA/SEEK_HOLE).
pub fn data_ranges(path: &Path) -> Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = f
        .metadata()
        .with_context(|| format!("stat {}", path.display()))?
        .len();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match seek(&f, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e).with_context(|| format!("SEEK_DATA in {}", path.display())),
        };
        let end = seek(&f, SeekFrom::Hole(start))
            .with_context(|| format!("SEEK_HOLE in {}", path.display()))?;
        out.push((start, end - start));
        pos = end;
    }
    Ok(out)
}
