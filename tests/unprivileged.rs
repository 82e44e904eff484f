//! prestage needs no privilege: `prestage compose` run as `nobody` (via `setpriv`, with no
//! supplementary groups) into a world-writable directory succeeds, and the image it writes
//! verifies, holds the files owned by 0:0 (the default `--owners root`) and, as root, mounts with
//! the source's tree. The layout has a vfat partition too, so mkfs.fat and mtools also run
//! unprivileged. When the test itself is not root, compose runs directly as the current user.

#[macro_use]
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::*;

const LAYOUT: &str = r#"
[disk]
size = "512MiB"

[[partition]]
label = "boot"
size = "32MiB"
filesystem = "vfat"

[[partition]]
label = "data"
filesystem = "xfs"
"#;

/// The uid of `nobody` on this system.
fn nobody_uid() -> u32 {
    let r = run(Command::new("id").args(["-u", "nobody"])).success();
    r.stdout.trim().parse().expect("uid of nobody")
}

#[test]
fn compose_as_an_unprivileged_user() {
    let dir = scratch("unprivileged");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod 0777");
    let data = dir.path().join("data");
    for d in ["", "etc", "bin", "images"] {
        put_dir(&data.join(d), 0o755);
    }
    put_file(&data.join("etc/config.yaml"), b"key: value\n", 0o644);
    put_file(&data.join("bin/tool"), &small_bytes(1, 50_000), 0o755);
    put_file(
        &data.join("images/blob.bin"),
        &small_bytes(2, 3 * MIB as usize),
        0o644,
    );
    put_file(&data.join("with space.txt"), b"spaces\n", 0o644);
    std::os::unix::fs::symlink("bin/tool", data.join("tool-link")).expect("symlink");
    let boot = dir.path().join("boot");
    for d in ["", "EFI", "EFI/BOOT"] {
        put_dir(&boot.join(d), 0o755);
    }
    put_file(&boot.join("EFI/BOOT/grub.cfg"), b"set timeout=1\n", 0o644);
    let layout = write_layout(dir.path(), "unpriv.toml", LAYOUT);
    let out = dir.path().join("unpriv.raw");

    let mut cmd = if is_root() {
        let prog = binary_for_nobody(dir.path());
        as_nobody(&prog)
    } else {
        note!("not root: composing as the current user (uid {})", euid());
        Command::new(bin())
    };
    cmd.arg("compose")
        .arg("--layout")
        .arg(&layout)
        .arg("--content")
        .arg(format!("data={}", data.display()))
        .arg("--content")
        .arg(format!("boot={}", boot.display()))
        .arg("-o")
        .arg(&out)
        .current_dir(dir.path());
    let r = run(&mut cmd).success();
    note!("compose: {}", r.stdout.trim());
    let owner = std::fs::metadata(&out).expect("the image exists").uid();
    let expected = if is_root() { nobody_uid() } else { euid() };
    assert_eq!(
        owner, expected,
        "the image should be owned by the user who composed it"
    );
    note!("{} written by uid {owner}", out.display());

    if is_root() {
        let v = run(as_nobody(&binary_for_nobody(dir.path()))
            .arg("verify")
            .arg(&out))
        .success();
        assert!(v.stdout.contains("OK"), "verify as nobody: {}", v.both());
        note!("prestage verify as nobody: {}", v.stdout.trim());
    }
    let part = check_xfs_image(&out, &layout, "data", &data, |_| {});
    assert_eq!(part.number, 2);
    let boot_part = locate(&out, &layout, "boot");
    let at = format!("{}@@{}", out.display(), boot_part.offset);
    let got = dir.path().join("grub.cfg.out");
    run(Command::new(require("mcopy", "mtools"))
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-n", "-i", &at, "::/EFI/BOOT/grub.cfg"])
        .arg(&got))
    .success();
    assert_same_bytes(&boot.join("EFI/BOOT/grub.cfg"), &got);
    note!("mcopy: the vfat partition's file reads back equal");
}
