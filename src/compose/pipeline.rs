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
//!    under a temporary name in one pass ([`write`]): every byte read once, written once, in
//!    disk order, each file hashed on the way (and checked against the digest it is named by),
//!    the block map's range checksums computed from the same bytes, the manifests last;
//! 5. complete the proof through the image's own metadata ([`verify::verify_written`]: each
//!    file's inode maps exactly the runs whose bytes were hashed, the manifest reads back as
//!    written) while the image is synced to stable storage, and only then rename it into place.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use crate::cleanup;
use crate::compose::bmap::Bmap;
use crate::compose::content::{Content, Owners};
use crate::compose::emit::{self, Format};
use crate::compose::gpt;
use crate::compose::layout::{human, Filesystem, Layout};
use crate::compose::manifest;
use crate::compose::output;
use crate::compose::plan;
use crate::compose::verify::{self, PartReport};
use crate::compose::vfat;
use crate::compose::write;
use crate::compose::xfs;

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
        label: String,
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

/// A step run on the verified image's temporary path (and its block map, for a raw image)
/// before it is renamed into place.
pub type BeforeRename<'a> = &'a mut dyn FnMut(&Path, Option<&Bmap>) -> Result<()>;

/// What a caller of [`compose_contents_with`] adds to the run.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called with the number of file bytes written, as they are written (progress).
    pub written: Option<&'a (dyn Fn(u64) + Sync)>,
    /// Called with the verified image's temporary path and, for a raw image, its block map
    /// just before it is renamed into place (files that must exist before the image does, such
    /// as the block map's file); an error stops the run and leaves nothing at the output path.
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
                    label: p.label.clone(),
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

    // The image, under a temporary name, once its allocation is known to fit: written in one
    // pass that hashes every byte on the way (see `write`).
    let table = gpt::table_writes(layout, &guids)?;
    let writes = planned_writes(&table, &staged)?;
    output::check_writes(lock.dir(), output, &writes, format, layout.disk_size)?;
    let tmp = lock.partial_file()?;
    let tmp_path = tmp.path().to_path_buf();
    let parts = staged
        .iter()
        .map(|s| {
            Ok(match s {
                Staged::Xfs {
                    offset,
                    built,
                    content,
                    ..
                } => write::PartWrite::Xfs {
                    offset: *offset,
                    built,
                    content,
                },
                Staged::Vfat { offset, file } => write::PartWrite::Copy {
                    offset: *offset,
                    file,
                    ranges: crate::compose::diskio::data_ranges(file)?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let done = {
        let mut w = emit::create(&tmp_path, format, layout.disk_size)?;
        write::write(
            &mut *w,
            &tmp_path,
            layout.disk_size,
            &table,
            &parts,
            format == Format::Raw,
            hooks.written,
        )?
    };
    let t2 = Instant::now();

    // The proof, completed through the image's own metadata, while the image is synced to
    // stable storage on a second thread; then the rename.
    let mut written: BTreeMap<&str, verify::WrittenPart> = BTreeMap::new();
    for (i, s) in staged.iter().enumerate() {
        if let Staged::Xfs { label, built, .. } = s {
            written.insert(
                label.as_str(),
                verify::WrittenPart {
                    fills: &built.fills,
                    manifest: done.manifests[i].as_deref().unwrap_or_default(),
                },
            );
        }
    }
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
            let verified = verify::verify_written(&*dev, require, &written)
                .context("verifying the composed image")?;
            drop(dev);
            let t3 = Instant::now();
            if let Some(f) = hooks.before_rename.as_mut() {
                f(&tmp_path, done.bmap.as_ref())?;
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
    drop(written);
    drop(parts);
    drop(staged);
    cleanup::forget(work.path());
    drop(work);
    let data_bytes = done.data_bytes;
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
