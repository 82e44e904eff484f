//! oc-mirror archives and caches as an image source: what `oc-mirror -c isc.yaml file://DIR
//! --v2` wrote on the connected side of an air gap (`DIR/mirror_000001.tar`, …, and
//! `DIR/working-dir/`), or oc-mirror's cache directory, read in place. Nothing is extracted:
//! the tar files' member headers are indexed once ([`tarindex`]), and every blob is a byte range
//! of a tar file (or a file of the cache), checked against its digest by whoever reads it
//! ([`source::ArchiveSource`]).
//!
//! # The format, as oc-mirror writes it
//!
//! Read from openshift/oc-mirror at commit `855b64a3c9c03634bcab6210b641274772050cda` (v2, the
//! `internal/pkg` tree):
//!
//! - **The cache** is a distribution registry's filesystem storage (oc-mirror runs one on
//!   `localhost:55000`), rooted at `$OC_MIRROR_CACHE` or `--cache-dir`, else
//!   `~/.oc-mirror/.cache` (`internal/pkg/cli/const.go` `cacheRelativePath`,
//!   `executor.go` `setupLocalStorageDir`): `docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data`
//!   holds every blob *and every manifest* by digest; a repository is
//!   `docker/registry/v2/repositories/<repo>/` with `_manifests/revisions/sha256/<hex>/link`
//!   (the manifests it holds), `_manifests/tags/<tag>/current/link` (a tag; the file holds
//!   `sha256:<hex>`), `_manifests/tags/<tag>/index/…` and `_layers/sha256/<hex>/link`.
//! - **Repository names** drop the source registry host (`image.ParseRef`'s `PathComponent`,
//!   `internal/pkg/image/image.go`: `quay.io/org/img:t` is `org/img:t`; a name written without a
//!   host keeps its one component, `busybox:1` is `busybox:1`). Release images are renamed
//!   `openshift/release-images:<release tag>` and release components
//!   `openshift/release:<release tag>-<component>`; an image given by digest only gets the tag
//!   `sha256-<hex>` (`internal/pkg/release/local_stored_collector.go` `preparePathComponents`,
//!   `prepareTag`, constants in `release/const.go`; `internal/pkg/additional/
//!   local_stored_collector.go` `buildMirrorToDiskPaths`). A catalog is cached under its path
//!   and original tag (`internal/pkg/operator/common.go` `prepareM2DCopyBatch`, its tag kept as
//!   `targetTag` when `config/pin_catalogs.go` pins it), its filtered rebuild under a hash tag.
//!   The release tag is the tag of the release's signed identity (`release/signature.go`
//!   rewrites the graph's `payload@digest` to it, e.g. `4.14.3-x86_64`).
//! - **The archive** (`internal/pkg/archive/archive.go` `BuildArchive`, `const.go`,
//!   `permissive_adder.go`, `strict_adder.go`, `adder_common.go`): tar files (Go's
//!   `archive/tar`, uncompressed) named `mirror_%06d.tar` holding, in this order, every file of
//!   the cache's `repositories/` tree (all of it, also what earlier runs mirrored), the blobs of
//!   this run's images that the history does not list (`addImagesDiff`), the whole
//!   `working-dir/`, and the ImageSetConfiguration file as `isc_<RFC 3339 time>` at the top.
//!   Member names are relative to the cache (`docker/registry/v2/…`) and to working-dir's parent
//!   (`working-dir/…`). Files are added whole: a new tar starts when the next file would take
//!   the current one past `archiveSize` GiB (default 500; header bytes not counted), and a file
//!   larger than that goes alone into a tar of its own (or, with `--strict-archive`, fails), so a
//!   blob is never split across tars, but any member may sit in any tar of the set.
//! - **Incremental archives** (`internal/pkg/history/history.go`): `working-dir/.history/
//!   .history-<RFC 3339 time>` lists every blob digest archived so far; a run leaves out the
//!   blobs of the newest history file (before `--since`) and appends its own after archiving, so
//!   archive N carries the history of archives 1..N-1 and is unusable without them (or the
//!   cache): its repositories link to manifests and layers it does not hold.
//! - **working-dir for releases** (`internal/pkg/release/const.go`, `local_stored_collector.go`,
//!   `core-cincinnati.go`, `signature.go`): `release-images/<name>/<tag>/` is an OCI layout of
//!   the release image (converted by copying, so its manifest digest is not the registry's),
//!   `hold-release/<name>/<tag>/release-manifests/` the release's `image-references` and
//!   `release-metadata` extracted from it, `hold-release/cincinnati-graph-data/<arch>-
//!   <channel>.json` the update service's answer for each channel queried (what oc-mirror's
//!   disk-to-mirror reads instead of the service), and `signatures/<tag>-sha256-<hex>` the
//!   release signatures.
//!
//! # What prestage takes from it
//!
//! Images are named by their source references, as resolved from a registry; only the bytes
//! come from the archive. A digest-pinned image is its manifest blob, found by digest; a tagged
//! one is looked up by tag in `<path without host>` (for Docker Hub also without `library/`),
//! and a release image `…/<name>:<tag>` in `openshift/release-images:<tag>` when the archive's
//! working-dir has `release-images/<name>/<tag>/`. The release's components are read from the
//! release image's own layers (digest-checked), not from `hold-release/`; channel ranges resolve
//! from the archive's graph data. When several PATHs are given, a later one's tag links and
//! working-dir files take precedence (give an incremental chain oldest first), and the
//! ImageSetConfiguration used, when none is given, is the last one carried.

pub mod source;
pub mod tarindex;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::digest::Digest;
use super::reference::{ImageRef, DOCKER_HUB};
use tarindex::{Member, TarIndex};

/// The storage tree's root inside the cache and the archive.
pub const STORAGE: &str = "docker/registry/v2";
/// Where the archive's working-dir members are.
pub const WORKING_DIR: &str = "working-dir";
/// The repository oc-mirror renames release images to.
pub const RELEASE_IMAGES_REPO: &str = "openshift/release-images";
/// Largest link, manifest or working-dir file read into memory.
const MAX_SMALL: u64 = 64 << 20;

/// Where bytes lie: a member of an indexed tar file, or a file on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A member of `tars[tar]`.
    Member {
        /// Index into the set's tar files.
        tar: usize,
        /// The member.
        member: Member,
    },
    /// A file (of a cache or a working-dir on disk) of `size` bytes.
    File {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

impl Entry {
    /// Its size.
    pub fn size(&self) -> u64 {
        match self {
            Entry::Member { member, .. } => member.size,
            Entry::File { size, .. } => *size,
        }
    }
}

/// A tag of a repository, as the storage tree links it.
#[derive(Clone, Debug)]
struct TagLink {
    /// What the link names (or why it names nothing).
    target: Result<Digest, String>,
    /// The link file.
    at: Entry,
}

/// One PATH given, for messages.
#[derive(Clone, Debug)]
struct Input {
    path: PathBuf,
    what: String,
}

/// An oc-mirror archive set (tar files, caches, working-dirs), indexed.
#[derive(Debug, Default)]
pub struct ArchiveSet {
    inputs: Vec<Input>,
    tars: Vec<TarIndex>,
    /// Blobs in tar members (a complete member preferred).
    blobs: HashMap<Digest, Entry>,
    /// `docker/registry/v2` directories on disk.
    caches: Vec<PathBuf>,
    /// `(repository, tag)` → link; later inputs replace earlier ones.
    tags: BTreeMap<(String, String), TagLink>,
    /// working-dir files (relative to working-dir) in tar members, with their input; later
    /// inputs win.
    working: BTreeMap<String, (usize, Entry)>,
    /// working-dir directories on disk, with their input.
    working_dirs: Vec<(usize, PathBuf)>,
    /// `(name, tag)` of each release in working-dir's `release-images/`, once computed.
    releases: std::sync::OnceLock<BTreeSet<(String, String)>>,
    /// `isc_<time>` members: (input index, time, entry).
    iscs: Vec<(usize, String, Entry)>,
}

/// A blob found in the set.
#[derive(Clone, Debug)]
pub struct BlobAt {
    /// Where.
    pub entry: Entry,
    /// For messages: the file, or the archive and its member.
    pub what: String,
}

fn is_archive_name(name: &str) -> bool {
    name.strip_prefix("mirror_")
        .and_then(|r| r.strip_suffix(".tar"))
        .is_some_and(|n| n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `blobs/sha256/<2 hex>/<hex>/data` (below the storage root) → the digest.
fn blob_digest(rel: &str) -> Option<Digest> {
    let rest = rel.strip_prefix("blobs/sha256/")?;
    let mut parts = rest.split('/');
    let (pre, hex, data) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || data != "data" || !hex.starts_with(pre) || pre.len() != 2 {
        return None;
    }
    Digest::parse(&format!("sha256:{hex}")).ok()
}

/// `repositories/<repo>/_manifests/tags/<tag>/current/link` (below the storage root) →
/// `(repo, tag)`.
fn tag_link(rel: &str) -> Option<(String, String)> {
    let rest = rel.strip_prefix("repositories/")?;
    let (repo, tail) = rest.split_once("/_manifests/tags/")?;
    let tag = tail.strip_suffix("/current/link")?;
    if tag.contains('/') || repo.is_empty() || tag.is_empty() {
        return None;
    }
    Some((repo.to_string(), tag.to_string()))
}

fn parse_link(bytes: &[u8]) -> Result<Digest, String> {
    let text = String::from_utf8_lossy(bytes);
    Digest::parse(text.trim()).map_err(|e| format!("not a digest link ({e:#})"))
}

impl ArchiveSet {
    /// Opens the PATHs given (tar files, directories of `mirror_*.tar` with or without
    /// `working-dir/`, oc-mirror cache directories, working-dirs), indexing every tar's member
    /// headers once.
    pub fn open(paths: &[PathBuf]) -> Result<ArchiveSet> {
        let mut set = ArchiveSet::default();
        for p in paths {
            set.add(p)
                .with_context(|| format!("--from-oc-mirror {}", p.display()))?;
        }
        Ok(set)
    }

    fn add(&mut self, path: &Path) -> Result<()> {
        let md = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let input = self.inputs.len();
        let mut found = Vec::new();
        if md.is_file() {
            self.add_tar(input, path)?;
            found.push("a tar file".to_string());
        } else {
            let mut tars: Vec<PathBuf> = Vec::new();
            for e in
                std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
            {
                let e = e.with_context(|| format!("reading {}", path.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if is_archive_name(&name) && e.path().is_file() {
                    tars.push(e.path());
                }
            }
            tars.sort();
            for t in &tars {
                self.add_tar(input, t)?;
            }
            if !tars.is_empty() {
                found.push(match tars.len() {
                    1 => "1 tar file".to_string(),
                    n => format!("{n} tar files"),
                });
            }
            // The storage root itself, the cache (`~/.oc-mirror/.cache`), or what holds it
            // (`--cache-dir DIR`, `$HOME`, `~/.oc-mirror`).
            let storage = [
                path.to_path_buf(),
                path.join(STORAGE),
                path.join(".cache").join(STORAGE),
                path.join(".oc-mirror/.cache").join(STORAGE),
            ]
            .into_iter()
            .find(|s| s.ends_with(STORAGE) && s.join("blobs").is_dir());
            if let Some(s) = storage {
                self.add_cache(&s)?;
                found.push(format!("the cache {}", s.display()));
            }
            let wd = if path.file_name().is_some_and(|n| n == WORKING_DIR) {
                Some(path.to_path_buf())
            } else {
                Some(path.join(WORKING_DIR)).filter(|w| w.is_dir())
            };
            if let Some(w) = wd {
                found.push(format!("the working-dir {}", w.display()));
                self.working_dirs.push((input, w));
            }
            if found.is_empty() {
                bail!(
                    "no oc-mirror archive there (no mirror_NNNNNN.tar, no working-dir/, no \
                     {STORAGE}/ cache)"
                );
            }
        }
        self.inputs.push(Input {
            path: path.to_path_buf(),
            what: found.join(", "),
        });
        Ok(())
    }

    fn add_tar(&mut self, input: usize, path: &Path) -> Result<()> {
        let idx = tarindex::index(path)?;
        let t = self.tars.len();
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for m in &idx.members {
            let entry = Entry::Member {
                tar: t,
                member: m.clone(),
            };
            if let Some(rel) = m.name.strip_prefix(&format!("{STORAGE}/")) {
                if let Some(d) = blob_digest(rel) {
                    let keep = match self.blobs.get(&d) {
                        Some(Entry::Member { member, .. }) => !member.complete && m.complete,
                        Some(Entry::File { .. }) => false,
                        None => true,
                    };
                    if keep {
                        self.blobs.insert(d, entry);
                    }
                } else if let Some(key) = tag_link(rel) {
                    let target = if !m.complete {
                        Err("truncated".to_string())
                    } else if m.size > 1024 {
                        Err(format!("{} bytes, not a link", m.size))
                    } else {
                        let mut buf = vec![0u8; m.size as usize];
                        f.read_exact_at(&mut buf, m.offset)
                            .with_context(|| format!("reading {}", path.display()))?;
                        parse_link(&buf)
                    };
                    self.tags.insert(key, TagLink { target, at: entry });
                }
            } else if let Some(rel) = m.name.strip_prefix(&format!("{WORKING_DIR}/")) {
                self.working.insert(rel.to_string(), (input, entry));
            } else if let Some(time) = m.name.strip_prefix("isc_") {
                if !m.name.contains('/') {
                    self.iscs.push((input, time.to_string(), entry));
                }
            }
        }
        self.tars.push(idx);
        Ok(())
    }

    fn add_cache(&mut self, storage: &Path) -> Result<()> {
        let repos = storage.join("repositories");
        if repos.is_dir() {
            let walker = walkdir::WalkDir::new(&repos).into_iter().filter_entry(|e| {
                let n = e.file_name();
                !(n == "_layers" || n == "_uploads" || n == "revisions")
            });
            for e in walker {
                let e = e.with_context(|| format!("reading {}", repos.display()))?;
                if !e.file_type().is_file() {
                    continue;
                }
                let rel = e
                    .path()
                    .strip_prefix(storage)
                    .unwrap_or(e.path())
                    .to_string_lossy()
                    .into_owned();
                if let Some(key) = tag_link(&rel) {
                    let bytes = std::fs::read(e.path())
                        .with_context(|| format!("reading {}", e.path().display()))?;
                    self.tags.insert(
                        key,
                        TagLink {
                            target: parse_link(&bytes),
                            at: Entry::File {
                                path: e.path().to_path_buf(),
                                size: bytes.len() as u64,
                            },
                        },
                    );
                }
            }
        }
        self.caches.push(storage.to_path_buf());
        Ok(())
    }

    /// The PATHs given and what each holds, for messages.
    pub fn describe(&self) -> String {
        self.inputs
            .iter()
            .map(|i| format!("{} ({})", i.path.display(), i.what))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The PATHs given.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.inputs.iter().map(|i| i.path.clone()).collect()
    }

    /// For messages: the file, or the archive file and its member.
    pub fn what(&self, e: &Entry) -> String {
        match e {
            Entry::Member { tar, member } => {
                format!("{}: member {}", self.tars[*tar].path.display(), member.name)
            }
            Entry::File { path, .. } => path.display().to_string(),
        }
    }

    /// The file holding an entry's bytes and the offset of its first byte.
    pub fn file_of(&self, e: &Entry) -> (PathBuf, u64) {
        match e {
            Entry::Member { tar, member } => (self.tars[*tar].path.clone(), member.offset),
            Entry::File { path, .. } => (path.clone(), 0),
        }
    }

    /// Why an entry's bytes cannot be read whole (a truncated member), if so.
    pub fn damaged(&self, e: &Entry) -> Option<String> {
        match e {
            Entry::Member { tar, member } if !member.complete => {
                let t = &self.tars[*tar];
                Some(format!(
                    "{}: member {}: the file ends {} bytes into its {} (the archive is \
                     truncated: copy it again)",
                    t.path.display(),
                    member.name,
                    t.len.saturating_sub(member.offset),
                    member.size
                ))
            }
            _ => None,
        }
    }

    /// Reads a whole entry (at most `limit` bytes).
    pub fn read(&self, e: &Entry, limit: u64) -> Result<Vec<u8>> {
        if let Some(why) = self.damaged(e) {
            bail!("{why}");
        }
        let size = e.size();
        if size > limit {
            bail!("{}: larger than {limit} bytes", self.what(e));
        }
        let (path, offset) = self.file_of(e);
        let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut buf = vec![0u8; size as usize];
        f.read_exact_at(&mut buf, offset)
            .with_context(|| format!("reading {}", self.what(e)))?;
        Ok(buf)
    }

    /// Where the blob (or manifest) `d` is, if any PATH holds it.
    pub fn blob(&self, d: &Digest) -> Option<BlobAt> {
        if let Some(e) = self.blobs.get(d) {
            if matches!(e, Entry::Member { member, .. } if member.complete) {
                return Some(BlobAt {
                    what: self.what(e),
                    entry: e.clone(),
                });
            }
        }
        for c in &self.caches {
            let p = c
                .join("blobs/sha256")
                .join(&d.hex()[..2])
                .join(d.hex())
                .join("data");
            if let Ok(md) = std::fs::metadata(&p) {
                if md.is_file() {
                    return Some(BlobAt {
                        what: p.display().to_string(),
                        entry: Entry::File {
                            path: p,
                            size: md.len(),
                        },
                    });
                }
            }
        }
        // A truncated member, for its error.
        self.blobs.get(d).map(|e| BlobAt {
            what: self.what(e),
            entry: e.clone(),
        })
    }

    /// Reads the manifest `d` and checks its digest.
    pub fn manifest(&self, d: &Digest) -> Result<(Vec<u8>, String), String> {
        let Some(at) = self.blob(d) else {
            return Err(format!(
                "manifest {d} is in none of the oc-mirror archives given ({}){}",
                self.describe(),
                self.missing_hint(std::slice::from_ref(d))
            ));
        };
        let bytes = self
            .read(&at.entry, 8 << 20)
            .map_err(|e| format!("{e:#}"))?;
        let got = Digest::of(&bytes);
        if &got != d {
            return Err(format!(
                "{}: its bytes hash to {got}, not to the digest it is named by (the archive is \
                 damaged: copy it again)",
                at.what
            ));
        }
        Ok((bytes, at.what))
    }

    /// The releases working-dir holds: `(name, tag)` of each `release-images/<name>/<tag>/`.
    pub fn release_dirs(&self) -> &BTreeSet<(String, String)> {
        self.releases.get_or_init(|| {
            let mut out = BTreeSet::new();
            for rel in self.working_files_under("release-images/") {
                let mut parts = rel.split('/');
                if let (Some(_), Some(name), Some(tag), Some(_)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                {
                    out.insert((name.to_string(), tag.to_string()));
                }
            }
            out
        })
    }

    /// The repositories a tagged reference may be cached under, in the order tried.
    pub fn candidate_repositories(&self, r: &ImageRef) -> Vec<String> {
        let mut v = vec![r.repository.clone()];
        if r.registry == DOCKER_HUB {
            if let Some(short) = r.repository.strip_prefix("library/") {
                v.push(short.to_string());
            }
        }
        if let Some(tag) = &r.tag {
            let name = r.repository.rsplit('/').next().unwrap_or_default();
            if self
                .release_dirs()
                .contains(&(name.to_string(), tag.clone()))
            {
                v.push(RELEASE_IMAGES_REPO.to_string());
            }
        }
        v
    }

    /// The manifest digest a tagged reference names in the set, and the link that says so.
    pub fn resolve_tag(&self, r: &ImageRef) -> Result<(Digest, String), String> {
        let Some(tag) = &r.tag else {
            return Err(format!("{r}: neither tag nor digest"));
        };
        let repos = self.candidate_repositories(r);
        for repo in &repos {
            if let Some(link) = self.tags.get(&(repo.clone(), tag.clone())) {
                let what = self.what(&link.at);
                return match &link.target {
                    Ok(d) => Ok((d.clone(), what)),
                    Err(e) => Err(format!("{what}: {e}")),
                };
            }
        }
        let mut msg = format!(
            "no tag {tag} of {} in the oc-mirror archives given ({}): oc-mirror caches an image \
             under its path without the registry host; is it in the ImageSetConfiguration the \
             archive was made from?",
            repos.join(" or "),
            self.describe()
        );
        if let Some(d) = self.cut_note() {
            msg.push_str(&format!(" ({d})"));
        }
        Err(msg)
    }

    /// A note on the tar files that are cut short (members after the cut are lost), if any.
    pub fn cut_note(&self) -> Option<String> {
        let v: Vec<String> = self
            .tars
            .iter()
            .filter_map(|t| {
                t.damage
                    .as_ref()
                    .map(|d| format!("{}: {d}", t.path.display()))
            })
            .collect();
        (!v.is_empty()).then(|| {
            format!(
                "{}; what follows the cut is lost: copy the archive again",
                v.join("; ")
            )
        })
    }

    /// What to tell a user whose archives lack `missing`: the history that lists them (an
    /// incremental archive), the tars cut short.
    pub fn missing_hint(&self, missing: &[Digest]) -> String {
        const EARLIER: &str = "pass the earlier archives of the set too (repeat --from-oc-mirror, \
                               oldest first) or oc-mirror's cache directory (~/.oc-mirror/.cache)";
        let listed = self
            .history()
            .map(|(file, listed)| (file, missing.iter().filter(|d| listed.contains(*d)).count()));
        let mut hint = match listed {
            Some((file, n)) if n > 0 => format!(
                "; the archive is incremental: its history ({file}) lists {} as carried by an \
                 earlier archive: {EARLIER}",
                if n == 1 && missing.len() == 1 {
                    "it".to_string()
                } else {
                    format!("{n} of them")
                }
            ),
            _ => format!(
                "; was the archive made with them (are they in its ImageSetConfiguration)? An \
                 incremental archive needs its predecessors: {EARLIER}"
            ),
        };
        if let Some(c) = self.cut_note() {
            hint.push_str(&format!("; {c}"));
        }
        hint
    }

    /// The newest history file the set carries and the digests it lists.
    fn history(&self) -> Option<(String, BTreeSet<Digest>)> {
        let newest = self
            .working_files_under(".history/")
            .into_iter()
            .filter(|f| f.starts_with(".history/.history-"))
            .max()?;
        let (bytes, what) = self.working_file(&newest).ok()??;
        let listed = String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| Digest::parse(l.trim()).ok())
            .collect();
        Some((what, listed))
    }

    /// Paths (relative to working-dir) of the working-dir files under `prefix`, from the tars
    /// and the working-dirs on disk.
    pub fn working_files_under(&self, prefix: &str) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .working
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for (_, w) in &self.working_dirs {
            let base = w.join(prefix.trim_end_matches('/'));
            if !base.exists() {
                continue;
            }
            for e in walkdir::WalkDir::new(&base).into_iter().flatten() {
                if !e.file_type().is_file() {
                    continue;
                }
                if let Ok(rel) = e.path().strip_prefix(w) {
                    let rel = rel.to_string_lossy().into_owned();
                    if rel.starts_with(prefix) {
                        out.insert(rel);
                    }
                }
            }
        }
        out
    }

    /// A working-dir file (path relative to working-dir): its bytes and where they were read.
    pub fn working_file(&self, rel: &str) -> Result<Option<(Vec<u8>, String)>> {
        // The latest input's copy; within one input the working-dir on disk (as oc-mirror left
        // it, after archiving) before the one in its tars.
        let on_disk = self
            .working_dirs
            .iter()
            .rev()
            .find(|(_, w)| w.join(rel).is_file());
        let in_tar = self.working.get(rel);
        match (on_disk, in_tar) {
            (Some((i, w)), t) if t.is_none_or(|(j, _)| i >= j) => {
                let p = w.join(rel);
                let bytes =
                    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                Ok(Some((bytes, p.display().to_string())))
            }
            (_, Some((_, e))) => Ok(Some((self.read(e, MAX_SMALL)?, self.what(e)))),
            (_, None) => Ok(None),
        }
    }

    /// The update service's answer for `channel` and `arch` that oc-mirror saved in working-dir
    /// (`hold-release/cincinnati-graph-data/<arch>-<channel>.json`), with where it was read;
    /// an error naming what the set has instead when it has none.
    pub fn graph_data(&self, arch: &str, channel: &str) -> Result<(Vec<u8>, String)> {
        let dir = "hold-release/cincinnati-graph-data/";
        let rel = format!("{dir}{arch}-{channel}.json");
        if let Some(found) = self.working_file(&rel)? {
            return Ok(found);
        }
        let have: Vec<String> = self
            .working_files_under(dir)
            .into_iter()
            .map(|f| f.trim_start_matches(dir).to_string())
            .collect();
        bail!(
            "the oc-mirror archives given ({}) carry no update graph data for channel {channel} \
             and architecture {arch} (working-dir/{rel}; they have {}); oc-mirror saves it for \
             the channels of the ImageSetConfiguration it ran with, or give --update-graph",
            self.describe(),
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        )
    }

    /// The ImageSetConfiguration the set carries (the last PATH's, its newest `isc_<time>`):
    /// its text and where it was read.
    pub fn imageset_config(&self) -> Result<Option<(String, String)>> {
        let Some((_, _, e)) = self
            .iscs
            .iter()
            .max_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)))
        else {
            return Ok(None);
        };
        let bytes = self.read(e, MAX_SMALL)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", self.what(e)))?;
        Ok(Some((text, self.what(e))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        let hex = "ab".repeat(32);
        assert_eq!(
            blob_digest(&format!("blobs/sha256/ab/{hex}/data")),
            Some(Digest::parse(&format!("sha256:{hex}")).unwrap())
        );
        assert_eq!(blob_digest(&format!("blobs/sha256/cd/{hex}/data")), None);
        assert_eq!(blob_digest(&format!("blobs/sha256/ab/{hex}")), None);
        assert_eq!(
            tag_link(
                "repositories/openshift/release-images/_manifests/tags/4.14.3-x86_64/current/link"
            ),
            Some(("openshift/release-images".into(), "4.14.3-x86_64".into()))
        );
        assert_eq!(
            tag_link("repositories/a/_manifests/tags/v1/index/sha256/ab/link"),
            None
        );
        assert!(is_archive_name("mirror_000001.tar"));
        assert!(!is_archive_name("mirror_1.tar"));
        assert!(!is_archive_name("xmirror_000001.tar"));
    }
}
