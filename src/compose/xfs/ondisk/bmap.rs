//! The data fork's block map: which filesystem blocks hold which blocks of a file, read from the
//! extent list in the inode or from a bmap btree of any depth (long-format `BMA3` blocks).
//!
//! Every btree block is checked (magic, CRC32C, its own address, owner inode, filesystem UUID,
//! level, record count) and the walk refuses a block reached twice, so a corrupt tree can neither
//! loop nor run away. The flattened map is then checked as a whole: as many extents as the inode
//! records, none empty, in file order without overlap, each inside one allocation group.

use std::collections::HashSet;

use anyhow::{anyhow, ensure, Context, Result};

use super::bytes::{array_at, be16, be32, be64, check_crc, to_usize};
use super::inode::{
    inode_region, RawInode, DIFLAG_REALTIME, DI_DATA_FORK_OFFSET, FMT_BTREE, FMT_DEV, FMT_EXTENTS,
    FMT_LOCAL, MAX_FILE_BYTES,
};
use super::{ByteLoc, CrcRegion, Xfs};
use crate::compose::diskio::ReadAt;

/// Offset of the CRC inside a long-format (bmap) btree block.
pub const BMBT_CRC_OFFSET: usize = 64;
/// Offset of the first record (or key) inside a long-format (bmap) btree block.
pub const BMBT_HEADER_LEN: usize = 72;
/// Size of one extent record (`xfs_bmbt_rec`) in bytes.
pub(crate) const EXTENT_RECORD_LEN: usize = 16;

const BMAP_MAGIC: u32 = 0x424d_4133; // "BMA3"
/// Deepest bmap btree accepted (real trees need far fewer levels).
const MAX_BMBT_LEVELS: u16 = 16;

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
pub(crate) fn decode_extent(rec: &[u8; EXTENT_RECORD_LEN]) -> Extent {
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

/// An extent record of a data fork and where its 16 bytes live (in the inode for extent-format
/// forks, in a bmap btree leaf for btree-format forks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtentRecord {
    /// The decoded record.
    pub extent: Extent,
    /// Location of the 16-byte record and its checksummed container.
    pub loc: ByteLoc,
}

/// A data fork mapping with the location of each record.
pub(crate) struct ForkMap {
    pub(crate) records: Vec<ExtentRecord>,
    pub(crate) leaves: Vec<u64>,
}

impl ForkMap {
    pub(crate) fn extents(&self) -> Vec<Extent> {
        self.records.iter().map(|r| r.extent).collect()
    }
}

impl<R: ReadAt> Xfs<R> {
    /// The data fork extent records of inode `ino` with the location of each 16-byte record, for
    /// callers that rewrite records in place (e.g. to convert unwritten extents to written ones;
    /// bmap btree keys hold only file offsets, so flipping the unwritten bit needs no key update).
    /// Only the tests call it: the finisher patches whole leaves from
    /// [`InodeInfo::bmbt_leaves`](super::InodeInfo::bmbt_leaves).
    #[cfg(test)]
    pub(crate) fn extent_records(&self, ino: u64) -> Result<Vec<ExtentRecord>> {
        let raw = self.raw_inode(ino)?;
        Ok(self.fork_map(&raw)?.records)
    }

    pub(crate) fn fork_map(&self, raw: &RawInode) -> Result<ForkMap> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::xfs::ondisk::bytes::crc_ok;
    use crate::compose::xfs::ondisk::file::READ_CHUNK;
    use crate::compose::xfs::ondisk::inode::{DIFLAG_PREALLOC, DI_SIZE_OFFSET};
    use crate::compose::xfs::ondisk::test_support::*;

    /// Encodes an extent as a 16-byte `xfs_bmbt_rec` (the inverse of [`decode_extent`]). Fields
    /// wider than the on-disk format (54-bit file block, 52-bit disk block, 21-bit length) are
    /// truncated.
    fn encode_extent(e: &Extent) -> [u8; EXTENT_RECORD_LEN] {
        let l0 = (u64::from(e.unwritten) << 63)
            | ((e.file_block & ((1u64 << 54) - 1)) << 9)
            | ((e.start_fsb >> 43) & 0x1ff);
        let l1 = ((e.start_fsb & ((1u64 << 43) - 1)) << 21) | (e.blocks & ((1u64 << 21) - 1));
        let mut out = [0u8; EXTENT_RECORD_LEN];
        out[..8].copy_from_slice(&l0.to_be_bytes());
        out[8..].copy_from_slice(&l1.to_be_bytes());
        out
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
}
