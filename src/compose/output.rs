//! Output safety: who owns the files written beside an output path, and whether the image fits.
//!
//! **Ownership.** A run writing `DIR/NAME` holds an exclusive `flock` on `DIR/.NAME.lock` for its
//! whole lifetime ([`OutputLock`]), and creates its temporary files, the image
//! `DIR/.NAME.partial-XXXXXX` and the work directory `DIR/.NAME.work-XXXXXX`, only while it holds
//! it. The kernel releases the lock when the process ends, however it ends. So:
//! - a run that takes the lock knows that any such file it finds belongs to a dead run (SIGKILL,
//!   a crash, power loss) and removes it, saying so in one line;
//! - a run that cannot take it fails at once, naming the other run's pid, and touches nothing.
//!
//! The lock file is removed, still locked, when the run ends; a run that was waiting on the
//! removed file sees that its path is gone and takes the lock again on a fresh file. A process
//! that already holds the lock of an output (a stage that writes more files beside the image
//! and calls the compose pipeline in between) gets a second, non-owning handle instead of
//! deadlocking on itself. Other files such a stage writes beside the output use the same temporary
//! names for their own file name, and [`OutputLock::sweep`] removes dead ones.
//!
//! **Free space.** Before the work directory is made, the output filesystem must hold at least
//! the content's bytes and the filesystems' logs ([`check_minimum`]); once the filesystems are built and before the first
//! byte of the image is written, it must hold what the image will allocate ([`check_writes`]):
//! for a sparse raw image the written ranges rounded to the filesystem's blocks, for qcow2 the
//! data clusters plus the L1/L2 tables, refcount structures and header. Both refusals name the
//! need and the free space. The work directory lives beside the output, on the same filesystem,
//! so the second check already sees what it took.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use rustix::fs::{flock, FlockOperation};

use crate::cleanup;
use crate::compose::content::Content;
use crate::compose::emit::Format;
use crate::compose::layout::{human, Filesystem, Layout};
use crate::compose::plan;

/// Random characters in temporary names (`.NAME.partial-XXXXXX`).
const RAND_CHARS: usize = 6;

/// Lock files held by this process (absolute paths), for re-entrant [`OutputLock::acquire`].
static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Name prefix of a run's temporary image for the file `name`.
pub fn partial_prefix(name: &str) -> String {
    format!(".{name}.partial-")
}

/// Name prefix of a run's work directory for the file `name`.
pub fn work_prefix(name: &str) -> String {
    format!(".{name}.work-")
}

/// Whether `entry` is one of a run's temporary names for `name`.
fn is_temp_of(entry: &str, name: &str) -> bool {
    [partial_prefix(name), work_prefix(name)].iter().any(|p| {
        entry.strip_prefix(p.as_str()).is_some_and(|rest| {
            rest.len() == RAND_CHARS && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        })
    })
}

/// The lock on an output path, held for a run's lifetime; see the module docs.
pub struct OutputLock {
    dir: PathBuf,
    name: String,
    output: PathBuf,
    /// The locked file and its path: `None` for a second handle of a lock this process holds.
    held: Option<(File, PathBuf, PathBuf)>,
}

impl OutputLock {
    /// Takes the lock of `output` (failing at once when another run holds it) and removes what
    /// dead runs left for it.
    pub fn acquire(output: &Path) -> Result<OutputLock> {
        let dir = match output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = output
            .file_name()
            .with_context(|| format!("{}: not a file path", output.display()))?
            .to_string_lossy()
            .into_owned();
        if output.is_dir() {
            bail!("{}: is a directory", output.display());
        }
        let path = dir.join(format!(".{name}.lock"));
        let key = fs::canonicalize(&dir)
            .with_context(|| format!("opening the output directory {}", dir.display()))?
            .join(format!(".{name}.lock"));
        let mut lock = OutputLock {
            dir,
            name,
            output: output.to_path_buf(),
            held: None,
        };
        {
            let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
            if held.contains(&key) {
                return Ok(lock);
            }
            let file = lock_file(&path, output)?;
            held.push(key.clone());
            cleanup::register(&path);
            lock.held = Some((file, path, key));
        }
        let name = lock.name.clone();
        lock.sweep(&name)?;
        Ok(lock)
    }

    /// The output's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes dead runs' temporary files (`.NAME.partial-*`, `.NAME.work-*`) for `name`, a
    /// file written beside the output under this lock (the output's own name, or another file
    /// a stage writes next to it), saying in one line what was removed. Does nothing on a
    /// second handle: the first one swept when it was taken.
    pub fn sweep(&self, name: &str) -> Result<()> {
        if self.held.is_none() {
            return Ok(());
        }
        let mut removed = Vec::new();
        let entries =
            fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("listing {}", self.dir.display()))?;
            let entry = e.file_name().to_string_lossy().into_owned();
            if !is_temp_of(&entry, name) {
                continue;
            }
            let path = e.path();
            let bytes = allocated(&path);
            let md = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            if md.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            }
            .with_context(|| format!("removing {}, left by an interrupted run", path.display()))?;
            removed.push(format!("{entry} ({})", human(bytes)));
        }
        if !removed.is_empty() {
            removed.sort();
            eprintln!(
                "prestage: {}: removed what an interrupted run left beside it: {}",
                self.output.display(),
                removed.join(", ")
            );
        }
        Ok(())
    }

    /// Creates the run's work directory `.NAME.work-XXXXXX` (removed on interrupt).
    pub fn work_dir(&self) -> Result<tempfile::TempDir> {
        let d = tempfile::Builder::new()
            .prefix(&work_prefix(&self.name))
            .rand_bytes(RAND_CHARS)
            .tempdir_in(&self.dir)
            .with_context(|| format!("creating a work directory in {}", self.dir.display()))?;
        cleanup::register(d.path());
        Ok(d)
    }

    /// Creates the run's temporary image `.NAME.partial-XXXXXX` (removed on interrupt).
    pub fn partial_file(&self) -> Result<tempfile::NamedTempFile> {
        self.partial_file_for(&self.name)
    }

    /// Creates `.FILE.partial-XXXXXX` for another file written beside the output under this
    /// lock (removed on interrupt).
    pub fn partial_file_for(&self, file: &str) -> Result<tempfile::NamedTempFile> {
        let f = tempfile::Builder::new()
            .prefix(&partial_prefix(file))
            .rand_bytes(RAND_CHARS)
            .tempfile_in(&self.dir)
            .with_context(|| format!("creating a temporary file in {}", self.dir.display()))?;
        cleanup::register(f.path());
        Ok(f)
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let Some((file, path, key)) = self.held.take() else {
            return;
        };
        // Removed while still locked: a run waiting on this file then retries on a fresh one.
        if same_file(&file, &path) {
            let _ = fs::remove_file(&path);
        }
        cleanup::forget(&path);
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|k| *k != key);
        drop(file);
    }
}

/// Opens and locks `path` without waiting; retries when the file it locked was removed (by the
/// run that held it) meanwhile. Writes this process's pid into it.
fn lock_file(path: &Path, output: &Path) -> Result<File> {
    loop {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .with_context(|| format!("creating the lock file {}", path.display()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = match text.trim().parse::<u32>() {
                    Ok(p) => format!(" (pid {p})"),
                    Err(_) => String::new(),
                };
                bail!(
                    "{}: another prestage run{pid} is writing this output (it holds {}); wait \
                     for it to end or choose another output path",
                    output.display(),
                    path.display()
                );
            }
            Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
        if !same_file(&file, path) {
            continue;
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(pid.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(file);
    }
}

/// Whether `path` still names the open file `f`.
fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Bytes allocated by a file or a directory tree (for messages).
fn allocated(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Free space usable by this process on the filesystem holding `dir`, and its block size.
fn free_space(dir: &Path) -> Result<(u64, u64)> {
    let st = rustix::fs::statvfs(dir)
        .with_context(|| format!("reading the free space of {}", dir.display()))?;
    let block = st.f_frsize.max(1);
    // Root may use the blocks a filesystem reserves for it; other users may not.
    let blocks = if rustix::process::geteuid().is_root() {
        st.f_bfree
    } else {
        st.f_bavail
    };
    Ok((blocks.saturating_mul(block), block))
}

/// What the work directory and the image of a composition hold at least, before any
/// metadata is counted: every file's bytes in the image, each XFS log in its work file (mkfs.xfs
/// allocates it) and, zeroed, in a raw image (a qcow2 keeps zeros as flags), and a FAT
/// partition's files twice (its filesystem is built in the work directory, then copied).
pub fn minimum(
    layout: &Layout,
    contents: &std::collections::BTreeMap<String, Content>,
    format: Format,
) -> u64 {
    let ss = layout.sector_size;
    layout
        .partitions
        .iter()
        .map(|p| {
            let bytes = contents.get(&p.label).map_or(0, Content::file_bytes);
            match &p.filesystem {
                Filesystem::Xfs(opts) => {
                    let log = plan::log_bytes(p.size(ss), opts);
                    bytes + log + if format == Format::Raw { log } else { 0 }
                }
                Filesystem::Vfat => 2 * bytes,
                Filesystem::None => 0,
            }
        })
        .sum()
}

/// Refuses, before anything is written, an output whose filesystem cannot hold `bytes` (from
/// [`minimum`]).
pub fn check_minimum(dir: &Path, output: &Path, bytes: u64) -> Result<()> {
    let (free, _) = free_space(dir)?;
    if bytes > free {
        bail!(
            "{}: not enough free space: the work files and the image need at least {} ({bytes} \
             bytes: the content and the filesystems' logs), the filesystem of {} has {} ({free} \
             bytes) free",
            output.display(),
            human(bytes),
            dir.display(),
            human(free)
        );
    }
    Ok(())
}

/// Refuses an output whose filesystem cannot hold what writing `writes` will allocate; returns
/// that allocation.
pub fn check_writes(
    dir: &Path,
    output: &Path,
    writes: &Writes,
    format: Format,
    disk_size: u64,
) -> Result<u64> {
    let (free, block) = free_space(dir)?;
    let need = writes.allocation(format, disk_size, block);
    if need > free {
        bail!(
            "{}: not enough free space: the {} image will allocate {} ({need} bytes), the \
             filesystem of {} has {} ({free} bytes) free",
            output.display(),
            format.name(),
            human(need),
            dir.display(),
            human(free)
        );
    }
    Ok(need)
}

/// The byte ranges an image will be written with, for the free-space check.
#[derive(Debug, Default, Clone)]
pub struct Writes {
    data: Vec<(u64, u64)>,
    zeros: Vec<(u64, u64)>,
}

/// qcow2 cluster size imago creates images with (64 KiB).
const QCOW2_CLUSTER: u64 = 1 << 16;
/// Refcount entry width of those images (16 bits).
const QCOW2_REFCOUNT_BITS: u64 = 16;

impl Writes {
    /// `len` bytes of data at disk offset `offset`.
    pub fn data(&mut self, offset: u64, len: u64) {
        if len > 0 {
            self.data.push((offset, len));
        }
    }

    /// `len` bytes made to read as zeros ([`crate::compose::emit::ImageWriter::write_zeroes`]).
    pub fn zeros(&mut self, offset: u64, len: u64) {
        if len > 0 {
            self.zeros.push((offset, len));
        }
    }

    /// Bytes the image file will allocate on a filesystem of `block`-byte blocks.
    pub fn allocation(&self, format: Format, disk_size: u64, block: u64) -> u64 {
        match format {
            // Zeros are written as real zero bytes in a raw image. The filesystem maps the
            // file's extents too: a block per 256 of them is more than ext4 and XFS need.
            Format::Raw => {
                let all: Vec<_> = self.data.iter().chain(&self.zeros).copied().collect();
                let (bytes, extents) = covered(&all, block.max(1));
                bytes + (extents / 256 + 1) * block
            }
            Format::Qcow2 => self.qcow2_allocation(disk_size, block),
        }
    }

    fn qcow2_allocation(&self, disk_size: u64, block: u64) -> u64 {
        let cs = QCOW2_CLUSTER;
        // Data clusters: every cluster data touches, and the clusters zeros cover only in part
        // (whole zeroed clusters are zero flags in an L2 entry and take no space).
        let mut data = self.data.clone();
        for &(off, len) in &self.zeros {
            let (start, end) = (off, off + len);
            let head_end = start.next_multiple_of(cs).min(end);
            if start % cs != 0 {
                data.push((start, head_end - start));
            }
            if end % cs != 0 && end > head_end {
                data.push((end - end % cs, end % cs));
            }
        }
        let data_clusters = covered(&data, cs).0 / cs;
        // One L2 table per `cs / 8` clusters of guest space touched by data or zeros.
        let l2_span = cs * (cs / 8);
        let mut all: Vec<_> = self.data.iter().chain(&self.zeros).copied().collect();
        all.sort_unstable();
        let mut l2 = 0u64;
        let mut last: Option<u64> = None;
        for (off, len) in all {
            let (first, end) = (off / l2_span, (off + len - 1) / l2_span);
            let from = match last {
                Some(l) if l >= first => l + 1,
                _ => first,
            };
            if end >= from {
                l2 += end - from + 1;
            }
            last = Some(last.map_or(end, |l| l.max(end)));
        }
        let l1 = (disk_size.div_ceil(l2_span) * 8).div_ceil(cs).max(1);
        // Header, refcount table, L1, L2 and data clusters, then the refcount blocks covering
        // all of them (each covers `cs * 8 / bits` clusters, itself included).
        let used = 2 + l1 + l2 + data_clusters;
        let per_block = cs * 8 / QCOW2_REFCOUNT_BITS;
        let refblocks = used.div_ceil(per_block - 1);
        // The image file itself is written front to back: a few extents at most.
        (used + refblocks) * cs + block
    }
}

/// Bytes of `unit`-aligned units that `ranges` touch, and the number of separate runs they
/// make.
fn covered(ranges: &[(u64, u64)], unit: u64) -> (u64, u64) {
    let mut v: Vec<(u64, u64)> = ranges
        .iter()
        .filter(|r| r.1 > 0)
        .map(|&(off, len)| {
            (
                off - off % unit,
                (off + len).div_ceil(unit).saturating_mul(unit),
            )
        })
        .collect();
    v.sort_unstable();
    let (mut total, mut runs) = (0, 0);
    let mut cur: Option<(u64, u64)> = None;
    for (s, e) in v {
        match cur {
            Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                runs += 1;
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    if let Some((s, e)) = cur {
        total += e - s;
        runs += 1;
    }
    (total, runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::emit;

    #[test]
    fn temporary_names_are_matched_exactly() {
        assert!(is_temp_of(".out.raw.partial-AbC123", "out.raw"));
        assert!(is_temp_of(".out.raw.work-zz0099", "out.raw"));
        assert!(!is_temp_of(".out.raw.partial-AbC12", "out.raw"));
        assert!(!is_temp_of(".out.raw.lock", "out.raw"));
        assert!(!is_temp_of(".out.raw.partial-a.partial-AbC123", "out.raw"));
        assert!(is_temp_of(
            ".out.raw.partial-a.partial-AbC123",
            "out.raw.partial-a"
        ));
        assert!(!is_temp_of(".other.raw.partial-AbC123", "out.raw"));
    }

    #[test]
    fn the_lock_is_exclusive_reentrant_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.raw");
        let lock_path = dir.path().join(".out.raw.lock");
        // A dead run's files, a stale lock, and names that are not this output's.
        fs::write(&lock_path, "999999\n").unwrap();
        fs::write(dir.path().join(".out.raw.partial-AbC123"), b"x").unwrap();
        fs::create_dir(dir.path().join(".out.raw.work-zz0099")).unwrap();
        fs::write(dir.path().join(".out.raw.work-zz0099/data.xfs"), b"x").unwrap();
        let keep = [
            ".other.raw.partial-AbC123",
            ".out.raw.partial-a.partial-AbC123",
        ];
        for k in keep {
            fs::write(dir.path().join(k), b"x").unwrap();
        }
        let lock = OutputLock::acquire(&out).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".other.raw.partial-AbC123",
                ".out.raw.lock",
                ".out.raw.partial-a.partial-AbC123"
            ]
        );
        assert_eq!(
            fs::read_to_string(&lock_path).unwrap(),
            format!("{}\n", std::process::id())
        );
        // The same process may take it again (a stage around the pipeline); it stays held.
        let again = OutputLock::acquire(&out).unwrap();
        drop(again);
        assert!(lock_path.exists());
        // Another holder of the file (another open file description) is refused.
        drop(lock);
        assert!(!lock_path.exists(), "the lock file is removed at the end");
        let other = File::create(&lock_path).unwrap();
        flock(&other, FlockOperation::LockExclusive).unwrap();
        let e = OutputLock::acquire(&out)
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("another prestage run"), "{e}");
    }

    #[test]
    fn covered_rounds_and_merges() {
        assert_eq!(covered(&[], 4096), (0, 0));
        assert_eq!(covered(&[(0, 1)], 4096), (4096, 1));
        assert_eq!(covered(&[(4095, 2)], 4096), (8192, 1));
        assert_eq!(
            covered(&[(0, 100), (200, 100), (8192, 4096)], 4096),
            (8192, 2)
        );
        assert_eq!(covered(&[(8192, 4096), (0, 8193)], 4096), (12288, 1));
    }

    /// Writes the ranges through the real writers and compares the file's allocation with the
    /// estimate: never below it, and close to it.
    fn check_model(format: Format, writes: &[(u64, u64, bool)], disk: u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mut plan = Writes::default();
        {
            let mut w = emit::create(&path, format, disk).unwrap();
            for &(off, len, zero) in writes {
                if zero {
                    plan.zeros(off, len);
                    w.write_zeroes(off, len).unwrap();
                } else {
                    plan.data(off, len);
                    w.write_at(off, &vec![0xa5u8; len as usize]).unwrap();
                }
            }
            w.finish().unwrap();
        }
        let (_, block) = free_space(dir.path()).unwrap();
        let est = plan.allocation(format, disk, block);
        let got = fs::metadata(&path).unwrap().blocks() * 512;
        eprintln!("{}: estimated {est} bytes, allocated {got}", format.name());
        assert!(
            est >= got && est - got <= est / 20 + 4 * QCOW2_CLUSTER,
            "{}: estimated {est} bytes, allocated {got}",
            format.name()
        );
    }

    #[test]
    fn allocation_estimate_matches_the_writers() {
        const MIB: u64 = 1 << 20;
        let disk = 3 << 30;
        let writes = [
            (0, 17408, false),
            (disk - 16896, 16896, false),
            (MIB, 3 * MIB + 512, false),
            (5 * MIB + 100, 70_000, false),
            (9 * MIB + 4096, 9 * MIB, true),
            (700 * MIB, 5000, false),
            (2100 * MIB, 2 * MIB, false),
        ];
        check_model(Format::Raw, &writes, disk);
        check_model(Format::Qcow2, &writes, disk);
    }
}
