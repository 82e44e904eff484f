//! The `store` payload: the partition holds a containers-storage **overlay image store**, read
//! in place (read-only, as an additional image store) by podman, skopeo and CRI-O, so a node
//! needs no copy of its images at all.
//!
//! ```text
//! store/overlay/<layer-id>/diff/...          the layer unpacked as the overlay driver keeps it
//! store/overlay/<layer-id>/{link,lower}      its short name, the short names of its parents
//! store/overlay/<layer-id>/{work,merged,empty}/
//! store/overlay/l/<LINK> -> ../<layer-id>/diff
//! store/overlay-layers/layers.json           every layer: digests, sizes, owners seen
//! store/overlay-layers/<layer-id>.tar-split.gz   what is not file content in the layer's tar
//! store/overlay-layers/layers.lock           pre-created: an engine opens it O_CREAT
//! store/overlay-images/images.json           every image: names, manifests, top layer
//! store/overlay-images/<image-id>/<big data> config, manifests (list, instance)
//! store/overlay-images/images.lock
//! ```
//!
//! Everything is what containers/image and containers/storage write when they pull the same
//! images, read in their code at containers/container-libs commit
//! `f0ddf1a745bb52c26889dcd69499c2dd9d4f40c1` (the monorepo of containers/image v5.39 and
//! containers/storage 1.62) and checked against skopeo 1.9 and 1.18 and podman 4.3:
//!
//! - layer IDs: `image/storage/storage_dest.go` `layerID` (the diffID's hex for a base layer,
//!   else `sha256(parent + "+" + diffID hex)`), so a later pull of the same layers reuses them;
//!   image IDs: the config digest's hex (`image/manifest/oci.go`, `docker_schema2.go`
//!   `ImageID`). Schema 1 images and OCI artifacts are refused.
//! - `layers.json`/`images.json`: `storage/layers.go` `Layer`, `storage/images.go` `Image`
//!   (field order, compact JSON with Go's escapes); big-data keys in the order of
//!   `image/storage/storage_dest.go` `CommitWithOptions` (config, list, instance manifest,
//!   `manifest`), file names from `storage/store.go` `makeBigDataBaseName`.
//! - `diff/`: `storage/drivers/overlay/overlay.go` `ApplyDiff` → `storage/pkg/archive/archive.go`
//!   `Unpack`/`extractTarFileEntry` with `archive_linux.go`'s overlay whiteouts: later members
//!   replace earlier ones, the root member is skipped, missing parents are 0755 root-owned,
//!   `.wh.NAME` becomes a 0/0 character device of mode 0 with the member's owner,
//!   `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory, a hard link's header
//!   re-applies its mode, owner (dropping `security.capability` when the owner changes), time
//!   and attributes to the inode, `security.selinux` is never copied, times before the epoch
//!   are the epoch. Access times are the modification time (prestage writes one time per inode).
//! - tar-split: `vendor/github.com/vbatts/tar-split` (`tar/asm/disassemble.go`,
//!   `tar/storage/entry.go`): JSON lines of raw segments and file entries with the CRC-64/ISO
//!   of each file's content, so `layerStore.Diff` rebuilds the layer tar byte for byte and an
//!   image copied out of the store keeps its diffIDs.
//! - `link` (26 characters of `[A-Z2-7]`, here derived from the layer ID so builds are
//!   reproducible), `lower`, `l/`: `storage/drivers/overlay/overlay.go` `create`, `getLower`.
//! - lock files: `storage/internal/rawfilelock/rawfilelock.go` `OpenLock` opens them `O_CREAT`,
//!   which fails on a read-only mount unless they exist (empty is fine).
//!
//! Each layer blob is read twice: once while planning (its diffID checked against the image
//! config, its tar-split, owners and file list taken) and once when the image is written, front
//! to back, each file's bytes taken at its offset of the decompressed stream
//! ([`Source::Stream`]), the stream's digest checked again at its end. gzip and uncompressed
//! layers are read; zstd layers are refused (no zstd decoder is built in).
//!
//! Names: every staged image is named by its exact source reference (`repo@sha256:…`), and a
//! discovery image also by its `mapping.txt` destination (`localhost/…:tag`); a name given to
//! two different images is refused (an engine would reject the whole store).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::image::{Blobs, Image, ImageFile};
use super::{add_bytes, ImageReport};
use crate::compose::content::{Content, Entry, Kind, Source, StreamReader, Streamed, Time};
use crate::compose::tarfile::{self, Member, MemberKind, Members, TarRead};
use crate::fetch::digest::Digest;
use crate::imageset::lists::ImageLists;

/// The store's directory at the partition root.
pub const ROOT: &str = "store";

/// Slice-by-16 tables: every byte of every layer goes through it while planning.
const CRC64: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_GO_ISO);
/// Largest tar-split segment after the end of the archive (tar-split's padding chunk).
const PADDING_CHUNK: usize = 1 << 20;
/// Read buffers: below glibc's mmap threshold, so that reading hundreds of layers one after
/// the other reuses heap memory (buffers of a MiB each, freed per layer, left the peak RSS at
/// 150 MiB for a release of 1.5 MiB of layers; 26 MiB with these).
const BUF: usize = 64 << 10;
const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// How a layer blob is compressed (containers/storage `archive.Compression` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
}

impl Compression {
    fn detect(magic: &[u8], what: &str) -> Result<Compression> {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Ok(Compression::Gzip)
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            bail!("{what}: a zstd layer; the store payload reads gzip and uncompressed layers")
        } else if magic.starts_with(b"BZh") || magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z']) {
            bail!(
                "{what}: a bzip2 or xz layer; the store payload reads gzip and uncompressed layers"
            )
        } else {
            Ok(Compression::None)
        }
    }

    /// The number `layers.json` records (`None`: the field is left out).
    fn code(self) -> Option<u8> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(2),
        }
    }
}

/// A hasher and the number of bytes it has seen, shared with the reader that feeds it.
type Tally = Arc<Mutex<(Sha256, u64)>>;

/// A reader that hashes what passes through it into a shared hasher.
struct Hashing<R> {
    inner: R,
    sha: Tally,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self
            .sha
            .lock()
            .map_err(|_| io::Error::other("hasher poisoned"))?;
        s.0.update(&buf[..n]);
        s.1 += n as u64;
        Ok(n)
    }
}

/// A layer blob where it lies.
#[derive(Debug, Clone)]
struct Blob {
    path: std::path::PathBuf,
    offset: u64,
    size: u64,
    digest: Digest,
    what: String,
    /// What to do when its bytes do not match its digest.
    hint: &'static str,
}

impl Blob {
    /// The decompressed stream and the hasher of the compressed bytes.
    fn open(&self) -> Result<(Box<dyn Read + Send>, Compression, Tally)> {
        let mut f =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))
            .with_context(|| format!("seeking {} to {}", self.path.display(), self.offset))?;
        let sha = Arc::new(Mutex::new((Sha256::new(), 0)));
        let mut r = BufReader::with_capacity(
            BUF,
            Hashing {
                inner: f.take(self.size),
                sha: sha.clone(),
            },
        );
        let magic = r
            .fill_buf()
            .with_context(|| format!("reading {}", self.what))?;
        let c = Compression::detect(magic, &self.what)?;
        let r: Box<dyn Read + Send> = match c {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            Compression::None => Box::new(r),
        };
        Ok((r, c, sha))
    }

    /// Checks the compressed bytes read against the blob's digest and size.
    fn check(&self, sha: &Mutex<(Sha256, u64)>) -> Result<()> {
        let s = sha.lock().map_err(|_| anyhow!("hasher poisoned"))?;
        let hex = hex::encode(s.0.clone().finalize());
        if s.1 != self.size || hex != self.digest.hex() {
            bail!(
                "{}: {} bytes with sha256 {hex} read, the manifest says {} bytes with {}: {}",
                self.what,
                s.1,
                self.size,
                self.digest,
                self.hint
            );
        }
        Ok(())
    }
}

/// What planning learns from one layer blob.
struct Analysis {
    compression: Compression,
    /// Hex sha256 of the uncompressed tar.
    diff_id: String,
    diff_size: u64,
    uids: Vec<u32>,
    gids: Vec<u32>,
    /// The gzipped tar-split.
    tar_split: Vec<u8>,
    /// The members, in archive order.
    members: Vec<Member>,
}

/// The decompressed tar read for its tar-split: every byte hashed, non-content bytes kept as
/// the current segment, each member's content only checksummed.
struct Recorder<R> {
    inner: R,
    sha: Sha256,
    total: u64,
    seg: Vec<u8>,
    /// The segment (headers) before the member whose data was just read.
    header: Option<Vec<u8>>,
    /// CRC-64 of that data (`None` when empty).
    crc: Option<[u8; 8]>,
    /// The buffer file contents are read through.
    buf: Vec<u8>,
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.total += n as u64;
        self.seg.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl<R: Read> TarRead for Recorder<R> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut (&mut *self).take(n), &mut io::sink())
    }

    fn skip_member_data(&mut self, n: u64) -> io::Result<u64> {
        self.header = Some(std::mem::take(&mut self.seg));
        let mut d = CRC64.digest();
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(BUF, 0);
        let mut left = n;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let k = self.inner.read(&mut buf[..want])?;
            if k == 0 {
                break;
            }
            self.sha.update(&buf[..k]);
            d.update(&buf[..k]);
            self.total += k as u64;
            left -= k as u64;
        }
        self.crc = (n > 0).then(|| d.finalize().to_be_bytes());
        self.buf = buf;
        Ok(n - left)
    }
}

/// One line of a tar-split (tar-split's `storage.Entry`, in its field order).
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct SplitEntry {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    size: u64,
    payload: Option<String>,
    position: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

const SEGMENT: u8 = 2;
const FILE: u8 = 1;

/// Writes tar-split lines into a gzip stream (one member: a 10-byte header, the deflate stream,
/// the CRC-32 and length). The deflate state is kept for the next layer: allocating it for
/// each of hundreds of layers, between the small allocations an analysis keeps, would leave
/// glibc's heap fragmented and the process several times larger.
struct SplitWriter {
    z: flate2::Compress,
    crc: flate2::Crc,
    pending: Vec<u8>,
    out: Vec<u8>,
    position: u64,
}

thread_local! {
    static DEFLATE: std::cell::RefCell<Option<flate2::Compress>> = const { std::cell::RefCell::new(None) };
}

impl SplitWriter {
    fn new() -> SplitWriter {
        let mut z = DEFLATE
            .with(|d| d.borrow_mut().take())
            .unwrap_or_else(|| flate2::Compress::new(flate2::Compression::fast(), false));
        z.reset();
        SplitWriter {
            z,
            crc: flate2::Crc::new(),
            pending: Vec::new(),
            out: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255],
            position: 0,
        }
    }

    fn line(
        &mut self,
        kind: u8,
        name: Option<&str>,
        size: u64,
        payload: Option<&[u8]>,
    ) -> Result<()> {
        let e = SplitEntry {
            kind,
            name: name.map(str::to_string),
            size,
            payload: payload.map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
            position: self.position,
        };
        self.position += 1;
        let mut v = go_json(&e)?;
        v.push(b'\n');
        self.crc.update(&v);
        self.pending.extend_from_slice(&v);
        if self.pending.len() >= BUF {
            self.deflate(false)?;
        }
        Ok(())
    }

    fn segment(&mut self, bytes: &[u8]) -> Result<()> {
        self.line(SEGMENT, None, 0, Some(bytes))
    }

    /// Compresses what is pending; `finish` ends the deflate stream.
    fn deflate(&mut self, finish: bool) -> Result<()> {
        let flush = if finish {
            flate2::FlushCompress::Finish
        } else {
            flate2::FlushCompress::None
        };
        let mut at = 0;
        loop {
            self.out.reserve(BUF);
            let before = self.z.total_in();
            let st = self
                .z
                .compress_vec(&self.pending[at..], &mut self.out, flush)
                .context("compressing the tar-split")?;
            at += usize::try_from(self.z.total_in() - before).unwrap_or(usize::MAX);
            let done = if finish {
                st == flate2::Status::StreamEnd
            } else {
                at >= self.pending.len()
            };
            if done {
                break;
            }
        }
        self.pending.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>> {
        self.deflate(true)?;
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(&self.crc.sum().to_le_bytes());
        out.extend_from_slice(&self.crc.amount().to_le_bytes());
        DEFLATE.with(|d| *d.borrow_mut() = Some(self.z));
        Ok(out)
    }
}

/// Compact JSON as Go's `encoding/json` writes it: serde's output with `<`, `>`, `&`, U+2028 and
/// U+2029 escaped (they only occur inside strings).
fn go_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    let s = serde_json::to_string(v).context("serializing JSON")?;
    let s = s
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    Ok(s.into_bytes())
}

/// Reads a layer blob: its diffID, tar-split, owners and members.
fn analyze(blob: &Blob) -> Result<Analysis> {
    let (r, compression, csha) = blob.open()?;
    let mut members = Members::new(Recorder {
        inner: r,
        sha: Sha256::new(),
        total: 0,
        seg: Vec::new(),
        header: None,
        crc: None,
        buf: Vec::new(),
    });
    let mut split = SplitWriter::new();
    let mut uids = BTreeSet::new();
    let mut gids = BTreeSet::new();
    let mut seen = HashSet::new();
    let mut list = Vec::new();
    while let Some(m) = members.next() {
        let m = m.with_context(|| blob.what.clone())?;
        let bad = |msg: &str| anyhow!("{}: {}: {msg}", blob.what, m.describe());
        if m.global_headers > 0 {
            return Err(bad(
                "a global PAX header precedes it; the store payload does not take such layers",
            ));
        }
        if m.kind != MemberKind::File && m.header_size != 0 {
            return Err(bad("a member of this type with a non-zero size field"));
        }
        if !seen.insert(m.path.clone()) {
            return Err(bad(
                "a second member with this path: containers/storage refuses such a layer",
            ));
        }
        let rec = members.reader_mut();
        let header = rec
            .header
            .take()
            .context("internal error: member data not read")?;
        let crc = rec.crc.take();
        split.segment(&header)?;
        split.line(
            FILE,
            Some(&m.raw_name),
            m.size,
            crc.as_ref().map(|c| &c[..]),
        )?;
        if !m
            .path
            .rsplit('/')
            .next()
            .unwrap_or("")
            .starts_with(WHITEOUT)
        {
            uids.insert(m.uid);
            gids.insert(m.gid);
        }
        list.push(m);
    }
    // The end of the archive: the first zero block was read; Go's reader reads a second one,
    // and these with the last padding are one segment; the rest follows in chunks.
    let rec = members.reader_mut();
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < 512 {
        let n = rec
            .read(&mut block[got..])
            .with_context(|| format!("reading {}", blob.what))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got != 0 && (got < 512 || block.iter().any(|&b| b != 0)) {
        bail!(
            "{}: the end-of-archive block is followed by data that is not a zero block",
            blob.what
        );
    }
    let end = std::mem::take(&mut rec.seg);
    if !end.is_empty() {
        split.segment(&end)?;
    }
    // What follows (record padding) in segments of PADDING_CHUNK bytes, the last one shorter.
    let mut buf = std::mem::take(&mut rec.buf);
    buf.resize(BUF, 0);
    let mut chunk = Vec::new();
    loop {
        let k = rec
            .inner
            .read(&mut buf)
            .with_context(|| format!("reading {}", blob.what))?;
        if k == 0 {
            break;
        }
        rec.sha.update(&buf[..k]);
        rec.total += k as u64;
        let mut rest = &buf[..k];
        while !rest.is_empty() {
            let take = rest.len().min(PADDING_CHUNK - chunk.len());
            chunk.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if chunk.len() == PADDING_CHUNK {
                split.segment(&chunk)?;
                chunk.clear();
            }
        }
    }
    if !chunk.is_empty() {
        split.segment(&chunk)?;
    }
    let diff_id = hex::encode(rec.sha.clone().finalize());
    let diff_size = rec.total;
    drop(members);
    blob.check(&csha)?;
    Ok(Analysis {
        compression,
        diff_id,
        diff_size,
        uids: uids.into_iter().collect(),
        gids: gids.into_iter().collect(),
        tar_split: split.finish()?,
        members: list,
    })
}

/// Analyses of layer blobs by digest: `plan` and `build` read each blob once per run.
fn analysis(blob: &Blob) -> Result<Arc<Analysis>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Analysis>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = blob.digest.to_string();
    if let Some(a) = cache
        .lock()
        .map_err(|_| anyhow!("cache poisoned"))?
        .get(&key)
    {
        return Ok(a.clone());
    }
    let a = Arc::new(analyze(blob)?);
    cache
        .lock()
        .map_err(|_| anyhow!("cache poisoned"))?
        .insert(key, a.clone());
    Ok(a)
}

/// A layer's decompressed tar, read front to back when the image is written.
struct LayerStream {
    blob: Blob,
    diff_id: String,
}

struct LayerReader {
    r: Box<dyn Read + Send>,
    sha: Sha256,
    what: String,
    diff_id: String,
}

impl Read for LayerReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

impl StreamReader for LayerReader {
    fn finish(mut self: Box<Self>) -> Result<()> {
        io::copy(&mut *self, &mut io::sink()).with_context(|| format!("reading {}", self.what))?;
        let got = hex::encode(self.sha.clone().finalize());
        if got != self.diff_id {
            bail!(
                "{}: decompressed, it hashes to sha256:{got}, not to its diffID sha256:{} (it \
                 changed since the plan)",
                self.what,
                self.diff_id
            );
        }
        Ok(())
    }
}

impl Streamed for LayerStream {
    fn open(&self) -> Result<Box<dyn StreamReader>> {
        let (r, _, _) = self.blob.open()?;
        Ok(Box::new(LayerReader {
            r,
            sha: Sha256::new(),
            what: self.blob.what.clone(),
            diff_id: self.diff_id.clone(),
        }))
    }

    fn describe(&self) -> String {
        self.blob.what.clone()
    }
}

/// The layer ID of `diff_id` over `parent` (containers/image `layerID`).
pub fn layer_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_string(),
        Some(p) => hex::encode(Sha256::digest(format!("{p}+{diff_id}").as_bytes())),
    }
}

/// The layer's short name in `overlay/l/`: 26 characters of `[A-Z2-7]`, derived from its ID.
pub fn link_name(id: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let h = Sha256::digest(format!("prestage-link:{id}").as_bytes());
    // base32 of the first 17 bytes (136 bits): 26 full characters and 6 bits more.
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in &h[..17] {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && out.len() < 26 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    out
}

/// The file name of a big-data item (containers/storage `makeBigDataBaseName`).
pub fn big_data_name(key: &str) -> String {
    if key
        .bytes()
        .all(|b| b == b'.' || b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        key.to_string()
    } else {
        format!(
            "={}",
            base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
        )
    }
}

/// A time as Go's `time.Time` marshals it in UTC (RFC 3339, fraction without trailing zeros).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A config's `created` as Go re-marshals it: the fraction's trailing zeros dropped.
fn go_time(s: &str) -> String {
    let Some(dot) = s.find('.') else {
        return s.to_string();
    };
    let digits = s[dot + 1..].bytes().take_while(u8::is_ascii_digit).count();
    let frac = s[dot + 1..dot + 1 + digits].trim_end_matches('0');
    let rest = &s[dot + 1 + digits..];
    if frac.is_empty() {
        format!("{}{rest}", &s[..dot])
    } else {
        format!("{}.{frac}{rest}", &s[..dot])
    }
}

/// A record of `layers.json` (containers/storage `Layer`, fields in its order).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    /// Layer ID.
    pub id: String,
    /// Parent layer ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// When it was written.
    pub created: String,
    /// The blob's digest.
    #[serde(rename = "compressed-diff-digest")]
    pub compressed_diff_digest: String,
    /// The blob's size.
    #[serde(rename = "compressed-size")]
    pub compressed_size: u64,
    /// The diffID.
    #[serde(rename = "diff-digest")]
    pub diff_digest: String,
    /// Bytes of the uncompressed tar.
    #[serde(rename = "diff-size")]
    pub diff_size: u64,
    /// 2 for gzip; absent for an uncompressed blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<u8>,
    /// Owners of its members (whiteouts left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uidset: Vec<u32>,
    /// Groups of its members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gidset: Vec<u32>,
}

/// A record of `images.json` (containers/storage `Image`, fields in its order).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// Image ID (the config digest's hex).
    pub id: String,
    /// The first manifest digest stored for it.
    pub digest: String,
    /// Its names, newest first.
    pub names: Vec<String>,
    /// Every name it had.
    #[serde(rename = "names-history")]
    pub names_history: Vec<String>,
    /// Top layer ID.
    pub layer: String,
    /// containers/image's metadata: `{}`.
    pub metadata: String,
    /// Big-data keys in the order they were stored.
    #[serde(rename = "big-data-names")]
    pub big_data_names: Vec<String>,
    /// Their sizes.
    #[serde(rename = "big-data-sizes")]
    pub big_data_sizes: BTreeMap<String, u64>,
    /// Their digests.
    #[serde(rename = "big-data-digests")]
    pub big_data_digests: BTreeMap<String, String>,
    /// The config's creation time.
    pub created: String,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigDoc {
    created: Option<String>,
    rootfs: Option<RootFs>,
}

const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Reads `f`'s bytes whole (manifests and configs), checked against its digest.
fn read_file(blobs: &Blobs, f: &ImageFile, what: &str) -> Result<Vec<u8>> {
    let at = blobs.at(f);
    let mut file = File::open(&at.path).with_context(|| format!("opening {}", at.from))?;
    file.seek(SeekFrom::Start(at.offset))
        .with_context(|| format!("reading {}", at.from))?;
    let mut v = Vec::new();
    file.take(f.size)
        .read_to_end(&mut v)
        .with_context(|| format!("reading {}", at.from))?;
    if v.len() as u64 != f.size || hex::encode(Sha256::digest(&v)) != f.digest.hex() {
        bail!(
            "{what} {}: {} does not hold its bytes: {}",
            f.digest,
            at.from,
            at.hint
        );
    }
    Ok(v)
}

/// An image's big-data items: key and bytes, in the order they are stored.
type BigData = Vec<(String, Arc<Vec<u8>>)>;

/// A layer written into the store.
struct Written {
    link: String,
    lower: Option<String>,
}

/// Builds the store.
struct Builder<'a> {
    content: &'a mut Content,
    blobs: Blobs<'a>,
    created: String,
    layers: Vec<LayerRecord>,
    written: HashMap<String, Written>,
    images: Vec<ImageRecord>,
    /// Big data per image ID: key -> bytes.
    big: HashMap<String, BigData>,
    /// Name -> image ID.
    names: BTreeMap<String, String>,
}

impl Builder<'_> {
    fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.content.add(Entry::dir(path, mode))
    }

    fn bytes(&mut self, path: &str, mode: u32, bytes: Vec<u8>) -> Result<()> {
        add_bytes(self.content, path, mode, bytes)
    }

    /// Adds the layer `diff_id` over `parent` unless it is there; returns its ID.
    fn layer(
        &mut self,
        parent: Option<&str>,
        blob: &Blob,
        a: &Arc<Analysis>,
        stream: &Arc<LayerStream>,
    ) -> Result<String> {
        let id = layer_id(parent, &a.diff_id);
        if self.written.contains_key(&id) {
            return Ok(id);
        }
        let dir = format!("{ROOT}/overlay/{id}");
        let link = link_name(&id);
        let lower = match parent {
            None => None,
            Some(p) => {
                let w = self
                    .written
                    .get(p)
                    .with_context(|| format!("internal error: parent layer {p} not written"))?;
                Some(match &w.lower {
                    None => format!("l/{}", w.link),
                    Some(l) => format!("l/{}:{l}", w.link),
                })
            }
        };
        self.dir(&dir, 0o700)?;
        self.dir(&format!("{dir}/diff"), 0o555)?;
        self.bytes(&format!("{dir}/link"), 0o644, link.clone().into_bytes())?;
        if let Some(l) = &lower {
            self.bytes(&format!("{dir}/lower"), 0o644, l.clone().into_bytes())?;
        }
        self.dir(&format!("{dir}/work"), 0o700)?;
        self.dir(&format!("{dir}/merged"), 0o700)?;
        if parent.is_none() {
            self.dir(&format!("{dir}/empty"), 0o700)?;
        }
        let target = format!("../{id}/diff").into_bytes();
        let l = format!("{ROOT}/overlay/l/{link}");
        if self.content.get(&l).is_some() {
            bail!("internal error: two layers with the link name {link}");
        }
        self.content.add(Entry::symlink(l, target))?;
        let streamed: Arc<dyn Streamed> = stream.clone();
        unpack(self.content, &format!("{dir}/diff"), &a.members, &streamed)
            .with_context(|| blob.what.clone())?;
        self.bytes(
            &format!("{ROOT}/overlay-layers/{id}.tar-split.gz"),
            0o600,
            a.tar_split.clone(),
        )?;
        self.layers.push(LayerRecord {
            id: id.clone(),
            parent: parent.map(str::to_string),
            created: self.created.clone(),
            compressed_diff_digest: blob.digest.to_string(),
            compressed_size: blob.size,
            diff_digest: format!("sha256:{}", a.diff_id),
            diff_size: a.diff_size,
            compression: a.compression.code(),
            uidset: a.uids.clone(),
            gidset: a.gids.clone(),
        });
        self.written.insert(id.clone(), Written { link, lower });
        Ok(id)
    }

    /// Layer `i` of an image, described by `l`, where its blob lies.
    fn layer_blob(&self, img: &Image, i: usize, l: &Descriptor) -> Result<Blob> {
        let digest = Digest::parse(&l.digest)?;
        let at = self.blobs.at(&ImageFile {
            digest: digest.clone(),
            size: l.size,
            manifest: false,
        });
        Ok(Blob {
            path: at.path,
            offset: at.offset,
            size: l.size,
            what: format!("layer {i} {digest} of {} ({})", img.source, at.from),
            digest,
            hint: at.hint,
        })
    }

    /// Analyses every distinct layer of `images` ahead of the ordered pass that lays them out,
    /// on as many threads as there are cores (at most four): each layer is decompressed and
    /// hashed once either way, and the analyses are independent of each other. Nothing fails
    /// here: what cannot be read is left for the ordered pass to report, in the images' order.
    fn analyze_ahead(&self, images: &[Image]) {
        let mut blobs = Vec::new();
        let mut seen = HashSet::new();
        for img in images {
            for inst in &img.record.instances {
                let Ok(bytes) = std::fs::read(self.blobs.store.manifest_path(&inst.digest)) else {
                    continue;
                };
                let Ok(doc) = serde_json::from_slice::<ManifestDoc>(&bytes) else {
                    continue;
                };
                for (i, l) in doc.layers.iter().enumerate() {
                    if let Ok(blob) = self.layer_blob(img, i, l) {
                        if seen.insert(blob.digest.to_string()) {
                            blobs.push(blob);
                        }
                    }
                }
            }
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4);
        if threads < 2 || blobs.len() < 2 {
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    while let Some(blob) =
                        blobs.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        let _ = analysis(blob);
                    }
                });
            }
        });
    }

    /// Adds one image manifest (`instance`) of `img`, named `names`, reachable through the list
    /// `top` when it is one; returns the image ID.
    fn image(
        &mut self,
        img: &Image,
        instance: &Digest,
        top: Option<&Digest>,
        names: &[String],
    ) -> Result<String> {
        let what = format!("{} (manifest {instance})", img.source);
        let store = self.blobs.store;
        let manifest = std::fs::read(store.manifest_path(instance))
            .with_context(|| format!("{what}: reading the manifest from the store"))?;
        let doc: ManifestDoc = serde_json::from_slice(&manifest)
            .with_context(|| format!("{what}: parsing the manifest"))?;
        if doc.schema_version == 1 {
            bail!(
                "{what}: a Docker schema 1 image; the store payload takes schema 2 and OCI images \
                 only (containers/storage computes schema 1 image IDs from a synthesized config)"
            );
        }
        let config = doc
            .config
            .with_context(|| format!("{what}: the manifest has no config"))?;
        if !IMAGE_CONFIGS.contains(&config.media_type.as_str()) {
            bail!(
                "{what}: not a container image (config media type `{}`, manifest media type \
                 `{}`); the store payload holds container images only",
                config.media_type,
                doc.media_type.unwrap_or_default()
            );
        }
        let config_digest =
            Digest::parse(&config.digest).with_context(|| format!("{what}: the config digest"))?;
        let config_bytes = read_file(
            &self.blobs,
            &ImageFile {
                digest: config_digest.clone(),
                size: config.size,
                manifest: false,
            },
            &format!("{what}: config"),
        )?;
        let cfg: ConfigDoc = serde_json::from_slice(&config_bytes)
            .with_context(|| format!("{what}: parsing the config {config_digest}"))?;
        let diff_ids = cfg.rootfs.map(|r| r.diff_ids).unwrap_or_default();
        if diff_ids.len() != doc.layers.len() {
            bail!(
                "{what}: the manifest has {} layers, its config {} diff_ids",
                doc.layers.len(),
                diff_ids.len()
            );
        }
        let mut parent: Option<String> = None;
        for (i, (l, want)) in doc.layers.iter().zip(&diff_ids).enumerate() {
            let blob = self
                .layer_blob(img, i, l)
                .with_context(|| format!("{what}: layer {i} digest"))?;
            let a = analysis(&blob)?;
            if want != &format!("sha256:{}", a.diff_id) {
                bail!(
                    "{}: uncompressed it is sha256:{}, but the config's rootfs.diff_ids[{i}] is \
                     {want} (containers/image refuses such an image)",
                    blob.what,
                    a.diff_id
                );
            }
            let stream = Arc::new(LayerStream {
                blob: blob.clone(),
                diff_id: a.diff_id.clone(),
            });
            parent = Some(self.layer(parent.as_deref(), &blob, &a, &stream)?);
        }
        let top_layer = parent.with_context(|| format!("{what}: an image without layers"))?;
        let id = config_digest.hex().to_string();
        let mut items: BigData = vec![(config_digest.to_string(), Arc::new(config_bytes))];
        if let Some(t) = top {
            let list = std::fs::read(store.manifest_path(t))
                .with_context(|| format!("{what}: reading the list {t} from the store"))?;
            items.push((format!("manifest-{t}"), Arc::new(list)));
        }
        let manifest = Arc::new(manifest);
        items.push((format!("manifest-{instance}"), manifest.clone()));
        items.push(("manifest".to_string(), manifest));
        let pos = match self.images.iter().position(|r| r.id == id) {
            Some(p) => p,
            None => {
                self.images.push(ImageRecord {
                    id: id.clone(),
                    digest: String::new(),
                    names: Vec::new(),
                    names_history: Vec::new(),
                    layer: top_layer.clone(),
                    metadata: "{}".to_string(),
                    big_data_names: Vec::new(),
                    big_data_sizes: BTreeMap::new(),
                    big_data_digests: BTreeMap::new(),
                    created: cfg
                        .created
                        .as_deref()
                        .map_or_else(|| self.created.clone(), go_time),
                });
                self.images.len() - 1
            }
        };
        let rec = &mut self.images[pos];
        let big = self.big.entry(id.clone()).or_default();
        for (k, v) in items {
            if rec.big_data_names.contains(&k) {
                continue;
            }
            let d = format!("sha256:{}", hex::encode(Sha256::digest(v.as_slice())));
            if k.starts_with("manifest") && rec.digest.is_empty() {
                rec.digest = d.clone();
            }
            rec.big_data_names.push(k.clone());
            rec.big_data_sizes.insert(k.clone(), v.len() as u64);
            rec.big_data_digests.insert(k.clone(), d);
            big.push((k, v));
        }
        // A pull prepends the names it sets, newest first.
        let mut all: Vec<String> = names.to_vec();
        all.extend(rec.names.iter().filter(|n| !names.contains(n)).cloned());
        rec.names = all;
        for n in names.iter().rev() {
            rec.names_history.retain(|h| h != n);
            rec.names_history.insert(0, n.clone());
        }
        for n in names {
            if let Some(other) = self.names.insert(n.clone(), id.clone()) {
                if other != id {
                    bail!(
                        "the name `{n}` would belong to two images of the store ({other} and \
                         {id}); an engine refuses such a store: stage one of them under another \
                         name"
                    );
                }
            }
        }
        Ok(id)
    }
}

/// Applies a layer's members below `prefix` (its `diff/`) as the overlay driver unpacks them.
fn unpack(
    content: &mut Content,
    prefix: &str,
    members: &[Member],
    stream: &Arc<dyn Streamed>,
) -> Result<()> {
    for m in members {
        if m.path.is_empty() {
            continue;
        }
        let what = || m.describe();
        let path = format!("{prefix}/{}", m.path);
        let (parent, base) = path.rsplit_once('/').unwrap_or(("", &path));
        let mtime = if m.mtime.secs < 0 {
            Time::default()
        } else {
            m.mtime
        };
        let mut xattrs = m.xattrs.clone();
        xattrs.remove("security.selinux");
        if base == OPAQUE {
            if content.get(parent).is_none() {
                content.add(Entry::dir(parent, 0o755)).with_context(what)?;
            }
            let meta = content
                .meta_mut(parent)
                .with_context(|| format!("{}: no directory to make opaque", what()))?;
            if *meta.kind != Kind::Dir {
                bail!("{}: the opaque marker's parent is not a directory", what());
            }
            meta.xattrs
                .insert("trusted.overlay.opaque".to_string(), b"y".to_vec());
            continue;
        }
        if let Some(name) = base.strip_prefix(WHITEOUT) {
            let target = format!("{parent}/{name}");
            // mknod fails with ENOTDIR below an earlier whiteout, which the driver ignores.
            let mut blocked = false;
            let mut p = parent;
            while p.len() > prefix.len() {
                if content.get(p).is_some_and(|e| e.kind != Kind::Dir) {
                    blocked = true;
                    break;
                }
                p = p.rsplit_once('/').map_or("", |(a, _)| a);
            }
            if blocked {
                continue;
            }
            let mut e = Entry::special(target, Kind::CharDevice { major: 0, minor: 0 }, 0);
            e.uid = m.uid;
            e.gid = m.gid;
            content.add_replacing(e).with_context(what)?;
            continue;
        }
        let mut e = tarfile::entry(m, prefix, |offset, _| Source::Stream {
            stream: stream.clone(),
            offset,
        })
        .with_context(what)?;
        if let MemberKind::Hardlink(_) = m.kind {
            content.add_replacing(e).with_context(what)?;
            let primary = match content.get(&path).map(|e| &e.kind) {
                Some(Kind::Hardlink(p)) => p.clone(),
                _ => continue,
            };
            let meta = content
                .meta_mut(&primary)
                .with_context(|| format!("{}: internal error: no link target", what()))?;
            if (*meta.uid, *meta.gid) != (m.uid, m.gid) {
                // chown drops file capabilities (and set-ID bits, which chmod sets again).
                meta.xattrs.remove("security.capability");
            }
            if !matches!(meta.kind, Kind::Symlink(_)) {
                *meta.mode = m.mode & 0o7777;
            }
            *meta.uid = m.uid;
            *meta.gid = m.gid;
            *meta.mtime = Some(mtime);
            meta.xattrs.extend(xattrs);
            continue;
        }
        e.mtime = Some(mtime);
        e.xattrs = xattrs;
        content.add_replacing(e).with_context(what)?;
    }
    Ok(())
}

/// Adds the store of `images` to `content`; `lists` gives the discovery images' tags, `mtime`
/// the layers' creation time. Returns one report per image.
pub fn add(
    content: &mut Content,
    lists: &ImageLists,
    images: &[Image],
    blobs: Blobs,
    mtime: u64,
) -> Result<Vec<ImageReport>> {
    let mut b = Builder {
        content,
        blobs,
        created: rfc3339(i64::try_from(mtime).unwrap_or(i64::MAX / 2)),
        layers: Vec::new(),
        written: HashMap::new(),
        images: Vec::new(),
        big: HashMap::new(),
        names: BTreeMap::new(),
    };
    for (d, mode) in [
        (ROOT.to_string(), 0o700),
        (format!("{ROOT}/overlay"), 0o700),
        (format!("{ROOT}/overlay/l"), 0o755),
        (format!("{ROOT}/overlay-layers"), 0o700),
        (format!("{ROOT}/overlay-images"), 0o700),
    ] {
        b.dir(&d, mode)?;
    }
    b.analyze_ahead(images);
    let mut reports = Vec::new();
    for img in images {
        let mut names = vec![img.source.clone()];
        if img.discovery {
            for s in lists.images.iter().filter(|s| s.source == img.source) {
                let tag = format!("{}:{}", s.dest, s.tag);
                if !names.contains(&tag) {
                    names.push(tag);
                }
            }
        }
        let top = img.is_list().then(|| img.digest().clone());
        let repo = img
            .source
            .split_once('@')
            .map_or(img.source.as_str(), |(r, _)| r)
            .to_string();
        let mut paths = Vec::new();
        for (i, inst) in img.record.instances.iter().enumerate() {
            // The first instance carries the source's names; further ones (other
            // architectures of a list) are named by their own digest.
            let n = if i == 0 {
                names.clone()
            } else {
                vec![format!("{repo}@{}", inst.digest)]
            };
            let id = b.image(img, &inst.digest, top.as_ref(), &n)?;
            paths.push(format!("{ROOT}/overlay-images/{id}"));
        }
        let bytes = img.files(blobs.store)?.iter().map(|f| f.size).sum();
        reports.push(ImageReport::new(img, bytes, paths));
    }
    let layers = go_json(&b.layers)?;
    b.bytes(&format!("{ROOT}/overlay-layers/layers.json"), 0o600, layers)?;
    b.bytes(
        &format!("{ROOT}/overlay-layers/layers.lock"),
        0o644,
        Vec::new(),
    )?;
    let images_json = go_json(&b.images)?;
    b.bytes(
        &format!("{ROOT}/overlay-images/images.json"),
        0o600,
        images_json,
    )?;
    b.bytes(
        &format!("{ROOT}/overlay-images/images.lock"),
        0o644,
        Vec::new(),
    )?;
    let ids: Vec<String> = b.images.iter().map(|r| r.id.clone()).collect();
    for id in ids {
        let dir = format!("{ROOT}/overlay-images/{id}");
        b.dir(&dir, 0o700)?;
        for (k, v) in b.big.remove(&id).unwrap_or_default() {
            let len = v.len() as u64;
            b.content.add(Entry::file(
                format!("{dir}/{}", big_data_name(&k)),
                0o600,
                len,
                Source::Bytes(v),
            ))?;
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn layer_ids_chain_as_containers_image_computes_them() {
        // Observed with skopeo 1.9 and 1.18: a base layer is its diffID, a child hashes
        // "parent+diffID".
        let base = "4980f9cf1aa660df27622b27ec82e8244cd8fd84b92c3312a03fdc9c62705a61";
        assert_eq!(layer_id(None, base), base);
        assert_eq!(
            layer_id(
                Some(base),
                "91cf4fe55f04b3511d3559df84c8e45f901fa0dd35e103d8819e0bab8b524968"
            ),
            "5215a0b88e6e83e43be750b37a73271d89f68df404d5f1b50c6c0585a0d18ce1"
        );
    }

    #[test]
    fn big_data_names_as_containers_storage_makes_them() {
        assert_eq!(big_data_name("manifest"), "manifest");
        let k = "manifest-sha256:387f680f252d79b96c30b7fa3a54a39c266c6ffec4449a921ce12f99218d5990";
        assert_eq!(
            big_data_name(k),
            "=bWFuaWZlc3Qtc2hhMjU2OjM4N2Y2ODBmMjUyZDc5Yjk2YzMwYjdmYTNhNTRhMzljMjY2YzZmZmVjNDQ0OWE5MjFjZTEyZjk5MjE4ZDU5OTA="
        );
        assert_eq!(
            big_data_name(
                "sha256:156315e10ae02189336299985655534b3e82c0555b5a7795577f67be26f9396b"
            ),
            "=c2hhMjU2OjE1NjMxNWUxMGFlMDIxODkzMzYyOTk5ODU2NTU1MzRiM2U4MmMwNTU1YjVhNzc5NTU3N2Y2N2JlMjZmOTM5NmI="
        );
    }

    #[test]
    fn links_are_26_base32_characters() {
        let a = link_name("a");
        assert_eq!(a.len(), 26);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(a, link_name("b"));
        assert_eq!(a, link_name("a"));
    }

    #[test]
    fn times_as_go_marshals_them() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            go_time("2024-01-02T03:04:05.123456789Z"),
            "2024-01-02T03:04:05.123456789Z"
        );
        assert_eq!(
            go_time("2024-01-02T03:04:05.100Z"),
            "2024-01-02T03:04:05.1Z"
        );
        assert_eq!(
            go_time("2024-01-02T03:04:05.000+02:00"),
            "2024-01-02T03:04:05+02:00"
        );
        assert_eq!(go_time("2023-05-06T07:08:09Z"), "2023-05-06T07:08:09Z");
        assert_eq!(
            String::from_utf8(go_json(&vec!["a<b>&c"]).unwrap()).unwrap(),
            r#"["a\u003cb\u003e\u0026c"]"#
        );
    }

    /// Rebuilds a tar from a tar-split and the file contents by name, as
    /// `asm.NewOutputTarStream` does, checking each file's CRC-64.
    fn rebuild(split_gz: &[u8], files: &HashMap<String, Vec<u8>>) -> Vec<u8> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(split_gz)
            .read_to_string(&mut text)
            .unwrap();
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let e: SplitEntry = serde_json::from_str(line).unwrap();
            assert_eq!(e.position, i as u64);
            let payload = e
                .payload
                .map(|p| base64::engine::general_purpose::STANDARD.decode(p).unwrap());
            match e.kind {
                SEGMENT => out.extend_from_slice(&payload.unwrap()),
                FILE => {
                    let name = e.name.unwrap();
                    if e.size == 0 {
                        assert!(payload.is_none(), "{name}");
                        continue;
                    }
                    let data = &files[&name];
                    assert_eq!(data.len() as u64, e.size);
                    assert_eq!(
                        payload.unwrap(),
                        CRC64.checksum(data).to_be_bytes().to_vec(),
                        "{name}"
                    );
                    out.extend_from_slice(data);
                }
                k => panic!("entry type {k}"),
            }
        }
        out
    }

    fn tar_with_everything() -> (Vec<u8>, HashMap<String, Vec<u8>>) {
        let mut b = tar::Builder::new(Vec::new());
        let mut files = HashMap::new();
        let add = |b: &mut tar::Builder<Vec<u8>>,
                   name: &str,
                   kind: tar::EntryType,
                   data: &[u8],
                   link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            b.append_data(&mut h, name, data).unwrap();
        };
        add(&mut b, "./", tar::EntryType::Directory, b"", None);
        add(&mut b, "etc/", tar::EntryType::Directory, b"", None);
        add(&mut b, "etc/a", tar::EntryType::Regular, b"hello\n", None);
        files.insert("etc/a".to_string(), b"hello\n".to_vec());
        let big = vec![7u8; 70_000];
        add(&mut b, "etc/big", tar::EntryType::Regular, &big, None);
        files.insert("etc/big".to_string(), big);
        let long = format!("d/{}", "n".repeat(150));
        add(&mut b, &long, tar::EntryType::Regular, b"long", None);
        files.insert(long.clone(), b"long".to_vec());
        add(&mut b, "etc/hl", tar::EntryType::Link, b"", Some("etc/a"));
        add(&mut b, "etc/sl", tar::EntryType::Symlink, b"", Some("a"));
        add(&mut b, "etc/.wh.gone", tar::EntryType::Regular, b"", None);
        add(&mut b, "etc/empty", tar::EntryType::Regular, b"", None);
        let mut v = b.into_inner().unwrap();
        // Record padding past the end blocks, as tar(1) writes it.
        v.resize(v.len() + 3 * 512, 0);
        (v, files)
    }

    fn analyze_bytes(bytes: &[u8], gzip: bool) -> (Analysis, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        let blob_bytes = if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        } else {
            bytes.to_vec()
        };
        std::fs::write(&p, &blob_bytes).unwrap();
        let blob = Blob {
            path: p,
            offset: 0,
            size: blob_bytes.len() as u64,
            digest: Digest::parse(&format!(
                "sha256:{}",
                hex::encode(Sha256::digest(&blob_bytes))
            ))
            .unwrap(),
            what: "test layer".to_string(),
            hint: "",
        };
        (analyze(&blob).unwrap(), dir)
    }

    #[test]
    fn tar_split_rebuilds_the_layer_byte_for_byte() {
        let (tar, files) = tar_with_everything();
        for gzip in [false, true] {
            let (a, _dir) = analyze_bytes(&tar, gzip);
            assert_eq!(a.diff_id, hex::encode(Sha256::digest(&tar)));
            assert_eq!(a.diff_size, tar.len() as u64);
            assert_eq!(
                a.compression,
                if gzip {
                    Compression::Gzip
                } else {
                    Compression::None
                }
            );
            let back = rebuild(&a.tar_split, &files);
            assert_eq!(hex::encode(Sha256::digest(&back)), a.diff_id);
            assert_eq!(back, tar);
            assert_eq!(a.uids, [0]);
            // Every header is an entry (the root, directories, links, the whiteout).
            assert_eq!(a.members.len(), 9);
        }
        // Padding after the end blocks goes in segments of 1 MiB, as tar-split reads it.
        let mut padded = tar.clone();
        padded.resize(tar.len() + (5 << 19) + 512, 0);
        let (a, _dir) = analyze_bytes(&padded, true);
        assert_eq!(rebuild(&a.tar_split, &files), padded);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&a.tar_split[..])
            .read_to_string(&mut text)
            .unwrap();
        let tail: Vec<usize> = text
            .lines()
            .rev()
            .take(3)
            .map(|l| {
                let e: SplitEntry = serde_json::from_str(l).unwrap();
                base64::engine::general_purpose::STANDARD
                    .decode(e.payload.unwrap())
                    .unwrap()
                    .len()
            })
            .collect();
        // 3 blocks of padding in `tar`, 2.5 MiB + 1 block more.
        assert_eq!(tail, [(1 << 19) + 4 * 512, 1 << 20, 1 << 20]);
    }

    #[test]
    fn members_are_applied_as_the_overlay_driver_applies_them() {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |name: &str,
                       kind: tar::EntryType,
                       mode: u32,
                       uid: u64,
                       mtime: u64,
                       link: Option<&str>,
                       pax: &[(&str, &[u8])],
                       data: &[u8]| {
            if !pax.is_empty() {
                b.append_pax_extensions(pax.iter().copied()).unwrap();
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(mtime);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            b.append_data(&mut h, name, data).unwrap();
        };
        use tar::EntryType as T;
        let cap: &[u8] = b"\x01\x00\x00\x02";
        add("./", T::Directory, 0o700, 0, 5, None, &[], b"");
        add(
            "bin/tool",
            T::Regular,
            0o755,
            0,
            10,
            None,
            &[
                ("SCHILY.xattr.security.capability", cap),
                ("SCHILY.xattr.security.selinux", b"x"),
            ],
            b"tool",
        );
        add(
            "bin/tool-hl",
            T::Link,
            0o750,
            0,
            20,
            Some("bin/tool"),
            &[],
            b"",
        );
        add(
            "bin/owned",
            T::Regular,
            0o4755,
            0,
            10,
            None,
            &[("SCHILY.xattr.security.capability", cap)],
            b"o",
        );
        add(
            "bin/owned-hl",
            T::Link,
            0o4755,
            7,
            30,
            Some("bin/owned"),
            &[],
            b"",
        );
        add("etc/.wh.gone", T::Regular, 0o644, 5, 40, None, &[], b"");
        add("opt/.wh..wh..opq", T::Regular, 0o644, 0, 40, None, &[], b"");
        add(
            "old",
            T::Regular,
            0o644,
            0,
            0,
            None,
            &[("mtime", b"-5")],
            b"",
        );
        let tar = b.into_inner().unwrap();
        let (a, _dir) = analyze_bytes(&tar, true);
        let stream: Arc<dyn Streamed> = Arc::new(LayerStream {
            blob: Blob {
                path: "unused".into(),
                offset: 0,
                size: 0,
                digest: Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap(),
                what: "test".into(),
                hint: "",
            },
            diff_id: a.diff_id.clone(),
        });
        let mut c = Content::new();
        c.add(Entry::dir("diff", 0o555)).unwrap();
        unpack(&mut c, "diff", &a.members, &stream).unwrap();
        let e = |p: &str| c.get(p).unwrap_or_else(|| panic!("{p} missing"));
        // The root member is skipped; parents without members are 0755 root-owned.
        assert_eq!(e("diff").mode, 0o555);
        assert_eq!(
            (e("diff/bin").mode, e("diff/bin").uid, e("diff/bin").mtime),
            (0o755, 0, None)
        );
        // A hard link's header re-applies mode and time to the inode; selinux labels are dropped.
        let tool = e("diff/bin/tool");
        assert_eq!((tool.mode, tool.mtime), (0o750, Some(Time::secs(20))));
        assert_eq!(
            tool.xattrs.keys().collect::<Vec<_>>(),
            ["security.capability"]
        );
        assert_eq!(
            e("diff/bin/tool-hl").kind,
            Kind::Hardlink("diff/bin/tool".into())
        );
        // ... and a different owner drops the file capability, as chown does.
        let owned = e("diff/bin/owned");
        assert_eq!((owned.uid, owned.mode), (7, 0o4755));
        assert!(owned.xattrs.is_empty());
        // Whiteouts: 0/0 character devices of mode 0 with the member's owner.
        let w = e("diff/etc/gone");
        assert_eq!(
            (&w.kind, w.mode, w.uid),
            (&Kind::CharDevice { major: 0, minor: 0 }, 0, 5)
        );
        assert!(c.get("diff/etc/.wh.gone").is_none());
        // The opaque marker is an attribute of its directory, not a file.
        assert_eq!(e("diff/opt").xattrs["trusted.overlay.opaque"], b"y");
        assert!(c.get("diff/opt/.wh..wh..opq").is_none());
        // Times before the epoch are the epoch.
        assert_eq!(e("diff/old").mtime, Some(Time::secs(0)));
        // File bytes are offsets of the decompressed layer.
        match &tool.source {
            Some(Source::Stream { offset, .. }) => {
                assert_eq!(&tar[*offset as usize..*offset as usize + 4], b"tool")
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn damaged_and_zstd_blobs_are_refused() {
        let (tar, _) = tar_with_everything();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        std::fs::write(&p, &tar).unwrap();
        let mut blob = Blob {
            path: p.clone(),
            offset: 0,
            size: tar.len() as u64,
            digest: Digest::parse(&format!("sha256:{}", "1".repeat(64))).unwrap(),
            what: "layer 0 of x".to_string(),
            hint: "run `prestage store verify`",
        };
        let e = format!("{:#}", analyze(&blob).err().unwrap());
        assert!(
            e.starts_with("layer 0 of x: ")
                && e.contains("the manifest says")
                && e.ends_with("verify`"),
            "{e}"
        );
        std::fs::write(&p, [0x28, 0xb5, 0x2f, 0xfd, 0, 0]).unwrap();
        blob.size = 6;
        let e = format!("{:#}", analyze(&blob).err().unwrap());
        assert!(e.contains("a zstd layer"), "{e}");
    }

    #[test]
    fn duplicate_paths_are_refused() {
        let mut b = tar::Builder::new(Vec::new());
        for _ in 0..2 {
            let mut h = tar::Header::new_ustar();
            h.set_size(1);
            h.set_mode(0o644);
            b.append_data(&mut h, "x", &b"a"[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        std::fs::write(&p, &tar).unwrap();
        let blob = Blob {
            path: p,
            offset: 0,
            size: tar.len() as u64,
            digest: Digest::parse(&format!("sha256:{}", hex::encode(Sha256::digest(&tar))))
                .unwrap(),
            what: "test layer".to_string(),
            hint: "",
        };
        let e = analyze(&blob).err().unwrap().to_string();
        assert!(e.contains("a second member with this path"), "{e}");
    }
}
