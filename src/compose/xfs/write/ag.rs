//! Each allocation group's metadata rebuilt for what was allocated: the inode btrees (`inobt`,
//! and `finobt` for chunks with free inodes; sparse-inode record format), the free space btrees
//! (`bnobt` by block, `cntbt` by size) over the blocks nobody uses, and the AGF and AGI
//! counters; then the superblock's totals. The btree roots stay where mkfs.xfs put them, extra
//! blocks of taller trees come from the AG itself, and the free list (AGFL) is kept as mkfs.xfs
//! filled it.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{ensure, Context, Result};

use super::alloc::Alloc;
use super::btree::{self, Format};
use super::{put32, Out};
use crate::compose::xfs::ondisk::{
    Agf, Agi, Superblock, AGF_CRC_OFFSET, AGI_CRC_OFFSET, BNOBT_MAGIC, CNTBT_MAGIC, FINOBT_MAGIC,
    INOBT_MAGIC, NULL_AG,
};

/// The inode btree format (sparse-inode records: start, hole mask, count, free count, free
/// mask).
pub(crate) const INOBT: Format = Format {
    magic: INOBT_MAGIC,
    long: false,
    rec_len: 16,
    key_len: 4,
};
const FINOBT: Format = Format {
    magic: FINOBT_MAGIC,
    ..INOBT
};
const BNOBT: Format = Format {
    magic: BNOBT_MAGIC,
    long: false,
    rec_len: 8,
    key_len: 8,
};
const CNTBT: Format = Format {
    magic: CNTBT_MAGIC,
    ..BNOBT
};

/// An allocated chunk of 64 inodes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    /// AG inode number of its first inode.
    pub startino: u32,
    /// Bit `i`: inode `startino + i` is free.
    pub free: u64,
}

/// Blocks a btree of `n` records needs besides its root.
pub(crate) fn extra_blocks(f: &Format, n: usize) -> usize {
    btree::level_sizes(f, n, 1).iter().sum::<usize>() - 1
}

/// Blocks the inode btrees of an AG with `chunks` chunks need besides their roots (the finobt
/// counted at its largest).
pub(crate) fn inode_btree_blocks(chunks: usize, finobt: bool) -> usize {
    extra_blocks(&INOBT, chunks)
        + if finobt {
            extra_blocks(&FINOBT, chunks)
        } else {
            0
        }
}

/// The kernel's `xfs_btree_calc_size`: blocks of a btree of `records` records at the
/// minimum fill (`leaf_min`, `node_min` entries a block).
fn calc_size(leaf_min: u64, node_min: u64, records: u64) -> u64 {
    let mut level = records.div_ceil(leaf_min);
    let mut blocks = level;
    while level > 1 {
        level = level.div_ceil(node_min);
        blocks += level;
    }
    blocks
}

/// Blocks the kernel reserves in an AG of `ag_blocks` (less `log_blocks` when it holds the log)
/// for its free inode btree and, with reflink, its reference count btree to grow into (the
/// per-AG metadata reservation, `xfs_ag_resv_init`), plus a few for the free list. A
/// read-write mount counts on finding them free in that AG, so the writer leaves them free.
pub(crate) fn kernel_reserve(ag_blocks: u64, log_blocks: u64, finobt: bool, reflink: bool) -> u64 {
    let blocks = ag_blocks.saturating_sub(log_blocks);
    let mut ask = 0;
    if finobt {
        // Inode btree records: 16 bytes, pointers 4 + keys 4, 56-byte headers; half full.
        ask += calc_size(126, 252, blocks * 8 / 64);
    }
    if reflink {
        // Reference count records: 12 bytes.
        ask += calc_size(168, 252, blocks);
    }
    ask + 8
}

/// Superblock totals.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    pub icount: u64,
    pub ifree: u64,
    pub fdblocks: u64,
}

/// What the rebuild needs to know about the filesystem.
pub(crate) struct Geometry<'a> {
    pub sb: &'a Superblock,
    pub finobt: bool,
    pub inobtcount: bool,
}

impl Geometry<'_> {
    fn daddr(&self, agno: u32, agbno: u64) -> u64 {
        self.sb
            .fsb_to_byte((u64::from(agno) << self.sb.agblklog) | agbno)
            / 512
    }
    fn sector(&self, agno: u32, n: u64) -> u64 {
        u64::from(agno) * u64::from(self.sb.ag_blocks) * u64::from(self.sb.block_size)
            + n * u64::from(self.sb.sect_size)
    }
}

/// Addresses of a btree's blocks by level: the root is `root`, the others come from `extra`.
fn addresses(sizes: &[usize], root: u32, extra: &[u32]) -> Vec<Vec<u64>> {
    let mut next = extra.iter();
    let top = sizes.len() - 1;
    let mut out = vec![Vec::new(); sizes.len()];
    for (level, &n) in sizes.iter().enumerate().rev() {
        for _ in 0..n {
            let a = if level == top {
                root
            } else {
                *next.next().unwrap_or(&NULL_AG)
            };
            out[level].push(u64::from(a));
        }
    }
    out
}

/// Writes one short-format btree with its root at `root`; returns its level count.
#[allow(clippy::too_many_arguments)]
fn write_tree(
    out: &mut Out,
    g: &Geometry,
    agno: u32,
    f: &Format,
    recs: &[u8],
    root: u32,
    extra: &[u32],
) -> Result<u32> {
    let n = recs.len() / f.rec_len;
    let sizes = btree::level_sizes(f, n, 1);
    ensure!(
        sizes.iter().sum::<usize>() == extra.len() + 1,
        "internal error: {} blocks for a btree of {n} records",
        extra.len() + 1
    );
    let addrs = addresses(&sizes, root, extra);
    let key_len = f.key_len;
    let (blocks, _) = btree::build(
        f,
        recs,
        |r| r[..key_len].to_vec(),
        &addrs,
        |a| g.daddr(agno, a),
        u64::from(agno),
        &g.sb.meta_uuid,
    );
    let bs = u64::from(g.sb.block_size);
    for (a, b) in blocks {
        let byte = g.sb.fsb_to_byte((u64::from(agno) << g.sb.agblklog) | a);
        debug_assert_eq!(byte % bs, 0);
        out.write(byte, &b)?;
    }
    Ok(sizes.len() as u32)
}

fn inobt_records(chunks: &[Chunk], only_free: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(chunks.len() * 16);
    for c in chunks.iter().filter(|c| !only_free || c.free != 0) {
        v.extend_from_slice(&c.startino.to_be_bytes());
        v.extend_from_slice(&0u16.to_be_bytes());
        v.push(64);
        v.push(c.free.count_ones() as u8);
        v.extend_from_slice(&c.free.to_be_bytes());
    }
    v
}

/// Rewrites the inode btrees and AGI of AG `agno`; `ino_extra` and `fino_extra` are the extra
/// blocks reserved for the two trees. Returns (allocated inodes, free inodes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_inode_btrees(
    out: &mut Out,
    file: &File,
    g: &Geometry,
    agi: &Agi,
    chunks: &[Chunk],
    ino_extra: &[u32],
    fino_extra: &[u32],
) -> Result<(u64, u64)> {
    let agno = agi.seqno;
    let recs = inobt_records(chunks, false);
    let level = write_tree(out, g, agno, &INOBT, &recs, agi.root, ino_extra)
        .with_context(|| format!("inode btree of AG {agno}"))?;
    let mut free_level = 0;
    if g.finobt {
        let frecs = inobt_records(chunks, true);
        free_level = write_tree(out, g, agno, &FINOBT, &frecs, agi.free_root, fino_extra)
            .with_context(|| format!("free inode btree of AG {agno}"))?;
    }
    let count = chunks.len() as u32 * 64;
    let freecount: u32 = chunks.iter().map(|c| c.free.count_ones()).sum();
    let at = g.sector(agno, 2);
    let mut b = vec![0u8; g.sb.sect_size as usize];
    file.read_exact_at(&mut b, at)
        .with_context(|| format!("reading the AGI of AG {agno}"))?;
    put32(&mut b, 16, count);
    put32(&mut b, 24, level);
    put32(&mut b, 28, freecount);
    put32(&mut b, 32, chunks.last().map_or(NULL_AG, |c| c.startino));
    if g.finobt {
        put32(&mut b, 332, free_level);
    }
    if g.inobtcount {
        put32(&mut b, 336, ino_extra.len() as u32 + 1);
        put32(&mut b, 340, fino_extra.len() as u32 + 1);
    }
    crate::compose::xfs::ondisk::update_crc(&mut b, AGI_CRC_OFFSET);
    out.write(at, &b)?;
    Ok((u64::from(count), u64::from(freecount)))
}

/// Rewrites the free space btrees and AGF of AG `agno` over what the allocator left free
/// (taking the trees' extra blocks from the end of the AG's free space first). Returns the
/// AG's share of the superblock's free block count.
pub(crate) fn write_free_space(
    out: &mut Out,
    file: &File,
    g: &Geometry,
    agf: &Agf,
    alloc: &mut Alloc,
) -> Result<u64> {
    let agno = agf.seqno;
    let mut bno_extra: Vec<u32> = Vec::new();
    let mut cnt_extra: Vec<u32> = Vec::new();
    // Taking blocks for the trees can only shorten or remove free extents: settle the count.
    for _ in 0..64 {
        let n = alloc.free(agno).len();
        let (nb, nc) = (extra_blocks(&BNOBT, n), extra_blocks(&CNTBT, n));
        if nb == bno_extra.len() && nc == cnt_extra.len() {
            break;
        }
        while bno_extra.len() > nb {
            if let Some(b) = bno_extra.pop() {
                alloc.release(agno, b);
            }
        }
        while cnt_extra.len() > nc {
            if let Some(b) = cnt_extra.pop() {
                alloc.release(agno, b);
            }
        }
        if bno_extra.len() < nb {
            bno_extra.extend(alloc.take_ag_end(agno, nb - bno_extra.len())?);
        }
        if cnt_extra.len() < nc {
            cnt_extra.extend(alloc.take_ag_end(agno, nc - cnt_extra.len())?);
        }
    }
    let free = alloc.free(agno).to_vec();
    ensure!(
        extra_blocks(&BNOBT, free.len()) == bno_extra.len(),
        "internal error: the free space btrees of AG {agno} did not settle"
    );
    let mut by_block = Vec::with_capacity(free.len() * 8);
    for &(s, l) in &free {
        by_block.extend_from_slice(&s.to_be_bytes());
        by_block.extend_from_slice(&l.to_be_bytes());
    }
    let mut sized = free.clone();
    sized.sort_unstable_by_key(|&(s, l)| (l, s));
    let mut by_size = Vec::with_capacity(free.len() * 8);
    for &(s, l) in &sized {
        by_size.extend_from_slice(&s.to_be_bytes());
        by_size.extend_from_slice(&l.to_be_bytes());
    }
    let bno_level = write_tree(out, g, agno, &BNOBT, &by_block, agf.bno_root, &bno_extra)
        .with_context(|| format!("free space btree of AG {agno}"))?;
    let cnt_level = write_tree(out, g, agno, &CNTBT, &by_size, agf.cnt_root, &cnt_extra)
        .with_context(|| format!("free space btree of AG {agno}"))?;
    let freeblks: u32 = free.iter().map(|&(_, l)| l).sum();
    let longest = free.iter().map(|&(_, l)| l).max().unwrap_or(0);
    let btreeblks = (bno_extra.len() + cnt_extra.len()) as u32;
    let at = g.sector(agno, 1);
    let mut b = vec![0u8; g.sb.sect_size as usize];
    file.read_exact_at(&mut b, at)
        .with_context(|| format!("reading the AGF of AG {agno}"))?;
    put32(&mut b, 28, bno_level);
    put32(&mut b, 32, cnt_level);
    put32(&mut b, 52, freeblks);
    put32(&mut b, 56, longest);
    put32(&mut b, 60, btreeblks);
    crate::compose::xfs::ondisk::update_crc(&mut b, AGF_CRC_OFFSET);
    out.write(at, &b)?;
    Ok(u64::from(freeblks) + u64::from(agf.flcount) + u64::from(btreeblks))
}
