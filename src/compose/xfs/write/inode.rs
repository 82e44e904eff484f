//! v3 inodes (512 bytes): the 176-byte core (mode with type and special bits, owner, link count,
//! all four timestamps, size, block count, extent counts, fork offset and formats, generation,
//! next-unlinked pointer, flags, inode number, filesystem UUID, CRC) and the literal area holding
//! the data fork (device number, inline bytes, extent records or the root of an extent btree)
//! and the attribute fork (short-form attributes or extent records). Free inodes of an allocated
//! chunk are written as the kernel initialises them.

use super::{put16, put32, put64, INODE};
use crate::compose::content::Time;
use crate::compose::xfs::ondisk::update_crc;

/// Offset of the literal area (data fork).
pub(crate) const LITERAL: usize = 176;
/// Bytes of the literal area.
pub(crate) const LITINO: usize = INODE - LITERAL;

const FMT_DEV: u8 = 0;
const FMT_LOCAL: u8 = 1;
const FMT_EXTENTS: u8 = 2;
const FMT_BTREE: u8 = 3;
const DIFLAG2_BIGTIME: u64 = 1 << 3;
const NULL_AGINO: u32 = u32::MAX;

/// One extent of a fork: file (or attribute fork) block, filesystem block, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ext {
    /// First block in the fork's address space.
    pub off: u64,
    /// First filesystem block.
    pub fsb: u64,
    /// Blocks.
    pub len: u64,
}

/// Encodes an extent record (never unwritten).
pub(crate) fn extent_record(e: &Ext) -> [u8; 16] {
    let l0 = (e.off << 9) | (e.fsb >> 43);
    let l1 = ((e.fsb & ((1 << 43) - 1)) << 21) | (e.len & ((1 << 21) - 1));
    let mut r = [0u8; 16];
    r[..8].copy_from_slice(&l0.to_be_bytes());
    r[8..].copy_from_slice(&l1.to_be_bytes());
    r
}

/// What the data fork holds.
pub(crate) enum DataFork<'a> {
    /// A device number (devices, FIFOs, sockets).
    Dev(u32),
    /// Inline bytes (short-form directory, inline symlink).
    Local(&'a [u8]),
    /// Extent records.
    Extents(&'a [Ext]),
    /// Root of an extent btree: its level and the `(first file block, child block)` pairs.
    Btree(u16, &'a [(u64, u64)]),
}

/// What the attribute fork holds.
pub(crate) enum AttrFork<'a> {
    /// No attribute fork.
    None,
    /// Short-form attributes.
    Local(&'a [u8]),
    /// Extent records of the leaf and remote value blocks.
    Extents(&'a [Ext]),
}

/// Everything an allocated inode records.
pub(crate) struct Spec<'a> {
    pub ino: u64,
    /// Full mode: type and permission bits.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub time: Time,
    pub size: u64,
    /// Blocks of both forks, btree blocks included.
    pub nblocks: u64,
    /// Data fork extents (all of them, for a btree fork).
    pub nextents: u64,
    pub data: DataFork<'a>,
    pub attr: AttrFork<'a>,
    /// Attribute fork offset in 8-byte units (0: none).
    pub forkoff: u8,
    pub gen: u32,
}

/// A timestamp for an inode with or without bigtime.
pub(crate) fn timestamp(t: Time, bigtime: bool) -> [u8; 8] {
    if bigtime {
        // Nanoseconds since 1901-12-13T20:45:52Z; clamped to what the format holds.
        let secs = (t.secs + (1i64 << 31)).max(0) as u64;
        let ns = secs
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(t.nanos));
        ns.to_be_bytes()
    } else {
        let (s, n) = if t.secs < i64::from(i32::MIN) {
            (i32::MIN, 0)
        } else if t.secs > i64::from(i32::MAX) {
            (i32::MAX, 0)
        } else {
            (t.secs as i32, t.nanos)
        };
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&s.to_be_bytes());
        out[4..].copy_from_slice(&n.to_be_bytes());
        out
    }
}

/// The common header of every inode of a chunk, allocated or free.
fn header(b: &mut [u8], ino: u64, gen: u32, uuid: &[u8; 16]) {
    b[0..2].copy_from_slice(b"IN");
    b[4] = 3;
    put32(b, 92, gen);
    put32(b, 96, NULL_AGINO);
    put64(b, 152, ino);
    b[160..176].copy_from_slice(uuid);
}

/// A free inode as the kernel initialises a new chunk's inodes.
pub(crate) fn free(b: &mut [u8], ino: u64, gen: u32, uuid: &[u8; 16]) {
    b.fill(0);
    header(b, ino, gen, uuid);
    update_crc(b, 100);
}

/// An allocated inode.
pub(crate) fn encode(b: &mut [u8], s: &Spec, bigtime: bool, uuid: &[u8; 16]) {
    b.fill(0);
    header(b, s.ino, s.gen, uuid);
    put16(b, 2, s.mode);
    put32(b, 8, s.uid);
    put32(b, 12, s.gid);
    put32(b, 16, s.nlink);
    let t = timestamp(s.time, bigtime);
    for at in [32, 40, 48, 144] {
        b[at..at + 8].copy_from_slice(&t);
    }
    put64(b, 56, s.size);
    put64(b, 64, s.nblocks);
    put32(b, 76, s.nextents as u32);
    b[82] = s.forkoff;
    // Version counter as the kernel starts it.
    put64(b, 104, 1);
    if bigtime {
        put64(b, 120, DIFLAG2_BIGTIME);
    }
    b[5] = match s.data {
        DataFork::Dev(rdev) => {
            put32(lit_mut(b), 0, rdev);
            FMT_DEV
        }
        DataFork::Local(bytes) => {
            lit_mut(b)[..bytes.len()].copy_from_slice(bytes);
            FMT_LOCAL
        }
        DataFork::Extents(exts) => {
            for (i, e) in exts.iter().enumerate() {
                lit_mut(b)[i * 16..i * 16 + 16].copy_from_slice(&extent_record(e));
            }
            FMT_EXTENTS
        }
        DataFork::Btree(level, children) => {
            let dsize = if s.forkoff == 0 {
                LITINO
            } else {
                usize::from(s.forkoff) * 8
            };
            let max = (dsize - 4) / 16;
            let l = lit_mut(b);
            put16(l, 0, level);
            put16(l, 2, children.len() as u16);
            for (i, &(key, ptr)) in children.iter().enumerate() {
                put64(l, 4 + i * 8, key);
                put64(l, 4 + max * 8 + i * 8, ptr);
            }
            FMT_BTREE
        }
    };
    let aoff = LITERAL + usize::from(s.forkoff) * 8;
    b[83] = match s.attr {
        AttrFork::None => FMT_EXTENTS,
        AttrFork::Local(bytes) => {
            b[aoff..aoff + bytes.len()].copy_from_slice(bytes);
            FMT_LOCAL
        }
        AttrFork::Extents(exts) => {
            for (i, e) in exts.iter().enumerate() {
                b[aoff + i * 16..aoff + i * 16 + 16].copy_from_slice(&extent_record(e));
            }
            put16(b, 80, exts.len() as u16);
            FMT_EXTENTS
        }
    };
    update_crc(b, 100);
}

fn lit_mut(b: &mut [u8]) -> &mut [u8] {
    &mut b[LITERAL..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_encode() {
        assert_eq!(timestamp(Time::secs(1), false), [0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            timestamp(Time { secs: 1, nanos: 5 }, false),
            [0, 0, 0, 1, 0, 0, 0, 5]
        );
        assert_eq!(
            timestamp(Time::secs(0), true),
            ((1u64 << 31) * 1_000_000_000).to_be_bytes()
        );
    }

    #[test]
    fn extent_records_round_trip() {
        use crate::compose::xfs::ondisk::Extent;
        let e = Ext {
            off: 12345,
            fsb: 0x1_2345_6789,
            len: 77,
        };
        let r = extent_record(&e);
        let d: Extent = crate::compose::xfs::ondisk::decode_extent(&r);
        assert_eq!(
            (d.file_block, d.start_fsb, d.blocks, d.unwritten),
            (12345, 0x1_2345_6789, 77, false)
        );
    }
}
