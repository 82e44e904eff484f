//! Content: what goes into a partition, as a list of entries whose bytes come from sources.
//!
//! An [`Entry`] is a path with a kind (file, directory, symlink), mode, owner and size; a regular
//! file's bytes come from a [`Source`]: a whole file on disk, a byte range of another file, an
//! in-memory buffer, or a generator that writes a known number of bytes. The filesystem stages
//! never look at where bytes come from; they reserve `size` bytes and later stream the source
//! straight into the reserved extents. [`Content::from_dir`] is the directory-walk front end;
//! later stages add entries for container blobs and generated archives the same way.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

/// Writes exactly the promised number of bytes into the sink.
pub type Generator = dyn Fn(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> + Send + Sync;

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
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "File({})", p.display()),
            Source::Range { path, offset } => write!(f, "Range({}@{offset})", path.display()),
            Source::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Source::Generated(_) => write!(f, "Generated"),
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

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link with its target.
    Symlink(Vec<u8>),
}

/// One path of the partition's content.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the filesystem root, components joined with `/`, no leading `/`.
    pub path: String,
    /// File, directory or symlink.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (regular files; 0 otherwise).
    pub size: u64,
    /// Where a regular file's bytes come from (`None` for directories and symlinks).
    pub source: Option<Source>,
    /// The sha256 a regular file's bytes must have (content addressed by digest, such as a
    /// store's blobs): a mismatch fails the composition, naming the file.
    pub expect: Option<Expected>,
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
    /// A regular file entry.
    pub fn file(path: impl Into<String>, mode: u32, size: u64, source: Source) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            mode,
            uid: 0,
            gid: 0,
            size,
            source: Some(source),
            expect: None,
        }
    }
    /// A directory entry.
    pub fn dir(path: impl Into<String>, mode: u32) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            source: None,
            expect: None,
        }
    }
    /// A symlink entry.
    pub fn symlink(path: impl Into<String>, target: Vec<u8>) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Symlink(target),
            mode: 0o777,
            uid: 0,
            gid: 0,
            size: 0,
            source: None,
            expect: None,
        }
    }
    /// The last path component.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
    /// The parent directory's path (`""` for the root).
    pub fn parent(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(p, _)| p)
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

/// The set of entries of one partition, keyed and ordered by path (parents before children).
#[derive(Debug, Clone, Default)]
pub struct Content {
    entries: BTreeMap<String, Entry>,
}

/// Checks one relative path; returns it normalised.
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

impl Content {
    /// An empty content set.
    pub fn new() -> Content {
        Content::default()
    }

    /// Adds an entry; parent directories are created (mode 0755) when missing. Adding a path
    /// twice is an error.
    pub fn add(&mut self, entry: Entry) -> Result<()> {
        check_path(&entry.path)?;
        if let Kind::Symlink(t) = &entry.kind {
            if t.is_empty() || t.len() > 1024 || t.contains(&0) {
                bail!(
                    "`{}`: symlink target must be 1 to 1024 bytes without NUL",
                    entry.path
                );
            }
        }
        let mut parent = entry.parent().to_string();
        while !parent.is_empty() {
            match self.entries.get(&parent) {
                Some(e) if e.kind != Kind::Dir => {
                    bail!("`{}`: parent `{parent}` is not a directory", entry.path)
                }
                Some(_) => break,
                None => {
                    let next = parent
                        .rsplit_once('/')
                        .map_or(String::new(), |(p, _)| p.to_string());
                    self.entries
                        .insert(parent.clone(), Entry::dir(parent.clone(), 0o755));
                    parent = next;
                }
            }
        }
        match self.entries.get(&entry.path) {
            Some(e) if e.kind == Kind::Dir && entry.kind == Kind::Dir => {
                // An explicit directory entry overrides an implicit one (mode, owner).
                self.entries.insert(entry.path.clone(), entry);
                Ok(())
            }
            Some(_) => bail!("`{}` is added twice", entry.path),
            None => {
                self.entries.insert(entry.path.clone(), entry);
                Ok(())
            }
        }
    }

    /// Entries in path order (a parent sorts before its children).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
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

    /// Adds every file, directory and symlink under `dir` below `prefix` (`""` for the root).
    /// Modes are kept, owners mapped per `owners`. Devices, FIFOs and sockets are refused, as are
    /// names that are not UTF-8.
    pub fn add_dir(&mut self, dir: &Path, prefix: &str, owners: Owners) -> Result<()> {
        let meta = std::fs::metadata(dir)
            .with_context(|| format!("content directory {}", dir.display()))?;
        if !meta.is_dir() {
            bail!("content directory {}: not a directory", dir.display());
        }
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
            } else {
                bail!(
                    "{}: unsupported file type (only files, directories and symlinks)",
                    item.path().display()
                );
            };
            if owners == Owners::Keep {
                entry.uid = md.uid();
                entry.gid = md.gid();
            }
            self.add(entry)
                .with_context(|| format!("adding {}", item.path().display()))?;
        }
        Ok(())
    }

    /// The directory-walk front end: all of `dir` at the root.
    pub fn from_dir(dir: &Path, owners: Owners) -> Result<Content> {
        let mut c = Content::new();
        c.add_dir(dir, "", owners)?;
        Ok(c)
    }
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
