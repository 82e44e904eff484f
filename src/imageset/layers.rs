//! An image's file system, read from its layer blobs without unpacking anything to disk.
//!
//! Layers are applied in manifest order as the OCI image spec says: a later layer's file replaces
//! an earlier one, `.wh.NAME` deletes `NAME` (and everything under it) from the layers below, and
//! `.wh..wh..opq` empties its directory of what the layers below put there. Only the files the
//! caller selects are kept in memory, each capped in size; every other entry is skipped as it
//! streams by.
//!
//! Layers are hostile input: entries with `..` components or absolute paths, links whose target
//! leaves the image root, wanted files reached through a linked directory, compressed data that is
//! not gzip (zstd layers) and data that is not a tar archive are errors naming the layer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::fetch::store::StoredInstance;

/// Default cap on one selected file.
pub const MAX_FILE: u64 = 64 << 20;
/// Default cap on all selected files together.
pub const MAX_TOTAL: u64 = 2 << 30;
/// Default cap on the entries of all layers together (a rootfs has about 10^5).
pub const MAX_ENTRIES: u64 = 4_000_000;

/// One layer (or config) blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:...`.
    pub digest: String,
    /// Media type from the manifest.
    pub media_type: String,
    /// The file holding it.
    pub path: PathBuf,
    /// Offset of its first byte in that file.
    pub offset: u64,
    /// Its size.
    pub size: u64,
    /// Read in place from a local source: its digest is checked as it is read (a store's blob
    /// was checked when it was stored).
    pub check: bool,
}

impl Layer {
    /// The blob's bytes as a reader (exactly `size` of them, hashed when `check`).
    fn open(&self) -> Result<Checked> {
        use std::io::{Seek, SeekFrom};
        let mut f =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))
            .with_context(|| format!("reading {}", self.path.display()))?;
        Ok(Checked {
            inner: f.take(self.size),
            hash: self.check.then(<sha2::Sha256 as sha2::Digest>::new),
        })
    }

    /// Fails unless the bytes `r` gave (all of them, read to the end now) hash to the digest.
    fn finish(&self, mut r: Checked) -> Result<()> {
        use sha2::Digest as _;
        std::io::copy(&mut r, &mut std::io::sink())
            .with_context(|| format!("reading {}", self.path.display()))?;
        if let Some(h) = r.hash.take() {
            let got = format!("sha256:{}", hex::encode(h.finalize()));
            if got != self.digest {
                bail!(
                    "blob {}: {} (at byte {}) hashes to {got}, not to its digest (that copy is \
                     damaged)",
                    self.digest,
                    self.path.display(),
                    self.offset
                );
            }
        }
        Ok(())
    }

    /// The whole blob (at most `limit` bytes), checked like a layer.
    pub fn read_all(&self, limit: u64) -> Result<Vec<u8>> {
        if self.size > limit {
            bail!(
                "blob {}: {} bytes, more than {limit}",
                self.digest,
                self.size
            );
        }
        let mut r = self.open()?;
        let mut v = Vec::with_capacity(self.size as usize);
        r.read_to_end(&mut v)
            .with_context(|| format!("reading {}", self.path.display()))?;
        if v.len() as u64 != self.size {
            bail!(
                "blob {}: {} holds {} of its {} bytes",
                self.digest,
                self.path.display(),
                v.len(),
                self.size
            );
        }
        self.finish(r)?;
        Ok(v)
    }
}

/// A blob's bytes, hashed on the way when they need checking.
struct Checked {
    inner: std::io::Take<File>,
    hash: Option<sha2::Sha256>,
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hash.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// An image manifest split into its config blob and its layers.
#[derive(Clone, Debug)]
pub struct ImageBlobs {
    /// The config blob, when the manifest names one present in the instance.
    pub config: Option<Layer>,
    /// Layers in order.
    pub layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct ManifestDoc {
    config: Option<DescriptorDoc>,
    #[serde(default)]
    layers: Vec<DescriptorDoc>,
}

#[derive(Deserialize)]
struct DescriptorDoc {
    digest: String,
    #[serde(rename = "mediaType", default)]
    media_type: String,
}

/// Splits a stored image manifest into config and layers, with where each blob lies.
pub fn image_blobs(instance: &StoredInstance) -> Result<ImageBlobs> {
    let doc: ManifestDoc = serde_json::from_slice(&instance.manifest)
        .with_context(|| format!("manifest {}: not an image manifest", instance.digest))?;
    let blob = |d: &DescriptorDoc| {
        instance
            .blobs
            .iter()
            .find(|b| b.digest.to_string() == d.digest)
            .map(|b| Layer {
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                path: b.path.clone(),
                offset: b.offset,
                size: b.size,
                check: b.in_place,
            })
    };
    let config = doc.config.as_ref().and_then(blob);
    let mut layers = Vec::new();
    for l in &doc.layers {
        let Some(layer) = blob(l) else {
            bail!(
                "manifest {}: layer {} is not in the store",
                instance.digest,
                l.digest
            );
        };
        layers.push(layer);
    }
    Ok(ImageBlobs { config, layers })
}

/// The `config.Labels` of an image config blob (empty when there are none).
pub fn config_labels(config: &[u8]) -> Result<BTreeMap<String, String>> {
    #[derive(Deserialize)]
    struct Doc {
        config: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(rename = "Labels")]
        labels: Option<BTreeMap<String, String>>,
    }
    let d: Doc = serde_json::from_slice(config).context("not an image config")?;
    Ok(d.config.and_then(|c| c.labels).unwrap_or_default())
}

/// The `architecture` of an image config blob, if it names one.
pub fn config_platform(config: &[u8]) -> Result<Option<String>> {
    #[derive(Deserialize)]
    struct Doc {
        architecture: Option<String>,
    }
    let d: Doc = serde_json::from_slice(config).context("not an image config")?;
    Ok(d.architecture.filter(|a| !a.is_empty()))
}

/// Which files to keep.
#[derive(Clone, Debug)]
pub struct Select {
    /// Exact paths (relative, no leading `/`).
    pub files: Vec<String>,
    /// Directory prefixes: every regular file below one is kept.
    pub dirs: Vec<String>,
}

impl Select {
    fn wants(&self, path: &str) -> bool {
        self.files.iter().any(|f| f == path) || self.dirs.iter().any(|d| is_below(path, d))
    }

    /// Whether `path` is a directory a wanted file lies under (so a link there would redirect
    /// the lookup).
    fn is_ancestor(&self, path: &str) -> bool {
        self.files
            .iter()
            .chain(self.dirs.iter())
            .any(|w| (w != path && is_below(w, path)) || (w == path && self.dirs.contains(w)))
    }
}

/// Size limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest selected file.
    pub max_file: u64,
    /// All selected files together.
    pub max_total: u64,
    /// Entries of all layers together (every path is remembered, for whiteouts).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_file: MAX_FILE,
            max_total: MAX_TOTAL,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// The image's file system as far as the caller asked.
#[derive(Debug, Default)]
pub struct Files {
    /// Selected regular files (links to selected files resolved), by path.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Every path present once the layers are applied (files, directories, links), selected or
    /// not: lets a caller test for a file without reading it.
    pub paths: BTreeMap<String, Kind>,
}

/// What a path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link to the (normalized, root-relative) target.
    Symlink(String),
    /// Hard link to the (normalized) target.
    Hardlink(String),
    /// Anything else (devices, fifos).
    Other,
}

struct Entry {
    layer: usize,
    kind: Kind,
}

/// `path` is `dir` or below it.
fn is_below(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

/// Normalizes an entry path: drops `.` components, a leading `./` and a trailing `/` (the root
/// itself becomes the empty string); refuses `..`, absolute paths and names that are not UTF-8.
pub fn normalize(raw: &[u8]) -> Result<String> {
    let s = std::str::from_utf8(raw).map_err(|_| anyhow!("entry name is not UTF-8"))?;
    if s.starts_with('/') {
        bail!("`{s}`: absolute path in a layer");
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("`{s}`: path traversal (`..`) in a layer"),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a link target found at `link` to a root-relative path; `..` above the root is an
/// escape.
fn resolve_link(link: &str, target: &str) -> Result<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        let mut p: Vec<&str> = link.split('/').collect();
        p.pop();
        p
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    bail!("`{link}` links to `{target}`, outside the image");
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// How a layer's bytes are packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Packing {
    Tar,
    Gzip,
}

fn packing(media_type: &str) -> Result<Packing> {
    let m = media_type;
    if m.ends_with("tar+gzip") || m.ends_with("tar.gzip") || m.ends_with("tar.gz") {
        Ok(Packing::Gzip)
    } else if m.ends_with(".tar") || m.ends_with("layer.v1.tar") || m.is_empty() {
        Ok(Packing::Tar)
    } else if m.contains("zstd") {
        bail!("media type {m}: zstd layers are not supported (gzip or plain tar only)")
    } else {
        bail!("media type {m}: not a layer type prestage reads (gzip or plain tar only)")
    }
}

/// Reads the selected files of an image from its layers, applying them in order.
pub fn read_files(layers: &[Layer], select: &Select, limits: &Limits) -> Result<Files> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut data: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut total = 0u64;
    for (i, l) in layers.iter().enumerate() {
        let mut r = BufReader::with_capacity(1 << 20, l.open()?);
        read_layer(
            i,
            &mut r,
            &l.media_type,
            select,
            limits,
            &mut total,
            &mut entries,
            &mut data,
        )
        .with_context(|| format!("layer {}", l.digest))?;
        // Whatever the tar reader left (its end blocks, padding) is read for the digest too.
        std::io::copy(&mut r, &mut std::io::sink())
            .with_context(|| format!("reading {}", l.path.display()))?;
        l.finish(r.into_inner())?;
    }
    finish(entries, data, select)
}

/// Reads selected files from in-memory layers (`(media type, bytes)`), for tests and small
/// layers.
pub fn read_files_from(
    layers: &[(&str, &[u8])],
    select: &Select,
    limits: &Limits,
) -> Result<Files> {
    let mut entries = BTreeMap::new();
    let mut data = BTreeMap::new();
    let mut total = 0u64;
    for (i, (mt, bytes)) in layers.iter().enumerate() {
        read_layer(
            i,
            *bytes,
            mt,
            select,
            limits,
            &mut total,
            &mut entries,
            &mut data,
        )
        .with_context(|| format!("layer {i}"))?;
    }
    finish(entries, data, select)
}

#[allow(clippy::too_many_arguments)]
fn read_layer<R: BufRead>(
    index: usize,
    mut input: R,
    media_type: &str,
    select: &Select,
    limits: &Limits,
    total: &mut u64,
    entries: &mut BTreeMap<String, Entry>,
    data: &mut BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    let declared = packing(media_type)?;
    let head = input.fill_buf().context("reading the layer")?;
    let sniffed = if head.starts_with(&[0x1f, 0x8b]) {
        Packing::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        bail!("zstd-compressed data: zstd layers are not supported (gzip or plain tar only)");
    } else {
        Packing::Tar
    };
    if declared == Packing::Gzip && sniffed != Packing::Gzip {
        bail!("media type {media_type} says gzip, but the data is not gzip");
    }
    let reader: Box<dyn Read + '_> = match sniffed {
        Packing::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Packing::Tar => Box::new(input),
    };
    let mut archive = tar::Archive::new(reader);
    let iter = archive
        .entries()
        .context("not a tar archive (or a corrupt gzip stream)")?;
    // Paths this layer adds: its own whiteouts never hide them.
    for e in iter {
        let mut e = e.context("not a tar archive (or a corrupt gzip stream)")?;
        if entries.len() as u64 >= limits.max_entries {
            bail!(
                "more than {} entries: refusing the archive",
                limits.max_entries
            );
        }
        let raw = e.path_bytes().into_owned();
        if std::str::from_utf8(&raw).is_err() {
            // Such a name is never selected; it is still checked, then skipped.
            if raw.starts_with(b"/") || raw.split(|b| *b == b'/').any(|c| c == b"..") {
                bail!(
                    "`{}`: absolute path or path traversal in a layer",
                    String::from_utf8_lossy(&raw)
                );
            }
            continue;
        }
        let path = normalize(&raw)?;
        if path.is_empty() {
            continue;
        }
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", path.as_str()),
        };
        if name == ".wh..wh..opq" {
            let dir = dir.to_string();
            remove_below(entries, data, &dir, index, false);
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let target = if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            };
            remove_below(entries, data, &target, index, true);
            continue;
        }
        let et = e.header().entry_type();
        let kind = if et.is_file() || et == tar::EntryType::Continuous {
            Kind::File
        } else if et.is_dir() {
            Kind::Dir
        } else if et.is_symlink() || et.is_hard_link() {
            let target = e
                .link_name_bytes()
                .ok_or_else(|| anyhow!("`{path}`: link without a target"))?;
            let target = std::str::from_utf8(&target)
                .map_err(|_| anyhow!("`{path}`: link target is not UTF-8"))?
                .to_string();
            if et.is_symlink() {
                Kind::Symlink(resolve_link(&path, &target)?)
            } else {
                // Hard link names are archive paths, like entry names.
                Kind::Hardlink(normalize(target.as_bytes())?)
            }
        } else if matches!(
            et,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            continue;
        } else {
            Kind::Other
        };
        // A new entry replaces what lower layers (or earlier in this layer) had at this path;
        // a non-directory also replaces anything below it.
        if kind != Kind::Dir {
            remove_below(entries, data, &path, usize::MAX, true);
        }
        if kind == Kind::File && select.wants(&path) {
            let size = e.header().size().context("bad entry size")?;
            if size > limits.max_file {
                bail!(
                    "`{path}`: entry too large ({size} bytes, the limit is {})",
                    limits.max_file
                );
            }
            *total += size;
            if *total > limits.max_total {
                bail!(
                    "`{path}`: selected files exceed {} bytes in total",
                    limits.max_total
                );
            }
            let mut buf = Vec::with_capacity(size as usize);
            (&mut e)
                .take(limits.max_file + 1)
                .read_to_end(&mut buf)
                .with_context(|| format!("`{path}`: reading the entry"))?;
            if buf.len() as u64 != size {
                bail!("`{path}`: truncated entry");
            }
            data.insert(path.clone(), buf);
        }
        entries.insert(path, Entry { layer: index, kind });
    }
    Ok(())
}

/// Removes `path` (when `inclusive`) and everything below it that layers before `layer` added.
fn remove_below(
    entries: &mut BTreeMap<String, Entry>,
    data: &mut BTreeMap<String, Vec<u8>>,
    path: &str,
    layer: usize,
    inclusive: bool,
) {
    let doomed: Vec<String> = entries
        .range(path.to_string()..)
        .take_while(|(k, _)| k.starts_with(path))
        .filter(|(k, e)| {
            e.layer < layer
                && if k.as_str() == path {
                    inclusive
                } else {
                    is_below(k, path)
                }
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        entries.remove(&k);
        data.remove(&k);
    }
}

fn finish(
    entries: BTreeMap<String, Entry>,
    mut data: BTreeMap<String, Vec<u8>>,
    select: &Select,
) -> Result<Files> {
    let mut files = BTreeMap::new();
    for (path, e) in &entries {
        match &e.kind {
            Kind::Symlink(_) | Kind::Hardlink(_) if select.is_ancestor(path) => {
                bail!("`{path}` is a link; wanted files are not looked up through links");
            }
            Kind::File if select.wants(path) => {
                if let Some(b) = data.remove(path) {
                    files.insert(path.clone(), b);
                }
            }
            Kind::Symlink(t) | Kind::Hardlink(t) if select.wants(path) => {
                let mut target = t.clone();
                // Follow a short chain of links, as a reader of the file would.
                let mut hops = 0;
                loop {
                    match entries.get(&target).map(|e| &e.kind) {
                        Some(Kind::File) => break,
                        Some(Kind::Symlink(n)) | Some(Kind::Hardlink(n)) if hops < 8 => {
                            target = n.clone();
                            hops += 1;
                        }
                        _ => bail!("`{path}` links to `{target}`, which is not a regular file"),
                    }
                }
                let Some(b) = data.get(&target).or_else(|| files.get(&target)) else {
                    bail!(
                        "`{path}` links to `{target}`, outside the selected files; \
                         prestage does not read link targets it was not asked for"
                    );
                };
                files.insert(path.clone(), b.clone());
            }
            _ => {}
        }
    }
    let paths = entries.into_iter().map(|(k, e)| (k, e.kind)).collect();
    Ok(Files { files, paths })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

    /// A tar entry for test layers.
    pub enum T<'a> {
        F(&'a str, &'a [u8]),
        /// A regular file with a raw (maybe not UTF-8) name.
        Raw(&'a [u8], &'a [u8]),
        D(&'a str),
        S(&'a str, &'a str),
        H(&'a str, &'a str),
    }

    fn header(path: &[u8], et: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        // Raw name bytes, so hostile names get into the archive unchecked.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path);
        h.set_entry_type(et);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    /// A plain tar archive of the entries.
    pub fn tar_of(entries: &[T]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            match e {
                T::F(p, d) => {
                    let h = header(p.as_bytes(), tar::EntryType::Regular, d.len() as u64);
                    b.append(&h, *d).unwrap();
                }
                T::Raw(p, d) => {
                    let h = header(p, tar::EntryType::Regular, d.len() as u64);
                    b.append(&h, *d).unwrap();
                }
                T::D(p) => {
                    let h = header(p.as_bytes(), tar::EntryType::Directory, 0);
                    b.append(&h, &[][..]).unwrap();
                }
                T::S(p, t) | T::H(p, t) => {
                    let et = if matches!(e, T::S(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    };
                    let mut h = header(p.as_bytes(), et, 0);
                    h.set_link_name(t).unwrap();
                    h.set_cksum();
                    b.append(&h, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// A gzip tar layer of the entries.
    pub fn gz_of(entries: &[T]) -> Vec<u8> {
        use std::io::Write;
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        g.write_all(&tar_of(entries)).unwrap();
        g.finish().unwrap()
    }

    fn sel(dirs: &[&str], files: &[&str]) -> Select {
        Select {
            dirs: dirs.iter().map(|s| s.to_string()).collect(),
            files: files.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn read(layers: &[(&str, &[u8])], s: &Select) -> Result<Files> {
        read_files_from(layers, s, &Limits::default())
    }

    fn err(layers: &[(&str, &[u8])], s: &Select) -> String {
        format!("{:#}", read(layers, s).unwrap_err())
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let l1 = gz_of(&[
            T::D("./configs/"),
            T::F("./configs/a/catalog.json", b"a1"),
            T::F("./configs/b/catalog.json", b"b1"),
            T::F("./configs/c/catalog.json", b"c1"),
            T::F("./etc/passwd", b"root"),
        ]);
        let l2 = tar_of(&[
            T::F("configs/a/catalog.json", b"a2"),
            T::F("configs/b/.wh.catalog.json", b""),
            T::F("configs/c/.wh..wh..opq", b""),
            T::F("configs/c/new.yaml", b"c2"),
        ]);
        let f = read(&[(GZ, &l1), (TAR, &l2)], &sel(&["configs"], &[])).unwrap();
        let got: Vec<(&str, &[u8])> = f
            .files
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("configs/a/catalog.json", &b"a2"[..]),
                ("configs/c/new.yaml", &b"c2"[..])
            ]
        );
        assert_eq!(f.paths.get("etc/passwd"), Some(&Kind::File));
        assert!(!f.paths.contains_key("configs/b/catalog.json"));
        // A whiteout of a directory removes what is below it.
        let l3 = gz_of(&[T::F(".wh.configs", b"")]);
        let f = read(&[(GZ, &l1), (GZ, &l3)], &sel(&["configs"], &[])).unwrap();
        assert!(f.files.is_empty());
        assert!(f.paths.contains_key("etc/passwd"));
    }

    #[test]
    fn links_inside_resolve_escaping_ones_fail() {
        let l = gz_of(&[
            T::F("data/real", b"x"),
            T::S("data/alias", "real"),
            T::H("data/hard", "data/real"),
        ]);
        let f = read(&[(GZ, &l)], &sel(&["data"], &[])).unwrap();
        assert_eq!(f.files.len(), 3);
        assert_eq!(f.files["data/alias"], b"x");
        assert_eq!(f.files["data/hard"], b"x");

        let l = gz_of(&[T::S("data/evil", "../../etc/shadow")]);
        assert!(err(&[(GZ, &l)], &sel(&["data"], &[])).contains("outside the image"));
        let l = gz_of(&[
            T::S("release-manifests", "/tmp"),
            T::F("release-manifests/x", b""),
        ]);
        let e = err(&[(GZ, &l)], &sel(&[], &["release-manifests/x"]));
        assert!(e.contains("is a link"), "{e}");
    }

    #[test]
    fn hostile_archives_fail_clearly() {
        let s = sel(&["configs"], &[]);
        let l = gz_of(&[T::F("configs/../../etc/passwd", b"x")]);
        assert!(err(&[(GZ, &l)], &s).contains("path traversal"));
        let l = gz_of(&[T::F("/configs/x", b"x")]);
        assert!(err(&[(GZ, &l)], &s).contains("absolute path"));
        let l = gz_of(&[T::Raw(b"usr/share/caf\xe9", b"x"), T::F("configs/ok", b"1")]);
        assert_eq!(read(&[(GZ, &l)], &s).unwrap().files.len(), 1);
        let l = gz_of(&[T::Raw(b"../caf\xe9", b"x")]);
        assert!(err(&[(GZ, &l)], &s).contains("path traversal"));
        let big = vec![0u8; 2048];
        let l = gz_of(&[T::F("configs/big", &big)]);
        let e = format!(
            "{:#}",
            read_files_from(
                &[(GZ, &l)],
                &s,
                &Limits {
                    max_file: 1024,
                    ..Limits::default()
                }
            )
            .unwrap_err()
        );
        assert!(e.contains("entry too large"), "{e}");
        // Big files that are not selected are skipped, whatever their size.
        let l = gz_of(&[T::F("usr/bin/opm", &big), T::F("configs/ok", b"1")]);
        let f = read_files_from(
            &[(GZ, &l)],
            &s,
            &Limits {
                max_file: 1024,
                ..Limits::default()
            },
        )
        .unwrap();
        assert_eq!(f.files.len(), 1);
        let e = err(&[(GZ, b"plain text, not gzip")], &s);
        assert!(e.contains("not gzip"), "{e}");
        let e = err(&[(TAR, b"\x28\xb5\x2f\xfd zstd")], &s);
        assert!(e.contains("zstd"), "{e}");
        let e = err(&[("application/vnd.oci.image.layer.v1.tar+zstd", b"")], &s);
        assert!(e.contains("zstd layers are not supported"), "{e}");
        let mut junk = vec![b'x'; 1024];
        junk[0] = b'y';
        let e = err(&[(TAR, &junk)], &s);
        assert!(e.contains("not a tar archive"), "{e}");
        let mut gz = gz_of(&[T::F("configs/a", &[7u8; 4096])]);
        gz.truncate(gz.len() / 2);
        assert!(read(&[(GZ, &gz)], &s).is_err());
    }

    #[test]
    fn entry_and_total_caps() {
        let l = gz_of(&[T::F("a", b"1"), T::F("b", b"2"), T::F("c", b"3")]);
        let lim = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let e = format!(
            "{:#}",
            read_files_from(&[(GZ, &l)], &sel(&[""], &[]), &lim).unwrap_err()
        );
        assert!(e.contains("more than 2 entries"), "{e}");
        let lim = Limits {
            max_total: 2,
            ..Limits::default()
        };
        let e = format!(
            "{:#}",
            read_files_from(&[(GZ, &l)], &sel(&[""], &[]), &lim).unwrap_err()
        );
        assert!(e.contains("exceed 2 bytes in total"), "{e}");
    }

    #[test]
    fn normalization() {
        assert_eq!(normalize(b"./a//b/./c/").unwrap(), "a/b/c");
        assert!(normalize(b"a/../b").is_err());
        assert_eq!(resolve_link("a/b/c", "../d").unwrap(), "a/d");
        assert_eq!(resolve_link("a/b", "/x/y").unwrap(), "x/y");
        assert!(resolve_link("a", "../../x").is_err());
    }
}
