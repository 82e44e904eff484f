//! Writing the image in one pass: every byte of the image is read once from where it lies (a
//! partition's work file for filesystem metadata, each file's [`Source`] for its data), written
//! once, and hashed on the way for everything the proof and the block map need.
//!
//! The pieces of the image (the partition table, each partition's metadata ranges, the XFS log's
//! zeros, every file's runs, the manifests) are planned before the first byte is written and
//! checked not to overlap. They are emitted in disk order (a file's runs in file order, from
//! where its first run lies), so a raw image is written front to back. One reader thread
//! produces chunks; three consumers take them:
//! - the writer (the calling thread) writes each chunk at its offset;
//! - the file hasher computes every regular file's sha256, in file order, for the manifest, and
//!   checks it against the digest a content-addressed file is named by (a store blob, an OCI
//!   layout's blob, an archive member): a damaged source fails there, before anything is renamed,
//!   naming what it is and where it was read;
//! - for a raw image, the range hasher computes the block map's range checksums over the image
//!   in disk order, with zeros where a touched block is not written.
//!
//! The block map's ranges are chosen so that most bytes are hashed once: a large file whose first
//! run starts on a block boundary of the image and shares no block with anything else gets a
//! range of its own, whose checksum is the file's running sha256 cloned at the run's end plus the
//! zeros padding its last block. The range hasher takes everything else (metadata, small files,
//! later runs of a file). Pieces emitted out of disk order and the manifests (written last, once
//! every hash is known) are hashed by reading their blocks back after the pass.
//!
//! What this proves is completed by [`super::verify::verify_written`]: each file's inode, read
//! through the image's own XFS metadata, must map exactly the runs whose bytes were hashed here.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::compose::bmap::{self, Bmap};
use crate::compose::content::{Content, Entry, Source, StreamReader, CHUNK};
use crate::compose::emit::{ImageWriter, DIRECT_ALIGN};
use crate::compose::manifest::{self, Manifest};
use crate::compose::xfs::{self, Fill};

/// A partition's filesystem, as the pass writes it.
pub(crate) enum PartWrite<'a> {
    /// An XFS filesystem: metadata from its work file, file data from the content's sources.
    Xfs {
        /// Byte offset of the partition in the image.
        offset: u64,
        /// The finished metadata and every file's runs.
        built: &'a xfs::Built,
        /// Where the files' bytes come from.
        content: &'a Content,
    },
    /// A filesystem whose work file is copied whole (its data ranges).
    Copy {
        /// Byte offset of the partition in the image.
        offset: u64,
        /// The work file.
        file: &'a Path,
        /// Its data ranges.
        ranges: Vec<(u64, u64)>,
    },
}

/// What the pass wrote.
pub(crate) struct Written {
    /// Per partition, the manifest's bytes as written (XFS partitions).
    pub manifests: Vec<Option<Vec<u8>>>,
    /// Bytes of file data written, manifests included.
    pub data_bytes: u64,
    /// The block map (raw images).
    pub bmap: Option<Bmap>,
}

/// Files at least this large get a block-map range of their own (hashed once); smaller ones are
/// hashed again with their neighbours, which keeps the map short.
const OWN_RANGE_MIN: u64 = 1 << 20;
/// Chunks in flight per consumer.
const DEPTH: usize = 4;
/// Threads reading ahead, each a chunk at a time: the disk sees this many reads at once.
const FETCHERS: usize = 2;

/// What a piece of the image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    /// Bytes of the partition table (index into it).
    Table(usize),
    /// A range of a partition's work file, from this offset of it.
    Copy { part: usize, from: u64 },
    /// Zeros that must be written (the XFS log).
    Zeros,
    /// Run `run` of file `file`.
    Run { file: usize, run: usize },
    /// Run `run` of the manifest of partition `part`, written after the pass.
    Manifest { part: usize, run: usize },
}

/// How the block map hashes a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapped {
    /// By the range hasher, in disk order.
    Stream,
    /// By the file hasher: the file's first run, its own range.
    Own,
    /// By reading its blocks back after the pass.
    Late,
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    at: u64,
    len: u64,
    what: What,
    mapped: Mapped,
}

/// A file of an XFS partition to stream.
struct FileJob<'a> {
    part: usize,
    base: u64,
    fill: &'a Fill,
    entry: &'a Entry,
    /// Index of the block-map range its first run forms alone.
    own_range: Option<usize>,
}

/// A block-map range: blocks `first..=last`, hashed as `how`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Stream,
    Own,
    Late,
}

#[derive(Debug, Clone, Copy)]
struct MapRange {
    first: u64,
    last: u64,
    how: How,
}

/// A chunk's bytes. A buffer read from a file goes back to the reader's pool once the last
/// consumer is done with it, so the pass reuses a few buffers instead of allocating (and
/// zeroing) one per chunk.
struct Buf {
    v: Vec<u8>,
    back: Option<SyncSender<Vec<u8>>>,
}

impl Buf {
    fn fixed(v: Vec<u8>) -> Arc<Buf> {
        Arc::new(Buf { v, back: None })
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(b) = &self.back {
            let _ = b.try_send(std::mem::take(&mut self.v));
        }
    }
}

/// Buffers for reading files into, aligned for writes around the page cache. One pool per
/// fetcher thread, holding at most [`POOL_BUFFERS`]: a fetcher that is that far ahead of the
/// writes waits for one to come back, which bounds the pass's memory whatever the sizes.
struct Pool {
    back: SyncSender<Vec<u8>>,
    free: Receiver<Vec<u8>>,
    made: std::cell::Cell<usize>,
}

/// Buffers per fetcher: the two chunks queued for the consumer, the one being filled, and one
/// with the writers and hashers (measured at release scale: as fast as an unbounded pool, peak
/// RSS 57 MiB instead of 74). Nothing downstream keeps a buffer beyond its chunk's processing,
/// so a fetcher waiting for one never waits forever.
const POOL_BUFFERS: usize = 4;

/// A pool buffer: `n` bytes to fill at `v[at..at + n]`, the memory at `v[at]` aligned to
/// [`DIRECT_ALIGN`], and room for zeros up to the next multiple of it.
struct Slot {
    v: Vec<u8>,
    at: usize,
    n: usize,
}

impl Slot {
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.v[self.at..self.at + self.n]
    }
}

impl Pool {
    fn new() -> Pool {
        let (back, free) = sync_channel(POOL_BUFFERS);
        Pool {
            back,
            free,
            made: std::cell::Cell::new(0),
        }
    }
    /// A slot for `n` bytes (its contents are about to be overwritten); waits for a buffer to
    /// come back when all of them are in use.
    fn get(&self, n: usize) -> Slot {
        let mut v = match self.free.try_recv() {
            Ok(v) => v,
            Err(_) if self.made.get() < POOL_BUFFERS => {
                self.made.set(self.made.get() + 1);
                Vec::new()
            }
            // The pool holds a sender itself: this cannot disconnect.
            Err(_) => self.free.recv().unwrap_or_default(),
        };
        // Room to align the start, an unaligned source's lead, and the padding at the end.
        let need = n.next_multiple_of(DIRECT_ALIGN) + 3 * DIRECT_ALIGN;
        if v.len() < need {
            // A new allocation: its alignment is whatever the allocator gives.
            v = vec![0u8; need.max(CHUNK + 3 * DIRECT_ALIGN)];
        }
        let at = v.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        Slot { v, at, n }
    }
    /// The filled slot as a chunk's buffer and its span; the bytes after the span up to the next
    /// aligned end are zeroed.
    fn wrap(&self, mut s: Slot) -> (Arc<Buf>, Range<usize>) {
        let end = s.at + s.n;
        let padded = s.at + s.n.next_multiple_of(DIRECT_ALIGN);
        s.v[end..padded].fill(0);
        let buf = Arc::new(Buf {
            v: s.v,
            back: Some(self.back.clone()),
        });
        (buf, s.at..end)
    }
}

/// Bytes of a shared buffer at an image offset.
#[derive(Clone)]
struct Chunk {
    buf: Arc<Buf>,
    span: Range<usize>,
    at: u64,
    /// File data (what progress counts), not metadata.
    data: bool,
    /// The end of a file: the zeros after it up to the end of its block are the file's own to
    /// write (an aligned write of the whole block).
    eof: bool,
    /// Zeros (the writer makes them read as zeros its own way: real zero bytes in a raw image,
    /// zero clusters in a qcow2).
    zeros: bool,
}

impl Chunk {
    /// The buffer from the span's start to the end of the aligned block holding its last byte,
    /// when that is all zeros after the span and the span is a file's (whose block it is).
    fn padded(&self) -> &[u8] {
        let end = if self.eof {
            (self.span.start + self.span.len().next_multiple_of(DIRECT_ALIGN)).min(self.buf.v.len())
        } else {
            self.span.end
        };
        &self.buf.v[self.span.start..end]
    }
    fn bytes(&self) -> &[u8] {
        &self.buf.v[self.span.clone()]
    }
    fn len(&self) -> u64 {
        self.span.len() as u64
    }
}

enum ToFiles {
    Chunk(usize, Chunk),
    Done(usize),
}

/// A consumer went away: whoever stopped reports why.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped")
    }
}

impl std::error::Error for Stopped {}

fn stopped<T>(_: T) -> anyhow::Error {
    anyhow::Error::new(Stopped)
}

/// The plan of the pass: every piece, the files, the emission order, the block-map ranges.
struct Plan<'a> {
    pieces: Vec<Piece>,
    files: Vec<FileJob<'a>>,
    /// Pieces of file `i`, in file order.
    file_pieces: Vec<Vec<usize>>,
    /// Emission order: a piece, or a whole file.
    order: Vec<Item>,
    ranges: Vec<MapRange>,
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Piece(usize),
    File(usize),
}

fn plan<'a>(
    table: &[(u64, Vec<u8>)],
    parts: &[PartWrite<'a>],
    disk_size: u64,
    map: bool,
) -> Result<Plan<'a>> {
    let mut pieces = Vec::new();
    let mut files = Vec::new();
    let mut file_pieces = Vec::new();
    for (i, (at, bytes)) in table.iter().enumerate() {
        pieces.push(Piece {
            at: *at,
            len: bytes.len() as u64,
            what: What::Table(i),
            mapped: Mapped::Stream,
        });
    }
    for (p, part) in parts.iter().enumerate() {
        match part {
            PartWrite::Xfs {
                offset,
                built,
                content,
            } => {
                // File data is never metadata, whatever the work file's holes look like.
                let mut runs: Vec<(u64, u64)> = built
                    .fills
                    .values()
                    .flat_map(|f| f.runs.iter().map(|r| (r.part_offset, r.len)))
                    .collect();
                runs.sort_unstable();
                for &(at, len) in &built.metadata {
                    for (s, l) in xfs::subtract((at, len), &runs) {
                        pieces.push(Piece {
                            at: offset + s,
                            len: l,
                            what: What::Copy { part: p, from: s },
                            mapped: Mapped::Stream,
                        });
                    }
                }
                for &(at, len) in &built.zeros {
                    pieces.push(Piece {
                        at: offset + at,
                        len,
                        what: What::Zeros,
                        mapped: Mapped::Stream,
                    });
                }
                for fill in built.fills.values() {
                    if fill.path == manifest::PATH {
                        for (run, r) in fill.runs.iter().enumerate() {
                            pieces.push(Piece {
                                at: offset + r.part_offset,
                                len: r.len,
                                what: What::Manifest { part: p, run },
                                mapped: Mapped::Late,
                            });
                        }
                        continue;
                    }
                    let entry = content.get(&fill.path).with_context(|| {
                        format!("internal error: {} is not in the content", fill.path)
                    })?;
                    if entry.source.is_none() {
                        bail!("internal error: {} has no source", fill.path);
                    }
                    let file = files.len();
                    let mut mine = Vec::new();
                    for (run, r) in fill.runs.iter().enumerate() {
                        mine.push(pieces.len());
                        pieces.push(Piece {
                            at: offset + r.part_offset,
                            len: r.len,
                            what: What::Run { file, run },
                            mapped: Mapped::Stream,
                        });
                    }
                    files.push(FileJob {
                        part: p,
                        base: *offset,
                        fill,
                        entry,
                        own_range: None,
                    });
                    file_pieces.push(mine);
                }
            }
            PartWrite::Copy {
                offset,
                file: _,
                ranges,
            } => {
                for &(at, len) in ranges {
                    pieces.push(Piece {
                        at: offset + at,
                        len,
                        what: What::Copy { part: p, from: at },
                        mapped: Mapped::Stream,
                    });
                }
            }
        }
    }
    pieces.retain(|p| p.len > 0);
    // Piece indices changed for files only if an empty piece came before one: rebuild them.
    for v in file_pieces.iter_mut() {
        v.clear();
    }
    for (i, p) in pieces.iter().enumerate() {
        if let What::Run { file, .. } = p.what {
            file_pieces[file].push(i);
        }
    }

    // Nothing is written twice, and everything is inside the disk.
    let mut by_offset: Vec<usize> = (0..pieces.len()).collect();
    by_offset.sort_by_key(|&i| (pieces[i].at, pieces[i].len));
    for w in by_offset.windows(2) {
        let (a, b) = (&pieces[w[0]], &pieces[w[1]]);
        if a.at + a.len > b.at {
            bail!(
                "internal error: the image's pieces overlap: {:?} at {} ({} bytes) and {:?} at {}",
                a.what,
                a.at,
                a.len,
                b.what,
                b.at
            );
        }
    }
    if let Some(&last) = by_offset.last() {
        let p = &pieces[last];
        if p.at + p.len > disk_size {
            bail!(
                "internal error: {:?} ends at {}, beyond the disk's {disk_size} bytes",
                p.what,
                p.at + p.len
            );
        }
    }

    // Emission order: single pieces and whole files by where they start; manifests after.
    let mut order: Vec<(u64, Item)> = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        match p.what {
            What::Run { .. } | What::Manifest { .. } => {}
            _ => order.push((p.at, Item::Piece(i))),
        }
    }
    for (f, v) in file_pieces.iter().enumerate() {
        if let Some(&first) = v.first() {
            order.push((pieces[first].at, Item::File(f)));
        }
    }
    order.sort_by_key(|&(at, _)| at);
    let order: Vec<Item> = order.into_iter().map(|(_, i)| i).collect();

    let mut plan = Plan {
        pieces,
        files,
        file_pieces,
        order,
        ranges: Vec::new(),
    };
    if map {
        plan.map_ranges(disk_size);
    }
    Ok(plan)
}

impl Plan<'_> {
    /// The pieces in emission order.
    fn emitted(&self) -> Vec<usize> {
        let mut v = Vec::with_capacity(self.pieces.len());
        for item in &self.order {
            match *item {
                Item::Piece(i) => v.push(i),
                Item::File(f) => v.extend(&self.file_pieces[f]),
            }
        }
        v
    }

    /// Chooses how the block map hashes each piece and forms its ranges.
    fn map_ranges(&mut self, disk_size: u64) {
        const B: u64 = bmap::BLOCK;
        // A piece emitted out of disk order is hashed late.
        let emitted = self.emitted();
        let n = emitted.len();
        let mut suffix_min = vec![u64::MAX; n + 1];
        for k in (0..n).rev() {
            suffix_min[k] = suffix_min[k + 1].min(self.pieces[emitted[k]].at);
        }
        let mut max_end = 0u64;
        for (k, &i) in emitted.iter().enumerate() {
            let p = &mut self.pieces[i];
            let end = p.at + p.len;
            if p.at < max_end || end > suffix_min[k + 1] {
                p.mapped = Mapped::Late;
            }
            max_end = max_end.max(end);
        }
        // Blocks shared with a late piece are late; a large file's first run, alone in its
        // blocks and starting on a block boundary, is its own range.
        let mut by_offset: Vec<usize> = (0..self.pieces.len()).collect();
        by_offset.sort_by_key(|&i| self.pieces[i].at);
        let blocks = |p: &Piece| (p.at / B, (p.at + p.len - 1) / B);
        loop {
            let mut changed = false;
            for w in by_offset.windows(2) {
                let (a, b) = (self.pieces[w[0]], self.pieces[w[1]]);
                if blocks(&a).1 == blocks(&b).0
                    && (a.mapped == Mapped::Late) != (b.mapped == Mapped::Late)
                {
                    self.pieces[w[0]].mapped = Mapped::Late;
                    self.pieces[w[1]].mapped = Mapped::Late;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for (k, &i) in by_offset.iter().enumerate() {
            let p = self.pieces[i];
            let What::Run { file, run: 0 } = p.what else {
                continue;
            };
            if p.mapped != Mapped::Stream
                || !p.at.is_multiple_of(B)
                || self.files[file].fill.size < OWN_RANGE_MIN
            {
                continue;
            }
            let (first, last) = blocks(&p);
            let alone_before = k == 0 || blocks(&self.pieces[by_offset[k - 1]]).1 < first;
            let alone_after =
                k + 1 == by_offset.len() || blocks(&self.pieces[by_offset[k + 1]]).0 > last;
            if alone_before && alone_after {
                self.pieces[i].mapped = Mapped::Own;
            }
        }
        // Ranges: touched blocks, split where the hashing changes, at every own range, and
        // where untouched blocks (holes) lie between.
        let mut ranges: Vec<MapRange> = Vec::new();
        for &i in &by_offset {
            let p = self.pieces[i];
            let (first, last) = blocks(&p);
            let how = match p.mapped {
                Mapped::Stream => How::Stream,
                Mapped::Own => How::Own,
                Mapped::Late => How::Late,
            };
            if let Some(r) = ranges.last_mut() {
                let joins = how != How::Own && r.how == how && first <= r.last + 1;
                if joins {
                    r.last = r.last.max(last);
                    continue;
                }
                if first <= r.last {
                    // Shares a block with the range before (same hashing, by the rule above).
                    r.last = r.last.max(last);
                    continue;
                }
            }
            if how == How::Own {
                if let What::Run { file, .. } = p.what {
                    self.files[file].own_range = Some(ranges.len());
                }
            }
            ranges.push(MapRange { first, last, how });
        }
        let _ = disk_size;
        self.ranges = ranges;
    }
}

/// The byte range of block range `r` in an image of `size` bytes.
fn range_bytes(r: &MapRange, size: u64) -> (u64, u64) {
    let start = r.first * bmap::BLOCK;
    let end = ((r.last + 1) * bmap::BLOCK).min(size);
    (start, end)
}

/// A file source opened for reading chunks: its file, and the same file around the page
/// cache when the filesystem allows it (the disk puts the bytes straight into the buffer, with
/// no copy out of the page cache).
struct Opened {
    file: File,
    direct: Option<File>,
    path: std::path::PathBuf,
    /// Offset of the source's first byte in the file.
    offset: u64,
}

/// Opens a file or range source of `size` bytes, checking that the file holds them (a file
/// changed since it was listed is an error, never a silently wrong image).
fn open_source(src: &Source, size: u64) -> Result<Option<Opened>> {
    let (path, offset, whole) = match src {
        Source::File(p) => (p, 0, true),
        Source::Range { path, offset } => (path, *offset, false),
        Source::Bytes(_) | Source::Generated(_) | Source::Stream { .. } => return Ok(None),
    };
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
    if len < offset + size {
        bail!(
            "{}: file shrank while composing ({} bytes expected, {len} there)",
            path.display(),
            offset + size
        );
    }
    if whole && len != size {
        bail!(
            "{}: file grew while composing (expected {size} bytes)",
            path.display()
        );
    }
    let direct = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()
    .map(File::from);
    if direct.is_none() {
        let _ = rustix::fs::fadvise(
            &file,
            offset,
            std::num::NonZeroU64::new(size),
            rustix::fs::Advice::Sequential,
        );
    }
    Ok(Some(Opened {
        file,
        direct,
        path: path.clone(),
        offset,
    }))
}

impl Opened {
    /// The `n` bytes at `from` (from the source's start).
    fn read(&mut self, pool: &Pool, from: u64, n: usize) -> Result<(Arc<Buf>, Range<usize>)> {
        let mut slot = pool.get(n);
        let at = self.offset + from;
        let read = match &self.direct {
            Some(d) if read_direct(d, &mut slot, at) => Ok(()),
            _ => {
                self.direct = None;
                self.file.read_exact_at(slot.bytes(), at)
            }
        };
        read.with_context(|| format!("reading {}", self.path.display()))?;
        Ok(pool.wrap(slot))
    }
}

/// Streams the bytes of a source read whole, in order (bytes in memory, a generator), as
/// chunks gathered to [`CHUNK`] so that the writes stay aligned.
fn read_whole(
    src: &Source,
    size: u64,
    pool: &Pool,
    sink: &mut dyn FnMut(Arc<Buf>, Range<usize>) -> Result<()>,
) -> Result<()> {
    if let Source::Bytes(b) = src {
        if b.len() as u64 != size {
            bail!(
                "generated content is {} bytes, {size} were reserved",
                b.len()
            );
        }
    }
    let mut slot: Option<(Slot, usize)> = None;
    src.stream(size, &mut |mut c| {
        while !c.is_empty() {
            let (s, filled) = slot.get_or_insert_with(|| (pool.get(CHUNK), 0));
            let n = c.len().min(s.n - *filled);
            s.bytes()[*filled..*filled + n].copy_from_slice(&c[..n]);
            *filled += n;
            c = &c[n..];
            if *filled == s.n {
                if let Some((s, _)) = slot.take() {
                    let (buf, span) = pool.wrap(s);
                    sink(buf, span)?;
                }
            }
        }
        Ok(())
    })?;
    if let Some((mut s, filled)) = slot.take() {
        s.n = filled;
        let (buf, span) = pool.wrap(s);
        sink(buf, span)?;
    }
    Ok(())
}

/// One read of the pass, in emission order: what the fetchers do.
#[derive(Debug, Clone, Copy)]
enum Unit {
    /// `n` bytes of a partition's work file at `from`.
    Copy { part: usize, from: u64, n: usize },
    /// `n` bytes of file `file`'s source at `from`.
    Chunk { file: usize, from: u64, n: usize },
    /// All of file `file`, read in order (bytes in memory, a generator).
    Whole { file: usize },
    /// All of file `file`, from a stream the same fetcher reads front to back.
    Stream { file: usize },
}

/// What a fetcher hands over for a unit: its bytes (one buffer, or several for a whole file),
/// then the end; after its last unit, that everything it read checked out.
enum Fetched {
    Data(Arc<Buf>, Range<usize>),
    End,
    Finished,
}

/// The units of the pass in emission order (tables and zeros need no reading), each with the
/// fetcher that reads it: chunks alternate between fetchers; every file of one stream goes to
/// the same fetcher, which reads the stream once (successive streams alternate, so two layers
/// decompress at once).
fn units(plan: &Plan) -> Vec<(usize, Unit)> {
    let mut v = Vec::new();
    let mut turn = 0usize;
    let mut next = || {
        turn += 1;
        (turn - 1) % FETCHERS
    };
    let mut streams: Vec<(*const (), usize)> = Vec::new();
    let chunks = |len: u64| {
        (0..len.div_ceil(CHUNK as u64)).map(move |k| {
            let from = k * CHUNK as u64;
            (from, (len - from).min(CHUNK as u64) as usize)
        })
    };
    for item in &plan.order {
        match *item {
            Item::Piece(i) => {
                let p = &plan.pieces[i];
                if let What::Copy { part, from } = p.what {
                    for (d, n) in chunks(p.len) {
                        v.push((
                            next(),
                            Unit::Copy {
                                part,
                                from: from + d,
                                n,
                            },
                        ));
                    }
                }
            }
            Item::File(f) => {
                let job = &plan.files[f];
                match &job.entry.source {
                    Some(Source::File(_) | Source::Range { .. }) => {
                        for (from, n) in chunks(job.fill.size) {
                            v.push((next(), Unit::Chunk { file: f, from, n }));
                        }
                    }
                    Some(Source::Stream { stream, .. }) => {
                        let id = Arc::as_ptr(stream) as *const ();
                        let k = match streams.iter().find(|(s, _)| *s == id) {
                            Some(&(_, k)) => k,
                            None => {
                                let k = next();
                                streams.push((id, k));
                                k
                            }
                        };
                        v.push((k, Unit::Stream { file: f }));
                    }
                    _ => v.push((next(), Unit::Whole { file: f })),
                }
            }
        }
    }
    v
}

/// A stream being read by a fetcher: which one, its reader, and how far it is.
struct Open {
    id: *const (),
    what: String,
    reader: Box<dyn StreamReader>,
    at: u64,
}

impl Open {
    /// Reads the rest and checks the stream.
    fn finish(self) -> Result<()> {
        self.reader
            .finish()
            .with_context(|| format!("reading {}", self.what))
    }
}

/// Fetcher `k`: reads its units, in order, into its own channel; the reader takes them back in
/// order, so the disk (or the decompressor) works on several units at once.
fn fetch(
    plan: &Plan,
    units: &[(usize, Unit)],
    work_files: &[Option<File>],
    k: usize,
    tx: SyncSender<Result<Fetched>>,
) {
    let pool = Pool::new();
    let mut open: Option<(usize, Opened)> = None;
    let mut stream: Option<Open> = None;
    let mut run = || -> Result<()> {
        for (_, u) in units.iter().filter(|(f, _)| *f == k) {
            match *u {
                Unit::Copy { part, from, n } => {
                    let f = work_files[part]
                        .as_ref()
                        .context("internal error: no work file")?;
                    let mut slot = pool.get(n);
                    f.read_exact_at(slot.bytes(), from)
                        .context("reading a partition's work file")?;
                    let (buf, span) = pool.wrap(slot);
                    tx.send(Ok(Fetched::Data(buf, span))).map_err(stopped)?;
                }
                Unit::Chunk { file, from, n } => {
                    let job = &plan.files[file];
                    if open.as_ref().is_none_or(|(f, _)| *f != file) {
                        let src = job
                            .entry
                            .source
                            .as_ref()
                            .context("internal error: a file without a source")?;
                        let o = open_source(src, job.fill.size)
                            .with_context(|| format!("reading {}", job.fill.path))?
                            .context("internal error: not a file source")?;
                        open = Some((file, o));
                    }
                    let (_, o) = open.as_mut().context("internal error: no open source")?;
                    let (buf, span) = o
                        .read(&pool, from, n)
                        .with_context(|| format!("reading {}", job.fill.path))?;
                    tx.send(Ok(Fetched::Data(buf, span))).map_err(stopped)?;
                }
                Unit::Whole { file } => {
                    let job = &plan.files[file];
                    let src = job
                        .entry
                        .source
                        .as_ref()
                        .context("internal error: a file without a source")?;
                    read_whole(src, job.fill.size, &pool, &mut |buf, span| {
                        tx.send(Ok(Fetched::Data(buf, span))).map_err(stopped)
                    })
                    .with_context(|| format!("reading {}", job.fill.path))?;
                }
                Unit::Stream { file } => {
                    let job = &plan.files[file];
                    let Some(Source::Stream { stream: s, offset }) = &job.entry.source else {
                        bail!("internal error: not a stream source");
                    };
                    let id = Arc::as_ptr(s) as *const ();
                    // Another stream, or this one from an earlier offset: (re)open it.
                    if stream.as_ref().is_none_or(|o| o.id != id || o.at > *offset) {
                        if let Some(o) = stream.take() {
                            if o.id != id {
                                o.finish()?;
                            }
                        }
                        stream = Some(Open {
                            id,
                            what: s.describe(),
                            reader: s.open()?,
                            at: 0,
                        });
                    }
                    let o = stream.as_mut().context("internal error: no open stream")?;
                    let skip = offset - o.at;
                    let skipped =
                        std::io::copy(&mut (&mut o.reader).take(skip), &mut std::io::sink())
                            .with_context(|| format!("reading {}", o.what))?;
                    if skipped != skip {
                        bail!("{}: ends before byte {offset}", o.what);
                    }
                    o.at = *offset;
                    let mut left = job.fill.size;
                    while left > 0 {
                        let n = left.min(CHUNK as u64) as usize;
                        let mut slot = pool.get(n);
                        o.reader.read_exact(slot.bytes()).with_context(|| {
                            format!("{}: ends inside {}", o.what, job.fill.path)
                        })?;
                        o.at += n as u64;
                        left -= n as u64;
                        let (buf, span) = pool.wrap(slot);
                        tx.send(Ok(Fetched::Data(buf, span))).map_err(stopped)?;
                    }
                }
            }
            tx.send(Ok(Fetched::End)).map_err(stopped)?;
        }
        // Every stream is read to its end and checked before the pass counts as done.
        if let Some(o) = stream.take() {
            o.finish()?;
        }
        tx.send(Ok(Fetched::Finished)).map_err(stopped)
    };
    if let Err(e) = run() {
        let _ = tx.send(Err(e));
    }
}

/// Reads the slot's bytes at `at` with `O_DIRECT`, in whole aligned blocks from the aligned
/// offset at or before `at` (bytes after those wanted are overwritten with zeros later; bytes
/// before them, at an unaligned offset such as a tar member's, are moved out of the way so that
/// the slot's bytes start aligned for the write); `false` when that did not give them all, and
/// the caller reads them the ordinary way.
fn read_direct(d: &File, slot: &mut Slot, at: u64) -> bool {
    let lead = (at % DIRECT_ALIGN as u64) as usize;
    let want = lead + slot.n;
    let whole = want.next_multiple_of(DIRECT_ALIGN);
    let Some(buf) = slot.v.get_mut(slot.at..slot.at + whole) else {
        return false;
    };
    let from = at - lead as u64;
    let mut got = 0usize;
    while got < want {
        match d.read_at(&mut buf[got..], from + got as u64) {
            Ok(0) => return false,
            Ok(k) => {
                got += k;
                // Only the end of the file gives an unaligned count; anything else is unusual
                // enough to go the ordinary way.
                if got < want && !got.is_multiple_of(DIRECT_ALIGN) {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    if lead > 0 {
        buf.copy_within(lead..want, 0);
    }
    true
}

/// Where a content-addressed file's bytes were read, for the error that says they are damaged.
fn source_name(src: &Source) -> String {
    match src {
        Source::File(p) | Source::Range { path: p, .. } => p.display().to_string(),
        Source::Bytes(_) | Source::Generated(_) => "(generated)".to_string(),
        Source::Stream { stream, offset } => format!("{} (at byte {offset})", stream.describe()),
    }
}

/// Writes the image in one pass (see the module docs): the table, every partition, then the
/// manifests; returns every file's hash, the manifests and, when `map`, the block map.
pub(crate) fn write(
    w: &mut dyn ImageWriter,
    image: &Path,
    disk_size: u64,
    table: &[(u64, Vec<u8>)],
    parts: &[PartWrite],
    map: bool,
    written: Option<&(dyn Fn(u64) + Sync)>,
) -> Result<Written> {
    let plan = plan(table, parts, disk_size, map)?;
    let table: Vec<Arc<Buf>> = table.iter().map(|(_, b)| Buf::fixed(b.clone())).collect();
    let work_files: Vec<Option<File>> = parts
        .iter()
        .map(|p| {
            let path = match p {
                PartWrite::Xfs { built, .. } => &built.part_file,
                PartWrite::Copy { file, .. } => *file,
            };
            File::open(path)
                .with_context(|| format!("opening {}", path.display()))
                .map(Some)
        })
        .collect::<Result<_>>()?;

    let (wtx, wrx) = sync_channel::<Chunk>(DEPTH);
    let wrx = std::sync::Mutex::new(Some(wrx));
    let (ftx, frx) = sync_channel::<ToFiles>(DEPTH);
    let (rtx, rrx) = sync_channel::<Chunk>(DEPTH);
    let ranges_wanted = map;
    let plan_ref = &plan;
    let mut data_bytes = 0u64;
    // The writes in parallel where the format allows it: the disk gets more than one
    // request at a time.
    let next = || {
        wrx.lock()
            .ok()
            .and_then(|r| r.as_ref().and_then(|r| r.recv().ok()))
    };
    // A writer that fails closes the channel: the reader stops, and so does the other.
    let close = || {
        if let Ok(mut r) = wrx.lock() {
            r.take();
        }
    };
    let write_all = |w: &mut dyn ImageWriter| -> Result<()> {
        while let Some(c) = next() {
            if c.zeros {
                w.write_zeroes(c.at, c.len())?;
            } else {
                w.write_aligned(c.at, c.padded(), c.span.len())?;
            }
            if let (true, Some(f)) = (c.data, written) {
                f(c.len());
            }
        }
        Ok(())
    };
    let (file_hashes, own_sums, stream_sums) = std::thread::scope(|scope| -> Result<_> {
        let files_thread = scope.spawn(move || hash_files(plan_ref, frx, disk_size));
        let ranges_thread =
            scope.spawn(move || hash_stream(plan_ref, rrx, disk_size, ranges_wanted));
        let reader = scope
            .spawn(move || read_all(plan_ref, &table, &work_files, wtx, ftx, rtx, ranges_wanted));
        let second = w.another()?;
        let helper = second.map(|mut w2| {
            let write_all = &write_all;
            let close = &close;
            scope.spawn(move || {
                let r = write_all(&mut *w2);
                if r.is_err() {
                    close();
                }
                r
            })
        });
        let mut wrote = write_all(w);
        if wrote.is_err() {
            close();
        }
        if let Some(h) = helper {
            let r = h.join().map_err(|_| anyhow!("a writing thread panicked"))?;
            if wrote.is_ok() {
                wrote = r;
            }
        }
        close();
        let read = reader
            .join()
            .map_err(|_| anyhow!("the reading thread panicked"))?;
        let files = files_thread
            .join()
            .map_err(|_| anyhow!("the hashing thread panicked"))?;
        let stream = ranges_thread
            .join()
            .map_err(|_| anyhow!("the block-map thread panicked"))?;
        // The first error that is not another thread's stopping: the writer's, a file that
        // does not hash to its digest, the reader's, the block map's.
        let mut out = (Vec::new(), Vec::new(), Vec::new());
        let mut errors: Vec<anyhow::Error> = Vec::new();
        if let Err(e) = wrote {
            errors.push(e);
        }
        match files {
            Ok((f, o)) => (out.0, out.1) = (f, o),
            Err(e) => errors.push(e),
        }
        if let Err(e) = read {
            errors.push(e);
        }
        match stream {
            Ok(s) => out.2 = s,
            Err(e) => errors.push(e),
        }
        if let Some(e) = errors
            .into_iter()
            .find(|e| e.downcast_ref::<Stopped>().is_none())
        {
            return Err(e);
        }
        Ok(out)
    })?;

    // Every file's hash, per partition; then the manifests, into their reserved runs.
    let mut hashes: Vec<BTreeMap<String, String>> = parts.iter().map(|_| BTreeMap::new()).collect();
    for (f, sum) in file_hashes {
        let job = &plan.files[f];
        data_bytes += job.fill.size;
        hashes[job.part].insert(job.fill.path.clone(), sum);
    }
    let mut manifests = Vec::new();
    for (p, part) in parts.iter().enumerate() {
        let PartWrite::Xfs {
            offset,
            built,
            content,
        } = part
        else {
            manifests.push(None);
            continue;
        };
        let h = &mut hashes[p];
        for e in content
            .entries()
            .filter(|e| e.size == 0 && !manifest::is_own(&e.path))
        {
            h.insert(e.path.clone(), hex::encode(Sha256::digest(b"")));
        }
        let bytes = Manifest::bytes_of(content, |path| {
            h.get(path)
                .cloned()
                .with_context(|| format!("internal error: {path} was not hashed"))
        })?;
        let fill = built
            .fills
            .get(manifest::PATH)
            .context("internal error: the manifest has no extents")?;
        if bytes.len() as u64 != fill.size {
            bail!(
                "internal error: manifest is {} bytes, {} were reserved",
                bytes.len(),
                fill.size
            );
        }
        for r in &fill.runs {
            let s = r.file_offset as usize;
            w.write_at(offset + r.part_offset, &bytes[s..s + r.len as usize])?;
        }
        data_bytes += fill.size;
        manifests.push(Some(bytes));
    }
    w.finish()?;

    let bmap = if map {
        let mut sums: BTreeMap<usize, String> = own_sums.into_iter().collect();
        let mut stream = stream_sums.into_iter();
        let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
        let mut buf = vec![0u8; CHUNK];
        for (i, r) in plan.ranges.iter().enumerate() {
            match r.how {
                How::Own => {}
                How::Stream => {
                    let s = stream
                        .next()
                        .context("internal error: a block-map range was not hashed")?;
                    sums.insert(i, s);
                }
                How::Late => {
                    let (start, end) = range_bytes(r, disk_size);
                    let mut h = Sha256::new();
                    let mut at = start;
                    while at < end {
                        let n = ((end - at) as usize).min(buf.len());
                        f.read_exact_at(&mut buf[..n], at)
                            .with_context(|| format!("reading {}", image.display()))?;
                        h.update(&buf[..n]);
                        at += n as u64;
                    }
                    sums.insert(i, hex::encode(h.finalize()));
                }
            }
        }
        let ranges = plan
            .ranges
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let s = sums
                    .remove(&i)
                    .context("internal error: a block-map range has no checksum")?;
                Ok((r.first, r.last, s))
            })
            .collect::<Result<Vec<_>>>()?;
        Some(Bmap {
            image_size: disk_size,
            ranges,
        })
    } else {
        None
    };
    Ok(Written {
        manifests,
        data_bytes,
        bmap,
    })
}

/// The reader: every piece in emission order, split into chunks for the consumers; the bytes
/// come from [`FETCHERS`] fetcher threads reading ahead.
#[allow(clippy::too_many_arguments)]
fn read_all(
    plan: &Plan,
    table: &[Arc<Buf>],
    work_files: &[Option<File>],
    wtx: SyncSender<Chunk>,
    ftx: SyncSender<ToFiles>,
    rtx: SyncSender<Chunk>,
    map: bool,
) -> Result<()> {
    let units = units(plan);
    std::thread::scope(|scope| {
        let mut rxs = Vec::new();
        for k in 0..FETCHERS {
            let (tx, rx) = sync_channel::<Result<Fetched>>(2);
            let units = &units;
            scope.spawn(move || fetch(plan, units, work_files, k, tx));
            rxs.push(rx);
        }
        let mut next_unit = 0usize;
        // The buffers of the next unit, in order.
        let mut take = |each: &mut dyn FnMut(Arc<Buf>, Range<usize>) -> Result<()>| -> Result<()> {
            let (k, _) = units
                .get(next_unit)
                .context("internal error: more reads than units")?;
            let rx = &rxs[*k];
            next_unit += 1;
            loop {
                match rx.recv().map_err(stopped)?? {
                    Fetched::Data(buf, span) => each(buf, span)?,
                    Fetched::End => return Ok(()),
                    Fetched::Finished => bail!("internal error: a fetcher ended early"),
                }
            }
        };
        let mut r = consume(plan, table, &mut take, &wtx, &ftx, &rtx, map);
        // Each fetcher says its last word: what it read checked out (a stream to its end).
        if r.is_ok() {
            for rx in &rxs {
                r = match rx.recv().map_err(stopped) {
                    Ok(Ok(Fetched::Finished)) => Ok(()),
                    Ok(Err(e)) | Err(e) => Err(e),
                    Ok(Ok(_)) => Err(anyhow!("internal error: a fetcher read more than asked")),
                };
                if r.is_err() {
                    break;
                }
            }
        }
        // Dropping the receivers stops the fetchers when this ends early.
        drop(rxs);
        r
    })
}

/// Takes each buffer of the next unit.
type Take<'a> = dyn FnMut(&mut dyn FnMut(Arc<Buf>, Range<usize>) -> Result<()>) -> Result<()> + 'a;

/// [`read_all`]'s loop over the items: `take` gives the buffers of the next unit.
fn consume(
    plan: &Plan,
    table: &[Arc<Buf>],
    take: &mut Take,
    wtx: &SyncSender<Chunk>,
    ftx: &SyncSender<ToFiles>,
    rtx: &SyncSender<Chunk>,
    map: bool,
) -> Result<()> {
    let to_stream = |p: &Piece| map && p.mapped == Mapped::Stream;
    let send = |c: Chunk, stream: bool| -> Result<()> {
        if stream {
            rtx.send(c.clone()).map_err(stopped)?;
        }
        wtx.send(c).map_err(stopped)
    };
    let zeros = Buf::fixed(vec![0u8; CHUNK]);
    for item in &plan.order {
        match *item {
            Item::Piece(i) => {
                let p = &plan.pieces[i];
                match p.what {
                    What::Table(t) => send(
                        Chunk {
                            buf: Arc::clone(&table[t]),
                            span: 0..p.len as usize,
                            at: p.at,
                            data: false,
                            eof: false,
                            zeros: false,
                        },
                        to_stream(p),
                    )?,
                    What::Copy { .. } => {
                        let mut done = 0u64;
                        while done < p.len {
                            take(&mut |buf, span| {
                                let n = span.len() as u64;
                                let c = Chunk {
                                    buf,
                                    span,
                                    at: p.at + done,
                                    data: false,
                                    eof: false,
                                    zeros: false,
                                };
                                done += n;
                                send(c, to_stream(p))
                            })?;
                        }
                    }
                    What::Zeros => {
                        let mut done = 0u64;
                        while done < p.len {
                            let n = (p.len - done).min(CHUNK as u64) as usize;
                            send(
                                Chunk {
                                    buf: Arc::clone(&zeros),
                                    span: 0..n,
                                    at: p.at + done,
                                    data: false,
                                    eof: false,
                                    zeros: true,
                                },
                                to_stream(p),
                            )?;
                            done += n as u64;
                        }
                    }
                    What::Run { .. } | What::Manifest { .. } => {
                        bail!("internal error: a file's run emitted alone")
                    }
                }
            }
            Item::File(f) => {
                let job = &plan.files[f];
                let runs = &plan.file_pieces[f];
                // Which run, and how far into it.
                let (mut k, mut within) = (0usize, 0u64);
                let whole = !matches!(
                    job.entry.source,
                    Some(Source::File(_) | Source::Range { .. })
                );
                let mut each = |buf: Arc<Buf>, span: Range<usize>| -> Result<()> {
                    let mut start = span.start;
                    while start < span.end {
                        let p = plan
                            .pieces
                            .get(
                                *runs
                                    .get(k)
                                    .context("internal error: bytes beyond the runs")?,
                            )
                            .context("internal error: no such piece")?;
                        let n = ((p.len - within) as usize).min(span.end - start);
                        let c = Chunk {
                            buf: Arc::clone(&buf),
                            span: start..start + n,
                            at: p.at + within,
                            data: true,
                            eof: k + 1 == runs.len() && within + n as u64 == p.len,
                            zeros: false,
                        };
                        ftx.send(ToFiles::Chunk(f, c.clone())).map_err(stopped)?;
                        send(c, to_stream(p))?;
                        start += n;
                        within += n as u64;
                        if within == p.len {
                            k += 1;
                            within = 0;
                        }
                    }
                    Ok(())
                };
                // As many units as `units` made for it.
                let n = if whole {
                    1
                } else {
                    job.fill.size.div_ceil(CHUNK as u64)
                };
                for _ in 0..n {
                    take(&mut each)?;
                }
                ftx.send(ToFiles::Done(f)).map_err(stopped)?;
            }
        }
    }
    Ok(())
}

/// Every file's sha256 in file order, and the checksums of the ranges files own; a
/// content-addressed file that does not hash to its digest is an error naming it.
#[allow(clippy::type_complexity)]
fn hash_files(
    plan: &Plan,
    rx: Receiver<ToFiles>,
    disk_size: u64,
) -> Result<(Vec<(usize, String)>, Vec<(usize, String)>)> {
    let mut sums = Vec::with_capacity(plan.files.len());
    let mut own = Vec::new();
    let mut h = Sha256::new();
    let mut pos = 0u64;
    for m in rx.iter() {
        match m {
            ToFiles::Chunk(f, c) => {
                h.update(c.bytes());
                pos += c.len();
                let job = &plan.files[f];
                if let (Some(r), Some(first)) = (job.own_range, job.fill.runs.first()) {
                    if pos == first.len {
                        // The range is the run plus the zeros of its last block.
                        let (start, end) = range_bytes(&plan.ranges[r], disk_size);
                        let pad = (end - start) - first.len;
                        let mut rh = h.clone();
                        update_zeros(&mut rh, pad);
                        own.push((r, hex::encode(rh.finalize())));
                    }
                }
            }
            ToFiles::Done(f) => {
                let got = hex::encode(std::mem::take(&mut h).finalize());
                pos = 0;
                let job = &plan.files[f];
                if let Some(x) = &job.entry.expect {
                    if x.sha256 != got {
                        let src = job
                            .entry
                            .source
                            .as_ref()
                            .map_or_else(String::new, source_name);
                        let from = x.from.clone().unwrap_or(src);
                        let hint = x.hint.as_deref().unwrap_or("the copy there is damaged");
                        bail!(
                            "{}: {from} hashes to sha256:{got}, not to its digest ({hint})",
                            x.what
                        );
                    }
                }
                let _ = job.base;
                sums.push((f, got));
            }
        }
    }
    Ok((sums, own))
}

/// Feeds `n` zero bytes to a hash.
fn update_zeros(h: &mut Sha256, mut n: u64) {
    const Z: [u8; 4096] = [0u8; 4096];
    while n > 0 {
        let k = n.min(Z.len() as u64) as usize;
        h.update(&Z[..k]);
        n -= k as u64;
    }
}

/// The checksums of the stream ranges, in order, from the chunks of their pieces (ascending),
/// with zeros where a range's bytes are not written.
fn hash_stream(
    plan: &Plan,
    rx: Receiver<Chunk>,
    disk_size: u64,
    wanted: bool,
) -> Result<Vec<String>> {
    let mut sums = Vec::new();
    if !wanted {
        for _ in rx.iter() {}
        return Ok(sums);
    }
    let mut ranges = plan
        .ranges
        .iter()
        .filter(|r| r.how == How::Stream)
        .map(|r| range_bytes(r, disk_size));
    let mut cur: Option<((u64, u64), Sha256, u64)> = None;
    for c in rx.iter() {
        loop {
            if cur.is_none() {
                let r = ranges
                    .next()
                    .context("internal error: bytes beyond the block map's ranges")?;
                cur = Some((r, Sha256::new(), r.0));
            }
            let Some(((start, end), h, pos)) = cur.as_mut() else {
                bail!("internal error: no block-map range");
            };
            if c.at >= *end {
                update_zeros(h, *end - *pos);
                if let Some((_, h, _)) = cur.take() {
                    sums.push(hex::encode(h.finalize()));
                }
                continue;
            }
            if c.at < *pos || c.at < *start || c.at + c.len() > *end {
                bail!(
                    "internal error: bytes at {} out of order for the block map (range {start}..{end}, at {pos})",
                    c.at
                );
            }
            update_zeros(h, c.at - *pos);
            h.update(c.bytes());
            *pos = c.at + c.len();
            break;
        }
    }
    if let Some(((_, end), mut h, pos)) = cur.take() {
        update_zeros(&mut h, end - pos);
        sums.push(hex::encode(h.finalize()));
    }
    if ranges.next().is_some() {
        // Every stream range holds a piece: the reader stopped early, and says why.
        return Err(stopped(()));
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::emit::RawWriter;

    /// Each block-map range's checksum is the sha256 of the image's bytes in it, whatever the
    /// pieces' alignment: pieces sharing blocks, gaps inside a block, holes between ranges.
    #[test]
    fn block_map_ranges_hash_the_image_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("part");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(&work, &data).unwrap();
        let img = dir.path().join("img.raw");
        let size = 2 << 20;
        let table = vec![
            (0u64, vec![7u8; 512]),
            (512, vec![9u8; 1000]),
            (size - 4096, vec![3u8; 4096]),
        ];
        // Ranges of the work file copied at an offset that is not a multiple of the block size.
        let parts = [PartWrite::Copy {
            offset: 100_000 + 512,
            file: &work,
            ranges: vec![(0, 5000), (5000, 3), (9000, 70_000), (200_000, 100_000)],
        }];
        let mut w = RawWriter::create(&img, size).unwrap();
        let done = write(&mut w, &img, size, &table, &parts, true, None).unwrap();
        let bmap = done.bmap.unwrap();
        let bytes = std::fs::read(&img).unwrap();
        let mut mapped = 0;
        for (a, b, sum) in &bmap.ranges {
            let (s, e) = (
                *a as usize * 4096,
                ((*b as usize + 1) * 4096).min(bytes.len()),
            );
            assert_eq!(
                &hex::encode(Sha256::digest(&bytes[s..e])),
                sum,
                "range {a}-{b}"
            );
            mapped += b - a + 1;
        }
        // Every block holding a written byte is mapped, and no other.
        let written: std::collections::BTreeSet<u64> = table
            .iter()
            .map(|(at, b)| (*at, b.len() as u64))
            .chain(
                [
                    (0u64, 5000u64),
                    (5000, 3),
                    (9000, 70_000),
                    (200_000, 100_000),
                ]
                .map(|(a, l)| (a + 100_512, l)),
            )
            .flat_map(|(at, len)| at / 4096..=(at + len - 1) / 4096)
            .collect();
        assert_eq!(mapped, written.len() as u64);
        for (a, b, _) in &bmap.ranges {
            assert!((*a..=*b).all(|k| written.contains(&k)));
        }
    }
}
