//! Extended attributes: the attribute fork of an inode, in short form (inline after the data
//! fork) or as one leaf block (`XFS_ATTR3_LEAF`, magic 0x3bee) whose values live in the block or,
//! when too large, in remote value blocks (`XARM`, one header per filesystem block).
//!
//! Every block is checked (magic, CRC32C, its own address, owner inode, filesystem UUID), every
//! entry is bounds-checked against its block, names and values against the lengths they claim,
//! and remote values against the blocks the fork maps. Attribute forks in node form (a da-btree
//! of leaf blocks) or with a btree extent map are refused with a clear error: prestage never
//! writes them.

use anyhow::{anyhow, bail, ensure, Context, Result};

use super::bmap::{decode_extent, Extent, EXTENT_RECORD_LEN};
use super::bytes::{array_at, be16, be32, check_crc, field, u8_at};
use super::inode::{RawInode, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL};
use super::Xfs;
use crate::compose::diskio::ReadAt;

/// Magic of a v5 attribute leaf block (in the da3 block header).
pub(crate) const ATTR3_LEAF_MAGIC: u16 = 0x3bee;
/// Magic of a v5 da-btree node block.
const DA3_NODE_MAGIC: u16 = 0x3ebe;
/// Magic of a v5 remote attribute value block ("XARM").
pub(crate) const ATTR3_RMT_MAGIC: u32 = 0x5841_524d;
/// Offset of the CRC in an attribute leaf block.
pub(crate) const ATTR3_LEAF_CRC_OFFSET: usize = 12;
/// Header bytes of an attribute leaf block.
pub(crate) const ATTR3_LEAF_HDR_LEN: usize = 80;
/// Header bytes of each remote value block.
pub(crate) const ATTR3_RMT_HDR_LEN: usize = 56;
/// Offset of the CRC in a remote value block.
pub(crate) const ATTR3_RMT_CRC_OFFSET: usize = 12;

/// Entry flag: the value is in the leaf block.
pub(crate) const ATTR_LOCAL: u8 = 1 << 0;
/// Entry flag: `trusted.` namespace.
pub(crate) const ATTR_ROOT: u8 = 1 << 1;
/// Entry flag: `security.` namespace.
pub(crate) const ATTR_SECURE: u8 = 1 << 2;
/// Entry flag: set or removal in progress.
const ATTR_INCOMPLETE: u8 = 1 << 7;

/// How an inode's attributes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrForm {
    /// No attribute fork.
    None,
    /// Inline after the data fork.
    Shortform,
    /// One leaf block (and remote value blocks).
    Leaf,
}

/// One extended attribute: its full name (`user.`, `trusted.` or `security.` prefix) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    /// Name with its namespace prefix.
    pub name: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// The full name of an attribute stored under `flags` as `name`.
fn full_name(flags: u8, name: &[u8]) -> Result<Vec<u8>> {
    let prefix: &[u8] = match flags & (ATTR_ROOT | ATTR_SECURE) {
        0 => b"user.",
        ATTR_ROOT => b"trusted.",
        ATTR_SECURE => b"security.",
        _ => bail!("attribute has both the trusted and the security namespace flag"),
    };
    ensure!(
        !name.is_empty() && !name.contains(&0),
        "attribute name is empty or contains NUL"
    );
    let mut v = prefix.to_vec();
    v.extend_from_slice(name);
    Ok(v)
}

impl<R: ReadAt> Xfs<R> {
    /// Every extended attribute of inode `ino`, in on-disk order, and how they are stored.
    pub fn xattrs(&self, ino: u64) -> Result<(AttrForm, Vec<Xattr>)> {
        let raw = self.raw_inode(ino)?;
        self.xattrs_raw(&raw)
            .with_context(|| format!("attribute fork of inode {ino}"))
    }

    pub(crate) fn xattrs_raw(&self, raw: &RawInode) -> Result<(AttrForm, Vec<Xattr>)> {
        let Some(fork) = raw.attr_fork()? else {
            ensure!(
                raw.anextents == 0,
                "no attribute fork, but {} attribute extents",
                raw.anextents
            );
            return Ok((AttrForm::None, Vec::new()));
        };
        match raw.aformat {
            FMT_LOCAL => Ok((AttrForm::Shortform, parse_shortform(fork)?)),
            FMT_EXTENTS => {
                let extents = self.attr_extents(raw, fork)?;
                Ok((AttrForm::Leaf, self.read_leaf(raw.ino, &extents)?))
            }
            FMT_BTREE => bail!("attribute fork with a btree extent map is not supported"),
            other => bail!("unsupported attribute fork format {other}"),
        }
    }

    /// The attribute fork's extent list, checked: in order, no overlap, inside the device.
    fn attr_extents(&self, raw: &RawInode, fork: &[u8]) -> Result<Vec<Extent>> {
        let n = usize::try_from(raw.anextents).map_err(|_| anyhow!("attribute extent count"))?;
        ensure!(
            n <= fork.len() / EXTENT_RECORD_LEN,
            "{n} attribute extents do not fit in the {}-byte attribute fork",
            fork.len()
        );
        let mut out = Vec::with_capacity(n);
        let mut next_free = 0u64;
        for i in 0..n {
            let rec: [u8; EXTENT_RECORD_LEN] = array_at(fork, i * EXTENT_RECORD_LEN)?;
            let e = decode_extent(&rec);
            ensure!(e.blocks > 0, "attribute extent {i} has length 0");
            ensure!(
                e.file_block >= next_free,
                "attribute extent {i} overlaps or precedes the previous one"
            );
            ensure!(!e.unwritten, "attribute extent {i} is unwritten");
            next_free = e.file_block + e.blocks;
            self.sb
                .check_fsb_range(e.start_fsb, e.blocks)
                .with_context(|| format!("attribute extent {i}"))?;
            out.push(e);
        }
        Ok(out)
    }

    /// Filesystem block holding attribute fork block `lb`.
    fn attr_block(extents: &[Extent], lb: u64) -> Result<u64> {
        extents
            .iter()
            .find(|e| e.file_block <= lb && lb < e.file_block + e.blocks)
            .map(|e| e.start_fsb + (lb - e.file_block))
            .ok_or_else(|| anyhow!("attribute fork block {lb} is not mapped"))
    }

    fn read_leaf(&self, owner: u64, extents: &[Extent]) -> Result<Vec<Xattr>> {
        let bs = self.block_size();
        let fsb = Self::attr_block(extents, 0)?;
        let byte = self.sb.check_fsb_range(fsb, 1)?;
        let buf = self.read(byte, bs)?;
        let magic = be16(&buf, 8)?;
        ensure!(
            magic != DA3_NODE_MAGIC,
            "attribute fork in node form (more than one leaf block) is not supported"
        );
        ensure!(
            magic == ATTR3_LEAF_MAGIC,
            "bad attribute leaf magic {magic:#06x} (expected {ATTR3_LEAF_MAGIC:#06x}) at byte {byte}"
        );
        check_crc(&buf, ATTR3_LEAF_CRC_OFFSET)
            .with_context(|| format!("attribute leaf block checksum at byte {byte}"))?;
        self.check_self_describing(&buf, byte, 16, 48, 32, owner)
            .with_context(|| format!("attribute leaf block header at byte {byte}"))?;
        ensure!(
            be32(&buf, 0)? == 0 && be32(&buf, 4)? == 0,
            "attribute leaf block at byte {byte} has siblings (node form is not supported)"
        );
        let count = usize::from(be16(&buf, 56)?);
        let firstused = usize::from(be16(&buf, 60)?);
        ensure!(
            ATTR3_LEAF_HDR_LEN + count * 8 <= firstused && firstused <= bs,
            "attribute leaf block at byte {byte}: {count} entries and first name at {firstused} overlap"
        );
        let mut out = Vec::with_capacity(count);
        let mut last_hash = 0u32;
        for i in 0..count {
            let e = ATTR3_LEAF_HDR_LEN + i * 8;
            let hash = be32(&buf, e)?;
            ensure!(
                hash >= last_hash,
                "attribute entry {i} is out of hash order"
            );
            last_hash = hash;
            let idx = usize::from(be16(&buf, e + 4)?);
            let flags = u8_at(&buf, e + 6)?;
            ensure!(
                flags & ATTR_INCOMPLETE == 0,
                "attribute entry {i} is incomplete"
            );
            ensure!(
                idx >= firstused && idx < bs,
                "attribute entry {i} points at {idx}, outside the name area"
            );
            let (name, value) = if flags & ATTR_LOCAL != 0 {
                let vlen = usize::from(be16(&buf, idx)?);
                let nlen = usize::from(u8_at(&buf, idx + 2)?);
                let name = field(&buf, idx + 3, nlen)?;
                (name, field(&buf, idx + 3 + nlen, vlen)?.to_vec())
            } else {
                let blk = u64::from(be32(&buf, idx)?);
                let vlen = be32(&buf, idx + 4)? as usize;
                let nlen = usize::from(u8_at(&buf, idx + 8)?);
                let name = field(&buf, idx + 9, nlen)?;
                ensure!(
                    vlen <= crate::compose::content::XATTR_VALUE_MAX,
                    "remote attribute value of {vlen} bytes is too long"
                );
                let value = self
                    .read_remote_value(owner, extents, blk, vlen)
                    .with_context(|| {
                        format!(
                            "remote value of attribute {:?}",
                            String::from_utf8_lossy(name)
                        )
                    })?;
                (name, value)
            };
            ensure!(
                super::da_hashname(name) == hash,
                "attribute entry {i} ({:?}) has a wrong hash",
                String::from_utf8_lossy(name)
            );
            let x = Xattr {
                name: full_name(flags, name)?,
                value,
            };
            out.push(x);
        }
        Ok(out)
    }

    fn read_remote_value(
        &self,
        owner: u64,
        extents: &[Extent],
        first: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let bs = self.block_size();
        let per = bs - ATTR3_RMT_HDR_LEN;
        ensure!(len > 0, "an empty value is never remote");
        let mut value = Vec::with_capacity(len);
        let mut lb = first;
        while value.len() < len {
            let fsb = Self::attr_block(extents, lb)?;
            let byte = self.sb.check_fsb_range(fsb, 1)?;
            let buf = self.read(byte, bs)?;
            let magic = be32(&buf, 0)?;
            ensure!(
                magic == ATTR3_RMT_MAGIC,
                "bad remote attribute magic {magic:#010x} at byte {byte}"
            );
            check_crc(&buf, ATTR3_RMT_CRC_OFFSET)
                .with_context(|| format!("remote attribute block checksum at byte {byte}"))?;
            self.check_self_describing(&buf, byte, 40, 32, 16, owner)
                .with_context(|| format!("remote attribute block header at byte {byte}"))?;
            let want = (len - value.len()).min(per);
            let off = be32(&buf, 4)? as usize;
            let n = be32(&buf, 8)? as usize;
            ensure!(
                off == value.len() && n == want,
                "remote attribute block at byte {byte} says {n} bytes at {off}, expected {want} at {}",
                value.len()
            );
            value.extend_from_slice(field(&buf, ATTR3_RMT_HDR_LEN, n)?);
            lb += 1;
        }
        Ok(value)
    }
}

/// Parses a short-form attribute fork.
fn parse_shortform(fork: &[u8]) -> Result<Vec<Xattr>> {
    let total = usize::from(be16(fork, 0)?);
    let count = usize::from(u8_at(fork, 2)?);
    ensure!(
        (4..=fork.len()).contains(&total),
        "short-form attributes claim {total} bytes, the fork holds {}",
        fork.len()
    );
    let sf = &fork[..total];
    let mut out = Vec::with_capacity(count);
    let mut pos = 4;
    for i in 0..count {
        let nlen =
            usize::from(u8_at(sf, pos).with_context(|| format!("short-form attribute {i}"))?);
        let vlen = usize::from(u8_at(sf, pos + 1)?);
        let flags = u8_at(sf, pos + 2)?;
        ensure!(
            flags & !(ATTR_ROOT | ATTR_SECURE) == 0,
            "short-form attribute {i} has unknown flags {flags:#x}"
        );
        let name = field(sf, pos + 3, nlen).with_context(|| format!("short-form attribute {i}"))?;
        let value =
            field(sf, pos + 3 + nlen, vlen).with_context(|| format!("short-form attribute {i}"))?;
        out.push(Xattr {
            name: full_name(flags, name)?,
            value: value.to_vec(),
        });
        pos += 3 + nlen + vlen;
    }
    ensure!(
        pos == total,
        "short-form attributes end at {pos}, the header says {total}"
    );
    Ok(out)
}
