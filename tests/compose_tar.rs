//! Tar archives as content: a tree holding every kind of inode a container layer holds, archived
//! by GNU tar with `--xattrs --xattrs-include='*'`, composed by prestage as an unprivileged user
//! (nobody, through setpriv), comes back from the kernel identical; hostile or broken archives
//! are refused with one line naming the member, and nothing is left at the output path.
//!
//! The tree (made as root with the real tools: setcap, setfattr, mknod, mkfifo, chown, ln,
//! touch): a setuid binary with a file capability (`security.capability`), a setgid file, a
//! sticky directory, an opaque directory (`trusted.overlay.opaque=y`), a 0/0 character device (a
//! whiteout) with an attribute, a block device, a FIFO, a file with three names in three
//! directories, files and a directory owned by 1000:1001, a 255-byte name, a path of more than
//! 255 bytes, non-ASCII names, attributes that need an attribute leaf block (local values, and one
//! large enough for a remote value block), an empty attribute value, a symlink with an
//! attribute, times with nanoseconds and one before 1970, and a root directory with its own mode,
//! owner and attribute. Proves, for the rhel8 and rhel9 profiles: `xfs_repair -n` finds the
//! filesystem clean; mounted read-only by the kernel, every entry has the source's type, mode,
//! owner, time (to the nanosecond), size and bytes, symlink target, device number, attributes and
//! hard-link identity; `getfattr -d -m -`, `getcap` and `stat` print the same for both trees;
//! `prestage verify` passes, and fails when one attribute byte in the image is flipped, whether
//! the block's checksum is left wrong (a checksum error) or fixed (the attribute differs from the
//! manifest).

#[macro_use]
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn layout(dir: &Path, profile: &str) -> PathBuf {
    write_layout(
        dir,
        &format!("tar-{profile}.toml"),
        &format!(
            "[disk]\nsize = \"512MiB\"\nsector_size = 512\n\
             guid = \"0d3a6c52-4b51-4b0e-8f57-0c7f1d1e2a11\"\n\n[[partition]]\nlabel = \"data\"\n\
             guid = \"0d3a6c52-4b51-4b0e-8f57-0c7f1d1e2a12\"\nfilesystem = \"xfs\"\n\
             fs_uuid = \"0d3a6c52-4b51-4b0e-8f57-0c7f1d1e2a13\"\n\n[partition.xfs]\n\
             profile = \"{profile}\"\n"
        ),
    )
}

/// Runs a shell script in `dir`, failing the test with its output on error.
fn sh(dir: &Path, script: &str) {
    run(Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir))
    .success();
}

/// Bytes that are unique enough to find in an image, and valid to pass on a command line as hex.
fn hexval(seed: u64, len: usize) -> (Vec<u8>, String) {
    let v = small_bytes(seed, len);
    let h = format!(
        "0x{}",
        v.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    (v, h)
}

/// Makes the every-kind tree in `src` (as root).
fn make_tree(src: &Path) -> Vec<u8> {
    put_dir(src, 0o751);
    let long = "l".repeat(255);
    let deep = format!(
        "{}/{}/{}",
        "d".repeat(100),
        "e".repeat(100),
        "f".repeat(100)
    );
    let (m1, m1hex) = hexval(1, 600);
    let (_, m2hex) = hexval(2, 600);
    let (_, hugehex) = hexval(3, 3300);
    sh(
        src,
        &format!(
            r#"
printf 'ping\n' > ping; chmod 4755 ping; setcap cap_net_raw,cap_net_admin+ep ping
printf 'tool\n' > sgid; chmod 2755 sgid
mkdir -m 1777 sticky; printf 'in sticky\n' > sticky/inside
mkdir opaque; setfattr -n trusted.overlay.opaque -v y opaque; printf 'x\n' > opaque/kept
mknod wh c 0 0; setfattr -n trusted.whiteout -v 1 wh
mknod blk b 8 1; mkfifo fifo
mkdir -p sub/deeper; printf 'three names\n' > h1; ln h1 sub/h2; ln h1 sub/deeper/h3
printf 'owned\n' > owned; chown 1000:1001 owned; mkdir users; chown 1000:1001 users
printf 'long\n' > {long}; mkdir -p {deep}; printf 'deep\n' > {deep}/file
mkdir 'dír ünïcode ☃'; printf 'é\n' > 'dír ünïcode ☃/fïlé €'
printf 'big\n' > big; setfattr -n user.huge -v {hugehex} big; setfattr -n user.small -v hello big
printf 'mid\n' > mid; setfattr -n user.m1 -v {m1hex} mid; setfattr -n user.m2 -v {m2hex} mid
printf 'e\n' > emptyattr; setfattr -n user.empty emptyattr
ln -s ping pinglink; setfattr -h -n trusted.link -v yes pinglink
touch empty
touch -d @1600000000.123456789 h1; touch -d @-100 sgid; touch -h -d @1500000000.5 pinglink
setfattr -n trusted.root -v top .; chown 1000:1001 .; touch -d @1234567890.987654321 .
"#
        ),
    );
    m1
}

/// `getfattr -d -m - -R -h` of a tree, one block per file, sorted (directory order differs
/// between filesystems).
fn getfattr_dump(dir: &Path) -> Vec<String> {
    let r = run(Command::new(require("getfattr", "attr"))
        .args(["-R", "-d", "-m", "-", "-h", "-e", "hex", "."])
        .current_dir(dir))
    .success();
    let mut blocks: Vec<String> = r
        .stdout
        .split("\n\n")
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty() && !b.contains("# file: ./.prestage"))
        .collect();
    blocks.sort();
    blocks
}

/// `stat` of every entry but the manifest's, sorted by name. Inode numbers are left out (they
/// differ), and so are a directory's size (each filesystem counts its own format) and the root's
/// link count (the image's root also holds `.prestage`).
fn stat_dump(dir: &Path) -> Vec<String> {
    let r = run(Command::new("bash")
        .arg("-c")
        .arg(
            "find . -path ./.prestage -prune -o -print0 | sort -z \
             | xargs -0 stat -c '%F|%A|%u|%g|%s|%h|%t|%T|%y|%n'",
        )
        .current_dir(dir))
    .success();
    r.stdout
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split('|').collect();
            if f[0] == "directory" {
                f[4] = "-";
            }
            if f[9] == "." {
                f[5] = "-";
            }
            f.join("|")
        })
        .collect()
}

/// Finds `needle` in the partition of a raw image; returns its byte offset in the image.
fn find_in_image(img: &Path, part: Part, needle: &[u8]) -> u64 {
    let bytes = std::fs::read(img).expect("reading the image");
    let region = &bytes[part.offset as usize..(part.offset + part.size) as usize];
    let at = region
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the value is in the image");
    part.offset + at as u64
}

/// Runs `check` on `img` with the byte at `at` flipped and, when `fix` gives a structure
/// `(start, len, crc offset in it)` (image offsets), its CRC recomputed; then restores the image.
fn with_flip(img: &Path, at: u64, fix: Option<(u64, usize, usize)>, check: impl FnOnce()) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .expect("opening the image");
    let (start, len, crc_at) = fix.unwrap_or((at, 1, usize::MAX));
    let mut orig = vec![0u8; len];
    f.read_exact_at(&mut orig, start)
        .expect("reading the image");
    let mut b = orig.clone();
    b[(at - start) as usize] ^= 0x01;
    if crc_at != usize::MAX {
        prestage::compose::xfs::ondisk::update_crc(&mut b, crc_at);
    }
    f.write_all_at(&b, start).expect("writing the image");
    check();
    f.write_all_at(&orig, start).expect("restoring the image");
}

fn verify_fails(img: &Path, needles: &[&str]) {
    let r = run(Command::new(bin()).arg("verify").arg(img));
    let dir = img.parent().expect("image directory");
    let line = assert_one_line_error(&r, dir, needles);
    note!("prestage verify {}: {line}", img.display());
}

#[test]
fn every_kind_from_gnu_tar_comes_back_identical() {
    require_root("making the source tree (mknod, setcap, chown, trusted.* attributes)");
    let tar = require("tar", "tar");
    let dir = scratch("tar-kinds");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let src = dir.path().join("src");
    let m1 = make_tree(&src);
    let archive = dir.path().join("tree.tar");
    run(Command::new(&tar)
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg("."))
    .success();
    std::fs::set_permissions(&archive, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    note!(
        "GNU tar --xattrs --xattrs-include='*' made {}",
        archive.display()
    );
    let prog = binary_for_nobody(dir.path());

    for profile in ["rhel8", "rhel9"] {
        let layout = layout(dir.path(), profile);
        std::fs::set_permissions(&layout, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let img = dir.path().join(format!("{profile}.raw"));
        let mut content = std::ffi::OsString::from("data=");
        content.push(&archive);
        let r = run(as_nobody(&prog)
            .arg("compose")
            .arg("--layout")
            .arg(&layout)
            .arg("--content")
            .arg(content)
            .arg("-o")
            .arg(&img)
            .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
            .current_dir(dir.path()))
        .success();
        note!("compose as nobody ({profile}): {}", r.stdout.trim());
        assert_eq!(
            std::fs::metadata(&img).expect("the image").uid(),
            run(Command::new("id").args(["-u", "nobody"]))
                .stdout
                .trim()
                .parse::<u32>()
                .expect("uid of nobody"),
            "the image is written by nobody"
        );
        assert_sgdisk_clean(&img);
        let part = locate(&img, &layout, "data");
        let pf = dir.path().join(format!("{profile}.xfs"));
        extract_partition(&img, part, &pf);
        assert_xfs_repair_clean(&pf);
        let features = xfs_db(&pf, &["sb 0", "print features_incompat features_ro_compat"]);
        note!("{profile}: {}", features.trim().replace('\n', ", "));

        let m = Mount::read_only(&img, part, "xfs");
        let s = assert_trees_identical(
            &src,
            m.path(),
            Identity {
                ignore_at_root: &[".prestage"],
                owners: Ok(()),
                times: true,
            },
        );
        note!(
            "kernel mount ({profile}): {} entries identical to the source (types, modes, owners, \
             times to the ns, bytes, targets, {} device nodes/FIFOs, {} attributes, {} names in \
             hard-link groups)",
            s.entries,
            s.specials,
            s.xattrs,
            s.hardlinked
        );
        let (ws, gs) = (
            std::fs::metadata(&src).expect("stat"),
            std::fs::metadata(m.path()).expect("stat"),
        );
        assert_eq!(
            (gs.mode(), gs.uid(), gs.gid(), gs.mtime(), gs.mtime_nsec()),
            (ws.mode(), ws.uid(), ws.gid(), ws.mtime(), ws.mtime_nsec()),
            "the root directory's mode, owner and time"
        );
        assert_eq!(
            getfattr_dump(&src),
            getfattr_dump(m.path()),
            "getfattr -d -m -"
        );
        assert_eq!(stat_dump(&src), stat_dump(m.path()), "stat");
        let getcap = require("getcap", "libcap2-bin");
        let caps = |d: &Path| {
            run(Command::new(&getcap).arg("ping").current_dir(d))
                .success()
                .stdout
        };
        assert_eq!(caps(m.path()), caps(&src), "getcap");
        assert!(caps(m.path()).contains("cap_net_admin,cap_net_raw=ep"));
        note!(
            "getfattr -d -m -, stat and getcap ({}) print the same for the source and the image",
            caps(m.path()).trim()
        );
        drop(m);
        verify_ok(&img);

        // One attribute byte flipped in the image: a local value in an attribute leaf block.
        let at = find_in_image(&img, part, &m1[..64]);
        let block = part.offset + (at - part.offset) / 4096 * 4096;
        with_flip(&img, at, None, || {
            verify_fails(
                &img,
                &["mid", "attribute leaf block checksum", "CRC mismatch"],
            )
        });
        with_flip(&img, at, Some((block, 4096, 12)), || {
            verify_fails(
                &img,
                &["mid: extended attribute `user.m1` differs from the manifest"],
            )
        });
        // ... and in the inode: the file capability, a short-form attribute.
        let cap = xattrs_of(&src.join("ping"))[&b"security.capability".to_vec()].clone();
        let at = find_in_image(&img, part, &cap);
        let inode = part.offset + (at - part.offset) / 512 * 512;
        with_flip(&img, at + 4, Some((inode, 512, 100)), || {
            verify_fails(
                &img,
                &["ping: extended attribute `security.capability` differs from the manifest"],
            )
        });
        verify_ok(&img);
    }
}

/// One tar header (ustar), its checksum computed.
fn header(name: &str, kind: u8, size: usize, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"14577030000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// An archive of `(name, type, data, link)` members, with the end-of-archive blocks.
fn archive(members: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    for &(name, kind, data, link) in members {
        v.extend_from_slice(&header(name, kind, data.len(), link));
        v.extend_from_slice(data);
        v.resize(v.len().next_multiple_of(512), 0);
    }
    v.extend_from_slice(&[0u8; 1024]);
    v
}

#[test]
fn hostile_tars_are_refused_naming_the_member() {
    let dir = scratch("tar-hostile");
    let layout = layout(dir.path(), "rhel8");
    let good = archive(&[("a.txt", b'0', b"aaa", ""), ("b.txt", b'0', b"bbb", "")]);
    let mut cases: Vec<(&str, Vec<u8>, Vec<&str>)> = Vec::new();
    // Cut in the middle of a member's data.
    let mut cut = archive(&[("a.txt", b'0', &[7u8; 3000], "")]);
    cut.truncate(512 + 1000);
    cases.push((
        "cut-data",
        cut,
        vec!["member 1 \"a.txt\"", "truncated archive"],
    ));
    // Cut after a whole member, before the end-of-archive blocks.
    let mut cut = good.clone();
    cut.truncate(good.len() - 1024);
    cases.push((
        "cut-end",
        cut,
        vec!["member 2 \"b.txt\"", "truncated archive"],
    ));
    // A header whose checksum is wrong.
    let mut bad = good.clone();
    bad[1024 + 1] = b'X';
    cases.push((
        "checksum",
        bad,
        vec!["member 2", "\"bXtxt\"", "header checksum mismatch"],
    ));
    cases.push((
        "dotdot",
        archive(&[("../escape", b'0', b"x", "")]),
        vec!["member 1 \"../escape\"", "`..` component"],
    ));
    cases.push((
        "absolute",
        archive(&[("/etc/passwd", b'0', b"x", "")]),
        vec!["member 1 \"/etc/passwd\"", "absolute name"],
    ));
    cases.push((
        "link-missing",
        archive(&[("link", b'1', b"", "nothere")]),
        vec!["member 1 \"link\"", "hard link to `nothere`"],
    ));
    cases.push((
        "link-later",
        archive(&[("link", b'1', b"", "later"), ("later", b'0', b"x", "")]),
        vec!["member 1 \"link\"", "hard link to `later`"],
    ));
    cases.push((
        "through-symlink",
        archive(&[("a", b'2', b"", "/etc"), ("a/passwd", b'0', b"x", "")]),
        vec![
            "member 2 \"a/passwd\"",
            "parent `a` is not a directory (symlink)",
        ],
    ));
    cases.push((
        "sparse",
        archive(&[("s", b'S', b"", "")]),
        vec!["member 1 \"s\"", "GNU sparse"],
    ));
    let mut gz = vec![0x1f, 0x8b];
    gz.extend_from_slice(&good);
    cases.push(("gzip", gz, vec!["gzip-compressed archive"]));
    for (name, bytes, needles) in cases {
        let tar = dir.path().join(format!("{name}.tar"));
        std::fs::write(&tar, bytes).expect("writing the archive");
        let out = format!("{name}.raw");
        let r = run(&mut compose_cmd(
            &layout,
            &[("data", &tar)],
            &dir.path().join(&out),
        ));
        let mut all = vec![name];
        all.extend(needles);
        let line = assert_one_line_error(&r, dir.path(), &all[1..]);
        assert_no_output(dir.path(), &out);
        note!("{name}: {line}");
    }
}

#[test]
fn later_members_win_as_tar_extraction_has_it() {
    let dir = scratch("tar-later");
    let layout = layout(dir.path(), "rhel8");
    let tar = dir.path().join("dups.tar");
    std::fs::write(
        &tar,
        archive(&[
            ("dup", b'0', b"first", ""),
            ("dup", b'0', b"second", ""),
            ("d/", b'5', b"", ""),
            ("d/x", b'0', b"under d", ""),
            ("d", b'0', b"d is a file now", ""),
            ("f", b'0', b"one", ""),
            ("l", b'1', b"", "f"),
            ("f", b'0', b"two", ""),
        ]),
    )
    .expect("writing the archive");
    let img = dir.path().join("dups.raw");
    compose_ok(&layout, &[("data", &tar)], &img);
    verify_ok(&img);
    // The same archive, layout and SOURCE_DATE_EPOCH give the same bytes.
    let again = dir.path().join("dups-again.raw");
    compose_ok(&layout, &[("data", &tar)], &again);
    assert_same_bytes(&img, &again);
    note!("composed twice: byte-identical images");
    let part = locate(&img, &layout, "data");
    for (path, want) in [
        ("dup", &b"second"[..]),
        ("d", b"d is a file now"),
        ("f", b"two"),
        ("l", b"one"),
    ] {
        assert_eq!(grub_cat(&img, part, path), want, "/{path}");
    }
    let pf = dir.path().join("dups.xfs");
    extract_partition(&img, part, &pf);
    assert_xfs_repair_clean(&pf);
    note!(
        "later members won: /dup, /d (a file over a directory), /f; the hard link /l keeps the \
         inode it was made to (tar extraction's rule)"
    );
}

/// A PAX extended header (`x`) holding `records`, then the member's own header and data.
fn pax_member(records: &[(&str, &[u8])], name: &str, kind: u8, data: &[u8], link: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = 1 + k.len() + 1 + v.len() + 1;
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len += 1;
        }
        body.extend_from_slice(format!("{len} {k}=").as_bytes());
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    let mut v = Vec::new();
    v.extend_from_slice(&header("PaxHeader", b'x', body.len(), ""));
    v.extend_from_slice(&body);
    v.resize(v.len().next_multiple_of(512), 0);
    v.extend_from_slice(&header(name, kind, data.len(), link));
    v.extend_from_slice(data);
    v.resize(v.len().next_multiple_of(512), 0);
    v
}

/// A GNU long name (`L`) or long link (`K`) header and its data.
fn gnu_long(kind: u8, name: &str) -> Vec<u8> {
    let mut v = header("././@LongLink", kind, name.len() + 1, "").to_vec();
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v.resize(v.len().next_multiple_of(512), 0);
    v
}

#[test]
fn attributes_in_every_form_from_pax_records() {
    require_root("reading the attributes back through a kernel mount");
    let dir = scratch("tar-pax");
    let layout = layout(dir.path(), "rhel8");
    let v64k: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    let selinux = b"system_u:object_r:container_file_t:s0\0".to_vec();
    let leafvals: Vec<Vec<u8>> = (0..9).map(|i| small_bytes(100 + i, 380)).collect();
    let big400 = small_bytes(7, 400);
    let sec120 = small_bytes(8, 120);
    let dev300 = small_bytes(9, 300);
    let long_path = format!("{}/{}", "p".repeat(120), "q".repeat(80));
    let long_target = format!("{}/target", "t".repeat(150));
    let slink_target = "s".repeat(300);
    let mut t = Vec::new();
    t.extend(pax_member(
        &[
            ("SCHILY.xattr.trusted.rootattr", b"R"),
            ("uid", b"4242"),
            ("mtime", b"1700000000.5"),
        ],
        "./",
        b'5',
        b"",
        "",
    ));
    t.extend(pax_member(
        &[
            ("SCHILY.xattr.user.v64k", &v64k),
            ("SCHILY.xattr.security.selinux", &selinux),
            ("SCHILY.xattr.user.nl", b"a\nb"),
        ],
        "v64k",
        b'0',
        b"x",
        "",
    ));
    let names: Vec<String> = (0..9)
        .map(|i| format!("SCHILY.xattr.user.leaf{i}"))
        .collect();
    let recs: Vec<(&str, &[u8])> = names
        .iter()
        .zip(&leafvals)
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    t.extend(pax_member(&recs, "fullleaf", b'0', b"y", ""));
    for (d, n, rec) in [
        ("blockdir", 40, ("SCHILY.xattr.user.big", big400.as_slice())),
        (
            "leafdir",
            300,
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ),
        ("nodedir", 2000, ("SCHILY.xattr.user.n", &b"node"[..])),
    ] {
        t.extend(pax_member(&[rec], &format!("{d}/"), b'5', b"", ""));
        for i in 0..n {
            t.extend(archive_member(
                &format!("{d}/entry-{i:05}-with-a-name"),
                b'0',
                b"e",
            ));
        }
    }
    // The symlink's target is longer than a ustar link field: a PAX linkpath.
    t.extend(pax_member(
        &[
            ("SCHILY.xattr.security.x", &sec120),
            ("linkpath", slink_target.as_bytes()),
        ],
        "slink",
        b'2',
        b"",
        "",
    ));
    t.extend(pax_member(
        &[
            ("SCHILY.xattr.trusted.big", &dev300),
            ("SCHILY.xattr.trusted.a", b"s"),
        ],
        "dev",
        b'3',
        b"",
        "",
    ));
    t.extend(gnu_long(b'L', &long_path));
    t.extend(archive_member("ignored-short-name", b'0', b"long"));
    t.extend(gnu_long(b'L', "longlink"));
    t.extend(gnu_long(b'K', &long_target));
    t.extend(archive_member("x", b'2', b""));
    t.extend(pax_member(
        &[("uid", b"100000"), ("gid", b"200000")],
        "bigid",
        b'0',
        b"id",
        "",
    ));
    t.extend_from_slice(&[0u8; 1024]);
    let tar = dir.path().join("pax.tar");
    std::fs::write(&tar, &t).expect("writing the archive");
    let img = dir.path().join("pax.raw");
    compose_ok(&layout, &[("data", &tar)], &img);
    let part = locate(&img, &layout, "data");
    let pf = dir.path().join("pax.xfs");
    extract_partition(&img, part, &pf);
    assert_xfs_repair_clean(&pf);
    let field = |path: &str, f: &str| {
        xfs_db_field(
            &xfs_db(&pf, &[&format!("path {path}"), &format!("print {f}")]),
            f,
        )
    };
    for (path, aformat) in [
        ("/v64k", "2 (extents)"),
        ("/fullleaf", "2 (extents)"),
        ("/blockdir", "2 (extents)"),
        ("/leafdir", "1 (local)"),
        ("/nodedir", "1 (local)"),
        ("/slink", "1 (local)"),
        ("/dev", "2 (extents)"),
    ] {
        assert_eq!(
            field(path, "core.aformat"),
            aformat,
            "{path}: attribute fork format"
        );
    }
    assert_eq!(
        field("/dev", "core.forkoff"),
        "1",
        "/dev: attribute fork right after the device number"
    );
    assert_eq!(
        field("/slink", "core.format"),
        "2 (extents)",
        "/slink: remote, its attributes took the room"
    );
    for (path, form) in [
        ("/blockdir", "block"),
        ("/leafdir", "leaf"),
        ("/nodedir", "node"),
    ] {
        assert_eq!(xfs_dir_format(&pf, path), form, "{path}");
    }
    note!("xfs_db: attribute forks short form and extents (leaf, remote values), directories block/leaf/node with attributes, a symlink pushed out of the inode by its attributes, a device's attributes at fork offset 1");

    let m = Mount::read_only(&img, part, "xfs");
    let root = m.path();
    let x = |p: &str| xattrs_of(&root.join(p));
    let map = |kv: &[(&str, &[u8])]| -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        kv.iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect()
    };
    assert_eq!(
        x("v64k"),
        map(&[
            ("user.v64k", &v64k),
            ("security.selinux", &selinux),
            ("user.nl", b"a\nb")
        ])
    );
    let leaf: Vec<(String, &[u8])> = (0..9)
        .map(|i| (format!("user.leaf{i}"), leafvals[i].as_slice()))
        .collect();
    let leaf: Vec<(&str, &[u8])> = leaf.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(x("fullleaf"), map(&leaf));
    assert_eq!(x("blockdir"), map(&[("user.big", &big400)]));
    assert_eq!(x("leafdir"), map(&[("trusted.overlay.opaque", b"y")]));
    assert_eq!(x("nodedir"), map(&[("user.n", b"node")]));
    assert_eq!(x("slink"), map(&[("security.x", &sec120)]));
    assert_eq!(
        x("dev"),
        map(&[("trusted.big", &dev300), ("trusted.a", b"s")])
    );
    assert_eq!(x(""), map(&[("trusted.rootattr", b"R")]));
    assert_eq!(
        std::fs::read_link(root.join("slink"))
            .expect("readlink")
            .to_str(),
        Some(slink_target.as_str())
    );
    assert_eq!(
        std::fs::read_link(root.join("longlink"))
            .expect("readlink")
            .to_str(),
        Some(long_target.as_str())
    );
    assert_eq!(
        std::fs::read(root.join(&long_path)).expect("long path"),
        b"long"
    );
    assert_eq!(
        std::fs::read_dir(root.join("nodedir")).expect("ls").count(),
        2000
    );
    let md = std::fs::metadata(root.join("bigid")).expect("stat");
    assert_eq!((md.uid(), md.gid()), (100000, 200000));
    let rmd = std::fs::metadata(root).expect("stat");
    assert_eq!(
        (rmd.uid(), rmd.mtime(), rmd.mtime_nsec()),
        (4242, 1_700_000_000, 500_000_000)
    );
    let dmd = std::fs::symlink_metadata(root.join("dev")).expect("stat");
    assert_eq!(
        dmd.rdev(),
        rustix::fs::makedev(0, 0),
        "tar header has no device numbers here"
    );
    drop(m);
    note!("kernel mount: a 64 KiB value (17 remote blocks), a value with a newline, a full attribute leaf, attributes on directories of every form, a symlink, a device and the root; PAX linkpath, uid/gid, mtime with nanoseconds; GNU long names and link names");
    verify_ok(&img);

    // One leaf more than fits: refused, naming the member.
    let names: Vec<String> = (0..12)
        .map(|i| format!("SCHILY.xattr.user.over{i}"))
        .collect();
    let big = small_bytes(5, 380);
    let recs: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), big.as_slice())).collect();
    let mut t = pax_member(&recs, "toomany", b'0', b"z", "");
    t.extend_from_slice(&[0u8; 1024]);
    let tar = dir.path().join("toomany.tar");
    std::fs::write(&tar, &t).expect("writing the archive");
    let r = run(&mut compose_cmd(
        &layout,
        &[("data", &tar)],
        &dir.path().join("toomany.raw"),
    ));
    let line = assert_one_line_error(
        &r,
        dir.path(),
        &["/toomany", "node-format attribute trees are not supported"],
    );
    assert_no_output(dir.path(), "toomany.raw");
    note!("{line}");
}

/// One member without extension headers.
fn archive_member(name: &str, kind: u8, data: &[u8]) -> Vec<u8> {
    let mut v = header(name, kind, data.len(), "").to_vec();
    v.extend_from_slice(data);
    v.resize(v.len().next_multiple_of(512), 0);
    v
}
