//! The manifest compose records inside each XFS partition (`/.prestage/manifest.json`): every
//! entry's type, mode, owner, and for regular files size and sha256, for symlinks the target.
//!
//! Its length is known before any hash is: hashes are fixed-width hex, so the file is reserved at
//! mkfs time with placeholder hashes and written last, once every file has been streamed and
//! hashed. `verify` reads it back through the filesystem and checks the tree against it.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::compose::content::{Content, Entry, Kind, Source};

/// Directory holding prestage's own files in a partition.
pub const DIR: &str = ".prestage";
/// Path of the manifest in a partition.
pub const PATH: &str = ".prestage/manifest.json";
/// Format identifier.
pub const FORMAT: &str = "prestage-manifest/1";

/// The manifest file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Every entry of the partition except the manifest itself and its directory.
    pub entries: Vec<Record>,
}

/// One entry of the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Path relative to the partition root.
    pub path: String,
    /// `file`, `dir` or `symlink`.
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
}

/// Whether a content path belongs to prestage itself (not listed in the manifest).
pub fn is_own(path: &str) -> bool {
    path == DIR || path == PATH
}

impl Manifest {
    /// The manifest of `content` with the given file hashes (`hash(path)`).
    pub fn of(content: &Content, mut hash: impl FnMut(&str) -> Result<String>) -> Result<Manifest> {
        let mut entries = Vec::new();
        for e in content.entries().filter(|e| !is_own(&e.path)) {
            let (kind, size, sha256, target) = match &e.kind {
                Kind::File => ("file", Some(e.size), Some(hash(&e.path)?), None),
                Kind::Dir => ("dir", None, None, None),
                Kind::Symlink(t) => {
                    let t = String::from_utf8(t.clone())
                        .with_context(|| format!("{}: symlink target is not UTF-8", e.path))?;
                    ("symlink", None, None, Some(t))
                }
            };
            entries.push(Record {
                path: e.path.clone(),
                kind: kind.into(),
                mode: format!("{:04o}", e.mode & 0o7777),
                uid: e.uid,
                gid: e.gid,
                size,
                sha256,
                target,
            });
        }
        Ok(Manifest {
            format: FORMAT.into(),
            entries,
        })
    }

    /// Serialized form (pretty JSON, one field per line, trailing newline).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self).context("serializing the manifest")?;
        v.push(b'\n');
        Ok(v)
    }

    /// Parses a manifest read from a partition.
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let m: Manifest =
            serde_json::from_slice(bytes).context("parsing /.prestage/manifest.json")?;
        if m.format != FORMAT {
            bail!(
                "/.prestage/manifest.json: unknown format `{}` (expected {FORMAT})",
                m.format
            );
        }
        Ok(m)
    }
}

/// Adds the manifest's directory and a placeholder manifest file of the final length to
/// `content`; returns that length. The real bytes are produced by [`Manifest::of`] after filling.
pub fn reserve(content: &mut Content) -> Result<u64> {
    if content.get(DIR).is_some() {
        bail!("the content already has a `{DIR}` entry; that name is reserved for prestage's manifest");
    }
    content.add(Entry::dir(DIR, 0o755))?;
    let placeholder = Manifest::of(content, |_| Ok("0".repeat(64)))?.to_bytes()?;
    let len = placeholder.len() as u64;
    content.add(Entry::file(
        PATH,
        0o644,
        len,
        Source::Bytes(placeholder.into()),
    ))?;
    Ok(len)
}
