//! The node stage: what runs on the server and what configures it to run.
//!
//! Input: the payload format, the partition label and the output image. Output: the loader
//! scripts that go onto the partition ([`loader`]), and the files written beside the image in
//! `OUT.node/` (the loaders again, for inspection and for Ignition overrides that embed them).

pub mod loader;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::build::NodeFiles;
use crate::compose::emit::Format as ImageFormat;
use crate::payload::{ExtraFile, Format, Stage};

/// Marks a directory prestage wrote beside an image, so a later run may replace it.
pub const MARKER: &str = ".prestage-node";

/// The node files of one image.
#[derive(Debug, Clone)]
pub struct NodeSet {
    /// The data partition's label.
    pub label: String,
    /// The image they belong to.
    pub image: Option<(PathBuf, ImageFormat)>,
}

impl NodeSet {
    /// Node files for the partition `label`.
    pub fn new(label: &str) -> Result<NodeSet> {
        loader::check_label(label)?;
        Ok(NodeSet {
            label: label.to_string(),
            image: None,
        })
    }

    /// The same, for the image at `path`.
    pub fn for_image(mut self, path: &Path, format: ImageFormat) -> NodeSet {
        self.image = Some((path.to_path_buf(), format));
        self
    }

    /// The loaders for `format`, at their paths on the partition.
    pub fn partition_files_for(&self, format: Format) -> Result<Vec<ExtraFile>> {
        let mut v = Vec::new();
        for stage in Stage::ALL {
            v.push(ExtraFile {
                path: loader::partition_path(format, stage),
                mode: 0o755,
                bytes: loader::script(format, stage, &self.label)?.into_bytes(),
            });
        }
        Ok(v)
    }

    /// The files of `OUT.node/`, by name.
    pub fn files(&self, format: Format) -> Result<Vec<(String, u32, Vec<u8>)>> {
        let mut v = vec![(MARKER.to_string(), 0o644, b"prestage node files\n".to_vec())];
        for stage in Stage::ALL {
            v.push((
                loader::file_name(stage),
                0o755,
                loader::script(format, stage, &self.label)?.into_bytes(),
            ));
        }
        Ok(v)
    }
}

impl NodeFiles for NodeSet {
    fn partition_files(&self, format: Format) -> Result<Vec<ExtraFile>> {
        self.partition_files_for(format)
    }

    fn write_beside(&self, format: Format, dir: &Path) -> Result<()> {
        write_dir(dir, &self.files(format)?)
    }
}

/// Writes `files` as the directory `dir`: into a temporary directory beside it, then renamed
/// into place. A directory already there is replaced only when prestage wrote it (it holds
/// [`MARKER`]).
pub fn write_dir(dir: &Path, files: &[(String, u32, Vec<u8>)]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dir
        .file_name()
        .with_context(|| format!("{}: not a directory path", dir.display()))?
        .to_string_lossy()
        .to_string();
    if dir.exists() && !dir.join(MARKER).is_file() {
        bail!(
            "{}: exists and was not written by prestage; move it away",
            dir.display()
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    crate::cleanup::register(tmp.path());
    for (f, mode, bytes) in files {
        let p = tmp.path().join(f);
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .with_context(|| format!("setting the mode of {}", p.display()))?;
    }
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
    let old = if dir.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old)
            .with_context(|| format!("moving the old {} aside", dir.display()))?;
        Some(old)
    } else {
        None
    };
    let tmp_path = tmp.keep();
    crate::cleanup::forget(&tmp_path);
    std::fs::rename(&tmp_path, dir).with_context(|| format!("renaming into {}", dir.display()))?;
    if let Some(old) = old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("removing the old {}", old.display()))?;
    }
    Ok(())
}
