//! XFS partitions, built without root: mkfs.xfs makes the empty filesystem of the layout's
//! profile, prestage's own writer populates it, and the pipeline streams file data into place.
//!
//! 1. mkfs.xfs (run through duct, its stderr surfaced) builds an empty filesystem in a sparse,
//!    partition-sized file: geometry, feature bits (pinned by the profile and checked after),
//!    allocation group headers, free lists, the log, the root and realtime inodes.
//! 2. [`write`] populates it: every inode (files, directories in every form, symlinks, devices,
//!    FIFOs, sockets, hard links, owners, modes, times, extended attributes), every directory,
//!    attribute, symlink and extent btree block, file data extents laid out in content order,
//!    and each allocation group's rebuilt btrees and counters.
//! 3. The result, a [`Built`], tells the emit stage which byte ranges of the partition file are
//!    metadata to copy and where each file's bytes go; the file data itself is streamed from its
//!    source straight into the output image and never passes through the partition file.
//!
//! [`ondisk`] reads the format back, for the writer (mkfs.xfs's headers and free space) and for
//! `prestage verify`.

pub mod ondisk;
pub mod write;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use crate::compose::content::{Content, Time};
use crate::compose::layout::{Partition, XfsOptions};
use crate::compose::plan::{BLOCK, INODE};

/// Where a stretch of a file's bytes goes in the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Offset in the file.
    pub file_offset: u64,
    /// Offset in the partition.
    pub part_offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// A regular file to stream into the image.
#[derive(Debug, Clone)]
pub struct Fill {
    /// Content path of the file.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Where its bytes go, in file order, covering `[0, size)` exactly.
    pub runs: Vec<Run>,
}

/// A finished XFS partition, minus file data.
#[derive(Debug)]
pub struct Built {
    /// The sparse partition-sized file: mkfs.xfs's empty filesystem, populated by [`write`].
    pub part_file: PathBuf,
    /// Byte ranges of `part_file` to copy into the image: every metadata byte written.
    pub metadata: Vec<(u64, u64)>,
    /// Byte ranges that must be written as zeros: the parts of the log mkfs.xfs zeroed by punching
    /// holes, which would otherwise keep a used disk's old bytes when a sparse image is flashed.
    pub zeros: Vec<(u64, u64)>,
    /// Regular files with data, keyed by content path; their data lies on disk in content order.
    pub fills: BTreeMap<String, Fill>,
}

/// Runs mkfs.xfs, reporting its own message on failure.
fn mkfs(
    part_file: &Path,
    size: u64,
    sector: u64,
    opts: &XfsOptions,
    label: &str,
    uuid: Uuid,
) -> Result<()> {
    let f = File::create(part_file).with_context(|| format!("creating {}", part_file.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {}", part_file.display()))?;
    drop(f);
    let (m, i) = opts.profile.mkfs_opts();
    let mut args: Vec<String> = vec![
        "-f".into(),
        "-q".into(),
        "-K".into(),
        // The filesystem's sector size must be at least the disk's (4Kn disks).
        "-s".into(),
        format!("size={sector}"),
        "-b".into(),
        format!("size={BLOCK}"),
        "-m".into(),
        format!("{m},uuid={uuid}"),
        "-i".into(),
        format!("size={INODE},{i}"),
        "-L".into(),
        label.into(),
    ];
    if let Some(n) = opts.agcount {
        args.push("-d".into());
        args.push(format!("agcount={n}"));
    }
    if let Some(l) = opts.log_size {
        args.push("-l".into());
        args.push(format!("size={l}"));
    }
    args.push(part_file.display().to_string());
    let out = duct::cmd("mkfs.xfs", &args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("mkfs.xfs not found: install xfsprogs (apt-get install xfsprogs)")
            } else {
                anyhow::anyhow!("running mkfs.xfs: {e}")
            }
        })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let msg = msg.trim().replace('\n', "; ");
        if msg.contains("No space left") || msg.contains("[28 ") {
            bail!("mkfs.xfs ran out of space in the {size}-byte partition `{label}` (the size estimate was too low; make the partition larger): {msg}");
        }
        bail!("mkfs.xfs failed ({}): {msg}", out.status);
    }
    Ok(())
}

/// Sorts and merges overlapping or touching ranges.
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, l) in v {
        match out.last_mut() {
            Some((ps, pl)) if *ps + *pl >= s => *pl = (*pl).max(s + l - *ps),
            _ => out.push((s, l)),
        }
    }
    out
}

/// The parts of `range` not covered by the sorted, disjoint `covered` ranges.
pub(crate) fn subtract(range: (u64, u64), covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut at, end) = (range.0, range.0 + range.1);
    let mut out = Vec::new();
    let first = covered.partition_point(|&(s, l)| s + l <= at);
    for &(s, l) in &covered[first..] {
        if s >= end {
            break;
        }
        if s > at {
            out.push((at, s - at));
        }
        at = at.max(s + l);
    }
    if at < end {
        out.push((at, end - at));
    }
    out
}

/// Builds the XFS filesystem for `content` in `work/<label>.xfs`, finished except for file data.
/// Entries without their own modification time get `mtime`.
pub fn build(
    part: &Partition,
    sector: u64,
    opts: &XfsOptions,
    uuid: Uuid,
    content: &Content,
    mtime: i64,
    work: &Path,
) -> Result<Built> {
    let (label, size, fs_label) = (
        part.label.as_str(),
        part.size(sector),
        part.fs_label.as_str(),
    );
    let part_file = work.join(format!("{label}.xfs"));
    mkfs(&part_file, size, sector, opts, fs_label, uuid)
        .with_context(|| format!("partition `{label}`"))?;
    let f = File::options()
        .read(true)
        .write(true)
        .open(&part_file)
        .with_context(|| format!("opening {}", part_file.display()))?;
    let sb = ondisk::Xfs::open(&f)
        .with_context(|| format!("partition `{label}`: reading what mkfs.xfs made"))?
        .sb()
        .clone();
    check_features(&sb, opts)?;
    let fills = write::populate(&f, content, Time::secs(mtime))
        .with_context(|| format!("partition `{label}`"))?;
    f.sync_all().context("syncing the partition file")?;
    let (log_at, log_len) = sb.log_byte_range();
    let metadata = merge(crate::compose::diskio::data_ranges(&part_file)?);
    let zeros = subtract((log_at, log_len), &metadata);
    Ok(Built {
        part_file,
        metadata,
        zeros,
        fills,
    })
}

/// Checks that mkfs.xfs enabled no feature outside the layout's profile.
fn check_features(sb: &ondisk::Superblock, opts: &XfsOptions) -> Result<()> {
    let (ro, incompat) = (sb.features_ro_compat, sb.features_incompat);
    let (ro_ok, in_ok) = opts.profile.allowed_features();
    if ro & !ro_ok != 0 || incompat & !in_ok != 0 {
        bail!(
            "mkfs.xfs enabled features outside the `{}` profile (ro-compat {:#x}, incompat {:#x}); \
             this xfsprogs needs more features switched off to stay mountable by the target kernel",
            opts.profile.name(),
            ro & !ro_ok,
            incompat & !in_ok
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracts_ranges() {
        assert_eq!(
            subtract((10, 20), &[(0, 12), (15, 2), (25, 100)]),
            vec![(12, 3), (17, 8)]
        );
        assert_eq!(subtract((10, 5), &[]), vec![(10, 5)]);
        assert_eq!(subtract((10, 5), &[(0, 3), (20, 4)]), vec![(10, 5)]);
    }

    #[test]
    fn merges_ranges() {
        assert_eq!(
            merge(vec![(10, 5), (0, 4), (4, 2), (20, 1)]),
            vec![(0, 6), (10, 5), (20, 1)]
        );
    }
}
