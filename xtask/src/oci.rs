//! A small OCI image layout writer for the demo fixtures and the benchmarks: blobs by digest,
//! layers (gzip'd tars), OCI and Docker v2s2 manifests, OCI indexes and Docker manifest lists,
//! and `index.json` entries named by `org.opencontainers.image.ref.name`. Everything it writes
//! is deterministic (tar and gzip times are zero), so the same calls give the same bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// A blob written to the layout.
#[derive(Clone, Debug)]
pub struct Desc {
    /// Media type.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
}

impl Desc {
    /// The descriptor as JSON.
    pub fn json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// A layer: its blob and the digest of its uncompressed tar.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The compressed blob.
    pub blob: Desc,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
}

/// An OCI image layout being written.
pub struct Layout {
    dir: PathBuf,
    index: Vec<Value>,
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Layout {
    /// Creates (or reuses) a layout directory.
    pub fn create(dir: &Path) -> Result<Layout> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))
            .with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(
            dir.join("oci-layout"),
            "{\"imageLayoutVersion\": \"1.0.0\"}\n",
        )
        .with_context(|| format!("writing {}/oci-layout", dir.display()))?;
        Ok(Layout {
            dir: dir.to_path_buf(),
            index: Vec::new(),
        })
    }

    /// Writes a blob.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Result<Desc> {
        let digest = sha(bytes);
        let path = self.dir.join("blobs/sha256").join(&digest[7..]);
        if !path.exists() {
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(Desc {
            media_type: media_type.to_string(),
            digest,
            size: bytes.len() as u64,
        })
    }

    /// A layer holding `files` (path, bytes), gzip'd at `level` (0: stored blocks).
    pub fn layer(&self, docker: bool, files: &[(&str, &[u8])], level: u32) -> Result<Layer> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, path, *data)
                .with_context(|| format!("tar member {path}"))?;
        }
        let raw = tar.into_inner().context("finishing a layer tar")?;
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), flate2::Compression::new(level));
        gz.write_all(&raw).context("compressing a layer")?;
        let bytes = gz.finish().context("compressing a layer")?;
        let mt = if docker {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        };
        Ok(Layer {
            blob: self.blob(mt, &bytes)?,
            diff_id: sha(&raw),
        })
    }

    /// An image manifest (Docker v2s2 or OCI) for `arch` with these layers and labels.
    pub fn image(
        &self,
        docker: bool,
        arch: &str,
        layers: &[&Layer],
        labels: Value,
    ) -> Result<Desc> {
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        });
        let (mt, cmt) = if docker {
            (
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.container.image.v1+json",
            )
        } else {
            (
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.config.v1+json",
            )
        };
        let c = self.blob(cmt, &serde_json::to_vec(&config)?)?;
        let m = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": c.json(),
            "layers": layers.iter().map(|l| l.blob.json()).collect::<Vec<_>>(),
        });
        // Pretty-printed as registries often serve them: the digest is of these exact bytes.
        self.blob(mt, &serde_json::to_vec_pretty(&m)?)
    }

    /// A list (Docker manifest list or OCI index) of image manifests with their architectures.
    pub fn list(&self, docker: bool, instances: &[(&Desc, &str)]) -> Result<Desc> {
        let mt = if docker {
            "application/vnd.docker.distribution.manifest.list.v2+json"
        } else {
            "application/vnd.oci.image.index.v1+json"
        };
        let l = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "manifests": instances.iter().map(|(d, arch)| {
                let mut v = d.json();
                v["platform"] = json!({"architecture": arch, "os": "linux"});
                v
            }).collect::<Vec<_>>(),
        });
        self.blob(mt, &serde_json::to_vec_pretty(&l)?)
    }

    /// A release image (Docker v2s2) for `version`: `base` and a layer holding
    /// `release-manifests/image-references` (an ImageStream of `tags`) and `release-metadata`,
    /// named `version` in `index.json`.
    pub fn release(&mut self, version: &str, tags: Vec<Value>, base: &Layer) -> Result<Desc> {
        let refs = serde_json::to_vec_pretty(&json!({
            "kind": "ImageStream",
            "apiVersion": "image.openshift.io/v1",
            "metadata": {"name": version},
            "spec": {"tags": tags},
        }))?;
        let meta = serde_json::to_vec_pretty(&json!({
            "kind": "cincinnati-metadata-v0",
            "version": version,
            "metadata": {},
        }))?;
        let rl = self.layer(
            true,
            &[
                ("release-manifests/image-references", &refs),
                ("release-manifests/release-metadata", &meta),
            ],
            6,
        )?;
        let release = self.image(
            true,
            "amd64",
            &[base, &rl],
            json!({"io.openshift.release": version}),
        )?;
        self.tag(&release, version);
        Ok(release)
    }

    /// Names a manifest in `index.json`.
    pub fn tag(&mut self, desc: &Desc, name: &str) {
        let mut v = desc.json();
        v["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        self.index.push(v);
    }

    /// Writes `index.json`.
    pub fn finish(self) -> Result<()> {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": self.index,
        });
        let p = self.dir.join("index.json");
        std::fs::write(&p, serde_json::to_vec_pretty(&index)?)
            .with_context(|| format!("writing {}", p.display()))
    }
}

/// Writes to `inner`, hashing what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Layout {
    /// A layer of one file at `path` holding `len` bytes from `fill` (called with buffers whose
    /// length is a multiple of 8), gzip'd with stored blocks, streamed to disk so that layers of
    /// hundreds of MiB take no memory.
    pub fn streamed_layer(
        &self,
        docker: bool,
        path: &str,
        len: u64,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Layer> {
        let tmp = self.dir.join("blobs/sha256/.layer.tmp");
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let blob = Hashing {
            inner: std::io::BufWriter::with_capacity(1 << 20, file),
            hash: Sha256::new(),
        };
        let gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(blob, flate2::Compression::none());
        let raw = Hashing {
            inner: gz,
            hash: Sha256::new(),
        };
        let mut tar = tar::Builder::new(raw);
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path(path)
            .with_context(|| format!("tar member {path}"))?;
        h.set_cksum();
        struct Gen<'a> {
            left: u64,
            buf: Vec<u8>,
            at: usize,
            fill: &'a mut dyn FnMut(&mut [u8]),
        }
        impl std::io::Read for Gen<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                if self.left == 0 {
                    return Ok(0);
                }
                if self.at == self.buf.len() {
                    (self.fill)(&mut self.buf);
                    self.at = 0;
                }
                let n = out
                    .len()
                    .min(self.buf.len() - self.at)
                    .min(self.left as usize);
                out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
                self.at += n;
                self.left -= n as u64;
                Ok(n)
            }
        }
        let buf = vec![0u8; 1 << 20];
        let at = buf.len();
        tar.append(
            &h,
            Gen {
                left: len,
                buf,
                at,
                fill,
            },
        )
        .with_context(|| format!("tar member {path}"))?;
        let raw = tar.into_inner().context("finishing a layer tar")?;
        let diff_id = format!("sha256:{}", hex::encode(raw.hash.finalize()));
        let blob = raw.inner.finish().context("finishing a layer's gzip")?;
        let digest = format!("sha256:{}", hex::encode(blob.hash.finalize()));
        let file = blob
            .inner
            .into_inner()
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
        let size = file.metadata()?.len();
        drop(file);
        std::fs::rename(&tmp, self.dir.join("blobs/sha256").join(&digest[7..]))
            .with_context(|| format!("renaming {}", tmp.display()))?;
        let media_type = if docker {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        };
        Ok(Layer {
            blob: Desc {
                media_type: media_type.to_string(),
                digest,
                size,
            },
            diff_id,
        })
    }
}
