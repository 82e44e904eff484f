//! The `ztp` payload: the layout existing SiteConfigs load with the upstream extract script
//! (telco-ran-tools' `extract-images.sh`), byte-compatible with `factory-precaching-cli`.
//!
//! At the partition root, one `<name>.tgz` per image ([`super::image::image_name`]): a gzip'd
//! tar of exactly one directory `<name>/` in containers `dir:` form (`version`, `manifest.json`
//! byte-exact, the selected instances' manifests of a list as `<hex>.manifest.json`, blobs named
//! by bare hex digest). Layers are already compressed, so the gzip member is made of stored
//! deflate blocks ([`super::gzip`]): every `.tgz` has a size known in advance and is streamed from
//! the store straight into its reserved extents, each blob checked against its digest on the
//! way. The tar headers are the `tar` crate's (GNU format, long names as `././@LongLink`).
//!
//! For a registry with a port the upstream loader looks for `<repo>@sha256:<hex>.tgz` and then
//! for the directory `<repo>@sha256:<hex>`: both are relative symlinks to the real names, so
//! those images load too.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest as _, Sha256};

use super::gzip::{stored_size, StoredGzip};
use super::image::{image_name, upstream_name, BlobAt, Blobs, Image};
use super::ImageReport;
use crate::compose::content::{Content, Entry, Source};
use crate::fetch::digest::Digest;

/// The `version` file of the `dir:` transport.
const DIR_VERSION: &[u8] = b"Directory Transport Version: 1.1\n";

/// One member of an image's tar.
#[derive(Debug, Clone)]
struct Member {
    /// Path in the archive.
    path: String,
    /// Size in bytes (0 for the directory).
    size: u64,
    /// Where its bytes come from.
    data: Data,
}

#[derive(Debug, Clone)]
enum Data {
    Dir,
    Bytes(&'static [u8]),
    /// An image file (from the store, or in place in a local source), checked against its
    /// digest while it is read; `what` names it in errors.
    Blob {
        at: BlobAt,
        digest: Digest,
        what: String,
    },
}

/// The directory `name/` and its `version` file.
fn head(name: &str) -> Vec<Member> {
    vec![
        Member {
            path: name.to_string(),
            size: 0,
            data: Data::Dir,
        },
        Member {
            path: format!("{name}/version"),
            size: DIR_VERSION.len() as u64,
            data: Data::Bytes(DIR_VERSION),
        },
    ]
}

fn members(img: &Image, blobs: Blobs, name: &str) -> Result<Vec<Member>> {
    let mut v = head(name);
    for f in img.files(blobs.store)? {
        let path = if &f.digest == img.digest() {
            format!("{name}/manifest.json")
        } else if f.manifest {
            format!("{name}/{}.manifest.json", f.digest.hex())
        } else {
            format!("{name}/{}", f.digest.hex())
        };
        v.push(Member {
            path,
            size: f.size,
            data: Data::Blob {
                at: blobs.at(&f),
                what: format!(
                    "{} {} of {}",
                    if f.manifest { "manifest" } else { "blob" },
                    f.digest,
                    img.source
                ),
                digest: f.digest,
            },
        });
    }
    Ok(v)
}

fn header(m: &Member, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    match m.data {
        Data::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
        }
        _ => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
        }
    }
    h.set_size(m.size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h
}

/// Counts bytes written.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The tar's exact size: the `tar` crate writes the headers (a dry run without data, so long
/// names cost what they will), each member's data is padded to 512 bytes.
fn tar_size(members: &[Member], mtime: u64) -> Result<u64> {
    let mut b = tar::Builder::new(Count(0));
    let mut data = 0;
    for m in members {
        let mut h = header(m, mtime);
        h.set_size(0);
        b.append_data(&mut h, &m.path, io::empty())
            .with_context(|| format!("tar header for {}", m.path))?;
        data += m.size.div_ceil(512) * 512;
    }
    let c = b.into_inner().context("finishing a tar size count")?;
    Ok(c.0 + data)
}

/// Hands the archive to the compose sink in chunks.
struct SinkWriter<'a> {
    sink: &'a mut dyn FnMut(&[u8]) -> Result<()>,
    buf: Vec<u8>,
}

const SINK_CHUNK: usize = 1 << 20;

impl Write for SinkWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= SINK_CHUNK {
            self.flush()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            (self.sink)(&self.buf).map_err(|e| io::Error::other(format!("{e:#}")))?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Reads an image file in large reads, hashing it unless it was checked already.
struct Hashing {
    file: io::BufReader<io::Take<File>>,
    hasher: Option<Sha256>,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// The store blobs (by hex digest) already read and found to match their digest in this build:
/// a blob shared by many images is hashed the first time only.
type Checked = std::sync::Mutex<std::collections::BTreeSet<String>>;

/// Streams one image's `.tgz` into `sink`.
fn stream(
    members: &[Member],
    mtime: u64,
    checked: &Checked,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let w = SinkWriter {
        sink,
        buf: Vec::with_capacity(SINK_CHUNK * 2),
    };
    let mut tar = tar::Builder::new(StoredGzip::new(w));
    for m in members {
        let mut h = header(m, mtime);
        match &m.data {
            Data::Dir => tar.append_data(&mut h, &m.path, io::empty()),
            Data::Bytes(b) => tar.append_data(&mut h, &m.path, *b),
            Data::Blob { at, digest, what } => {
                let mut file = File::open(&at.path)
                    .with_context(|| format!("{what}: opening {}", at.path.display()))?;
                let len = file
                    .metadata()
                    .with_context(|| format!("{what}: {}", at.path.display()))?
                    .len();
                let short = len < at.offset + m.size;
                if short || (at.offset == 0 && len != m.size) {
                    bail!(
                        "{what}: {} is {} bytes, the manifest says {} ({})",
                        at.from,
                        len - at.offset.min(len),
                        m.size,
                        at.hint
                    );
                }
                file.seek(io::SeekFrom::Start(at.offset))
                    .with_context(|| format!("{what}: {}", at.path.display()))?;
                let known = checked.lock().is_ok_and(|c| c.contains(digest.hex()));
                let mut r = Hashing {
                    file: io::BufReader::with_capacity(SINK_CHUNK, file.take(m.size)),
                    hasher: (!known).then(Sha256::new),
                };
                tar.append_data(&mut h, &m.path, &mut r)
                    .map_err(|e| anyhow!("{what}: {e}"))?;
                if let Some(hasher) = r.hasher {
                    let got = hex::encode(hasher.finalize());
                    if got != digest.hex() {
                        bail!(
                            "{what}: {} hashes to sha256:{got}, not to its digest ({})",
                            at.from,
                            at.hint
                        );
                    }
                    if let Ok(mut c) = checked.lock() {
                        c.insert(got);
                    }
                }
                Ok(())
            }
        }
        .map_err(|e| anyhow!("writing {}: {e}", m.path))?;
    }
    let gz = tar.into_inner().context("finishing a tar")?;
    let mut w = gz.finish().context("finishing a gzip member")?;
    w.flush().context("writing a .tgz")?;
    Ok(())
}

/// Adds the `ztp` payload of `images` to `content`; returns one report per image.
pub fn add(
    content: &mut Content,
    images: &[Image],
    blobs: Blobs,
    mtime: u64,
) -> Result<Vec<ImageReport>> {
    let mut reports = Vec::new();
    let mut done: BTreeMap<String, u64> = BTreeMap::new();
    let checked = Arc::new(Checked::default());
    for img in images {
        let name = image_name(&img.source);
        let file = format!("{name}.tgz");
        let bytes: u64 = img.files(blobs.store)?.iter().map(|f| f.size).sum();
        if !done.contains_key(&name) {
            let members = members(img, blobs, &name)?;
            let size = stored_size(tar_size(&members, mtime)?);
            let members = Arc::new(members);
            let checked = Arc::clone(&checked);
            let gen = move |sink: &mut dyn FnMut(&[u8]) -> Result<()>| {
                stream(&members, mtime, &checked, sink)
            };
            content.add(Entry::file(
                file.clone(),
                0o644,
                size,
                Source::Generated(Arc::new(gen)),
            ))?;
            let alt = upstream_name(&img.source);
            if alt != name && content.get(&alt).is_none() {
                content.add(Entry::symlink(
                    format!("{alt}.tgz"),
                    file.clone().into_bytes(),
                ))?;
                content.add(Entry::symlink(alt, name.clone().into_bytes()))?;
            }
            done.insert(name.clone(), size);
        }
        let mut r = ImageReport::new(img, bytes, vec![file]);
        r.payload_bytes = done.get(&name).copied();
        reports.push(r);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_at(path: &std::path::Path) -> BlobAt {
        BlobAt {
            path: path.to_path_buf(),
            offset: 0,
            from: format!("the store's copy {}", path.display()),
            hint: "the store is damaged",
        }
    }

    #[test]
    fn tar_size_matches_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("b");
        let data: Vec<u8> = (0..70_001u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&blob, &data).unwrap();
        let d = Digest::of(&data);
        // A long name takes GNU long-name headers; both forms must be counted exactly.
        for name in [
            "short",
            &format!("ocp-v4.0-art-dev@sha256_{}", "a".repeat(64)),
        ] {
            let mut ms = head(name);
            ms.push(Member {
                path: format!("{name}/{}", d.hex()),
                size: data.len() as u64,
                data: Data::Blob {
                    at: test_at(&blob),
                    digest: d.clone(),
                    what: "blob".into(),
                },
            });
            let mut out = Vec::new();
            stream(&ms, 1_700_000_000, &Checked::default(), &mut |c| {
                out.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            assert_eq!(
                out.len() as u64,
                stored_size(tar_size(&ms, 1_700_000_000).unwrap())
            );
            let mut a = tar::Archive::new(flate2::read::GzDecoder::new(&out[..]));
            let mut seen = Vec::new();
            for e in a.entries().unwrap() {
                let mut e = e.unwrap();
                let p = e.path().unwrap().to_string_lossy().into_owned();
                let mut v = Vec::new();
                e.read_to_end(&mut v).unwrap();
                if p.ends_with(d.hex()) {
                    assert_eq!(v, data);
                }
                seen.push(p);
            }
            assert_eq!(seen.len(), 3, "{seen:?}");
            assert!(seen[1].ends_with("/version"), "{seen:?}");
        }
    }

    #[test]
    fn a_damaged_store_blob_is_named_and_a_good_one_hashed_once() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("b");
        std::fs::write(&blob, b"flipped").unwrap();
        let d = Digest::of(b"original");
        let ms = vec![Member {
            path: "x/blob".into(),
            size: 7,
            data: Data::Blob {
                at: test_at(&blob),
                digest: d.clone(),
                what: format!("blob {d} of quay.io/a/b@sha256:x"),
            },
        }];
        let checked = Checked::default();
        let e = stream(&ms, 0, &checked, &mut |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&d.to_string()) && e.contains("quay.io/a/b"),
            "{e}"
        );
        // A damaged blob is never taken as checked: the next image reading it fails too.
        assert!(checked.lock().unwrap().is_empty());
        assert!(stream(&ms, 0, &checked, &mut |_| Ok(())).is_err());
        // A good blob is hashed the first time a build streams it, not for every image.
        std::fs::write(&blob, b"original").unwrap();
        let ms = vec![Member {
            size: 8,
            ..ms[0].clone()
        }];
        stream(&ms, 0, &checked, &mut |_| Ok(())).unwrap();
        assert!(checked.lock().unwrap().contains(d.hex()));
        std::fs::write(&blob, b"changed!").unwrap();
        stream(&ms, 0, &checked, &mut |_| Ok(())).unwrap();
    }
}
