//! Local sources for air-gapped sites: OCI image layout directories (`oci:DIR[:REF]`, with
//! `index.json` and `blobs/sha256/`) and containers `dir:` directories (`manifest.json`, list
//! instances as `<hex>.manifest.json`, blobs named by their hex digest). Content is copied into
//! the store through the same hashing path as downloads, or read in place by a build
//! ([`Source::locate`]).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::digest::Digest;
use super::manifest::Descriptor;
use super::progress::Progress;
use super::retry::Failure;
use super::source::{FetchedManifest, Located, Source};
use super::store::PartialBlob;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

fn read_file(path: &Path, limit: u64) -> Result<Vec<u8>, Failure> {
    let f = File::open(path).map_err(|e| Failure::Permanent(format!("{}: {e}", path.display())))?;
    let mut v = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut v)
        .map_err(|e| Failure::Permanent(format!("{}: {e}", path.display())))?;
    if v.len() as u64 > limit {
        return Err(Failure::Permanent(format!(
            "{}: larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(v)
}

fn copy_into(path: &Path, slot: &mut PartialBlob, progress: &Progress) -> Result<(), Failure> {
    let fail = |e: String| Failure::Permanent(format!("{}: {e}", path.display()));
    slot.reset().map_err(|e| fail(format!("{e:#}")))?;
    let mut f = File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        slot.write(&buf[..n]).map_err(|e| fail(format!("{e:#}")))?;
        progress.bytes(n as u64);
    }
}

/// A whole file of exactly `size` bytes, as a blob read in place.
fn located(path: PathBuf, size: u64) -> Option<Located> {
    let len = std::fs::metadata(&path).ok().filter(|m| m.is_file())?.len();
    (len == size).then(|| Located {
        what: path.display().to_string(),
        path,
        offset: 0,
    })
}

/// An image in an OCI image layout.
pub struct OciLayoutSource {
    dir: PathBuf,
    image: Option<String>,
    /// Read this manifest from the blobs, whether or not the index names it.
    pinned: Option<Digest>,
}

impl OciLayoutSource {
    /// The image `image` (ref name or digest; the only one when `None`) of the layout `dir`.
    pub fn new(dir: PathBuf, image: Option<String>) -> OciLayoutSource {
        OciLayoutSource {
            dir,
            image,
            pinned: None,
        }
    }

    /// The image whose manifest (or list) is the blob `digest` of the layout `dir`: a layout
    /// used as a mirror for digest-pinned references (an oc-mirror archive, another machine's
    /// copy), which need not name them in its index.
    pub fn pinned(dir: PathBuf, digest: Digest) -> OciLayoutSource {
        OciLayoutSource {
            dir,
            image: None,
            pinned: Some(digest),
        }
    }

    /// Whether the layout holds the blob `digest`.
    pub fn has_blob(dir: &Path, digest: &Digest) -> bool {
        dir.join("blobs/sha256").join(digest.hex()).is_file()
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }
}

impl Source for OciLayoutSource {
    fn describe(&self) -> String {
        format!("oci:{}", self.dir.display())
    }

    fn manifest(&self, digest: Option<&Digest>) -> Result<FetchedManifest, Failure> {
        if let Some(d) = digest.or(self.pinned.as_ref()) {
            return Ok(FetchedManifest {
                bytes: read_file(&self.blob_path(d), 8 << 20)?,
                content_type: None,
                declared_digest: Some(d.clone()),
            });
        }
        let index_path = self.dir.join("index.json");
        let bytes = read_file(&index_path, 8 << 20)?;
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Permanent(format!("{}: not an OCI index ({e})", index_path.display()))
        })?;
        let names = || {
            index
                .manifests
                .iter()
                .map(|m| {
                    m.annotations
                        .get(REF_NAME)
                        .cloned()
                        .unwrap_or_else(|| m.digest.clone())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let entry = match &self.image {
            Some(want) => index
                .manifests
                .iter()
                .find(|m| m.annotations.get(REF_NAME) == Some(want) || &m.digest == want)
                .ok_or_else(|| {
                    Failure::Permanent(format!(
                        "{}: no image `{want}` (it has: {})",
                        index_path.display(),
                        names()
                    ))
                })?,
            None => match index.manifests.as_slice() {
                [one] => one,
                [] => {
                    return Err(Failure::Permanent(format!(
                        "{}: no images",
                        index_path.display()
                    )))
                }
                _ => {
                    return Err(Failure::Permanent(format!(
                        "{}: several images, name one as oci:DIR:REF (it has: {})",
                        index_path.display(),
                        names()
                    )))
                }
            },
        };
        let d = Digest::parse(&entry.digest)
            .map_err(|e| Failure::Permanent(format!("{}: {e:#}", index_path.display())))?;
        Ok(FetchedManifest {
            bytes: read_file(&self.blob_path(&d), 8 << 20)?,
            content_type: entry.media_type.clone(),
            declared_digest: Some(d),
        })
    }

    fn blob(
        &self,
        desc: &Descriptor,
        slot: &mut PartialBlob,
        progress: &Progress,
    ) -> Result<(), Failure> {
        copy_into(&self.blob_path(&desc.digest), slot, progress)
    }

    fn locate(&self, desc: &Descriptor) -> Option<Located> {
        located(self.blob_path(&desc.digest), desc.size)
    }
}

/// An image in a containers `dir:` directory.
pub struct DirSource {
    dir: PathBuf,
}

impl DirSource {
    /// The image in `dir`.
    pub fn new(dir: PathBuf) -> DirSource {
        DirSource { dir }
    }
}

impl Source for DirSource {
    fn describe(&self) -> String {
        format!("dir:{}", self.dir.display())
    }

    fn manifest(&self, digest: Option<&Digest>) -> Result<FetchedManifest, Failure> {
        let path = match digest {
            Some(d) => self.dir.join(format!("{}.manifest.json", d.hex())),
            None => self.dir.join("manifest.json"),
        };
        Ok(FetchedManifest {
            bytes: read_file(&path, 8 << 20)?,
            content_type: None,
            declared_digest: digest.cloned(),
        })
    }

    fn blob(
        &self,
        desc: &Descriptor,
        slot: &mut PartialBlob,
        progress: &Progress,
    ) -> Result<(), Failure> {
        copy_into(&self.dir.join(desc.digest.hex()), slot, progress)
    }

    fn locate(&self, desc: &Descriptor) -> Option<Located> {
        located(self.dir.join(desc.digest.hex()), desc.size)
    }
}
