//! Content: what goes into a partition, as a list of entries whose bytes come from sources.
//!
//! An [`Entry`] is a path with a kind (file, directory, symlink, character or block device, FIFO,
//! socket, or a hard link to an earlier entry), mode with its special bits, owner, modification
//! time, extended attributes and size; a regular file's bytes come from a [`Source`]: a whole
//! file on disk, a byte range of another file, an in-memory buffer, or a generator that writes a
//! known number of bytes. The filesystem stages never look at where bytes come from; they place
//! `size` bytes and later stream the source straight into place. File data is laid out in the
//! order entries were added ([`Entry::order`]), so a source read front to back (a tar stream) is
//! written front to back.
//!
//! Front ends: [`Content::from_dir`] walks a directory, [`Content::from_tar`] and
//! [`Content::add_tar_stream`] (in `tarfile`) read a tar archive in place; the payload stages add
//! entries for container blobs and generated archives the same way. [`Content::add`] refuses a
//! path added twice; [`Content::add_replacing`] applies entries the way tar extraction does.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

/// Writes exactly the promised number of bytes into the sink.
pub type Generator = dyn Fn(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> + Send + Sync;

/// A stream read front to back, once, by whoever reads the files whose bytes it holds (a
/// container layer, decompressed): files taken in increasing offsets cost one pass.
pub trait Streamed: Send + Sync {
    /// A reader of the stream from its first byte.
    fn open(&self) -> Result<Box<dyn StreamReader>>;
    /// What the stream is, for messages.
    fn describe(&self) -> String;
}

/// A reader of a [`Streamed`] stream.
pub trait StreamReader: Read + Send {
    /// Reads the rest of the stream and checks it (a layer's digests): the bytes it gave are
    /// only trusted once this succeeds.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Where a regular file's bytes come from.
#[derive(Clone)]
pub enum Source {
    /// A whole file on disk.
    File(PathBuf),
    /// `len` bytes of a file starting at `offset` (the entry's size is the length).
    Range {
        /// The file holding the bytes.
        path: PathBuf,
        /// Offset of the first byte.
        offset: u64,
    },
    /// Bytes held in memory (small generated files).
    Bytes(Arc<Vec<u8>>),
    /// A generator of known length.
    Generated(Arc<Generator>),
    /// The bytes at `offset` of a stream read front to back (the entry's size is the length).
    Stream {
        /// The stream.
        stream: Arc<dyn Streamed>,
        /// Offset of the first byte in it.
        offset: u64,
    },
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "File({})", p.display()),
            Source::Range { path, offset } => write!(f, "Range({}@{offset})", path.display()),
            Source::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Source::Generated(_) => write!(f, "Generated"),
            Source::Stream { stream, offset } => {
                write!(f, "Stream({}@{offset})", stream.describe())
            }
        }
    }
}

/// Chunk size for streaming sources.
pub const CHUNK: usize = 4 << 20;

impl Source {
    /// Streams exactly `size` bytes of this source into `sink`, in chunks of at most [`CHUNK`].
    /// A source that yields fewer or more bytes than promised is an error (a file changed while
    /// composing would otherwise produce a silently wrong image).
    pub fn stream(&self, size: u64, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        match self {
            Source::File(path) => {
                let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
                stream_reader(f, path, size, sink)
            }
            Source::Range { path, offset } => {
                let mut f =
                    File::open(path).with_context(|| format!("opening {}", path.display()))?;
                f.seek(SeekFrom::Start(*offset))
                    .with_context(|| format!("seeking {} to {offset}", path.display()))?;
                stream_reader(f.take(size), path, size, sink)
            }
            Source::Bytes(b) => {
                if b.len() as u64 != size {
                    bail!(
                        "generated content is {} bytes, {size} were reserved",
                        b.len()
                    );
                }
                for c in b.chunks(CHUNK) {
                    sink(c)?;
                }
                Ok(())
            }
            Source::Stream { stream, offset } => {
                let mut r = stream.open()?;
                let what = stream.describe();
                let skipped = std::io::copy(&mut (&mut r).take(*offset), &mut std::io::sink())
                    .with_context(|| format!("reading {what}"))?;
                if skipped != *offset {
                    bail!("{what}: ends at byte {skipped}, before byte {offset}");
                }
                stream_reader((&mut r).take(size), Path::new(&what), size, sink)?;
                r.finish()
            }
            Source::Generated(g) => {
                let mut n = 0u64;
                g(&mut |c: &[u8]| {
                    n += c.len() as u64;
                    if n > size {
                        bail!("generator wrote more than the {size} bytes it promised");
                    }
                    sink(c)
                })?;
                if n != size {
                    bail!("generator wrote {n} bytes, {size} were reserved");
                }
                Ok(())
            }
        }
    }
}

fn stream_reader(
    mut r: impl Read,
    path: &Path,
    size: u64,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; CHUNK.min(size.max(1) as usize)];
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = r
            .read(&mut buf[..want])
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            bail!(
                "{}: file shrank while composing ({} bytes expected, {} read)",
                path.display(),
                size,
                size - left
            );
        }
        sink(&buf[..n])?;
        left -= n as u64;
    }
    let mut probe = [0u8; 1];
    if r.read(&mut probe).unwrap_or(0) != 0 {
        bail!(
            "{}: file grew while composing (expected {size} bytes)",
            path.display()
        );
    }
    Ok(())
}

/// A timestamp: seconds since the epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Time {
    /// Seconds since 1970-01-01T00:00:00Z (negative before).
    pub secs: i64,
    /// Nanoseconds within the second (below 10^9).
    pub nanos: u32,
}

impl Time {
    /// A whole-second time.
    pub fn secs(secs: i64) -> Time {
        Time { secs, nanos: 0 }
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link with its target.
    Symlink(Vec<u8>),
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// Another name for the (non-directory) entry at this path, which was added before: one
    /// inode, several directory entries. Always names the first path of the inode (links to
    /// links are resolved when added); mode, owner, time and attributes are that entry's.
    Hardlink(String),
}

impl Kind {
    /// Short name, for messages and the manifest.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink(_) => "symlink",
            Kind::CharDevice { .. } => "char",
            Kind::BlockDevice { .. } => "block",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::Hardlink(_) => "hardlink",
        }
    }
}

/// Extended attributes: full names (`user.x`, `trusted.overlay.opaque`, `security.capability`)
/// and their values.
pub type Xattrs = BTreeMap<String, Vec<u8>>;

/// Longest attribute value Linux accepts (`XATTR_SIZE_MAX`).
pub const XATTR_VALUE_MAX: usize = 65536;

/// One path of the partition's content.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the filesystem root, components joined with `/`, no leading `/`.
    pub path: String,
    /// What it is.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (regular files; 0 otherwise).
    pub size: u64,
    /// Where a regular file's bytes come from (`None` for everything else).
    pub source: Option<Source>,
    /// The sha256 a regular file's bytes must have (content addressed by digest, such as a
    /// store's blobs): a mismatch fails the composition, naming the file.
    pub expect: Option<Expected>,
    /// Modification time; `None` takes the composition's time (`SOURCE_DATE_EPOCH` or now).
    /// Access, change and creation times are set to the same value.
    pub mtime: Option<Time>,
    /// Extended attributes (`user.`, `trusted.` and `security.` namespaces).
    pub xattrs: Xattrs,
    /// Position in the order entries were added; file data is laid out in this order.
    order: u64,
}

/// The digest a file's bytes must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Lowercase hex sha256.
    pub sha256: String,
    /// What the file is, for the error (`blob sha256:… of IMAGE`).
    pub what: String,
    /// Where its bytes are read from, for the error (`the store's copy PATH`, an archive's
    /// member); the source's file when `None`.
    pub from: Option<String>,
    /// What to do when they do not match (`run prestage store verify`).
    pub hint: Option<String>,
}

impl Entry {
    fn new(path: String, kind: Kind, mode: u32) -> Entry {
        Entry {
            path,
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            source: None,
            expect: None,
            mtime: None,
            xattrs: Xattrs::new(),
            order: 0,
        }
    }
    /// A regular file entry.
    pub fn file(path: impl Into<String>, mode: u32, size: u64, source: Source) -> Entry {
        Entry {
            size,
            source: Some(source),
            ..Entry::new(path.into(), Kind::File, mode)
        }
    }
    /// A directory entry.
    pub fn dir(path: impl Into<String>, mode: u32) -> Entry {
        Entry::new(path.into(), Kind::Dir, mode)
    }
    /// A symlink entry.
    pub fn symlink(path: impl Into<String>, target: Vec<u8>) -> Entry {
        Entry::new(path.into(), Kind::Symlink(target), 0o777)
    }
    /// A device node, FIFO or socket entry (`kind` one of those).
    pub fn special(path: impl Into<String>, kind: Kind, mode: u32) -> Entry {
        Entry::new(path.into(), kind, mode)
    }
    /// A hard link to the entry at `target`.
    pub fn hardlink(path: impl Into<String>, target: impl Into<String>) -> Entry {
        Entry::new(path.into(), Kind::Hardlink(target.into()), 0)
    }
    /// The last path component.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
    /// The parent directory's path (`""` for the root).
    pub fn parent(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(p, _)| p)
    }
    /// Position in the order entries were added to their [`Content`] (file data is laid out
    /// in this order, so a source read front to back is written front to back).
    pub fn order(&self) -> u64 {
        self.order
    }
}

/// The changeable metadata of an entry ([`Content::meta_mut`]).
pub struct MetaMut<'a> {
    /// What it is.
    pub kind: &'a Kind,
    /// Permission bits including setuid/setgid/sticky (keep it within `0o7777`).
    pub mode: &'a mut u32,
    /// Owner.
    pub uid: &'a mut u32,
    /// Group.
    pub gid: &'a mut u32,
    /// Modification time.
    pub mtime: &'a mut Option<Time>,
    /// Extended attributes.
    pub xattrs: &'a mut Xattrs,
}

/// Mode, owner, time and attributes of the filesystem's root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMeta {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (`None`: the composition's).
    pub mtime: Option<Time>,
    /// Extended attributes.
    pub xattrs: Xattrs,
}

impl Default for RootMeta {
    fn default() -> RootMeta {
        RootMeta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: None,
            xattrs: Xattrs::new(),
        }
    }
}

/// How owners from the walked tree are mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owners {
    /// Every entry is owned by 0:0 (the default: the node runs as root).
    Root,
    /// Keep the uid/gid of the source files.
    Keep,
}

/// The set of entries of one partition, keyed and ordered by path (parents before children),
/// each remembering the order it was added in.
#[derive(Debug, Clone, Default)]
pub struct Content {
    entries: BTreeMap<String, Entry>,
    root: RootMeta,
    next_order: u64,
    hardlinks: usize,
}

/// Checks one relative path.
fn check_path(path: &str) -> Result<()> {
    if path.is_empty() || path.starts_with('/') || path.ends_with('/') {
        bail!("`{path}`: not a relative path");
    }
    for c in path.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            bail!("`{path}`: empty, `.` or `..` component");
        }
        if c.len() > 255 {
            bail!("`{path}`: component is {} bytes, the limit is 255", c.len());
        }
        if c.contains('\0') {
            bail!("`{path}`: contains a NUL byte");
        }
    }
    Ok(())
}

/// Checks extended attributes: namespace, name and value lengths, and whether the kind of entry
/// may carry them (Linux keeps `user.` attributes off symlinks and special files).
pub fn check_xattrs(what: &str, kind: Option<&Kind>, xattrs: &Xattrs) -> Result<()> {
    for (name, value) in xattrs {
        let (ns, rest) = name.split_once('.').unwrap_or((name, ""));
        match ns {
            "user" | "trusted" | "security" => {}
            "system" => bail!(
                "`{what}`: attribute `{name}`: system.* attributes (POSIX ACLs) are not supported"
            ),
            _ => bail!(
                "`{what}`: attribute `{name}`: unknown namespace (user., trusted., security.)"
            ),
        }
        if rest.is_empty() || name.len() > 255 || name.contains('\0') {
            bail!("`{what}`: attribute `{name}`: the name after the namespace must be 1 to 255 bytes in all, without NUL");
        }
        if value.len() > XATTR_VALUE_MAX {
            bail!(
                "`{what}`: attribute `{name}`: value of {} bytes, the limit is {XATTR_VALUE_MAX}",
                value.len()
            );
        }
        if ns == "user" && !matches!(kind, None | Some(Kind::File) | Some(Kind::Dir)) {
            bail!("`{what}`: attribute `{name}`: user.* attributes are only allowed on files and directories");
        }
    }
    Ok(())
}

/// Checks what an entry says about itself (kind, target, devices, attributes).
fn check_entry(entry: &Entry) -> Result<()> {
    check_path(&entry.path)?;
    match &entry.kind {
        Kind::Symlink(t) if t.is_empty() || t.len() > 1023 || t.contains(&0) => bail!(
            "`{}`: symlink target must be 1 to 1023 bytes without NUL",
            entry.path
        ),
        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor }
            if *major > 511 || *minor > 0x3ffff =>
        {
            bail!(
                "`{}`: device {major}:{minor}: XFS stores majors up to 511 and minors up to 262143",
                entry.path
            )
        }
        _ => {}
    }
    if entry.kind != Kind::File && (entry.size != 0 || entry.source.is_some()) {
        bail!("`{}`: only regular files have bytes", entry.path);
    }
    if let Some(t) = &entry.mtime {
        if t.nanos >= 1_000_000_000 {
            bail!("`{}`: nanoseconds {} out of range", entry.path, t.nanos);
        }
    }
    check_xattrs(&entry.path, Some(&entry.kind), &entry.xattrs)
}

impl Content {
    /// An empty content set.
    pub fn new() -> Content {
        Content::default()
    }

    /// The root directory's mode, owner, time and attributes.
    pub fn root(&self) -> &RootMeta {
        &self.root
    }

    /// Sets the root directory's mode, owner, time and attributes.
    pub fn set_root(&mut self, root: RootMeta) -> Result<()> {
        check_xattrs("/", Some(&Kind::Dir), &root.xattrs)?;
        self.root = RootMeta {
            mode: root.mode & 0o7777,
            ..root
        };
        Ok(())
    }

    /// Gives the root and every entry that has no modification time `t`.
    pub fn set_default_mtime(&mut self, t: Time) {
        self.root.mtime.get_or_insert(t);
        for e in self.entries.values_mut() {
            e.mtime.get_or_insert(t);
        }
    }

    /// Creates the missing parent directories of `path` (mode 0755, owner 0:0); fails when a
    /// parent exists and is not a directory.
    fn make_parents(&mut self, path: &str) -> Result<()> {
        let mut parent = path.rsplit_once('/').map_or("", |(p, _)| p).to_string();
        let mut missing = Vec::new();
        while !parent.is_empty() {
            match self.entries.get(&parent) {
                Some(e) if e.kind != Kind::Dir => {
                    bail!(
                        "`{path}`: parent `{parent}` is not a directory ({})",
                        e.kind.name()
                    )
                }
                Some(_) => break,
                None => {
                    let next = parent
                        .rsplit_once('/')
                        .map_or(String::new(), |(p, _)| p.to_string());
                    missing.push(std::mem::replace(&mut parent, next));
                }
            }
        }
        for p in missing.into_iter().rev() {
            let order = self.bump();
            let mut d = Entry::dir(p.clone(), 0o755);
            d.order = order;
            self.entries.insert(p, d);
        }
        Ok(())
    }

    fn bump(&mut self) -> u64 {
        self.next_order += 1;
        self.next_order
    }

    /// Resolves a hard link's target to the first path of its inode.
    fn link_target(&self, entry: &Entry) -> Result<Option<String>> {
        let Kind::Hardlink(target) = &entry.kind else {
            return Ok(None);
        };
        check_path(target).with_context(|| format!("`{}`: hard link target", entry.path))?;
        match self.entries.get(target) {
            None => bail!(
                "`{}`: hard link to `{target}`, which is not (yet) in the content",
                entry.path
            ),
            Some(t) if t.kind == Kind::Dir => {
                bail!("`{}`: hard link to the directory `{target}`", entry.path)
            }
            Some(t) => match &t.kind {
                Kind::Hardlink(primary) => Ok(Some(primary.clone())),
                _ => Ok(Some(target.clone())),
            },
        }
    }

    fn insert(&mut self, mut entry: Entry) {
        entry.mode &= 0o7777;
        entry.order = self.bump();
        if matches!(entry.kind, Kind::Hardlink(_)) {
            self.hardlinks += 1;
        }
        self.entries.insert(entry.path.clone(), entry);
    }

    /// Adds an entry; parent directories are created (mode 0755) when missing. Adding a path
    /// twice is an error, except a directory over a directory, which takes the later one's
    /// mode, owner, time and attributes. A hard link's target must already be present.
    pub fn add(&mut self, mut entry: Entry) -> Result<()> {
        check_entry(&entry)?;
        if let Some(t) = self.link_target(&entry)? {
            entry.kind = Kind::Hardlink(t);
        }
        self.make_parents(&entry.path)?;
        match self.entries.get_mut(&entry.path) {
            Some(e) if e.kind == Kind::Dir && entry.kind == Kind::Dir => {
                // An explicit directory entry overrides an implicit one (mode, owner).
                e.mode = entry.mode & 0o7777;
                e.uid = entry.uid;
                e.gid = entry.gid;
                e.mtime = entry.mtime;
                e.xattrs = entry.xattrs;
                Ok(())
            }
            Some(_) => bail!("`{}` is added twice", entry.path),
            None => {
                self.insert(entry);
                Ok(())
            }
        }
    }

    /// Adds an entry the way tar extraction (and containers/storage applying a layer) does: a
    /// later entry replaces what is at its path (a directory with everything below it), except
    /// that a directory over a directory keeps its contents and takes the later mode, owner,
    /// time, and attributes (merged, the later value winning). Hard links to a replaced entry
    /// keep its inode, as they do on disk.
    pub fn add_replacing(&mut self, mut entry: Entry) -> Result<()> {
        check_entry(&entry)?;
        if let Some(t) = self.link_target(&entry)? {
            entry.kind = Kind::Hardlink(t);
        }
        self.make_parents(&entry.path)?;
        if let Some(e) = self.entries.get_mut(&entry.path) {
            if e.kind == Kind::Dir && entry.kind == Kind::Dir {
                e.mode = entry.mode & 0o7777;
                e.uid = entry.uid;
                e.gid = entry.gid;
                e.mtime = entry.mtime;
                e.xattrs.extend(entry.xattrs);
                return Ok(());
            }
            if matches!(&entry.kind, Kind::Hardlink(t) if *t == entry.path) {
                // A link to itself (the same name again): nothing changes.
                return Ok(());
            }
            self.remove_tree(&entry.path.clone());
            // The link target may have been the replaced entry: resolve again.
            if let Kind::Hardlink(t) = &entry.kind {
                if !self.entries.contains_key(t) {
                    bail!(
                        "`{}`: hard link to `{t}`, which this entry replaces",
                        entry.path
                    );
                }
            }
        }
        self.insert(entry);
        Ok(())
    }

    /// Removes `path` and everything below it. An inode that keeps names outside the removed
    /// tree moves to the first of them (the others are retargeted to it).
    fn remove_tree(&mut self, path: &str) {
        let below = format!("{path}/");
        let mut removed: Vec<Entry> = Vec::new();
        if let Some(e) = self.entries.remove(path) {
            removed.push(e);
        }
        let keys: Vec<String> = self
            .entries
            .range(below.clone()..)
            .take_while(|(k, _)| k.starts_with(&below))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(e) = self.entries.remove(&k) {
                removed.push(e);
            }
        }
        for e in removed {
            if matches!(e.kind, Kind::Hardlink(_)) {
                self.hardlinks -= 1;
                continue;
            }
            if self.hardlinks == 0 {
                continue;
            }
            let links: Vec<String> = self
                .entries
                .values()
                .filter(|l| matches!(&l.kind, Kind::Hardlink(t) if *t == e.path))
                .map(|l| l.path.clone())
                .collect();
            let Some(first) = links.first() else {
                continue;
            };
            let heir = Entry {
                path: first.clone(),
                ..e
            };
            self.entries.insert(first.clone(), heir);
            self.hardlinks -= 1;
            for l in &links[1..] {
                if let Some(x) = self.entries.get_mut(l) {
                    x.kind = Kind::Hardlink(first.clone());
                }
            }
        }
    }

    /// The metadata of the entry at `path`, to change it in place as tar extraction changes an
    /// existing inode (a hard link's header re-applied to the inode it names, an attribute set on
    /// a directory); its path, kind and bytes stay as they are.
    pub fn meta_mut(&mut self, path: &str) -> Option<MetaMut<'_>> {
        self.entries.get_mut(path).map(|e| MetaMut {
            kind: &e.kind,
            mode: &mut e.mode,
            uid: &mut e.uid,
            gid: &mut e.gid,
            mtime: &mut e.mtime,
            xattrs: &mut e.xattrs,
        })
    }

    /// Entries in path order (a parent sorts before its children).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Entries in the order they were added (the order file data is laid out in).
    pub fn in_order(&self) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self.entries.values().collect();
        v.sort_by_key(|e| e.order);
        v
    }

    /// Looks up an entry by path.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Children of each directory (`""` is the root), names sorted bytewise.
    pub fn children(&self) -> BTreeMap<&str, Vec<&Entry>> {
        let mut m: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
        m.entry("").or_default();
        for e in self.entries.values() {
            m.entry(e.parent()).or_default().push(e);
            if e.kind == Kind::Dir {
                m.entry(e.path.as_str()).or_default();
            }
        }
        for v in m.values_mut() {
            v.sort_by(|a, b| a.name().as_bytes().cmp(b.name().as_bytes()));
        }
        m
    }

    /// Total bytes of regular files.
    pub fn file_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum()
    }

    /// Adds every entry under `dir` below `prefix` (`""` for the root): files, directories,
    /// symlinks, device nodes, FIFOs and sockets, and further names of a file as hard links.
    /// Modes are kept, owners mapped per `owners`; times are the composition's, and extended
    /// attributes are not read (see [`Content::add_dir_with`]). Names that are not UTF-8 are
    /// refused.
    pub fn add_dir(&mut self, dir: &Path, prefix: &str, owners: Owners) -> Result<()> {
        self.add_dir_with(dir, prefix, owners, false)
    }

    /// [`Content::add_dir`], reading each entry's extended attributes when `xattrs` is set
    /// (those the running user can list: `trusted.*` need root).
    pub fn add_dir_with(
        &mut self,
        dir: &Path,
        prefix: &str,
        owners: Owners,
        xattrs: bool,
    ) -> Result<()> {
        let meta = std::fs::metadata(dir)
            .with_context(|| format!("content directory {}", dir.display()))?;
        if !meta.is_dir() {
            bail!("content directory {}: not a directory", dir.display());
        }
        let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
        for item in walkdir::WalkDir::new(dir)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
        {
            let item = item.with_context(|| format!("walking {}", dir.display()))?;
            let rel = item
                .path()
                .strip_prefix(dir)
                .with_context(|| format!("walking {}", dir.display()))?;
            let rel = rel
                .to_str()
                .with_context(|| format!("{}: file name is not UTF-8", item.path().display()))?;
            let path = if prefix.is_empty() {
                rel.to_string()
            } else {
                format!("{prefix}/{rel}")
            };
            let md = item
                .metadata()
                .with_context(|| format!("stat {}", item.path().display()))?;
            let ft = md.file_type();
            let mode = md.permissions().mode() & 0o7777;
            if !ft.is_dir() && md.nlink() > 1 {
                match inodes.entry((md.dev(), md.ino())) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        self.add(Entry::hardlink(path, first.get().clone()))
                            .with_context(|| format!("adding {}", item.path().display()))?;
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(path.clone());
                    }
                }
            }
            let (major, minor) = (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()));
            let mut entry = if ft.is_dir() {
                Entry::dir(path, mode)
            } else if ft.is_file() {
                Entry::file(
                    path,
                    mode,
                    md.len(),
                    Source::File(item.path().to_path_buf()),
                )
            } else if ft.is_symlink() {
                let t = std::fs::read_link(item.path())
                    .with_context(|| format!("readlink {}", item.path().display()))?;
                Entry::symlink(path, t.into_os_string().into_encoded_bytes())
            } else if ft.is_char_device() {
                Entry::special(path, Kind::CharDevice { major, minor }, mode)
            } else if ft.is_block_device() {
                Entry::special(path, Kind::BlockDevice { major, minor }, mode)
            } else if ft.is_fifo() {
                Entry::special(path, Kind::Fifo, mode)
            } else if ft.is_socket() {
                Entry::special(path, Kind::Socket, mode)
            } else {
                bail!("{}: unsupported file type", item.path().display());
            };
            if owners == Owners::Keep {
                entry.uid = md.uid();
                entry.gid = md.gid();
            }
            if xattrs {
                entry.xattrs = read_xattrs(item.path())?;
            }
            self.add(entry)
                .with_context(|| format!("adding {}", item.path().display()))?;
        }
        Ok(())
    }

    /// The directory-walk front end: all of `dir` at the root.
    pub fn from_dir(dir: &Path, owners: Owners) -> Result<Content> {
        Content::from_dir_with(dir, owners, false)
    }

    /// [`Content::from_dir`], with each entry's extended attributes when `xattrs` is set.
    pub fn from_dir_with(dir: &Path, owners: Owners, xattrs: bool) -> Result<Content> {
        let mut c = Content::new();
        c.add_dir_with(dir, "", owners, xattrs)?;
        Ok(c)
    }
}

/// The extended attributes of `path` (not following a symlink).
fn read_xattrs(path: &Path) -> Result<Xattrs> {
    let what = || format!("reading the extended attributes of {}", path.display());
    let mut out = Xattrs::new();
    let n = rustix::fs::llistxattr_query(path).with_context(what)?;
    if n == 0 {
        return Ok(out);
    }
    let mut names = vec![0u8; n];
    let n = rustix::fs::llistxattr(path, &mut names[..]).with_context(what)?;
    for name in names[..n.min(names.len())]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
    {
        let name = std::str::from_utf8(name)
            .map_err(|_| anyhow::anyhow!("{}: an attribute name is not UTF-8", path.display()))?;
        let len = rustix::fs::lgetxattr_query(path, name).with_context(what)?;
        let mut v = vec![0u8; len];
        let len = rustix::fs::lgetxattr(path, name, &mut v[..]).with_context(what)?;
        v.truncate(len);
        out.insert(name.to_string(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(src: &Source, size: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        src.stream(size, &mut |c| {
            out.extend_from_slice(c);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn sources_stream_exactly_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(
            collect(&Source::File(p.clone()), 10).unwrap(),
            b"0123456789"
        );
        let range = Source::Range {
            path: p.clone(),
            offset: 3,
        };
        assert_eq!(collect(&range, 4).unwrap(), b"3456");
        let gen = Source::Generated(Arc::new(|sink: &mut dyn FnMut(&[u8]) -> Result<()>| {
            sink(b"ab")?;
            sink(b"cd")
        }));
        assert_eq!(collect(&gen, 4).unwrap(), b"abcd");
        assert!(collect(&gen, 5)
            .unwrap_err()
            .to_string()
            .contains("wrote 4 bytes, 5"));
        assert!(collect(&gen, 3)
            .unwrap_err()
            .to_string()
            .contains("more than"));
        // A file that changed size since it was listed is an error, never a silent short file.
        assert!(collect(&Source::File(p.clone()), 12)
            .unwrap_err()
            .to_string()
            .contains("shrank"));
        assert!(collect(&Source::File(p), 8)
            .unwrap_err()
            .to_string()
            .contains("grew"));
    }

    #[test]
    fn add_creates_parents_and_refuses_duplicates() {
        let mut c = Content::new();
        c.add(Entry::file(
            "a/b/c.txt",
            0o644,
            0,
            Source::Bytes(Default::default()),
        ))
        .unwrap();
        assert_eq!(c.get("a").map(|e| &e.kind), Some(&Kind::Dir));
        assert_eq!(c.get("a/b").map(|e| &e.kind), Some(&Kind::Dir));
        assert!(c.add(Entry::dir("a/b/c.txt", 0o755)).is_err());
        assert!(c
            .add(Entry::file(
                "a/b/c.txt/d",
                0o644,
                0,
                Source::Bytes(Default::default())
            ))
            .is_err());
        assert!(c.add(Entry::dir("../x", 0o755)).is_err());
        assert!(c.add(Entry::dir("n".repeat(256), 0o755)).is_err());
        let paths: Vec<&str> = c.entries().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "a/b", "a/b/c.txt"]);
    }
}
