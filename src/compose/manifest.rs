//! The manifest compose records inside each XFS partition (`/.prestage/manifest.json`): every
//! entry's type, mode, owner and modification time, its extended attributes (values in base64),
//! for regular files size and sha256, for symlinks the target, for devices the major and minor
//! numbers, for further names of an inode (hard links) the first name; and the root directory's
//! mode, owner, time and attributes.
//!
//! Its length is known before any hash is: hashes are fixed-width hex, so the file is reserved
//! with placeholder hashes and written last, once every file has been streamed and hashed.
//! `verify` reads it back through the filesystem and checks the tree against it.
//!
//! Format `prestage-manifest/2`; manifests of format 1 (no times, attributes, devices or links)
//! are still read.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::compose::content::{Content, Entry, Kind, Source, Time, Xattrs};

/// Directory holding prestage's own files in a partition.
pub const DIR: &str = ".prestage";
/// Path of the manifest in a partition.
pub const PATH: &str = ".prestage/manifest.json";
/// Format identifier written.
pub const FORMAT: &str = "prestage-manifest/2";
/// The earlier format, still read.
pub const FORMAT_1: &str = "prestage-manifest/1";

/// The manifest file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`] (or [`FORMAT_1`] when read from an older image).
    pub format: String,
    /// The root directory (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<Meta>,
    /// Every entry of the partition except the manifest itself and its directory.
    pub entries: Vec<Record>,
}

/// Mode, owner, time and attributes of the root directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Permission bits, four octal digits.
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time, when not 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtime_nsec: u32,
    /// Extended attributes: full name to base64 value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

/// One entry of the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Path relative to the partition root.
    pub path: String,
    /// `file`, `dir`, `symlink`, `char`, `block`, `fifo` or `socket` (a hard link has its
    /// inode's type).
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits, four octal digits.
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size of a regular file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// sha256 of a regular file, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Target of a symlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Major number of a device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<u32>,
    /// Minor number of a device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<u32>,
    /// For a further name of an inode (hard link): the inode's first path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Modification time, seconds since the epoch (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    /// Nanoseconds of the modification time, when not 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtime_nsec: u32,
    /// Extended attributes: full name to base64 value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Whether a content path belongs to prestage itself (not listed in the manifest).
pub fn is_own(path: &str) -> bool {
    path == DIR || path == PATH
}

/// Attribute values in the manifest's encoding.
pub fn encode_xattrs(x: &Xattrs) -> BTreeMap<String, String> {
    x.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD.encode(v),
            )
        })
        .collect()
}

/// Attribute values decoded from the manifest's encoding.
pub fn decode_xattrs(what: &str, x: &BTreeMap<String, String>) -> Result<Xattrs> {
    x.iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v)
                .with_context(|| format!("{what}: attribute `{k}`: value is not base64"))?;
            Ok((k.clone(), bytes))
        })
        .collect()
}

fn time_of(e: &Entry) -> Result<Time> {
    e.mtime
        .with_context(|| format!("internal error: {} has no time", e.path))
}

/// The record of entry `e` of `content` (`hash` gives a regular file's sha256).
fn record(
    content: &Content,
    e: &Entry,
    hash: &mut dyn FnMut(&str) -> Result<String>,
) -> Result<Record> {
    let (inode, link) = match &e.kind {
        Kind::Hardlink(t) => (
            content
                .get(t)
                .with_context(|| format!("internal error: {} links to nothing", e.path))?,
            Some(t.clone()),
        ),
        _ => (e, None),
    };
    let t = time_of(inode)?;
    let mut r = Record {
        path: e.path.clone(),
        kind: inode.kind.name().into(),
        mode: format!("{:04o}", inode.mode & 0o7777),
        uid: inode.uid,
        gid: inode.gid,
        size: None,
        sha256: None,
        target: None,
        major: None,
        minor: None,
        link,
        mtime: Some(t.secs),
        mtime_nsec: t.nanos,
        xattrs: encode_xattrs(&inode.xattrs),
    };
    match &inode.kind {
        Kind::File if r.link.is_none() => {
            r.size = Some(e.size);
            r.sha256 = Some(hash(&e.path)?);
        }
        Kind::Symlink(t) => {
            let t = String::from_utf8(t.clone())
                .with_context(|| format!("{}: symlink target is not UTF-8", e.path))?;
            r.target = Some(t);
        }
        Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
            r.major = Some(*major);
            r.minor = Some(*minor);
        }
        _ => {}
    }
    Ok(r)
}

/// The root directory's record.
fn root_meta(content: &Content) -> Result<Meta> {
    let root = content.root();
    let t = root
        .mtime
        .context("internal error: the root directory has no time")?;
    Ok(Meta {
        mode: format!("{:04o}", root.mode & 0o7777),
        uid: root.uid,
        gid: root.gid,
        mtime: t.secs,
        mtime_nsec: t.nanos,
        xattrs: encode_xattrs(&root.xattrs),
    })
}

/// A manifest serialized record by record from the content, never held whole: the same bytes
/// as [`Manifest::of`] followed by [`Manifest::to_bytes`].
struct Streamed<'a, F> {
    content: &'a Content,
    hash: std::cell::RefCell<F>,
    root: Meta,
}

impl<F: FnMut(&str) -> Result<String>> Serialize for Streamed<'_, F> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        struct Entries<'b, F>(&'b Streamed<'b, F>);
        impl<F: FnMut(&str) -> Result<String>> Serialize for Entries<'_, F> {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(None)?;
                for e in self.0.content.entries().filter(|e| !is_own(&e.path)) {
                    let mut h = self.0.hash.borrow_mut();
                    let r = record(self.0.content, e, &mut *h)
                        .map_err(|err| S::Error::custom(format!("{err:#}")))?;
                    seq.serialize_element(&r)?;
                }
                seq.end()
            }
        }
        let mut st = s.serialize_struct("Manifest", 3)?;
        st.serialize_field("format", FORMAT)?;
        st.serialize_field("root", &Some(&self.root))?;
        st.serialize_field("entries", &Entries(self))?;
        st.end()
    }
}

/// Counts bytes written.
struct Count(u64);

impl std::io::Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Manifest {
    /// The manifest of `content` with the given file hashes (`hash(path)`). Every entry must
    /// have its time (see [`reserve`]).
    pub fn of(content: &Content, mut hash: impl FnMut(&str) -> Result<String>) -> Result<Manifest> {
        let entries = content
            .entries()
            .filter(|e| !is_own(&e.path))
            .map(|e| record(content, e, &mut hash))
            .collect::<Result<_>>()?;
        Ok(Manifest {
            format: FORMAT.into(),
            root: Some(root_meta(content)?),
            entries,
        })
    }

    /// The serialized manifest of `content` (the bytes [`Manifest::of`] and
    /// [`Manifest::to_bytes`] give), built record by record so a large tree's manifest is
    /// never held in memory twice.
    pub fn bytes_of(
        content: &Content,
        hash: impl FnMut(&str) -> Result<String>,
    ) -> Result<Vec<u8>> {
        let m = Streamed {
            content,
            hash: std::cell::RefCell::new(hash),
            root: root_meta(content)?,
        };
        let mut v = serde_json::to_vec_pretty(&m).context("serializing the manifest")?;
        v.push(b'\n');
        Ok(v)
    }

    /// The length of [`Manifest::bytes_of`], counted without keeping the bytes.
    pub fn len_of(content: &Content) -> Result<u64> {
        let m = Streamed {
            content,
            hash: std::cell::RefCell::new(|_: &str| Ok("0".repeat(64))),
            root: root_meta(content)?,
        };
        let mut c = Count(0);
        serde_json::to_writer_pretty(&mut c, &m).context("serializing the manifest")?;
        Ok(c.0 + 1)
    }

    /// Serialized form (pretty JSON, one field per line, trailing newline).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self).context("serializing the manifest")?;
        v.push(b'\n');
        Ok(v)
    }

    /// Parses a manifest read from a partition (format 2, or 1 from older images).
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let m: Manifest =
            serde_json::from_slice(bytes).context("parsing /.prestage/manifest.json")?;
        if m.format != FORMAT && m.format != FORMAT_1 {
            bail!(
                "/.prestage/manifest.json: unknown format `{}` (expected {FORMAT} or {FORMAT_1})",
                m.format
            );
        }
        Ok(m)
    }
}

/// Gives every entry without a time (and the root) the composition's time `mtime`, adds the
/// manifest's directory and the manifest file, of its final length, to `content`; returns that
/// length. The bytes are produced by [`Manifest::of`] after filling, when the hashes are known.
pub fn reserve(content: &mut Content, mtime: i64) -> Result<u64> {
    if content.get(DIR).is_some() {
        bail!("the content already has a `{DIR}` entry; that name is reserved for prestage's manifest");
    }
    let now = Time::secs(mtime);
    content.add(Entry::dir(DIR, 0o755))?;
    content.set_default_mtime(now);
    let mut file = Entry::file(PATH, 0o644, 0, Source::Bytes(Default::default()));
    file.mtime = Some(now);
    let len = Manifest::len_of(content)?;
    // The pipeline writes the real bytes; the placeholder is not kept (it is as large as the
    // manifest), and anything that tried to stream it would fail on the length.
    file.size = len;
    file.source = Some(Source::Bytes(Default::default()));
    content.add(file)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::content::{Entry, Source};

    #[test]
    fn streamed_bytes_equal_the_whole_manifest() {
        let mut c = Content::new();
        c.add(Entry::file(
            "a/f",
            0o644,
            3,
            Source::Bytes(Default::default()),
        ))
        .unwrap();
        c.add(Entry::hardlink("a/l", "a/f")).unwrap();
        c.add(Entry::symlink("s", b"a/f".to_vec())).unwrap();
        let mut d = Entry::special("dev", Kind::CharDevice { major: 0, minor: 0 }, 0o600);
        d.xattrs.insert("trusted.x".into(), vec![0, 1, 2]);
        c.add(d).unwrap();
        let len = reserve(&mut c, 1_700_000_000).unwrap();
        let hash = |p: &str| Ok(format!("{:064x}", p.len()));
        let whole = Manifest::of(&c, hash).unwrap().to_bytes().unwrap();
        assert_eq!(Manifest::bytes_of(&c, hash).unwrap(), whole);
        assert_eq!(len, whole.len() as u64);
        let m = Manifest::parse(&whole).unwrap();
        assert_eq!(m.entries.len(), 5);
        let l = m.entries.iter().find(|r| r.path == "a/l").unwrap();
        assert_eq!(
            (l.link.as_deref(), l.kind.as_str(), l.sha256.as_ref()),
            (Some("a/f"), "file", None)
        );
        let dev = m.entries.iter().find(|r| r.path == "dev").unwrap();
        assert_eq!(
            (dev.major, dev.minor, dev.xattrs["trusted.x"].as_str()),
            (Some(0), Some(0), "AAEC")
        );
    }
}
