//! 4Kn disks: a layout with 4096-byte sectors gives a GPT in 4096-byte LBAs and filesystems whose
//! sector size is 4096 (XFS and FAT): prestage verifies it, fsck.fat and mtools read the FAT
//! partition, and as root libblkid (partx) reads the table through a 4096-byte-sector loop device
//! and the kernel mounts the XFS partition on one (it refuses XFS whose sector is smaller than
//! the device's).

mod common;

use std::process::Command;

use common::*;

#[test]
fn four_k_sector_disk() {
    let dir = scratch("sector4k");
    let data = dir.path().join("data");
    put_file(&data.join("images/a.bin"), &small_bytes(7, 300_000), 0o644);
    put_file(&data.join("b.txt"), b"4Kn\n", 0o644);
    let cfg = dir.path().join("cfg");
    put_file(&cfg.join("sub/c.txt"), b"config\n", 0o644);
    let layout = write_layout(
        dir.path(),
        "4k.toml",
        "[disk]\nsize = \"1GiB\"\nsector_size = 4096\n\n\
         [[partition]]\nlabel = \"cfg\"\nsize = \"32MiB\"\nfilesystem = \"vfat\"\n\n\
         [[partition]]\nlabel = \"data\"\nanchor = \"end\"\nsize = \"600MiB\"\nfilesystem = \"xfs\"\n",
    );
    let img = dir.path().join("4k.raw");
    compose_ok(&layout, &[("data", &data), ("cfg", &cfg)], &img);
    verify_ok(&img);
    let l = prestage::compose::layout::Layout::load(&layout).expect("layout");
    assert_eq!(l.sector_size, 4096);
    // The protective MBR's GPT header is at LBA 1 = byte 4096.
    let bytes = std::fs::read(&img).expect("reading the image head")[..4104].to_vec();
    assert_eq!(
        &bytes[4096..4104],
        b"EFI PART",
        "GPT header not at 4096-byte LBA 1"
    );
    // The FAT filesystem has 4096-byte logical sectors; fsck.fat and mtools read it back.
    let p = l.partition("cfg").expect("partition");
    let part = Part {
        number: 1,
        offset: p.offset(4096),
        size: p.size(4096),
    };
    let fat = dir.path().join("cfg.fat");
    extract_partition(&img, part, &fat);
    let fsck = run(Command::new(require("fsck.fat", "dosfstools"))
        .arg("-n")
        .arg(&fat))
    .success();
    note!(
        "fsck.fat -n: {}",
        fsck.stdout.lines().last().unwrap_or("").trim()
    );
    let head = std::fs::read(&fat).expect("reading the FAT partition")[..13].to_vec();
    assert_eq!(
        u16::from_le_bytes([head[11], head[12]]),
        4096,
        "FAT bytes per sector"
    );
    let copy = dir.path().join("c.txt");
    run(Command::new(require("mcopy", "mtools"))
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&fat)
        .arg("::/sub/c.txt")
        .arg(&copy))
    .success();
    assert_eq!(std::fs::read(&copy).expect("reading the copy"), b"config\n");
    if !is_root() {
        note!("kernel check of the 4Kn image NOT run: not root");
        return;
    }
    require("losetup", "mount");
    require("partx", "util-linux");
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let attach = |args: &[String]| -> Detach {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only", "--sector-size", "4096"])
            .args(args)
            .arg(&img)
            .output()
            .expect("running losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Detach(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // libblkid (partx) reads the table through a 4096-byte-sector loop device and finds both
    // partitions where the layout puts them (it reports 512-byte units).
    let whole = attach(&[]);
    let table = run(Command::new("partx").args([
        "--raw",
        "--noheadings",
        "--output",
        "NR,START,SECTORS,NAME",
        &whole.0,
    ]))
    .success();
    drop(whole);
    let rows: Vec<Vec<&str>> = table
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "partx: {}", table.stdout);
    for (row, label) in rows.iter().zip(["cfg", "data"]) {
        let p = l.partition(label).expect("partition");
        let start: u64 = row[1].parse().expect("partx START");
        let sectors: u64 = row[2].parse().expect("partx SECTORS");
        assert_eq!(
            (start * 512, sectors * 512, row[3]),
            (p.offset(4096), p.size(4096), label),
            "partx: {}",
            table.stdout
        );
    }
    note!(
        "partx on a 4096-byte-sector loop device: {}",
        table.stdout.trim().replace('\n', "; ")
    );
    // The kernel mounts the XFS partition through a 4096-byte-sector loop device.
    let mnt = scratch("sector4k-mnt");
    let p = l.partition("data").expect("partition");
    let dev = attach(&[
        format!("--offset={}", p.offset(4096)),
        format!("--sizelimit={}", p.size(4096)),
    ]);
    run(Command::new("mount")
        .args(["-t", "xfs", "-o", "ro", &dev.0])
        .arg(mnt.path()))
    .success();
    let same = Command::new("diff")
        .args(["-r", "-x", ".prestage"])
        .arg(&data)
        .arg(mnt.path())
        .status();
    let _ = Command::new("umount").arg(mnt.path()).status();
    assert!(
        same.expect("running diff").success(),
        "the XFS partition differs from {}",
        data.display()
    );
    note!("data (xfs, 4096-byte sectors) on a 4096-byte-sector loop device: mounted, equal to the source");
}
