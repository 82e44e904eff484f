//! Content from a tar archive, read as a stream and never unpacked: each member becomes an
//! [`Entry`] whose bytes (for regular files) are a [`Source`] pointing into the archive.
//!
//! ustar, GNU (long names `L`/`K`, base-256 numbers) and PAX (local `x` records: `path`,
//! `linkpath`, `size`, `uid`, `gid`, `mtime` with nanoseconds, `SCHILY.xattr.*` with binary
//! values) headers are read; header fields are decoded by the `tar` crate's [`tar::Header`],
//! the record stream is walked here, because the crate's iterator splits PAX records at newlines
//! (a binary attribute value such as a file capability may hold one) and its errors do not say
//! which member or where.
//!
//! Members are applied the way tar extraction and containers/storage apply a layer: a later
//! member with the same name replaces the earlier one (a directory over a directory updates its
//! metadata), hard links name an inode that an earlier member made. Hostile or broken archives
//! are refused with one line naming the member and its offset: a truncated archive (a member's
//! data or header cut short, or no end-of-archive block), a header whose checksum is wrong,
//! absolute names or `..` components, a hard link to a member that does not exist or comes
//! later, a member written through a symlink, GNU sparse members, non-UTF-8 names, and global
//! PAX headers that would change members (a `comment` alone is fine).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::compose::content::{Content, Entry, Kind, RootMeta, Source, Time, Xattrs};

const BLOCK: u64 = 512;
/// Largest PAX extended header or GNU long name accepted.
const MAX_EXTENSION: u64 = 16 << 20;

/// A tar stream: reading, and skipping member data (by seeking where possible).
pub trait TarRead: Read {
    /// Skips up to `n` bytes; returns how many there were.
    fn skip(&mut self, n: u64) -> io::Result<u64>;
    /// Skips a member's data, `n` bytes (called once per member, with 0 when it has none; the
    /// padding after it goes through [`TarRead::skip`]): by default as any other bytes. A reader
    /// that keeps every byte but file contents (a tar-split) tells them apart here.
    fn skip_member_data(&mut self, n: u64) -> io::Result<u64> {
        self.skip(n)
    }
}

/// A tar archive in a file: skips by seeking, knowing where the file ends.
pub struct TarFile {
    r: BufReader<File>,
    pos: u64,
    len: u64,
}

impl TarFile {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<TarFile> {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("reading the size of {}", path.display()))?
            .len();
        Ok(TarFile {
            r: BufReader::with_capacity(64 << 10, f),
            pos: 0,
            len,
        })
    }
}

impl Read for TarFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl TarRead for TarFile {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        let n = n.min(self.len.saturating_sub(self.pos));
        self.r.seek_relative(n as i64)?;
        self.pos += n;
        Ok(n)
    }
}

/// A tar archive read from any stream: skipping reads through the data.
pub struct TarStream<R>(pub R);

impl<R: Read> Read for TarStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> TarRead for TarStream<R> {
    fn skip(&mut self, n: u64) -> io::Result<u64> {
        io::copy(&mut (&mut self.0).take(n), &mut io::sink())
    }
}

/// What a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    /// A regular file (`0`, NUL, `7`).
    File,
    /// A directory.
    Dir,
    /// A symlink and its target.
    Symlink(Vec<u8>),
    /// A hard link to the (normalized) path of an earlier member.
    Hardlink(String),
    /// A character device.
    Char(u32, u32),
    /// A block device.
    Block(u32, u32),
    /// A FIFO.
    Fifo,
}

/// One member of an archive, its extension headers applied.
#[derive(Debug, Clone)]
pub struct Member {
    /// 1-based position among the archive's members (extension headers not counted).
    pub index: usize,
    /// Byte offset of its (first) header in the archive.
    pub offset: u64,
    /// The name as the archive spells it, for messages.
    pub raw_name: String,
    /// Normalized relative path (`""` for the archive's root, `./`).
    pub path: String,
    /// What it is.
    pub kind: MemberKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Time,
    /// Extended attributes (`SCHILY.xattr.*`).
    pub xattrs: Xattrs,
    /// Bytes of data (regular files).
    pub size: u64,
    /// Byte offset of its data in the archive.
    pub data_offset: u64,
    /// Global PAX headers (`g`, comments only) read just before it: Go's reader returns each as
    /// a member of its own.
    pub global_headers: u32,
    /// The header's size field, also for members that have no data (which then skip it).
    pub header_size: u64,
}

impl Member {
    /// `member N `NAME` (byte OFFSET)`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "member {} {:?} (byte {})",
            self.index, self.raw_name, self.offset
        )
    }
}

/// The members of a tar stream, in order.
pub struct Members<R: TarRead> {
    r: R,
    pos: u64,
    index: usize,
    done: bool,
    /// The last member's name, for messages about what follows it.
    last: Option<String>,
}

/// Normalizes a member name: components joined with `/`, `.` and empty ones dropped; absolute
/// names and `..` refused.
pub fn normalize(name: &[u8]) -> Result<String> {
    let s = std::str::from_utf8(name).map_err(|_| anyhow!("the name is not UTF-8"))?;
    if s.starts_with('/') {
        bail!("absolute name");
    }
    let mut parts = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("the name has a `..` component"),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn parse_num(key: &str, v: &[u8]) -> Result<u64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("PAX `{key}` record is not a number"))
}

/// A PAX time: seconds with an optional fraction, possibly negative.
fn parse_time(v: &[u8]) -> Result<Time> {
    let s = std::str::from_utf8(v).map_err(|_| anyhow!("PAX `mtime` is not text"))?;
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let bad = || anyhow!("PAX `mtime` record {s:?} is not a time");
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: i64 = int.parse().map_err(|_| bad())?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nanos: u32 = digits.parse().map_err(|_| bad())?;
    Ok(if !neg {
        Time { secs, nanos }
    } else if nanos == 0 {
        Time { secs: -secs, nanos }
    } else {
        Time {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        }
    })
}

/// Parses PAX records (`LEN KEY=VALUE\n`, LEN counting the whole record).
fn pax_records(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if data[at..].iter().all(|&b| b == 0) {
            break;
        }
        let sp = data[at..]
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| anyhow!("malformed PAX record at {at}"))?;
        let len: usize = std::str::from_utf8(&data[at..at + sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("malformed PAX record length at {at}"))?;
        let rec = data
            .get(at..at + len)
            .filter(|r| r.len() > sp + 1 && r.ends_with(b"\n"))
            .ok_or_else(|| anyhow!("PAX record at {at} runs past its header"))?;
        let kv = &rec[sp + 1..rec.len() - 1];
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| anyhow!("PAX record at {at} has no `=`"))?;
        let key = String::from_utf8(kv[..eq].to_vec())
            .map_err(|_| anyhow!("PAX record key at {at} is not UTF-8"))?;
        out.push((key, kv[eq + 1..].to_vec()));
        at += len;
    }
    Ok(out)
}

fn cut_nul(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |i| &b[..i])
}

impl<R: TarRead> Members<R> {
    /// The members of `r`, from its start.
    pub fn new(r: R) -> Members<R> {
        Members {
            r,
            pos: 0,
            index: 0,
            done: false,
            last: None,
        }
    }

    /// The stream being read (between members: after the last member returned).
    pub fn reader_mut(&mut self) -> &mut R {
        &mut self.r
    }

    fn read_block(&mut self, buf: &mut [u8; 512]) -> Result<usize> {
        let mut got = 0;
        while got < 512 {
            let n = self
                .r
                .read(&mut buf[got..])
                .context("reading the archive")?;
            if n == 0 {
                break;
            }
            got += n;
        }
        self.pos += got as u64;
        Ok(got)
    }

    fn read_data(&mut self, size: u64, what: &str) -> Result<Vec<u8>> {
        if size > MAX_EXTENSION {
            bail!("{what} of {size} bytes is too large");
        }
        let mut v = vec![0u8; size as usize];
        self.r
            .read_exact(&mut v)
            .map_err(|_| anyhow!("truncated archive: the {what} is cut short"))?;
        self.pos += size;
        self.skip_to_block(size)?;
        Ok(v)
    }

    fn skip_data(&mut self, size: u64) -> Result<()> {
        let n = self
            .r
            .skip_member_data(size)
            .context("reading the archive")?;
        self.pos += n;
        if n < size {
            bail!("truncated archive: the member's data ends after {n} of {size} bytes");
        }
        self.skip_to_block(size)
    }

    fn skip_to_block(&mut self, size: u64) -> Result<()> {
        let pad = size.next_multiple_of(BLOCK) - size;
        let n = self.r.skip(pad).context("reading the archive")?;
        self.pos += n;
        if n < pad {
            bail!("truncated archive: the member's padding is cut short");
        }
        Ok(())
    }

    fn next_member(&mut self) -> Result<Option<Member>> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut global_headers = 0u32;
        let first = self.pos;
        let idx = self.index + 1;
        loop {
            let at = self.pos;
            let mut raw = [0u8; 512];
            let got = self.read_block(&mut raw)?;
            let name_of =
                |raw: &[u8; 512]| String::from_utf8_lossy(cut_nul(&raw[..100])).into_owned();
            let here = |msg: String| anyhow!("member {idx} at byte {at}: {msg}");
            if got == 0 {
                if at == first && pax.is_empty() && long_name.is_none() {
                    match &self.last {
                        Some(name) => bail!(
                            "truncated archive: it ends at byte {at}, after member {} {name:?}, \
                             without the end-of-archive blocks",
                            self.index
                        ),
                        None => bail!("truncated archive: no member and no end-of-archive block"),
                    }
                }
                return Err(here(
                    "truncated archive: extension headers without their member".into(),
                ));
            }
            if got < 512 {
                return Err(here(format!(
                    "truncated archive: the header is cut short ({got} of 512 bytes)"
                )));
            }
            if raw.iter().all(|&b| b == 0) {
                if at != first {
                    return Err(here("extension headers without their member".into()));
                }
                return Ok(None);
            }
            let h = tar::Header::from_byte_slice(&raw);
            let stored = h.cksum().map_err(|_| {
                here(format!(
                    "{:?}: the header checksum field is not a number",
                    name_of(&raw)
                ))
            })?;
            let unsigned: u32 = raw[..148]
                .iter()
                .chain(&raw[156..])
                .map(|&b| u32::from(b))
                .sum::<u32>()
                + 8 * 32;
            let signed: i64 = raw[..148]
                .iter()
                .chain(&raw[156..])
                .map(|&b| i64::from(b as i8))
                .sum::<i64>()
                + 8 * 32;
            if stored != unsigned && i64::from(stored) != signed {
                return Err(here(format!(
                    "{:?}: header checksum mismatch (stored {stored}, computed {unsigned}): not a \
                     tar archive, or damaged",
                    name_of(&raw)
                )));
            }
            let size = h
                .entry_size()
                .map_err(|e| here(format!("{:?}: size field: {e}", name_of(&raw))))?;
            let t = raw[156];
            match t {
                b'x' | b'g' => {
                    let data = self
                        .read_data(size, "PAX header")
                        .map_err(|e| here(format!("{e:#}")))?;
                    let recs = pax_records(&data).map_err(|e| here(format!("{e:#}")))?;
                    if t == b'g' {
                        if let Some((k, _)) = recs.iter().find(|(k, _)| k != "comment") {
                            return Err(here(format!(
                                "global PAX header record `{k}` is not supported"
                            )));
                        }
                        global_headers += 1;
                    } else {
                        pax.extend(recs);
                    }
                    continue;
                }
                b'L' => {
                    let d = self
                        .read_data(size, "GNU long name")
                        .map_err(|e| here(format!("{e:#}")))?;
                    long_name = Some(cut_nul(&d).to_vec());
                    continue;
                }
                b'K' => {
                    let d = self
                        .read_data(size, "GNU long link name")
                        .map_err(|e| here(format!("{e:#}")))?;
                    long_link = Some(cut_nul(&d).to_vec());
                    continue;
                }
                _ => {}
            }
            self.index += 1;
            let mut name = h.path_bytes().into_owned();
            let mut link = h.link_name_bytes().map(|c| c.into_owned());
            let mut size = size;
            // A numeric field left empty (NULs or spaces) reads as 0, as GNU tar and Go read it.
            let num = |v: io::Result<u64>, at: usize, len: usize, what: &str| -> Result<u64> {
                v.or_else(|e| {
                    if raw[at..at + len].iter().all(|&b| b == 0 || b == b' ') {
                        Ok(0)
                    } else {
                        Err(here(format!("{:?}: {what} field: {e}", name_of(&raw))))
                    }
                })
            };
            let mut uid = num(h.uid(), 108, 8, "uid")?;
            let mut gid = num(h.gid(), 116, 8, "gid")?;
            let mut mtime = Time::secs(num(h.mtime(), 136, 12, "mtime")? as i64);
            let devmajor = num(
                h.device_major().map(|v| u64::from(v.unwrap_or(0))),
                329,
                8,
                "device major",
            )?;
            let devminor = num(
                h.device_minor().map(|v| u64::from(v.unwrap_or(0))),
                337,
                8,
                "device minor",
            )?;
            let mut xattrs = Xattrs::new();
            if let Some(n) = long_name.take() {
                name = n;
            }
            if let Some(l) = long_link.take() {
                link = Some(l);
            }
            let raw_name = String::from_utf8_lossy(&name).into_owned();
            let err = |msg: String| anyhow!("member {idx} {raw_name:?} (byte {first}): {msg}");
            for (k, v) in pax.drain(..) {
                match k.as_str() {
                    "path" => name = v,
                    "linkpath" => link = Some(v),
                    "size" => size = parse_num(&k, &v).map_err(|e| err(e.to_string()))?,
                    "uid" => uid = parse_num(&k, &v).map_err(|e| err(e.to_string()))?,
                    "gid" => gid = parse_num(&k, &v).map_err(|e| err(e.to_string()))?,
                    "mtime" => mtime = parse_time(&v).map_err(|e| err(e.to_string()))?,
                    _ if k.starts_with("SCHILY.xattr.") => {
                        xattrs.insert(k["SCHILY.xattr.".len()..].to_string(), v);
                    }
                    _ if k.starts_with("GNU.sparse.") => {
                        return Err(err("GNU sparse members are not supported".into()))
                    }
                    _ => {}
                }
            }
            let raw_name = String::from_utf8_lossy(&name).into_owned();
            let err = |msg: String| anyhow!("member {idx} {raw_name:?} (byte {first}): {msg}");
            let uid = u32::try_from(uid).map_err(|_| err(format!("uid {uid} is too large")))?;
            let gid = u32::try_from(gid).map_err(|_| err(format!("gid {gid} is too large")))?;
            let path = normalize(&name).map_err(|e| err(e.to_string()))?;
            let dev = || -> Result<(u32, u32)> {
                Ok((
                    u32::try_from(devmajor).map_err(|_| err("device major too large".into()))?,
                    u32::try_from(devminor).map_err(|_| err("device minor too large".into()))?,
                ))
            };
            let kind = match t {
                b'0' | 0 | b'7' => MemberKind::File,
                b'5' => MemberKind::Dir,
                b'2' => {
                    MemberKind::Symlink(link.ok_or_else(|| err("symlink without a target".into()))?)
                }
                b'1' => {
                    let l = link.ok_or_else(|| err("hard link without a target".into()))?;
                    let target =
                        normalize(&l).map_err(|e| err(format!("hard link target: {e}")))?;
                    MemberKind::Hardlink(target)
                }
                b'3' => {
                    let (a, b) = dev()?;
                    MemberKind::Char(a, b)
                }
                b'4' => {
                    let (a, b) = dev()?;
                    MemberKind::Block(a, b)
                }
                b'6' => MemberKind::Fifo,
                b'S' => return Err(err("GNU sparse members are not supported".into())),
                other => {
                    return Err(err(format!(
                        "unsupported member type {:?}",
                        char::from(other)
                    )))
                }
            };
            let data_offset = self.pos;
            self.skip_data(size).map_err(|e| err(format!("{e:#}")))?;
            let mode = h.mode().map_err(|e| err(format!("mode: {e}")))? & 0o7777;
            self.last = Some(raw_name.clone());
            return Ok(Some(Member {
                index: self.index,
                offset: first,
                raw_name,
                path,
                kind,
                mode,
                uid,
                gid,
                mtime,
                xattrs,
                size: if matches!(t, b'0' | 0 | b'7') {
                    size
                } else {
                    0
                },
                data_offset,
                global_headers,
                header_size: size,
            }));
        }
    }
}

impl<R: TarRead> Iterator for Members<R> {
    type Item = Result<Member>;

    fn next(&mut self) -> Option<Result<Member>> {
        if self.done {
            return None;
        }
        match self.next_member() {
            Ok(Some(m)) => Some(Ok(m)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The entry a member makes below `prefix`, its bytes from `source(data_offset, size)`; `None`
/// for the archive's root directory (`./`), which sets the prefix directory's metadata.
pub fn entry(m: &Member, prefix: &str, source: impl FnOnce(u64, u64) -> Source) -> Result<Entry> {
    let join = |p: &str| {
        if prefix.is_empty() {
            p.to_string()
        } else if p.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}/{p}")
        }
    };
    let path = join(&m.path);
    let mut e = match &m.kind {
        MemberKind::File => Entry::file(path, m.mode, m.size, source(m.data_offset, m.size)),
        MemberKind::Dir => Entry::dir(path, m.mode),
        MemberKind::Symlink(t) => Entry::symlink(path, t.clone()),
        MemberKind::Hardlink(t) => return Ok(Entry::hardlink(path, join(t))),
        MemberKind::Char(major, minor) => Entry::special(
            path,
            Kind::CharDevice {
                major: *major,
                minor: *minor,
            },
            m.mode,
        ),
        MemberKind::Block(major, minor) => Entry::special(
            path,
            Kind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            m.mode,
        ),
        MemberKind::Fifo => Entry::special(path, Kind::Fifo, m.mode),
    };
    e.uid = m.uid;
    e.gid = m.gid;
    e.mtime = Some(m.mtime);
    e.xattrs = m.xattrs.clone();
    Ok(e)
}

impl Content {
    /// Adds the members of a tar stream below `prefix` (`""` for the root), applied as tar
    /// extraction applies them (see the module documentation); `what` names the archive in
    /// messages and `source(data_offset, size)` gives a regular file's bytes.
    pub fn add_tar_stream<R: TarRead>(
        &mut self,
        r: R,
        what: &str,
        prefix: &str,
        source: impl FnMut(u64, u64) -> Source,
    ) -> Result<()> {
        self.add_members(Members::new(r), what, prefix, source)
    }

    /// Adds members (from [`Members`], possibly rewritten on the way: a caller applying
    /// container layers turns whiteouts into what its storage driver keeps) below `prefix`,
    /// as [`Content::add_tar_stream`] does.
    pub fn add_members(
        &mut self,
        members: impl IntoIterator<Item = Result<Member>>,
        what: &str,
        prefix: &str,
        mut source: impl FnMut(u64, u64) -> Source,
    ) -> Result<()> {
        for m in members {
            let m = m.with_context(|| what.to_string())?;
            if m.path.is_empty() && m.kind != MemberKind::Dir {
                bail!(
                    "{what}: {}: the archive's root is not a directory",
                    m.describe()
                );
            }
            if m.path.is_empty() && prefix.is_empty() {
                self.set_root(RootMeta {
                    mode: m.mode,
                    uid: m.uid,
                    gid: m.gid,
                    mtime: Some(m.mtime),
                    xattrs: m.xattrs.clone(),
                })
                .with_context(|| format!("{what}: {}", m.describe()))?;
                continue;
            }
            let e = entry(&m, prefix, &mut source)
                .with_context(|| format!("{what}: {}", m.describe()))?;
            self.add_replacing(e)
                .with_context(|| format!("{what}: {}", m.describe()))?;
        }
        Ok(())
    }

    /// Adds the tar archive at `path` below `prefix`; file bytes are byte ranges of the archive.
    pub fn add_tar(&mut self, path: &Path, prefix: &str) -> Result<()> {
        let mut f = TarFile::open(path)?;
        let mut magic = [0u8; 6];
        let n = f.read(&mut magic).context("reading the archive")?;
        if n >= 2 && magic[..2] == [0x1f, 0x8b] {
            bail!(
                "{}: a gzip-compressed archive: decompress it first (the image reads file bytes \
                 in place)",
                path.display()
            );
        }
        if n >= 4 && magic[..4] == [0x28, 0xb5, 0x2f, 0xfd] {
            bail!(
                "{}: a zstd-compressed archive: decompress it first",
                path.display()
            );
        }
        f.r.seek(SeekFrom::Start(0))
            .with_context(|| format!("reading {}", path.display()))?;
        f.pos = 0;
        let tar_path: PathBuf = path.to_path_buf();
        self.add_tar_stream(f, &path.display().to_string(), prefix, |offset, _| {
            Source::Range {
                path: tar_path.clone(),
                offset,
            }
        })
    }

    /// The tree of the tar archive at `path`.
    pub fn from_tar(path: &Path) -> Result<Content> {
        let mut c = Content::new();
        c.add_tar(path, "")?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_or_refused() {
        assert_eq!(normalize(b"./a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(normalize(b"./").unwrap(), "");
        assert!(normalize(b"/etc/passwd").is_err());
        assert!(normalize(b"a/../../x").is_err());
        assert!(normalize(b"\xff").is_err());
    }

    #[test]
    fn pax_records_keep_binary_values() {
        let v = b"a\nb=c";
        let rec = format!("{} SCHILY.xattr.user.x=", 0);
        let body_len = rec.len() - 1 + v.len() + 1;
        // Find the self-consistent length.
        let mut len = body_len + 2;
        while format!("{len} SCHILY.xattr.user.x=").len() + v.len() + 1 != len {
            len += 1;
        }
        let mut data = format!("{len} SCHILY.xattr.user.x=").into_bytes();
        data.extend_from_slice(v);
        data.push(b'\n');
        data.extend_from_slice(b"30 mtime=1700000000.123456789\n");
        let r = pax_records(&data).unwrap();
        assert_eq!(r[0], ("SCHILY.xattr.user.x".to_string(), v.to_vec()));
        assert_eq!(
            parse_time(&r[1].1).unwrap(),
            Time {
                secs: 1_700_000_000,
                nanos: 123_456_789
            }
        );
        assert_eq!(
            parse_time(b"-1.5").unwrap(),
            Time {
                secs: -2,
                nanos: 500_000_000
            }
        );
        assert!(pax_records(b"99 path=x\n").is_err());
    }
}
