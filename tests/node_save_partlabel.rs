//! `--save-partlabel <label>` (the generated `installer-args.json`) keeps the data partition
//! when coreos-installer writes RHCOS over the start of the disk, checked with coreos-installer's
//! own code. A loop device need not expose its partitions (no partition scan, no udev in a
//! container), so `coreos-installer install` would stop at its exclusive-access check; the helper
//! crate in `tests/coreos-installer/` (not part of the workspace; built once by `cargo xtask
//! ci`, or here when missing) runs the library steps `install` runs: its argument parser on the
//! installer arguments, `SavedPartitions::new_from_disk` on the loop device holding a built
//! image, and `image_copy_default` writing an RHCOS-like GPT image (BIOS-BOOT, EFI-SYSTEM, boot,
//! root) and merging the saved partition into its table. Afterwards `sgdisk -v` is clean, `data` is
//! partition 5 after the four RHCOS partitions at its old sectors, and `prestage verify` passes.

mod common;
mod nodeenv;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require, run, scratch, sgdisk_table, MIB};
use nodeenv::Loop;

/// The helper binary, built (a no-op when it is up to date) with its own lockfile and target
/// directory.
fn helper() -> PathBuf {
    let root = common::repo_root();
    let target = root.join("target/coreos-installer");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let r = run(Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(root.join("tests/coreos-installer/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target));
    assert!(
        r.status.success(),
        "building tests/coreos-installer failed (it needs the Debian packages pkg-config, \
         libzstd-dev and libssl-dev, and crates.io):\n{}",
        r.stderr
    );
    target.join("release/save-partlabel-check")
}

/// A disk of 2 GiB with the 600 MiB `data` partition at its end: room for the RHCOS-like image
/// in front of it.
const LAYOUT: &str = r#"[disk]
size = "2GiB"
guid = "3e2a8d6c-0b8f-4f0e-9c55-1f2d0c9a4e01"

[[partition]]
label = "data"
anchor = "end"
size = "600MiB"
guid = "3e2a8d6c-0b8f-4f0e-9c55-1f2d0c9a4e02"
filesystem = "xfs"
fs_uuid = "3e2a8d6c-0b8f-4f0e-9c55-1f2d0c9a4e03"
"#;

/// An RHCOS-like metal image: a GPT with RHCOS's four partitions (names, types, the first three
/// at their real sizes; a small root), `size` bytes in all.
fn rhcos_like(path: &Path, root_mib: u64) {
    let sgdisk = require("sgdisk", "gdisk");
    let size = (1 + 1 + 127 + 384 + root_mib + 1) * MIB;
    let f = fs::File::create(path).expect("creating the image");
    f.set_len(size).expect("sizing the image");
    drop(f);
    run(Command::new(sgdisk)
        .args([
            "-n",
            "1:2048:+1M",
            "-t",
            "1:21686148-6449-6E6F-744E-656564454649",
        ])
        .args(["-c", "1:BIOS-BOOT"])
        .args([
            "-n",
            "2:0:+127M",
            "-t",
            "2:C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        ])
        .args(["-c", "2:EFI-SYSTEM"])
        .args([
            "-n",
            "3:0:+384M",
            "-t",
            "3:0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        ])
        .args(["-c", "3:boot"])
        .args([
            "-n",
            &format!("4:0:+{root_mib}M"),
            "-t",
            "4:0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        ])
        .args(["-c", "4:root"])
        .arg(path))
    .success();
}

#[test]
fn save_partlabel_keeps_the_data_partition() {
    nodeenv::require_root("attaching a loop device");
    let helper = helper();
    let dir = scratch("node-save");
    let layout = common::write_layout(dir.path(), "rhcos-room.toml", LAYOUT);
    let disk = dir.path().join("disk.raw");
    run(&mut nodeenv::build_cmd(
        &disk,
        "shared",
        &dir.path().join("store"),
        &["--layout", &layout.display().to_string()],
    ))
    .success();
    let args = prestage::build::beside(&disk, ".node").join("installer-args.json");
    let (_, before) = sgdisk_table(&disk);
    assert_eq!(before.len(), 1, "{before:?}");
    let data = before[0].clone();

    // coreos-installer refuses an image that would overwrite the saved partition.
    let big = dir.path().join("too-big.img");
    rhcos_like(&big, 1200);
    {
        let lp = Loop::attach(&disk, 0, fs::metadata(&disk).expect("size").len(), false);
        let r = run(Command::new(&helper).arg(&args).arg(&lp.dev).arg(&big));
        assert!(
            !r.status.success() && r.stderr.contains("would overwrite partition 1 (\"data\")"),
            "an image over the data partition must be refused:\n{}",
            r.both()
        );
        // A label the disk does not have saves nothing: the helper refuses to go on.
        let other = dir.path().join("other-args.json");
        fs::write(&other, "[\"--save-partlabel\",\"nosuch\"]").expect("writing");
        let r = run(Command::new(&helper).arg(&other).arg(&lp.dev).arg(&big));
        assert!(
            !r.status.success() && r.stderr.contains("no partition matches"),
            "{}",
            r.both()
        );
    }
    common::verify_ok(&disk);

    let rhcos = dir.path().join("rhcos.img");
    rhcos_like(&rhcos, 64);
    {
        let lp = Loop::attach(&disk, 0, fs::metadata(&disk).expect("size").len(), false);
        let r = run(Command::new(&helper).arg(&args).arg(&lp.dev).arg(&rhcos));
        assert!(r.status.success(), "{}:\n{}", r.cmd, r.both());
        assert!(
            r.stderr
                .contains("Saving partition 1 (\"data\") to new partition 5"),
            "coreos-installer did not save the data partition:\n{}",
            r.stderr
        );
        note!("coreos-installer: {}", r.stderr.trim().replace('\n', "; "));
    }
    common::assert_sgdisk_clean(&disk);
    let (_, after) = sgdisk_table(&disk);
    let names: Vec<&str> = after.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["BIOS-BOOT", "EFI-SYSTEM", "boot", "root", "data"],
        "{after:?}"
    );
    let d = &after[4];
    assert_eq!(d.number, 5, "data is partition 5");
    assert_eq!(
        (d.first, d.last),
        (data.first, data.last),
        "data keeps its sectors"
    );
    common::verify_ok(&disk);
}
