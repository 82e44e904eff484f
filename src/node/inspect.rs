//! Reads what `prestage node` needs from an image prestage built, without root and without
//! rebuilding: its GPT, and in each XFS partition the manifest `/.prestage/manifest.json`, read
//! through the filesystem's own metadata.
//!
//! A partition holds a payload when its root has `ai-images.txt` and `ocp-images.txt`; the
//! format is `shared` when it has the `blobs/` directory, `store` when it has the `store/`
//! directory, `ztp` when it has `*.tgz` files at the root. The label is the partition's GPT name (the name the node finds it by).

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::compose::diskio::{ReadAt, Window};
use crate::compose::emit::{self, Format as ImageFormat};
use crate::compose::gpt;
use crate::compose::manifest::{self, Manifest};
use crate::compose::xfs::ondisk::Xfs;
use crate::payload::{shared, store, Format, Stage};

/// The payload partition of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its GPT name.
    pub label: String,
    /// The payload format.
    pub format: Format,
    /// Raw or qcow2.
    pub image_format: ImageFormat,
    /// Disk size in bytes.
    pub disk_size: u64,
    /// Every partition of the image's GPT.
    pub partitions: Vec<gpt::Found>,
}

/// The payload format the manifest `m` describes, if it describes a payload.
pub fn payload_format(m: &Manifest) -> Option<Format> {
    let has = |path: &str, kind: &str| m.entries.iter().any(|r| r.path == path && r.kind == kind);
    if !Stage::ALL.iter().all(|s| has(s.list(), "file")) {
        return None;
    }
    if has(shared::BLOBS, "dir") {
        return Some(Format::Shared);
    }
    if has(store::ROOT, "dir") {
        return Some(Format::Store);
    }
    let tgz = m.entries.iter().any(|r| {
        r.kind == "file" && !r.path.contains('/') && r.path.ends_with(".tgz") && r.path.len() > 4
    });
    tgz.then_some(Format::Ztp)
}

/// Reads the manifest of the XFS filesystem on `dev`, or `None` when `dev` holds no XFS.
pub fn read_manifest(dev: &dyn ReadAt) -> Result<Option<Manifest>> {
    let mut magic = [0u8; 4];
    dev.read_at(0, &mut magic)
        .context("reading the partition's first bytes")?;
    if &magic != b"XFSB" {
        return Ok(None);
    }
    let fs = Xfs::open(dev).context("reading the XFS superblock")?;
    let walk = fs.walk().context("walking the directory tree")?;
    let Some(entry) = walk.iter().find(|w| w.path == manifest::PATH.as_bytes()) else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    fs.read_file(entry.ino, &mut |c| {
        bytes.extend_from_slice(c);
        Ok(())
    })
    .with_context(|| format!("reading /{}", manifest::PATH))?;
    Ok(Some(Manifest::parse(&bytes).with_context(|| {
        format!("/{}: not a prestage manifest", manifest::PATH)
    })?))
}

/// Finds the payload partition of `image` (the one labelled `label` when given).
pub fn inspect(image: &Path, label: Option<&str>) -> Result<Found> {
    let (image_format, dev) = emit::open(image)?;
    let (_, parts) = gpt::read(dev.as_ref()).with_context(|| format!("{}", image.display()))?;
    if let Some(l) = label {
        if !parts.iter().any(|p| p.label == l) {
            bail!(
                "{}: no partition labelled `{l}` in the GPT (found: {})",
                image.display(),
                parts
                    .iter()
                    .map(|p| format!("`{}`", p.label))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut found = Vec::new();
    for p in parts.iter().filter(|p| label.is_none_or(|l| p.label == l)) {
        let win = Window::new(dev.as_ref(), p.offset, p.size);
        let m = read_manifest(&win)
            .with_context(|| format!("{}: partition `{}`", image.display(), p.label))?;
        match m.as_ref().and_then(payload_format) {
            Some(format) => found.push((p.label.clone(), format)),
            None if label.is_some() => bail!(
                "{}: partition `{}` holds no prestage payload (no {}, {} and `blobs/` or `*.tgz` \
                 in its manifest)",
                image.display(),
                p.label,
                Stage::Discovery.list(),
                Stage::Install.list()
            ),
            None => {}
        }
    }
    match found.len() {
        1 => {
            let (label, format) = found.remove(0);
            Ok(Found {
                label,
                format,
                image_format,
                disk_size: dev.size(),
                partitions: parts,
            })
        }
        0 => bail!(
            "{}: no partition holds a prestage payload (is it an image `prestage build` wrote?)",
            image.display()
        ),
        _ => bail!(
            "{}: several partitions hold a payload ({}); choose one with --label",
            image.display(),
            found
                .iter()
                .map(|f| format!("`{}`", f.0))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::manifest::Record;

    fn rec(path: &str, kind: &str) -> Record {
        Record {
            path: path.to_string(),
            kind: kind.to_string(),
            mode: "0644".to_string(),
            uid: 0,
            gid: 0,
            ..Record::default()
        }
    }

    fn manifest(entries: &[(&str, &str)]) -> Manifest {
        Manifest {
            format: manifest::FORMAT.to_string(),
            root: None,
            entries: entries.iter().map(|(p, k)| rec(p, k)).collect(),
        }
    }

    #[test]
    fn formats_are_told_apart() {
        let lists = [("ai-images.txt", "file"), ("ocp-images.txt", "file")];
        let mut s = lists.to_vec();
        s.push(("blobs", "dir"));
        assert_eq!(payload_format(&manifest(&s)), Some(Format::Shared));
        let mut z = lists.to_vec();
        z.push(("a_b.tgz", "file"));
        assert_eq!(payload_format(&manifest(&z)), Some(Format::Ztp));
        let mut st = lists.to_vec();
        st.extend([("store", "dir"), ("store/overlay-images", "dir")]);
        assert_eq!(payload_format(&manifest(&st)), Some(Format::Store));
        // A .tgz below the root, or no lists, is no payload.
        let mut n = lists.to_vec();
        n.push(("x/a.tgz", "file"));
        assert_eq!(payload_format(&manifest(&n)), None);
        assert_eq!(
            payload_format(&manifest(&[("blobs", "dir"), ("ai-images.txt", "file")])),
            None
        );
    }
}
