//! Size planning: what a content set needs in an XFS filesystem, computed before anything is
//! written, so that a partition that is too small fails at once with both numbers.
//!
//! The estimate counts data blocks per file, directory blocks per directory (short-form
//! directories live in the inode), inode chunks, remote symlink blocks and the log and
//! allocation-group overhead mkfs.xfs takes from the partition, plus headroom. It is calibrated on
//! mkfs.xfs 6.1 output (4 KiB blocks, 512-byte inodes): overhead besides the log is a few blocks
//! per allocation group; the default log is max(64 MiB, filesystem / 2048), at most 2 GiB.

use anyhow::{bail, Result};

use crate::compose::content::{Content, Kind};
use crate::compose::layout::{human, XfsOptions};

/// XFS block size used for every filesystem prestage makes.
pub const BLOCK: u64 = 4096;
/// Inode size used for every filesystem prestage makes.
pub const INODE: u64 = 512;
/// Bytes of a directory entry in a data block: inumber, namelen, name, ftype, tag, 8-aligned.
fn dirent_bytes(name_len: u64) -> u64 {
    (8 + 1 + name_len + 1 + 2).div_ceil(8) * 8
}
/// Space in a 512-byte v3 inode's literal area for a short-form directory or inline symlink.
const INLINE_BYTES: u64 = INODE - 176;

/// What a content set needs, in blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Regular file data.
    pub data: u64,
    /// Directory blocks (data, leaf and free-index blocks).
    pub dirs: u64,
    /// Inode chunks and inode btrees.
    pub inodes: u64,
    /// Remote symlink blocks and extent btree blocks.
    pub other: u64,
}

impl Needs {
    /// Total blocks.
    pub fn total(&self) -> u64 {
        self.data + self.dirs + self.inodes + self.other
    }
}

/// Estimates the blocks `content` needs in an XFS filesystem.
pub fn needs(content: &Content) -> Needs {
    let mut n = Needs::default();
    let mut inodes = 1u64; // the root directory
    for kids in content.children().values() {
        let bytes: u64 = kids
            .iter()
            .map(|e| dirent_bytes(e.name().len() as u64))
            .sum::<u64>()
            + 32;
        let sf_bytes: u64 = 6 + kids
            .iter()
            .map(|e| 3 + e.name().len() as u64 + 1 + 4)
            .sum::<u64>();
        if sf_bytes > INLINE_BYTES {
            let data_blocks = (bytes * 11 / 10).div_ceil(BLOCK - 64).max(1);
            let leaf = if data_blocks > 1 {
                (kids.len() as u64 * 8).div_ceil(BLOCK - 64) + 2
            } else {
                0
            };
            n.dirs += data_blocks + leaf;
        }
    }
    for e in content.entries() {
        inodes += 1;
        match &e.kind {
            Kind::File => {
                let blocks = e.size.div_ceil(BLOCK);
                n.data += blocks;
                // One extent btree block per ~250 extents of 8 GiB at most; large files only.
                n.other += blocks / (250 * (8 << 30) / BLOCK);
            }
            Kind::Symlink(t) if t.len() as u64 > INLINE_BYTES => {
                n.other += (t.len() as u64).div_ceil(BLOCK - 56)
            }
            _ => {}
        }
    }
    let chunks = inodes.div_ceil(64);
    n.inodes = chunks * 64 * INODE / BLOCK + 2 * chunks.div_ceil(200) + 8;
    n
}

/// Bytes of the log mkfs.xfs makes in a filesystem of `bytes` with these options.
pub fn log_bytes(bytes: u64, opts: &XfsOptions) -> u64 {
    let blocks = match opts.log_size {
        Some(l) => l.div_ceil(BLOCK),
        None => (bytes / BLOCK / 2048).clamp(16384, 524_288),
    };
    blocks * BLOCK
}

/// Blocks of an empty filesystem of `bytes` left for content after mkfs.xfs's log and
/// allocation-group metadata.
pub fn available(bytes: u64, opts: &XfsOptions) -> u64 {
    let dblocks = bytes / BLOCK;
    let log = log_bytes(bytes, opts) / BLOCK;
    let agcount = opts
        .agcount
        .map_or_else(|| (bytes.div_ceil(1 << 40)).max(4), u64::from);
    dblocks.saturating_sub(log + agcount * 16 + 64)
}

/// Headroom kept free: 1% of the need, at least 16 MiB.
pub fn headroom(need_blocks: u64) -> u64 {
    (need_blocks / 100).max((16 << 20) / BLOCK)
}

/// Fails unless `content` fits a partition of `bytes` with these options.
pub fn check_fits(label: &str, bytes: u64, opts: &XfsOptions, content: &Content) -> Result<Needs> {
    let n = needs(content);
    let need = n.total() + headroom(n.total());
    let avail = available(bytes, opts);
    if need > avail {
        bail!(
            "partition `{label}` is too small: the content needs {} ({} of file data in {} entries, plus \
             directories, inodes and headroom) but a {} XFS partition holds {} after its log and metadata",
            human(need * BLOCK),
            human(content.file_bytes()),
            content.len(),
            human(bytes),
            human(avail * BLOCK)
        );
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::content::{Entry, Source};
    use crate::compose::layout::XfsProfile;

    #[test]
    fn available_matches_mkfs_6_1() {
        let o = XfsOptions {
            profile: XfsProfile::Rhel8,
            agcount: None,
            log_size: None,
        };
        // mkfs.xfs 6.1: 1 GiB -> fdblocks 245732; 250 GiB -> 65503972.
        assert!(available(1 << 30, &o) <= 245_732);
        assert!(available(1 << 30, &o) > 245_732 - 256);
        assert!(available(250 << 30, &o) <= 65_503_972);
        assert!(available(250 << 30, &o) > 65_503_972 - 512);
    }

    #[test]
    fn too_small_names_both_numbers() {
        let mut c = Content::new();
        c.add(Entry::file(
            "big",
            0o644,
            900 << 20,
            Source::Bytes(Default::default()),
        ))
        .unwrap();
        let o = XfsOptions {
            profile: XfsProfile::Rhel8,
            agcount: None,
            log_size: None,
        };
        let e = check_fits("data", 512 << 20, &o, &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("900") && e.contains("512 MiB"), "{e}");
        assert!(check_fits("data", 2 << 30, &o, &c).is_ok());
    }
}
