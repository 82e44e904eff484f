//! FAT partitions beside XFS: a layout with a 64 MiB `vfat` partition (`config`) first and an
//! XFS `data` partition after it, each given its own content directory.
//!
//! Proves: `fsck.fat -n` finds the extracted FAT filesystem clean, it carries the filesystem
//! label, mtools lists exactly the source's directories and files (nested `a/b/c/file.txt`, long
//! and mixed-case names) and reads every file back byte for byte; the XFS partition passes the
//! full XFS checks (xfs_repair, GRUB, kernel mount as root, `prestage verify`); and a vfat content
//! with a symlink is refused with a one-line error naming the symlink, leaving no output and no
//! temporary files.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const LAYOUT: &str = r#"
[disk]
size = "400MiB"
sector_size = 512

[[partition]]
label = "config"
type = "efi"
size = "64MiB"
filesystem = "vfat"
fs_label = "cfg-1"

[[partition]]
label = "data"
filesystem = "xfs"
"#;

fn config_tree(root: &Path) -> Vec<String> {
    let files = [
        ("a/b/c/file.txt", 13usize),
        ("a/b/other.cfg", 2000),
        ("a/readme", 0),
        ("Mixed Case Name.yaml", 700),
        ("install-config.yaml", 5000),
        ("manifests/99-extra.yaml", 100_000),
        ("manifests/nested/deeper/blob.bin", 3 * MIB as usize + 17),
        ("UPPER.TXT", 9),
    ];
    for (i, (p, len)) in files.iter().enumerate() {
        put_file(&root.join(p), &small_bytes(100 + i as u64, *len), 0o644);
    }
    put_dir(&root.join("empty-dir"), 0o755);
    files.iter().map(|(p, _)| p.to_string()).collect()
}

/// Every path under `root` as mtools prints it (`::/dir/`, `::/dir/file`).
fn local_listing(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).expect("listing") {
            let e = e.expect("listing");
            let p = rel.join(e.file_name());
            if e.file_type().expect("file type").is_dir() {
                out.insert(format!("::/{}/", p.display()));
                stack.push(p);
            } else {
                out.insert(format!("::/{}", p.display()));
            }
        }
    }
    out
}

fn mtools(tool: &str) -> Command {
    let mut c = Command::new(require(tool, "mtools"));
    c.env("MTOOLS_SKIP_CHECK", "1");
    c
}

#[test]
fn vfat_and_xfs_partitions_hold_their_content() {
    let dir = scratch("vfat");
    let cfg = dir.path().join("config");
    let data = dir.path().join("data");
    let files = config_tree(&cfg);
    put_file(
        &data.join("images/payload.bin"),
        &small_bytes(7, 300_000),
        0o644,
    );
    put_file(&data.join("notes.txt"), b"data partition\n", 0o644);
    let layout = write_layout(dir.path(), "vfat.toml", LAYOUT);
    let img = dir.path().join("vfat.raw");
    compose_ok(&layout, &[("config", &cfg), ("data", &data)], &img);

    assert_sgdisk_clean(&img);
    let part = locate(&img, &layout, "config");
    assert_eq!(part.number, 1);
    assert_eq!(part.size, 64 * MIB);

    // fsck.fat on the partition alone.
    let pf = dir.path().join("config.vfat");
    extract_partition(&img, part, &pf);
    let fsck = run(Command::new(require("fsck.fat", "dosfstools"))
        .arg("-n")
        .arg(&pf));
    assert!(
        fsck.status.success(),
        "fsck.fat -n found problems ({}):\n{}",
        fsck.status,
        fsck.both()
    );
    note!(
        "fsck.fat -n: clean ({})",
        fsck.stdout.lines().last().unwrap_or("").trim()
    );
    std::fs::remove_file(&pf).expect("removing the extracted partition");

    // mtools, straight from the disk image at the partition's offset.
    let at = format!("{}@@{}", img.display(), part.offset);
    let label = run(mtools("mlabel").args(["-s", "-i", &at, "::"])).success();
    assert!(
        label.stdout.contains("CFG-1"),
        "FAT volume label: {}",
        label.both()
    );
    let listing = run(mtools("mdir").args(["-b", "-/", "-i", &at, "::"])).success();
    let got: BTreeSet<String> = listing
        .stdout
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        got,
        local_listing(&cfg),
        "mdir -/ listing of the FAT partition vs the source"
    );
    note!(
        "mdir: the FAT partition lists exactly the {} source paths",
        got.len()
    );
    let out = dir.path().join("mcopy.out");
    for f in &files {
        let _ = std::fs::remove_file(&out);
        run(mtools("mcopy")
            .args(["-n", "-i", &at])
            .arg(format!("::/{f}"))
            .arg(&out))
        .success();
        assert_same_bytes(&cfg.join(f), &out);
    }
    note!(
        "mcopy: {} files read back from the FAT partition equal the source",
        files.len()
    );

    // The XFS partition next to it.
    check_xfs_image(&img, &layout, "data", &data, |_| {});
}

#[test]
fn vfat_content_with_a_symlink_is_refused() {
    let dir = scratch("vfat-symlink");
    let cfg = dir.path().join("config");
    put_file(&cfg.join("real.txt"), b"real\n", 0o644);
    symlink("real.txt", cfg.join("link.txt")).expect("symlink");
    let data = dir.path().join("data");
    put_file(&data.join("x"), b"x", 0o644);
    let layout = write_layout(dir.path(), "vfat.toml", LAYOUT);
    let out = dir.path().join("refused.raw");
    let r = run(&mut compose_cmd(
        &layout,
        &[("config", &cfg), ("data", &data)],
        &out,
    ));
    let line = assert_one_line_error(&r, dir.path(), &["`config`", "symlink `link.txt`"]);
    assert_no_output(dir.path(), "refused.raw");
    note!("refused as expected: {line}");
}
