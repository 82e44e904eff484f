//! The primary superblock: the filesystem's geometry, its features, and the address arithmetic
//! every other structure depends on.
//!
//! Only v5 (CRC-enabled) filesystems are read, and unknown incompatible features are refused. The
//! geometry is validated as a whole ([`Superblock::parse`]) before anything else is read, so the
//! block and inode number checks here ([`Superblock::check_fsb_range`],
//! [`Superblock::check_ino`]) are what keeps every later read inside the data device.

use anyhow::{anyhow, ensure, Context, Result};

use super::bytes::{array_at, be16, be32, be64, check_crc, field, u8_at};

/// Offset of the CRC inside the superblock sector.
pub const SB_CRC_OFFSET: usize = 224;
const SB_MAGIC: u32 = 0x5846_5342; // "XFSB"
const SB_LEN: usize = 264;

const INCOMPAT_FTYPE: u32 = 1 << 0;
const INCOMPAT_SPINODES: u32 = 1 << 1;
const INCOMPAT_META_UUID: u32 = 1 << 2;
const INCOMPAT_BIGTIME: u32 = 1 << 3;
const INCOMPAT_NEEDSREPAIR: u32 = 1 << 4;
pub(crate) const INCOMPAT_NREXT64: u32 = 1 << 5;
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

/// The fields of the primary superblock this reader uses, validated by
/// [`Xfs::open`](super::Xfs::open).
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
    /// Inode chunk alignment in blocks (`sb_inoalignmt`).
    pub inode_align: u32,
    /// Realtime bitmap inode.
    pub rbm_ino: u64,
    /// Realtime summary inode.
    pub rsum_ino: u64,
}

/// ro-compat feature: free inode btree.
pub const RO_COMPAT_FINOBT: u32 = 1 << 0;
/// ro-compat feature: reference count btree (reflink).
pub const RO_COMPAT_REFLINK: u32 = 1 << 2;
/// ro-compat feature: inode btree block counters in the AGI.
pub const RO_COMPAT_INOBTCNT: u32 = 1 << 3;
/// incompat feature: sparse inode chunks.
pub const INCOMPAT_SPINODES_BIT: u32 = INCOMPAT_SPINODES;
/// incompat feature: timestamps beyond 2038.
pub const INCOMPAT_BIGTIME_BIT: u32 = INCOMPAT_BIGTIME;
/// Offsets of the free-space and inode counters in the superblock.
pub const SB_ICOUNT_OFFSET: usize = 128;
/// `sb_ifree`.
pub const SB_IFREE_OFFSET: usize = 136;
/// `sb_fdblocks`.
pub const SB_FDBLOCKS_OFFSET: usize = 144;

impl Superblock {
    pub(crate) fn parse(buf: &[u8]) -> Result<Superblock> {
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
            inode_align: be32(buf, 180)?,
            rbm_ino: be64(buf, 64)?,
            rsum_ino: be64(buf, 72)?,
        };
        if log_start_fsb != 0 {
            sb.check_fsb_range(log_start_fsb, u64::from(log_blocks))
                .context("internal log location")?;
        }
        sb.check_ino(root_ino).context("root inode number")?;
        Ok(sb)
    }

    /// Size of the data device in bytes.
    pub(crate) fn data_bytes(&self) -> u64 {
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

    /// Byte offset in the device of inode `ino`. Out-of-range values saturate;
    /// [`Xfs::inode`](super::Xfs::inode) validates inode numbers before use.
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
    #[cfg(test)]
    pub(crate) fn sb_regions(&self) -> Vec<super::CrcRegion> {
        (0..u64::from(self.ag_count))
            .map(|agno| {
                let start = agno * u64::from(self.ag_blocks) * u64::from(self.block_size);
                super::CrcRegion {
                    start,
                    len: u64::from(self.sect_size),
                    crc_offset: start + SB_CRC_OFFSET as u64,
                }
            })
            .collect()
    }

    /// Validates that `count` blocks starting at `fsb` lie inside one AG of the data device and
    /// returns the byte offset of `fsb`.
    pub(crate) fn check_fsb_range(&self, fsb: u64, count: u64) -> Result<u64> {
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
    pub(crate) fn check_ino(&self, ino: u64) -> Result<u64> {
        let fsb = ino >> self.inopblog;
        self.check_fsb_range(fsb, 1)
            .with_context(|| format!("inode number {ino} is outside the filesystem"))?;
        Ok(self.ino_to_byte(ino))
    }
}

#[cfg(test)]
mod tests {
    use crate::compose::diskio::ReadAt;
    use crate::compose::xfs::ondisk::bytes::update_crc;
    use crate::compose::xfs::ondisk::test_support::*;
    use crate::compose::xfs::ondisk::{CrcRegion, Xfs};
    use std::fs::File;
    use std::process::Command;

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
}
