//! The pull: resolve every requested image's manifests (in parallel, trying mirrors then the
//! registry), then download the union of their blobs once each with a bounded pool of workers,
//! retrying transient failures (resuming with Range) and recording each image only when
//! everything it needs is in the store (a record that is already there as it is stays
//! untouched).
//!
//! In place ([`PullOptions::in_place`], what `build` asks for): a blob the store lacks that a
//! local source holds (an OCI layout given with `--oci-mirror`, an `oci:`/`dir:` source, an
//! oc-mirror archive) is not copied into the store; the summary says where it lies
//! ([`Summary::located`]) and the build reads it there, checking its digest as it writes it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use super::archive::source::ArchiveSource;
use super::archive::ArchiveSet;
use super::digest::Digest;
use super::local::{DirSource, OciLayoutSource};
use super::manifest::{self, Descriptor, Manifest};
use super::mirrors::RegistriesConf;
use super::progress::{self, Progress};
use super::reference::{canonical_key, SourceRef};
use super::registry::{Registries, RegistrySource};
use super::retry::{Failure, RetryPolicy};
use super::source::{FetchedManifest, Located, Source};
use super::store::{BlobRef, Finish, Instance, PartialBlob, Record, Slot, Store};

/// A requested image.
#[derive(Clone, Debug)]
pub struct Request {
    /// The reference as the store records it (normalized for registry references).
    pub key: String,
    /// Where to get it.
    pub source: SourceRef,
}

impl Request {
    /// Parses a reference as given on the command line or in a list file.
    pub fn parse(s: &str) -> Result<Request> {
        let source = SourceRef::parse(s)?;
        let key = canonical_key(s);
        Ok(Request { key, source })
    }
}

/// Drops repeated requests (same key), keeping the first.
pub fn dedup(requests: &mut Vec<Request>) {
    let mut seen = std::collections::HashSet::new();
    requests.retain(|r| seen.insert(r.key.clone()));
}

/// What to pull and how.
pub struct PullOptions {
    /// Images, de-duplicated by key.
    pub requests: Vec<Request>,
    /// Architecture of the list instance to keep (`ARCH[/VARIANT]`).
    pub arch: String,
    /// Keep every instance of lists.
    pub all_arches: bool,
    /// Parallel downloads.
    pub jobs: usize,
    /// Registry clients.
    pub registries: Registries,
    /// Mirrors.
    pub mirrors: RegistriesConf,
    /// OCI layouts that serve digest-pinned registry references they hold, before any registry.
    pub oci_mirrors: Vec<std::path::PathBuf>,
    /// An oc-mirror archive set serving every registry reference (no registry is asked).
    pub archives: Option<Arc<ArchiveSet>>,
    /// Retry limits.
    pub retry: RetryPolicy,
    /// Leave blobs that a local source holds where they are (see the module docs).
    pub in_place: bool,
}

/// What a pull did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    /// Images recorded.
    pub images: usize,
    /// Blobs downloaded (or copied from a local source).
    pub blobs_fetched: usize,
    /// Blobs already in the store.
    pub blobs_reused: usize,
    /// Blobs read in place from local sources (not copied into the store).
    pub blobs_in_place: usize,
    /// Bytes received (including bytes received again after failures).
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// Where the blobs read in place lie.
    #[serde(skip)]
    pub located: BTreeMap<Digest, Located>,
    /// What every requested image resolved to (recorded in the store or not).
    #[serde(skip)]
    pub records: Vec<Record>,
}

struct Resolved {
    request: Request,
    record: Record,
    /// Sources that may serve the blobs, the one that served the manifest first.
    sources: Vec<Arc<dyn Source>>,
}

struct BlobJob {
    desc: Descriptor,
    /// The first image needing it, for messages.
    image: String,
    /// Every image needing it.
    images: Vec<String>,
    sources: Vec<Arc<dyn Source>>,
}

/// Runs `f` until it succeeds, fails permanently, or has failed transiently `attempts` times.
fn with_retry<T>(
    policy: &RetryPolicy,
    mut f: impl FnMut() -> Result<T, Failure>,
) -> Result<T, Failure> {
    let mut n = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(Failure::Permanent(c)) => return Err(Failure::Permanent(c)),
            Err(Failure::Transient { cause, retry_after }) => {
                n += 1;
                if n >= policy.attempts {
                    return Err(Failure::Permanent(format!(
                        "{cause} (gave up after {n} attempts)"
                    )));
                }
                std::thread::sleep(policy.delay(n, retry_after));
            }
        }
    }
}

/// Fetches a manifest and checks it against the digest expected (pinned, list entry) or declared
/// (`Docker-Content-Digest`); a mismatch is retried like a transient failure.
fn fetch_manifest(
    src: &dyn Source,
    digest: Option<&Digest>,
    expected: Option<&Digest>,
    policy: &RetryPolicy,
) -> Result<(Digest, FetchedManifest), Failure> {
    with_retry(policy, || {
        let m = src.manifest(digest)?;
        let got = Digest::of(&m.bytes);
        if let Some(want) = expected.or(m.declared_digest.as_ref()) {
            if &got != want {
                return Err(Failure::transient(format!(
                    "manifest served for {want} hashes to {got}"
                )));
            }
        }
        Ok((got, m))
    })
}

fn resolve_from(
    store: &Store,
    src: &dyn Source,
    req: &Request,
    opts: &PullOptions,
) -> Result<Record, Failure> {
    let pinned = match &req.source {
        SourceRef::Registry(r) => r.digest.clone(),
        _ => None,
    };
    let perm = |e: anyhow::Error| Failure::Permanent(format!("{e:#}"));
    let (digest, top) = fetch_manifest(src, None, pinned.as_ref(), &opts.retry)?;
    let (media_type, parsed) = manifest::parse(&top.bytes, top.content_type.as_deref())
        .map_err(|e| Failure::Permanent(format!("manifest {digest}: {e:#}")))?;
    store.put_manifest(&digest, &top.bytes).map_err(perm)?;
    let blobs_of = |m: &Manifest| -> Vec<BlobRef> {
        m.blobs()
            .into_iter()
            .map(|d| BlobRef {
                digest: d.digest,
                size: d.size,
                media_type: d.media_type,
            })
            .collect()
    };
    let instances = match &parsed {
        Manifest::Image { .. } => vec![Instance {
            digest: digest.clone(),
            media_type: media_type.clone(),
            platform: None,
            blobs: blobs_of(&parsed),
        }],
        Manifest::List { manifests } => {
            let chosen = manifest::select(manifests, &opts.arch, opts.all_arches)
                .map_err(|e| Failure::Permanent(format!("{e:#}")))?;
            let mut v = Vec::new();
            for d in chosen {
                let (_, m) = fetch_manifest(src, Some(&d.digest), Some(&d.digest), &opts.retry)?;
                let (mt, parsed) = manifest::parse(&m.bytes, Some(&d.media_type))
                    .map_err(|e| Failure::Permanent(format!("manifest {}: {e:#}", d.digest)))?;
                if !manifest::is_image_type(&mt) {
                    return Err(Failure::Permanent(format!(
                        "list entry {} is not an image manifest ({mt})",
                        d.digest
                    )));
                }
                store.put_manifest(&d.digest, &m.bytes).map_err(perm)?;
                v.push(Instance {
                    digest: d.digest.clone(),
                    media_type: mt,
                    platform: d.platform.as_ref().map(|p| p.to_string()),
                    blobs: blobs_of(&parsed),
                });
            }
            v
        }
    };
    Ok(Record {
        reference: req.key.clone(),
        digest,
        media_type,
        instances,
    })
}

fn sources_for(req: &Request, opts: &PullOptions) -> Result<Vec<Arc<dyn Source>>> {
    Ok(match &req.source {
        SourceRef::Registry(r) => {
            let mut v: Vec<Arc<dyn Source>> = Vec::new();
            if let Some(d) = &r.digest {
                for dir in &opts.oci_mirrors {
                    if OciLayoutSource::has_blob(dir, d) {
                        v.push(Arc::new(OciLayoutSource::pinned(dir.clone(), d.clone())));
                    }
                }
            }
            if let Some(set) = &opts.archives {
                // Air-gapped: the archive (and the layouts) or nothing.
                v.push(Arc::new(ArchiveSource::new(set.clone(), r.clone())));
                return Ok(v);
            }
            for e in opts.mirrors.endpoints(r)? {
                let host = opts.registries.host(&e.image.registry, e.insecure)?;
                v.push(Arc::new(RegistrySource::new(host, e.image)));
            }
            v
        }
        SourceRef::OciLayout { dir, image } => {
            vec![Arc::new(OciLayoutSource::new(dir.clone(), image.clone()))]
        }
        SourceRef::Dir { dir } => vec![Arc::new(DirSource::new(dir.clone()))],
    })
}

/// The record already in the store for a digest-pinned request, when complete and of the
/// requested platform selection: nothing needs fetching.
fn already_stored(store: &Store, req: &Request, opts: &PullOptions) -> Option<Record> {
    let SourceRef::Registry(r) = &req.source else {
        return None;
    };
    let pinned = r.digest.as_ref()?;
    let rec = store.record(&req.key).ok()??;
    let platform_ok = !opts.all_arches
        && rec.instances.len() == 1
        && rec.instances[0].platform.as_deref().is_none_or(|p| {
            p.strip_prefix("linux/")
                .is_some_and(|a| a == opts.arch || a.starts_with(&format!("{}/", opts.arch)))
        });
    (&rec.digest == pinned && platform_ok && store.is_complete(&rec)).then_some(rec)
}

fn resolve(store: &Store, req: &Request, opts: &PullOptions) -> Result<Resolved, String> {
    let sources = sources_for(req, opts).map_err(|e| format!("{}: {e:#}", req.key))?;
    if let Some(record) = already_stored(store, req, opts) {
        return Ok(Resolved {
            request: req.clone(),
            record,
            sources,
        });
    }
    let mut causes = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        match resolve_from(store, src.as_ref(), req, opts) {
            Ok(record) => {
                let mut ordered = vec![src.clone()];
                ordered.extend(
                    sources
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, s)| s.clone()),
                );
                return Ok(Resolved {
                    request: req.clone(),
                    record,
                    sources: ordered,
                });
            }
            Err(f) if sources.len() > 1 => {
                causes.push(format!("from {}: {}", src.describe(), f.cause()))
            }
            Err(f) => causes.push(f.cause().to_string()),
        }
    }
    Err(format!("{}: {}", req.key, causes.join("; then ")))
}

/// Downloads one blob from one source into `slot`, retrying; `Ok` once it is stored.
fn fetch_from(
    src: &dyn Source,
    desc: &Descriptor,
    slot: &mut PartialBlob,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<(), Failure> {
    let mut failures = 0u32;
    let mut attempts = 0u32;
    let mut mismatches = 0u32;
    loop {
        let before = slot.offset();
        attempts += 1;
        match src.blob(desc, slot, progress) {
            Ok(()) => match slot
                .finish(desc.size)
                .map_err(|e| Failure::Permanent(format!("{e:#}")))?
            {
                Finish::Stored => return Ok(()),
                Finish::Mismatch { got, len } => {
                    mismatches += 1;
                    if mismatches >= 3 {
                        return Err(Failure::Permanent(format!(
                            "digest mismatch {mismatches} times (last: {len} bytes hashing to {got})"
                        )));
                    }
                }
            },
            Err(Failure::Permanent(c)) => return Err(Failure::Permanent(c)),
            Err(Failure::Transient { cause, retry_after }) => {
                if slot.offset() <= before {
                    failures += 1;
                }
                if failures >= opts.retry.attempts || attempts >= 100 {
                    return Err(Failure::Permanent(format!(
                        "{cause} (gave up after {attempts} attempts)"
                    )));
                }
                std::thread::sleep(opts.retry.delay(failures.max(1), retry_after));
            }
        }
    }
}

enum BlobOutcome {
    Fetched,
    Reused,
}

fn fetch_blob(
    store: &Store,
    job: &BlobJob,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<BlobOutcome, String> {
    let d = &job.desc.digest;
    let fail = |cause: String| format!("{}: blob {d}: {cause}", job.image);
    let mut slot = match store.begin_blob(d).map_err(|e| fail(format!("{e:#}")))? {
        Slot::Present => return Ok(BlobOutcome::Reused),
        Slot::Write(p) => p,
    };
    let mut causes = Vec::new();
    for src in &job.sources {
        match fetch_from(src.as_ref(), &job.desc, &mut slot, opts, progress) {
            Ok(()) => return Ok(BlobOutcome::Fetched),
            Err(f) => {
                if job.sources.len() > 1 {
                    causes.push(format!("from {}: {}", src.describe(), f.cause()));
                } else {
                    causes.push(f.cause().to_string());
                }
                let _ = slot.reset();
            }
        }
    }
    Err(fail(causes.join("; then ")))
}

/// Runs `f` on every item with at most `jobs` threads.
fn parallel<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                out.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// The blobs `records` need, each with the references that need it.
pub fn blob_needs(records: &[Record]) -> BTreeMap<Digest, Vec<String>> {
    let mut needs: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for r in records {
        for i in &r.instances {
            for b in &i.blobs {
                let v = needs.entry(b.digest.clone()).or_default();
                if !v.contains(&r.reference) {
                    v.push(r.reference.clone());
                }
            }
        }
    }
    needs
}

/// With an oc-mirror archive set: the top-level manifest each registry reference names (by its
/// digest, or its tag's link in the set), with the reference (and the link) that needs it. A
/// tag the set does not have is left to the reference's own error.
fn manifest_needs(opts: &PullOptions) -> BTreeMap<Digest, Vec<String>> {
    let mut needs: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    let Some(set) = &opts.archives else {
        return needs;
    };
    for req in &opts.requests {
        let SourceRef::Registry(r) = &req.source else {
            continue;
        };
        let (d, who) = match &r.digest {
            Some(d) => (d.clone(), req.key.clone()),
            None => match set.resolve_tag(r) {
                Ok((d, link)) => (d, format!("{} (tag link {link})", req.key)),
                Err(_) => continue,
            },
        };
        needs.entry(d).or_default().push(who);
    }
    needs
}

/// With an oc-mirror archive set (nothing else to ask), checks that every blob the images need
/// is in the store, the archives or an OCI mirror layout, before any is copied: one error
/// naming the missing blobs, the images that need them and what to pass.
pub fn check_offline(
    store: &Store,
    needs: &BTreeMap<Digest, Vec<String>>,
    opts: &PullOptions,
) -> Result<()> {
    let Some(set) = &opts.archives else {
        return Ok(());
    };
    let missing: Vec<(&Digest, &Vec<String>)> = needs
        .iter()
        .filter(|(d, _)| {
            !store.has_blob(d)
                && !store.has_manifest(d)
                && set.blob(d).is_none()
                && !opts
                    .oci_mirrors
                    .iter()
                    .any(|m| OciLayoutSource::has_blob(m, d))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut images: Vec<&String> = missing.iter().flat_map(|(_, v)| v.iter()).collect();
    images.sort();
    images.dedup();
    const SHOWN: usize = 12;
    let more = |n: usize| {
        if n > SHOWN {
            format!(" and {} more", n - SHOWN)
        } else {
            String::new()
        }
    };
    let blobs: Vec<String> = missing
        .iter()
        .take(SHOWN)
        .map(|(d, _)| d.to_string())
        .collect();
    let named: Vec<String> = images.iter().take(SHOWN).map(|s| s.to_string()).collect();
    let digests: Vec<Digest> = missing.iter().map(|(d, _)| (*d).clone()).collect();
    bail!(
        "{} blob{} ({}{}) needed by {} image{} ({}{}) {} in none of the oc-mirror archives \
         given ({}) nor in the store{}",
        missing.len(),
        if missing.len() == 1 { "" } else { "s" },
        blobs.join(", "),
        more(missing.len()),
        images.len(),
        if images.len() == 1 { "" } else { "s" },
        named.join(", "),
        more(images.len()),
        if missing.len() == 1 { "is" } else { "are" },
        set.describe(),
        set.missing_hint(&digests)
    )
}

/// Resolves every requested image's manifests (stored byte-exact, as a pull does) without
/// downloading any blob; the records say what each image needs. Nothing is recorded under the
/// requests' references: an image is recorded only once all its blobs are stored.
pub fn resolve_manifests(store: &Store, opts: &PullOptions) -> Result<Vec<Record>> {
    check_offline(store, &manifest_needs(opts), opts)?;
    let mut errors = Vec::new();
    let records: Vec<Record> = parallel(&opts.requests, opts.jobs, |r| resolve(store, r, opts))
        .into_iter()
        .filter_map(|r| r.map_err(|e| errors.push(e)).ok())
        .map(|r| r.record)
        .collect();
    if !errors.is_empty() {
        errors.sort();
        bail!("{}", errors.join("\n"));
    }
    Ok(records)
}

/// Where the blobs of `records` that the store lacks lie in a local source of their request
/// (by key), for a build that reads them in place; nothing is read or fetched.
pub fn locate_local(
    store: &Store,
    opts: &PullOptions,
    records: &[Record],
) -> Result<BTreeMap<Digest, Located>> {
    let mut out = BTreeMap::new();
    for req in &opts.requests {
        let Some(rec) = records.iter().find(|r| r.reference == req.key) else {
            continue;
        };
        let sources = sources_for(req, opts)?;
        for b in rec.instances.iter().flat_map(|i| &i.blobs) {
            if out.contains_key(&b.digest) || store.has_blob(&b.digest) {
                continue;
            }
            let desc = Descriptor {
                media_type: b.media_type.clone(),
                digest: b.digest.clone(),
                size: b.size,
                platform: None,
            };
            if let Some(at) = sources.iter().find_map(|s| s.locate(&desc)) {
                out.insert(b.digest.clone(), at);
            }
        }
    }
    Ok(out)
}

/// Pulls every requested image into the store.
pub fn pull(store: &Store, opts: &PullOptions, progress: &Progress) -> Result<Summary> {
    let t0 = Instant::now();
    check_offline(store, &manifest_needs(opts), opts)?;
    let mut errors = Vec::new();
    let resolved: Vec<Resolved> = parallel(&opts.requests, opts.jobs, |r| resolve(store, r, opts))
        .into_iter()
        .filter_map(|r| r.map_err(|e| errors.push(e)).ok())
        .collect();

    // The union of blobs, each once, with every source that may serve it.
    let mut jobs: BTreeMap<Digest, BlobJob> = BTreeMap::new();
    for r in &resolved {
        for i in &r.record.instances {
            for b in &i.blobs {
                let job = jobs.entry(b.digest.clone()).or_insert_with(|| BlobJob {
                    desc: Descriptor {
                        media_type: b.media_type.clone(),
                        digest: b.digest.clone(),
                        size: b.size,
                        platform: None,
                    },
                    image: r.request.key.clone(),
                    images: Vec::new(),
                    sources: Vec::new(),
                });
                if !job.images.contains(&r.request.key) {
                    job.images.push(r.request.key.clone());
                }
                for s in &r.sources {
                    if !job.sources.iter().any(|x| Arc::ptr_eq(x, s)) {
                        job.sources.push(s.clone());
                    }
                }
            }
        }
    }
    let needs = jobs
        .values()
        .map(|j| (j.desc.digest.clone(), j.images.clone()))
        .collect();
    if let Err(e) = check_offline(store, &needs, opts) {
        errors.sort();
        errors.push(format!("{e:#}"));
        bail!("{}", errors.join("\n"));
    }
    let mut summary = Summary::default();
    let mut todo: Vec<BlobJob> = Vec::new();
    for (d, j) in jobs {
        if store.has_blob(&d) {
            summary.blobs_reused += 1;
        } else if let Some(at) = opts
            .in_place
            .then(|| j.sources.iter().find_map(|s| s.locate(&j.desc)))
            .flatten()
        {
            summary.blobs_in_place += 1;
            summary.located.insert(d, at);
        } else {
            todo.push(j);
        }
    }
    // Largest first, so one big blob does not start last.
    todo.sort_by_key(|j| std::cmp::Reverse(j.desc.size));
    progress.start(todo.len(), todo.iter().map(|j| j.desc.size).sum());
    let outcomes = parallel(&todo, opts.jobs, |job| {
        progress.blob_started();
        let r = fetch_blob(store, job, opts, progress);
        progress.blob_finished(match &r {
            Ok(BlobOutcome::Fetched) => Some(format!(
                "{} {} {}",
                job.desc.digest.short(),
                progress::size(job.desc.size),
                job.image
            )),
            _ => None,
        });
        r
    });
    for o in outcomes {
        match o {
            Ok(BlobOutcome::Fetched) => summary.blobs_fetched += 1,
            Ok(BlobOutcome::Reused) => summary.blobs_reused += 1,
            Err(e) => errors.push(e),
        }
    }
    for r in &resolved {
        if store.is_complete(&r.record) {
            // A warm pull finds every record as it is: nothing to rewrite.
            if store.record(&r.request.key).ok().flatten().as_ref() != Some(&r.record) {
                store.put_record(&r.record)?;
            }
            summary.images += 1;
            progress.detail(&format!("{} {}", r.record.digest, r.request.key));
        }
    }
    summary.records = resolved.into_iter().map(|r| r.record).collect();
    summary.bytes = progress.total_bytes();
    summary.seconds = t0.elapsed().as_secs_f64();
    if !errors.is_empty() {
        errors.sort();
        bail!("{}", errors.join("\n"));
    }
    Ok(summary)
}
