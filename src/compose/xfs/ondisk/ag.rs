//! Allocation group headers and their short-format btrees: the AGF (free space: the by-block
//! `bnobt` and by-size `cntbt`, the free list), the AGI (inode chunks: `inobt`, `finobt`), and the
//! records of those trees.
//!
//! Headers are checked (magic, version, sequence number, length, CRC32C over the sector, UUID);
//! btree blocks like every other block (magic, CRC32C, address, owner AG, UUID, level, record
//! count), and the walks refuse a block reached twice.

use std::collections::HashSet;

use anyhow::{ensure, Context, Result};

use super::bytes::{array_at, be16, be32, be64, check_crc};
use super::Xfs;
use crate::compose::diskio::ReadAt;

/// Offset of the CRC in the AGF sector.
pub const AGF_CRC_OFFSET: usize = 216;
/// Offset of the CRC in the AGI sector.
pub const AGI_CRC_OFFSET: usize = 312;
/// Offset of the CRC in the AGFL sector.
pub const AGFL_CRC_OFFSET: usize = 32;
/// Header bytes of a short-format (AG) btree block on a v5 filesystem.
pub const SBTREE_HEADER_LEN: usize = 56;
/// Offset of the CRC in a short-format btree block.
pub const SBTREE_CRC_OFFSET: usize = 52;

const AGF_MAGIC: u32 = 0x5841_4746; // "XAGF"
const AGI_MAGIC: u32 = 0x5841_4749; // "XAGI"
const AGFL_MAGIC: u32 = 0x5841_464c; // "XAFL"
/// bnobt block magic ("AB3B").
pub const BNOBT_MAGIC: u32 = 0x4142_3342;
/// cntbt block magic ("AB3C").
pub const CNTBT_MAGIC: u32 = 0x4142_3343;
/// inobt block magic ("IAB3").
pub const INOBT_MAGIC: u32 = 0x4941_4233;
/// finobt block magic ("FIB3").
pub const FINOBT_MAGIC: u32 = 0x4649_4233;
/// The null AG block / AG inode number.
pub const NULL_AG: u32 = 0xffff_ffff;
const MAX_LEVELS: u32 = 9;

/// The AGF fields prestage reads or rewrites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agf {
    /// AG number.
    pub seqno: u32,
    /// Blocks in this AG.
    pub length: u32,
    /// bnobt root block and levels.
    pub bno_root: u32,
    /// bnobt levels.
    pub bno_level: u32,
    /// cntbt root block.
    pub cnt_root: u32,
    /// cntbt levels.
    pub cnt_level: u32,
    /// First free list slot in use.
    pub flfirst: u32,
    /// Last free list slot in use.
    pub fllast: u32,
    /// Blocks on the free list.
    pub flcount: u32,
    /// Free blocks in the free space btrees.
    pub freeblks: u32,
    /// Longest free extent.
    pub longest: u32,
    /// Free space btree blocks besides the roots.
    pub btreeblks: u32,
    /// Refcount btree root (reflink filesystems).
    pub refcount_root: u32,
    /// Refcount btree blocks.
    pub refcount_blocks: u32,
}

/// The AGI fields prestage reads or rewrites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agi {
    /// AG number.
    pub seqno: u32,
    /// Allocated inodes.
    pub count: u32,
    /// inobt root block.
    pub root: u32,
    /// inobt levels.
    pub level: u32,
    /// Free inodes among the allocated ones.
    pub freecount: u32,
    /// AG inode number of the last allocated chunk.
    pub newino: u32,
    /// finobt root block (0 without finobt).
    pub free_root: u32,
    /// finobt levels.
    pub free_level: u32,
    /// inobt blocks (inobtcount feature).
    pub iblocks: u32,
    /// finobt blocks (inobtcount feature).
    pub fblocks: u32,
}

/// One inobt record: a chunk of 64 inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InobtRec {
    /// AG inode number of the first inode of the chunk.
    pub startino: u32,
    /// Sparse-chunk hole mask (a bit per 4 inodes that are not allocated).
    pub holemask: u16,
    /// Inodes allocated in the chunk.
    pub count: u8,
    /// Free inodes in the chunk.
    pub freecount: u8,
    /// Bit `i` set: inode `startino + i` is free.
    pub free: u64,
}

impl<R: ReadAt> Xfs<R> {
    /// Byte offset of sector `n` of AG `agno`.
    pub fn ag_sector_byte(&self, agno: u32, n: u64) -> u64 {
        u64::from(agno) * u64::from(self.sb.ag_blocks) * u64::from(self.sb.block_size)
            + n * u64::from(self.sb.sect_size)
    }

    fn ag_header(&self, agno: u32, sector: u64, magic: u32, crc: usize) -> Result<Vec<u8>> {
        ensure!(agno < self.sb.ag_count, "AG {agno} does not exist");
        let byte = self.ag_sector_byte(agno, sector);
        let buf = self.read(byte, self.sb.sect_size as usize)?;
        let m = be32(&buf, 0)?;
        ensure!(m == magic, "bad magic {m:#010x} (expected {magic:#010x})");
        check_crc(&buf, crc).context("header checksum")?;
        let seq = be32(&buf, if magic == AGFL_MAGIC { 4 } else { 8 })?;
        ensure!(seq == agno, "header says AG {seq}");
        Ok(buf)
    }

    /// Blocks in AG `agno` (the last AG may be shorter).
    pub fn ag_length(&self, agno: u32) -> u32 {
        let full = u64::from(self.sb.ag_blocks);
        let start = u64::from(agno) * full;
        (self.sb.data_blocks.saturating_sub(start)).min(full) as u32
    }

    /// The AGF of AG `agno`.
    pub fn agf(&self, agno: u32) -> Result<Agf> {
        let b = self
            .ag_header(agno, 1, AGF_MAGIC, AGF_CRC_OFFSET)
            .with_context(|| format!("AGF of AG {agno}"))?;
        let uuid: [u8; 16] = array_at(&b, 64)?;
        ensure!(uuid == self.sb.meta_uuid, "AGF of AG {agno}: wrong UUID");
        let agf = Agf {
            seqno: agno,
            length: be32(&b, 12)?,
            bno_root: be32(&b, 16)?,
            cnt_root: be32(&b, 20)?,
            bno_level: be32(&b, 28)?,
            cnt_level: be32(&b, 32)?,
            flfirst: be32(&b, 40)?,
            fllast: be32(&b, 44)?,
            flcount: be32(&b, 48)?,
            freeblks: be32(&b, 52)?,
            longest: be32(&b, 56)?,
            btreeblks: be32(&b, 60)?,
            refcount_blocks: be32(&b, 84)?,
            refcount_root: be32(&b, 88)?,
        };
        ensure!(
            agf.length == self.ag_length(agno),
            "AGF of AG {agno}: length {} (expected {})",
            agf.length,
            self.ag_length(agno)
        );
        Ok(agf)
    }

    /// The AGI of AG `agno`.
    pub fn agi(&self, agno: u32) -> Result<Agi> {
        let b = self
            .ag_header(agno, 2, AGI_MAGIC, AGI_CRC_OFFSET)
            .with_context(|| format!("AGI of AG {agno}"))?;
        let uuid: [u8; 16] = array_at(&b, 296)?;
        ensure!(uuid == self.sb.meta_uuid, "AGI of AG {agno}: wrong UUID");
        Ok(Agi {
            seqno: agno,
            count: be32(&b, 16)?,
            root: be32(&b, 20)?,
            level: be32(&b, 24)?,
            freecount: be32(&b, 28)?,
            newino: be32(&b, 32)?,
            free_root: be32(&b, 328)?,
            free_level: be32(&b, 332)?,
            iblocks: be32(&b, 336)?,
            fblocks: be32(&b, 340)?,
        })
    }

    /// The blocks on AG `agno`'s free list, in list order.
    pub fn agfl_blocks(&self, agno: u32) -> Result<Vec<u32>> {
        let agf = self.agf(agno)?;
        let b = self
            .ag_header(agno, 3, AGFL_MAGIC, AGFL_CRC_OFFSET)
            .with_context(|| format!("AGFL of AG {agno}"))?;
        let slots = (b.len() - 36) / 4;
        let mut out = Vec::new();
        if agf.flcount == 0 {
            return Ok(out);
        }
        let (first, last) = (agf.flfirst as usize, agf.fllast as usize);
        ensure!(
            first < slots && last < slots,
            "AGF of AG {agno}: free list slots {first}..{last} outside the {slots}-slot AGFL"
        );
        let mut i = first;
        loop {
            let bno = be32(&b, 36 + i * 4)?;
            ensure!(
                bno < self.ag_length(agno),
                "AGFL of AG {agno}: block {bno} outside the AG"
            );
            out.push(bno);
            if i == last {
                break;
            }
            i = (i + 1) % slots;
        }
        ensure!(
            out.len() == agf.flcount as usize,
            "AGF of AG {agno}: flcount {} but the list holds {}",
            agf.flcount,
            out.len()
        );
        Ok(out)
    }

    /// The free extents of AG `agno` as `(agbno, blocks)`, from its bnobt, in block order.
    pub fn free_extents(&self, agno: u32) -> Result<Vec<(u32, u32)>> {
        let agf = self.agf(agno)?;
        let mut out = Vec::new();
        self.walk_sbtree(agno, agf.bno_root, agf.bno_level, BNOBT_MAGIC, 8, 8, |r| {
            out.push((be32(r, 0)?, be32(r, 4)?));
            Ok(())
        })
        .with_context(|| format!("bnobt of AG {agno}"))?;
        let mut end = 0u32;
        for &(s, l) in &out {
            ensure!(
                s >= end && l > 0 && u64::from(s) + u64::from(l) <= u64::from(agf.length),
                "bnobt of AG {agno}: bad or unordered extent {s}+{l}"
            );
            end = s + l;
        }
        Ok(out)
    }

    /// The inode chunks of AG `agno`, from its inobt (sparse-inode record format).
    pub fn inode_chunks(&self, agno: u32) -> Result<Vec<InobtRec>> {
        let agi = self.agi(agno)?;
        let mut out = Vec::new();
        self.walk_sbtree(agno, agi.root, agi.level, INOBT_MAGIC, 16, 4, |r| {
            out.push(InobtRec {
                startino: be32(r, 0)?,
                holemask: be16(r, 4)?,
                count: r[6],
                freecount: r[7],
                free: be64(r, 8)?,
            });
            Ok(())
        })
        .with_context(|| format!("inobt of AG {agno}"))?;
        Ok(out)
    }

    /// Calls `f` with every record of a short-format btree, in key order.
    #[allow(clippy::too_many_arguments)]
    fn walk_sbtree(
        &self,
        agno: u32,
        root: u32,
        levels: u32,
        magic: u32,
        rec_len: usize,
        key_len: usize,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        ensure!(
            (1..=MAX_LEVELS).contains(&levels),
            "{levels} levels is out of range"
        );
        let bs = self.block_size();
        let node_max = (bs - SBTREE_HEADER_LEN) / (key_len + 4);
        let leaf_max = (bs - SBTREE_HEADER_LEN) / rec_len;
        let mut stack = vec![(root, levels - 1)];
        let mut seen = HashSet::new();
        while let Some((bno, level)) = stack.pop() {
            ensure!(seen.insert(bno), "block {bno} is reached twice");
            ensure!(
                bno < self.ag_length(agno),
                "block {bno} lies outside the AG"
            );
            let fsb = (u64::from(agno) << self.sb.agblklog) | u64::from(bno);
            let byte = self.sb.fsb_to_byte(fsb);
            let b = self.read(byte, bs)?;
            let m = be32(&b, 0)?;
            ensure!(m == magic, "block {bno}: bad magic {m:#010x}");
            check_crc(&b, SBTREE_CRC_OFFSET).with_context(|| format!("block {bno} checksum"))?;
            ensure!(
                be64(&b, 16)? == byte / 512,
                "block {bno}: header names another address"
            );
            ensure!(
                be32(&b, 48)? == agno,
                "block {bno}: header names another AG"
            );
            let uuid: [u8; 16] = array_at(&b, 32)?;
            ensure!(uuid == self.sb.meta_uuid, "block {bno}: wrong UUID");
            ensure!(
                u32::from(be16(&b, 4)?) == level,
                "block {bno}: level {} (expected {level})",
                be16(&b, 4)?
            );
            let n = usize::from(be16(&b, 6)?);
            if level == 0 {
                ensure!(
                    n <= leaf_max,
                    "block {bno}: {n} records (room for {leaf_max})"
                );
                for i in 0..n {
                    let at = SBTREE_HEADER_LEN + i * rec_len;
                    f(super::bytes::field(&b, at, rec_len)?)?;
                }
            } else {
                ensure!(
                    (1..=node_max).contains(&n),
                    "block {bno}: {n} pointers (room for {node_max})"
                );
                let ptrs = SBTREE_HEADER_LEN + node_max * key_len;
                for i in (0..n).rev() {
                    stack.push((be32(&b, ptrs + i * 4)?, level - 1));
                }
            }
        }
        Ok(())
    }
}
