//! `save-partlabel-check INSTALLER_ARGS_JSON DISK OS_IMAGE`: writes OS_IMAGE over the start of
//! the block device DISK the way `coreos-installer install` does, keeping the partitions that the
//! installer arguments (a JSON array such as `["--save-partlabel","data"]`) ask it to keep.
//!
//! Everything that decides what is kept is coreos-installer's own code (libcoreinst): the
//! arguments are parsed by its `InstallConfig`, the partitions are saved by
//! `SavedPartitions::new_from_disk`, and the image is written by `image_copy_default`, which
//! writes the saved partitions' table first, then the image, then merges the saved partitions
//! into the image's GPT. What `install` does besides (the exclusive-access check, which needs the
//! kernel to expose the disk's partitions, the Ignition and network steps) is left out.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek};
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Parser;
use libcoreinst::blockdev::SavedPartitions;
use libcoreinst::cmdline::{InstallConfig, PartitionFilter};
use libcoreinst::download::image_copy_default;

fn run(args_json: &str, disk: &str, image: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(args_json).with_context(|| format!("reading {args_json}"))?;
    let args: Vec<String> = serde_json::from_str(&text)
        .with_context(|| format!("{args_json}: not a JSON array of strings"))?;
    let config = InstallConfig::try_parse_from(
        std::iter::once("install".to_string())
            .chain(args.iter().cloned())
            .chain(std::iter::once(disk.to_string())),
    )
    .with_context(|| format!("{args_json}: coreos-installer refuses {args:?}"))?;
    if config.save_partlabel.is_empty() {
        bail!("{args_json}: {args:?} saves no partition label");
    }
    let mut filters = Vec::new();
    for l in &config.save_partlabel {
        filters.push(PartitionFilter::Label(
            glob::Pattern::new(l).with_context(|| format!("label glob {l:?}"))?,
        ));
    }

    let mut dest = OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {disk}"))?;
    let saved = SavedPartitions::new_from_disk(&mut dest, &filters)
        .with_context(|| format!("saving partitions from {disk}"))?;
    if !saved.is_saved() {
        bail!("{disk}: no partition matches {:?}", config.save_partlabel);
    }
    let mut src = File::open(image).with_context(|| format!("opening {image}"))?;
    let len = src.metadata().context("image size")?.len();
    // `install` stops reading the image where the first saved partition starts.
    if let Some((limit, what)) = saved.get_offset()? {
        if len > limit {
            bail!("{image} ({len} bytes) would overwrite {what} at byte {limit}");
        }
        eprintln!("keeping {what} at byte {limit}");
    }
    let mut first_mb = vec![0u8; 1024 * 1024];
    src.read_exact(&mut first_mb)
        .context("reading the first MiB of the image")?;
    dest.rewind().context("seeking the disk")?;
    image_copy_default(
        &first_mb,
        &mut src,
        &mut dest,
        Path::new(disk),
        Some(&saved),
    )
    .context("writing the image")?;
    dest.sync_all().context("syncing the disk")?;
    Ok(())
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let r = match a.as_slice() {
        [args, disk, image] => run(args, disk, image),
        _ => Err(anyhow::anyhow!(
            "usage: save-partlabel-check INSTALLER_ARGS_JSON DISK OS_IMAGE"
        )),
    };
    if let Err(e) = r {
        eprintln!("save-partlabel-check: {e:#}");
        std::process::exit(1);
    }
}
