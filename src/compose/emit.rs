//! Emit: writing the disk image, raw or qcow2, and opening one again for reading.
//!
//! Both formats are written through [`ImageWriter::write_at`]; nothing is ever written twice and
//! there is no whole-disk intermediate. A raw image is a sparse file of the disk's size: only the
//! ranges written (partition table, filesystem metadata, file data) take space, so holes stay
//! holes. A qcow2 image is created natively with imago (no `qemu-img convert`), allocating only the
//! clusters written. [`open`] reads either format back through [`ReadAt`] for verification.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use imago::file::File as ImagoFile;
use imago::qcow2::Qcow2;
use imago::{
    DenyImplicitOpenGate, FormatAccess, FormatCreateBuilder, FormatDriverBuilder, Storage,
};
use imago::{StorageCreateOptions, StorageOpenOptions};

use crate::compose::content::CHUNK;
use crate::compose::diskio::ReadAt;

/// Output image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Sparse raw disk image (dd / bmaptool).
    Raw,
    /// qcow2 (libvirt / kcli VMs).
    Qcow2,
}

impl Format {
    /// The format an output path's extension names (`.qcow2` → qcow2, otherwise raw).
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("qcow2") => Format::Qcow2,
            _ => Format::Raw,
        }
    }
    /// Name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// Writes byte ranges into a new disk image.
pub trait ImageWriter {
    /// Writes `data` at disk offset `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// Makes `[offset, offset + len)` read as zeros, allocated (not a hole) where the format
    /// would otherwise leave a flashed disk's old bytes there.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()>;
    /// Whether [`ImageWriter::copy_range`] copies inside the kernel (no pass through this
    /// process's memory). Callers stream the bytes through [`ImageWriter::write_at`] otherwise.
    fn copies_in_kernel(&self) -> bool {
        false
    }
    /// Copies `len` bytes of `src` from `src_offset` to disk offset `offset`.
    fn copy_range(&mut self, src: &File, src_offset: u64, offset: u64, len: u64) -> Result<()> {
        copy_through_memory(self, src, src_offset, offset, len)
    }
    /// Writes out everything the writer holds (a qcow2's tables) into the file. Making the file
    /// durable (`sync_all`) is the caller's step, so it can overlap with verification.
    fn finish(&mut self) -> Result<()>;
}

/// [`ImageWriter::copy_range`] by reading `src` into a buffer and writing it.
fn copy_through_memory<W: ImageWriter + ?Sized>(
    w: &mut W,
    src: &File,
    src_offset: u64,
    offset: u64,
    len: u64,
) -> Result<()> {
    let mut buf = vec![0u8; len.min(CHUNK as u64) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let at = src_offset + done;
        match src.read_exact_at(&mut buf[..n], at) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                bail!(
                    "the source ended before byte {} ({} expected)",
                    at + n as u64,
                    src_offset + len
                )
            }
            r => r.with_context(|| format!("reading {n} bytes at offset {at}"))?,
        }
        w.write_at(offset + done, &buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// A sparse raw image.
pub struct RawWriter {
    file: File,
    size: u64,
}

impl RawWriter {
    /// Creates (truncates) `path` as a sparse file of `size` bytes.
    pub fn create(path: &Path, size: u64) -> Result<RawWriter> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        file.set_len(size)
            .with_context(|| format!("sizing {} to {size} bytes", path.display()))?;
        Ok(RawWriter { file, size })
    }
}

impl RawWriter {
    fn check_within(&self, offset: u64, len: u64) -> Result<()> {
        if offset + len > self.size {
            bail!(
                "internal error: {len} bytes at {offset} beyond the disk end {}",
                self.size
            );
        }
        Ok(())
    }
}

impl ImageWriter for RawWriter {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_within(offset, data.len() as u64)?;
        self.file
            .write_all_at(data, offset)
            .with_context(|| format!("writing the image at offset {offset}"))?;
        crate::testhook::wrote(data.len() as u64);
        Ok(())
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        // Real zero bytes: a hole would not be written by bmaptool or `dd conv=sparse`.
        let zeros = vec![0u8; (len.min(4 << 20)) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(offset + done, &zeros[..n])?;
            done += n as u64;
        }
        Ok(())
    }
    fn copies_in_kernel(&self) -> bool {
        true
    }
    fn copy_range(&mut self, src: &File, src_offset: u64, offset: u64, len: u64) -> Result<()> {
        self.check_within(offset, len)?;
        // copy_file_range(2): the page cache copies the bytes, as `cp` does; in chunks, so that
        // progress (and the test pause hook) see them go by.
        let (mut from, mut to, end) = (src_offset, offset, src_offset + len);
        while from < end {
            let want = (end - from).min(CHUNK as u64) as usize;
            let n = match rustix::fs::copy_file_range(
                src,
                Some(&mut from),
                &self.file,
                Some(&mut to),
                want,
            ) {
                Ok(0) => bail!("the source ended at byte {from} ({end} expected)"),
                Ok(n) => n,
                // Filesystems or kernels that cannot: through this process's memory.
                Err(e)
                    if [
                        rustix::io::Errno::XDEV,
                        rustix::io::Errno::INVAL,
                        rustix::io::Errno::NOSYS,
                        rustix::io::Errno::OPNOTSUPP,
                    ]
                    .contains(&e) =>
                {
                    return copy_through_memory(self, src, from, to, end - from);
                }
                Err(e) => {
                    return Err(std::io::Error::from(e))
                        .with_context(|| format!("copying into the image at offset {to}"))
                }
            };
            crate::testhook::wrote(n as u64);
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        // Every write went straight to the file.
        Ok(())
    }
}

/// A qcow2 image written natively with imago.
pub struct Qcow2Writer {
    img: FormatAccess<ImagoFile>,
}

impl Qcow2Writer {
    /// Creates (truncates) `path` as an empty qcow2 image of virtual size `size`.
    pub fn create(path: &Path, size: u64) -> Result<Qcow2Writer> {
        let storage = ImagoFile::create_open(
            StorageCreateOptions::new()
                .filename(path)
                .size(0)
                .overwrite(true),
        )
        .with_context(|| format!("creating {}", path.display()))?;
        let q = Qcow2::<ImagoFile>::create_builder(storage)
            .size(size)
            .create_open(DenyImplicitOpenGate::default(), |s| {
                Ok(Qcow2::builder(s).write(true))
            })
            .with_context(|| format!("formatting {} as qcow2", path.display()))?;
        Ok(Qcow2Writer {
            img: FormatAccess::new(q),
        })
    }
}

impl ImageWriter for Qcow2Writer {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.img
            .write(data, offset)
            .with_context(|| format!("writing the qcow2 image at offset {offset}"))?;
        crate::testhook::wrote(data.len() as u64);
        Ok(())
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        // qcow2 zero clusters: read as zeros everywhere, take no space.
        self.img
            .write_zeroes(offset, len)
            .with_context(|| format!("zeroing the qcow2 image at offset {offset}"))
    }
    fn finish(&mut self) -> Result<()> {
        self.img.flush().context("flushing the qcow2 image")
    }
}

/// Creates a writer for `format` at `path`.
pub fn create(path: &Path, format: Format, size: u64) -> Result<Box<dyn ImageWriter>> {
    Ok(match format {
        Format::Raw => Box::new(RawWriter::create(path, size)?),
        Format::Qcow2 => Box::new(Qcow2Writer::create(path, size)?),
    })
}

/// A qcow2 image opened read-only.
pub struct Qcow2Reader {
    img: FormatAccess<ImagoFile>,
}

impl ReadAt for Qcow2Reader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset + buf.len() as u64 > self.img.size() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read beyond the end of the qcow2 image",
            ));
        }
        self.img.read(buf, offset)
    }
    fn size(&self) -> u64 {
        self.img.size()
    }
}

/// Opens a raw or qcow2 image (told apart by the qcow2 magic) for reading.
pub fn open(path: &Path) -> Result<(Format, Box<dyn ReadAt>)> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 4];
    let is_qcow2 = f.read_exact_at(&mut magic, 0).is_ok() && magic == *b"QFI\xfb";
    if !is_qcow2 {
        return Ok((Format::Raw, Box::new(f)));
    }
    drop(f);
    let storage = ImagoFile::open(StorageOpenOptions::new().filename(path).write(false))
        .with_context(|| format!("opening {}", path.display()))?;
    let q = Qcow2::<ImagoFile>::builder(storage)
        .write(false)
        .open(DenyImplicitOpenGate::default())
        .with_context(|| format!("opening {} as qcow2", path.display()))?;
    Ok((
        Format::Qcow2,
        Box::new(Qcow2Reader {
            img: FormatAccess::new(q),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// copy_range gives the same bytes as write_at, within one filesystem (copy_file_range) and
    /// across filesystems (a tmpfs source: the kernel may refuse, the copy goes through memory).
    #[test]
    fn raw_copy_range_copies_within_and_across_filesystems() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12_345)).map(|i| (i % 253) as u8).collect();
        let out = tempfile::tempdir().unwrap();
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        for src_dir in [out.path(), shm.path()] {
            let src = src_dir.join("src");
            std::fs::write(&src, &data).unwrap();
            let img = out.path().join("img.raw");
            let size = 2 * data.len() as u64;
            let mut w = RawWriter::create(&img, size).unwrap();
            assert!(w.copies_in_kernel());
            let f = File::open(&src).unwrap();
            w.copy_range(&f, 100, 4096, data.len() as u64 - 100)
                .unwrap();
            assert!(
                w.copy_range(&f, 0, size - 10, 11).is_err(),
                "past the disk end"
            );
            w.finish().unwrap();
            let got = std::fs::read(&img).unwrap();
            assert_eq!(got[4096..4096 + data.len() - 100], data[100..]);
            assert!(got[..4096].iter().all(|&b| b == 0));
            // A source shorter than asked for is an error, not zeros.
            let mut w = RawWriter::create(&img, size).unwrap();
            let e = w.copy_range(&f, 10, 0, data.len() as u64).unwrap_err();
            assert!(format!("{e:#}").contains("ended"), "{e:#}");
        }
    }
}
