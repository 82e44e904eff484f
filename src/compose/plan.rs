//! Size planning: what a content set needs in an XFS filesystem, computed before anything is
//! written, so that a partition that is too small fails at once with both numbers.
//!
//! The content's blocks come from the XFS writer's own sizing rules ([`write::usage`]): the
//! same inode chunks, directory forms, attribute leaves, remote symlinks and extent btrees it
//! will allocate, and file data in whole blocks. What mkfs.xfs takes besides is modelled on
//! mkfs.xfs 6.1 (4 KiB blocks, 512-byte inodes): the log (max(64 MiB, filesystem / 2048), at
//! most 2 GiB, or the layout's size), per allocation group its headers, btree roots and free
//! list, and the root inode chunk; besides, the writer leaves free in every AG what the kernel
//! reserves there for its metadata btrees. `used` is what the kernel reports used on the
//! finished filesystem (`df` of a read-only mount), plus the log.

use anyhow::{bail, Result};

use crate::compose::content::Content;
use crate::compose::layout::{human, XfsOptions};
use crate::compose::xfs::write;

/// XFS block size used for every filesystem prestage makes.
pub const BLOCK: u64 = 4096;
/// Inode size used for every filesystem prestage makes.
pub const INODE: u64 = 512;

/// What a content set needs, in blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Regular file data.
    pub data: u64,
    /// Directory blocks (data, leaf, node and free-index blocks).
    pub dirs: u64,
    /// Inode chunks and inode btrees.
    pub inodes: u64,
    /// Attribute blocks, remote symlink blocks and extent btree blocks.
    pub other: u64,
}

impl Needs {
    /// Total blocks.
    pub fn total(&self) -> u64 {
        self.data + self.dirs + self.inodes + self.other
    }
}

/// The blocks `content` needs in an XFS filesystem, by the writer's own rules.
pub fn needs(content: &Content) -> Result<Needs> {
    let u = write::usage(content, u64::MAX)?;
    Ok(Needs {
        data: u.data_blocks,
        dirs: u.dir_blocks,
        inodes: u.inode_blocks,
        other: u.attr_blocks + u.symlink_blocks + u.btree_blocks,
    })
}

/// Blocks of the internal log mkfs.xfs makes in a filesystem of `bytes`.
pub fn log_blocks(bytes: u64, opts: &XfsOptions) -> u64 {
    match opts.log_size {
        Some(l) => l.div_ceil(BLOCK),
        None => (bytes / BLOCK / 2048).clamp(16384, 524_288),
    }
}

/// Bytes of the log mkfs.xfs makes in a filesystem of `bytes` with these options.
pub fn log_bytes(bytes: u64, opts: &XfsOptions) -> u64 {
    log_blocks(bytes, opts) * BLOCK
}

/// Allocation groups mkfs.xfs makes in a filesystem of `bytes`.
fn agcount(bytes: u64, opts: &XfsOptions) -> u64 {
    opts.agcount
        .map_or_else(|| (bytes.div_ceil(1 << 40)).max(4), u64::from)
}

/// Blocks of allocation-group metadata in use on a new filesystem: headers, btree roots (a
/// refcount btree root too with reflink), and the root inode chunk.
fn ag_metadata(bytes: u64, opts: &XfsOptions) -> u64 {
    let roots = match opts.profile {
        crate::compose::layout::XfsProfile::Rhel8 => 4,
        crate::compose::layout::XfsProfile::Rhel9 => 5,
    };
    agcount(bytes, opts) * (1 + roots) + 8
}

/// Blocks the content cannot use: mkfs.xfs's allocation-group metadata and free lists, and in
/// every AG the kernel's metadata reservation, which the writer leaves free.
pub fn overhead_blocks(bytes: u64, opts: &XfsOptions) -> u64 {
    let ags = agcount(bytes, opts);
    let ag_blocks = (bytes / BLOCK).div_ceil(ags);
    let reflink = opts.profile == crate::compose::layout::XfsProfile::Rhel9;
    ag_metadata(bytes, opts) + ags * (4 + write::kernel_reserve(ag_blocks, 0, true, reflink))
}

/// Blocks of an empty filesystem of `bytes` left for content after mkfs.xfs's log and
/// allocation-group metadata.
pub fn available(bytes: u64, opts: &XfsOptions) -> u64 {
    (bytes / BLOCK).saturating_sub(log_blocks(bytes, opts) + overhead_blocks(bytes, opts))
}

/// The smallest mkfs.xfs accepts.
pub const MIN_XFS_BYTES: u64 = 300_000_000;

/// How a content set fits an XFS partition, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Fit {
    /// The partition's size.
    pub partition: u64,
    /// Regular file data (whole blocks).
    pub data: u64,
    /// Directories, inodes, symlinks and extent btrees.
    pub metadata: u64,
    /// The internal log of a filesystem of this size.
    pub log: u64,
    /// Allocation-group headers and free-space btrees.
    pub overhead: u64,
    /// Free space kept (1% of the content, at least 16 MiB).
    pub headroom: u64,
    /// What the content and headroom need after the log and overhead.
    pub needed: u64,
    /// What the partition offers after the log and overhead.
    pub available: u64,
    /// Space the filesystem will use once filled: the log, and what the kernel reports used
    /// (`df`: allocation-group metadata, the blocks it sets aside, data, metadata).
    pub used: u64,
    /// Whether it fits.
    pub fits: bool,
    /// The smallest partition (whole MiB) the content fits.
    pub smallest_partition: u64,
}

/// How `content` fits a partition of `bytes` with these options.
pub fn fit(bytes: u64, opts: &XfsOptions, content: &Content) -> Result<Fit> {
    let n = needs(content)?;
    let need = n.total() + headroom(n.total());
    let avail = available(bytes, opts);
    // The smallest size in MiB whose available blocks cover the need (available grows with
    // the size), and never below what mkfs.xfs accepts.
    let mib = 1u64 << 20;
    let mut lo = MIN_XFS_BYTES.div_ceil(mib);
    let mut hi = (need * BLOCK).div_ceil(mib) * 2 + 4096;
    while available(hi * mib, opts) < need {
        hi *= 2;
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if available(mid * mib, opts) >= need {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(Fit {
        partition: bytes,
        data: n.data * BLOCK,
        metadata: (n.dirs + n.inodes + n.other) * BLOCK,
        log: log_blocks(bytes, opts) * BLOCK,
        overhead: overhead_blocks(bytes, opts) * BLOCK,
        headroom: headroom(n.total()) * BLOCK,
        needed: need * BLOCK,
        available: avail * BLOCK,
        used: (log_blocks(bytes, opts)
            + ag_metadata(bytes, opts)
            + 8 * agcount(bytes, opts)
            + n.total())
            * BLOCK,
        fits: need <= avail && bytes >= MIN_XFS_BYTES,
        smallest_partition: lo * mib,
    })
}

/// Headroom kept free: 1% of the need, at least 16 MiB.
pub fn headroom(need_blocks: u64) -> u64 {
    (need_blocks / 100).max((16 << 20) / BLOCK)
}

/// Fails unless `content` fits a partition of `bytes` with these options.
pub fn check_fits(label: &str, bytes: u64, opts: &XfsOptions, content: &Content) -> Result<Needs> {
    let n = needs(content).map_err(|e| anyhow::anyhow!("partition `{label}`: {e:#}"))?;
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
        // mkfs.xfs 6.1: 1 GiB -> fdblocks 245732 (4 AGs of 65536 blocks, 4 on each free list);
        // 250 GiB -> 65503972 (4 AGs of 16384000). The writer leaves the kernel's per-AG
        // reservation free besides.
        for (bytes, fdblocks, ag) in [
            (1u64 << 30, 245_732u64, 65_536u64),
            (250 << 30, 65_503_972, 16_384_000),
        ] {
            let want = fdblocks - 4 * (4 + write::kernel_reserve(ag, 0, true, false));
            let got = available(bytes, &o);
            assert!(got <= want && got + 64 > want, "{bytes}: {got} vs {want}");
        }
    }

    #[test]
    fn smallest_partition_is_the_boundary() {
        let o = XfsOptions {
            profile: XfsProfile::Rhel8,
            agcount: None,
            log_size: None,
        };
        for size in [1u64 << 20, 900 << 20, 5 << 30, 70 << 30] {
            let mut c = Content::new();
            c.add(Entry::file(
                "big",
                0o644,
                size,
                Source::Bytes(Default::default()),
            ))
            .unwrap();
            let f = fit(1 << 30, &o, &c).unwrap();
            assert_eq!(f.data, size.div_ceil(BLOCK) * BLOCK);
            assert!(f.smallest_partition >= MIN_XFS_BYTES);
            assert!(fit(f.smallest_partition, &o, &c).unwrap().fits, "{f:?}");
            if f.smallest_partition > MIN_XFS_BYTES.div_ceil(1 << 20) << 20 {
                assert!(
                    !fit(f.smallest_partition - (1 << 20), &o, &c).unwrap().fits,
                    "{f:?}"
                );
            }
            assert_eq!(f.fits, check_fits("data", 1 << 30, &o, &c).is_ok());
        }
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
