//! The `shared` payload: the product's own layout, de-duplicated and loaded with no untar.
//!
//! ```text
//! blobs/sha256/<hex>                every blob and every manifest of every image, once
//! ai-images/<name>/oci-layout       one OCI layout per discovery image ...
//! ai-images/<name>/index.json       ... whose index points at its manifest (or list) by digest
//! ocp-images/<name>/oci-layout      the same for the install images
//! ocp-images/<name>/index.json
//! ```
//!
//! The node loads an image with `skopeo copy --src-shared-blob-dir blobs oci:<stage>/<name>
//! containers-storage:<source>`; the manifest bytes are the registry's, so the image keeps its
//! digest for every manifest kind. An image in both stages costs two small `index.json` files.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::image::{image_name, Blobs, Image, ImageFile};
use super::{ImageReport, Stage};
use crate::compose::content::{Content, Entry};

/// The directory holding every blob and manifest.
pub const BLOBS: &str = "blobs";

/// Adds the shared payload of `images` to `content`; returns one report per image.
pub fn add(content: &mut Content, images: &[Image], blobs: Blobs) -> Result<Vec<ImageReport>> {
    // digest -> (the file, the first image needing it)
    let mut files: BTreeMap<_, (ImageFile, String)> = BTreeMap::new();
    let mut reports = Vec::new();
    for img in images {
        let mut bytes = 0;
        for f in img.files(blobs.store)? {
            bytes += f.size;
            files
                .entry(f.digest.clone())
                .or_insert_with(|| (f, img.source.clone()));
        }
        let name = image_name(&img.source);
        let mut paths = Vec::new();
        for stage in Stage::of(img) {
            let dir = format!("{}/{name}", stage.dir());
            if content.get(&dir).is_none() {
                let index = serde_json::to_vec_pretty(&json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [{
                        "mediaType": img.record.media_type,
                        "digest": img.digest().to_string(),
                        "size": files.get(img.digest()).map_or(0, |f| f.0.size),
                    }],
                }))?;
                bytes_entry(content, &format!("{dir}/oci-layout"), OCI_LAYOUT.to_vec())?;
                bytes_entry(content, &format!("{dir}/index.json"), index)?;
            }
            paths.push(dir);
        }
        reports.push(ImageReport::new(img, bytes, paths));
    }
    for (digest, (f, image)) in files {
        let what = format!(
            "{} {digest} of {image}",
            if f.manifest { "manifest" } else { "blob" }
        );
        let (src, expect) = blobs.source(&f, what);
        let mut e = Entry::file(
            format!("{BLOBS}/sha256/{}", digest.hex()),
            0o644,
            f.size,
            src,
        );
        e.expect = Some(expect);
        content.add(e)?;
    }
    Ok(reports)
}

/// `oci-layout` of every layout.
const OCI_LAYOUT: &[u8] = b"{\"imageLayoutVersion\": \"1.0.0\"}\n";

fn bytes_entry(content: &mut Content, path: &str, mut bytes: Vec<u8>) -> Result<()> {
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    super::add_bytes(content, path, 0o644, bytes)
}
