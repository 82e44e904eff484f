//! Inodes: the v3 inode core (type, mode, owner, size, flags, extent count) and the bounds of its
//! data fork.
//!
//! Each inode is checked before use: magic, version 3, CRC32C, its own inode number and the
//! filesystem UUID, and a data fork that fits the literal area. What the data fork maps is read by
//! the structure that owns it: [`super::bmap`] for extents, [`super::dir`], [`super::symlink`] and
//! [`super::file`] for what the mapped blocks hold.

use anyhow::{ensure, Context, Result};

use super::bmap::Extent;
use super::bytes::{array_at, be16, be32, be64, check_crc, field, u8_at};
use super::sb::INCOMPAT_NREXT64;
use super::{CrcRegion, Xfs};
use crate::compose::diskio::ReadAt;

/// Offset of `di_crc` inside a v3 inode.
pub const INODE_CRC_OFFSET: usize = 100;
/// Offset of `di_mode` (big-endian u16) inside an inode.
pub const DI_MODE_OFFSET: usize = 2;
/// Offset of `di_uid` (big-endian u32) inside an inode.
pub const DI_UID_OFFSET: usize = 8;
/// Offset of `di_gid` (big-endian u32) inside an inode.
pub const DI_GID_OFFSET: usize = 12;
/// Offset of `di_size` (big-endian u64) inside an inode.
pub const DI_SIZE_OFFSET: usize = 56;
/// Offset of `di_flags` (big-endian u16) inside an inode.
pub const DI_FLAGS_OFFSET: usize = 90;
/// Offset of the data fork (the literal area) inside a v3 inode.
pub const DI_DATA_FORK_OFFSET: usize = 176;
/// `di_flags` bit: the file has preallocated space beyond its size (set on reserved files).
pub const DIFLAG_PREALLOC: u16 = 1 << 1;
/// `di_flags` bit: the file's data lives on the realtime device.
pub(crate) const DIFLAG_REALTIME: u16 = 1 << 0;

const INODE_MAGIC: u16 = 0x494e; // "IN"

/// Data fork formats (`di_format`).
pub(crate) const FMT_DEV: u8 = 0;
pub(crate) const FMT_LOCAL: u8 = 1;
pub(crate) const FMT_EXTENTS: u8 = 2;
pub(crate) const FMT_BTREE: u8 = 3;

/// File type bits of `di_mode`.
const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;
const S_IFCHR: u16 = 0o020000;
const S_IFBLK: u16 = 0o060000;
pub(crate) const S_IFIFO: u16 = 0o010000;
const S_IFSOCK: u16 = 0o140000;

/// Offset of `di_mtime` inside an inode.
pub const DI_MTIME_OFFSET: usize = 40;
/// `di_flags2` bit: timestamps are nanoseconds since 1901 (BIGTIME).
pub const DIFLAG2_BIGTIME: u64 = 1 << 3;
/// `di_flags2` bit: the inode has 64-bit extent counters (NREXT64).
pub(crate) const DIFLAG2_NREXT64: u64 = 1 << 4;
/// Largest byte offset a file may reach (XFS_MAXIOFFSET).
pub(crate) const MAX_FILE_BYTES: u64 = i64::MAX as u64;

/// The type of an inode, from the `S_IFMT` bits of its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else (device, FIFO, socket); carries the `S_IFMT` bits.
    Other(u16),
}

impl FileKind {
    fn from_mode(mode: u16) -> FileKind {
        match mode & S_IFMT {
            S_IFREG => FileKind::File,
            S_IFDIR => FileKind::Dir,
            S_IFLNK => FileKind::Symlink,
            other => FileKind::Other(other),
        }
    }

    /// The directory-entry file type code (`XFS_DIR3_FT_*`) for this kind, 0 if unknown.
    pub(crate) fn dir_ftype(self) -> u8 {
        match self {
            FileKind::File => 1,
            FileKind::Dir => 2,
            FileKind::Symlink => 7,
            FileKind::Other(S_IFCHR) => 3,
            FileKind::Other(S_IFBLK) => 4,
            FileKind::Other(S_IFIFO) => 5,
            FileKind::Other(S_IFSOCK) => 6,
            FileKind::Other(_) => 0,
        }
    }
}

/// Decoded inode core and data fork mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeInfo {
    /// Inode number.
    pub ino: u64,
    /// Device byte offset of the inode (its CRC is at `byte_offset + INODE_CRC_OFFSET`).
    pub byte_offset: u64,
    /// File type.
    pub kind: FileKind,
    /// Full `di_mode` (type and permission bits).
    pub mode: u16,
    /// Owner user ID.
    pub uid: u32,
    /// Owner group ID.
    pub gid: u32,
    /// `di_size` in bytes (0 for files reserved by mkfs).
    pub size: u64,
    /// Blocks used by the data and attribute forks, including bmap btree blocks.
    pub nblocks: u64,
    /// `di_flags` (see [`DIFLAG_PREALLOC`]).
    pub flags: u16,
    /// `di_flags2`.
    pub flags2: u64,
    /// Link count.
    pub nlink: u32,
    /// Data fork format: 0 device, 1 local (inline), 2 extents, 3 btree.
    pub format: u8,
    /// Number of data fork extents recorded in the inode.
    pub nextents: u64,
    /// Byte offset of the attribute fork inside the inode's literal area, 0 if none.
    pub attr_fork_offset: u32,
    /// Data fork mapping ordered by `file_block`; empty for local and device formats.
    pub extents: Vec<Extent>,
    /// Modification time: seconds since the epoch and nanoseconds.
    pub mtime: (i64, u32),
    /// Device number (major, minor) of a device-format inode (devices, FIFOs, sockets).
    pub rdev: Option<(u32, u32)>,
    /// For btree-format data forks, device byte offsets of every bmap btree leaf block in key
    /// order (records start at byte 72 of each block, numrecs at bytes 6..8, CRC at byte 64).
    pub bmbt_leaves: Vec<u64>,
}

/// The checksummed region of the inode at `byte_offset`, given the filesystem's inode size.
pub(crate) fn inode_region(byte_offset: u64, inode_size: u32) -> CrcRegion {
    CrcRegion {
        start: byte_offset,
        len: u64::from(inode_size),
        crc_offset: byte_offset + INODE_CRC_OFFSET as u64,
    }
}

/// Inode core fields and raw bytes, CRC-checked.
pub(crate) struct RawInode {
    pub(crate) ino: u64,
    pub(crate) byte: u64,
    buf: Vec<u8>,
    pub(crate) mode: u16,
    pub(crate) format: u8,
    pub(crate) size: u64,
    nblocks: u64,
    pub(crate) nextents: u64,
    pub(crate) flags: u16,
    flags2: u64,
    nlink: u32,
    uid: u32,
    gid: u32,
    /// Size of the data fork area in bytes.
    dfork_size: usize,
    attr_fork_offset: u32,
    /// Attribute fork format (`di_aformat`).
    pub(crate) aformat: u8,
    /// Attribute fork extent count.
    pub(crate) anextents: u64,
}

impl RawInode {
    pub(crate) fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode)
    }

    pub(crate) fn data_fork(&self) -> Result<&[u8]> {
        field(&self.buf, DI_DATA_FORK_OFFSET, self.dfork_size)
    }

    /// The attribute fork area, `None` when the inode has none (`di_forkoff` 0).
    pub(crate) fn attr_fork(&self) -> Result<Option<&[u8]>> {
        if self.attr_fork_offset == 0 {
            return Ok(None);
        }
        let at = DI_DATA_FORK_OFFSET + self.attr_fork_offset as usize;
        field(&self.buf, at, self.buf.len().saturating_sub(at)).map(Some)
    }

    /// Modification time, decoded for bigtime inodes or not.
    pub(crate) fn mtime(&self) -> Result<(i64, u32)> {
        if self.flags2 & DIFLAG2_BIGTIME != 0 {
            let ns = be64(&self.buf, DI_MTIME_OFFSET)?;
            let secs = (ns / 1_000_000_000) as i64 - (1i64 << 31);
            Ok((secs, (ns % 1_000_000_000) as u32))
        } else {
            let secs = be32(&self.buf, DI_MTIME_OFFSET)? as i32;
            let nanos = be32(&self.buf, DI_MTIME_OFFSET + 4)?;
            ensure!(
                nanos < 1_000_000_000,
                "mtime nanoseconds {nanos} out of range"
            );
            Ok((i64::from(secs), nanos))
        }
    }

    /// The device number of a device-format inode.
    pub(crate) fn rdev(&self) -> Result<Option<(u32, u32)>> {
        if self.format != FMT_DEV {
            return Ok(None);
        }
        let v = be32(self.data_fork()?, 0)?;
        Ok(Some(((v >> 18) & 0x1ff, v & 0x3ffff)))
    }
}

impl<R: ReadAt> Xfs<R> {
    /// Reads inode `ino` and checks it: magic, version, CRC, its own number, the filesystem UUID,
    /// the size and the fork bounds.
    pub(crate) fn raw_inode(&self, ino: u64) -> Result<RawInode> {
        let byte = self.sb.check_ino(ino)?;
        let isize = self.sb.inode_size as usize;
        let buf = self
            .read(byte, isize)
            .with_context(|| format!("reading inode {ino}"))?;
        self.parse_inode(ino, byte, buf)
            .with_context(|| format!("inode {ino} at byte {byte}"))
    }

    fn parse_inode(&self, ino: u64, byte: u64, buf: Vec<u8>) -> Result<RawInode> {
        let magic = be16(&buf, 0)?;
        ensure!(
            magic == INODE_MAGIC,
            "bad inode magic {magic:#06x} (expected IN {INODE_MAGIC:#06x})"
        );
        let version = u8_at(&buf, 4)?;
        ensure!(version == 3, "inode version {version} on a v5 filesystem");
        check_crc(&buf, INODE_CRC_OFFSET).context("inode checksum")?;
        let stored_ino = be64(&buf, 152)?;
        ensure!(
            stored_ino == ino,
            "inode header says it is inode {stored_ino}"
        );
        let uuid: [u8; 16] = array_at(&buf, 160)?;
        ensure!(
            uuid == self.sb.meta_uuid,
            "inode carries a different filesystem UUID"
        );
        let mode = be16(&buf, 2)?;
        ensure!(mode != 0, "inode is not in use (mode 0)");
        let format = u8_at(&buf, 5)?;
        let flags2 = be64(&buf, 120)?;
        let (nextents, anextents) = if flags2 & DIFLAG2_NREXT64 != 0 {
            ensure!(
                self.sb.features_incompat & INCOMPAT_NREXT64 != 0,
                "inode uses 64-bit extent counters but the filesystem lacks NREXT64"
            );
            (be64(&buf, 24)?, u64::from(be32(&buf, 76)?))
        } else {
            (u64::from(be32(&buf, 76)?), u64::from(be16(&buf, 80)?))
        };
        let size = be64(&buf, 56)?;
        ensure!(size <= MAX_FILE_BYTES, "size {size} is out of range");
        let literal = buf.len() - DI_DATA_FORK_OFFSET;
        let forkoff = usize::from(u8_at(&buf, 82)?) * 8;
        ensure!(
            forkoff < literal,
            "attribute fork offset {forkoff} is outside the {literal}-byte literal area"
        );
        let dfork_size = if forkoff == 0 { literal } else { forkoff };
        Ok(RawInode {
            ino,
            byte,
            mode,
            format,
            size,
            nblocks: be64(&buf, 64)?,
            nextents,
            flags: be16(&buf, 90)?,
            flags2,
            nlink: be32(&buf, 16)?,
            uid: be32(&buf, 8)?,
            gid: be32(&buf, 12)?,
            dfork_size,
            attr_fork_offset: forkoff as u32,
            aformat: u8_at(&buf, 83)?,
            anextents,
            buf,
        })
    }

    /// Reads inode `ino` and flattens its data fork mapping (walking the bmap btree, of any
    /// depth, for btree-format forks).
    pub fn inode(&self, ino: u64) -> Result<InodeInfo> {
        let raw = self.raw_inode(ino)?;
        let map = self.fork_map(&raw)?;
        Ok(InodeInfo {
            ino,
            byte_offset: raw.byte,
            kind: raw.kind(),
            mode: raw.mode,
            uid: raw.uid,
            gid: raw.gid,
            size: raw.size,
            nblocks: raw.nblocks,
            flags: raw.flags,
            flags2: raw.flags2,
            nlink: raw.nlink,
            format: raw.format,
            nextents: raw.nextents,
            attr_fork_offset: raw.attr_fork_offset,
            extents: map.extents(),
            bmbt_leaves: map.leaves,
            mtime: raw.mtime()?,
            rdev: raw.rdev()?,
        })
    }

    /// The checksummed region of inode `ino` (validating the inode number only).
    #[cfg(test)]
    pub(crate) fn inode_region(&self, ino: u64) -> Result<CrcRegion> {
        let byte = self.sb.check_ino(ino)?;
        Ok(inode_region(byte, self.sb.inode_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::xfs::ondisk::test_support::*;

    #[test]
    fn reads_inode_numbers_above_32_bits() {
        // AGs of 2^28 - 1 blocks make the AG number start at bit 31 of inode numbers, and mkfs
        // spreads new directories over the AGs, so the root (shortform) directory needs 8-byte
        // inode numbers.
        let img = Image::new();
        let content = Rng(99).bytes(7000);
        let src = img.source("c.src", &content);
        let mut proto = String::from("prestage\n0 0\nd--755 0 0\n");
        for d in ["a", "b", "c"] {
            proto += &format!("{d} d--755 0 0\nfile ---644 0 0 {src}\nres r--644 0 0 5000\n$\n");
        }
        proto += "top r--644 0 0 100\n$\n";
        img.mkfs(
            &proto,
            3 << 40,
            &["-d", "agsize=268435455b", "-l", "size=64m"],
        );
        let fs = img.open();
        let dev = img.file();
        let root = fs.sb().root_ino;
        let fields = img.db_fields(&[&format!("inode {root}"), "print"]);
        assert_eq!(fields["u3.sfdir3.hdr.i8count"], "1");
        check_dir(&fs, &dev, root, &["a", "b", "c", "top"].map(String::from));
        let walk = fs.walk().unwrap();
        assert_eq!(walk.len(), 4 + 3 * 2);
        assert!(walk.iter().any(|w| w.ino > u64::from(u32::MAX)));
        for w in &walk {
            let out = img.db(&[&format!("convert inode {} byte", w.ino)]);
            assert!(
                out.contains(&format!("({})", fs.sb().ino_to_byte(w.ino))),
                "{out}"
            );
            match w.kind {
                FileKind::File if w.path.ends_with(b"/file") => {
                    assert_eq!(collect_file(&fs, w.ino), content);
                }
                FileKind::File => {
                    let info = fs.inode(w.ino).unwrap();
                    assert_eq!(info.extents, img.db_bmap(w.ino));
                }
                _ => {}
            }
        }
    }
}
