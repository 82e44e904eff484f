//! `prestage build` and `prestage plan`: the stages joined, from an image-set request to a
//! verified pre-staged disk image.
//!
//! 1. **resolve** (imageset): the image set, with tagged images resolved from their manifests
//!    only;
//! 2. **manifests** (fetch): every staged image's manifests, so every size is known;
//! 3. **plan** (payload + compose's planner): the partition content and the space it needs,
//!    checked against the layout before any image blob is downloaded (for the `store` format
//!    after the pull: its size is that of the unpacked layers);
//! 4. **pull** (fetch): the blobs the store lacks and no local source holds (blobs of OCI
//!    layouts, `oci:`/`dir:` sources and oc-mirror archives are read in place, not copied);
//! 5. **compose**: the image under a temporary name, written in one pass that hashes every byte
//!    on the way (each blob checked against its digest) and proved through the image's own
//!    metadata; beside it `OUT.report.json`, for raw images `OUT.raw.bmap` (its checksums from
//!    the same pass), and the node files; the image is renamed into place last;
//! 6. with `--fill-store`, once the image is in place: the blobs read in place are copied into
//!    the store, for the next build.

pub mod cli;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::compose::emit::Format as ImageFormat;
use crate::compose::layout::{human, Filesystem, Layout, XfsOptions};
use crate::compose::output::OutputLock;
use crate::compose::{self, bmap, manifest, plan};
use crate::fetch::connect::Connection;
use crate::fetch::digest::Digest;
use crate::fetch::progress::Progress;
use crate::fetch::pull::{self, Request as PullRequest};
use crate::fetch::source::Located;
use crate::fetch::store::Store;
use crate::imageset::resolve::{self, Resolution};
use crate::payload::{self, Blobs, ExtraFile, Format, Image, Payload};

/// What to plan or build.
pub struct Request {
    /// The image set (its `tagged` is taken as manifests-only).
    pub images: resolve::Request,
    /// The layout.
    pub layout: Layout,
    /// The partition that receives the payload.
    pub label: String,
    /// Payload formats to plan (`build` uses the first).
    pub formats: Vec<Format>,
    /// Timestamp of every inode and tar member.
    pub mtime: i64,
    /// Copy the blobs read in place into the store once the image is built.
    pub fill_store: bool,
}

/// One staged image set, with every image's manifests in the store.
pub struct Prepared {
    /// The resolution.
    pub resolution: Resolution,
    /// Every staged image with its record.
    pub images: Vec<Image>,
    /// Pull requests for every image (what `pull` downloads).
    pub requests: Vec<PullRequest>,
    /// The architecture list instances are selected for.
    pub arch: String,
    /// Blobs the store lacks that a local source holds, read there.
    pub located: BTreeMap<Digest, Located>,
    /// Seconds resolving and fetching manifests.
    pub seconds: f64,
}

/// How one payload format fits the layout's partition.
#[derive(Debug, Clone, Serialize)]
pub struct FormatPlan {
    /// The format.
    pub format: Format,
    /// Files in the payload.
    pub files: usize,
    /// Bytes of files in the payload.
    pub payload_bytes: u64,
    /// How it fits.
    pub fit: plan::Fit,
}

/// The plan: the image set, and per payload format what it needs.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Images staged.
    pub images: usize,
    /// Images loaded in the discovery stage.
    pub discovery: usize,
    /// Images loaded in the install stage.
    pub install: usize,
    /// Distinct blobs and manifests.
    pub unique_files: usize,
    /// Bytes of the distinct blobs and manifests.
    pub unique_bytes: u64,
    /// Bytes the store still has to download.
    pub to_download: u64,
    /// Bytes read in place from local sources (not in the store, not downloaded).
    pub in_place: u64,
    /// The partition.
    pub label: String,
    /// One entry per format.
    pub formats: Vec<FormatPlan>,
    /// Why the `store` format is not in `formats` when several were asked for (its layers are
    /// not all here yet, or it cannot hold an image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_planned: Option<String>,
}

fn data_partition<'a>(layout: &'a Layout, label: &str) -> Result<(u64, &'a XfsOptions)> {
    let p = layout
        .partition(label)
        .with_context(|| format!("{}: the payload partition", layout.source.display()))?;
    match &p.filesystem {
        Filesystem::Xfs(o) => Ok((p.size(layout.sector_size), o)),
        _ => bail!(
            "{}: partition `{label}` is not XFS; the payload needs an XFS partition",
            layout.source.display()
        ),
    }
}

/// Resolves the image set and fetches every image's manifests (no blob of a staged image).
pub fn prepare(req: &Request, store: Store, conn: Connection) -> Result<Prepared> {
    let t0 = Instant::now();
    data_partition(&req.layout, &req.label)?;
    let mut images_req = req.images.clone();
    images_req.tagged = resolve::Tagged::ManifestsOnly;
    let resolution = resolve::resolve(&images_req, store, conn)?;
    let arch = if resolution.set.arch == "multi" {
        "amd64".to_string()
    } else {
        resolution.set.arch.clone()
    };
    let mut requests = Vec::new();
    let mut keys = Vec::new();
    for i in &resolution.lists.images {
        let from = resolution.origins.get(&i.source).unwrap_or(&i.source);
        let r = PullRequest::parse(from).map_err(|e| anyhow!("{}: {e:#}", i.source))?;
        keys.push(r.key.clone());
        requests.push(r);
    }
    pull::dedup(&mut requests);
    let opts = resolution.conn.options(requests.clone(), &arch, false);
    let resolved = pull::resolve_manifests(&resolution.store, &opts)?;
    // From an archive set, a blob it lacks is named now, before the plan.
    pull::check_offline(&resolution.store, &pull::blob_needs(&resolved), &opts)?;
    let records: BTreeMap<String, _> = resolved
        .into_iter()
        .map(|r| (r.reference.clone(), r))
        .collect();
    let located = pull::locate_local(
        &resolution.store,
        &opts,
        &records.values().cloned().collect::<Vec<_>>(),
    )?;
    let mut images = Vec::new();
    for (i, key) in resolution.lists.images.iter().zip(&keys) {
        let record = records
            .get(key)
            .cloned()
            .with_context(|| format!("internal error: {key} was not resolved"))?;
        images.push(Image {
            source: i.source.clone(),
            origin: resolution.origins.get(&i.source).cloned(),
            discovery: i.discovery,
            install: i.install,
            record,
        });
    }
    Ok(Prepared {
        resolution,
        images,
        requests,
        arch,
        located,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

impl Prepared {
    /// Where the payload reads the images' files.
    pub fn blobs(&self) -> Blobs<'_> {
        Blobs {
            store: &self.resolution.store,
            located: &self.located,
        }
    }

    /// The payload in `format` with `extra` files.
    pub fn payload(&self, format: Format, extra: &[ExtraFile], mtime: i64) -> Result<Payload> {
        payload::build(
            format,
            &self.resolution.lists,
            &self.resolution.imageset_yaml,
            &self.images,
            self.blobs(),
            extra,
            mtime.max(0) as u64,
        )
    }

    /// The plan for `req`'s formats.
    pub fn plan(
        &self,
        req: &Request,
        extra: &dyn Fn(Format) -> Result<Vec<ExtraFile>>,
    ) -> Result<Plan> {
        self.plan_with(req, extra, &self.located)
    }

    /// The plan for `req`'s formats, reading in place the blobs `located` names. The `store`
    /// format needs every layer (its size is that of the unpacked layers): when some must
    /// still be downloaded it is left out of a plan of several formats, and refused alone.
    pub fn plan_with(
        &self,
        req: &Request,
        extra: &dyn Fn(Format) -> Result<Vec<ExtraFile>>,
        located: &BTreeMap<Digest, Located>,
    ) -> Result<Plan> {
        self.plan_formats(req, &req.formats, extra, located)
    }

    /// The plan of `formats` for `req`'s image set, layout and partition.
    fn plan_formats(
        &self,
        req: &Request,
        wanted: &[Format],
        extra: &dyn Fn(Format) -> Result<Vec<ExtraFile>>,
        located: &BTreeMap<Digest, Located>,
    ) -> Result<Plan> {
        let (bytes, opts) = data_partition(&req.layout, &req.label)?;
        let store = &self.resolution.store;
        let missing: u64 = {
            let mut m = BTreeMap::new();
            for i in &self.images {
                for f in i.files(store)? {
                    if !f.manifest && !store.has_blob(&f.digest) && !located.contains_key(&f.digest)
                    {
                        m.insert(f.digest.clone(), f.size);
                    }
                }
            }
            m.values().sum()
        };
        let blobs = Blobs { store, located };
        let mut formats = Vec::new();
        let mut not_planned = None;
        for &f in wanted {
            if f == Format::Store && missing > 0 {
                let why = format!(
                    "the store payload's size is that of the unpacked layers, known once every \
                     layer is in the store or a local source ({} still to download: run \
                     `prestage pull` first)",
                    human(missing)
                );
                if wanted.len() == 1 {
                    bail!("{why}");
                }
                not_planned = Some(why);
                continue;
            }
            let p = payload::build(
                f,
                &self.resolution.lists,
                &self.resolution.imageset_yaml,
                &self.images,
                blobs,
                &extra(f)?,
                req.mtime.max(0) as u64,
            );
            let p = match p {
                Err(e) if f == Format::Store && wanted.len() > 1 => {
                    not_planned = Some(format!("{e:#}"));
                    continue;
                }
                p => p?,
            };
            let mut c = p.content.clone();
            manifest::reserve(&mut c, req.mtime)?;
            formats.push(FormatPlan {
                format: f,
                files: c.entries().filter(|e| e.size > 0).count(),
                payload_bytes: p.bytes,
                fit: plan::fit(bytes, opts, &c)?,
            });
        }
        let mut unique = BTreeMap::new();
        for i in &self.images {
            for f in i.files(store)? {
                unique.insert(f.digest.clone(), f);
            }
        }
        let to_download = unique
            .values()
            .filter(|f| {
                !f.manifest && !store.has_blob(&f.digest) && !self.located.contains_key(&f.digest)
            })
            .map(|f| f.size)
            .sum();
        let in_place = unique
            .values()
            .filter(|f| self.located.contains_key(&f.digest) && !store.has_blob(&f.digest))
            .map(|f| f.size)
            .sum();
        Ok(Plan {
            images: self.images.len(),
            discovery: self.images.iter().filter(|i| i.discovery).count(),
            install: self.images.iter().filter(|i| i.install).count(),
            unique_files: unique.len(),
            unique_bytes: unique.values().map(|f| f.size).sum(),
            to_download,
            in_place,
            label: req.label.clone(),
            formats,
            not_planned,
        })
    }
}

/// Refuses a plan whose partition is too small, naming both numbers and the smallest size.
pub fn check(plan: &Plan, layout: &Layout) -> Result<()> {
    for f in &plan.formats {
        if !f.fit.fits {
            bail!(
                "{}: partition `{}` is too small for the {} payload: it needs {} ({} of files, \
                 plus metadata and headroom) but the {} partition holds {} after its log and \
                 metadata; the smallest partition that fits is {} (set its size in the layout)",
                layout.source.display(),
                plan.label,
                f.format.name(),
                human(f.fit.needed),
                human(f.payload_bytes),
                human(f.fit.partition),
                human(f.fit.available),
                human(f.fit.smallest_partition)
            );
        }
    }
    Ok(())
}

/// Where `build` writes.
pub struct Output {
    /// The image.
    pub image: PathBuf,
    /// Its format.
    pub format: ImageFormat,
}

impl Output {
    /// `OUT.report.json`.
    pub fn report_path(&self) -> PathBuf {
        beside(&self.image, ".report.json")
    }
    /// `OUT.raw.bmap` (raw images only).
    pub fn bmap_path(&self) -> Option<PathBuf> {
        (self.format == ImageFormat::Raw).then(|| beside(&self.image, ".bmap"))
    }
    /// `OUT.node/`.
    pub fn node_dir(&self) -> PathBuf {
        beside(&self.image, ".node")
    }
}

/// `path` with `suffix` appended to its file name.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Seconds per stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Seconds {
    /// Resolving the image set and fetching manifests.
    pub resolve: f64,
    /// Planning.
    pub plan: f64,
    /// Downloading blobs.
    pub pull: f64,
    /// Building the filesystems.
    pub filesystems: f64,
    /// Writing the image.
    pub write: f64,
    /// Verifying it.
    pub verify: f64,
    /// Report and node files (the block map's checksums come from the write).
    pub finish: f64,
    /// Copying blobs read in place into the store (`--fill-store`), after the image.
    pub fill_store: f64,
}

/// What `build` did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The image.
    pub output: PathBuf,
    /// Raw or qcow2.
    pub image_format: String,
    /// The payload format.
    pub payload: Format,
    /// Disk size.
    pub disk_size: u64,
    /// Images.
    pub images: usize,
    /// Distinct blobs and manifests.
    pub unique_files: usize,
    /// Bytes of files on the partition.
    pub partition_bytes: u64,
    /// Blobs downloaded, reused and read in place by the pull.
    pub pull: pull::Summary,
    /// What `--fill-store` copied into the store after the build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filled: Option<pull::Summary>,
    /// The plan of the format built.
    pub plan: FormatPlan,
    /// `OUT.report.json`.
    pub report: PathBuf,
    /// `OUT.raw.bmap`.
    pub bmap: Option<PathBuf>,
    /// `OUT.node/`.
    pub node: Option<PathBuf>,
    /// Seconds per stage.
    pub seconds: Seconds,
}

/// Writes `bytes` at `path` through a temporary name beside it (`.NAME.partial-*`, owned by the
/// output's lock, so a dead run's is swept by the next).
pub fn write_atomic(lock: &OutputLock, path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?
        .to_string_lossy()
        .to_string();
    let mut tmp = lock.partial_file_for(&name)?;
    let tmp_path = tmp.path().to_path_buf();
    let r = (|| -> Result<()> {
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        let umask = rustix::process::umask(rustix::fs::Mode::empty());
        rustix::process::umask(umask);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            tmp.path(),
            std::fs::Permissions::from_mode(0o666 & !umask.bits()),
        )
        .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
        tmp.persist(path)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming into {}", path.display()))?;
        Ok(())
    })();
    crate::cleanup::forget(&tmp_path);
    r
}

/// What the node stage adds: files on the partition, and files beside the image.
pub trait NodeFiles {
    /// Files the payload carries for `format` (the loaders).
    fn partition_files(&self, format: Format) -> Result<Vec<ExtraFile>>;
    /// Writes the files beside the image into `dir` (created); returns nothing else.
    fn write_beside(&self, format: Format, dir: &Path) -> Result<()>;
}

/// Builds the image: plan, refuse when it does not fit, pull, compose, report; says what it does
/// through `progress`.
pub fn build(
    req: &Request,
    prepared: &Prepared,
    out: &Output,
    node: Option<&dyn NodeFiles>,
    progress: &Progress,
) -> Result<Summary> {
    let format = *req
        .formats
        .first()
        .context("internal error: no payload format")?;
    let t0 = Instant::now();
    // One run per output: the image, its report, block map and node files.
    let lock = OutputLock::acquire(&out.image)?;
    for p in [
        Some(out.report_path()),
        out.bmap_path(),
        Some(out.node_dir()),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(n) = p.file_name() {
            lock.sweep(&n.to_string_lossy())?;
        }
    }
    let extra = |f: Format| -> Result<Vec<ExtraFile>> {
        match node {
            Some(n) => n.partition_files(f),
            None => Ok(Vec::new()),
        }
    };
    let extra_files = extra(format)?;
    let mut opts =
        prepared
            .resolution
            .conn
            .options(prepared.requests.clone(), &prepared.arch, false);
    opts.in_place = true;
    let fetch_blobs = || -> Result<pull::Summary> {
        let pulled = pull::pull(&prepared.resolution.store, &opts, progress)?;
        progress.line(&format!(
            "pull: {} blobs fetched ({}), {} in the store, {} read in place from local sources, \
             in {:.1} s",
            pulled.blobs_fetched,
            human(pulled.bytes),
            pulled.blobs_reused,
            pulled.blobs_in_place,
            pulled.seconds
        ));
        Ok(pulled)
    };
    // The store's size is that of the unpacked layers: they are pulled before the plan.
    let t_early = Instant::now();
    let early = if format == Format::Store {
        Some(fetch_blobs()?)
    } else {
        None
    };
    let early_secs = t_early.elapsed().as_secs_f64();
    let plan = prepared.plan_with(
        req,
        &extra,
        early.as_ref().map_or(&prepared.located, |p| &p.located),
    )?;
    check(&plan, &req.layout)?;
    let fplan = plan
        .formats
        .first()
        .cloned()
        .context("internal error: no plan")?;
    progress.line(&format!(
        "plan: {} images ({} discovery, {} install), {} distinct files, {} payload ({}); \
         partition `{}` {}, {} free after it",
        plan.images,
        plan.discovery,
        plan.install,
        plan.unique_files,
        human(fplan.payload_bytes),
        format.name(),
        plan.label,
        human(fplan.fit.partition),
        human(fplan.fit.available.saturating_sub(fplan.fit.needed))
    ));
    // The other payloads' sizes for the same images, for the report: those a plan gives
    // without reading the layers (`store` is compared only when it is the one built: its size
    // needs every layer read; `prestage plan` compares all three).
    let others: Vec<Format> = Format::ALL
        .into_iter()
        .filter(|&f| f != format && f != Format::Store)
        .collect();
    let compared = prepared
        .plan_formats(
            req,
            &others,
            &extra,
            early.as_ref().map_or(&prepared.located, |p| &p.located),
        )?
        .formats;
    let t1 = Instant::now();

    // The blobs the store lacks and no local source holds.
    let early_pull = early.is_some();
    let (pulled, pull_secs) = match early {
        Some(p) => (p, early_secs),
        None => {
            let p = fetch_blobs()?;
            (p, t1.elapsed().as_secs_f64())
        }
    };

    let blobs = Blobs {
        store: &prepared.resolution.store,
        located: &pulled.located,
    };
    let payload = payload::build(
        format,
        &prepared.resolution.lists,
        &prepared.resolution.imageset_yaml,
        &prepared.images,
        blobs,
        &extra_files,
        req.mtime.max(0) as u64,
    )?;
    let reports = payload.images.clone();
    for r in &reports {
        progress.detail(&format!("{} {} ({})", r.digest, r.source, human(r.bytes)));
    }
    let mut contents = BTreeMap::new();
    contents.insert(req.label.clone(), payload.content);
    progress.stage(
        "write",
        fplan.payload_bytes,
        &format!(
            "composing {} ({}, {})",
            out.image.display(),
            out.format.name(),
            human(req.layout.disk_size)
        ),
    );
    let mut finish_secs = 0.0;
    let report_path = out.report_path();
    let bmap_path = out.bmap_path();
    let node_dir = node.map(|_| out.node_dir());
    let mut before_rename = |_tmp: &Path, map: Option<&bmap::Bmap>| -> Result<()> {
        let tf = Instant::now();
        if let Some(b) = &bmap_path {
            let map = map.context("internal error: a raw image without its block map")?;
            write_atomic(&lock, b, map.to_xml().as_bytes())?;
        }
        let r = report::Report {
            format: report::FORMAT,
            image: out.image.display().to_string(),
            image_format: out.format.name().to_string(),
            payload: format,
            label: req.label.clone(),
            plan: fplan.clone(),
            compared: compared.clone(),
            images: reports.clone(),
        };
        write_atomic(&lock, &report_path, &r.to_bytes()?)?;
        if let (Some(n), Some(dir)) = (node, &node_dir) {
            n.write_beside(format, dir)?;
        }
        finish_secs = tf.elapsed().as_secs_f64();
        Ok(())
    };
    let written = |n: u64| progress.bytes(n);
    let s = compose::compose_contents_with(
        &req.layout,
        contents,
        &out.image,
        out.format,
        req.mtime,
        compose::Hooks {
            written: Some(&written),
            before_rename: Some(&mut before_rename),
        },
    )?;
    drop(lock);

    // The store gets what was read in place, for the next build, once the image is in place.
    let t3 = Instant::now();
    let filled = if req.fill_store && !pulled.located.is_empty() {
        opts.in_place = false;
        let f = pull::pull(&prepared.resolution.store, &opts, progress)
            .context("the image is built; filling the store afterwards failed")?;
        progress.line(&format!(
            "fill-store: {} blobs ({}) copied into the store in {:.1} s",
            f.blobs_fetched,
            human(f.bytes),
            f.seconds
        ));
        Some(f)
    } else {
        None
    };
    progress.finish();
    Ok(Summary {
        output: s.output,
        image_format: out.format.name().to_string(),
        payload: format,
        disk_size: s.disk_size,
        images: prepared.images.len(),
        unique_files: payload.unique_files,
        partition_bytes: s.data_bytes,
        pull: pulled,
        filled,
        plan: fplan,
        report: report_path,
        bmap: bmap_path,
        node: node_dir,
        seconds: Seconds {
            resolve: prepared.seconds,
            plan: (t1 - t0).as_secs_f64() - if early_pull { early_secs } else { 0.0 },
            pull: pull_secs,
            filesystems: s.seconds.0,
            write: s.seconds.1,
            verify: s.seconds.2,
            finish: finish_secs,
            fill_store: t3.elapsed().as_secs_f64(),
        },
    })
}
