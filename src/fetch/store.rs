//! The local image store: blobs addressed by sha256 (each stored once, whatever number of images
//! share it), manifests kept byte-exact, and an index from each requested reference to what it
//! resolved to.
//!
//! Layout of a store directory:
//!
//! ```text
//! STORE/blobs/sha256/<hex>        layer and config blobs
//! STORE/manifests/sha256/<hex>    manifest and list bytes, exactly as served
//! STORE/refs/<sha256 of ref>.json one Record per requested reference
//! STORE/tmp/                      in-flight writes (`<hex>.part`, resumable)
//! STORE/lock                      flock: shared while pulling/reading, exclusive for prune
//! ```
//!
//! Every write goes to a file under `tmp/`, is hashed while streaming and is renamed into place
//! only when its digest matches, so a store never holds content under a wrong name. Two pulls
//! may share a store: a blob being written is locked (flock on its `.part` file), and the other
//! pull waits for it and then finds it present.
//!
//! That lock also tells a live partial blob from a dead one (its pull was killed): nobody holds
//! a dead one's lock. `store verify` reports dead ones, `store prune` removes them while pulls
//! run (a removed file is unlinked while locked, and a pull that was waiting on it starts over on
//! a fresh file), and never touches a live one.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::digest::Digest;
use super::reference::canonical_key;
use super::source::Located;

/// What a requested reference resolved to, kept in `refs/`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// The reference as requested (registry references normalized).
    pub reference: String,
    /// Digest of the top-level manifest (the list, for lists).
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The image manifests kept: the manifest itself, or the selected list instances.
    pub instances: Vec<Instance>,
}

/// One image manifest of a record.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Instance {
    /// Manifest digest.
    pub digest: Digest,
    /// Manifest media type.
    pub media_type: String,
    /// `os/arch[/variant]` when selected from a list.
    pub platform: Option<String>,
    /// Config and layers, in manifest order.
    pub blobs: Vec<BlobRef>,
}

/// A blob an instance needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobRef {
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Media type from the manifest.
    pub media_type: String,
}

/// An image as stored, for the stages that consume the store.
#[derive(Clone, Debug)]
pub struct StoredImage {
    /// The reference as recorded.
    pub reference: String,
    /// Top-level manifest digest.
    pub digest: Digest,
    /// Top-level media type.
    pub media_type: String,
    /// Top-level manifest bytes (byte-exact).
    pub manifest: Vec<u8>,
    /// Image manifests kept.
    pub instances: Vec<StoredInstance>,
}

/// One image manifest of a stored image.
#[derive(Clone, Debug)]
pub struct StoredInstance {
    /// Manifest digest.
    pub digest: Digest,
    /// Manifest media type.
    pub media_type: String,
    /// Platform when selected from a list.
    pub platform: Option<String>,
    /// Manifest bytes (byte-exact).
    pub manifest: Vec<u8>,
    /// Blobs with their paths in the store.
    pub blobs: Vec<StoredBlob>,
}

/// A blob of a stored image: in the store, or where a local source holds it.
#[derive(Clone, Debug)]
pub struct StoredBlob {
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Media type from the manifest.
    pub media_type: String,
    /// The file holding it.
    pub path: PathBuf,
    /// Offset of its first byte in that file.
    pub offset: u64,
    /// Read in place from a local source: nobody checked its digest yet, so its reader does.
    pub in_place: bool,
}

/// An open store. Holds the store lock (shared, or exclusive for pruning) while alive.
pub struct Store {
    root: PathBuf,
    _lock: File,
}

/// Result of [`Store::verify`].
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Blobs re-hashed.
    pub blobs: usize,
    /// Manifests re-hashed.
    pub manifests: usize,
    /// References checked.
    pub references: usize,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// One line per problem.
    pub problems: Vec<String>,
}

/// A partial blob in `tmp/`.
#[derive(Debug, Clone)]
pub struct Partial {
    /// Its path.
    pub path: PathBuf,
    /// Bytes received.
    pub bytes: u64,
    /// Whether a pull holds it (it is being written).
    pub live: bool,
}

/// Result of [`Store::remove_dead_partials`].
#[derive(Debug, Default)]
pub struct Swept {
    /// Dead partial blobs removed (each with its size).
    pub removed: Vec<(PathBuf, u64)>,
    /// Live partial blobs left alone.
    pub live: usize,
}

/// Result of [`Store::prune`].
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Files removed.
    pub removed: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Files kept.
    pub kept: usize,
}

/// Outcome of [`PartialBlob::finish`].
pub enum Finish {
    /// The blob is in place.
    Stored,
    /// The content hashed to another digest (or had another size); the partial file was reset.
    Mismatch {
        /// What the content hashed to.
        got: Digest,
        /// How many bytes were received.
        len: u64,
    },
}

/// What [`Store::begin_blob`] found.
pub enum Slot {
    /// The blob is already stored (maybe by another pull that held it meanwhile).
    Present,
    /// An exclusive, resumable partial file for the blob.
    Write(PartialBlob),
}

/// A blob being written: `tmp/<hex>.part`, locked, hashed as it grows.
pub struct PartialBlob {
    file: File,
    part: PathBuf,
    dest: PathBuf,
    digest: Digest,
    hasher: Sha256,
    len: u64,
}

impl PartialBlob {
    /// Bytes already written (a resume offset).
    pub fn offset(&self) -> u64 {
        self.len
    }

    /// The blob's expected digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The digest of the bytes written so far (the running hash, not a re-read), so a source
    /// can name its own damage before [`PartialBlob::finish`].
    pub fn hashed(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }

    /// Appends bytes.
    pub fn write(&mut self, buf: &[u8]) -> Result<()> {
        self.file
            .write_all(buf)
            .with_context(|| format!("writing {}", self.part.display()))?;
        crate::testhook::wrote(crate::testhook::Target::Store, buf.len() as u64);
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Drops what was written, to start over.
    pub fn reset(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(|_| ()))
            .with_context(|| format!("truncating {}", self.part.display()))?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// Checks the digest and size and renames the blob into place; on a mismatch the partial file
    /// is reset and the caller decides whether to fetch again.
    pub fn finish(&mut self, size: u64) -> Result<Finish> {
        let got = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if got != self.digest || self.len != size {
            let len = self.len;
            self.reset()?;
            return Ok(Finish::Mismatch { got, len });
        }
        self.file
            .sync_all()
            .with_context(|| format!("syncing {}", self.part.display()))?;
        fs::rename(&self.part, &self.dest).with_context(|| {
            format!(
                "renaming {} to {}",
                self.part.display(),
                self.dest.display()
            )
        })?;
        Ok(Finish::Stored)
    }
}

fn lock(path: &Path, exclusive: bool) -> Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let op = if exclusive {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    flock(&f, op).with_context(|| format!("locking {}", path.display()))?;
    Ok(f)
}

/// Locks the partial blob `part` (waiting while another pull holds it); `None` once the blob
/// `dest` is present. When the file it waited on is gone (the other pull renamed it into place,
/// or `prune` removed it as dead), it looks again.
fn lock_partial(part: &Path, dest: &Path) -> Result<Option<File>> {
    loop {
        if dest.is_file() {
            return Ok(None);
        }
        let f = lock(part, true)?;
        if same_file(&f, part) {
            return Ok(Some(f));
        }
    }
}

/// Whether `path` still names the open file `f`.
fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Tries the exclusive lock of a partial blob without waiting: `Some(file)` (locked) when no
/// pull holds it, `None` when one does or the file is gone.
fn try_lock_partial(path: &Path) -> Result<Option<File>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    match flock(&f, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) if same_file(&f, path) => Ok(Some(f)),
        Ok(()) => Ok(None),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((Digest::from_hasher(h), n))
}

/// Files named by hex digest in a `…/sha256` directory.
fn list_digests(dir: &Path) -> Result<Vec<(Digest, PathBuf)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        match Digest::parse(&format!("sha256:{name}")) {
            Ok(d) => v.push((d, path)),
            Err(_) => bail!("{}: not named by a sha256 digest", path.display()),
        }
    }
    v.sort();
    Ok(v)
}

impl Store {
    /// The default store: `$XDG_CACHE_HOME/prestage`, else `~/.cache/prestage`.
    pub fn default_dir() -> Result<PathBuf> {
        if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
            return Ok(PathBuf::from(x).join("prestage"));
        }
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(h) => Ok(PathBuf::from(h).join(".cache/prestage")),
            None => bail!("neither XDG_CACHE_HOME nor HOME is set: pass --store DIR"),
        }
    }

    /// Opens (creating it if needed) a store, holding the shared lock.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_with(dir, false)
    }

    /// Opens a store holding the exclusive lock (no pull runs meanwhile).
    pub fn open_exclusive(dir: &Path) -> Result<Store> {
        Store::open_with(dir, true)
    }

    fn open_with(dir: &Path, exclusive: bool) -> Result<Store> {
        for sub in ["blobs/sha256", "manifests/sha256", "refs", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        let lock = lock(&dir.join("lock"), exclusive)?;
        Ok(Store {
            root: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Takes the exclusive lock in place of the shared one, calling `waiting` first when pulls
    /// hold the store (the call then waits for them to end).
    pub fn lock_exclusive(&self, waiting: impl FnOnce()) -> Result<()> {
        let path = self.root.join("lock");
        match flock(&self._lock, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK) => waiting(),
            Err(e) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
        flock(&self._lock, FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", path.display()))
    }

    /// The partial blobs in `tmp/`, live (a pull writes them) or dead (their pull was killed).
    pub fn partials(&self) -> Result<Vec<Partial>> {
        let mut v = Vec::new();
        for path in self.partial_paths()? {
            let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let live = try_lock_partial(&path)?.is_none();
            if live && !path.exists() {
                continue;
            }
            v.push(Partial { path, bytes, live });
        }
        Ok(v)
    }

    /// Removes the dead partial blobs of `tmp/`; a partial blob a pull holds is left alone.
    pub fn remove_dead_partials(&self) -> Result<Swept> {
        let mut swept = Swept::default();
        for path in self.partial_paths()? {
            match try_lock_partial(&path)? {
                Some(f) => {
                    let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
                    // Unlinked while locked: a pull waiting for it sees the path gone.
                    fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                    swept.removed.push((path, bytes));
                }
                None if path.exists() => swept.live += 1,
                None => {}
            }
        }
        Ok(swept)
    }

    fn partial_paths(&self) -> Result<Vec<PathBuf>> {
        let tmp = self.root.join("tmp");
        let mut v = Vec::new();
        for e in fs::read_dir(&tmp).with_context(|| format!("reading {}", tmp.display()))? {
            let p = e
                .with_context(|| format!("reading {}", tmp.display()))?
                .path();
            if p.extension().is_some_and(|x| x == "part") {
                v.push(p);
            }
        }
        v.sort();
        Ok(v)
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob (whether or not it is present).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Path of a manifest (whether or not it is present).
    pub fn manifest_path(&self, d: &Digest) -> PathBuf {
        self.root.join("manifests/sha256").join(d.hex())
    }

    /// Whether a blob is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Whether a manifest is present.
    pub fn has_manifest(&self, d: &Digest) -> bool {
        self.manifest_path(d).is_file()
    }

    /// Stores manifest bytes under their digest, failing if they do not hash to `digest`.
    pub fn put_manifest(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let got = Digest::of(bytes);
        if &got != digest {
            bail!("manifest {digest}: content hashes to {got}");
        }
        if self.has_manifest(digest) {
            return Ok(());
        }
        self.write_atomic(&self.manifest_path(digest), bytes)
    }

    /// Reads a stored manifest.
    pub fn manifest(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.manifest_path(d);
        fs::read(&p).with_context(|| format!("reading {}", p.display()))
    }

    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))
            .with_context(|| format!("creating a file in {}", self.root.join("tmp").display()))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        tmp.persist(dest)
            .with_context(|| format!("renaming into {}", dest.display()))?;
        Ok(())
    }

    /// Starts writing a blob: returns [`Slot::Present`] if it is stored, else the locked partial
    /// file (waiting while another pull holds it), positioned at its end for resuming.
    pub fn begin_blob(&self, digest: &Digest) -> Result<Slot> {
        if self.has_blob(digest) {
            return Ok(Slot::Present);
        }
        let part = self.root.join("tmp").join(format!("{}.part", digest.hex()));
        let Some(mut file) = lock_partial(&part, &self.blob_path(digest))? else {
            return Ok(Slot::Present);
        };
        if self.has_blob(digest) {
            // Stored meanwhile: the partial file (locked, so no pull writes it) is of no use.
            let _ = fs::remove_file(&part);
            return Ok(Slot::Present);
        }
        // The prefix already received (by an interrupted run) is hashed so the download can
        // resume after it.
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        file.seek(SeekFrom::Start(0))
            .with_context(|| format!("seeking {}", part.display()))?;
        loop {
            let k = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", part.display()))?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            len += k as u64;
        }
        Ok(Slot::Write(PartialBlob {
            file,
            part,
            dest: self.blob_path(digest),
            digest: digest.clone(),
            hasher,
            len,
        }))
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        let key = canonical_key(reference);
        self.root
            .join("refs")
            .join(format!("{}.json", Digest::of(key.as_bytes()).hex()))
    }

    /// Records what a reference resolved to (after its manifests and blobs are stored).
    pub fn put_record(&self, r: &Record) -> Result<()> {
        let json = serde_json::to_vec_pretty(r).context("serializing a store record")?;
        self.write_atomic(&self.ref_path(&r.reference), &json)
    }

    /// The record of a reference, if any.
    pub fn record(&self, reference: &str) -> Result<Option<Record>> {
        let p = self.ref_path(reference);
        match fs::read(&p) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!("{}: not a valid store record", p.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Every record in the store, sorted by reference.
    pub fn records(&self) -> Result<Vec<Record>> {
        let dir = self.root.join("refs");
        let mut v = Vec::new();
        for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e
                .with_context(|| format!("reading {}", dir.display()))?
                .path();
            if p.extension().is_some_and(|x| x == "json") {
                let b = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                let r: Record = serde_json::from_slice(&b)
                    .with_context(|| format!("{}: not a valid store record", p.display()))?;
                v.push(r);
            }
        }
        v.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(v)
    }

    /// Whether everything a record names is present.
    pub fn is_complete(&self, r: &Record) -> bool {
        self.has_manifest(&r.digest)
            && r.instances.iter().all(|i| {
                self.has_manifest(&i.digest) && i.blobs.iter().all(|b| self.has_blob(&b.digest))
            })
    }

    /// The stored image of a reference (as recorded by `pull`), with manifest bytes and blob
    /// paths; `None` when the reference was never pulled into this store.
    pub fn image(&self, reference: &str) -> Result<Option<StoredImage>> {
        let Some(r) = self.record(reference)? else {
            return Ok(None);
        };
        self.image_of(r, &BTreeMap::new()).map(Some)
    }

    /// The image a record describes, its blobs from the store or, for those the store lacks,
    /// from where a local source holds them (`located`, from an in-place pull).
    pub fn image_of(&self, r: Record, located: &BTreeMap<Digest, Located>) -> Result<StoredImage> {
        let reference = r.reference.clone();
        let manifest = self.manifest(&r.digest)?;
        let mut instances = Vec::new();
        for i in &r.instances {
            let blobs = i
                .blobs
                .iter()
                .map(|b| {
                    let path = self.blob_path(&b.digest);
                    let (path, offset, in_place) = if path.is_file() {
                        (path, 0, false)
                    } else if let Some(l) = located.get(&b.digest) {
                        (l.path.clone(), l.offset, true)
                    } else {
                        bail!("{reference}: blob {} missing from the store", b.digest);
                    };
                    Ok(StoredBlob {
                        digest: b.digest.clone(),
                        size: b.size,
                        media_type: b.media_type.clone(),
                        path,
                        offset,
                        in_place,
                    })
                })
                .collect::<Result<_>>()?;
            instances.push(StoredInstance {
                digest: i.digest.clone(),
                media_type: i.media_type.clone(),
                platform: i.platform.clone(),
                manifest: self.manifest(&i.digest)?,
                blobs,
            });
        }
        Ok(StoredImage {
            reference: r.reference,
            digest: r.digest,
            media_type: r.media_type,
            manifest,
            instances,
        })
    }

    /// Re-hashes every blob and manifest and checks every record's content is present.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut rep = VerifyReport::default();
        for (kind, dir) in [("blob", "blobs/sha256"), ("manifest", "manifests/sha256")] {
            for (d, path) in list_digests(&self.root.join(dir))? {
                let (got, n) = hash_file(&path)?;
                rep.bytes += n;
                if got != d {
                    rep.problems
                        .push(format!("{kind} {d}: content hashes to {got}"));
                }
                if kind == "blob" {
                    rep.blobs += 1;
                } else {
                    rep.manifests += 1;
                }
            }
        }
        for r in self.records()? {
            rep.references += 1;
            if !self.has_manifest(&r.digest) {
                rep.problems
                    .push(format!("{}: manifest {} missing", r.reference, r.digest));
            }
            for i in &r.instances {
                if !self.has_manifest(&i.digest) {
                    rep.problems
                        .push(format!("{}: manifest {} missing", r.reference, i.digest));
                }
                for b in &i.blobs {
                    match fs::metadata(self.blob_path(&b.digest)) {
                        Ok(m) if m.len() == b.size => {}
                        Ok(m) => rep.problems.push(format!(
                            "{}: blob {} has {} bytes, the manifest says {}",
                            r.reference,
                            b.digest,
                            m.len(),
                            b.size
                        )),
                        Err(_) => rep
                            .problems
                            .push(format!("{}: blob {} missing", r.reference, b.digest)),
                    }
                }
            }
        }
        Ok(rep)
    }

    /// Removes blobs and manifests no record needs, and leftover temporary files (never a
    /// partial blob a pull holds). Needs the exclusive lock ([`Store::open_exclusive`] or
    /// [`Store::lock_exclusive`]).
    pub fn prune(&self) -> Result<PruneReport> {
        let mut need_m = std::collections::HashSet::new();
        let mut need_b = std::collections::HashSet::new();
        for r in self.records()? {
            need_m.insert(r.digest.clone());
            for i in r.instances {
                need_m.insert(i.digest);
                need_b.extend(i.blobs.into_iter().map(|b| b.digest));
            }
        }
        let mut rep = PruneReport::default();
        for (dir, need) in [("blobs/sha256", &need_b), ("manifests/sha256", &need_m)] {
            for (d, path) in list_digests(&self.root.join(dir))? {
                if need.contains(&d) {
                    rep.kept += 1;
                    continue;
                }
                let n = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                rep.removed += 1;
                rep.bytes += n;
            }
        }
        let tmp = self.root.join("tmp");
        for e in fs::read_dir(&tmp).with_context(|| format!("reading {}", tmp.display()))? {
            let p = e
                .with_context(|| format!("reading {}", tmp.display()))?
                .path();
            // Under the exclusive store lock no pull runs; the blob's own lock is checked anyway.
            let _held = if p.extension().is_some_and(|x| x == "part") {
                match try_lock_partial(&p)? {
                    Some(f) => Some(f),
                    None => continue,
                }
            } else {
                None
            };
            let n = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            rep.removed += 1;
            rep.bytes += n;
        }
        Ok(rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_resume_and_refuse_wrong_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let content = b"hello, blob".to_vec();
        let d = Digest::of(&content);
        let Slot::Write(mut p) = store.begin_blob(&d).unwrap() else {
            panic!("absent blob reported present")
        };
        p.write(&content[..5]).unwrap();
        drop(p);
        // A new writer (a rerun) resumes after the bytes already on disk.
        let Slot::Write(mut p) = store.begin_blob(&d).unwrap() else {
            panic!("absent blob reported present")
        };
        assert_eq!(p.offset(), 5);
        p.write(b"X, blob").unwrap();
        assert!(matches!(
            p.finish(content.len() as u64).unwrap(),
            Finish::Mismatch { .. }
        ));
        assert_eq!(p.offset(), 0);
        assert!(!store.has_blob(&d));
        p.write(&content).unwrap();
        assert!(matches!(
            p.finish(content.len() as u64).unwrap(),
            Finish::Stored
        ));
        drop(p);
        assert!(matches!(store.begin_blob(&d).unwrap(), Slot::Present));
        assert_eq!(fs::read(store.blob_path(&d)).unwrap(), content);
        assert!(store.put_manifest(&d, b"other bytes").is_err());
        store.put_manifest(&d, &content).unwrap();
        assert_eq!(store.manifest(&d).unwrap(), content);
    }

    #[test]
    fn dead_partial_blobs_go_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (dead, live) = (b"dead blob".to_vec(), b"live blob".to_vec());
        let (dd, ld) = (Digest::of(&dead), Digest::of(&live));
        let Slot::Write(mut p) = store.begin_blob(&dd).unwrap() else {
            panic!("absent blob reported present")
        };
        p.write(&dead[..4]).unwrap();
        drop(p);
        let Slot::Write(mut l) = store.begin_blob(&ld).unwrap() else {
            panic!("absent blob reported present")
        };
        l.write(&live[..4]).unwrap();
        let live_of = |v: Vec<Partial>| {
            let mut v: Vec<_> = v.into_iter().map(|p| (p.bytes, p.live)).collect();
            v.sort();
            v
        };
        assert_eq!(
            live_of(store.partials().unwrap()),
            vec![(4, false), (4, true)]
        );
        let swept = store.remove_dead_partials().unwrap();
        assert_eq!(swept.removed.len(), 1);
        assert!(swept.removed[0].0.ends_with(format!("{}.part", dd.hex())));
        assert_eq!(swept.live, 1);
        assert_eq!(live_of(store.partials().unwrap()), vec![(4, true)]);
        l.write(&live[4..]).unwrap();
        assert!(matches!(
            l.finish(live.len() as u64).unwrap(),
            Finish::Stored
        ));
        drop(l);
        assert!(store.partials().unwrap().is_empty());
        assert_eq!(fs::read(store.blob_path(&ld)).unwrap(), live);
        // The removed one starts over.
        let Slot::Write(p) = store.begin_blob(&dd).unwrap() else {
            panic!("absent blob reported present")
        };
        assert_eq!(p.offset(), 0);
    }
}
