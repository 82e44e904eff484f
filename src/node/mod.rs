//! The node stage: what runs on the server and what configures it to run.
//!
//! Input: the payload format, the partition label and the output image. Output: the loader
//! scripts that go onto the partition ([`loader`]), and the files written beside the image in
//! `OUT.node/` ([`NodeSet::files`]):
//!
//! | file | what |
//! |---|---|
//! | `extract-ai.sh`, `extract-ocp.sh` | the loaders (also on the partition, and inside the overrides) |
//! | `precache-images.service`, `precache-ocp-images.service` | their units ([`ignition`]) |
//! | `discovery.ign`, `install.ign` | the Ignition 3.2.0 overrides of the two stages |
//! | `discovery.patch`, `pointer.patch`, `installer-args.json`, `assisted.sh` | for Assisted Service's REST API ([`assisted`]) |
//! | `clusterinstance.yaml`, `siteconfig.yaml` | the same for GitOps ZTP: a ClusterInstance, a SiteConfig ([`gitops`]) |
//! | `kcli-profile.yml`, `libvirt.sh` | qcow2 images only: the image as a lab VM's disk ([`lab`]) |
//! | `README.txt`, `.prestage-node` | what the directory holds; the marker that lets prestage replace it |
//!
//! `prestage node IMAGE` regenerates the directory for an image already built ([`inspect`]
//! reads its format and label back from the image); `prestage node IMAGE --into FILE` merges the
//! GitOps settings into a user's ClusterInstance or SiteConfig instead ([`gitops::merge_into`],
//! with [`merge`]'s rules and [`yamledit`]'s in-place edits). Cluster manifests a payload needs
//! are handed over in [`manifests`].

pub mod assisted;
pub mod cli;
pub mod gitops;
pub mod ignition;
pub mod inspect;
pub mod json;
pub mod lab;
pub mod loader;
pub mod manifests;
pub mod merge;
pub mod yamledit;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::build::NodeFiles;
use crate::compose::emit::Format as ImageFormat;
use crate::payload::{ExtraFile, Format, Stage};

/// Marks a directory prestage wrote beside an image, so a later run may replace it.
pub const MARKER: &str = ".prestage-node";

/// The image the node files belong to.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Its path.
    pub path: PathBuf,
    /// Raw or qcow2.
    pub format: ImageFormat,
    /// Disk size in bytes.
    pub disk_size: u64,
}

/// The node files of one image.
#[derive(Debug, Clone)]
pub struct NodeSet {
    /// The data partition's label.
    pub label: String,
    /// The image they belong to.
    pub image: Option<ImageInfo>,
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

    /// The same, for the image at `path` of `disk_size` bytes.
    pub fn for_image(mut self, path: &Path, format: ImageFormat, disk_size: u64) -> NodeSet {
        self.image = Some(ImageInfo {
            path: path.to_path_buf(),
            format,
            disk_size,
        });
        self
    }

    /// The loaders for `format`, at their paths on the partition.
    pub fn partition_files_for(&self, format: Format) -> Result<Vec<ExtraFile>> {
        let mut v = Vec::new();
        if format == Format::Store {
            // The store is used in place: no loader on the partition.
            return Ok(v);
        }
        for stage in Stage::ALL {
            v.push(ExtraFile {
                path: loader::partition_path(format, stage),
                mode: 0o755,
                bytes: loader::script(format, stage, &self.label)?.into_bytes(),
            });
        }
        Ok(v)
    }

    /// The Ignition override of `stage`.
    pub fn ignition_config(&self, format: Format, stage: Stage) -> Result<ignition::Config> {
        let script = loader::script(format, stage, &self.label)?;
        Ok(ignition::config(
            stage,
            format,
            &self.label,
            script.as_bytes(),
        ))
    }

    /// The Ignition override of `stage`, as the compact JSON string the API bodies carry.
    pub fn ignition(&self, format: Format, stage: Stage) -> Result<String> {
        serde_json::to_string(&self.ignition_config(format, stage)?)
            .context("serializing an Ignition override")
    }

    /// What GitOps ZTP files carry for `format`; `partitions`: the image's partition table,
    /// when known.
    pub fn gitops(
        &self,
        format: Format,
        partitions: Option<Vec<crate::compose::gpt::Found>>,
    ) -> Result<gitops::Settings> {
        Ok(gitops::Settings {
            label: self.label.clone(),
            discovery: self.ignition_config(format, Stage::Discovery)?,
            install: self.ignition_config(format, Stage::Install)?,
            manifests: manifests::for_format(format, &self.label),
            partitions,
        })
    }

    /// The files of `OUT.node/`: (name, mode, bytes).
    pub fn files(&self, format: Format) -> Result<Vec<(String, u32, Vec<u8>)>> {
        let what = match &self.image {
            Some(i) => format!(
                "{} ({} payload on the partition labelled `{}`)",
                i.path.file_name().map_or_else(
                    || i.path.display().to_string(),
                    |n| n.to_string_lossy().to_string()
                ),
                format.name(),
                self.label
            ),
            None => format!(
                "the {} payload on the partition labelled `{}`",
                format.name(),
                self.label
            ),
        };
        let image_arg = self.image.as_ref().map_or_else(
            || "IMAGE".to_string(),
            |i| {
                let n = i
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                if !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
                {
                    n
                } else {
                    "IMAGE".to_string()
                }
            },
        );
        let settings = self.gitops(format, None)?;
        let mut v = vec![(MARKER.to_string(), 0o644, b"prestage node files\n".to_vec())];
        for stage in Stage::ALL {
            v.push((
                loader::file_name(stage),
                0o755,
                loader::script(format, stage, &self.label)?.into_bytes(),
            ));
            v.push((
                ignition::unit_name(stage).to_string(),
                0o644,
                ignition::unit(stage, format, &self.label).into_bytes(),
            ));
        }
        let discovery = self.ignition(format, Stage::Discovery)?;
        let install = self.ignition(format, Stage::Install)?;
        v.push((
            "discovery.ign".to_string(),
            0o644,
            format!("{discovery}\n").into_bytes(),
        ));
        v.push((
            "install.ign".to_string(),
            0o644,
            format!("{install}\n").into_bytes(),
        ));
        for (name, bytes) in assisted::bodies(&discovery, &install, &self.label)? {
            v.push((name, 0o644, bytes));
        }
        v.push((
            "assisted.sh".to_string(),
            0o755,
            assisted::script(&self.label).into_bytes(),
        ));
        v.push((
            "clusterinstance.yaml".to_string(),
            0o644,
            gitops::clusterinstance(&settings, &what, &image_arg)?.into_bytes(),
        ));
        v.push((
            "siteconfig.yaml".to_string(),
            0o644,
            gitops::siteconfig(&settings, &what, &image_arg)?.into_bytes(),
        ));
        let mut lab = false;
        if let Some(i) = self
            .image
            .as_ref()
            .filter(|i| i.format == ImageFormat::Qcow2)
        {
            let abs = std::path::absolute(&i.path)
                .with_context(|| format!("{}: making the path absolute", i.path.display()))?;
            v.push((
                "kcli-profile.yml".to_string(),
                0o644,
                lab::kcli_profile(&abs, i.disk_size)?.into_bytes(),
            ));
            v.push((
                "libvirt.sh".to_string(),
                0o755,
                lab::libvirt_script(&abs).into_bytes(),
            ));
            lab = true;
        }
        v.push((
            "README.txt".to_string(),
            0o644,
            readme(&what, lab).into_bytes(),
        ));
        Ok(v)
    }

    /// Writes [`NodeSet::files`] as the directory `dir` (see [`write_dir`]).
    pub fn write(&self, format: Format, dir: &Path) -> Result<()> {
        if format == Format::Store {
            // No node files for the store payload in this version: only the marker.
            return write_dir(
                dir,
                &[(MARKER.to_string(), 0o644, b"prestage node files\n".to_vec())],
            );
        }
        write_dir(dir, &self.files(format)?)
    }
}

/// `prestage node`: writes the node files of the image prestage built at `image` into `dir`
/// (default `IMAGE.node`), its payload format and label read from the image (the partition
/// `label` when given). Holds the image's output lock, so it never races a build of it.
pub fn regenerate(
    image: &Path,
    dir: Option<&Path>,
    label: Option<&str>,
) -> Result<(inspect::Found, PathBuf)> {
    let lock = crate::compose::output::OutputLock::acquire(image)?;
    let found = inspect::inspect(image, label)?;
    let dir = dir.map_or_else(|| crate::build::beside(image, ".node"), Path::to_path_buf);
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The same directory however it is spelled (`-o /abs/x.node` beside a relative image).
    let same = |a: &Path, b: &Path| {
        a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
    };
    if let Some(n) = dir.file_name().filter(|_| same(parent, lock.dir())) {
        lock.sweep(&n.to_string_lossy())?;
    }
    NodeSet::new(&found.label)?
        .for_image(image, found.image_format, found.disk_size)
        .write(found.format, &dir)?;
    Ok((found, dir))
}

/// `prestage node IMAGE --into FILE`: merges the GitOps ZTP settings of the image prestage built
/// at `image` into the user's ClusterInstance or SiteConfig `file` (see [`gitops::merge_into`]).
/// It only reads the image, through one open file (a build renames a whole, verified image into
/// place), so it takes no lock: several merges from one image may run at once.
pub fn into(
    image: &Path,
    file: &Path,
    label: Option<&str>,
) -> Result<(inspect::Found, gitops::Summary)> {
    let found = inspect::inspect(image, label)?;
    let settings =
        NodeSet::new(&found.label)?.gitops(found.format, Some(found.partitions.clone()))?;
    let summary = gitops::merge_into(file, &settings)?;
    Ok((found, summary))
}

/// `README.txt` of `OUT.node/`.
fn readme(what: &str, lab: bool) -> String {
    let mut rows = vec![
        ("extract-ai.sh, extract-ocp.sh", "the loaders of the discovery and install stages (also on the partition and inside the .ign files)"),
        ("precache-images.service", "runs extract-ai.sh before agent.service (discovery ISO)"),
        ("precache-ocp-images.service", "runs extract-ocp.sh before machine-config-daemon-pull.service (installed RHCOS)"),
        ("discovery.ign, install.ign", "the Ignition 3.2.0 overrides installing each loader and unit"),
        ("discovery.patch", "body of PATCH /api/assisted-install/v2/infra-envs/{infra_env_id}"),
        ("pointer.patch", "body of PATCH .../infra-envs/{infra_env_id}/hosts/{host_id}/ignition"),
        ("installer-args.json", "coreos-installer arguments that keep the partition"),
        ("assisted.sh URL INFRA_ENV [HOST]", "merges the three into what Assisted Service holds (REST API; needs curl and jq; token in ASSISTED_TOKEN)"),
        ("clusterinstance.yaml", "the same three for GitOps ZTP with the SiteConfig operator (ClusterInstance, RHACM 2.12+)"),
        ("siteconfig.yaml", "the same three for GitOps ZTP with the old SiteConfig generator (ztp-site-generate 4.20 and earlier)"),
        ("prestage node IMAGE --into FILE", "merges them into your ClusterInstance or SiteConfig, keeping its own overrides and installerArgs"),
    ];
    if lab {
        rows.push((
            "kcli-profile.yml",
            "a kcli profile with the image as the VM's disk",
        ));
        rows.push((
            "libvirt.sh new|attach",
            "virt-install / virsh attach-disk with the image as the VM's disk",
        ));
    }
    let mut s = format!("Node files of {what}, written by prestage.\n\n");
    for (name, doc) in rows {
        s.push_str(&format!("{name:<34} {doc}\n"));
    }
    s
}

impl NodeFiles for NodeSet {
    fn partition_files(&self, format: Format) -> Result<Vec<ExtraFile>> {
        self.partition_files_for(format)
    }

    fn write_beside(&self, format: Format, dir: &Path) -> Result<()> {
        self.write(format, dir)
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
    if let Err(e) = std::fs::rename(&tmp_path, dir) {
        // The old files go back in place; the new ones are removed.
        if let Some(old) = &old {
            let _ = std::fs::rename(old, dir);
        }
        let _ = std::fs::remove_dir_all(&tmp_path);
        return Err(e).with_context(|| format!("renaming into {}", dir.display()));
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("removing the old {}", old.display()))?;
    }
    Ok(())
}
