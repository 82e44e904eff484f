//! The payload stage: stored images in, partition content out.
//!
//! Input: the resolved image lists ([`ImageLists`], with `imageset.yaml`) and, per staged image,
//! what the store holds for it ([`Image`]: manifests and blob sizes, known from the manifests
//! alone, so a payload can be planned before any blob is downloaded). Output: a [`Payload`], the
//! [`Content`] of the data partition, whose files' bytes come from the store through `Source`s
//! (store files, generated `.tgz` streams, small in-memory files): nothing is copied into a
//! staging directory, and the compose stage streams it into the image.
//!
//! - [`shared`]: `blobs/sha256/` holding every blob and manifest once, and one OCI layout per
//!   image per stage (`ai-images/`, `ocp-images/`);
//! - [`ztp`]: one `<name>.tgz` per image at the root, as the upstream loader reads them;
//! - [`store`]: a containers-storage overlay image store under `store/`, every layer unpacked,
//!   that engines read in place as an additional image store;
//! - [`gzip`]: gzip of stored blocks, of known size;
//! - [`image`]: the staged images, their files, and their names on the partition.
//!
//! Every format carries `ai-images.txt`, `ocp-images.txt`, `mapping.txt` and `imageset.yaml` at
//! the root, exactly as `prestage images` writes them.

pub mod gzip;
pub mod image;
pub mod shared;
pub mod store;
pub mod ztp;

use std::sync::Arc;

use anyhow::{bail, Result};
use serde::Serialize;

pub use image::{Blobs, Image};

use crate::compose::content::{Content, Entry, Source};
use crate::imageset::lists::ImageLists;

/// A payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// De-duplicated: one blob directory, one OCI layout per image and stage.
    Shared,
    /// One `.tgz` per image, for the upstream loader.
    Ztp,
    /// A containers-storage overlay image store under `store/`, used in place on the node as an
    /// additional image store (node files: `node::store`).
    Store,
}

impl Format {
    /// Every format: what `plan` compares when no format is given.
    pub const ALL: [Format; 3] = [Format::Shared, Format::Ztp, Format::Store];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Shared => "shared",
            Format::Ztp => "ztp",
            Format::Store => "store",
        }
    }
}

/// A loading stage on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The discovery (live ISO) stage: `ai-images.txt`.
    Discovery,
    /// The install stage, after RHCOS is on disk: `ocp-images.txt`.
    Install,
}

impl Stage {
    /// Both stages.
    pub const ALL: [Stage; 2] = [Stage::Discovery, Stage::Install];

    /// The stages that load `img`.
    pub fn of(img: &Image) -> Vec<Stage> {
        Stage::ALL
            .into_iter()
            .filter(|s| match s {
                Stage::Discovery => img.discovery,
                Stage::Install => img.install,
            })
            .collect()
    }

    /// Short name, as in the loader names (`ai`, `ocp`).
    pub fn short(self) -> &'static str {
        match self {
            Stage::Discovery => "ai",
            Stage::Install => "ocp",
        }
    }

    /// Its tree in the `shared` payload (`ai-images`, `ocp-images`).
    pub fn dir(self) -> &'static str {
        match self {
            Stage::Discovery => "ai-images",
            Stage::Install => "ocp-images",
        }
    }

    /// Its list at the partition root (`ai-images.txt`, `ocp-images.txt`).
    pub fn list(self) -> &'static str {
        match self {
            Stage::Discovery => "ai-images.txt",
            Stage::Install => "ocp-images.txt",
        }
    }
}

/// One image of a payload, for `OUT.report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    /// The pinned source reference.
    pub source: String,
    /// Where the bytes were read from, when not from `source`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Top-level manifest digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Stages that load it.
    pub stages: Vec<Stage>,
    /// Bytes of its manifests and blobs.
    pub bytes: u64,
    /// Where it is on the partition.
    pub paths: Vec<String>,
    /// Bytes of its own file on the partition (`ztp`: the `.tgz`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u64>,
}

impl ImageReport {
    fn new(img: &Image, bytes: u64, paths: Vec<String>) -> ImageReport {
        ImageReport {
            source: img.source.clone(),
            origin: img.origin.clone(),
            digest: img.digest().to_string(),
            media_type: img.record.media_type.clone(),
            stages: Stage::of(img),
            bytes,
            paths,
            payload_bytes: None,
        }
    }
}

/// A file prestage adds to the partition besides the images (the loaders).
#[derive(Debug, Clone)]
pub struct ExtraFile {
    /// Path on the partition.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Bytes.
    pub bytes: Vec<u8>,
}

/// The content of a data partition.
pub struct Payload {
    /// Its format.
    pub format: Format,
    /// The partition content.
    pub content: Content,
    /// One report per image.
    pub images: Vec<ImageReport>,
    /// Distinct blobs and manifests.
    pub unique_files: usize,
    /// Bytes of regular files in the content.
    pub bytes: u64,
}

/// Adds a small in-memory file.
pub(crate) fn add_bytes(
    content: &mut Content,
    path: &str,
    mode: u32,
    bytes: Vec<u8>,
) -> Result<()> {
    let len = bytes.len() as u64;
    content.add(Entry::file(path, mode, len, Source::Bytes(Arc::new(bytes))))
}

/// The root files every payload carries.
fn root_files(lists: &ImageLists, imageset_yaml: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (Stage::Discovery.list(), lists.discovery_txt().into_bytes()),
        (Stage::Install.list(), lists.install_txt().into_bytes()),
        ("mapping.txt", lists.mapping_txt().into_bytes()),
        ("imageset.yaml", imageset_yaml.as_bytes().to_vec()),
    ]
}

/// Lays out `images` in `format`, with the lists and `extra` files.
pub fn build(
    format: Format,
    lists: &ImageLists,
    imageset_yaml: &str,
    images: &[Image],
    blobs: Blobs,
    extra: &[ExtraFile],
    mtime: u64,
) -> Result<Payload> {
    if format != Format::Store {
        image::check_names(images, format.name())?;
    }
    let mut content = Content::new();
    for (path, bytes) in root_files(lists, imageset_yaml) {
        let len = bytes.len() as u64;
        content.add(Entry::file(
            path,
            0o644,
            len,
            Source::Bytes(Arc::new(bytes)),
        ))?;
    }
    let reports = match format {
        Format::Shared => shared::add(&mut content, images, blobs)?,
        Format::Ztp => ztp::add(&mut content, images, blobs, mtime)?,
        Format::Store => store::add(&mut content, lists, images, blobs, mtime)?,
    };
    for f in extra {
        if content.get(&f.path).is_some() {
            bail!("internal error: {} is added twice", f.path);
        }
        add_bytes(&mut content, &f.path, f.mode, f.bytes.clone())?;
    }
    let unique_files = {
        let mut all = std::collections::BTreeSet::new();
        for i in images {
            for f in i.files(blobs.store)? {
                all.insert(f.digest);
            }
        }
        all.len()
    };
    let bytes = content.file_bytes();
    Ok(Payload {
        format,
        content,
        images: reports,
        unique_files,
        bytes,
    })
}
