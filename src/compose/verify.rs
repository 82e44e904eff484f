//! Verify: checks a finished image (raw or qcow2) without root and without trusting compose.
//!
//! The GPT is read and checked; each XFS partition is opened through its own on-disk metadata
//! (superblock, inodes, directories, extent maps, all checksummed), its manifest is read from
//! `/.prestage/manifest.json`, and every entry of the tree is compared with it: type, mode,
//! owner, modification time (of everything but directories, whose time changes whenever a name
//! is added or removed, as a loader's scratch directory does on a read-write mount), every
//! extended attribute (names and values, read from the attribute fork), symlink target, device
//! numbers, hard-link identity (a further name is the same inode as the first, and every inode's
//! link count is the number of its names), the root directory's metadata, and for regular files
//! //! the size and the sha256 of the bytes read back through the extent map. No unwritten extent
//! may remain inside a file (it would read as zeros on the node). Entries missing from either
//! side are errors.
//!
//! [`verify_written`] is the same check for an image compose has just written, whose every
//! file was hashed while its bytes were written: instead of reading the bytes again, each file's
//! extent map, read from the image's own metadata, must map exactly the runs those hashed bytes
//! went to, and the manifest must read back byte for byte as written. Together with the write
//! pass (each run written once, no two pieces overlapping), that proves what re-reading would:
//! the bytes each inode maps are the bytes that hashed to the digest its manifest record gives.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::compose::content::Xattrs;
use crate::compose::diskio::{ReadAt, Window};
use crate::compose::gpt;
use crate::compose::manifest::{self, Manifest, Record};
use crate::compose::xfs::ondisk::{FileKind, InodeInfo, Xfs};
use crate::compose::xfs::{Fill, Run};

/// A file whose bytes, read back through the image, do not hash to what its manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Path in the partition.
    pub path: String,
    /// Lowercase hex sha256 of the bytes read back.
    pub got: String,
    /// Lowercase hex sha256 the manifest gives.
    pub want: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: sha256 {}, the manifest says {}",
            self.path, self.got, self.want
        )
    }
}

impl std::error::Error for Mismatch {}

/// What was checked in one partition.
#[derive(Debug, Clone)]
pub struct PartReport {
    /// GPT name.
    pub label: String,
    /// Entries checked (files, directories, symlinks).
    pub entries: usize,
    /// Regular files checked.
    pub files: usize,
    /// Bytes of file data read and hashed.
    pub bytes: u64,
}

/// What compose wrote into one XFS partition, for [`verify_written`].
pub struct WrittenPart<'a> {
    /// Every regular file's runs, by path, whose bytes were hashed as they were written.
    pub fills: &'a BTreeMap<String, Fill>,
    /// The manifest's bytes as written.
    pub manifest: &'a [u8],
}

/// How the bytes of files are proved.
enum Bytes<'a> {
    /// Read back through the extent map and hashed.
    Reread,
    /// Mapped exactly to the runs they were written (and hashed) in.
    Written(&'a WrittenPart<'a>),
}

/// Verifies every XFS partition of `dev`; `require` names a partition that must be present and
/// hold a verified XFS filesystem.
pub fn verify(dev: &dyn ReadAt, require: Option<&str>) -> Result<Vec<PartReport>> {
    verify_parts(dev, require, None)
}

/// Verifies an image compose has just written (see the module docs): every XFS partition must
/// be one of `written` (by label), and each file's extents map exactly its written runs.
pub fn verify_written(
    dev: &dyn ReadAt,
    require: Option<&str>,
    written: &BTreeMap<&str, WrittenPart>,
) -> Result<Vec<PartReport>> {
    verify_parts(dev, require, Some(written))
}

fn verify_parts(
    dev: &dyn ReadAt,
    require: Option<&str>,
    written: Option<&BTreeMap<&str, WrittenPart>>,
) -> Result<Vec<PartReport>> {
    let (_, parts) = gpt::read(dev)?;
    if let Some(label) = require {
        if !parts.iter().any(|p| p.label == label) {
            bail!(
                "no partition labelled `{label}` in the GPT (found: {})",
                parts
                    .iter()
                    .map(|p| p.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut reports = Vec::new();
    for p in &parts {
        let win = Window::new(dev, p.offset, p.size);
        let mut magic = [0u8; 4];
        win.read_at(0, &mut magic)
            .with_context(|| format!("reading partition `{}`", p.label))?;
        if &magic != b"XFSB" {
            if require == Some(p.label.as_str()) {
                bail!("partition `{}` does not hold an XFS filesystem", p.label);
            }
            continue;
        }
        let bytes = match written {
            None => Bytes::Reread,
            Some(w) => Bytes::Written(w.get(p.label.as_str()).with_context(|| {
                format!(
                    "partition `{}`: an XFS filesystem compose did not write",
                    p.label
                )
            })?),
        };
        let r = verify_xfs_with(&win, bytes).with_context(|| format!("partition `{}`", p.label))?;
        reports.push(PartReport {
            label: p.label.clone(),
            ..r
        });
    }
    Ok(reports)
}

fn kind_name(k: &FileKind) -> &'static str {
    match k {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Other(0o020000) => "char",
        FileKind::Other(0o060000) => "block",
        FileKind::Other(0o010000) => "fifo",
        FileKind::Other(0o140000) => "socket",
        FileKind::Other(_) => "special file",
    }
}

/// Reads and hashes files on all cores, checking each against its expected sha256.
fn hash_all<R: ReadAt + Sync>(fs: &Xfs<R>, jobs: &[(&str, u64, String)]) -> Result<()> {
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((path, ino, want)) = jobs.get(i) else {
                            return Ok(());
                        };
                        let mut h = Sha256::new();
                        fs.read_file(*ino, &mut |c| {
                            h.update(c);
                            Ok(())
                        })
                        .with_context(|| format!("{path}: reading the file"))?;
                        let got = hex::encode(h.finalize());
                        if &got != want {
                            // Stop the others early: the image is bad.
                            next.store(jobs.len(), Ordering::Relaxed);
                            return Err(anyhow::Error::new(Mismatch {
                                path: path.to_string(),
                                got,
                                want: want.clone(),
                            }));
                        }
                    }
                })
            })
            .collect();
        let mut first_err = None;
        for w in workers {
            match w.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(anyhow::anyhow!("a verification thread panicked"));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    })
}

/// The attributes of inode `ino` as a map, refusing a name that appears twice.
fn xattrs_of<R: ReadAt>(fs: &Xfs<R>, path: &str, ino: u64) -> Result<Xattrs> {
    let (_, list) = fs
        .xattrs(ino)
        .with_context(|| format!("{path}: reading the extended attributes"))?;
    let mut out = Xattrs::new();
    for x in list {
        let name = String::from_utf8(x.name).map_err(|e| {
            anyhow::anyhow!(
                "{path}: attribute name {:?} is not UTF-8",
                String::from_utf8_lossy(e.as_bytes())
            )
        })?;
        if out.insert(name.clone(), x.value).is_some() {
            bail!("{path}: attribute `{name}` is stored twice");
        }
    }
    Ok(out)
}

/// Checks the metadata every kind of inode has: mode, owner, time (when the manifest gives
/// it) and extended attributes.
#[allow(clippy::too_many_arguments)]
fn check_meta<R: ReadAt>(
    fs: &Xfs<R>,
    path: &str,
    ino: u64,
    info: &InodeInfo,
    mode: &str,
    owner: (u32, u32),
    mtime: Option<(i64, u32)>,
    xattrs: &BTreeMap<String, String>,
) -> Result<()> {
    let got = format!("{:04o}", info.mode & 0o7777);
    if got != mode || (info.uid, info.gid) != owner {
        bail!(
            "{path}: mode {got} owner {}:{}, the manifest says mode {mode} owner {}:{}",
            info.uid,
            info.gid,
            owner.0,
            owner.1
        );
    }
    if let Some(t) = mtime {
        if info.mtime != t {
            bail!(
                "{path}: modified at {}.{:09}, the manifest says {}.{:09}",
                info.mtime.0,
                info.mtime.1,
                t.0,
                t.1
            );
        }
    }
    let want = manifest::decode_xattrs(path, xattrs)?;
    let got = xattrs_of(fs, path, ino)?;
    if got != want {
        let name = got
            .iter()
            .find(|(k, v)| want.get(*k) != Some(v))
            .or_else(|| want.iter().find(|(k, v)| got.get(*k) != Some(v)))
            .map_or(String::new(), |(k, _)| k.clone());
        bail!(
            "{path}: extended attribute `{name}` differs from the manifest ({} attributes in the \
             image, {} in the manifest)",
            got.len(),
            want.len()
        );
    }
    Ok(())
}

/// Checks that a file's extents map exactly the runs its bytes were written to: the same
/// partition offsets, in file order, covering `[0, size)`, none of them unwritten.
fn check_runs(
    path: &str,
    size: u64,
    extents: &[crate::compose::xfs::ondisk::Extent],
    bs: u64,
    part_offset: impl Fn(u64) -> u64,
    runs: &[Run],
) -> Result<()> {
    let mut mapped: Vec<Run> = Vec::new();
    for x in extents {
        let file_offset = x.file_block * bs;
        if file_offset >= size {
            continue;
        }
        if x.unwritten {
            bail!(
                "{path}: extent at file block {} is still unwritten (reads as zeros)",
                x.file_block
            );
        }
        let len = (x.blocks * bs).min(size - file_offset);
        let at = part_offset(x.start_fsb);
        match mapped.last_mut() {
            Some(r) if r.file_offset + r.len == file_offset && r.part_offset + r.len == at => {
                r.len += len
            }
            _ => mapped.push(Run {
                file_offset,
                part_offset: at,
                len,
            }),
        }
    }
    let mut want: Vec<Run> = Vec::new();
    for r in runs {
        match want.last_mut() {
            Some(w)
                if w.file_offset + w.len == r.file_offset
                    && w.part_offset + w.len == r.part_offset =>
            {
                w.len += r.len
            }
            _ => want.push(*r),
        }
    }
    if mapped != want {
        bail!(
            "{path}: its inode maps {} but its bytes were written to {} (file offset, partition \
             offset, length)",
            show_runs(&mapped),
            show_runs(&want)
        );
    }
    Ok(())
}

fn show_runs(runs: &[Run]) -> String {
    let v: Vec<String> = runs
        .iter()
        .map(|r| format!("({}, {}, {})", r.file_offset, r.part_offset, r.len))
        .collect();
    format!("[{}]", v.join(", "))
}

/// Verifies one XFS filesystem against its manifest, re-reading every file.
pub fn verify_xfs(dev: &dyn ReadAt) -> Result<PartReport> {
    verify_xfs_with(dev, Bytes::Reread)
}

fn verify_xfs_with(dev: &dyn ReadAt, bytes: Bytes) -> Result<PartReport> {
    let fs = Xfs::open(dev).context("reading the XFS superblock")?;
    let walk = fs.walk().context("walking the directory tree")?;
    let mut by_path = BTreeMap::new();
    let mut names: HashMap<u64, u32> = HashMap::new();
    for w in walk {
        let p = String::from_utf8(w.path).map_err(|e| {
            anyhow::anyhow!(
                "{:?}: name is not UTF-8",
                String::from_utf8_lossy(e.as_bytes())
            )
        })?;
        by_path.insert(p, w.ino);
        *names.entry(w.ino).or_default() += 1;
    }
    let mino = *by_path
        .get(manifest::PATH)
        .context("no /.prestage/manifest.json: not an image composed by prestage")?;
    let mut mbytes = Vec::new();
    fs.read_file(mino, &mut |c| {
        mbytes.extend_from_slice(c);
        Ok(())
    })
    .context("reading /.prestage/manifest.json")?;
    if let Bytes::Written(w) = &bytes {
        if mbytes != w.manifest {
            bail!("/.prestage/manifest.json does not read back as it was written");
        }
    }
    let m = Manifest::parse(&mbytes)?;
    drop(mbytes);
    if let Some(root) = &m.root {
        let ino = fs.sb().root_ino;
        let info = fs.inode(ino).context("/: reading the root inode")?;
        check_meta(
            &fs,
            "/",
            ino,
            &info,
            &root.mode,
            (root.uid, root.gid),
            None,
            &root.xattrs,
        )?;
    }
    let records: BTreeMap<&str, &Record> = m.entries.iter().map(|r| (r.path.as_str(), r)).collect();
    let mut report = PartReport {
        label: String::new(),
        entries: 0,
        files: 0,
        bytes: 0,
    };
    let mut jobs: Vec<(&str, u64, String)> = Vec::new();
    for (path, &ino) in &by_path {
        if manifest::is_own(path) {
            continue;
        }
        let rec = records
            .get(path.as_str())
            .with_context(|| format!("{path}: in the filesystem but not in the manifest"))?;
        let info = fs
            .inode(ino)
            .with_context(|| format!("{path}: reading inode {ino}"))?;
        let kind = kind_name(&info.kind);
        if kind != rec.kind {
            bail!("{path}: is a {kind}, the manifest says {}", rec.kind);
        }
        if let Some(link) = &rec.link {
            if by_path.get(link.as_str()) != Some(&ino) {
                bail!("{path}: is not the same inode as `{link}`, the manifest says it is a hard link of it");
            }
        }
        if info.kind != FileKind::Dir && names.get(&ino).copied() != Some(info.nlink) {
            bail!(
                "{path}: inode {ino} has a link count of {}, the tree holds {} names of it",
                info.nlink,
                names.get(&ino).copied().unwrap_or(0)
            );
        }
        check_meta(
            &fs,
            path,
            ino,
            &info,
            &rec.mode,
            (rec.uid, rec.gid),
            rec.mtime
                .filter(|_| info.kind != FileKind::Dir)
                .map(|s| (s, rec.mtime_nsec)),
            &rec.xattrs,
        )?;
        match info.kind {
            FileKind::File if rec.link.is_some() => {}
            FileKind::File => {
                let size = rec
                    .size
                    .with_context(|| format!("{path}: manifest has no size"))?;
                if info.size != size {
                    bail!("{path}: size {} , the manifest says {size}", info.size);
                }
                let bs = u64::from(fs.sb().block_size);
                if let Some(x) = info
                    .extents
                    .iter()
                    .find(|x| x.unwritten && x.file_block * bs < size)
                {
                    bail!(
                        "{path}: extent at file block {} is still unwritten (reads as zeros)",
                        x.file_block
                    );
                }
                let sha = rec
                    .sha256
                    .clone()
                    .with_context(|| format!("{path}: manifest has no sha256"))?;
                match &bytes {
                    Bytes::Reread => jobs.push((path.as_str(), ino, sha)),
                    Bytes::Written(w) if size > 0 => {
                        let fill = w.fills.get(path.as_str()).with_context(|| {
                            format!("{path}: a file with data compose did not write")
                        })?;
                        let sb = fs.sb();
                        check_runs(
                            path,
                            size,
                            &info.extents,
                            bs,
                            |fsb| sb.fsb_to_byte(fsb),
                            &fill.runs,
                        )?;
                    }
                    Bytes::Written(_) => {}
                }
                report.files += 1;
                report.bytes += size;
            }
            FileKind::Symlink => {
                let (t, _) = fs
                    .read_symlink(ino)
                    .with_context(|| format!("{path}: reading the symlink"))?;
                if Some(String::from_utf8_lossy(&t).as_ref()) != rec.target.as_deref() {
                    bail!(
                        "{path}: points to {:?}, the manifest says {:?}",
                        String::from_utf8_lossy(&t),
                        rec.target
                    );
                }
            }
            FileKind::Dir => {}
            FileKind::Other(_) => {
                let want = match (rec.major, rec.minor) {
                    (Some(a), Some(b)) => Some((a, b)),
                    _ => None,
                };
                let got = info.rdev.filter(|_| matches!(kind, "char" | "block"));
                if got != want {
                    bail!("{path}: device number {got:?}, the manifest says {want:?}");
                }
            }
        }
        report.entries += 1;
    }
    for r in &m.entries {
        if !by_path.contains_key(&r.path) {
            bail!("{}: in the manifest but not in the filesystem", r.path);
        }
    }
    if let Bytes::Written(w) = &bytes {
        let files = by_path
            .keys()
            .filter(|p| w.fills.contains_key(p.as_str()))
            .count();
        if files != w.fills.len() {
            bail!(
                "the filesystem holds {files} of the {} files compose wrote",
                w.fills.len()
            );
        }
    }
    hash_all(&fs, &jobs)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::xfs::ondisk::Extent;

    fn x(file_block: u64, start_fsb: u64, blocks: u64, unwritten: bool) -> Extent {
        Extent {
            file_block,
            start_fsb,
            blocks,
            unwritten,
        }
    }

    fn run(file_offset: u64, part_offset: u64, len: u64) -> Run {
        Run {
            file_offset,
            part_offset,
            len,
        }
    }

    #[test]
    fn a_file_must_map_exactly_the_runs_its_bytes_were_written_to() {
        let bs = 4096;
        let at = |fsb: u64| fsb * bs;
        // Two extents, contiguous on disk: one run of 3 blocks, the last one partly used.
        let xs = [x(0, 10, 2, false), x(2, 12, 1, false)];
        check_runs("f", 10_000, &xs, bs, at, &[run(0, 40960, 10_000)]).unwrap();
        // The same bytes written as two runs are the same mapping.
        check_runs(
            "f",
            10_000,
            &xs,
            bs,
            at,
            &[run(0, 40960, 8192), run(8192, 49152, 1808)],
        )
        .unwrap();
        // Written elsewhere than the inode maps: refused, naming both.
        let e = check_runs("f", 10_000, &xs, bs, at, &[run(0, 45056, 10_000)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("(0, 40960, 10000)") && e.contains("(0, 45056, 10000)"),
            "{e}"
        );
        // A block the inode maps but nothing was written to.
        let e = check_runs("f", 10_000, &xs, bs, at, &[run(0, 40960, 8192)]).unwrap_err();
        assert!(e.to_string().contains("its inode maps"), "{e}");
        // An unwritten extent inside the file reads as zeros.
        let xs = [x(0, 10, 2, false), x(2, 12, 1, true)];
        let e = check_runs("f", 10_000, &xs, bs, at, &[run(0, 40960, 10_000)]).unwrap_err();
        assert!(e.to_string().contains("unwritten"), "{e}");
    }
}
