//! A realistic tree survives composition exactly, as judged by tools that share no code with
//! prestage.
//!
//! The tree has 2,000+ files across nested directories, directories large enough for each XFS
//! directory format (short-form, block, leaf, node), an empty file, names that stress name
//! handling (spaces, a tab, a leading `:`, the name `$`) also inside node-format directories,
//! UTF-8 names, 255-byte names, relative symlinks (one with a space in its target, remote
//! symlinks with 300+ byte targets) and modes 0600, 0755, 04755, 02755 and a 01777 directory.
//!
//! Proves, for a raw image: `sgdisk -v` finds no problem; `xfs_repair -n` finds the filesystem
//! clean; xfs_db sees the expected directory formats; GRUB's XFS driver reads every file equal to
//! the source and follows the symlinks (except inside directories whose extent map is a btree,
//! which GRUB 2.06 cannot read even when mkfs.xfs wrote them itself); the kernel (read-only loop
//! mount, as root) sees the same names, types, bytes, symlink targets and modes and nothing else
//! but `/.prestage`, whose manifest lists every entry; and `prestage verify` accepts the image.
//! For qcow2: with SOURCE_DATE_EPOCH and a layout fixing every GUID and UUID, the qcow2 image
//! passes `qemu-img check` and holds exactly the raw image's bytes (`qemu-img compare`), and
//! `prestage verify` accepts it.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A 512 MiB disk whose single XFS partition has fixed GUIDs and UUID, so that two compositions
/// of the same content (with SOURCE_DATE_EPOCH) produce the same bytes.
const LAYOUT: &str = r#"
[disk]
size = "512MiB"
sector_size = 512
guid = "0d3a6c52-4b51-4b0e-8f57-0c7f1d1e2a01"

[[partition]]
label = "data"
guid = "0d3a6c52-4b51-4b0e-8f57-0c7f1d1e2a02"
filesystem = "xfs"
fs_uuid = "0d3a6c52-4b51-4b0e-8f57-0c7f1d1e2a03"
"#;

/// Names a protofile cannot carry (or that stress name handling), each a regular file at the
/// root with its own bytes.
fn special_names() -> Vec<String> {
    vec![
        "with space.txt".into(),
        " leading".into(),
        "trailing ".into(),
        "a\tb".into(),
        "café ☃.txt".into(),
        ":colon".into(),
        "$".into(),
        "$dollar".into(),
        "x".repeat(251) + ".bin",
        "é ".repeat(85),
    ]
}

/// What the generated tree holds, for the checks that look at specific entries.
struct Tree {
    root: PathBuf,
    files: usize,
    dirs: usize,
    symlinks: usize,
}

fn build_tree(root: &Path) -> Tree {
    let mut t = Tree {
        root: root.to_path_buf(),
        files: 0,
        dirs: 0,
        symlinks: 0,
    };
    let mut seed = 0u64;
    let mut file = |t: &mut Tree, path: PathBuf, len: usize, mode: u32| {
        seed += 1;
        put_file(&path, &small_bytes(seed, len), mode);
        t.files += 1;
    };
    let dir = |t: &mut Tree, path: &Path, mode: u32| {
        put_dir(path, mode);
        t.dirs += 1;
    };

    // Node-format directories (too many entries for a single leaf block), with some
    // unspellable names among the ordinary ones.
    dir(&mut t, &root.join("node"), 0o755);
    for i in 0..1300 {
        file(
            &mut t,
            root.join(format!("node/file-{i:05}-with-a-longer-name.txt")),
            (i * 37) % 9000,
            0o644,
        );
    }
    for i in 0..20 {
        file(
            &mut t,
            root.join(format!("node/spaced name {i}")),
            100 + i,
            0o644,
        );
    }
    dir(&mut t, &root.join("node2"), 0o755);
    for i in 0..600 {
        file(
            &mut t,
            root.join(format!("node2/entry-{i:04}.dat")),
            1 + i % 5000,
            0o644,
        );
    }
    // A leaf-format directory (several data blocks, one leaf block).
    dir(&mut t, &root.join("leaf"), 0o755);
    for i in 0..300 {
        file(
            &mut t,
            root.join(format!("leaf/entry-{i:04}.dat")),
            4096 + i,
            0o644,
        );
    }
    file(&mut t, root.join("leaf/ in leaf"), 7, 0o644);
    // A block-format directory (one directory block).
    dir(&mut t, &root.join("block"), 0o755);
    for i in 0..50 {
        file(&mut t, root.join(format!("block/b-{i:03}")), 3 * i, 0o644);
    }
    // Nested directories, each with files, a relative symlink upward and a short-form subdir.
    let mut d = root.join("deep");
    for level in 0..8 {
        d = d.join(format!("level{level}"));
        dir(&mut t, &d, 0o755);
        for i in 0..12 {
            file(&mut t, d.join(format!("f-{i:02}")), 1000 * i + level, 0o644);
        }
        symlink("../f-00", d.join("up")).expect("symlink");
        t.symlinks += 1;
    }
    t.dirs += 1; // deep itself
    fs_chmod(&root.join("deep"), 0o755);

    // Modes.
    dir(&mut t, &root.join("modes"), 0o755);
    file(&mut t, root.join("modes/secret"), 33, 0o600);
    file(&mut t, root.join("modes/tool"), 4000, 0o755);
    file(&mut t, root.join("modes/suid"), 12, 0o4755);
    file(&mut t, root.join("modes/sgid"), 12, 0o2755);
    dir(&mut t, &root.join("modes/sticky"), 0o1777);
    file(&mut t, root.join("modes/sticky/inside"), 5, 0o644);
    dir(&mut t, &root.join("modes/private"), 0o700);
    file(&mut t, root.join("modes/private/key"), 64, 0o400);

    // Names and the empty file, at the root.
    for name in special_names() {
        let len = name.len() * 3;
        file(&mut t, root.join(&name), len, 0o644);
    }
    file(&mut t, root.join("empty"), 0, 0o644);
    dir(&mut t, &root.join("dir with space"), 0o755);
    file(&mut t, root.join("dir with space/:inner $"), 10, 0o644);

    // Symlinks: relative, with a space in the target, and two remote ones (targets too long for
    // the inode), one of them with a space.
    symlink("deep/level0/f-01", root.join("rel-link")).expect("symlink");
    symlink("with space.txt", root.join("space-link")).expect("symlink");
    symlink(
        format!("{}modes/tool", "./".repeat(190)),
        root.join("long-link"),
    )
    .expect("symlink");
    symlink(
        format!("{}with space.txt", "./".repeat(195)),
        root.join("long space link"),
    )
    .expect("symlink");
    symlink("does/not/exist", root.join("dangling")).expect("symlink");
    t.symlinks += 5;
    t
}

fn fs_chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn compose(dir: &Path, tree: &Tree, name: &str) -> PathBuf {
    let layout = dir.join("tree.toml");
    if !layout.exists() {
        write_layout(dir, "tree.toml", LAYOUT);
    }
    let out = dir.join(name);
    compose_ok(&layout, &[("data", &tree.root)], &out);
    out
}

/// The manifest, read through the kernel mount, lists exactly the source entries.
fn check_manifest(mnt: &Path, tree: &Tree) {
    let text = std::fs::read(mnt.join(".prestage/manifest.json")).expect("reading the manifest");
    let m: serde_json::Value = serde_json::from_slice(&text).expect("the manifest is JSON");
    assert_eq!(m["format"], "prestage-manifest/2");
    let entries = m["entries"].as_array().expect("entries");
    let by_path: BTreeMap<&str, &serde_json::Value> = entries
        .iter()
        .map(|e| (e["path"].as_str().expect("path"), e))
        .collect();
    assert_eq!(
        by_path.len(),
        entries.len(),
        "duplicate paths in the manifest"
    );
    assert_eq!(
        entries.len(),
        tree.files + tree.dirs + tree.symlinks,
        "manifest entry count"
    );
    assert_eq!(by_path["modes/suid"]["mode"], "4755");
    assert_eq!(by_path["modes/sticky"]["mode"], "1777");
    assert_eq!(by_path["modes/sticky"]["type"], "dir");
    assert_eq!(by_path["a\tb"]["type"], "file");
    assert_eq!(by_path["empty"]["size"], 0);
    assert_eq!(by_path["space-link"]["target"], "with space.txt");
    assert_eq!(by_path["long-link"]["type"], "symlink");
    assert!(
        entries.iter().all(|e| e["uid"] == 0 && e["gid"] == 0),
        "entries not owned by 0:0"
    );
    note!(
        "manifest: {} entries (every source entry), format prestage-manifest/2, owners 0:0",
        entries.len()
    );
}

#[test]
fn raw_image_holds_the_tree_exactly() {
    let dir = scratch("tree-raw");
    let tree = build_tree(&dir.path().join("content"));
    note!(
        "generated {} files, {} dirs, {} symlinks",
        tree.files,
        tree.dirs,
        tree.symlinks
    );
    assert!(tree.files >= 2000);
    let img = compose(dir.path(), &tree, "tree.raw");
    let layout = dir.path().join("tree.toml");

    let part = check_xfs_image(&img, &layout, "data", &tree.root, |pf| {
        for (path, want) in [
            ("/deep", "shortform"),
            ("/block", "block"),
            ("/leaf", "leaf"),
            ("/node", "node"),
            ("/node2", "node"),
        ] {
            assert_eq!(xfs_dir_format(pf, path), want, "directory format of {path}");
        }
        note!(
            "xfs_db: /deep short-form, /block block, /leaf leaf, /node and /node2 node directories"
        );
        let long = xfs_db(pf, &["path /long-link", "print core.format"]);
        assert_eq!(
            xfs_db_field(&long, "core.format"),
            "2 (extents)",
            "long-link is a remote symlink"
        );
        note!("xfs_db: /long-link is a remote (extent-format) symlink");
    });

    // GRUB follows symlinks: the relative ones lead to the right files.
    for (link, target) in [
        ("rel-link", "deep/level0/f-01"),
        ("space-link", "with space.txt"),
        ("long-link", "modes/tool"),
        ("long space link", "with space.txt"),
        ("deep/level0/level1/up", "deep/level0/f-00"),
    ] {
        let got = grub_cat(&img, part, link);
        let want = std::fs::read(tree.root.join(target)).expect("reading the source");
        assert!(
            got == want,
            "GRUB reading /{link} does not give /{target}'s bytes"
        );
    }
    note!("grub-fstest cat: 5 symlinks (relative, remote, with spaces) resolve to the right files");

    if is_root() {
        let m = Mount::read_only(&img, part, "xfs");
        check_manifest(m.path(), &tree);
    } else {
        note!("manifest check through the kernel mount NOT run: not root");
    }
}

#[test]
fn qcow2_image_is_the_raw_image() {
    let qemu_img = require("qemu-img", "qemu-utils");
    let dir = scratch("tree-qcow2");
    let tree = build_tree(&dir.path().join("content"));
    let raw = compose(dir.path(), &tree, "tree.raw");
    let qcow2 = compose(dir.path(), &tree, "tree.qcow2");

    let head = std::fs::read(&qcow2).expect("reading the qcow2 image");
    assert_eq!(
        &head[..4],
        b"QFI\xfb",
        "{} is not a qcow2 file",
        qcow2.display()
    );
    let check = run(Command::new(&qemu_img)
        .args(["check", "-f", "qcow2"])
        .arg(&qcow2))
    .success();
    assert!(
        check.stdout.contains("No errors were found"),
        "qemu-img check:\n{}",
        check.both()
    );
    note!("qemu-img check {}: No errors were found", qcow2.display());
    let info = run(Command::new(&qemu_img)
        .args(["info", "--output=json"])
        .arg(&qcow2))
    .success();
    let info: serde_json::Value = serde_json::from_str(&info.stdout).expect("qemu-img info JSON");
    assert_eq!(info["format"], "qcow2");
    assert_eq!(
        info["virtual-size"],
        512 * MIB,
        "virtual size of the qcow2 image"
    );

    let cmp = run(Command::new(&qemu_img)
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&raw)
        .arg(&qcow2));
    assert!(
        cmp.status.success() && cmp.stdout.contains("Images are identical."),
        "qemu-img compare raw qcow2 ({}):\n{}",
        cmp.status,
        cmp.both()
    );
    note!("qemu-img compare raw qcow2: Images are identical.");
    verify_ok(&qcow2);
}
