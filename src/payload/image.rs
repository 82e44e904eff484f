//! The images a payload holds, as the store has them, and the names they get on the partition.
//!
//! An [`Image`] is one staged image (its pinned source reference, the stages that load it) with
//! the store [`Record`] of what it needs: the top-level manifest (or list), the selected image
//! manifests and their blobs. [`Image::files`] lists those with sizes, each digest once, and
//! [`Blobs`] says where each one's bytes are read: the store, or in place in a local source (an
//! OCI layout, an oc-mirror archive) for a blob the store does not hold.
//!
//! Names: an image is stored on the partition under `<name>`, the last `/` component of its
//! source reference with the first `:` replaced by `_` (`ocp-v4.0-art-dev@sha256_<hex>`), the
//! name the upstream loader and `factory-precaching-cli` use. That loader derives the name from
//! the whole reference instead (`basename "${uri/:/_}"`), which differs for a registry with a
//! port (`host:5000/ns/repo@sha256:<hex>` gives `repo@sha256:<hex>`): [`upstream_name`] is that
//! name, so the `ztp` payload can make it resolve too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::compose::content::{Expected, Source};
use crate::fetch::digest::Digest;
use crate::fetch::source::Located;
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

/// Where a payload reads image files: manifests and the blobs the store holds from the store,
/// other blobs in place where a local source holds them (`located`, from the pull).
#[derive(Clone, Copy)]
pub struct Blobs<'a> {
    /// The store.
    pub store: &'a Store,
    /// Blobs the store does not hold, where they lie on this machine.
    pub located: &'a BTreeMap<Digest, Located>,
}

/// Where one image file's bytes are read.
#[derive(Debug, Clone)]
pub struct BlobAt {
    /// The file holding them.
    pub path: PathBuf,
    /// Offset of the first byte.
    pub offset: u64,
    /// What holds them, for messages (`the store's copy PATH`, an archive's member).
    pub from: String,
    /// What to do when they do not hash to their digest.
    pub hint: &'static str,
}

impl Blobs<'_> {
    /// Where `f`'s bytes are read.
    pub fn at(&self, f: &ImageFile) -> BlobAt {
        if !f.manifest && !self.store.has_blob(&f.digest) {
            if let Some(l) = self.located.get(&f.digest) {
                return BlobAt {
                    path: l.path.clone(),
                    offset: l.offset,
                    from: l.what.clone(),
                    hint: "that copy is damaged: replace it, or pull the image into the store",
                };
            }
        }
        let path = store_path(self.store, f);
        BlobAt {
            from: format!("the store's copy {}", path.display()),
            path,
            offset: 0,
            hint: "the store is damaged: run `prestage store verify`",
        }
    }

    /// The source of `f`'s bytes and the digest they must have, `what` naming it in errors.
    pub fn source(&self, f: &ImageFile, what: String) -> (Source, Expected) {
        let at = self.at(f);
        let src = if at.offset == 0 {
            Source::File(at.path)
        } else {
            Source::Range {
                path: at.path,
                offset: at.offset,
            }
        };
        let x = Expected {
            sha256: f.digest.hex().to_string(),
            what,
            from: Some(at.from),
            hint: Some(at.hint.to_string()),
        };
        (src, x)
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
