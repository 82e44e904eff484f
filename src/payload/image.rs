//! The images a payload holds, as the store has them, and the names they get on the partition.
//!
//! An [`Image`] is one staged image (its pinned source reference, the stages that load it) with
//! the store [`Record`] of what it needs: the top-level manifest (or list), the selected image
//! manifests and their blobs. [`Image::files`] lists those as store files with sizes, each
//! digest once.
//!
//! Names: an image is stored on the partition under `<name>`, the last `/` component of its
//! source reference with the first `:` replaced by `_` (`ocp-v4.0-art-dev@sha256_<hex>`), the
//! name the upstream loader and `factory-precaching-cli` use. That loader derives the name from
//! the whole reference instead (`basename "${uri/:/_}"`), which differs for a registry with a
//! port (`host:5000/ns/repo@sha256:<hex>` gives `repo@sha256:<hex>`): [`upstream_name`] is that
//! name, so the `ztp` payload can make it resolve too.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use crate::fetch::digest::Digest;
use crate::fetch::store::{Record, Store};

/// One staged image and what the store holds for it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The pinned source reference (the name the node loads it under).
    pub source: String,
    /// Where its bytes were read from, when not from `source` itself (a release from an OCI
    /// layout).
    pub origin: Option<String>,
    /// Loaded in the discovery stage.
    pub discovery: bool,
    /// Loaded in the install stage.
    pub install: bool,
    /// What it needs, from the store.
    pub record: Record,
}

/// A file of an image, in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Whether it is a manifest (stored under `manifests/`) rather than a blob.
    pub manifest: bool,
}

impl Image {
    /// The top-level manifest digest.
    pub fn digest(&self) -> &Digest {
        &self.record.digest
    }

    /// The image's files: the top-level manifest, the image manifests of a list, then config and
    /// layer blobs in manifest order; each digest once.
    pub fn files(&self, store: &Store) -> Result<Vec<ImageFile>> {
        let mut out: Vec<ImageFile> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let manifest_size = |d: &Digest| -> Result<u64> {
            let p = store.manifest_path(d);
            Ok(std::fs::metadata(&p)
                .with_context(|| format!("{}: manifest {d} is not in the store", self.source))?
                .len())
        };
        seen.insert(self.record.digest.clone());
        out.push(ImageFile {
            digest: self.record.digest.clone(),
            size: manifest_size(&self.record.digest)?,
            manifest: true,
        });
        for i in &self.record.instances {
            if seen.insert(i.digest.clone()) {
                out.push(ImageFile {
                    digest: i.digest.clone(),
                    size: manifest_size(&i.digest)?,
                    manifest: true,
                });
            }
        }
        for i in &self.record.instances {
            for b in &i.blobs {
                if seen.insert(b.digest.clone()) {
                    out.push(ImageFile {
                        digest: b.digest.clone(),
                        size: b.size,
                        manifest: false,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Whether the top level is a list (an OCI index or a Docker manifest list).
    pub fn is_list(&self) -> bool {
        self.record
            .instances
            .first()
            .is_none_or(|i| i.digest != self.record.digest)
    }
}

/// The path in the store of an image file.
pub fn store_path(store: &Store, f: &ImageFile) -> std::path::PathBuf {
    if f.manifest {
        store.manifest_path(&f.digest)
    } else {
        store.blob_path(&f.digest)
    }
}

/// The last `/` component of a reference.
fn last_component(source: &str) -> &str {
    source.rsplit('/').next().unwrap_or(source)
}

/// The image's name on the partition: the last `/` component of the source reference with its
/// first `:` replaced by `_`.
pub fn image_name(source: &str) -> String {
    last_component(source).replacen(':', "_", 1)
}

/// The name the upstream loader looks for: `basename "${uri/:/_}"`.
pub fn upstream_name(source: &str) -> String {
    last_component(&source.replacen(':', "_", 1)).to_string()
}

/// Checks that no two different images get the same name: the node could not tell them apart.
/// Images with the same name and the same digest are the same bytes and share one copy.
pub fn check_names(images: &[Image], what: &str) -> Result<()> {
    let mut by_name: BTreeMap<String, &Image> = BTreeMap::new();
    for i in images {
        let name = image_name(&i.source);
        if name.len() > 240 {
            bail!(
                "{}: the name `{name}` is {} bytes, longer than a file name may be",
                i.source,
                name.len()
            );
        }
        if let Some(prev) = by_name.get(&name) {
            if prev.digest() != i.digest() {
                bail!(
                    "{} and {} are different images with the same name `{name}` in the {what} \
                     payload: the node's loaders find an image by the last component of its \
                     reference and cannot tell them apart (stage one of them from a repository \
                     with another last component, or leave one out)",
                    prev.source,
                    i.source
                );
            }
            continue;
        }
        by_name.insert(name, i);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_the_ecosystem_derives_them() {
        let hex = "a".repeat(64);
        let r = format!("quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:{hex}");
        assert_eq!(image_name(&r), format!("ocp-v4.0-art-dev@sha256_{hex}"));
        assert_eq!(upstream_name(&r), image_name(&r));
        assert_eq!(
            image_name("quay.io/alosadag/troubleshoot:latest"),
            "troubleshoot_latest"
        );
        assert_eq!(
            upstream_name("quay.io/alosadag/troubleshoot:latest"),
            "troubleshoot_latest"
        );
        // A registry with a port: the upstream loader replaces the port's colon.
        let p = format!("registry.lab:5000/ocp/release@sha256:{hex}");
        assert_eq!(image_name(&p), format!("release@sha256_{hex}"));
        assert_eq!(upstream_name(&p), format!("release@sha256:{hex}"));
    }

    fn image(source: &str, digest: char) -> Image {
        let d = Digest::parse(&format!("sha256:{}", digest.to_string().repeat(64))).unwrap();
        Image {
            source: source.to_string(),
            origin: None,
            discovery: false,
            install: true,
            record: Record {
                reference: source.to_string(),
                digest: d,
                media_type: String::new(),
                instances: Vec::new(),
            },
        }
    }

    #[test]
    fn colliding_names_are_refused_naming_both() {
        let a = image("quay.io/a/tools:v1", 'a');
        let b = image("registry.example/b/tools:v1", 'b');
        for format in ["ztp", "shared"] {
            let e = check_names(&[a.clone(), b.clone()], format)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("quay.io/a/tools:v1")
                    && e.contains("registry.example/b/tools:v1")
                    && e.contains("`tools_v1`")
                    && e.contains(&format!("the {format} payload")),
                "{e}"
            );
        }
        // The same image under two repositories is one set of bytes: no conflict.
        let c = image("registry.example/c/tools:v1", 'a');
        check_names(&[a, c], "ztp").unwrap();
    }
}
