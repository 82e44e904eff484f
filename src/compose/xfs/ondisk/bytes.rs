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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_outside_the_buffer_are_errors() {
        let buf = [0x12, 0x34, 0x56, 0x78, 0x9a];
        assert_eq!(be32(&buf, 1).unwrap(), 0x3456_789a);
        assert_eq!(be16(&buf, 3).unwrap(), 0x789a);
        let err = be32(&buf, 2).unwrap_err().to_string();
        assert_eq!(
            err,
            "4-byte field at offset 2 lies outside the 5-byte structure"
        );
        assert!(be64(&buf, 0).is_err());
        assert!(field(&buf, usize::MAX, 2).is_err());
        assert!(u8_at(&buf, 5).is_err());
    }

    #[test]
    fn checksum_is_stored_and_checked_with_its_field_zeroed() {
        let mut buf: Vec<u8> = (0..64u8).collect();
        update_crc(&mut buf, 8);
        assert!(crc_ok(&buf, 8));
        check_crc(&buf, 8).unwrap();
        let stored = buf[8..12].to_vec();
        buf[8..12].fill(0);
        let computed = crc32c::crc32c(&buf);
        assert_eq!(stored, computed.to_le_bytes());
        buf[8..12].copy_from_slice(&stored);
        buf[40] ^= 1;
        assert!(!crc_ok(&buf, 8));
        let err = check_crc(&buf, 8).unwrap_err().to_string();
        assert!(err.starts_with("CRC mismatch"), "{err}");
        assert!(!crc_ok(&buf, 61));
        assert!(check_crc(&buf, 61).is_err());
    }
}
