//! Large files land intact: the cases mkfs.xfs 6.1 itself corrupts when it copies file data
//! (files spread over several allocation groups, and files whose extent map is a btree).
//!
//! (a) A ~400 MiB pseudo-random file in a 1 GiB partition with `agcount = 8` (128 MiB AGs), so
//!     the file is larger than an AG and needs several extents.
//! (b) A 2.1 GiB pseudo-random file (over 2 GiB, not a multiple of the block size) in a 4 GiB
//!     partition with `agcount = 56` (~73 MiB AGs): the file needs dozens of extents, more than
//!     fit in the inode, so its data fork is a btree (xfs_db: `core.format = 3 (btree)`).
//!
//! Each image must pass `sgdisk -v`, `xfs_repair -n` on the extracted partition, GRUB's
//! byte-for-byte comparison, the kernel mount comparison (as root) and `prestage verify`.

#[macro_use]
mod common;

use std::path::Path;

use common::*;

fn layout(dir: &Path, part_size: &str, disk_size: &str, agcount: u32) -> std::path::PathBuf {
    write_layout(
        dir,
        "large.toml",
        &format!(
            "[disk]\nsize = \"{disk_size}\"\nsector_size = 512\n\n[[partition]]\nlabel = \"data\"\nstart = 2048\n\
             size = \"{part_size}\"\nfilesystem = \"xfs\"\n\n[partition.xfs]\nagcount = {agcount}\n"
        ),
    )
}

/// Extents of `/big.bin` in the extracted filesystem: (core.format, core.nextents).
fn big_extents(part_file: &Path) -> (String, u64) {
    let out = xfs_db(
        part_file,
        &["path /big.bin", "print core.format core.nextents core.size"],
    );
    let format = xfs_db_field(&out, "core.format");
    let n = xfs_db_field(&out, "core.nextents")
        .parse()
        .expect("core.nextents");
    (format, n)
}

#[test]
fn file_larger_than_an_allocation_group() {
    let _big = big_files_lock();
    let dir = scratch("large-ag");
    let content = dir.path().join("content");
    put_dir(&content, 0o755);
    let size = 400 * MIB + 12_345;
    write_random_file(&content.join("big.bin"), size, 1);
    put_file(&content.join("small.txt"), b"next to a big file\n", 0o644);
    let layout = layout(dir.path(), "1GiB", "1026MiB", 8);
    let img = dir.path().join("large.raw");
    compose_ok(&layout, &[("data", &content)], &img);

    check_xfs_image(&img, &layout, "data", &content, |pf| {
        let agblocks: u64 =
            xfs_db_field(&xfs_db(pf, &["sb 0", "print agblocks agcount"]), "agblocks")
                .parse()
                .expect("agblocks");
        assert!(
            size > agblocks * 4096,
            "the file ({size} bytes) must be larger than an AG ({agblocks} blocks)"
        );
        let (format, n) = big_extents(pf);
        assert!(
            n >= 4,
            "a {size}-byte file over 128 MiB AGs needs at least 4 extents, xfs_db says {n}"
        );
        note!(
            "xfs_db: /big.bin ({size} bytes) has {n} extents ({format}) over {agblocks}-block AGs"
        );
    });
}

#[test]
fn file_over_2gib_with_a_btree_extent_map() {
    let _big = big_files_lock();
    let dir = scratch("large-btree");
    let content = dir.path().join("content");
    put_dir(&content, 0o755);
    let size = 2 * GIB + 100 * MIB + 4_321;
    write_random_file(&content.join("big.bin"), size, 2);
    put_file(
        &content.join("after.txt"),
        b"a small file after the big one\n",
        0o600,
    );
    let layout = layout(dir.path(), "4GiB", "4098MiB", 56);
    let img = dir.path().join("btree.raw");
    compose_ok(&layout, &[("data", &content)], &img);

    check_xfs_image(&img, &layout, "data", &content, |pf| {
        let (format, n) = big_extents(pf);
        assert_eq!(
            format, "3 (btree)",
            "/big.bin's data fork must be a btree ({n} extents)"
        );
        assert!(
            n >= 22,
            "/big.bin has {n} extents; more than the inode's 21 are needed for a btree"
        );
        note!("xfs_db: /big.bin ({size} bytes) has {n} extents in a btree data fork (core.format = 3)");
    });
}
