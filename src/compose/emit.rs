//! Emit: writing the disk image, raw or qcow2, and opening one again for reading.
//!
//! Both formats are written through [`ImageWriter::write_at`]; nothing is ever written twice and
//! there is no whole-disk intermediate. A raw image is a sparse file of the disk's size: only the
//! ranges written (partition table, filesystem metadata, file data) take space, so holes stay
//! holes. Its large aligned writes ([`ImageWriter::write_aligned`]) go around the page cache
//! (`O_DIRECT`) where the filesystem allows it: the bytes go from the writer's buffer to the
//! disk, with no copy into the page cache and no writeback afterwards. A qcow2 image is created natively with imago (no `qemu-img convert`), allocating only the
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
    /// Writes the first `len` bytes of `buf` at `offset`; the rest of `buf` (less than
    /// [`DIRECT_ALIGN`] bytes, all zeros) may be written too, where the caller owns them (the
    /// unused end of a file's last block), so that an aligned buffer is written whole.
    fn write_aligned(&mut self, offset: u64, buf: &[u8], len: usize) -> Result<()> {
        self.write_at(offset, &buf[..len])
    }
    /// Makes `[offset, offset + len)` read as zeros, allocated (not a hole) where the format
    /// would otherwise leave a flashed disk's old bytes there.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()>;
    /// Writes out everything the writer holds (a qcow2's tables) into the file. Making the file
    /// durable (`sync_all`) is the caller's step, so it can overlap with verification.
    fn finish(&mut self) -> Result<()>;
    /// A second writer of the same image for writing in parallel (each write lands where it
    /// says, whatever the order), when the format allows it.
    fn another(&self) -> Result<Option<Box<dyn ImageWriter + Send>>> {
        Ok(None)
    }
}

/// Alignment of memory, offsets and lengths for writes around the page cache.
pub const DIRECT_ALIGN: usize = 4096;

/// A sparse raw image.
pub struct RawWriter {
    file: File,
    /// The same file opened with `O_DIRECT`, while the filesystem accepts it.
    direct: Option<File>,
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
        // Filesystems without O_DIRECT (tmpfs) refuse the open: every write is buffered then.
        let direct = rustix::fs::open(
            path,
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()
        .map(File::from);
        Ok(RawWriter { file, direct, size })
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
        crate::testhook::wrote(crate::testhook::Target::Image, data.len() as u64);
        Ok(())
    }
    fn write_aligned(&mut self, offset: u64, buf: &[u8], len: usize) -> Result<()> {
        let aligned = offset.is_multiple_of(DIRECT_ALIGN as u64)
            && (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
            && buf.len().is_multiple_of(DIRECT_ALIGN)
            && buf.len() >= len
            && buf.len() - len < DIRECT_ALIGN;
        if let (true, Some(d)) = (aligned, &self.direct) {
            self.check_within(offset, buf.len() as u64)?;
            match d.write_all_at(buf, offset) {
                Ok(()) => {
                    crate::testhook::wrote(crate::testhook::Target::Image, len as u64);
                    return Ok(());
                }
                // A filesystem that opens with O_DIRECT but refuses these writes: buffered
                // from now on.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    self.direct = None;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("writing the image at offset {offset}"))
                }
            }
        }
        self.write_at(offset, &buf[..len])
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        // Real zero bytes: a hole would not be written by bmaptool or `dd conv=sparse`.
        let chunk = (len.min(4 << 20) as usize).next_multiple_of(DIRECT_ALIGN);
        let buf = vec![0u8; chunk + DIRECT_ALIGN];
        let at = buf.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        let zeros = &buf[at..at + chunk];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            let whole = n.next_multiple_of(DIRECT_ALIGN).min(zeros.len());
            if whole == n {
                self.write_aligned(offset + done, &zeros[..n], n)?;
            } else {
                self.write_at(offset + done, &zeros[..n])?;
            }
            done += n as u64;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        // Every write went straight to the file.
        Ok(())
    }
    fn another(&self) -> Result<Option<Box<dyn ImageWriter + Send>>> {
        let clone = |f: &File| f.try_clone().context("duplicating the image's file handle");
        Ok(Some(Box::new(RawWriter {
            file: clone(&self.file)?,
            direct: self.direct.as_ref().map(clone).transpose()?,
            size: self.size,
        })))
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
        crate::testhook::wrote(crate::testhook::Target::Image, data.len() as u64);
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
