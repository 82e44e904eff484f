//! Checked access to untrusted on-disk bytes, and the XFS metadata checksum.
//!
//! Every value the reader takes from a block or an inode goes through these helpers: a field that
//! does not fit its buffer is an error naming the offset, never a panic or a wrap-around. On-disk
//! integers are big-endian; checksums are little-endian CRC32C values computed over the structure
//! with the CRC field itself taken as zero ([`update_crc`], `check_crc`).

use anyhow::{anyhow, ensure, Context, Result};

/// The `len` bytes at `off`, or an error naming the field when they do not fit in `buf`.
pub(crate) fn field(buf: &[u8], off: usize, len: usize) -> Result<&[u8]> {
    off.checked_add(len)
        .and_then(|end| buf.get(off..end))
        .ok_or_else(|| {
            anyhow!(
                "{len}-byte field at offset {off} lies outside the {}-byte structure",
                buf.len()
            )
        })
}

pub(crate) fn u8_at(buf: &[u8], off: usize) -> Result<u8> {
    buf.get(off)
        .copied()
        .ok_or_else(|| anyhow!("byte {off} lies outside the {}-byte structure", buf.len()))
}

pub(crate) fn array_at<const N: usize>(buf: &[u8], off: usize) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    out.copy_from_slice(field(buf, off, N)?);
    Ok(out)
}

pub(crate) fn be16(buf: &[u8], off: usize) -> Result<u16> {
    Ok(u16::from_be_bytes(array_at(buf, off)?))
}

pub(crate) fn be32(buf: &[u8], off: usize) -> Result<u32> {
    Ok(u32::from_be_bytes(array_at(buf, off)?))
}

pub(crate) fn be64(buf: &[u8], off: usize) -> Result<u64> {
    Ok(u64::from_be_bytes(array_at(buf, off)?))
}

fn le32(buf: &[u8], off: usize) -> Result<u32> {
    Ok(u32::from_le_bytes(array_at(buf, off)?))
}

/// `v` as a length or count in memory, or an error naming `what`.
pub(crate) fn to_usize(v: u64, what: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| anyhow!("{what} {v} does not fit in memory"))
}

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
#[cfg(test)]
pub(crate) fn crc_ok(buf: &[u8], crc_offset: usize) -> bool {
    match (compute_crc(buf, crc_offset), le32(buf, crc_offset)) {
        (Some(computed), Ok(stored)) => computed == stored,
        _ => false,
    }
}

/// Checks the XFS checksum stored at `crc_offset` against the contents of `buf`.
pub(crate) fn check_crc(buf: &[u8], crc_offset: usize) -> Result<()> {
    let stored = le32(buf, crc_offset).context("reading the stored CRC")?;
    let computed = compute_crc(buf, crc_offset)
        .ok_or_else(|| anyhow!("CRC field at offset {crc_offset} outside the structure"))?;
    ensure!(
        stored == computed,
        "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
    );
    Ok(())
}
