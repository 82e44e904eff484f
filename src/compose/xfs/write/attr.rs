//! Extended attributes in the attribute fork, as the kernel lays them out on a v5 filesystem:
//! short form (inline after the data fork) when every name and value is shorter than 255 bytes
//! and they fit beside the data fork; otherwise one leaf block (`XFS_ATTR3_LEAF`, entries sorted
//! by name hash, names and values packed from the end of the block), with values too large for
//! the leaf (an entry of 3/4 of a block or more) in remote value blocks (`XARM`, a header in
//! every block). Attributes that need more than one leaf block (a da-btree, "node form") are
//! refused with a clear error.

use anyhow::{bail, Result};

use super::{put16, put32, put64, BLOCK};
use crate::compose::content::Xattrs;
use crate::compose::xfs::ondisk::{da_hashname, update_crc};

const LEAF_HDR: usize = 80;
const RMT_HDR: usize = 56;
/// Value bytes each remote block holds.
const RMT_SPACE: usize = BLOCK - RMT_HDR;
const ATTR_LOCAL: u8 = 1;
const ATTR_ROOT: u8 = 2;
const ATTR_SECURE: u8 = 4;
const LEAF_MAGIC: u16 = 0x3bee;

/// How an inode's attributes are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttrShape {
    /// No attributes: no attribute fork.
    None,
    /// Short form: these bytes are the attribute fork.
    Short(Vec<u8>),
    /// A leaf block and this many blocks in all (with the remote value blocks).
    Leaf { blocks: usize },
}

/// One attribute as stored: namespace flag, name without its prefix, value.
struct Stored<'a> {
    flags: u8,
    name: &'a [u8],
    value: &'a [u8],
}

fn stored(xattrs: &Xattrs) -> Result<Vec<Stored<'_>>> {
    xattrs
        .iter()
        .map(|(full, value)| {
            let (flags, name) = if let Some(n) = full.strip_prefix("user.") {
                (0, n)
            } else if let Some(n) = full.strip_prefix("trusted.") {
                (ATTR_ROOT, n)
            } else if let Some(n) = full.strip_prefix("security.") {
                (ATTR_SECURE, n)
            } else {
                bail!("attribute `{full}`: unsupported namespace");
            };
            Ok(Stored {
                flags,
                name: name.as_bytes(),
                value,
            })
        })
        .collect()
}

/// Bytes of a leaf entry's name area for a local value.
fn local_size(name: usize, value: usize) -> usize {
    (3 + name + value + 3) & !3
}

/// Bytes of a leaf entry's name area for a remote value.
fn remote_size(name: usize) -> usize {
    (11 + name + 3) & !3
}

/// Whether a value is kept in the leaf block (the kernel's rule: an entry smaller than 3/4 of
/// a block).
fn is_local(name: usize, value: usize) -> bool {
    local_size(name, value) < BLOCK / 2 + BLOCK / 4
}

/// Chooses the attribute storage; `short_max` is the most the attribute fork may take in the
/// inode for short form.
pub(crate) fn shape(xattrs: &Xattrs, short_max: usize) -> Result<AttrShape> {
    if xattrs.is_empty() {
        return Ok(AttrShape::None);
    }
    let attrs = stored(xattrs)?;
    let sf_ok = attrs
        .iter()
        .all(|a| a.name.len() < 255 && a.value.len() < 255);
    let sf_size = 4 + attrs
        .iter()
        .map(|a| 3 + a.name.len() + a.value.len())
        .sum::<usize>();
    if sf_ok && sf_size <= short_max {
        let mut v = Vec::with_capacity(sf_size);
        v.extend_from_slice(&(sf_size as u16).to_be_bytes());
        v.push(attrs.len() as u8);
        v.push(0);
        for a in &attrs {
            v.push(a.name.len() as u8);
            v.push(a.value.len() as u8);
            v.push(a.flags);
            v.extend_from_slice(a.name);
            v.extend_from_slice(a.value);
        }
        return Ok(AttrShape::Short(v));
    }
    let mut used = LEAF_HDR;
    let mut blocks = 1;
    for a in &attrs {
        used += 8;
        if is_local(a.name.len(), a.value.len()) {
            used += local_size(a.name.len(), a.value.len());
        } else {
            used += remote_size(a.name.len());
            blocks += a.value.len().div_ceil(RMT_SPACE);
        }
    }
    if used > BLOCK {
        bail!(
            "{} extended attributes take {used} bytes of names and values in the leaf, more than \
             one {BLOCK}-byte attribute leaf block holds (node-format attribute trees are not \
             supported)",
            attrs.len()
        );
    }
    Ok(AttrShape::Leaf { blocks })
}

/// The attribute fork's blocks (leaf first, then each remote value's blocks), given the disk
/// address (512-byte units) of each attribute-fork block.
pub(crate) fn blocks(
    xattrs: &Xattrs,
    ino: u64,
    uuid: &[u8; 16],
    daddr: &[u64],
) -> Result<Vec<Vec<u8>>> {
    let mut attrs = stored(xattrs)?;
    attrs.sort_by_key(|a| da_hashname(a.name));
    let mut leaf = vec![0u8; BLOCK];
    let mut out = vec![Vec::new()];
    put16(&mut leaf, 8, LEAF_MAGIC);
    put64(&mut leaf, 16, daddr[0]);
    leaf[32..48].copy_from_slice(uuid);
    put64(&mut leaf, 48, ino);
    let mut first = BLOCK;
    let mut used = 0;
    let mut next_block = 1usize;
    for (i, a) in attrs.iter().enumerate() {
        let e = LEAF_HDR + i * 8;
        put32(&mut leaf, e, da_hashname(a.name));
        let (nlen, vlen) = (a.name.len(), a.value.len());
        if is_local(nlen, vlen) {
            let size = local_size(nlen, vlen);
            first -= size;
            put16(&mut leaf, first, vlen as u16);
            leaf[first + 2] = nlen as u8;
            leaf[first + 3..first + 3 + nlen].copy_from_slice(a.name);
            leaf[first + 3 + nlen..first + 3 + nlen + vlen].copy_from_slice(a.value);
            leaf[e + 6] = a.flags | ATTR_LOCAL;
            used += size;
        } else {
            let size = remote_size(nlen);
            first -= size;
            put32(&mut leaf, first, next_block as u32);
            put32(&mut leaf, first + 4, vlen as u32);
            leaf[first + 8] = nlen as u8;
            leaf[first + 9..first + 9 + nlen].copy_from_slice(a.name);
            leaf[e + 6] = a.flags;
            used += size;
            for (k, chunk) in a.value.chunks(RMT_SPACE).enumerate() {
                let mut b = vec![0u8; BLOCK];
                b[0..4].copy_from_slice(b"XARM");
                put32(&mut b, 4, (k * RMT_SPACE) as u32);
                put32(&mut b, 8, chunk.len() as u32);
                b[16..32].copy_from_slice(uuid);
                put64(&mut b, 32, ino);
                put64(&mut b, 40, daddr[next_block]);
                b[RMT_HDR..RMT_HDR + chunk.len()].copy_from_slice(chunk);
                update_crc(&mut b, 12);
                out.push(b);
                next_block += 1;
            }
        }
        put16(&mut leaf, e + 4, first as u16);
    }
    let base = LEAF_HDR + attrs.len() * 8;
    put16(&mut leaf, 56, attrs.len() as u16);
    put16(&mut leaf, 58, used as u16);
    put16(&mut leaf, 60, first as u16);
    put16(&mut leaf, 64, base as u16);
    put16(&mut leaf, 66, (first - base) as u16);
    update_crc(&mut leaf, 12);
    out[0] = leaf;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_until_it_does_not_fit() {
        let mut x = Xattrs::new();
        x.insert("trusted.overlay.opaque".into(), b"y".to_vec());
        match shape(&x, 280).unwrap() {
            AttrShape::Short(v) => {
                assert_eq!(v.len(), 4 + 3 + 14 + 1);
                assert_eq!(&v[..4], &[0, 22, 1, 0]);
                assert_eq!(v[6], ATTR_ROOT);
            }
            s => panic!("{s:?}"),
        }
        x.insert("user.big".into(), vec![7; 300]);
        assert_eq!(shape(&x, 280).unwrap(), AttrShape::Leaf { blocks: 1 });
        x.insert("user.huge".into(), vec![8; 10_000]);
        assert_eq!(shape(&x, 280).unwrap(), AttrShape::Leaf { blocks: 4 });
        for i in 0..40 {
            x.insert(format!("user.many-{i}"), vec![1; 200]);
        }
        let e = shape(&x, 280).unwrap_err().to_string();
        assert!(e.contains("node-format"), "{e}");
    }
}
