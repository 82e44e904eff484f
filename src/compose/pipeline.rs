//! Compose: the pipeline from a layout and content sets to a verified disk image.
//!
//! Order of work, so that bad input fails before anything is written and nothing half-written
//! ever sits at the output path:
//! 1. load the layout and the content sets, reserve each XFS partition's manifest, and check that
//!    every partition's content fits (size planning);
//! 2. take the output's lock (removing what a dead run left for it, see [`output`]) and check
//!    that the output filesystem holds at least the content's bytes and the XFS logs;
//! 3. build each partition's filesystem in a sparse partition-sized file in a private work
//!    directory beside the output (XFS: mkfs.xfs's empty filesystem populated by prestage's own
//!    writer; vfat: mkfs.fat + mtools);
//! 4. check that the output filesystem holds what the image will allocate, then write the image
//!    under a temporary name: partition table, each partition's metadata ranges, then every
//!    file's bytes streamed from its source into its extents (hashed on the way, except files
//!    whose digest is given: verification proves those), then the manifest;
//! 5. verify the written image the way `prestage verify` does while it is synced to stable
//!    storage, and only then rename it into place.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::cleanup;
use crate::compose::content::{Content, Owners, CHUNK};
use crate::compose::emit::{self, Format, ImageWriter};
use crate::compose::gpt;
use crate::compose::layout::{human, Filesystem, Layout};
use crate::compose::manifest::{self, Manifest};
use crate::compose::output;
use crate::compose::plan;
use crate::compose::verify::{self, PartReport};
use crate::compose::vfat;
use crate::compose::xfs::{self, Fill};

/// What to compose.
#[derive(Debug, Clone)]
pub struct Request {
    /// The layout.
    pub layout: Layout,
    /// Content per partition label: a directory, or a tar archive (a regular file).
    pub contents: Vec<(String, PathBuf)>,
    /// Output path.
    pub output: PathBuf,
    /// Output format (by extension when `None`).
    pub format: Option<Format>,
    /// Owner mapping for walked content.
    pub owners: Owners,
    /// Read walked content's extended attributes.
    pub xattrs: bool,
    /// Timestamp given to every inode (seconds since the epoch).
    pub mtime: i64,
}

/// What was composed.
#[derive(Debug)]
pub struct Summary {
    /// Final output path.
    pub output: PathBuf,
    /// Format written.
    pub format: Format,
    /// Disk size.
    pub disk_size: u64,
    /// Verification results per XFS partition.
    pub verified: Vec<PartReport>,
    /// Bytes of file data written.
    pub data_bytes: u64,
    /// Seconds spent building filesystems, writing, verifying.
    pub seconds: (f64, f64, f64),
}

/// One partition's finished filesystem, waiting to be written.
enum Staged {
    Xfs {
        offset: u64,
        built: xfs::Built,
        content: Content,
    },
    Vfat {
        offset: u64,
        file: PathBuf,
    },
}

/// Composes `req` (content directories) into a verified image at `output`.
pub fn compose(req: &Request) -> Result<Summary> {
    let layout = &req.layout;
    let mut contents: BTreeMap<String, Content> = BTreeMap::new();
    for (label, dir) in &req.contents {
        let p = layout
            .partition(label)
            .with_context(|| format!("--content {label}={}", dir.display()))?;
        if p.filesystem == Filesystem::None {
            bail!(
                "--content {label}={}: partition `{label}` has `filesystem = \"none\"` in {}",
                dir.display(),
                layout.source.display()
            );
        }
        if contents.contains_key(label) {
            bail!("--content {label}=...: given twice");
        }
        let c = if dir.is_file() {
            Content::from_tar(dir)?
        } else {
            Content::from_dir_with(dir, req.owners, req.xattrs)?
        };
        contents.insert(label.clone(), c);
    }
    let format = req.format.unwrap_or_else(|| Format::from_path(&req.output));
    compose_contents(layout, contents, &req.output, format, req.mtime)
}

/// A step run on the verified image's temporary path before it is renamed into place.
pub type BeforeRename<'a> = &'a mut dyn FnMut(&Path) -> Result<()>;

/// What a caller of [`compose_contents_with`] adds to the run.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called with the number of file bytes written, as they are written (progress).
    pub written: Option<&'a (dyn Fn(u64) + Sync)>,
    /// Called with the verified image's temporary path just before it is renamed into place
    /// (files that must exist before the image does, such as a block map); an error stops the
    /// run and leaves nothing at the output path.
    pub before_rename: Option<BeforeRename<'a>>,
}

/// Composes content sets (by partition label) into a verified image at `output`: the entry
/// point for stages that build [`Content`] from other sources than a directory.
pub fn compose_contents(
    layout: &Layout,
    contents: BTreeMap<String, Content>,
    output: &Path,
    format: Format,
    mtime: i64,
) -> Result<Summary> {
    compose_contents_with(layout, contents, output, format, mtime, Hooks::default())
}

/// [`compose_contents`] with [`Hooks`].
pub fn compose_contents_with(
    layout: &Layout,
    mut contents: BTreeMap<String, Content>,
    output: &Path,
    format: Format,
    mtime: i64,
    mut hooks: Hooks,
) -> Result<Summary> {
    let ss = layout.sector_size;
    for label in contents.keys() {
        layout.partition(label)?;
    }
    // Checked against the layout before anything is created.
    for p in &layout.partitions {
        let c = contents.entry(p.label.clone()).or_default();
        match &p.filesystem {
            Filesystem::Xfs(opts) => {
                manifest::reserve(c, mtime).with_context(|| format!("partition `{}`", p.label))?;
                plan::check_fits(&p.label, p.size(ss), opts, c)?;
            }
            Filesystem::Vfat => vfat::check(&p.label, p.size(ss), c)?,
            Filesystem::None => {}
        }
    }

    // Nothing is created beside the output before the lock is held and the content could fit.
    let lock = output::OutputLock::acquire(output)?;
    output::check_minimum(
        lock.dir(),
        output,
        output::minimum(layout, &contents, format),
    )?;
    let work = lock.work_dir()?;
    let expected = expectations(&contents);

    // Filesystems.
    let t0 = Instant::now();
    let guids = gpt::Guids::for_layout(layout);
    let mut staged = Vec::new();
    for p in &layout.partitions {
        let content = contents.remove(&p.label).unwrap_or_default();
        let uuid = p.fs_uuid.unwrap_or_else(Uuid::new_v4);
        match &p.filesystem {
            Filesystem::Xfs(opts) => {
                let built = xfs::build(p, ss, opts, uuid, &content, mtime, work.path())?;
                staged.push(Staged::Xfs {
                    offset: p.offset(ss),
                    built,
                    content,
                });
            }
            Filesystem::Vfat => {
                let file = vfat::build(
                    &p.label,
                    p.size(ss),
                    ss,
                    &p.fs_label,
                    uuid,
                    &content,
                    work.path(),
                )?;
                staged.push(Staged::Vfat {
                    offset: p.offset(ss),
                    file,
                });
            }
            Filesystem::None => {}
        }
    }
    let t1 = Instant::now();

    // The image, under a temporary name, once its allocation is known to fit.
    let table = gpt::table_writes(layout, &guids)?;
    let writes = planned_writes(&table, &staged)?;
    output::check_writes(lock.dir(), output, &writes, format, layout.disk_size)?;
    let tmp = lock.partial_file()?;
    let mut data_bytes = 0;
    {
        let mut w = emit::create(tmp.path(), format, layout.disk_size)?;
        for (off, bytes) in table {
            w.write_at(off, &bytes)?;
        }
        for s in &staged {
            match s {
                Staged::Xfs {
                    offset,
                    built,
                    content,
                } => {
                    copy_ranges(&mut *w, &built.part_file, *offset, &built.metadata)?;
                    for &(at, len) in &built.zeros {
                        w.write_zeroes(offset + at, len)?;
                    }
                    data_bytes += fill_files(&mut *w, *offset, built, content, hooks.written)?;
                }
                Staged::Vfat { offset, file } => {
                    let ranges = crate::compose::diskio::data_ranges(file)?;
                    copy_ranges(&mut *w, file, *offset, &ranges)?;
                }
            }
        }
        w.finish()?;
    }
    drop(staged);
    cleanup::forget(work.path());
    drop(work);
    let t2 = Instant::now();

    // Verify what was written, then put it in place. The image reaches stable storage on a
    // second thread meanwhile: verification hashes from the page cache while the disk writes.
    let tmp_path = tmp.path().to_path_buf();
    let require = layout
        .partitions
        .iter()
        .find(|p| matches!(p.filesystem, Filesystem::Xfs(_)))
        .map(|p| p.label.as_str());
    let (verified, t3) = std::thread::scope(|scope| -> Result<_> {
        let synced = scope.spawn(|| -> Result<()> {
            File::open(&tmp_path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", tmp_path.display()))
        });
        let checked = (|| -> Result<_> {
            let (_, dev) = emit::open(&tmp_path)?;
            let verified = verify::verify(&*dev, require)
                .map_err(|e| damaged_source(e, &expected))
                .context("verifying the composed image")?;
            drop(dev);
            let t3 = Instant::now();
            if let Some(f) = hooks.before_rename.as_mut() {
                f(&tmp_path)?;
            }
            Ok((verified, t3))
        })();
        let synced = synced
            .join()
            .map_err(|_| anyhow::anyhow!("the syncing thread panicked"))?;
        let checked = checked?;
        synced?;
        Ok(checked)
    })?;
    // Temporary files are created 0600; the image gets the usual 0666 less the umask.
    let umask = rustix::process::umask(rustix::fs::Mode::empty());
    rustix::process::umask(umask);
    let mode = 0o666 & !umask.bits();
    std::fs::set_permissions(&tmp_path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp_path.display()))?;
    tmp.persist(output)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming the verified image to {}", output.display()))?;
    cleanup::forget(&tmp_path);
    drop(lock);
    Ok(Summary {
        output: output.to_path_buf(),
        format,
        disk_size: layout.disk_size,
        verified,
        data_bytes,
        seconds: (
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
        ),
    })
}

/// The content-addressed files of every partition: (path, sha256) → (what it is, its source).
type Expectations = BTreeMap<(String, String), (String, String)>;

fn expectations(contents: &BTreeMap<String, Content>) -> Expectations {
    let mut m = Expectations::new();
    for c in contents.values() {
        for e in c.entries() {
            if let (Some(x), Some(src)) = (&e.expect, &e.source) {
                m.insert(
                    (e.path.clone(), x.sha256.clone()),
                    (x.what.clone(), source_name(src)),
                );
            }
        }
    }
    m
}

/// A verification error for a content-addressed file, told as what it is: its source (a store
/// blob) does not have the digest it is named by. Other errors pass unchanged.
fn damaged_source(e: anyhow::Error, expected: &Expectations) -> anyhow::Error {
    let Some(m) = e.downcast_ref::<verify::Mismatch>() else {
        return e;
    };
    match expected.get(&(m.path.clone(), m.want.clone())) {
        Some((what, src)) => anyhow::anyhow!(
            "{what}: the store's copy {src} hashes to sha256:{} (the store is damaged: run \
             `prestage store verify`)",
            m.got
        ),
        None => e,
    }
}

/// Every byte range the image will be written with (table, metadata, zeros, file data), for
/// the free-space check.
fn planned_writes(table: &[(u64, Vec<u8>)], staged: &[Staged]) -> Result<output::Writes> {
    let mut p = output::Writes::default();
    for (off, bytes) in table {
        p.data(*off, bytes.len() as u64);
    }
    for s in staged {
        match s {
            Staged::Xfs { offset, built, .. } => {
                for &(at, len) in &built.metadata {
                    p.data(offset + at, len);
                }
                for &(at, len) in &built.zeros {
                    p.zeros(offset + at, len);
                }
                for r in built.fills.values().flat_map(|f| &f.runs) {
                    p.data(offset + r.part_offset, r.len);
                }
            }
            Staged::Vfat { offset, file } => {
                for (at, len) in crate::compose::diskio::data_ranges(file)? {
                    p.data(offset + at, len);
                }
            }
        }
    }
    Ok(p)
}

/// Copies byte ranges of a partition file into the image at `offset`.
fn copy_ranges(
    w: &mut dyn ImageWriter,
    file: &Path,
    offset: u64,
    ranges: &[(u64, u64)],
) -> Result<()> {
    let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut buf = vec![0u8; CHUNK];
    for &(start, len) in ranges {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            f.read_exact_at(&mut buf[..n], start + done)
                .with_context(|| format!("reading {}", file.display()))?;
            w.write_at(offset + start + done, &buf[..n])?;
            done += n as u64;
        }
    }
    Ok(())
}

/// Streams `source` bytes into the image through a file's runs.
fn write_runs(
    w: &mut dyn ImageWriter,
    part_offset: u64,
    fill: &Fill,
    chunk: &[u8],
    pos: &mut u64,
) -> Result<()> {
    let mut data = chunk;
    while !data.is_empty() {
        let run = fill
            .runs
            .iter()
            .find(|r| r.file_offset <= *pos && *pos < r.file_offset + r.len)
            .with_context(|| format!("{}: byte {} has no reserved extent", fill.path, *pos))?;
        let within = *pos - run.file_offset;
        let n = ((run.len - within) as usize).min(data.len());
        w.write_at(part_offset + run.part_offset + within, &data[..n])?;
        *pos += n as u64;
        data = &data[n..];
    }
    Ok(())
}

/// A source's file, for messages.
fn source_name(src: &crate::compose::content::Source) -> String {
    use crate::compose::content::Source;
    match src {
        Source::File(p) | Source::Range { path: p, .. } => p.display().to_string(),
        Source::Bytes(_) | Source::Generated(_) => "(generated)".to_string(),
    }
}

/// Streams every file of an XFS partition into its extents, then writes the manifest.
fn fill_files(
    w: &mut dyn ImageWriter,
    part_offset: u64,
    built: &xfs::Built,
    content: &Content,
    written: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<u64> {
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    // Write in disk order so a raw image is written front to back.
    let mut order: Vec<&Fill> = built
        .fills
        .values()
        .filter(|f| f.path != manifest::PATH)
        .collect();
    order.sort_by_key(|f| f.runs.first().map_or(0, |r| r.part_offset));
    // Reading, hashing and writing run on three threads (this one writes): throughput is the
    // slowest of them instead of their sum. At most `DEPTH` chunks wait for each consumer.
    // A content-addressed file's manifest record takes the digest its bytes must have: the
    // verification pass hashes every file read back through the image and so proves them (a
    // damaged source fails there, see `damaged_source`), so it is not hashed here too; from a
    // file source into a raw image it goes by copy_file_range(2), as `cp` copies, without
    // passing through this process's memory.
    const DEPTH: usize = 4;
    enum Msg {
        Chunk(usize, Arc<Vec<u8>>),
        /// File `i` is copied by the writer itself, in the kernel, from this file at this offset.
        Copy(usize, File, u64),
        Done(usize),
    }
    enum Hash {
        Chunk(Arc<Vec<u8>>),
        Done(usize),
    }
    /// A closed channel means the writer (or hasher) stopped; the writer reports why.
    fn stopped<T>(_: T) -> anyhow::Error {
        anyhow::anyhow!("writer stopped")
    }
    let in_kernel = w.copies_in_kernel();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(DEPTH);
    let (htx, hrx) = std::sync::mpsc::sync_channel::<Hash>(DEPTH);
    let mut bytes = 0;
    std::thread::scope(|scope| -> Result<()> {
        let order = &order;
        let hasher = scope.spawn(move || -> Vec<(usize, String)> {
            let mut done = Vec::new();
            let mut h = Sha256::new();
            for m in hrx.iter() {
                match m {
                    Hash::Chunk(c) => h.update(&c[..]),
                    Hash::Done(i) => done.push((i, hex::encode(std::mem::take(&mut h).finalize()))),
                }
            }
            done
        });
        let reader = scope.spawn(move || -> Result<Vec<(usize, String)>> {
            let mut known = Vec::new();
            for (i, fill) in order.iter().enumerate() {
                let e = content
                    .get(&fill.path)
                    .with_context(|| format!("internal error: {} not in content", fill.path))?;
                let src = e
                    .source
                    .as_ref()
                    .with_context(|| format!("internal error: {} has no source", fill.path))?;
                if let Some(x) = &e.expect {
                    known.push((i, x.sha256.clone()));
                    if in_kernel {
                        if let Some((f, at)) = src
                            .open_range(fill.size)
                            .with_context(|| format!("reading {}", fill.path))?
                        {
                            tx.send(Msg::Copy(i, f, at)).map_err(stopped)?;
                            tx.send(Msg::Done(i)).map_err(stopped)?;
                            continue;
                        }
                    }
                }
                let hashing = e.expect.is_none();
                src.stream(fill.size, &mut |c| {
                    let c = Arc::new(c.to_vec());
                    if hashing {
                        htx.send(Hash::Chunk(Arc::clone(&c))).map_err(stopped)?;
                    }
                    tx.send(Msg::Chunk(i, c)).map_err(stopped)
                })
                .with_context(|| format!("reading {}", fill.path))?;
                if hashing {
                    htx.send(Hash::Done(i)).map_err(stopped)?;
                }
                tx.send(Msg::Done(i)).map_err(stopped)?;
            }
            Ok(known)
        });
        let mut pos = 0u64;
        let written = (|| -> Result<()> {
            for msg in rx.iter() {
                match msg {
                    Msg::Chunk(i, c) => {
                        write_runs(w, part_offset, order[i], &c, &mut pos)
                            .with_context(|| format!("writing {}", order[i].path))?;
                        if let Some(f) = written {
                            f(c.len() as u64);
                        }
                    }
                    Msg::Copy(i, file, at) => {
                        for r in &order[i].runs {
                            w.copy_range(
                                &file,
                                at + r.file_offset,
                                part_offset + r.part_offset,
                                r.len,
                            )
                            .with_context(|| format!("copying {} into the image", order[i].path))?;
                            if let Some(f) = written {
                                f(r.len);
                            }
                        }
                    }
                    Msg::Done(i) => {
                        bytes += order[i].size;
                        pos = 0;
                    }
                }
            }
            Ok(())
        })();
        drop(rx);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reading thread panicked"))?;
        let computed = hasher
            .join()
            .map_err(|_| anyhow::anyhow!("the hashing thread panicked"))?;
        // A failed writer makes the reader stop with "writer stopped": report the writer's error
        // first; a failed reader ends the writer's loop normally and is reported second.
        written?;
        for (i, hash) in read?.into_iter().chain(computed) {
            hashes.insert(order[i].path.clone(), hash);
        }
        Ok(())
    })?;
    for e in content
        .entries()
        .filter(|e| e.size == 0 && !manifest::is_own(&e.path))
    {
        hashes.insert(e.path.clone(), hex::encode(Sha256::digest(b"")));
    }
    let mbytes = Manifest::bytes_of(content, |p| {
        hashes
            .get(p)
            .cloned()
            .with_context(|| format!("internal error: {p} was not hashed"))
    })?;
    let fill = built
        .fills
        .get(manifest::PATH)
        .context("internal error: the manifest has no extents")?;
    if mbytes.len() as u64 != fill.size {
        bail!(
            "internal error: manifest is {} bytes, {} were reserved",
            mbytes.len(),
            fill.size
        );
    }
    let mut pos = 0;
    write_runs(w, part_offset, fill, &mbytes, &mut pos)?;
    Ok(bytes + fill.size)
}

/// One line for people about a finished composition.
pub fn describe(s: &Summary) -> String {
    let parts: Vec<String> = s
        .verified
        .iter()
        .map(|p| {
            format!(
                "`{}`: {} entries, {} files, {} verified",
                p.label,
                p.entries,
                p.files,
                human(p.bytes)
            )
        })
        .collect();
    format!(
        "{} ({}, {} disk): {}; {} of file data; filesystems {:.1}s, write {:.1}s, verify {:.1}s",
        s.output.display(),
        s.format.name(),
        human(s.disk_size),
        parts.join("; "),
        human(s.data_bytes),
        s.seconds.0,
        s.seconds.1,
        s.seconds.2
    )
}
