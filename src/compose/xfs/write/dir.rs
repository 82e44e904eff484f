//! Directories in every v3 form, chosen by size as the kernel would: short form inline in the
//! inode; one block (`XDB3`: entries, hash index and tail in one block); leaf (data blocks
//! `XDD3`, one hash index block `LEAF1` with the best-free table in its tail); node (data
//! blocks, `LEAFN` hash index blocks under a da-btree of `DA3` node blocks whose root is the
//! first block of the leaf space, and free-index blocks `XDF3`).
//!
//! Entries are packed into data blocks in name order, `.` and `..` first; each data block ends
//! with at most one unused region, which is its whole best-free table. Hash index blocks are
//! filled evenly and never split a run of equal hashes when they can avoid it. Every block
//! carries its v5 header (address, owner, filesystem UUID) and checksum.

use anyhow::{bail, ensure, Result};

use super::{put16, put32, put64, BLOCK};
use crate::compose::xfs::ondisk::{da_hashname, update_crc, DIR_LEAF_OFFSET};

/// First directory block of the leaf space (32 GiB in), in filesystem blocks.
pub(crate) const LEAF_BLOCK: u64 = DIR_LEAF_OFFSET / BLOCK as u64;
/// First directory block of the free-index space (64 GiB in), in filesystem blocks.
pub(crate) const FREE_BLOCK: u64 = 2 * LEAF_BLOCK;

const DATA_HDR: usize = 64;
const LEAF_HDR: usize = 64;
const NODE_HDR: usize = 64;
const FREE_HDR: usize = 64;
/// Entries of a `LEAFN` block.
const LEAF_MAX: usize = (BLOCK - LEAF_HDR) / 8;
/// Children of a da-btree node block.
const NODE_MAX: usize = (BLOCK - NODE_HDR) / 8;
/// Data blocks one free-index block describes.
const FREE_MAX: usize = (BLOCK - FREE_HDR) / 2;
/// Offset of the first real entry of data block 0 (after `.` and `..`).
const FIRST_OFFSET: usize = DATA_HDR + 16 + 16;

const MAGIC_BLOCK: &[u8; 4] = b"XDB3";
const MAGIC_DATA: &[u8; 4] = b"XDD3";
const MAGIC_FREE: &[u8; 4] = b"XDF3";
const MAGIC_LEAF1: u16 = 0x3df1;
const MAGIC_LEAFN: u16 = 0x3dff;
const MAGIC_NODE: u16 = 0x3ebe;
const FREE_TAG: u16 = 0xffff;

/// One name of a directory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ent<'a> {
    /// The name (1 to 255 bytes).
    pub name: &'a [u8],
    /// Inode it names.
    pub ino: u64,
    /// Directory-entry file type (`XFS_DIR3_FT_*`).
    pub ftype: u8,
}

/// How a directory is stored and how many blocks of each kind it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Inline; the data fork holds this many bytes.
    Short(usize),
    /// One block.
    Block,
    /// Data blocks and one hash index block.
    Leaf { data: usize },
    /// Data blocks, hash index leaves, da-btree nodes and free-index blocks.
    Node {
        data: usize,
        leaves: usize,
        nodes: usize,
        free: usize,
    },
}

impl Shape {
    /// The directory's logical blocks in the order they are laid out on disk.
    pub(crate) fn logical_blocks(&self) -> Vec<u64> {
        match *self {
            Shape::Short(_) => Vec::new(),
            Shape::Block => vec![0],
            Shape::Leaf { data } => (0..data as u64).chain([LEAF_BLOCK]).collect(),
            Shape::Node {
                data,
                leaves,
                nodes,
                free,
            } => (0..data as u64)
                .chain(LEAF_BLOCK..LEAF_BLOCK + (nodes + leaves) as u64)
                .chain(FREE_BLOCK..FREE_BLOCK + free as u64)
                .collect(),
        }
    }

    /// `di_size` of the directory.
    pub(crate) fn size(&self) -> u64 {
        match *self {
            Shape::Short(n) => n as u64,
            Shape::Block => BLOCK as u64,
            Shape::Leaf { data } | Shape::Node { data, .. } => (data * BLOCK) as u64,
        }
    }
}

/// Bytes of a data-block entry with a name of `len` bytes (inumber, length, name, file type,
/// tag; 8-byte aligned).
pub(crate) fn entsize(len: usize) -> usize {
    (8 + 1 + len + 1 + 2 + 7) & !7
}

/// Bytes of the short form of a directory with these entries.
pub(crate) fn short_size(ents: &[Ent], parent: u64) -> usize {
    let wide = parent > u64::from(u32::MAX) || ents.iter().any(|e| e.ino > u64::from(u32::MAX));
    let ino = if wide { 8 } else { 4 };
    2 + ino
        + ents
            .iter()
            .map(|e| 3 + e.name.len() + 1 + ino)
            .sum::<usize>()
}

/// `(data block, offset)` of every entry when packed into data blocks in order.
fn pack(ents: &[Ent]) -> (Vec<(u32, u16)>, usize) {
    let mut at = Vec::with_capacity(ents.len());
    let (mut db, mut off) = (0u32, FIRST_OFFSET);
    for e in ents {
        let n = entsize(e.name.len());
        if off + n > BLOCK {
            db += 1;
            off = DATA_HDR;
        }
        at.push((db, off as u16));
        off += n;
    }
    (at, db as usize + 1)
}

/// Splits `hashes` (sorted) into `LEAFN` blocks: as few as possible, filled evenly, ending a
/// block inside a run of equal hashes only when the run is too long to move. Returns the end
/// index of each leaf.
fn leaf_splits(hashes: &[u32]) -> Vec<usize> {
    let total = hashes.len();
    let leaves = total.div_ceil(LEAF_MAX).max(1);
    let mut ends = Vec::with_capacity(leaves);
    let mut start = 0;
    for i in 0..leaves {
        let left = leaves - i;
        let target = (total - start).div_ceil(left);
        let mut end = (start + target).min(total);
        if i + 1 < leaves {
            // Move the boundary back over a run of equal hashes, within reason.
            let mut e = end;
            while e > start + target / 2 && e < total && hashes[e] == hashes[e - 1] {
                e -= 1;
            }
            if e > start + target / 2 && (e == total || hashes[e] != hashes[e - 1]) {
                end = e;
            }
        }
        ends.push(end);
        start = end;
    }
    // Anything left (moved boundaries) goes to further leaves.
    while start < total {
        let end = (start + LEAF_MAX).min(total);
        ends.push(end);
        start = end;
    }
    ends
}

/// Splits `n` children into nodes of at most [`NODE_MAX`], evenly; returns each node's count.
fn even(n: usize, max: usize) -> Vec<usize> {
    let parts = n.div_ceil(max).max(1);
    (0..parts)
        .map(|i| n / parts + usize::from(i < n % parts))
        .collect()
}

/// Node counts per level above the leaves, bottom-up (the last is the root, of one node).
fn node_levels(leaves: usize) -> Vec<Vec<usize>> {
    let mut levels = Vec::new();
    let mut n = leaves;
    loop {
        let level = even(n, NODE_MAX);
        n = level.len();
        levels.push(level);
        if n == 1 {
            break;
        }
    }
    levels
}

/// The sorted hash index of a multi-block directory: `(hash, address)` of `.`, `..` and every
/// entry.
fn hash_index(ents: &[Ent], at: &[(u32, u16)]) -> Vec<(u32, u32)> {
    let addr = |db: u32, off: u16| (db << 9) | (u32::from(off) >> 3);
    let mut v = Vec::with_capacity(ents.len() + 2);
    v.push((da_hashname(b"."), addr(0, DATA_HDR as u16)));
    v.push((da_hashname(b".."), addr(0, DATA_HDR as u16 + 16)));
    for (e, &(db, off)) in ents.iter().zip(at) {
        v.push((da_hashname(e.name), addr(db, off)));
    }
    v.sort_unstable();
    v
}

/// Chooses how a directory with these entries is stored, with `dspace` bytes of data fork.
pub(crate) fn shape(ents: &[Ent], parent: u64, dspace: usize) -> Shape {
    let short = short_size(ents, parent);
    if short <= dspace {
        return Shape::Short(short);
    }
    let bytes: usize = ents.iter().map(|e| entsize(e.name.len())).sum();
    if FIRST_OFFSET + bytes + (ents.len() + 2) * 8 + 8 <= BLOCK {
        return Shape::Block;
    }
    let (_, data) = pack(ents);
    if LEAF_HDR + (ents.len() + 2) * 8 + data * 2 + 4 <= BLOCK {
        return Shape::Leaf { data };
    }
    let mut hashes: Vec<u32> = ents.iter().map(|e| da_hashname(e.name)).collect();
    hashes.push(da_hashname(b"."));
    hashes.push(da_hashname(b".."));
    hashes.sort_unstable();
    let leaves = leaf_splits(&hashes).len();
    let nodes = node_levels(leaves).iter().map(Vec::len).sum();
    Shape::Node {
        data,
        leaves,
        nodes,
        free: data.div_ceil(FREE_MAX),
    }
}

/// The short form: header (count, 8-byte inode count, parent) and the entries, each with the
/// offset it would have in a block directory.
pub(crate) fn short_form(ents: &[Ent], parent: u64) -> Result<Vec<u8>> {
    ensure!(
        ents.len() < 256,
        "internal error: {} short-form entries",
        ents.len()
    );
    let wide = parent > u64::from(u32::MAX) || ents.iter().any(|e| e.ino > u64::from(u32::MAX));
    let i8count = usize::from(parent > u64::from(u32::MAX))
        + ents.iter().filter(|e| e.ino > u64::from(u32::MAX)).count();
    let mut v = vec![ents.len() as u8, i8count.min(255) as u8];
    let put_ino = |v: &mut Vec<u8>, ino: u64| {
        if wide {
            v.extend_from_slice(&ino.to_be_bytes());
        } else {
            v.extend_from_slice(&(ino as u32).to_be_bytes());
        }
    };
    put_ino(&mut v, parent);
    let mut off = FIRST_OFFSET;
    for e in ents {
        v.push(e.name.len() as u8);
        v.extend_from_slice(&(off as u16).to_be_bytes());
        v.extend_from_slice(e.name);
        v.push(e.ftype);
        put_ino(&mut v, e.ino);
        off += entsize(e.name.len());
    }
    Ok(v)
}

/// Where a directory's blocks go and what they carry in their headers.
pub(crate) struct Place<'a> {
    /// Owner inode.
    pub ino: u64,
    /// Parent inode (the directory itself for the root).
    pub parent: u64,
    /// Filesystem UUID for the headers.
    pub uuid: &'a [u8; 16],
    /// Disk address (512-byte units) of each logical block of [`Shape::logical_blocks`].
    pub daddr: &'a [u64],
}

/// Writes the v5 data block header (magic, address, owner, UUID).
fn data_header(b: &mut [u8], magic: &[u8; 4], p: &Place, i: usize) {
    b[0..4].copy_from_slice(magic);
    put64(b, 8, p.daddr[i]);
    b[24..40].copy_from_slice(p.uuid);
    put64(b, 40, p.ino);
}

/// Writes a da3 block info header (siblings, magic, address, owner, UUID).
fn da_header(b: &mut [u8], magic: u16, forw: u32, back: u32, p: &Place, i: usize) {
    put32(b, 0, forw);
    put32(b, 4, back);
    put16(b, 8, magic);
    put64(b, 16, p.daddr[i]);
    b[32..48].copy_from_slice(p.uuid);
    put64(b, 48, p.ino);
}

/// Writes one data entry at `off`; returns its size.
fn put_entry(b: &mut [u8], off: usize, name: &[u8], ino: u64, ftype: u8) -> usize {
    let n = entsize(name.len());
    put64(b, off, ino);
    b[off + 8] = name.len() as u8;
    b[off + 9..off + 9 + name.len()].copy_from_slice(name);
    b[off + 9 + name.len()] = ftype;
    put16(b, off + n - 2, off as u16);
    n
}

/// Marks `[off, end)` unused and records it as the block's only free region.
fn put_unused(b: &mut [u8], off: usize, end: usize) {
    if end <= off {
        return;
    }
    put16(b, off, FREE_TAG);
    put16(b, off + 2, (end - off) as u16);
    put16(b, end - 2, off as u16);
    // bestfree[0] in the data header.
    put16(b, 48, off as u16);
    put16(b, 50, (end - off) as u16);
}

/// The blocks of a directory stored in blocks, in [`Shape::logical_blocks`] order.
pub(crate) fn blocks(shape: Shape, ents: &[Ent], p: &Place) -> Result<Vec<Vec<u8>>> {
    match shape {
        Shape::Short(_) => bail!("internal error: short-form directory has no blocks"),
        Shape::Block => Ok(vec![single_block(ents, p)?]),
        Shape::Leaf { data } | Shape::Node { data, .. } => {
            let (at, ndata) = pack(ents);
            ensure!(ndata == data, "internal error: directory packing changed");
            let mut out = data_blocks(ents, &at, ndata, p);
            let bests: Vec<u16> = out
                .iter()
                .map(|b| u16::from_be_bytes([b[50], b[51]]))
                .collect();
            let index = hash_index(ents, &at);
            match shape {
                Shape::Leaf { .. } => {
                    let mut b = vec![0u8; BLOCK];
                    da_header(&mut b, MAGIC_LEAF1, 0, 0, p, ndata);
                    put16(&mut b, 56, index.len() as u16);
                    for (i, &(h, a)) in index.iter().enumerate() {
                        put32(&mut b, LEAF_HDR + i * 8, h);
                        put32(&mut b, LEAF_HDR + i * 8 + 4, a);
                    }
                    put32(&mut b, BLOCK - 4, ndata as u32);
                    let base = BLOCK - 4 - 2 * ndata;
                    for (i, &best) in bests.iter().enumerate() {
                        put16(&mut b, base + 2 * i, best);
                    }
                    update_crc(&mut b, 12);
                    out.push(b);
                }
                Shape::Node {
                    leaves,
                    nodes,
                    free,
                    ..
                } => {
                    out.extend(node_blocks(&index, ndata, leaves, nodes, p)?);
                    for f in 0..free {
                        let i = ndata + nodes + leaves + f;
                        let mut b = vec![0u8; BLOCK];
                        data_header(&mut b, MAGIC_FREE, p, i);
                        let first = f * FREE_MAX;
                        let n = (ndata - first).min(FREE_MAX);
                        put32(&mut b, 48, first as u32);
                        put32(&mut b, 52, n as u32);
                        put32(&mut b, 56, n as u32);
                        for j in 0..n {
                            put16(&mut b, FREE_HDR + 2 * j, bests[first + j]);
                        }
                        update_crc(&mut b, 4);
                        out.push(b);
                    }
                }
                _ => unreachable!(),
            }
            Ok(out)
        }
    }
}

fn single_block(ents: &[Ent], p: &Place) -> Result<Vec<u8>> {
    let mut b = vec![0u8; BLOCK];
    data_header(&mut b, MAGIC_BLOCK, p, 0);
    let mut off = DATA_HDR;
    off += put_entry(&mut b, off, b".", p.ino, 2);
    off += put_entry(&mut b, off, b"..", p.parent, 2);
    let mut index = vec![
        (da_hashname(b"."), (DATA_HDR >> 3) as u32),
        (da_hashname(b".."), ((DATA_HDR + 16) >> 3) as u32),
    ];
    for e in ents {
        index.push((da_hashname(e.name), (off >> 3) as u32));
        off += put_entry(&mut b, off, e.name, e.ino, e.ftype);
    }
    index.sort_unstable();
    let leaf = BLOCK - 8 - index.len() * 8;
    ensure!(off <= leaf, "internal error: block directory overflows");
    put_unused(&mut b, off, leaf);
    for (i, &(h, a)) in index.iter().enumerate() {
        put32(&mut b, leaf + i * 8, h);
        put32(&mut b, leaf + i * 8 + 4, a);
    }
    put32(&mut b, BLOCK - 8, index.len() as u32);
    update_crc(&mut b, 4);
    Ok(b)
}

fn data_blocks(ents: &[Ent], at: &[(u32, u16)], ndata: usize, p: &Place) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..ndata)
        .map(|i| {
            let mut b = vec![0u8; BLOCK];
            data_header(&mut b, MAGIC_DATA, p, i);
            b
        })
        .collect();
    let mut end = vec![DATA_HDR; ndata];
    end[0] += put_entry(&mut out[0], DATA_HDR, b".", p.ino, 2);
    end[0] += put_entry(&mut out[0], end[0], b"..", p.parent, 2);
    for (e, &(db, off)) in ents.iter().zip(at) {
        let b = &mut out[db as usize];
        end[db as usize] =
            usize::from(off) + put_entry(b, usize::from(off), e.name, e.ino, e.ftype);
    }
    for (b, &e) in out.iter_mut().zip(&end) {
        put_unused(b, e, BLOCK);
        update_crc(b, 4);
    }
    out
}

/// The leaf-space blocks of a node directory: root node first, the other nodes level by level
/// from the top, then the leaves.
fn node_blocks(
    index: &[(u32, u32)],
    ndata: usize,
    leaves: usize,
    nodes: usize,
    p: &Place,
) -> Result<Vec<Vec<u8>>> {
    let hashes: Vec<u32> = index.iter().map(|&(h, _)| h).collect();
    let ends = leaf_splits(&hashes);
    ensure!(ends.len() == leaves, "internal error: leaf count changed");
    let levels = node_levels(leaves);
    ensure!(
        levels.iter().map(Vec::len).sum::<usize>() == nodes,
        "internal error: node count changed"
    );
    // Logical block of each node, by level (top first), then of each leaf.
    let mut next = LEAF_BLOCK;
    let mut node_lb: Vec<Vec<u64>> = vec![Vec::new(); levels.len()];
    for (li, level) in levels.iter().enumerate().rev() {
        for _ in level {
            node_lb[li].push(next);
            next += 1;
        }
    }
    let leaf_lb: Vec<u64> = (0..leaves as u64).map(|i| next + i).collect();
    let slot = |lb: u64| ndata + (lb - LEAF_BLOCK) as usize;
    let mut blocks: Vec<Vec<u8>> = vec![Vec::new(); nodes + leaves];
    let link = |lbs: &[u64], i: usize| -> (u32, u32) {
        let forw = lbs.get(i + 1).map_or(0, |&l| l as u32);
        let back = if i > 0 { lbs[i - 1] as u32 } else { 0 };
        (forw, back)
    };
    // Leaves, and the (last hash, block) of each child for the level above.
    let mut children: Vec<(u32, u64)> = Vec::with_capacity(leaves);
    let mut start = 0;
    for (i, &end) in ends.iter().enumerate() {
        let lb = leaf_lb[i];
        let mut b = vec![0u8; BLOCK];
        let (forw, back) = link(&leaf_lb, i);
        da_header(&mut b, MAGIC_LEAFN, forw, back, p, slot(lb));
        put16(&mut b, 56, (end - start) as u16);
        for (j, &(h, a)) in index[start..end].iter().enumerate() {
            put32(&mut b, LEAF_HDR + j * 8, h);
            put32(&mut b, LEAF_HDR + j * 8 + 4, a);
        }
        update_crc(&mut b, 12);
        blocks[slot(lb) - ndata] = b;
        children.push((index[end - 1].0, lb));
        start = end;
    }
    for (li, level) in levels.iter().enumerate() {
        let mut up = Vec::with_capacity(level.len());
        let mut c = 0;
        for (i, &n) in level.iter().enumerate() {
            let lb = node_lb[li][i];
            let mut b = vec![0u8; BLOCK];
            let (forw, back) = link(&node_lb[li], i);
            da_header(&mut b, MAGIC_NODE, forw, back, p, slot(lb));
            put16(&mut b, 56, n as u16);
            put16(&mut b, 58, (li + 1) as u16);
            for (j, &(h, child)) in children[c..c + n].iter().enumerate() {
                put32(&mut b, NODE_HDR + j * 8, h);
                put32(&mut b, NODE_HDR + j * 8 + 4, child as u32);
            }
            update_crc(&mut b, 12);
            blocks[slot(lb) - ndata] = b;
            up.push((children[c + n - 1].0, lb));
            c += n;
        }
        children = up;
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_splits_avoid_equal_hash_runs() {
        let mut h: Vec<u32> = (0..1200).collect();
        // A run of equal hashes around the natural boundary (400).
        for x in h.iter_mut().skip(395).take(10) {
            *x = 395;
        }
        h.sort_unstable();
        let ends = leaf_splits(&h);
        assert_eq!(*ends.last().unwrap(), h.len());
        let mut start = 0;
        for &e in &ends {
            assert!(e - start <= LEAF_MAX && e > start);
            if e < h.len() {
                assert_ne!(h[e], h[e - 1], "split inside a run at {e}");
            }
            start = e;
        }
    }

    #[test]
    fn shapes_follow_size() {
        let names: Vec<Vec<u8>> = (0..20000)
            .map(|i| format!("name-{i:06}").into_bytes())
            .collect();
        let ents = |n: usize| -> Vec<Ent> {
            names[..n]
                .iter()
                .map(|name| Ent {
                    name,
                    ino: 1000,
                    ftype: 1,
                })
                .collect()
        };
        assert!(matches!(shape(&ents(3), 128, 336), Shape::Short(_)));
        assert_eq!(shape(&ents(50), 128, 336), Shape::Block);
        assert!(matches!(shape(&ents(300), 128, 336), Shape::Leaf { .. }));
        match shape(&ents(20000), 128, 336) {
            Shape::Node {
                data,
                leaves,
                nodes,
                free,
            } => {
                assert!(leaves >= 40 && nodes == 1 && free == 1 && data > 100);
            }
            s => panic!("{s:?}"),
        }
    }
}
