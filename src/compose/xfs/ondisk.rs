//! Read-only access to the on-disk structures of an XFS v5 filesystem, plus the few helpers needed
//! to patch metadata in place.
//!
//! prestage builds the XFS data partition with `mkfs.xfs -p PROTOFILE` and then has to look inside
//! the result without mounting it (offline, without root): list the tree, find where reserved
//! files' extents live, read small files back, and locate the bytes of names, symlink targets and
//! extent records so they can be rewritten in place. This module reads exactly the subset of the
//! format that this needs:
//!
//! * the primary superblock (v5 only; unknown incompatible features are refused),
//! * inodes (v3 inode core, data fork in `local`, `extents` or `btree` format; the attribute fork
//!   is skipped),
//! * bmap btrees of any depth (long-format `BMA3` blocks),
//! * directories in all four v3 forms: shortform (inline in the inode), single block (`XDB3`),
//!   leaf and node (data blocks `XDD3` below the 32 GiB leaf offset; the hash index above it is
//!   not needed to list a directory and is not read), including directory blocks larger than the
//!   filesystem block,
//! * symbolic links, inline or in remote `XSLM` blocks,
//! * regular file contents, where holes and unwritten extents read as zeros.
//!
//! Every metadata block is checked before use: magic number, CRC32C, and where the format records
//! them the block's own address, owner inode and filesystem UUID. All on-disk values are treated
//! as untrusted: parsing never indexes out of bounds, loops are bounded and tree walks detect
//! cycles, so a corrupt image produces an error naming the structure and its location instead of
//! a panic or a hang. Only the data device is read; realtime file contents and external logs are
//! out of scope.
//!
//! All multi-byte on-disk integers are big-endian except the CRC fields, which are little-endian
//! CRC32C values computed over the structure with the CRC field itself zeroed ([`update_crc`],
//! [`crc_ok`]).

use std::collections::HashSet;

use anyhow::{anyhow, bail, ensure, Context, Result};

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
pub const DIFLAG_REALTIME: u16 = 1 << 0;
/// Offset of the CRC inside a long-format (bmap) btree block.
pub const BMBT_CRC_OFFSET: usize = 64;
/// Offset of the first record (or key) inside a long-format (bmap) btree block.
pub const BMBT_HEADER_LEN: usize = 72;
/// Offset of the CRC inside a v3 directory data block.
pub const DIR_DATA_CRC_OFFSET: usize = 4;
/// Offset of the CRC inside the superblock sector.
pub const SB_CRC_OFFSET: usize = 224;
/// Size of one extent record (`xfs_bmbt_rec`) in bytes.
pub const EXTENT_RECORD_LEN: usize = 16;

const SB_MAGIC: u32 = 0x5846_5342; // "XFSB"
const SB_LEN: usize = 264;
const INODE_MAGIC: u16 = 0x494e; // "IN"
const BMAP_MAGIC: u32 = 0x424d_4133; // "BMA3"
const DIR3_BLOCK_MAGIC: u32 = 0x5844_4233; // "XDB3"
const DIR3_DATA_MAGIC: u32 = 0x5844_4433; // "XDD3"
const DIR3_DATA_HEADER_LEN: usize = 64;
const DIR_BLOCK_TAIL_LEN: usize = 8;
const DIR_LEAF_ENTRY_LEN: usize = 8;
const DIR_FREE_TAG: u16 = 0xffff;
const SYMLINK_MAGIC: u32 = 0x5853_4c4d; // "XSLM"
const SYMLINK_HEADER_LEN: usize = 56;
const SYMLINK_CRC_OFFSET: usize = 12;
/// Longest symlink target XFS accepts (MAXPATHLEN less the terminating NUL).
const SYMLINK_MAX_LEN: u64 = 1023;

/// Byte offset in a directory's address space where the hash index (leaf) blocks start.
pub const DIR_LEAF_OFFSET: u64 = 32 << 30;

const FMT_DEV: u8 = 0;
const FMT_LOCAL: u8 = 1;
const FMT_EXTENTS: u8 = 2;
const FMT_BTREE: u8 = 3;

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;
const S_IFCHR: u16 = 0o020000;
const S_IFBLK: u16 = 0o060000;
const S_IFIFO: u16 = 0o010000;
const S_IFSOCK: u16 = 0o140000;

const DIFLAG2_NREXT64: u64 = 1 << 4;

const INCOMPAT_FTYPE: u32 = 1 << 0;
const INCOMPAT_SPINODES: u32 = 1 << 1;
const INCOMPAT_META_UUID: u32 = 1 << 2;
const INCOMPAT_BIGTIME: u32 = 1 << 3;
const INCOMPAT_NEEDSREPAIR: u32 = 1 << 4;
const INCOMPAT_NREXT64: u32 = 1 << 5;
const INCOMPAT_EXCHRANGE: u32 = 1 << 6;
const INCOMPAT_PARENT: u32 = 1 << 7;
/// Incompatible features that do not change anything this reader looks at, or that it handles.
const INCOMPAT_READABLE: u32 = INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NREXT64
    | INCOMPAT_EXCHRANGE
    | INCOMPAT_PARENT;

/// Deepest bmap btree accepted (real trees need far fewer levels).
const MAX_BMBT_LEVELS: u16 = 16;
/// Deepest directory nesting [`Xfs::walk`] follows.
const MAX_WALK_DEPTH: usize = 2048;
/// Largest chunk [`Xfs::read_file`] hands to its sink.
const READ_CHUNK: usize = 1 << 20;
/// Largest byte offset a file may reach (XFS_MAXIOFFSET).
const MAX_FILE_BYTES: u64 = i64::MAX as u64;

// ---------------------------------------------------------------------------------------------
// Checked access to untrusted buffers

fn field(buf: &[u8], off: usize, len: usize) -> Result<&[u8]> {
    off.checked_add(len)
        .and_then(|end| buf.get(off..end))
        .ok_or_else(|| {
            anyhow!(
                "{len}-byte field at offset {off} lies outside the {}-byte structure",
                buf.len()
            )
        })
}

fn u8_at(buf: &[u8], off: usize) -> Result<u8> {
    buf.get(off)
        .copied()
        .ok_or_else(|| anyhow!("byte {off} lies outside the {}-byte structure", buf.len()))
}

fn array_at<const N: usize>(buf: &[u8], off: usize) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    out.copy_from_slice(field(buf, off, N)?);
    Ok(out)
}

fn be16(buf: &[u8], off: usize) -> Result<u16> {
    Ok(u16::from_be_bytes(array_at(buf, off)?))
}

fn be32(buf: &[u8], off: usize) -> Result<u32> {
    Ok(u32::from_be_bytes(array_at(buf, off)?))
}

fn be64(buf: &[u8], off: usize) -> Result<u64> {
    Ok(u64::from_be_bytes(array_at(buf, off)?))
}

fn le32(buf: &[u8], off: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(array_at(buf, off)?))
}

fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| anyhow!("{what} {v} does not fit in memory"))
}

// ---------------------------------------------------------------------------------------------
// Checksums and hashes

fn compute_crc(buf: &[u8], crc_offset: usize) -> Option<u32> {
    let end = crc_offset.checked_add(4)?;
    let head = buf.get(..crc_offset)?;
    let tail = buf.get(end..)?;
    let crc = crc32c::crc32c(head);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4]);
    Some(crc32c::crc32c_append(crc, tail))
}

/// Computes the XFS checksum of `buf` (CRC32C over the whole buffer with the 4-byte CRC field at
/// `crc_offset` taken as zero) and stores it little-endian at `crc_offset`, as XFS does when it
/// writes a metadata block or an inode.
///
/// # Panics
///
/// Panics if `crc_offset + 4 > buf.len()`; the offset is chosen by the caller, not read from disk.
pub fn update_crc(buf: &mut [u8], crc_offset: usize) {
    let crc = compute_crc(buf, crc_offset).unwrap_or_else(|| {
        panic!(
            "CRC field at offset {crc_offset} lies outside the {}-byte buffer",
            buf.len()
        )
    });
    buf[crc_offset..crc_offset + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Whether the XFS checksum stored at `crc_offset` matches the contents of `buf`. False when the
/// CRC field does not fit in `buf`.
pub fn crc_ok(buf: &[u8], crc_offset: usize) -> bool {
    match (compute_crc(buf, crc_offset), le32(buf, crc_offset)) {
        (Some(computed), Ok(stored)) => computed == stored,
        _ => false,
    }
}

fn check_crc(buf: &[u8], crc_offset: usize) -> Result<()> {
    let stored = le32(buf, crc_offset).context("reading the stored CRC")?;
    let computed = compute_crc(buf, crc_offset)
        .ok_or_else(|| anyhow!("CRC field at offset {crc_offset} outside the structure"))?;
    ensure!(
        stored == computed,
        "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
    );
    Ok(())
}

/// The XFS directory name hash (`xfs_da_hashname`), stored in directory hash indexes.
pub fn da_hashname(name: &[u8]) -> u32 {
    let mut hash: u32 = 0;
    let mut groups = name.chunks_exact(4);
    for g in groups.by_ref() {
        hash = (u32::from(g[0]) << 21)
            ^ (u32::from(g[1]) << 14)
            ^ (u32::from(g[2]) << 7)
            ^ u32::from(g[3])
            ^ hash.rotate_left(7 * 4);
    }
    match *groups.remainder() {
        [a, b, c] => {
            (u32::from(a) << 14) ^ (u32::from(b) << 7) ^ u32::from(c) ^ hash.rotate_left(7 * 3)
        }
        [a, b] => (u32::from(a) << 7) ^ u32::from(b) ^ hash.rotate_left(7 * 2),
        [a] => u32::from(a) ^ hash.rotate_left(7),
        _ => hash,
    }
}

// ---------------------------------------------------------------------------------------------
// Public types

/// The fields of the primary superblock this reader uses, validated by [`Xfs::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Filesystem block size in bytes (`sb_blocksize`).
    pub block_size: u32,
    /// Sector size in bytes; the superblock CRC covers one sector.
    pub sect_size: u32,
    /// Blocks per allocation group (the last AG may be shorter).
    pub ag_blocks: u32,
    /// Number of allocation groups.
    pub ag_count: u32,
    /// Size of the data device in filesystem blocks (`sb_dblocks`).
    pub data_blocks: u64,
    /// Free data blocks (`sb_fdblocks`).
    pub free_blocks: u64,
    /// Allocated inodes (`sb_icount`).
    pub icount: u64,
    /// Free inodes among the allocated ones (`sb_ifree`).
    pub ifree: u64,
    /// Inode size in bytes.
    pub inode_size: u32,
    /// Inode number of the root directory.
    pub root_ino: u64,
    /// First block of the internal log (0 when the log is external).
    pub log_start_fsb: u64,
    /// Length of the log in filesystem blocks.
    pub log_blocks: u32,
    /// Directory block size in bytes (`block_size << dirblklog`).
    pub dir_block_size: u32,
    /// Filesystem UUID (`sb_uuid`).
    pub uuid: [u8; 16],
    /// UUID stamped into metadata headers: `sb_meta_uuid` with the META_UUID feature, else `uuid`.
    pub meta_uuid: [u8; 16],
    /// Filesystem label, without the trailing NUL padding.
    pub label: Vec<u8>,
    /// log2 of `block_size`.
    pub blocklog: u8,
    /// log2 of `inode_size`.
    pub inodelog: u8,
    /// log2 of inodes per block.
    pub inopblog: u8,
    /// Bits of the AG block number in a filesystem block number (log2 of `ag_blocks`, rounded up).
    pub agblklog: u8,
    /// log2 of filesystem blocks per directory block.
    pub dirblklog: u8,
    /// Size of the realtime device in blocks (not read by this module).
    pub rt_blocks: u64,
    /// `sb_features_compat`.
    pub features_compat: u32,
    /// `sb_features_ro_compat`.
    pub features_ro_compat: u32,
    /// `sb_features_incompat`.
    pub features_incompat: u32,
    /// `sb_features_log_incompat`.
    pub features_log_incompat: u32,
    /// Directory entries carry a file type byte (incompat FTYPE).
    pub has_ftype: bool,
}

impl Superblock {
    fn parse(buf: &[u8]) -> Result<Superblock> {
        ensure!(buf.len() >= SB_LEN, "superblock buffer too short");
        let magic = be32(buf, 0)?;
        ensure!(
            magic == SB_MAGIC,
            "bad superblock magic {magic:#010x} (expected XFSB {SB_MAGIC:#010x}): not an XFS filesystem"
        );
        let versionnum = be16(buf, 100)?;
        let version = versionnum & 0xf;
        ensure!(
            version == 5,
            "XFS superblock version {version} is not supported: only v5 (crc=1) filesystems can be read"
        );
        let block_size = be32(buf, 4)?;
        let blocklog = u8_at(buf, 120)?;
        ensure!(
            (9..=16).contains(&blocklog) && block_size == 1 << blocklog,
            "invalid block size {block_size} (blocklog {blocklog})"
        );
        let sect_size = u32::from(be16(buf, 102)?);
        let sectlog = u8_at(buf, 121)?;
        ensure!(
            (9..=15).contains(&sectlog) && sect_size == 1 << sectlog && sect_size <= block_size,
            "invalid sector size {sect_size} (sectlog {sectlog})"
        );
        ensure!(
            sect_size as usize <= buf.len(),
            "superblock buffer shorter than a sector"
        );
        check_crc(field(buf, 0, sect_size as usize)?, SB_CRC_OFFSET)
            .context("superblock checksum")?;

        let incompat = be32(buf, 216)?;
        ensure!(
            incompat & INCOMPAT_NEEDSREPAIR == 0,
            "the filesystem is marked as needing xfs_repair (incompat NEEDSREPAIR)"
        );
        let unknown = incompat & !INCOMPAT_READABLE;
        ensure!(
            unknown == 0,
            "unsupported incompatible XFS features {unknown:#x} (features_incompat {incompat:#x})"
        );
        ensure!(
            u8_at(buf, 126)? == 0,
            "the superblock says mkfs did not finish (sb_inprogress set)"
        );

        let inode_size = u32::from(be16(buf, 104)?);
        let inodelog = u8_at(buf, 122)?;
        ensure!(
            (9..=11).contains(&inodelog) && inode_size == 1 << inodelog,
            "invalid v5 inode size {inode_size} (inodelog {inodelog})"
        );
        ensure!(inode_size <= block_size, "inode size exceeds block size");
        let inopblock = u32::from(be16(buf, 106)?);
        let inopblog = u8_at(buf, 123)?;
        ensure!(
            u32::from(inopblog) == u32::from(blocklog) - u32::from(inodelog)
                && inopblock == block_size / inode_size,
            "inconsistent inodes-per-block {inopblock} (inopblog {inopblog})"
        );

        let ag_blocks = be32(buf, 84)?;
        let ag_count = be32(buf, 88)?;
        let agblklog = u8_at(buf, 124)?;
        ensure!(ag_blocks >= 64, "invalid AG size {ag_blocks} blocks");
        ensure!(ag_count >= 1, "invalid AG count {ag_count}");
        let want_agblklog = 32 - (ag_blocks - 1).leading_zeros();
        ensure!(
            u32::from(agblklog) == want_agblklog,
            "agblklog {agblklog} does not match AG size {ag_blocks}"
        );
        ensure!(
            u32::from(agblklog) + u32::from(inopblog) < 48,
            "AG geometry leaves no room for inode numbers"
        );
        let data_blocks = be64(buf, 8)?;
        let full = u64::from(ag_count) * u64::from(ag_blocks);
        ensure!(
            data_blocks <= full && data_blocks > full - u64::from(ag_blocks),
            "data size {data_blocks} blocks inconsistent with {ag_count} AGs of {ag_blocks} blocks"
        );
        ensure!(
            data_blocks.checked_mul(u64::from(block_size)).is_some(),
            "data size {data_blocks} blocks overflows"
        );

        let dirblklog = u8_at(buf, 192)?;
        ensure!(
            u32::from(blocklog) + u32::from(dirblklog) <= 16,
            "directory block size 2^({blocklog}+{dirblklog}) exceeds 64 KiB"
        );
        let dir_block_size = block_size << dirblklog;

        let log_start_fsb = be64(buf, 48)?;
        let log_blocks = be32(buf, 96)?;
        let root_ino = be64(buf, 56)?;

        let uuid: [u8; 16] = array_at(buf, 32)?;
        let meta_uuid = if incompat & INCOMPAT_META_UUID != 0 {
            array_at(buf, 248)?
        } else {
            uuid
        };
        let fname = field(buf, 108, 12)?;
        let label_len = fname.iter().position(|&b| b == 0).unwrap_or(fname.len());
        let label = fname.get(..label_len).unwrap_or_default().to_vec();

        let sb = Superblock {
            block_size,
            sect_size,
            ag_blocks,
            ag_count,
            data_blocks,
            free_blocks: be64(buf, 144)?,
            icount: be64(buf, 128)?,
            ifree: be64(buf, 136)?,
            inode_size,
            root_ino,
            log_start_fsb,
            log_blocks,
            dir_block_size,
            uuid,
            meta_uuid,
            label,
            blocklog,
            inodelog,
            inopblog,
            agblklog,
            dirblklog,
            rt_blocks: be64(buf, 16)?,
            features_compat: be32(buf, 208)?,
            features_ro_compat: be32(buf, 212)?,
            features_incompat: incompat,
            features_log_incompat: be32(buf, 220)?,
            has_ftype: incompat & INCOMPAT_FTYPE != 0,
        };
        if log_start_fsb != 0 {
            sb.check_fsb_range(log_start_fsb, u64::from(log_blocks))
                .context("internal log location")?;
        }
        sb.check_ino(root_ino).context("root inode number")?;
        Ok(sb)
    }

    /// Size of the data device in bytes.
    pub fn data_bytes(&self) -> u64 {
        self.data_blocks.saturating_mul(u64::from(self.block_size))
    }

    /// Byte offset in the device of filesystem block `fsb` (`(agno << agblklog) | agbno`).
    /// Out-of-range values saturate instead of overflowing; readers validate them separately.
    pub fn fsb_to_byte(&self, fsb: u64) -> u64 {
        self.fsb_to_linear(fsb)
            .saturating_mul(u64::from(self.block_size))
    }

    /// Linear block number (in filesystem blocks from the start of the device) of `fsb`.
    fn fsb_to_linear(&self, fsb: u64) -> u64 {
        let agno = fsb >> self.agblklog;
        let agbno = fsb & ((1u64 << self.agblklog) - 1);
        agno.saturating_mul(u64::from(self.ag_blocks))
            .saturating_add(agbno)
    }

    /// Byte offset in the device of inode `ino`. Out-of-range values saturate; [`Xfs::inode`]
    /// validates inode numbers before use.
    pub fn ino_to_byte(&self, ino: u64) -> u64 {
        let fsb = ino >> self.inopblog;
        let index = ino & ((1u64 << self.inopblog) - 1);
        self.fsb_to_byte(fsb)
            .saturating_add(index * u64::from(self.inode_size))
    }

    /// `(offset, len)` in bytes of the internal log; `(0, 0)` when the log is external.
    pub fn log_byte_range(&self) -> (u64, u64) {
        if self.log_start_fsb == 0 {
            return (0, 0);
        }
        (
            self.fsb_to_byte(self.log_start_fsb),
            u64::from(self.log_blocks).saturating_mul(u64::from(self.block_size)),
        )
    }

    /// The checksummed superblock sector of every allocation group (primary first). The
    /// secondary copies are only read by xfs_repair, but should be kept in step when patching.
    pub fn sb_regions(&self) -> Vec<CrcRegion> {
        (0..u64::from(self.ag_count))
            .map(|agno| {
                let start = agno * u64::from(self.ag_blocks) * u64::from(self.block_size);
                CrcRegion {
                    start,
                    len: u64::from(self.sect_size),
                    crc_offset: start + SB_CRC_OFFSET as u64,
                }
            })
            .collect()
    }

    /// Validates that `count` blocks starting at `fsb` lie inside one AG of the data device and
    /// returns the byte offset of `fsb`.
    fn check_fsb_range(&self, fsb: u64, count: u64) -> Result<u64> {
        let agno = fsb >> self.agblklog;
        let agbno = fsb & ((1u64 << self.agblklog) - 1);
        ensure!(
            agno < u64::from(self.ag_count),
            "block {fsb:#x}: AG {agno} does not exist (AG count {})",
            self.ag_count
        );
        let end = agbno
            .checked_add(count)
            .filter(|&e| e <= u64::from(self.ag_blocks))
            .ok_or_else(|| {
                anyhow!(
                    "blocks {agno}/{agbno} + {count} run past the end of the AG ({} blocks)",
                    self.ag_blocks
                )
            })?;
        let linear_end = agno * u64::from(self.ag_blocks) + end;
        ensure!(
            linear_end <= self.data_blocks,
            "blocks {agno}/{agbno} + {count} run past the end of the data device"
        );
        Ok(self.fsb_to_byte(fsb))
    }

    /// Validates an inode number against the geometry and returns its byte offset.
    fn check_ino(&self, ino: u64) -> Result<u64> {
        let fsb = ino >> self.inopblog;
        self.check_fsb_range(fsb, 1)
            .with_context(|| format!("inode number {ino} is outside the filesystem"))?;
        Ok(self.ino_to_byte(ino))
    }
}

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
    pub fn dir_ftype(self) -> u8 {
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

/// One mapping of the data fork: `blocks` filesystem blocks at file block `file_block` live at
/// filesystem block `start_fsb` (`(agno << agblklog) | agbno`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First file block (in filesystem blocks from the start of the file).
    pub file_block: u64,
    /// First filesystem block on disk.
    pub start_fsb: u64,
    /// Length in filesystem blocks.
    pub blocks: u64,
    /// Allocated but never written: reads as zeros.
    pub unwritten: bool,
}

/// Decodes one 16-byte `xfs_bmbt_rec` extent record.
pub fn decode_extent(rec: &[u8; EXTENT_RECORD_LEN]) -> Extent {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&rec[..8]);
    lo.copy_from_slice(&rec[8..]);
    let l0 = u64::from_be_bytes(hi);
    let l1 = u64::from_be_bytes(lo);
    Extent {
        unwritten: l0 >> 63 != 0,
        file_block: (l0 & ((1u64 << 63) - 1)) >> 9,
        start_fsb: ((l0 & 0x1ff) << 43) | (l1 >> 21),
        blocks: l1 & ((1u64 << 21) - 1),
    }
}

/// Encodes an extent as a 16-byte `xfs_bmbt_rec` (the inverse of [`decode_extent`]). Fields wider
/// than the on-disk format (54-bit file block, 52-bit disk block, 21-bit length) are truncated.
pub fn encode_extent(e: &Extent) -> [u8; EXTENT_RECORD_LEN] {
    let l0 = (u64::from(e.unwritten) << 63)
        | ((e.file_block & ((1u64 << 54) - 1)) << 9)
        | ((e.start_fsb >> 43) & 0x1ff);
    let l1 = ((e.start_fsb & ((1u64 << 43) - 1)) << 21) | (e.blocks & ((1u64 << 21) - 1));
    let mut out = [0u8; EXTENT_RECORD_LEN];
    out[..8].copy_from_slice(&l0.to_be_bytes());
    out[8..].copy_from_slice(&l1.to_be_bytes());
    out
}

/// Where some bytes live on disk, and the checksummed structure containing them, so a caller can
/// overwrite the bytes and then recompute the checksum of `[start, start+len)` stored at
/// `crc_offset` (see [`update_crc`], which takes the offset relative to `start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrcRegion {
    /// Device byte offset of the checksummed structure.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Absolute device byte offset of its 4-byte little-endian CRC field.
    pub crc_offset: u64,
}

/// A byte range on the device and the checksummed structure that contains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteLoc {
    /// Device byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// The structure whose CRC covers these bytes.
    pub region: CrcRegion,
}

/// An extent record of a data fork and where its 16 bytes live (in the inode for extent-format
/// forks, in a bmap btree leaf for btree-format forks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentRecord {
    /// The decoded record.
    pub extent: Extent,
    /// Location of the 16-byte record and its checksummed container.
    pub loc: ByteLoc,
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
    /// For btree-format data forks, device byte offsets of every bmap btree leaf block in key
    /// order (records start at byte 72 of each block, numrecs at bytes 6..8, CRC at byte 64).
    pub bmbt_leaves: Vec<u64>,
}

impl InodeInfo {
    /// The checksummed region of this inode, given the filesystem's inode size.
    pub fn region(&self, inode_size: u32) -> CrcRegion {
        inode_region(self.byte_offset, inode_size)
    }
}

fn inode_region(byte_offset: u64, inode_size: u32) -> CrcRegion {
    CrcRegion {
        start: byte_offset,
        len: u64::from(inode_size),
        crc_offset: byte_offset + INODE_CRC_OFFSET as u64,
    }
}

/// One directory entry (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Entry name (raw bytes, no NUL or `/`).
    pub name: Vec<u8>,
    /// Inode number it points to.
    pub ino: u64,
    /// File type code stored in the entry (`XFS_DIR3_FT_*`), 0 without the ftype feature.
    pub ftype: u8,
    /// Where the name bytes live: in the directory inode (shortform) or a directory data block.
    pub name_loc: ByteLoc,
}

/// One entry found by [`Xfs::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkEntry {
    /// Path relative to the root, components joined with `/`, no leading slash.
    pub path: Vec<u8>,
    /// Inode number.
    pub ino: u64,
    /// File type, from the inode.
    pub kind: FileKind,
    /// Where the last path component's name bytes live.
    pub name_loc: ByteLoc,
}

/// How a directory is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirForm {
    /// Inline in the inode.
    Shortform,
    /// One directory block holding entries and hash index (`XDB3`).
    Block,
    /// Data blocks plus a single hash index block.
    Leaf,
    /// Data blocks plus a hash index btree and free-space index.
    Node,
}

// ---------------------------------------------------------------------------------------------
// The reader

/// A read-only XFS v5 filesystem on a [`ReadAt`] device.
pub struct Xfs<R: ReadAt> {
    dev: R,
    sb: Superblock,
}

/// Inode core fields and raw bytes, CRC-checked.
struct RawInode {
    ino: u64,
    byte: u64,
    buf: Vec<u8>,
    mode: u16,
    format: u8,
    size: u64,
    nblocks: u64,
    nextents: u64,
    flags: u16,
    flags2: u64,
    nlink: u32,
    uid: u32,
    gid: u32,
    /// Size of the data fork area in bytes.
    dfork_size: usize,
    attr_fork_offset: u32,
}

impl RawInode {
    fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode)
    }

    fn data_fork(&self) -> Result<&[u8]> {
        field(&self.buf, DI_DATA_FORK_OFFSET, self.dfork_size)
    }
}

/// A data fork mapping with the location of each record.
struct ForkMap {
    records: Vec<ExtentRecord>,
    leaves: Vec<u64>,
}

impl ForkMap {
    fn extents(&self) -> Vec<Extent> {
        self.records.iter().map(|r| r.extent).collect()
    }
}

/// A directory block read from disk.
struct DirBlock {
    byte: u64,
    buf: Vec<u8>,
}

impl<R: ReadAt> Xfs<R> {
    /// Reads and validates the primary superblock of the filesystem on `dev`.
    pub fn open(dev: R) -> Result<Self> {
        let mut head = vec![0u8; 512];
        dev.read_at(0, &mut head)
            .context("reading the XFS superblock at byte 0")?;
        let sect = usize::from(be16(&head, 102).context("superblock sector size")?);
        if sect > head.len() && sect.is_power_of_two() && sect <= 32768 {
            head = vec![0u8; sect];
            dev.read_at(0, &mut head)
                .context("reading the XFS superblock sector")?;
        }
        let sb = Superblock::parse(&head).context("invalid XFS superblock at byte 0")?;
        let size = dev.size();
        ensure!(
            size >= sb.data_bytes(),
            "the device holds {size} bytes but the XFS data section needs {}",
            sb.data_bytes()
        );
        Ok(Xfs { dev, sb })
    }

    /// The validated superblock.
    pub fn sb(&self) -> &Superblock {
        &self.sb
    }

    /// The underlying device.
    pub fn device(&self) -> &R {
        &self.dev
    }

    /// Gives the underlying device back.
    pub fn into_device(self) -> R {
        self.dev
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.checked_add(len as u64);
        ensure!(
            end.is_some_and(|e| e <= self.sb.data_bytes()),
            "{len} bytes at byte {offset} lie outside the {}-byte data device",
            self.sb.data_bytes()
        );
        let mut buf = vec![0u8; len];
        self.dev
            .read_at(offset, &mut buf)
            .with_context(|| format!("reading {len} bytes at byte {offset}"))?;
        Ok(buf)
    }

    fn block_size(&self) -> usize {
        self.sb.block_size as usize
    }

    /// Checks the common v5 header fields that name the block itself: its disk address (in
    /// 512-byte units), its owner inode and the filesystem UUID.
    fn check_self_describing(
        &self,
        buf: &[u8],
        byte: u64,
        blkno_off: usize,
        owner_off: usize,
        uuid_off: usize,
        owner: u64,
    ) -> Result<()> {
        let blkno = be64(buf, blkno_off)?;
        ensure!(
            blkno == byte / 512,
            "header says it is block {blkno} (512-byte units), but it was read from {}",
            byte / 512
        );
        let stored_owner = be64(buf, owner_off)?;
        ensure!(
            stored_owner == owner,
            "header says it belongs to inode {stored_owner}, expected {owner}"
        );
        let uuid: [u8; 16] = array_at(buf, uuid_off)?;
        ensure!(
            uuid == self.sb.meta_uuid,
            "header carries a different filesystem UUID"
        );
        Ok(())
    }

    fn raw_inode(&self, ino: u64) -> Result<RawInode> {
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
        let nextents = if flags2 & DIFLAG2_NREXT64 != 0 {
            ensure!(
                self.sb.features_incompat & INCOMPAT_NREXT64 != 0,
                "inode uses 64-bit extent counters but the filesystem lacks NREXT64"
            );
            be64(&buf, 24)?
        } else {
            u64::from(be32(&buf, 76)?)
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
        })
    }

    /// The checksummed region of inode `ino` (validating the inode number only).
    pub fn inode_region(&self, ino: u64) -> Result<CrcRegion> {
        let byte = self.sb.check_ino(ino)?;
        Ok(inode_region(byte, self.sb.inode_size))
    }

    /// The data fork extent records of inode `ino` with the location of each 16-byte record, for
    /// callers that rewrite records in place (e.g. to convert unwritten extents to written ones;
    /// bmap btree keys hold only file offsets, so flipping the unwritten bit needs no key update).
    pub fn extent_records(&self, ino: u64) -> Result<Vec<ExtentRecord>> {
        let raw = self.raw_inode(ino)?;
        Ok(self.fork_map(&raw)?.records)
    }

    fn fork_map(&self, raw: &RawInode) -> Result<ForkMap> {
        let map = match raw.format {
            FMT_EXTENTS => self.extent_list_map(raw),
            FMT_BTREE => self.btree_map(raw),
            FMT_LOCAL | FMT_DEV => Ok(ForkMap {
                records: Vec::new(),
                leaves: Vec::new(),
            }),
            other => Err(anyhow!("unsupported data fork format {other}")),
        }
        .with_context(|| format!("data fork of inode {}", raw.ino))?;
        if matches!(raw.format, FMT_EXTENTS | FMT_BTREE) {
            self.check_extents(raw, &map.records)
                .with_context(|| format!("data fork of inode {}", raw.ino))?;
        }
        Ok(map)
    }

    fn extent_list_map(&self, raw: &RawInode) -> Result<ForkMap> {
        let fork = raw.data_fork()?;
        let count = to_usize(raw.nextents, "extent count")?;
        ensure!(
            count <= fork.len() / EXTENT_RECORD_LEN,
            "{count} extents do not fit in the {}-byte data fork",
            fork.len()
        );
        let region = inode_region(raw.byte, self.sb.inode_size);
        let mut records = Vec::with_capacity(count);
        for i in 0..count {
            let off = i * EXTENT_RECORD_LEN;
            let rec: [u8; EXTENT_RECORD_LEN] = array_at(fork, off)?;
            records.push(ExtentRecord {
                extent: decode_extent(&rec),
                loc: ByteLoc {
                    offset: raw.byte + (DI_DATA_FORK_OFFSET + off) as u64,
                    len: EXTENT_RECORD_LEN as u64,
                    region,
                },
            });
        }
        Ok(ForkMap {
            records,
            leaves: Vec::new(),
        })
    }

    fn btree_map(&self, raw: &RawInode) -> Result<ForkMap> {
        let root = raw.data_fork()?;
        let level = be16(root, 0)?;
        let numrecs = usize::from(be16(root, 2)?);
        ensure!(
            (1..=MAX_BMBT_LEVELS).contains(&level),
            "bmap btree root level {level} is out of range"
        );
        let maxrecs = root.len().saturating_sub(4) / 16;
        ensure!(
            (1..=maxrecs).contains(&numrecs),
            "bmap btree root has {numrecs} pointers (room for {maxrecs})"
        );
        let mut stack = Vec::with_capacity(numrecs);
        for i in (0..numrecs).rev() {
            stack.push((be64(root, 4 + maxrecs * 8 + i * 8)?, level - 1));
        }

        let bs = self.block_size();
        let node_maxrecs = (bs - BMBT_HEADER_LEN) / 16;
        let mut visited = HashSet::new();
        let mut records = Vec::new();
        let mut leaves = Vec::new();
        while let Some((fsb, lvl)) = stack.pop() {
            ensure!(
                visited.insert(fsb),
                "bmap btree block {fsb:#x} is referenced twice (cycle or shared block)"
            );
            let byte = self
                .sb
                .check_fsb_range(fsb, 1)
                .context("bmap btree block address")?;
            let blk = self.read(byte, bs)?;
            let numrecs = self
                .check_bmbt_block(&blk, byte, raw.ino, lvl, node_maxrecs)
                .with_context(|| format!("bmap btree block {fsb:#x} at byte {byte}"))?;
            if lvl == 0 {
                leaves.push(byte);
                let region = CrcRegion {
                    start: byte,
                    len: bs as u64,
                    crc_offset: byte + BMBT_CRC_OFFSET as u64,
                };
                for i in 0..numrecs {
                    let off = BMBT_HEADER_LEN + i * EXTENT_RECORD_LEN;
                    let rec: [u8; EXTENT_RECORD_LEN] = array_at(&blk, off)?;
                    records.push(ExtentRecord {
                        extent: decode_extent(&rec),
                        loc: ByteLoc {
                            offset: byte + off as u64,
                            len: EXTENT_RECORD_LEN as u64,
                            region,
                        },
                    });
                }
                ensure!(
                    records.len() as u64 <= raw.nextents,
                    "bmap btree holds more than the {} extents recorded in the inode",
                    raw.nextents
                );
            } else {
                for i in (0..numrecs).rev() {
                    let ptr = be64(&blk, BMBT_HEADER_LEN + node_maxrecs * 8 + i * 8)?;
                    stack.push((ptr, lvl - 1));
                }
            }
        }
        Ok(ForkMap { records, leaves })
    }

    /// Validates a bmap btree block and returns its record count.
    fn check_bmbt_block(
        &self,
        blk: &[u8],
        byte: u64,
        owner: u64,
        level: u16,
        maxrecs: usize,
    ) -> Result<usize> {
        let magic = be32(blk, 0)?;
        ensure!(
            magic == BMAP_MAGIC,
            "bad bmap btree magic {magic:#010x} (expected BMA3 {BMAP_MAGIC:#010x})"
        );
        check_crc(blk, BMBT_CRC_OFFSET).context("bmap btree block checksum")?;
        self.check_self_describing(blk, byte, 24, 56, 40, owner)?;
        let got_level = be16(blk, 4)?;
        ensure!(
            got_level == level,
            "block is at level {got_level}, expected {level}"
        );
        let numrecs = usize::from(be16(blk, 6)?);
        ensure!(
            (1..=maxrecs).contains(&numrecs),
            "block holds {numrecs} records (room for {maxrecs})"
        );
        Ok(numrecs)
    }

    fn check_extents(&self, raw: &RawInode, records: &[ExtentRecord]) -> Result<()> {
        ensure!(
            records.len() as u64 == raw.nextents,
            "found {} extents but the inode records {}",
            records.len(),
            raw.nextents
        );
        let realtime = raw.flags & DIFLAG_REALTIME != 0;
        let max_blocks = MAX_FILE_BYTES >> self.sb.blocklog;
        let mut next_free = 0u64;
        for (i, r) in records.iter().enumerate() {
            let e = &r.extent;
            ensure!(e.blocks > 0, "extent {i} has length 0");
            ensure!(
                e.file_block >= next_free,
                "extent {i} at file block {} overlaps or precedes the previous extent",
                e.file_block
            );
            next_free = e
                .file_block
                .checked_add(e.blocks)
                .filter(|&end| end <= max_blocks)
                .ok_or_else(|| anyhow!("extent {i} runs past the maximum file size"))?;
            if !realtime {
                self.sb
                    .check_fsb_range(e.start_fsb, e.blocks)
                    .with_context(|| format!("extent {i} (file block {})", e.file_block))?;
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Directories

    /// Lists directory `ino` in on-disk order, without `.` and `..`. Handles shortform, block,
    /// leaf and node directories.
    pub fn read_dir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let raw = self.raw_inode(ino)?;
        ensure!(
            raw.kind() == FileKind::Dir,
            "inode {ino} is not a directory (mode {:#o})",
            raw.mode
        );
        self.read_dir_raw(&raw)
            .with_context(|| format!("reading directory inode {ino}"))
    }

    /// How directory `ino` is stored.
    pub fn dir_form(&self, ino: u64) -> Result<DirForm> {
        let raw = self.raw_inode(ino)?;
        ensure!(
            raw.kind() == FileKind::Dir,
            "inode {ino} is not a directory (mode {:#o})",
            raw.mode
        );
        if raw.format == FMT_LOCAL {
            return Ok(DirForm::Shortform);
        }
        let map = self.fork_map(&raw)?;
        self.dir_form_of(&raw, &map.extents())
    }

    fn dir_form_of(&self, raw: &RawInode, extents: &[Extent]) -> Result<DirForm> {
        match raw.format {
            FMT_LOCAL => return Ok(DirForm::Shortform),
            FMT_EXTENTS | FMT_BTREE => {}
            other => bail!("directory has unsupported data fork format {other}"),
        }
        let per_dirblk = 1u64 << self.sb.dirblklog;
        let last_end = extents
            .last()
            .map(|e| e.file_block + e.blocks)
            .ok_or_else(|| anyhow!("directory has no blocks"))?;
        let leaf_fsb = DIR_LEAF_OFFSET >> self.sb.blocklog;
        if last_end == per_dirblk {
            ensure!(
                raw.size == u64::from(self.sb.dir_block_size),
                "single-block directory has size {} (expected {})",
                raw.size,
                self.sb.dir_block_size
            );
            Ok(DirForm::Block)
        } else if last_end == leaf_fsb + per_dirblk {
            Ok(DirForm::Leaf)
        } else {
            Ok(DirForm::Node)
        }
    }

    fn read_dir_raw(&self, raw: &RawInode) -> Result<Vec<DirEntry>> {
        if raw.format == FMT_LOCAL {
            return self.read_shortform_dir(raw);
        }
        let map = self.fork_map(raw)?;
        let extents = map.extents();
        let form = self.dir_form_of(raw, &extents)?;
        let single = form == DirForm::Block;
        let mut out = Vec::new();
        self.for_each_dir_data_block(&extents, |dblk, phys_fsb| {
            let blk = self
                .read_dir_block(raw.ino, phys_fsb, single)
                .with_context(|| format!("directory block at directory offset block {dblk}"))?;
            self.parse_dir_data_block(raw.ino, &blk, single, &mut out)
                .with_context(|| {
                    format!(
                        "directory block at directory offset block {dblk} (byte {})",
                        blk.byte
                    )
                })
        })?;
        Ok(out)
    }

    /// Calls `f(logical fs block, physical fsb)` for each directory data block (those below the
    /// leaf offset), in logical order. Multi-block directory blocks must be contiguous on disk.
    fn for_each_dir_data_block(
        &self,
        extents: &[Extent],
        mut f: impl FnMut(u64, u64) -> Result<()>,
    ) -> Result<()> {
        let per = 1u64 << self.sb.dirblklog;
        let leaf_fsb = DIR_LEAF_OFFSET >> self.sb.blocklog;
        let mut last = None;
        for e in extents {
            if e.file_block >= leaf_fsb {
                break;
            }
            let end = (e.file_block + e.blocks).min(leaf_fsb);
            let mut lb = e.file_block & !(per - 1);
            while lb < end {
                if last != Some(lb) {
                    let phys = self.map_contiguous(extents, lb, per).with_context(|| {
                        format!("directory block at directory offset block {lb}")
                    })?;
                    f(lb, phys)?;
                    last = Some(lb);
                }
                lb += per;
            }
        }
        Ok(())
    }

    /// Physical start of `count` logical blocks from `lb`, which must be mapped, written and
    /// physically contiguous.
    fn map_contiguous(&self, extents: &[Extent], lb: u64, count: u64) -> Result<u64> {
        let mut start = None;
        for i in 0..count {
            let want = lb + i;
            let idx = extents.partition_point(|e| e.file_block + e.blocks <= want);
            let e = extents
                .get(idx)
                .filter(|e| e.file_block <= want)
                .ok_or_else(|| anyhow!("logical block {want} is not mapped (hole)"))?;
            ensure!(!e.unwritten, "logical block {want} is an unwritten extent");
            let phys = e.start_fsb + (want - e.file_block);
            match start {
                None => start = Some(phys),
                Some(s) => ensure!(
                    phys == s + i,
                    "directory block is split across non-contiguous disk extents (unsupported)"
                ),
            }
        }
        start.ok_or_else(|| anyhow!("empty directory block"))
    }

    fn read_dir_block(&self, owner: u64, phys_fsb: u64, single: bool) -> Result<DirBlock> {
        let dbs = self.sb.dir_block_size as usize;
        let byte = self
            .sb
            .check_fsb_range(phys_fsb, 1u64 << self.sb.dirblklog)?;
        let buf = self.read(byte, dbs)?;
        let magic = be32(&buf, 0)?;
        let want = if single {
            DIR3_BLOCK_MAGIC
        } else {
            DIR3_DATA_MAGIC
        };
        ensure!(
            magic == want,
            "bad directory block magic {magic:#010x} (expected {want:#010x}) at byte {byte}"
        );
        check_crc(&buf, DIR_DATA_CRC_OFFSET)
            .with_context(|| format!("directory block checksum at byte {byte}"))?;
        self.check_self_describing(&buf, byte, 8, 40, 24, owner)
            .with_context(|| format!("directory block header at byte {byte}"))?;
        Ok(DirBlock { byte, buf })
    }

    fn parse_dir_data_block(
        &self,
        dir_ino: u64,
        blk: &DirBlock,
        single: bool,
        out: &mut Vec<DirEntry>,
    ) -> Result<()> {
        let buf = &blk.buf;
        let len = buf.len();
        let end = if single {
            let count = to_usize(
                u64::from(be32(buf, len - DIR_BLOCK_TAIL_LEN)?),
                "leaf count",
            )?;
            count
                .checked_mul(DIR_LEAF_ENTRY_LEN)
                .and_then(|l| len.checked_sub(DIR_BLOCK_TAIL_LEN + l))
                .filter(|&e| e >= DIR3_DATA_HEADER_LEN)
                .ok_or_else(|| anyhow!("block tail claims {count} leaf entries, too many"))?
        } else {
            len
        };
        let region = CrcRegion {
            start: blk.byte,
            len: len as u64,
            crc_offset: blk.byte + DIR_DATA_CRC_OFFSET as u64,
        };
        let ftype_len = usize::from(self.sb.has_ftype);
        let mut pos = DIR3_DATA_HEADER_LEN;
        while pos < end {
            if be16(buf, pos)? == DIR_FREE_TAG {
                let size = usize::from(be16(buf, pos + 2)?);
                ensure!(
                    size >= 8 && size % 8 == 0 && pos + size <= end,
                    "unused entry at offset {pos} has invalid length {size}"
                );
                let tag = usize::from(be16(buf, pos + size - 2)?);
                ensure!(tag == pos, "unused entry at offset {pos} has tag {tag}");
                pos += size;
                continue;
            }
            let ino = be64(buf, pos)?;
            let namelen = usize::from(u8_at(buf, pos + 8)?);
            ensure!(namelen > 0, "entry at offset {pos} has an empty name");
            let size = (8 + 1 + namelen + ftype_len + 2 + 7) & !7;
            ensure!(
                pos + size <= end,
                "entry at offset {pos} ({size} bytes) runs past the data area end {end}"
            );
            let name = field(buf, pos + 9, namelen)?;
            let ftype = if self.sb.has_ftype {
                u8_at(buf, pos + 9 + namelen)?
            } else {
                0
            };
            let tag = usize::from(be16(buf, pos + size - 2)?);
            ensure!(tag == pos, "entry at offset {pos} has tag {tag}");
            if name != b"." && name != b".." {
                let name_off = blk.byte + (pos + 9) as u64;
                out.push(self.make_entry(dir_ino, name, ino, ftype, name_off, region)?);
            }
            pos += size;
        }
        Ok(())
    }

    fn make_entry(
        &self,
        dir_ino: u64,
        name: &[u8],
        ino: u64,
        ftype: u8,
        name_off: u64,
        region: CrcRegion,
    ) -> Result<DirEntry> {
        let shown = String::from_utf8_lossy(name);
        ensure!(
            !name.contains(&b'/') && !name.contains(&0),
            "entry name {shown:?} contains '/' or NUL"
        );
        ensure!(ftype < 9, "entry {shown:?} has invalid file type {ftype}");
        self.sb.check_ino(ino).with_context(|| {
            format!("entry {shown:?} in directory {dir_ino} points to a bad inode")
        })?;
        Ok(DirEntry {
            name: name.to_vec(),
            ino,
            ftype,
            name_loc: ByteLoc {
                offset: name_off,
                len: name.len() as u64,
                region,
            },
        })
    }

    fn read_shortform_dir(&self, raw: &RawInode) -> Result<Vec<DirEntry>> {
        let fork = raw.data_fork()?;
        let size = to_usize(raw.size, "shortform directory size")?;
        let sf = fork.get(..size).ok_or_else(|| {
            anyhow!(
                "shortform directory size {size} exceeds the {}-byte data fork",
                fork.len()
            )
        })?;
        let count = usize::from(u8_at(sf, 0)?);
        let i8count = u8_at(sf, 1)?;
        let ino_len = if i8count == 0 { 4 } else { 8 };
        let read_ino = |off: usize| -> Result<u64> {
            if ino_len == 4 {
                be32(sf, off).map(u64::from)
            } else {
                be64(sf, off)
            }
        };
        let parent = read_ino(2).context("shortform parent pointer")?;
        self.sb
            .check_ino(parent)
            .context("shortform parent pointer")?;
        let region = inode_region(raw.byte, self.sb.inode_size);
        let ftype_len = usize::from(self.sb.has_ftype);
        let mut pos = 2 + ino_len;
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let namelen =
                usize::from(u8_at(sf, pos).with_context(|| format!("shortform entry {i} header"))?);
            ensure!(namelen > 0, "shortform entry {i} has an empty name");
            let name =
                field(sf, pos + 3, namelen).with_context(|| format!("shortform entry {i} name"))?;
            let ftype = if self.sb.has_ftype {
                u8_at(sf, pos + 3 + namelen)?
            } else {
                0
            };
            let ino = read_ino(pos + 3 + namelen + ftype_len)
                .with_context(|| format!("shortform entry {i} inode number"))?;
            let name_off = raw.byte + (DI_DATA_FORK_OFFSET + pos + 3) as u64;
            out.push(self.make_entry(raw.ino, name, ino, ftype, name_off, region)?);
            pos += 3 + namelen + ftype_len + ino_len;
        }
        Ok(out)
    }

    /// Every entry under the root directory: parents before their children, each directory's
    /// entries in on-disk order (a depth-first pre-order walk). Fails on directory cycles and on
    /// nesting deeper than 2048 levels.
    pub fn walk(&self) -> Result<Vec<WalkEntry>> {
        let root = self.sb.root_ino;
        let mut visited = HashSet::new();
        visited.insert(root);
        let mut out = Vec::new();
        let first = self.read_dir(root).context("reading the root directory")?;
        let mut stack: Vec<(Vec<u8>, std::vec::IntoIter<DirEntry>)> =
            vec![(Vec::new(), first.into_iter())];
        while let Some((prefix, iter)) = stack.last_mut() {
            let Some(entry) = iter.next() else {
                stack.pop();
                continue;
            };
            let mut path = prefix.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&entry.name);
            let shown = String::from_utf8_lossy(&path).into_owned();
            let raw = self
                .raw_inode(entry.ino)
                .with_context(|| format!("inode of /{shown}"))?;
            let kind = raw.kind();
            if self.sb.has_ftype && entry.ftype != kind.dir_ftype() {
                bail!(
                    "directory entry /{shown} says file type {} but inode {} is {kind:?}",
                    entry.ftype,
                    entry.ino
                );
            }
            out.push(WalkEntry {
                path: path.clone(),
                ino: entry.ino,
                kind,
                name_loc: entry.name_loc,
            });
            if kind == FileKind::Dir {
                ensure!(
                    visited.insert(entry.ino),
                    "directory /{shown} (inode {}) was already visited: directory cycle",
                    entry.ino
                );
                ensure!(
                    stack.len() < MAX_WALK_DEPTH,
                    "directory /{shown} is nested deeper than {MAX_WALK_DEPTH} levels"
                );
                let children = self
                    .read_dir_raw(&raw)
                    .with_context(|| format!("reading directory /{shown} (inode {})", entry.ino))?;
                stack.push((path, children.into_iter()));
            }
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Symlinks and file contents

    /// The target of symlink `ino`, and where its bytes live: one [`ByteLoc`] for an inline
    /// target (region: the inode), otherwise one per remote extent, each of which XFS writes as
    /// one buffer with one header (a single block with 4 KiB blocks; region: that buffer).
    ///
    /// Targets are at most 1023 bytes, and remote blocks must carry the v5 `XSLM` header, as the
    /// kernel and xfs_repair require. mkfs.xfs (at least up to 6.1) writes protofile symlinks
    /// longer than the inode's inline area without that header; such links are refused here.
    pub fn read_symlink(&self, ino: u64) -> Result<(Vec<u8>, Vec<ByteLoc>)> {
        let raw = self.raw_inode(ino)?;
        ensure!(
            raw.kind() == FileKind::Symlink,
            "inode {ino} is not a symlink (mode {:#o})",
            raw.mode
        );
        self.read_symlink_raw(&raw)
            .with_context(|| format!("reading symlink inode {ino}"))
    }

    fn read_symlink_raw(&self, raw: &RawInode) -> Result<(Vec<u8>, Vec<ByteLoc>)> {
        let size = raw.size;
        ensure!(
            (1..=SYMLINK_MAX_LEN).contains(&size),
            "symlink length {size} is out of range"
        );
        let size = size as usize;
        let (target, locs) = match raw.format {
            FMT_LOCAL => {
                let target = field(raw.data_fork()?, 0, size)
                    .context("inline symlink target exceeds the data fork")?
                    .to_vec();
                let loc = ByteLoc {
                    offset: raw.byte + DI_DATA_FORK_OFFSET as u64,
                    len: size as u64,
                    region: inode_region(raw.byte, self.sb.inode_size),
                };
                (target, vec![loc])
            }
            FMT_EXTENTS | FMT_BTREE => self.read_remote_symlink(raw, size)?,
            other => bail!("symlink has unsupported data fork format {other}"),
        };
        ensure!(!target.contains(&0), "symlink target contains a NUL byte");
        Ok((target, locs))
    }

    fn read_remote_symlink(&self, raw: &RawInode, size: usize) -> Result<(Vec<u8>, Vec<ByteLoc>)> {
        let map = self.fork_map(raw)?;
        let bs = self.block_size();
        let per_block = bs - SYMLINK_HEADER_LEN;
        let needed = size.div_ceil(per_block) as u64;
        let mut target = Vec::with_capacity(size);
        let mut locs = Vec::new();
        let mut next_block = 0u64;
        for e in map.extents() {
            ensure!(
                e.file_block == next_block && e.file_block + e.blocks <= needed,
                "symlink extent at file block {} does not fit a {size}-byte target",
                e.file_block
            );
            ensure!(!e.unwritten, "symlink block is an unwritten extent");
            next_block += e.blocks;
            let len = e.blocks as usize * bs;
            let byte = self.sb.check_fsb_range(e.start_fsb, e.blocks)?;
            let buf = self.read(byte, len)?;
            let want = (size - target.len()).min(len - SYMLINK_HEADER_LEN);
            self.check_symlink_block(&buf, byte, raw.ino, target.len(), want)
                .with_context(|| format!("remote symlink block at byte {byte}"))?;
            target.extend_from_slice(field(&buf, SYMLINK_HEADER_LEN, want)?);
            locs.push(ByteLoc {
                offset: byte + SYMLINK_HEADER_LEN as u64,
                len: want as u64,
                region: CrcRegion {
                    start: byte,
                    len: len as u64,
                    crc_offset: byte + SYMLINK_CRC_OFFSET as u64,
                },
            });
        }
        ensure!(
            target.len() == size,
            "remote symlink blocks hold {} of {size} bytes",
            target.len()
        );
        Ok((target, locs))
    }

    fn check_symlink_block(
        &self,
        buf: &[u8],
        byte: u64,
        owner: u64,
        offset: usize,
        bytes: usize,
    ) -> Result<()> {
        let magic = be32(buf, 0)?;
        ensure!(
            magic == SYMLINK_MAGIC,
            "bad symlink block magic {magic:#010x} (expected XSLM {SYMLINK_MAGIC:#010x})"
        );
        check_crc(buf, SYMLINK_CRC_OFFSET).context("symlink block checksum")?;
        self.check_self_describing(buf, byte, 40, 32, 16, owner)?;
        let got_offset = be32(buf, 4)? as usize;
        let got_bytes = be32(buf, 8)? as usize;
        ensure!(
            got_offset == offset && got_bytes == bytes,
            "header says {got_bytes} bytes at offset {got_offset}, expected {bytes} at {offset}"
        );
        Ok(())
    }

    /// Streams exactly `di_size` bytes of regular file `ino` to `sink`, in chunks of at most
    /// 1 MiB. Holes and unwritten extents read as zeros; memory use is bounded by the chunk size
    /// and the extent list. Errors from `sink` stop the read and are returned.
    pub fn read_file(&self, ino: u64, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let raw = self.raw_inode(ino)?;
        ensure!(
            raw.kind() == FileKind::File,
            "inode {ino} is not a regular file (mode {:#o})",
            raw.mode
        );
        ensure!(
            raw.flags & DIFLAG_REALTIME == 0,
            "inode {ino} keeps its data on the realtime device, which is not read"
        );
        ensure!(
            matches!(raw.format, FMT_EXTENTS | FMT_BTREE),
            "regular file inode {ino} has unsupported data fork format {}",
            raw.format
        );
        let extents = self.fork_map(&raw)?.extents();
        self.stream(&extents, raw.size, sink)
            .with_context(|| format!("reading file inode {ino}"))
    }

    fn stream(
        &self,
        extents: &[Extent],
        size: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let mut chunk = vec![0u8; (size.min(READ_CHUNK as u64)) as usize];
        let mut idx = 0usize;
        let mut pos = 0u64;
        while pos < size {
            let len = (size - pos).min(READ_CHUNK as u64);
            let buf = chunk
                .get_mut(..len as usize)
                .ok_or_else(|| anyhow!("internal chunk sizing error"))?;
            buf.fill(0);
            let chunk_end = pos + len;
            // Skip extents entirely before this chunk.
            while extents
                .get(idx)
                .is_some_and(|e| (e.file_block + e.blocks) * bs <= pos)
            {
                idx += 1;
            }
            let mut j = idx;
            while let Some(e) = extents.get(j) {
                let e_start = e.file_block * bs;
                if e_start >= chunk_end {
                    break;
                }
                let e_end = (e.file_block + e.blocks) * bs;
                let from = e_start.max(pos);
                let to = e_end.min(chunk_end);
                if from < to && !e.unwritten {
                    let disk = self.sb.fsb_to_byte(e.start_fsb) + (from - e_start);
                    let dst = buf
                        .get_mut((from - pos) as usize..(to - pos) as usize)
                        .ok_or_else(|| anyhow!("internal chunk range error"))?;
                    self.dev
                        .read_at(disk, dst)
                        .with_context(|| format!("reading file data at byte {disk}"))?;
                }
                j += 1;
            }
            sink(buf)?;
            pos = chunk_end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs::{self, File, OpenOptions};
    use std::io;
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;
    use std::process::Command;

    /// The settings of xfsprogs' `lts_4.19.conf`. xfsprogs 6.1 rejects the `nrext64=0` line that
    /// the shipped file has in its `[metadata]` section, so nrext64 is passed with `-i` instead.
    const LTS_4_19_CONF: &str = "[metadata]\nbigtime=0\ncrc=1\nfinobt=1\ninobtcount=0\n\
                                 reflink=0\nrmapbt=0\n\n[inode]\nsparse=1\n";

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn find_tool(name: &str) -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
        dirs.into_iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "{name} is required by these tests but was not found in PATH, /usr/sbin or \
                     /sbin: install xfsprogs (e.g. `apt-get install xfsprogs`)"
                )
            })
    }

    /// A scratch directory holding source files, a protofile and the image built from them.
    struct Image {
        dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl Image {
        fn new() -> Image {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fs.img");
            Image { dir, path }
        }

        fn source(&self, name: &str, data: &[u8]) -> String {
            let p = self.dir.path().join(name);
            fs::write(&p, data).unwrap();
            p.to_str().unwrap().to_string()
        }

        fn mkfs(&self, proto: &str, size: u64, extra: &[&str]) {
            let conf = self.dir.path().join("lts.conf");
            fs::write(&conf, LTS_4_19_CONF).unwrap();
            let proto_path = self.dir.path().join("proto");
            fs::write(&proto_path, proto).unwrap();
            File::create(&self.path).unwrap().set_len(size).unwrap();
            let mut args: Vec<String> = vec![
                "-f".into(),
                "-q".into(),
                "-K".into(),
                "-c".into(),
                format!("options={}", conf.display()),
            ];
            if !extra.iter().any(|a| a.contains("nrext64")) {
                args.extend(["-i".into(), "nrext64=0".into()]);
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            args.extend([
                "-p".into(),
                proto_path.display().to_string(),
                self.path.display().to_string(),
            ]);
            let out = Command::new(find_tool("mkfs.xfs"))
                .args(&args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "mkfs.xfs {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        fn file(&self) -> File {
            File::open(&self.path).unwrap()
        }

        fn open(&self) -> Xfs<File> {
            Xfs::open(self.file()).unwrap()
        }

        fn db(&self, cmds: &[&str]) -> String {
            let mut cmd = Command::new(find_tool("xfs_db"));
            cmd.arg("-r");
            for c in cmds {
                cmd.arg("-c").arg(c);
            }
            let out = cmd.arg(&self.path).output().unwrap();
            assert!(
                out.status.success(),
                "xfs_db {cmds:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }

        /// `key = value` lines of an xfs_db `print`.
        fn db_fields(&self, cmds: &[&str]) -> HashMap<String, String> {
            self.db(cmds)
                .lines()
                .filter_map(|l| l.split_once(" = "))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        }

        /// The data fork mapping as printed by `xfs_db -c 'inode N' -c bmap`.
        fn db_bmap(&self, ino: u64) -> Vec<Extent> {
            self.db(&[&format!("inode {ino}"), "bmap"])
                .lines()
                .filter(|l| l.starts_with("data offset"))
                .map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    Extent {
                        file_block: w[2].parse().unwrap(),
                        start_fsb: w[4].parse().unwrap(),
                        blocks: w[7].parse().unwrap(),
                        unwritten: w[9] == "1",
                    }
                })
                .collect()
        }

        fn repair_check(&self) {
            let out = Command::new(find_tool("xfs_repair"))
                .arg("-n")
                .arg(&self.path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "xfs_repair -n found problems: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// A unique protofile-safe name of `len` bytes (at least 7), mixing ASCII and multi-byte UTF-8.
    fn gen_name(rng: &mut Rng, i: usize, len: usize) -> String {
        const PIECES: &[&str] = &[
            "a", "Z", "7", "_", "-", ".", "+", "é", "ß", "Ω", "日", "本", "😀",
        ];
        let mut s = format!("{i:06}");
        let len = len.max(s.len());
        loop {
            let p = PIECES[rng.below(PIECES.len() as u64) as usize];
            if s.len() + p.len() > len {
                break;
            }
            s.push_str(p);
        }
        while s.len() < len {
            s.push('x');
        }
        s
    }

    fn names(rng: &mut Rng, count: usize, max_len: usize) -> Vec<String> {
        (0..count)
            .map(|i| {
                let len = match i % 7 {
                    0 => max_len,
                    1 => 7,
                    _ => 7 + rng.below((max_len - 6) as u64) as usize,
                };
                gen_name(rng, i, len)
            })
            .collect()
    }

    fn read_dev(dev: &File, offset: u64, len: u64) -> Vec<u8> {
        let mut buf = vec![0u8; len as usize];
        FileExt::read_exact_at(dev, &mut buf, offset).unwrap();
        buf
    }

    /// The bytes at `loc` are `expected` and the structure around them has a valid CRC.
    fn check_loc(dev: &File, loc: &ByteLoc, expected: &[u8]) {
        assert_eq!(read_dev(dev, loc.offset, loc.len), expected, "{loc:?}");
        let r = &loc.region;
        assert!(r.start <= loc.offset && loc.offset + loc.len <= r.start + r.len);
        let region = read_dev(dev, r.start, r.len);
        assert!(crc_ok(&region, (r.crc_offset - r.start) as usize), "{r:?}");
    }

    fn collect_file<R: ReadAt>(fs: &Xfs<R>, ino: u64) -> Vec<u8> {
        let mut out = Vec::new();
        fs.read_file(ino, &mut |chunk: &[u8]| {
            assert!(!chunk.is_empty() && chunk.len() <= READ_CHUNK);
            out.extend_from_slice(chunk);
            Ok(())
        })
        .unwrap();
        out
    }

    fn uuid_string(u: &[u8; 16]) -> String {
        let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    fn lookup<R: ReadAt>(fs: &Xfs<R>, dir: u64, name: &str) -> u64 {
        fs.read_dir(dir)
            .unwrap()
            .into_iter()
            .find(|e| e.name == name.as_bytes())
            .unwrap_or_else(|| panic!("{name} not found"))
            .ino
    }

    fn write_at(path: &std::path::Path, offset: u64, data: &[u8]) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(data, offset).unwrap();
    }

    /// Rewrites bytes inside a checksummed region and fixes its CRC, the way prestage patches.
    fn patch_region(path: &std::path::Path, region: &CrcRegion, at: u64, data: &[u8]) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut buf = read_dev(&f, region.start, region.len);
        let rel = (at - region.start) as usize;
        buf[rel..rel + data.len()].copy_from_slice(data);
        update_crc(&mut buf, (region.crc_offset - region.start) as usize);
        f.write_all_at(&buf, region.start).unwrap();
    }

    #[test]
    fn da_hashname_known_values() {
        assert_eq!(da_hashname(b""), 0);
        assert_eq!(da_hashname(b"."), 0x2e);
        assert_eq!(da_hashname(b".."), (0x2e << 7) ^ 0x2e);
    }

    #[test]
    fn extent_encoding_round_trips() {
        let e = Extent {
            file_block: (1 << 54) - 3,
            start_fsb: (1 << 52) - 5,
            blocks: (1 << 21) - 1,
            unwritten: true,
        };
        assert_eq!(decode_extent(&encode_extent(&e)), e);
        let e = Extent {
            file_block: 12345,
            start_fsb: 0x1_2345_6789,
            blocks: 77,
            unwritten: false,
        };
        assert_eq!(decode_extent(&encode_extent(&e)), e);
    }

    #[test]
    fn reads_small_tree() {
        let img = Image::new();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let hello = rng.bytes(3000);
        let data = rng.bytes(12345);
        let hello_src = img.source("hello.src", &hello);
        let data_src = img.source("data.src", &data);
        let empty_src = img.source("empty.src", b"");
        let t336: String = "d/".repeat(168);
        let t337 = format!("{t336}x");
        let t1023: String = (0..1023).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let reserved: &[(&str, u64)] = &[
            ("res1", 1),
            ("res4k", 4096),
            ("res5000", 5000),
            ("res10m", 10_000_000),
            ("res100m", 100 * MIB),
        ];
        let symlinks: &[(&str, &str)] = &[
            ("short", "target/short"),
            ("s336", &t336),
            ("s337", &t337),
            ("s1023", &t1023),
        ];
        let mut proto = String::from("prestage\n0 0\nd--755 0 0\n");
        proto += &format!("hello ---644 0 0 {hello_src}\n");
        proto += &format!("data.bin ---600 1000 1001 {data_src}\n");
        proto += &format!("empty ---644 0 0 {empty_src}\n");
        for (name, size) in reserved {
            proto += &format!("{name} r--644 0 0 {size}\n");
        }
        for (name, target) in symlinks {
            proto += &format!("{name} l--777 0 0 {target}\n");
        }
        proto += "fifo p--644 0 0\nsub d--750 0 0\ninner ---644 0 0 ";
        proto += &format!("{hello_src}\n$\n$\n");
        img.mkfs(&proto, 512 * MIB, &["-L", "prestage"]);

        let fs = img.open();
        let dev = img.file();
        let sb = fs.sb();

        // Superblock against xfs_db.
        let dbsb = img.db_fields(&["sb 0", "print"]);
        let num = |k: &str| -> u64 { dbsb[k].parse().unwrap() };
        assert_eq!(u64::from(sb.block_size), num("blocksize"));
        assert_eq!(sb.block_size, 4096);
        assert_eq!(u64::from(sb.sect_size), num("sectsize"));
        assert_eq!(u64::from(sb.inode_size), num("inodesize"));
        assert_eq!(sb.inode_size, 512);
        assert_eq!(sb.data_blocks, num("dblocks"));
        assert_eq!(u64::from(sb.ag_blocks), num("agblocks"));
        assert_eq!(u64::from(sb.ag_count), num("agcount"));
        assert_eq!(sb.icount, num("icount"));
        assert_eq!(sb.ifree, num("ifree"));
        assert_eq!(sb.free_blocks, num("fdblocks"));
        assert_eq!(sb.root_ino, num("rootino"));
        assert_eq!(sb.log_start_fsb, num("logstart"));
        assert_eq!(u64::from(sb.log_blocks), num("logblocks"));
        assert_eq!(u64::from(sb.agblklog), num("agblklog"));
        assert_eq!(uuid_string(&sb.uuid), dbsb["uuid"]);
        assert_eq!(sb.label, b"prestage");
        assert_eq!(sb.dir_block_size, 4096);
        assert!(sb.has_ftype);
        assert_eq!(
            sb.log_byte_range(),
            (
                num("logstart") * 4096
                    - (num("logstart") >> sb.agblklog)
                        * ((1 << sb.agblklog) - num("agblocks"))
                        * 4096,
                num("logblocks") * 4096
            )
        );
        for r in sb.sb_regions() {
            assert!(crc_ok(&read_dev(&dev, r.start, r.len), SB_CRC_OFFSET));
        }

        // Root listing: shortform, in protofile order.
        let root = sb.root_ino;
        assert_eq!(fs.dir_form(root).unwrap(), DirForm::Shortform);
        assert_eq!(
            img.db_fields(&[&format!("inode {root}"), "print"])["core.format"],
            "1 (local)"
        );
        let mut expected: Vec<String> = vec!["hello".into(), "data.bin".into(), "empty".into()];
        expected.extend(reserved.iter().map(|(n, _)| n.to_string()));
        expected.extend(symlinks.iter().map(|(n, _)| n.to_string()));
        expected.extend(["fifo".into(), "sub".into()]);
        let listing = fs.read_dir(root).unwrap();
        let got: Vec<String> = listing
            .iter()
            .map(|e| String::from_utf8(e.name.clone()).unwrap())
            .collect();
        assert_eq!(got, expected);
        for e in &listing {
            check_loc(&dev, &e.name_loc, &e.name);
            assert_eq!(e.name_loc.region, fs.inode_region(root).unwrap());
        }

        // Walk: parents first, every path once.
        let walk = fs.walk().unwrap();
        let paths: Vec<String> = walk
            .iter()
            .map(|w| String::from_utf8(w.path.clone()).unwrap())
            .collect();
        let mut want_paths = expected.clone();
        want_paths.push("sub/inner".into());
        assert_eq!(paths, want_paths);
        let by_path: HashMap<&str, &WalkEntry> =
            paths.iter().map(|p| p.as_str()).zip(walk.iter()).collect();
        for w in &walk {
            let name = w.path.rsplit(|&b| b == b'/').next().unwrap();
            check_loc(&dev, &w.name_loc, name);
        }
        assert_eq!(by_path["sub"].kind, FileKind::Dir);
        assert_eq!(by_path["fifo"].kind, FileKind::Other(S_IFIFO));
        assert_eq!(by_path["short"].kind, FileKind::Symlink);

        // Copied files read back byte-identical.
        for (path, content) in [
            ("hello", &hello),
            ("data.bin", &data),
            ("sub/inner", &hello),
        ] {
            let ino = by_path[path].ino;
            assert_eq!(&collect_file(&fs, ino), content, "{path}");
            let info = fs.inode(ino).unwrap();
            assert_eq!(info.kind, FileKind::File);
            assert_eq!(info.size, content.len() as u64);
            assert!(info.extents.iter().all(|e| !e.unwritten));
        }
        let data_info = fs.inode(by_path["data.bin"].ino).unwrap();
        assert_eq!(
            (data_info.uid, data_info.gid, data_info.mode),
            (1000, 1001, 0o100600)
        );
        assert!(collect_file(&fs, by_path["empty"].ino).is_empty());

        // Reserved files: size 0, prealloc, unwritten extents exactly as xfs_db reports them.
        for (name, size) in reserved {
            let ino = by_path[name].ino;
            let info = fs.inode(ino).unwrap();
            assert_eq!(info.size, 0, "{name}");
            assert_ne!(info.flags & DIFLAG_PREALLOC, 0, "{name}");
            assert_eq!(info.format, FMT_EXTENTS, "{name}");
            assert_eq!(info.extents, img.db_bmap(ino), "{name}");
            assert!(info.extents.iter().all(|e| e.unwritten), "{name}");
            let blocks: u64 = info.extents.iter().map(|e| e.blocks).sum();
            assert!(blocks >= size.div_ceil(4096), "{name}: {blocks} blocks");
            assert!(collect_file(&fs, ino).is_empty());
            for r in fs.extent_records(ino).unwrap() {
                let raw: [u8; 16] = read_dev(&dev, r.loc.offset, 16).try_into().unwrap();
                assert_eq!(decode_extent(&raw), r.extent);
                check_loc(&dev, &r.loc, &raw);
            }
        }

        // Symlinks, inline and remote. mkfs.xfs up to at least 6.1 writes remote symlink blocks
        // from protofiles without the v5 block header (xfs_repair flags them too): the reader
        // must refuse those clearly; the test then writes the header the kernel would have
        // written, and the result must satisfy both xfs_repair and the reader.
        for (name, target) in symlinks {
            let ino = by_path[name].ino;
            if target.len() > 336 {
                let info = fs.inode(ino).unwrap();
                assert_eq!(info.extents.len(), 1);
                let byte = sb.fsb_to_byte(info.extents[0].start_fsb);
                if read_dev(&dev, byte, 4) != b"XSLM" {
                    let err = format!("{:#}", fs.read_symlink(ino).unwrap_err());
                    assert!(
                        err.contains(&format!("symlink inode {ino}"))
                            && err.contains("bad symlink block magic"),
                        "{err}"
                    );
                    let mut blk = vec![0u8; 4096];
                    blk[..4].copy_from_slice(b"XSLM");
                    blk[8..12].copy_from_slice(&(target.len() as u32).to_be_bytes());
                    blk[16..32].copy_from_slice(&sb.meta_uuid);
                    blk[32..40].copy_from_slice(&ino.to_be_bytes());
                    blk[40..48].copy_from_slice(&(byte / 512).to_be_bytes());
                    blk[56..56 + target.len()].copy_from_slice(target.as_bytes());
                    update_crc(&mut blk, 12);
                    write_at(&img.path, byte, &blk);
                }
            }
            let (got, locs) = fs.read_symlink(ino).unwrap();
            assert_eq!(got, target.as_bytes(), "{name}");
            let mut pos = 0;
            for loc in &locs {
                check_loc(&dev, loc, &got[pos..pos + loc.len as usize]);
                pos += loc.len as usize;
            }
            assert_eq!(pos, got.len());
            let format = &img.db_fields(&[&format!("inode {ino}"), "print"])["core.format"];
            if target.len() <= 336 {
                assert_eq!(format, "1 (local)", "{name}");
                assert_eq!(locs[0].region, fs.inode_region(ino).unwrap());
            } else {
                assert_eq!(format, "2 (extents)", "{name}");
                assert_eq!(locs[0].region.crc_offset, locs[0].region.start + 12);
            }
        }

        // update_crc reproduces the stored checksum of an inode.
        let hello_ino = by_path["hello"].ino;
        let region = fs.inode_region(hello_ino).unwrap();
        let stored = read_dev(&dev, region.start, region.len);
        let mut copy = stored.clone();
        copy[INODE_CRC_OFFSET..INODE_CRC_OFFSET + 4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert!(!crc_ok(&copy, INODE_CRC_OFFSET));
        update_crc(&mut copy, INODE_CRC_OFFSET);
        assert_eq!(copy, stored);

        // Patch a reserved file's size in place: it then reads as zeros, and xfs_repair agrees
        // that the patched image is consistent.
        let res_ino = by_path["res10m"].ino;
        let res_region = fs.inode_region(res_ino).unwrap();
        patch_region(
            &img.path,
            &res_region,
            res_region.start + DI_SIZE_OFFSET as u64,
            &10_000_000u64.to_be_bytes(),
        );
        let fs = img.open();
        let mut total = 0u64;
        let mut chunks = 0;
        fs.read_file(res_ino, &mut |c: &[u8]| {
            assert!(c.len() <= READ_CHUNK && c.iter().all(|&b| b == 0));
            total += c.len() as u64;
            chunks += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((total, chunks), (10_000_000, 10));
        img.repair_check();

        // A corrupted inode byte is caught by the CRC check.
        let byte = stored[130];
        write_at(&img.path, region.start + 130, &[byte ^ 0x40]);
        let fs = img.open();
        let err = format!("{:#}", fs.inode(hello_ino).unwrap_err());
        assert!(
            err.contains("CRC mismatch") && err.contains(&format!("inode {hello_ino}")),
            "{err}"
        );
        assert!(fs.walk().is_err());
        write_at(&img.path, region.start + 130, &[byte]);
        assert!(img.open().inode(hello_ino).is_ok());
    }

    /// Physical filesystem block of logical block `lb` of a mapping.
    fn map_block(extents: &[Extent], lb: u64) -> u64 {
        let e = extents
            .iter()
            .find(|e| e.file_block <= lb && lb < e.file_block + e.blocks)
            .unwrap_or_else(|| panic!("logical block {lb} not mapped"));
        e.start_fsb + (lb - e.file_block)
    }

    /// Reads the directory block starting at logical fs block `lb`.
    fn dir_block_at<R: ReadAt>(fs: &Xfs<R>, dev: &File, extents: &[Extent], lb: u64) -> Vec<u8> {
        let sb = fs.sb();
        let per = 1u64 << sb.dirblklog;
        let first = map_block(extents, lb);
        for i in 1..per {
            assert_eq!(map_block(extents, lb + i), first + i);
        }
        read_dev(dev, sb.fsb_to_byte(first), u64::from(sb.dir_block_size))
    }

    /// The (hash, name) pairs of a directory's hash index, each resolved to the name stored at
    /// the data address the index points to.
    fn hashed_names<R: ReadAt>(fs: &Xfs<R>, dev: &File, ino: u64) -> Vec<(u32, Vec<u8>)> {
        let sb = fs.sb();
        let dbs = u64::from(sb.dir_block_size);
        let per = 1u64 << sb.dirblklog;
        let extents = fs.inode(ino).unwrap().extents;
        let name_at = |addr: u32| -> Vec<u8> {
            let byte = u64::from(addr) * 8;
            let blk = dir_block_at(fs, dev, &extents, (byte / dbs) * per);
            let off = (byte % dbs) as usize;
            let len = blk[off + 8] as usize;
            blk[off + 9..off + 9 + len].to_vec()
        };
        let mut leaves: Vec<(u32, u32)> = Vec::new();
        match fs.dir_form(ino).unwrap() {
            DirForm::Shortform => panic!("shortform directories have no hash index"),
            DirForm::Block => {
                let blk = dir_block_at(fs, dev, &extents, 0);
                let n = blk.len();
                let count = be32(&blk, n - 8).unwrap() as usize;
                let start = n - 8 - count * 8;
                for i in 0..count {
                    let e = start + i * 8;
                    leaves.push((be32(&blk, e).unwrap(), be32(&blk, e + 4).unwrap()));
                }
            }
            DirForm::Leaf | DirForm::Node => {
                let leaf_lb = DIR_LEAF_OFFSET >> sb.blocklog;
                let free_lb = 2 * leaf_lb;
                let mut seen_leaf = false;
                for e in &extents {
                    let mut lb = e.file_block.max(leaf_lb);
                    while lb < (e.file_block + e.blocks).min(free_lb) {
                        let blk = dir_block_at(fs, dev, &extents, lb);
                        lb += per;
                        match be16(&blk, 8).unwrap() {
                            0x3df1 | 0x3dff => {}
                            0x3ebe => continue,
                            m => panic!("unexpected magic {m:#x} in the leaf range"),
                        }
                        seen_leaf = true;
                        assert!(crc_ok(&blk, 12));
                        let count = be16(&blk, 56).unwrap() as usize;
                        for i in 0..count {
                            let e = 64 + i * 8;
                            leaves.push((be32(&blk, e).unwrap(), be32(&blk, e + 4).unwrap()));
                        }
                    }
                }
                assert!(seen_leaf);
            }
        }
        leaves
            .into_iter()
            .filter(|&(_, addr)| addr != 0)
            .map(|(hash, addr)| (hash, name_at(addr)))
            .collect()
    }

    /// Checks a directory listing against the names the protofile gave it, the hash index
    /// against `da_hashname`, and every name location.
    fn check_dir<R: ReadAt>(fs: &Xfs<R>, dev: &File, ino: u64, want: &[String]) {
        let listing = fs.read_dir(ino).unwrap();
        let mut got: Vec<Vec<u8>> = listing.iter().map(|e| e.name.clone()).collect();
        let mut want: Vec<Vec<u8>> = want.iter().map(|n| n.as_bytes().to_vec()).collect();
        got.sort();
        want.sort();
        assert_eq!(got.len(), want.len());
        assert!(
            got == want,
            "directory {ino} listing differs from the protofile"
        );
        for e in &listing {
            check_loc(dev, &e.name_loc, &e.name);
            if fs.dir_form(ino).unwrap() != DirForm::Shortform {
                assert_eq!(e.name_loc.region.len, u64::from(fs.sb().dir_block_size));
                assert_eq!(e.name_loc.region.crc_offset, e.name_loc.region.start + 4);
            }
        }
        if fs.dir_form(ino).unwrap() == DirForm::Shortform {
            return;
        }
        let hashed = hashed_names(fs, dev, ino);
        for (hash, name) in &hashed {
            assert_eq!(
                da_hashname(name),
                *hash,
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        let mut hashed_names: Vec<Vec<u8>> = hashed
            .into_iter()
            .map(|(_, n)| n)
            .filter(|n| n != b"." && n != b"..")
            .collect();
        hashed_names.sort();
        assert!(
            hashed_names == want,
            "directory {ino} hash index differs from the listing"
        );
    }

    fn dir_proto(name: &str, entries: &[String], sub: Option<&str>) -> String {
        let mut p = format!("{name} d--755 0 0\n");
        for (i, n) in entries.iter().enumerate() {
            p += &match i % 10 {
                3 => format!("{n} r--644 0 0 1\n"),
                5 => format!("{n} l--777 0 0 target/{i}\n"),
                _ => format!("{n} p--644 0 0\n"),
            };
        }
        if let Some(sub) = sub {
            p += &format!("{sub} d--755 0 0\nf r--644 0 0 1\n$\n");
        }
        p + "$\n"
    }

    #[test]
    fn reads_directory_forms() {
        let img = Image::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut blk = names(&mut rng, 99, 12);
        blk.push(gen_name(&mut rng, 99, 255));
        let leaf = names(&mut rng, 400, 255);
        let node = names(&mut rng, 20000, 255);
        let mut proto = String::from("prestage\n0 0\nd--755 0 0\n");
        proto += &dir_proto("blk", &blk, Some("sub"));
        proto += &dir_proto("leaf", &leaf, None);
        proto += &dir_proto("node", &node, None);
        proto += "$\n";
        img.mkfs(&proto, 512 * MIB, &[]);
        let fs = img.open();
        let dev = img.file();
        let root = fs.sb().root_ino;
        assert_eq!(fs.dir_form(root).unwrap(), DirForm::Shortform);

        let blk_ino = lookup(&fs, root, "blk");
        let leaf_ino = lookup(&fs, root, "leaf");
        let node_ino = lookup(&fs, root, "node");
        assert_eq!(fs.dir_form(blk_ino).unwrap(), DirForm::Block);
        assert_eq!(fs.dir_form(leaf_ino).unwrap(), DirForm::Leaf);
        assert_eq!(fs.dir_form(node_ino).unwrap(), DirForm::Node);
        // Large directories end up with a btree data fork, which the reader walks too.
        let node_info = fs.inode(node_ino).unwrap();
        assert_eq!(node_info.format, FMT_BTREE);
        assert_eq!(node_info.extents, img.db_bmap(node_ino));

        let mut blk_all = blk.clone();
        blk_all.push("sub".into());
        check_dir(&fs, &dev, blk_ino, &blk_all);
        check_dir(&fs, &dev, leaf_ino, &leaf);
        check_dir(&fs, &dev, node_ino, &node);

        let walk = fs.walk().unwrap();
        assert_eq!(walk.len(), 3 + blk_all.len() + 1 + leaf.len() + node.len());
        let mut seen = HashSet::new();
        for w in &walk {
            if let Some(p) = w.path.iter().rposition(|&b| b == b'/') {
                assert!(
                    seen.contains(&w.path[..p]),
                    "parent of {:?} not listed first",
                    w.path
                );
            }
            seen.insert(w.path.clone());
        }
        assert!(seen.contains(b"blk/sub/f".as_slice()));

        // update_crc reproduces the stored checksum of a directory block.
        let info = fs.inode(blk_ino).unwrap();
        let byte = fs.sb().fsb_to_byte(info.extents[0].start_fsb);
        let stored = read_dev(&dev, byte, 4096);
        let mut copy = stored.clone();
        copy[4..8].fill(0);
        update_crc(&mut copy, DIR_DATA_CRC_OFFSET);
        assert_eq!(copy, stored);
    }

    #[test]
    fn reads_directory_blocks_larger_than_fs_blocks() {
        let img = Image::new();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let blk = names(&mut rng, 300, 12);
        let leaf = names(&mut rng, 1200, 255);
        let node = names(&mut rng, 3000, 255);
        let mut proto = String::from("prestage\n0 0\nd--755 0 0\n");
        proto += &dir_proto("blk", &blk, None);
        proto += &dir_proto("leaf", &leaf, None);
        proto += &dir_proto("node", &node, None);
        proto += "$\n";
        img.mkfs(&proto, 512 * MIB, &["-n", "size=16384"]);
        let fs = img.open();
        let dev = img.file();
        assert_eq!((fs.sb().dir_block_size, fs.sb().dirblklog), (16384, 2));
        let root = fs.sb().root_ino;
        for (name, entries, form) in [
            ("blk", &blk, DirForm::Block),
            ("leaf", &leaf, DirForm::Leaf),
            ("node", &node, DirForm::Node),
        ] {
            let ino = lookup(&fs, root, name);
            assert_eq!(fs.dir_form(ino).unwrap(), form, "{name}");
            check_dir(&fs, &dev, ino, entries);
        }
        assert_eq!(
            fs.walk().unwrap().len(),
            3 + blk.len() + leaf.len() + node.len()
        );
    }

    #[test]
    fn reserved_file_spanning_allocation_groups() {
        for nrext64 in ["nrext64=0", "nrext64=1"] {
            let img = Image::new();
            let src = img.source("small.src", &Rng(7).bytes(5000));
            let proto = format!(
                "prestage\n0 0\nd--755 0 0\nbig r--644 0 0 {}\nsmall ---644 0 0 {src}\n$\n",
                600 * MIB
            );
            img.mkfs(&proto, GIB, &["-d", "agcount=8", "-i", nrext64]);
            let fs = img.open();
            let sb = fs.sb().clone();
            let has_nrext64 = sb.features_incompat & INCOMPAT_NREXT64 != 0;
            assert_eq!(has_nrext64, nrext64 == "nrext64=1");
            let big = lookup(&fs, sb.root_ino, "big");
            let info = fs.inode(big).unwrap();
            assert_eq!(info.flags2 & DIFLAG2_NREXT64 != 0, has_nrext64);
            assert_eq!(info.size, 0);
            assert_ne!(info.flags & DIFLAG_PREALLOC, 0);
            assert_eq!(info.extents, img.db_bmap(big));
            assert_eq!(info.nextents, info.extents.len() as u64);
            assert!(info.extents.iter().all(|e| e.unwritten));
            let ags: HashSet<u64> = info
                .extents
                .iter()
                .map(|e| e.start_fsb >> sb.agblklog)
                .collect();
            assert!(
                ags.len() >= 5,
                "600 MiB should span 5+ AGs of 128 MiB: {ags:?}"
            );
            let blocks: u64 = info.extents.iter().map(|e| e.blocks).sum();
            assert_eq!(blocks, 600 * MIB / 4096);
            let small = lookup(&fs, sb.root_ino, "small");
            assert_eq!(collect_file(&fs, small), Rng(7).bytes(5000));
        }
    }

    #[test]
    fn reserved_file_with_btree_data_fork() {
        let img = Image::new();
        let proto = format!(
            "prestage\n0 0\nd--755 0 0\nhuge r--644 0 0 {}\nafter r--644 0 0 8192\n$\n",
            30 * GIB
        );
        img.mkfs(&proto, 32 * GIB, &["-d", "agcount=400"]);
        let fs = img.open();
        let dev = img.file();
        let sb = fs.sb().clone();
        assert_ne!(
            sb.ag_blocks.count_ones(),
            1,
            "want a non-power-of-two AG size"
        );
        let huge = lookup(&fs, sb.root_ino, "huge");
        let fields = img.db_fields(&[&format!("inode {huge}"), "print"]);
        assert_eq!(fields["core.format"], "3 (btree)");
        let info = fs.inode(huge).unwrap();
        assert_eq!(info.format, FMT_BTREE);
        assert_eq!(info.size, 0);
        assert_ne!(info.flags & DIFLAG_PREALLOC, 0);
        assert_eq!(info.extents, img.db_bmap(huge));
        assert_eq!(info.nextents, info.extents.len() as u64);
        assert!(info.extents.len() > 300);
        assert!(info.extents.iter().all(|e| e.unwritten));
        assert!(info.bmbt_leaves.len() >= 2);
        let mut recs = 0;
        for &leaf in &info.bmbt_leaves {
            let blk = read_dev(&dev, leaf, 4096);
            assert_eq!(&blk[..4], b"BMA3");
            assert!(crc_ok(&blk, BMBT_CRC_OFFSET));
            recs += be16(&blk, 6).unwrap() as usize;
        }
        assert_eq!(recs, info.extents.len());
        let records = fs.extent_records(huge).unwrap();
        assert_eq!(records.len(), info.extents.len());
        for r in &records {
            assert!(info.bmbt_leaves.contains(&r.loc.region.start));
            let raw: [u8; 16] = read_dev(&dev, r.loc.offset, 16).try_into().unwrap();
            assert_eq!(decode_extent(&raw), r.extent);
        }

        // Address arithmetic against xfs_db on a non-power-of-two AG size.
        for e in info.extents.iter().step_by(50) {
            let out = img.db(&[&format!("convert fsb {} byte", e.start_fsb)]);
            assert!(
                out.contains(&format!("({})", sb.fsb_to_byte(e.start_fsb))),
                "{out}"
            );
        }
        for ino in [huge, lookup(&fs, sb.root_ino, "after")] {
            let out = img.db(&[&format!("convert inode {ino} byte")]);
            assert!(out.contains(&format!("({})", sb.ino_to_byte(ino))), "{out}");
        }
        let (log_off, log_len) = sb.log_byte_range();
        let out = img.db(&[&format!("convert fsb {} byte", sb.log_start_fsb)]);
        assert!(out.contains(&format!("({log_off})")), "{out}");
        assert_eq!(log_len, u64::from(sb.log_blocks) * 4096);

        // Give the file a size: it streams as zeros across extents and AGs.
        let size = 2 * GIB + 12345;
        let region = fs.inode_region(huge).unwrap();
        patch_region(
            &img.path,
            &region,
            region.start + DI_SIZE_OFFSET as u64,
            &size.to_be_bytes(),
        );
        let fs = img.open();
        let zeros = vec![0u8; READ_CHUNK];
        let mut total = 0u64;
        fs.read_file(huge, &mut |c: &[u8]| {
            assert!(!c.is_empty() && c.len() <= READ_CHUNK);
            assert!(c == &zeros[..c.len()]);
            total += c.len() as u64;
            Ok(())
        })
        .unwrap();
        assert_eq!(total, size);
        img.repair_check();
    }

    /// A device with one byte range replaced, to feed the reader corrupted metadata.
    struct Overlay<'a> {
        base: &'a File,
        at: u64,
        data: Vec<u8>,
    }

    impl ReadAt for Overlay<'_> {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            ReadAt::read_at(self.base, offset, buf)?;
            let end = offset + buf.len() as u64;
            let pend = self.at + self.data.len() as u64;
            let from = offset.max(self.at);
            let to = end.min(pend);
            if from < to {
                buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                    &self.data[(from - self.at) as usize..(to - self.at) as usize],
                );
            }
            Ok(())
        }

        fn size(&self) -> u64 {
            ReadAt::size(self.base)
        }
    }

    /// The image's checksummed `region` with `edit` applied and the CRC recomputed.
    fn edited<'a>(dev: &'a File, region: &CrcRegion, edit: impl FnOnce(&mut [u8])) -> Overlay<'a> {
        let mut data = read_dev(dev, region.start, region.len);
        edit(&mut data);
        update_crc(&mut data, (region.crc_offset - region.start) as usize);
        Overlay {
            base: dev,
            at: region.start,
            data,
        }
    }

    fn open_err<R: ReadAt>(dev: R) -> String {
        match Xfs::open(dev) {
            Ok(_) => panic!("open unexpectedly succeeded"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn rejects_bad_filesystems() {
        // Not XFS at all.
        let dir = tempfile::tempdir().unwrap();
        let zero = dir.path().join("zero.img");
        File::create(&zero).unwrap().set_len(MIB).unwrap();
        let err = open_err(File::open(&zero).unwrap());
        assert!(err.contains("bad superblock magic"), "{err}");

        // A v4 filesystem.
        let v4 = dir.path().join("v4.img");
        File::create(&v4).unwrap().set_len(512 * MIB).unwrap();
        let out = Command::new(find_tool("mkfs.xfs"))
            .args(["-f", "-q", "-K", "-m", "crc=0"])
            .arg(&v4)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = open_err(File::open(&v4).unwrap());
        assert!(err.contains("only v5"), "{err}");

        // Superblock problems on an otherwise good image.
        let img = Image::new();
        let t1024: String = "ab/".repeat(341) + "c";
        let proto =
            format!("prestage\n0 0\nd--755 0 0\nsub d--755 0 0\n$\nlong l--777 0 0 {t1024}\n$\n");
        img.mkfs(&proto, 512 * MIB, &[]);
        let dev = img.file();
        let fs = img.open();
        let sb_region = fs.sb().sb_regions()[0];
        let err = open_err(edited(&dev, &sb_region, |b| b[219] |= 0x10));
        assert!(err.contains("needing xfs_repair"), "{err}");
        let err = open_err(edited(&dev, &sb_region, |b| b[216] |= 0x10));
        assert!(
            err.contains("unsupported incompatible XFS features"),
            "{err}"
        );
        let mut flipped = read_dev(&dev, 0, 512);
        flipped[150] ^= 1;
        let err = open_err(Overlay {
            base: &dev,
            at: 0,
            data: flipped,
        });
        assert!(
            err.contains("superblock checksum") && err.contains("CRC mismatch"),
            "{err}"
        );

        // A 1024-byte symlink, which mkfs 6.1 accepts but XFS does not.
        let long = lookup(&fs, fs.sb().root_ino, "long");
        let err = format!("{:#}", fs.read_symlink(long).unwrap_err());
        assert!(err.contains("symlink length 1024 is out of range"), "{err}");

        // A directory entry pointing back at the root makes a cycle.
        let root = fs.sb().root_ino;
        let sub = fs
            .read_dir(root)
            .unwrap()
            .into_iter()
            .find(|e| e.name == b"sub")
            .unwrap();
        let loc = sub.name_loc;
        let ino_at = (loc.offset + loc.len + 1 - loc.region.start) as usize;
        let cyclic = edited(&dev, &loc.region, |b| {
            b[ino_at..ino_at + 4].copy_from_slice(&(root as u32).to_be_bytes())
        });
        let err = format!("{:#}", Xfs::open(cyclic).unwrap().walk().unwrap_err());
        assert!(err.contains("directory cycle"), "{err}");
    }

    /// Runs every reader entry point over a possibly corrupt device; only panics and hangs fail.
    fn exercise<R: ReadAt>(dev: R, dirs: &[u64], inodes: &[u64]) {
        let Ok(fs) = Xfs::open(dev) else { return };
        let walked: Vec<u64> = fs
            .walk()
            .map(|w| w.into_iter().map(|e| e.ino).collect())
            .unwrap_or_default();
        for &d in dirs {
            let _ = fs.read_dir(d);
            let _ = fs.dir_form(d);
        }
        for &ino in inodes.iter().chain(walked.iter()) {
            let _ = fs.inode(ino);
            let _ = fs.extent_records(ino);
            let _ = fs.read_symlink(ino);
            let mut budget = 64 * MIB;
            let _ = fs.read_file(ino, &mut |c: &[u8]| {
                budget = budget.saturating_sub(c.len() as u64);
                ensure!(budget > 0, "enough");
                Ok(())
            });
        }
    }

    #[test]
    fn survives_corrupted_metadata() {
        let img = Image::new();
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let src = img.source("f.src", &rng.bytes(9000));
        let blk = names(&mut rng, 40, 12);
        let node = names(&mut rng, 2500, 255);
        let mut proto = String::from("prestage\n0 0\nd--755 0 0\n");
        proto += &format!("file ---644 0 0 {src}\nres r--644 0 0 100000\n");
        proto += &format!("link l--777 0 0 {}\n", "x/".repeat(250));
        proto += &dir_proto("blk", &blk, Some("sub"));
        proto += &dir_proto("node", &node, None);
        proto += "$\n";
        img.mkfs(&proto, 512 * MIB, &[]);
        let dev = img.file();
        let fs = img.open();
        let sb = fs.sb().clone();
        let root = sb.root_ino;
        let dirs = [root, lookup(&fs, root, "blk"), lookup(&fs, root, "node")];
        let inodes = [
            lookup(&fs, root, "file"),
            lookup(&fs, root, "res"),
            lookup(&fs, root, "link"),
        ];

        // Every checksummed structure the reader looks at.
        let mut targets: Vec<CrcRegion> = vec![sb.sb_regions()[0]];
        for &ino in dirs.iter().chain(inodes.iter()) {
            targets.push(fs.inode_region(ino).unwrap());
            let info = fs.inode(ino).unwrap();
            for &leaf in &info.bmbt_leaves {
                targets.push(CrcRegion {
                    start: leaf,
                    len: 4096,
                    crc_offset: leaf + 64,
                });
            }
            if info.kind == FileKind::Symlink {
                let start = sb.fsb_to_byte(info.extents[0].start_fsb);
                targets.push(CrcRegion {
                    start,
                    len: 4096,
                    crc_offset: start + 12,
                });
            }
        }
        let mut dir_blocks: Vec<CrcRegion> = Vec::new();
        for &d in &dirs[1..] {
            for e in fs.read_dir(d).unwrap() {
                if !dir_blocks.contains(&e.name_loc.region) {
                    dir_blocks.push(e.name_loc.region);
                }
            }
        }
        targets.extend(dir_blocks.iter().step_by(7).copied());
        assert_eq!(fs.inode(dirs[2]).unwrap().format, FMT_BTREE);

        for round in 0..400 {
            let target = targets[round % targets.len()];
            let mut data = read_dev(&dev, target.start, target.len);
            for _ in 0..1 + rng.below(4) {
                let pos = rng.below(data.len() as u64) as usize;
                match rng.below(3) {
                    0 => data[pos] ^= 1 << rng.below(8),
                    1 => data[pos] = rng.next() as u8,
                    _ => {
                        let end = (pos + 8).min(data.len());
                        data[pos..end].fill(0xff);
                    }
                }
            }
            if rng.below(4) != 0 {
                update_crc(&mut data, (target.crc_offset - target.start) as usize);
            }
            let overlay = Overlay {
                base: &dev,
                at: target.start,
                data,
            };
            exercise(overlay, &dirs, &inodes);
        }
    }

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
