//! Bulk-loaded btrees: records sorted by key, spread evenly over as few leaves as hold them (so
//! every block but a lone root is at least half full), with node levels above them, every block
//! linked to its siblings. One builder serves the short-format AG btrees (`bnobt`, `cntbt`,
//! `inobt`, `finobt`: 32-bit pointers, owner = AG) and the long-format extent btree of an inode's
//! data fork (`bmbt`: 64-bit pointers, owner = inode, root inside the inode).

use super::{put16, put32, put64, BLOCK};
use crate::compose::xfs::ondisk::update_crc;

/// The block format of a btree.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Format {
    /// Block magic.
    pub magic: u32,
    /// Long (64-bit sibling and child pointers) or short (32-bit).
    pub long: bool,
    /// Bytes of a record.
    pub rec_len: usize,
    /// Bytes of a key.
    pub key_len: usize,
}

impl Format {
    fn hdr(&self) -> usize {
        if self.long {
            72
        } else {
            56
        }
    }
    fn ptr_len(&self) -> usize {
        if self.long {
            8
        } else {
            4
        }
    }
    /// Records a leaf block holds.
    pub(crate) fn leaf_max(&self) -> usize {
        (BLOCK - self.hdr()) / self.rec_len
    }
    /// Children a node block holds.
    pub(crate) fn node_max(&self) -> usize {
        (BLOCK - self.hdr()) / (self.key_len + self.ptr_len())
    }
}

/// A btree's blocks as `(address, bytes)`, and the `(first key, address)` of each block of its
/// top level.
pub(crate) type Built = (Vec<(u64, Vec<u8>)>, Vec<(Vec<u8>, u64)>);

/// Splits `n` items into `parts` counts as even as possible.
fn even(n: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| n / parts + usize::from(i < n % parts))
        .collect()
}

/// Blocks per level, leaves first, for `n` records, adding levels until one holds at most
/// `top_max` blocks: 1 for a tree whose root is a block, the root's capacity for a tree whose
/// root lives in an inode (whose top level then points at the blocks of the last level). An
/// empty tree is one empty leaf.
pub(crate) fn level_sizes(f: &Format, n: usize, top_max: usize) -> Vec<usize> {
    let mut levels = vec![n.div_ceil(f.leaf_max()).max(1)];
    while *levels.last().unwrap_or(&1) > top_max {
        let below = *levels.last().unwrap_or(&1);
        levels.push(below.div_ceil(f.node_max()));
    }
    levels
}

/// Writes the blocks of a btree. `recs` are the sorted records (each `rec_len` bytes),
/// `key_of` gives a record's key bytes, `addrs[level][i]` is the address of block `i` of each
/// level (AG block for short trees, filesystem block for long ones) and `daddr` converts an
/// address to the disk address (512-byte units) stamped in the header. Returns the blocks as
/// `(address, bytes)` and the `(key, address)` of each block of the top level.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    f: &Format,
    recs: &[u8],
    key_of: impl Fn(&[u8]) -> Vec<u8>,
    addrs: &[Vec<u64>],
    daddr: impl Fn(u64) -> u64,
    owner: u64,
    uuid: &[u8; 16],
) -> Built {
    let n = recs.len() / f.rec_len;
    let mut out = Vec::new();
    // (first key, address) of each block of the level just built.
    let mut children: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut start = 0;
    let leaves = &addrs[0];
    for (i, count) in even(n, leaves.len()).into_iter().enumerate() {
        let mut b = header(f, 0, count, leaves, i, &daddr, owner, uuid);
        let h = f.hdr();
        b[h..h + count * f.rec_len]
            .copy_from_slice(&recs[start * f.rec_len..(start + count) * f.rec_len]);
        let key = if count > 0 {
            key_of(&recs[start * f.rec_len..(start + 1) * f.rec_len])
        } else {
            vec![0; f.key_len]
        };
        finish(f, &mut b);
        children.push((key, leaves[i]));
        out.push((leaves[i], b));
        start += count;
    }
    for (level, lvl_addrs) in addrs.iter().enumerate().skip(1) {
        let mut up = Vec::new();
        let mut c = 0;
        for (i, count) in even(children.len(), lvl_addrs.len())
            .into_iter()
            .enumerate()
        {
            let mut b = header(f, level, count, lvl_addrs, i, &daddr, owner, uuid);
            let h = f.hdr();
            let ptrs = h + f.node_max() * f.key_len;
            for (j, (key, addr)) in children[c..c + count].iter().enumerate() {
                b[h + j * f.key_len..h + (j + 1) * f.key_len].copy_from_slice(key);
                if f.long {
                    put64(&mut b, ptrs + j * 8, *addr);
                } else {
                    put32(&mut b, ptrs + j * 4, *addr as u32);
                }
            }
            finish(f, &mut b);
            up.push((children[c].0.clone(), lvl_addrs[i]));
            out.push((lvl_addrs[i], b));
            c += count;
        }
        children = up;
    }
    (out, children)
}

#[allow(clippy::too_many_arguments)]
fn header(
    f: &Format,
    level: usize,
    count: usize,
    addrs: &[u64],
    i: usize,
    daddr: &impl Fn(u64) -> u64,
    owner: u64,
    uuid: &[u8; 16],
) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    put32(&mut b, 0, f.magic);
    put16(&mut b, 4, level as u16);
    put16(&mut b, 6, count as u16);
    let left = if i > 0 { Some(addrs[i - 1]) } else { None };
    let right = addrs.get(i + 1).copied();
    if f.long {
        put64(&mut b, 8, left.unwrap_or(u64::MAX));
        put64(&mut b, 16, right.unwrap_or(u64::MAX));
        put64(&mut b, 24, daddr(addrs[i]));
        b[40..56].copy_from_slice(uuid);
        put64(&mut b, 56, owner);
    } else {
        put32(&mut b, 8, left.map_or(u32::MAX, |a| a as u32));
        put32(&mut b, 12, right.map_or(u32::MAX, |a| a as u32));
        put64(&mut b, 16, daddr(addrs[i]));
        b[32..48].copy_from_slice(uuid);
        put32(&mut b, 48, owner as u32);
    }
    b
}

fn finish(f: &Format, b: &mut [u8]) {
    update_crc(b, if f.long { 64 } else { 52 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_even_leaves() {
        let f = Format {
            magic: 0x4941_4233,
            long: false,
            rec_len: 16,
            key_len: 4,
        };
        assert_eq!(f.leaf_max(), 252);
        assert_eq!(f.node_max(), 505);
        assert_eq!(level_sizes(&f, 0, 1), vec![1]);
        assert_eq!(level_sizes(&f, 252, 1), vec![1]);
        assert_eq!(level_sizes(&f, 4700, 1), vec![19, 1]);
        let bm = Format {
            magic: 0x424d_4133,
            long: true,
            rec_len: 16,
            key_len: 8,
        };
        assert_eq!(bm.leaf_max(), 251);
        assert_eq!(level_sizes(&bm, 30, 20), vec![1]);
        assert_eq!(level_sizes(&bm, 251 * 25, 20), vec![25, 1]);
        assert_eq!(even(10, 3), vec![4, 3, 3]);
    }
}
