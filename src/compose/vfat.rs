//! FAT partitions (a small config or EFI partition): formatted with mkfs.fat and filled with mtools
//! (`mmd`, `mcopy`) in a sparse partition-sized file, then checked with `fsck.fat -n`.
//!
//! The fatfs crate was not used: its 0.3 release writes long-name entries before `.`/`..` in
//! subdirectories, which `fsck.fat` rejects. FAT has no symlinks, owners or modes; a content set
//! with symlinks is refused.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use crate::compose::content::{Content, Kind, Source};

/// Runs a tool, returning an error with its stderr on failure.
fn run(tool: &str, args: &[String], package: &str) -> Result<()> {
    let out = duct::cmd(tool, args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("{tool} not found: install {package} (apt-get install {package})")
            } else {
                anyhow::anyhow!("running {tool}: {e}")
            }
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let so = String::from_utf8_lossy(&out.stdout);
        bail!(
            "{tool} failed ({}): {}",
            out.status,
            format!("{} {}", err.trim(), so.trim())
                .trim()
                .replace('\n', "; ")
        );
    }
    Ok(())
}

/// Checks that `content` fits a FAT partition of `size` bytes and has nothing FAT cannot hold.
pub fn check(label: &str, size: u64, content: &Content) -> Result<()> {
    let mut need = 1u64 << 20;
    for e in content.entries() {
        match e.kind {
            Kind::File => need += e.size.div_ceil(4096) * 4096 + 64,
            Kind::Dir => need += 4096,
            _ => bail!(
                "partition `{label}` is vfat, which cannot hold the {} `{}`",
                match e.kind {
                    Kind::Symlink(_) => "symlink",
                    Kind::Hardlink(_) => "hard link",
                    _ => "special file",
                },
                e.path
            ),
        }
        if !e.xattrs.is_empty() {
            bail!(
                "partition `{label}` is vfat, which cannot hold the extended attributes of `{}`",
                e.path
            );
        }
    }
    // FATs and reserved sectors take a few percent.
    let usable = size / 100 * 97;
    if need > usable {
        bail!(
            "partition `{label}` is too small: the content needs {} but the {} vfat partition holds about {}",
            crate::compose::layout::human(need),
            crate::compose::layout::human(size),
            crate::compose::layout::human(usable)
        );
    }
    Ok(())
}

/// Formats and fills a FAT filesystem in `work/<label>.vfat`; returns its path.
pub fn build(
    label: &str,
    size: u64,
    sector: u64,
    fs_label: &str,
    uuid: Uuid,
    content: &Content,
    work: &Path,
) -> Result<PathBuf> {
    let img = work.join(format!("{label}.vfat"));
    let f = std::fs::File::create(&img).with_context(|| format!("creating {}", img.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {}", img.display()))?;
    drop(f);
    let vol_id = format!(
        "{:08x}",
        u32::from_le_bytes(uuid.as_bytes()[..4].try_into().unwrap_or([0; 4]))
    );
    let imgs = img.display().to_string();
    run(
        "mkfs.fat",
        &[
            "-S".into(),
            sector.to_string(),
            "-n".into(),
            fs_label.to_uppercase(),
            "-i".into(),
            vol_id,
            imgs.clone(),
        ],
        "dosfstools",
    )
    .with_context(|| format!("partition `{label}`"))?;
    let staging = work.join(format!("{label}.vfat-file"));
    for e in content.entries() {
        let target = format!("::/{}", e.path);
        match &e.kind {
            Kind::Dir => run("mmd", &["-i".into(), imgs.clone(), target], "mtools"),
            Kind::File => {
                let src = match &e.source {
                    Some(Source::File(p)) => p.clone(),
                    Some(s) => {
                        let mut out = std::fs::File::create(&staging)
                            .with_context(|| format!("creating {}", staging.display()))?;
                        s.stream(e.size, &mut |c| {
                            out.write_all(c).context("staging a generated file")
                        })?;
                        staging.clone()
                    }
                    None => bail!("internal error: file {} without a source", e.path),
                };
                run(
                    "mcopy",
                    &[
                        "-i".into(),
                        imgs.clone(),
                        "-o".into(),
                        src.display().to_string(),
                        target,
                    ],
                    "mtools",
                )
            }
            _ => bail!("vfat cannot hold the {} `{}`", e.kind.name(), e.path),
        }
        .with_context(|| format!("partition `{label}`: adding {}", e.path))?;
    }
    let _ = std::fs::remove_file(&staging);
    run("fsck.fat", &["-n".into(), imgs], "dosfstools")
        .with_context(|| format!("partition `{label}`: checking the FAT filesystem"))?;
    Ok(img)
}
