//! The shipped layouts and the demo.
//!
//! Proves: every `layouts/*.toml` loads through `prestage::compose::layout::Layout::load`; the seed layout
//! reproduces the prototype's geometry (the `data` partition starts at sector 119998464 and runs
//! to the last aligned sector of the 120 GiB disk, about 62.8 GiB) and composes into an image
//! where sgdisk finds the partition there and the filesystem checks pass; the 250 GiB layout puts
//! a 250 GiB `data` partition at the very end of a 480 GB disk; and the demo (`prestage compose
//! --layout layouts/demo.toml --content data=fixtures/demo`, run from the repository root as the
//! README does) composes an image that verifies and holds `fixtures/demo` exactly.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use prestage::compose::layout::{Filesystem, Layout};

use common::*;

fn load(name: &str) -> Layout {
    let p = repo_root().join("layouts").join(name);
    Layout::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))
}

/// The last sector of the last whole 1 MiB (2048-sector) unit before the backup GPT of a disk
/// of `sectors` 512-byte sectors (128 entries: 33 sectors at the end are the backup GPT).
fn last_aligned_sector(sectors: u64) -> u64 {
    let last_usable = sectors - 34;
    (last_usable + 1) / 2048 * 2048 - 1
}

#[test]
fn every_layout_loads() {
    let dir = repo_root().join("layouts");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("listing layouts/")
        .map(|e| e.expect("listing layouts/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 3,
        "expected the shipped layouts in {}, found {names:?}",
        dir.display()
    );
    for p in &names {
        let l = Layout::load(p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
        assert!(!l.partitions.is_empty(), "{}: no partitions", p.display());
        let data = l.partitions.iter().find(|p| p.label == "data");
        assert!(data.is_some(), "{}: no `data` partition", p.display());
        for part in &l.partitions {
            assert_eq!(
                part.start_lba * l.sector_size % l.alignment,
                0,
                "{}: {} is not aligned",
                p.display(),
                part.label
            );
            assert!(
                part.end_lba * l.sector_size < l.disk_size,
                "{}: {} is beyond the disk",
                p.display(),
                part.label
            );
        }
        note!(
            "{}: {} disk, {}",
            p.file_name().unwrap_or_default().to_string_lossy(),
            prestage::compose::layout::human(l.disk_size),
            l.partitions
                .iter()
                .map(|q| format!("`{}` sectors {}..={}", q.label, q.start_lba, q.end_lba))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

#[test]
fn sno_seed_has_the_prototype_geometry() {
    let l = load("sno-seed.toml");
    assert_eq!(l.sector_size, 512);
    assert_eq!(l.disk_size, 120 * GIB);
    let p = l.partition("data").expect("data partition");
    assert!(matches!(p.filesystem, Filesystem::Xfs(_)), "data is XFS");
    assert_eq!(
        p.start_lba, 119_998_464,
        "data starts where sgdisk put the prototype's partition"
    );
    assert_eq!((p.end_lba + 1) % 2048, 0, "data ends on a 1 MiB boundary");
    assert_eq!(
        p.end_lba,
        last_aligned_sector(l.disk_size / 512),
        "data runs to the last aligned sector"
    );
    let gib = p.size(512) as f64 / GIB as f64;
    assert!(
        (gib - 62.78).abs() < 0.01,
        "data is {gib:.3} GiB, expected about 62.8"
    );
    note!(
        "sno-seed: data sectors {}..={} ({gib:.2} GiB)",
        p.start_lba,
        p.end_lba
    );
}

#[test]
fn sno_250g_puts_data_at_the_end_of_a_480gb_disk() {
    let l = load("sno-250g.toml");
    assert_eq!(l.disk_size, 480_000_000_000);
    assert_eq!(l.sector_size, 512);
    let p = l.partition("data").expect("data partition");
    assert!(matches!(p.filesystem, Filesystem::Xfs(_)), "data is XFS");
    assert_eq!(p.size(512), 250 * GIB, "data is exactly 250 GiB");
    assert_eq!(
        p.end_lba,
        last_aligned_sector(l.disk_size / 512),
        "data ends at the last usable aligned sector"
    );
    assert_eq!(p.start_lba % 2048, 0);
    let free_gib = (p.start_lba * 512) as f64 / GIB as f64;
    assert!(
        free_gib > 120e9 / GIB as f64,
        "only {free_gib:.1} GiB left before data for OpenShift"
    );
    note!(
        "sno-250g: data sectors {}..={}, {free_gib:.1} GiB before it",
        p.start_lba,
        p.end_lba
    );
}

/// Runs compose from the repository root with the README's relative paths.
fn compose_from_root(layout: &str, content: &str, out: &Path) -> Run {
    let mut c = compose_cmd(Path::new(layout), &[("data", Path::new(content))], out);
    c.current_dir(repo_root());
    let r = run(&mut c).success();
    note!("compose: {}", r.stdout.trim());
    r
}

#[test]
fn demo_composes_and_verifies() {
    let dir = scratch("demo");
    let fixtures = repo_root().join("fixtures/demo");
    for name in ["demo.raw", "demo.qcow2"] {
        let out = dir.path().join(name);
        compose_from_root("layouts/demo.toml", "fixtures/demo", &out);
        verify_ok(&out);
    }
    let raw = dir.path().join("demo.raw");
    let part = check_xfs_image(
        &raw,
        &repo_root().join("layouts/demo.toml"),
        "data",
        &fixtures,
        |_| {},
    );
    let sgdisk = run(Command::new(require("sgdisk", "gdisk"))
        .args(["-i", &part.number.to_string()])
        .arg(&raw))
    .success();
    assert!(
        sgdisk.stdout.contains("Partition name: 'data'"),
        "sgdisk -i: {}",
        sgdisk.stdout
    );
    assert!(
        sgdisk
            .stdout
            .contains("Partition unique GUID: 6B0C1D57-52F8-4A0B-9B3C-2F1C0A1D7E02"),
        "the demo layout's partition GUID: {}",
        sgdisk.stdout
    );
}

#[test]
fn sno_seed_composes() {
    let dir = scratch("seed");
    let out = dir.path().join("seed.raw");
    compose_from_root("layouts/sno-seed.toml", "fixtures/demo", &out);
    assert_eq!(
        std::fs::metadata(&out).expect("stat").len(),
        120 * GIB,
        "the image is the whole 120 GiB disk"
    );
    let part = check_xfs_image(
        &out,
        &repo_root().join("layouts/sno-seed.toml"),
        "data",
        &repo_root().join("fixtures/demo"),
        |_| {},
    );
    assert_eq!(
        part.offset,
        119_998_464 * 512,
        "sgdisk finds data at sector 119998464"
    );
}
