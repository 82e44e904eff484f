//! Many entries: one directory of 12,000 entries (node form: data blocks, a da-btree of hash
//! leaves, a free index) and a tree of 30,000 entries (inode btrees of several blocks), composed
//! from directories holding files, symlinks, FIFOs, hard links and subdirectories. Proves that
//! `xfs_repair -n` finds them clean, that the kernel (read-only mount) sees exactly the source
//! tree (names, types, modes, bytes, targets, hard-link identity), that `prestage verify`
//! accepts them, and that `plan`'s estimate of the space used is within 1% of what the kernel
//! reports (`df`, plus the log). A directory of 260,000 names, from a tar, needs two levels of
//! da-btree nodes above its hash leaves: `xfs_repair -n` checks them and the kernel finds names
//! through them. The 300,000-entry tree runs in `cargo xtask bench compose`.

#[macro_use]
mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use common::*;
use prestage::compose::content::{Content, Owners};
use prestage::compose::{layout::Layout, manifest, plan};

const LAYOUT: &str = r#"
[disk]
size = "1GiB"
sector_size = 512
guid = "0d3a6c52-4b51-4b0e-8f57-0c7f1d1e2a21"

[[partition]]
label = "data"
guid = "0d3a6c52-4b51-4b0e-8f57-0c7f1d1e2a22"
filesystem = "xfs"
fs_uuid = "0d3a6c52-4b51-4b0e-8f57-0c7f1d1e2a23"
"#;

/// Fills `dir` with `n` entries: files of a few sizes, symlinks, FIFOs, hard links to the first
/// file and subdirectories with a file each. Returns the entries made (the subdirectories'
/// files included).
fn fill(dir: &Path, n: usize, seed: u64) -> usize {
    put_dir(dir, 0o755);
    let mut made = 0;
    for i in 0..n {
        let p = dir.join(format!("entry-{i:06}-{}", "n".repeat(i % 37)));
        match i % 10 {
            0..=5 => put_file(
                &p,
                &small_bytes(seed + i as u64, [0, 17, 600, 5000][i % 4]),
                0o644,
            ),
            6 => symlink(format!("entry-{:06}-", (i + 1) % n), &p).expect("symlink"),
            7 => rustix::fs::mknodat(
                rustix::fs::CWD,
                &p,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o644),
                0,
            )
            .expect("mkfifo"),
            8 => std::fs::hard_link(dir.join("entry-000000-"), &p).expect("hard link"),
            _ => {
                put_dir(&p, 0o750);
                put_file(&p.join("inside"), b"inside\n", 0o600);
                made += 1;
            }
        }
        made += 1;
    }
    made
}

/// Composes `src` and checks it with xfs_repair, the kernel and verify; returns the image.
fn compose_and_check(dir: &Path, src: &Path, name: &str, inspect: impl FnOnce(&Path)) {
    let layout = write_layout(dir, "scale.toml", LAYOUT);
    let img = dir.join(name);
    compose_ok(&layout, &[("data", src)], &img);
    let part = locate(&img, &layout, "data");
    let pf = dir.join(format!("{name}.xfs"));
    extract_partition(&img, part, &pf);
    assert_xfs_repair_clean(&pf);
    inspect(&pf);
    std::fs::remove_file(&pf).expect("removing the extracted partition");
    let m = Mount::read_only(&img, part, "xfs");
    let s = assert_trees_identical(
        src,
        m.path(),
        Identity {
            ignore_at_root: &[".prestage"],
            owners: Err((0, 0)),
            times: false,
        },
    );
    note!(
        "kernel mount: {} entries identical to the source ({} files, {} FIFOs, {} names in \
         hard-link groups)",
        s.entries,
        s.files,
        s.specials,
        s.hardlinked
    );

    // plan's estimate of the space used, against the kernel's.
    let l = Layout::load(&layout).expect("layout");
    let p = l.partition("data").expect("partition");
    let prestage::compose::layout::Filesystem::Xfs(opts) = &p.filesystem else {
        panic!("not xfs");
    };
    let mut c = Content::from_dir(src, Owners::Root).expect("content");
    manifest::reserve(&mut c, 1_700_000_000).expect("manifest");
    let fit = plan::fit(p.size(l.sector_size), opts, &c).expect("plan");
    let df = run(Command::new("df")
        .args(["-B1", "--output=used"])
        .arg(m.path()))
    .success();
    let used: u64 = df
        .stdout
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df used");
    drop(m);
    let planned = fit.used - fit.log;
    let off = (planned as f64 - used as f64) / used as f64;
    note!(
        "plan: {planned} bytes used besides the log, the kernel reports {used} ({:+.3}%)",
        off * 100.0
    );
    assert!(
        off.abs() <= 0.01,
        "plan is off by more than 1%: {planned} vs {used}"
    );
    verify_ok(&img);
}

#[test]
fn a_directory_of_twelve_thousand_entries() {
    require_root("the kernel mount comparison");
    let dir = scratch("scale-dir");
    let src = dir.path().join("src");
    put_dir(&src, 0o755);
    let n = fill(&src.join("big"), 12_000, 1);
    note!("one directory of 12,000 entries ({n} entries in all)");
    compose_and_check(dir.path(), &src, "bigdir.raw", |pf| {
        assert_eq!(
            xfs_dir_format(pf, "/big"),
            "node",
            "/big is a node directory"
        );
        let leaves = xfs_db(pf, &["path /big", "bmap"]);
        note!(
            "xfs_db: /big is a node-form directory; its map: {}",
            leaves.trim().replace('\n', "; ")
        );
    });
}

#[test]
fn a_tree_of_thirty_thousand_entries() {
    require_root("the kernel mount comparison");
    let dir = scratch("scale-tree");
    let src = dir.path().join("src");
    put_dir(&src, 0o755);
    let mut total = 0;
    for d in 0..60 {
        total += fill(&src.join(format!("dir-{d:03}")), 500, d * 1000) + 1;
    }
    note!("a tree of {total} entries in 60 directories");
    assert!(total >= 30_000);
    compose_and_check(dir.path(), &src, "tree.raw", |pf| {
        let agi = xfs_db(pf, &["agi 0", "print count level"]);
        note!("xfs_db agi 0: {}", agi.trim().replace('\n', ", "));
        assert_ne!(
            xfs_db_field(&agi, "level"),
            "1",
            "the inode btree needs more than one block"
        );
    });
}

/// A ustar header of an empty regular file.
fn empty_member(name: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(b"00000000000");
    h[136..147].copy_from_slice(b"14577030000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

#[test]
fn a_directory_with_two_levels_of_hash_nodes() {
    require_root("looking names up through a kernel mount");
    let dir = scratch("scale-deep");
    let n = 260_000;
    let name = |i: usize| format!("huge/name-{i:07}-{}", i % 997);
    let mut t = Vec::with_capacity((n + 3) * 512);
    for i in 0..n {
        t.extend_from_slice(&empty_member(&name(i)));
    }
    t.extend_from_slice(&[0u8; 1024]);
    let tar = dir.path().join("huge.tar");
    std::fs::write(&tar, &t).expect("writing the archive");
    drop(t);
    let layout = write_layout(dir.path(), "scale.toml", LAYOUT);
    let img = dir.path().join("huge.raw");
    compose_ok(&layout, &[("data", &tar)], &img);
    let part = locate(&img, &layout, "data");
    let pf = dir.path().join("huge.xfs");
    extract_partition(&img, part, &pf);
    assert_xfs_repair_clean(&pf);
    let root = xfs_db(
        &pf,
        &[
            "path /huge",
            "dblock 8388608",
            "print nhdr.level nhdr.count",
        ],
    );
    assert_eq!(
        xfs_db_field(&root, "nhdr.level"),
        "2",
        "two node levels: {root}"
    );
    note!(
        "xfs_db: /huge's da-btree root: {}",
        root.trim().replace('\n', ", ")
    );
    std::fs::remove_file(&pf).expect("removing the extracted partition");
    let m = Mount::read_only(&img, part, "xfs");
    for i in (0..n).step_by(9973).chain([n - 1]) {
        let p = m.path().join(name(i));
        assert!(p.is_file(), "the kernel does not find {}", p.display());
    }
    assert!(!m.path().join("huge/name-0000000-1").exists());
    let count = std::fs::read_dir(m.path().join("huge"))
        .expect("ls")
        .count();
    assert_eq!(count, n);
    drop(m);
    note!("kernel mount: {count} names listed, 28 looked up by name through the hash index");
    verify_ok(&img);
}
