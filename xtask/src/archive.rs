//! An oc-mirror v2 archive set written from an OCI layout, for `cargo xtask bench build --scale
//! release`: the shape `oc-mirror -c isc.yaml file://DIR --v2` leaves on the connected side
//! (read from openshift/oc-mirror at commit `855b64a3c9c03634bcab6210b641274772050cda`,
//! `internal/pkg/archive/archive.go` `BuildArchive`): `mirror_000001.tar`, … holding the
//! distribution storage tree's `repositories/` links first, then every blob (manifests
//! included) as `docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data`, a new tar when the next
//! file would take the current one past the segment size (a blob never split), and the
//! ImageSetConfiguration as `isc_<time>` last. Names longer than a tar header holds go in GNU
//! long-name entries (Go's `archive/tar`, which oc-mirror uses, writes PAX records there;
//! prestage reads both). The images are additional images given by digest (cached
//! under their path without the registry host, tagged `sha256-<hex>`).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// The blobs and manifests an image needs, by digest (`sha256:<hex>`), from the layout.
fn digests_of(layout: &Path, digest: &str, out: &mut BTreeSet<String>) -> Result<()> {
    if !out.insert(digest.to_string()) {
        return Ok(());
    }
    let path = layout.join("blobs/sha256").join(&digest[7..]);
    let m: Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{}: not a manifest", path.display()))?;
    if let Some(list) = m["manifests"].as_array() {
        for i in list {
            if let Some(d) = i["digest"].as_str() {
                digests_of(layout, d, out)?;
            }
        }
    }
    for d in m["config"]["digest"].as_str().into_iter().chain(
        m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["digest"].as_str()),
    ) {
        out.insert(d.to_string());
    }
    Ok(())
}

struct Writer {
    dir: PathBuf,
    segment: u64,
    n: usize,
    used: u64,
    tar: Option<tar::Builder<File>>,
}

impl Writer {
    fn tar(&mut self, len: u64) -> Result<&mut tar::Builder<File>> {
        if self.tar.is_none() || (self.used > 0 && self.used + len > self.segment) {
            if let Some(t) = self.tar.take() {
                t.into_inner().context("finishing a tar")?;
            }
            self.n += 1;
            let p = self.dir.join(format!("mirror_{:06}.tar", self.n));
            self.tar = Some(tar::Builder::new(
                File::create(&p).with_context(|| format!("creating {}", p.display()))?,
            ));
            self.used = 0;
        }
        self.used += len;
        self.tar.as_mut().context("no tar")
    }

    fn add(&mut self, name: &str, len: u64, data: impl std::io::Read) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        self.tar(len)?
            .append_data(&mut h, name, data)
            .with_context(|| format!("writing member {name}"))
    }
}

/// Writes the archive set of the digest-pinned `images` (`repo@sha256:…`, all in `layout`) into
/// `dir`, in tars of at most `segment` bytes of file data.
pub fn write(layout: &Path, images: &[String], dir: &Path, segment: u64) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut w = Writer {
        dir: dir.to_path_buf(),
        segment,
        n: 0,
        used: 0,
        tar: None,
    };
    let storage = "docker/registry/v2";
    let mut all = BTreeSet::new();
    for image in images {
        let (name, digest) = image.split_once('@').context("an image without a digest")?;
        let repo = name.split_once('/').map_or(name, |(_, r)| r);
        let mut mine = BTreeSet::new();
        digests_of(layout, digest, &mut mine)?;
        let tag = format!("sha256-{}", &digest[7..]);
        for (member, text) in [
            (
                format!("{storage}/repositories/{repo}/_manifests/tags/{tag}/current/link"),
                digest.to_string(),
            ),
            (
                format!(
                    "{storage}/repositories/{repo}/_manifests/tags/{tag}/index/sha256/{}/link",
                    &digest[7..]
                ),
                digest.to_string(),
            ),
        ] {
            w.add(&member, text.len() as u64, text.as_bytes())?;
        }
        for d in &mine {
            let member = format!(
                "{storage}/repositories/{repo}/_layers/sha256/{}/link",
                &d[7..]
            );
            w.add(&member, d.len() as u64, d.as_bytes())?;
        }
        all.extend(mine);
    }
    for d in &all {
        let path = layout.join("blobs/sha256").join(&d[7..]);
        let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let len = f.metadata()?.len();
        let member = format!("{storage}/blobs/sha256/{}/{}/data", &d[7..9], &d[7..]);
        w.add(&member, len, f)?;
    }
    let mut isc = String::from(
        "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\nmirror:\n  additionalImages:\n",
    );
    for i in images {
        isc.push_str(&format!("  - name: {i}\n"));
    }
    w.add("isc_2026-12-05T00:00:00Z", isc.len() as u64, isc.as_bytes())?;
    if let Some(t) = w.tar.take() {
        t.into_inner().context("finishing a tar")?;
    }
    Ok(())
}
