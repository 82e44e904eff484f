//! Helpers shared by the integration tests: running `prestage`, generating content, locating
//! partitions in an image, and the independent checkers that judge what prestage wrote
//! (sgdisk, xfs_repair, xfs_db, grub-fstest, qemu-img, fsck.fat, mtools and, as root, a
//! read-only kernel mount).
//!
//! Every external tool is looked up with [`require`], which fails the test with the name of the
//! tool and of the Debian package that provides it: a missing tool never skips a check.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// A fixed timestamp for reproducible compositions.
pub const SOURCE_DATE_EPOCH: &str = "1700000000";

/// Prints one progress line to the test's log. It goes straight to the process's stderr (not
/// through the test harness's capture), so CI logs show what each test checked.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let t = std::thread::current();
        let line = format!("[{}] {}\n", t.name().unwrap_or("test"), format!($($arg)*));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

/// The prestage binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_prestage"))
}

/// The workspace root (where `layouts/` and `fixtures/` are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The path of `tool`; fails the test, naming the Debian package, when it is not installed.
pub fn require(tool: &str, package: &str) -> PathBuf {
    find_tool(tool).unwrap_or_else(|| {
        panic!(
            "required tool `{tool}` is not installed: install the Debian package `{package}` \
             (apt-get install --no-install-recommends {package})"
        )
    })
}

/// Whether the test runs with effective uid 0.
pub fn is_root() -> bool {
    euid() == 0
}

/// The effective uid of this process (from /proc/self/status).
pub fn euid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("no effective uid in /proc/self/status")
}

/// A fresh scratch directory under the system temp dir, removed (with everything in it) on drop.
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("prestage-test-{name}-"))
        .tempdir_in(std::env::temp_dir())
        .expect("creating a scratch directory")
}

static BIG_FILES: Mutex<()> = Mutex::new(());

/// Serialises the tests of one test binary that write gigabytes, so that they do not fill the
/// disk (and compete for the two cores) at the same time.
pub fn big_files_lock() -> MutexGuard<'static, ()> {
    BIG_FILES.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a finished command did.
pub struct Run {
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Fails the test, with the command and its output, unless it exited 0.
    pub fn success(self) -> Run {
        assert!(
            self.status.success(),
            "command failed ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.cmd,
            self.stdout,
            self.stderr
        );
        self
    }
    /// Both streams, for messages.
    pub fn both(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a command to completion, capturing its output.
pub fn run(cmd: &mut Command) -> Run {
    let desc = describe(cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    Run {
        cmd: desc,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// `prestage compose --layout L --content LABEL=DIR... -o OUT`, not yet run, with a fixed
/// SOURCE_DATE_EPOCH.
pub fn compose_cmd(layout: &Path, contents: &[(&str, &Path)], out: &Path) -> Command {
    let mut c = Command::new(bin());
    c.arg("compose").arg("--layout").arg(layout);
    for (label, dir) in contents {
        let mut arg = OsString::from(format!("{label}="));
        arg.push(dir.as_os_str());
        c.arg("--content").arg(arg);
    }
    c.arg("-o")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH);
    c
}

/// Composes and fails the test unless prestage exits 0 and the output exists.
pub fn compose_ok(layout: &Path, contents: &[(&str, &Path)], out: &Path) -> Run {
    let r = run(&mut compose_cmd(layout, contents, out)).success();
    assert!(
        out.is_file(),
        "compose exited 0 but {} does not exist",
        out.display()
    );
    note!("compose: {}", r.stdout.trim());
    r
}

/// `prestage verify IMAGE` must exit 0 and say OK.
pub fn verify_ok(image: &Path) -> Run {
    let r = run(Command::new(bin()).arg("verify").arg(image)).success();
    assert!(
        r.stdout.contains("OK"),
        "prestage verify printed no OK line: {}",
        r.both()
    );
    note!("prestage verify: {}", r.stdout.trim());
    r
}

/// Checks that a failed run is a clean prestage error: exit code 1, and stderr exactly one line
/// starting with `prestage: ` whose text contains every string of `needles` once the test's own
/// scratch directory `hide` is taken out of it (so that no needle is found in a temporary path).
/// Returns the whole line.
pub fn assert_one_line_error(r: &Run, hide: &Path, needles: &[&str]) -> String {
    assert!(
        !r.status.success(),
        "expected a failure, but it succeeded: {}\n{}",
        r.cmd,
        r.both()
    );
    assert_eq!(
        r.status.code(),
        Some(1),
        "expected exit code 1 from {}: {}",
        r.cmd,
        r.both()
    );
    assert!(
        r.stderr.ends_with('\n') && r.stderr.matches('\n').count() == 1,
        "stderr of {} is not exactly one line: {:?}",
        r.cmd,
        r.stderr
    );
    let line = r.stderr.trim_end_matches('\n').to_string();
    assert!(
        line.starts_with("prestage: "),
        "stderr does not start with `prestage: `: {line:?}"
    );
    let text = line.replace(&hide.display().to_string(), "<dir>");
    for n in needles {
        assert!(
            text.contains(n),
            "the error does not mention {n:?}: {line:?}"
        );
    }
    line
}

/// Asserts that `dir` holds neither `name` nor prestage's temporary `.name.partial-*` and
/// `.name.work-*` files, nor its `.name.lock`.
pub fn assert_no_output(dir: &Path, name: &str) {
    assert!(
        !dir.join(name).exists(),
        "{} exists after a failed compose",
        dir.join(name).display()
    );
    let leftovers = temp_leftovers(dir, name);
    assert!(
        leftovers.is_empty(),
        "temporary files left in {}: {leftovers:?}",
        dir.display()
    );
}

/// prestage's temporary files for output `name` in `dir` (and its lock file), sorted.
pub fn temp_leftovers(dir: &Path, name: &str) -> Vec<String> {
    let partial = format!(".{name}.partial-");
    let work = format!(".{name}.work-");
    let lock = format!(".{name}.lock");
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("listing the output directory")
        .map(|e| {
            e.expect("listing the output directory")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with(&partial) || n.starts_with(&work) || *n == lock)
        .collect();
    v.sort();
    v
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_layout(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).expect("writing a layout");
    p
}

/// Creates `path` (and its parents) with `data` and mode `mode`.
pub fn put_file(path: &Path, data: &[u8], mode: u32) {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).expect("creating parent directories");
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Creates directory `path` (and its parents) with mode `mode`.
pub fn put_dir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Deterministic bytes for small files: `len` bytes derived from `seed`.
pub fn small_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// Writes `size` bytes of incompressible pseudo-random data (xorshift64, 4 MiB at a time).
pub fn write_random_file(path: &Path, size: u64, seed: u64) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            w.copy_from_slice(&s.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        left -= n as u64;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// One GPT entry as sgdisk reports it.
#[derive(Debug, Clone)]
pub struct GptEntry {
    /// 1-based entry number (GRUB's `gptN`).
    pub number: usize,
    pub first: u64,
    pub last: u64,
    pub name: String,
}

/// The partition table of a raw image as `sgdisk -p` reads it: (sector size, entries).
pub fn sgdisk_table(img: &Path) -> (u64, Vec<GptEntry>) {
    let sgdisk = require("sgdisk", "gdisk");
    let r = run(Command::new(sgdisk).arg("-p").arg(img)).success();
    let sector = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Sector size (logical): "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sector size in sgdisk -p output:\n{}", r.stdout));
    let mut entries = Vec::new();
    let mut in_table = false;
    for line in r.stdout.lines() {
        if line.starts_with("Number") {
            in_table = true;
            continue;
        }
        if !in_table || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 6, "unexpected sgdisk -p line: {line:?}");
        entries.push(GptEntry {
            number: f[0].parse().expect("partition number"),
            first: f[1].parse().expect("first sector"),
            last: f[2].parse().expect("last sector"),
            name: f.get(6..).map(|n| n.join(" ")).unwrap_or_default(),
        });
    }
    (sector, entries)
}

/// `sgdisk -v` must find no problems in the image's GPT.
pub fn assert_sgdisk_clean(img: &Path) {
    let sgdisk = require("sgdisk", "gdisk");
    let r = run(Command::new(sgdisk).arg("-v").arg(img)).success();
    assert!(
        r.stdout.contains("No problems found"),
        "sgdisk -v {} found problems:\n{}",
        img.display(),
        r.both()
    );
    note!("sgdisk -v {}: No problems found", img.display());
}

/// Where a partition is in an image.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// 1-based GPT entry number.
    pub number: usize,
    /// Byte offset in the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Locates partition `label` in a raw image through sgdisk, and checks that it is exactly where
/// the layout (as prestage's library resolves it) puts it.
pub fn locate(img: &Path, layout: &Path, label: &str) -> Part {
    let l = prestage::compose::layout::Layout::load(layout)
        .unwrap_or_else(|e| panic!("loading {}: {e:#}", layout.display()));
    let (idx, lp) = l
        .partitions
        .iter()
        .enumerate()
        .find(|(_, p)| p.label == label)
        .unwrap_or_else(|| panic!("{} has no partition `{label}`", layout.display()));
    let (sector, entries) = sgdisk_table(img);
    assert_eq!(sector, l.sector_size, "sector size of {}", img.display());
    let e = entries.iter().find(|e| e.name == label).unwrap_or_else(|| {
        panic!(
            "sgdisk finds no partition named `{label}` in {}: {entries:?}",
            img.display()
        )
    });
    assert_eq!(e.number, idx + 1, "GPT entry number of `{label}`");
    assert_eq!(
        (e.first, e.last),
        (lp.start_lba, lp.end_lba),
        "sectors of `{label}`: sgdisk vs layout"
    );
    Part {
        number: e.number,
        offset: lp.offset(l.sector_size),
        size: lp.size(l.sector_size),
    }
}

/// Copies a partition out of a raw image into `dest` as a sparse file (only the image's data
/// ranges are copied; holes stay holes).
pub fn extract_partition(img: &Path, part: Part, dest: &Path) {
    use rustix::fs::{seek, SeekFrom};
    let src = File::open(img).unwrap_or_else(|e| panic!("opening {}: {e}", img.display()));
    let dst = File::create(dest).unwrap_or_else(|e| panic!("creating {}: {e}", dest.display()));
    dst.set_len(part.size)
        .expect("sizing the extracted partition");
    let end = part.offset + part.size;
    let mut pos = part.offset;
    let mut buf = vec![0u8; 4 << 20];
    while pos < end {
        let data = match seek(&src, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => panic!("SEEK_DATA in {}: {e}", img.display()),
        };
        if data >= end {
            break;
        }
        let hole = seek(&src, SeekFrom::Hole(data))
            .expect("SEEK_HOLE")
            .min(end);
        let mut at = data;
        while at < hole {
            let n = (hole - at).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], at)
                .expect("reading the image");
            dst.write_all_at(&buf[..n], at - part.offset)
                .expect("writing the extracted partition");
            at += n as u64;
        }
        pos = hole;
    }
    dst.sync_all().expect("syncing the extracted partition");
}

/// `xfs_repair -n -f PART` (no modify) must exit 0 on the extracted filesystem.
pub fn assert_xfs_repair_clean(part_file: &Path) {
    let tool = require("xfs_repair", "xfsprogs");
    let r = run(Command::new(tool).args(["-n", "-f"]).arg(part_file));
    assert!(
        r.status.success(),
        "xfs_repair -n found problems in {} ({}):\n{}",
        part_file.display(),
        r.status,
        r.both()
    );
    note!("xfs_repair -n -f {}: clean", part_file.display());
}

/// Runs read-only xfs_db commands on an extracted filesystem; returns stdout.
pub fn xfs_db(part_file: &Path, cmds: &[&str]) -> String {
    let tool = require("xfs_db", "xfsprogs");
    let mut c = Command::new(tool);
    c.arg("-r");
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    c.arg(part_file);
    let r = run(&mut c).success();
    assert!(
        r.stderr.trim().is_empty(),
        "xfs_db {cmds:?} complained: {}",
        r.stderr
    );
    r.stdout
}

/// The value of `field = value` in xfs_db output.
pub fn xfs_db_field(out: &str, field: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field} = ")))
        .unwrap_or_else(|| panic!("no `{field}` in xfs_db output:\n{out}"))
        .trim()
        .to_string()
}

/// The XFS directory format of `path` (no whitespace in it): "shortform", "block", "leaf" or
/// "node", read with xfs_db from the directory's inode and blocks.
pub fn xfs_dir_format(part_file: &Path, path: &str) -> &'static str {
    let p = format!("path {path}");
    let core = xfs_db(part_file, &[&p, "print core.format"]);
    match xfs_db_field(&core, "core.format").as_str() {
        "1 (local)" => return "shortform",
        "2 (extents)" | "3 (btree)" => {}
        other => panic!("{path}: unexpected directory inode format {other}"),
    }
    // The first block of the leaf section (32 GiB into the directory, 4 KiB blocks) holds a
    // single-leaf block (LEAF1), a da-btree node (node format), or nothing (block format).
    let bmap = xfs_db(part_file, &[&p, "bmap"]);
    if !bmap.lines().any(|l| l.starts_with("data offset 8388608 ")) {
        let b = xfs_db(part_file, &[&p, "dblock 0", "print bhdr.hdr.magic"]);
        assert_eq!(
            xfs_db_field(&b, "bhdr.hdr.magic"),
            "0x58444233",
            "{path}: block directory magic (XDB3)"
        );
        return "block";
    }
    let hdr = xfs_db(part_file, &[&p, "dblock 8388608", "print"]);
    if hdr.contains("lhdr.info.hdr.magic = 0x3df1") {
        "leaf"
    } else if hdr.contains("nhdr.info.hdr.magic = 0x3ebe") {
        "node"
    } else {
        panic!("{path}: unrecognised directory leaf block:\n{hdr}")
    }
}

/// Directories (paths relative to the root, `""` for the root) whose data fork is a btree,
/// found by walking the whole tree with xfs_db (`inode N`, `print core.format`, `ls`).
pub fn xfs_btree_dirs(part_file: &Path) -> BTreeSet<String> {
    let root = xfs_db_field(&xfs_db(part_file, &["sb 0", "print rootino"]), "rootino");
    let mut out = BTreeSet::new();
    let mut todo = vec![(String::new(), root)];
    while let Some((path, ino)) = todo.pop() {
        let inode = format!("inode {ino}");
        let text = xfs_db(part_file, &[&inode, "print core.format", "ls"]);
        if xfs_db_field(&text, "core.format") == "3 (btree)" {
            out.insert(path.clone());
        }
        for line in text.lines().filter(|l| !l.starts_with("core.format")) {
            // `OFFSET INUM TYPE HASH NAMELEN NAME (good)`: the name is the last NAMELEN bytes.
            let line = line
                .strip_suffix(" (good)")
                .unwrap_or_else(|| panic!("xfs_db ls: bad entry {line:?}"));
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() >= 6, "unexpected xfs_db ls line {line:?}");
            let namelen: usize = f[4].parse().expect("name length");
            let name = &line[line.len() - namelen..];
            if f[2] == "directory" && name != "." && name != ".." {
                let child = if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}/{name}")
                };
                todo.push((child, f[1].to_string()));
            }
        }
    }
    out
}

/// GRUB's own XFS driver reads every regular file of `dir`'s tree from partition N and compares
/// it byte for byte (`grub-fstest IMG cmp (loop0,gptN)/PATH LOCAL`), one call for the whole tree
/// unless some directories must be left out: `skip` names directories (relative paths) GRUB
/// 2.06 cannot read, which are then compared around.
pub fn assert_grub_cmp(img: &Path, part: Part, dir: &Path, skip: &BTreeSet<String>) {
    let tool = require("grub-fstest", "grub-common");
    let mut calls = 0;
    grub_cmp_below(&tool, img, part, dir, "", skip, &mut calls);
    note!(
        "grub-fstest cmp (loop0,gpt{})/ {}: equal ({calls} call(s){})",
        part.number,
        dir.display(),
        if skip.is_empty() {
            String::new()
        } else {
            format!(", leaving out {skip:?}")
        }
    );
}

fn grub_cmp_below(
    tool: &Path,
    img: &Path,
    part: Part,
    root: &Path,
    rel: &str,
    skip: &BTreeSet<String>,
    calls: &mut usize,
) {
    let inside = |p: &String| rel.is_empty() || p.starts_with(&format!("{rel}/"));
    if skip.iter().any(inside) {
        for e in fs::read_dir(root.join(rel))
            .expect("listing the source")
            .map(|e| e.expect("listing the source"))
        {
            let name = e.file_name().to_str().expect("UTF-8 name").to_string();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let t = e.file_type().expect("file type");
            if t.is_dir() && !skip.contains(&child) {
                grub_cmp_below(tool, img, part, root, &child, skip, calls);
            } else if t.is_file() {
                grub_cmp_one(tool, img, part, root, &child);
                *calls += 1;
            }
        }
    } else {
        grub_cmp_one(tool, img, part, root, rel);
        *calls += 1;
    }
}

fn grub_cmp_one(tool: &Path, img: &Path, part: Part, root: &Path, rel: &str) {
    let target = format!("(loop0,gpt{})/{rel}", part.number);
    let local = root.join(rel);
    let r = run(Command::new(tool)
        .arg(img)
        .arg("cmp")
        .arg(&target)
        .arg(&local));
    assert!(
        r.status.success() && !r.both().contains("compare fail"),
        "grub-fstest cmp {target} {} failed ({}):\n{}",
        local.display(),
        r.status,
        r.both()
    );
}

/// Reads `path` in the filesystem of partition N through GRUB (which follows symlinks).
pub fn grub_cat(img: &Path, part: Part, path: &str) -> Vec<u8> {
    let tool = require("grub-fstest", "grub-common");
    let target = format!("(loop0,gpt{})/{path}", part.number);
    let out = Command::new(tool)
        .arg(img)
        .arg("cat")
        .arg(&target)
        .output()
        .expect("running grub-fstest");
    assert!(
        out.status.success(),
        "grub-fstest cat {target} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A read-only loop mount of a byte range of an image, unmounted on drop (also when the test
/// fails while it is mounted).
pub struct Mount {
    point: tempfile::TempDir,
    mounted: bool,
}

impl Mount {
    /// `mount -t FSTYPE -o loop,ro,offset=..,sizelimit=.. IMG MNT` (XFS also gets `nouuid`, so
    /// two images with the same filesystem UUID can be mounted at once).
    pub fn read_only(img: &Path, part: Part, fstype: &str) -> Mount {
        require("mount", "mount");
        require("losetup", "mount");
        let point = scratch("mnt");
        let mut opts = format!("loop,ro,offset={},sizelimit={}", part.offset, part.size);
        if fstype == "xfs" {
            opts.push_str(",nouuid");
        }
        run(Command::new("mount")
            .args(["-t", fstype, "-o", &opts])
            .arg(img)
            .arg(point.path()))
        .success();
        Mount {
            point,
            mounted: true,
        }
    }
    pub fn path(&self) -> &Path {
        self.point.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount")
                .arg(self.point.path())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(self.point.path())
                    .status();
            }
            self.mounted = false;
        }
    }
}

/// What a tree comparison covered.
#[derive(Debug, Default, Clone, Copy)]
pub struct TreeStats {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub bytes: u64,
}

/// Compares the tree `got` (a mounted filesystem) with the source tree `want`: the same names in
/// every directory (besides `ignore_at_root` at the top of `got`), the same types, permission
/// bits (including setuid/setgid/sticky), file bytes and symlink targets, and every entry of
/// `got` owned by `owner`. The roots' own modes are not compared.
pub fn assert_trees_equal(
    want: &Path,
    got: &Path,
    ignore_at_root: &[&str],
    owner: (u32, u32),
) -> TreeStats {
    let mut stats = TreeStats::default();
    compare_dir(want, got, Path::new(""), ignore_at_root, owner, &mut stats);
    stats
}

fn list(dir: &Path) -> BTreeMap<OsString, fs::Metadata> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap_or_else(|err| panic!("listing {}: {err}", dir.display()));
            let md = fs::symlink_metadata(e.path())
                .unwrap_or_else(|err| panic!("lstat {}: {err}", e.path().display()));
            (e.file_name(), md)
        })
        .collect()
}

fn kind(md: &fs::Metadata) -> &'static str {
    let t = md.file_type();
    if t.is_file() {
        "file"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "special"
    }
}

fn compare_dir(
    want: &Path,
    got: &Path,
    rel: &Path,
    ignore: &[&str],
    owner: (u32, u32),
    stats: &mut TreeStats,
) {
    let w = list(&want.join(rel));
    let mut g = list(&got.join(rel));
    if rel.as_os_str().is_empty() {
        for i in ignore {
            g.remove(OsStr::new(i));
        }
    }
    let missing: Vec<_> = w.keys().filter(|k| !g.contains_key(*k)).collect();
    let extra: Vec<_> = g.keys().filter(|k| !w.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "directory /{}: missing from the image {missing:?}, extra in the image {extra:?}",
        rel.display()
    );
    for (name, wm) in &w {
        let gm = &g[name];
        let path = rel.join(name);
        let shown = format!("/{}", path.display());
        assert_eq!(kind(gm), kind(wm), "{shown:?}: type");
        assert_eq!(
            format!("{:04o}", gm.mode() & 0o7777),
            format!("{:04o}", wm.mode() & 0o7777),
            "{shown:?}: permission bits"
        );
        assert_eq!((gm.uid(), gm.gid()), owner, "{shown:?}: owner");
        match kind(wm) {
            "file" => {
                assert_eq!(gm.len(), wm.len(), "{shown:?}: size");
                assert_same_bytes(&want.join(&path), &got.join(&path));
                stats.files += 1;
                stats.bytes += wm.len();
            }
            "symlink" => {
                let wt = fs::read_link(want.join(&path)).expect("readlink");
                let gt = fs::read_link(got.join(&path)).expect("readlink");
                assert_eq!(
                    gt.as_os_str().as_bytes(),
                    wt.as_os_str().as_bytes(),
                    "{shown:?}: symlink target"
                );
                stats.symlinks += 1;
            }
            "dir" => {
                stats.dirs += 1;
                compare_dir(want, got, &path, ignore, owner, stats);
            }
            _ => panic!("{shown:?}: special file in the source tree"),
        }
    }
}

/// Two files have the same bytes (compared 4 MiB at a time).
pub fn assert_same_bytes(a: &Path, b: &Path) {
    let fa = File::open(a).unwrap_or_else(|e| panic!("opening {}: {e}", a.display()));
    let fb = File::open(b).unwrap_or_else(|e| panic!("opening {}: {e}", b.display()));
    let len = fa.metadata().expect("stat").len();
    assert_eq!(
        fb.metadata().expect("stat").len(),
        len,
        "{} and {}: sizes differ",
        a.display(),
        b.display()
    );
    let chunk = len.clamp(1, 4 << 20) as usize;
    let mut ba = vec![0u8; chunk];
    let mut bb = vec![0u8; chunk];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(ba.len() as u64) as usize;
        fa.read_exact_at(&mut ba[..n], at).expect("reading");
        fb.read_exact_at(&mut bb[..n], at).expect("reading");
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            panic!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                at + i as u64
            );
        }
        at += n as u64;
    }
}

/// Mounts partition `part` of a raw image read-only (as root) and compares its tree with `src`;
/// when not root, says that the mount check was not run.
pub fn mount_check(img: &Path, part: Part, src: &Path) {
    if !is_root() {
        note!(
            "mount check NOT run: not root (euid {}); the kernel's view was not compared",
            euid()
        );
        return;
    }
    let m = Mount::read_only(img, part, "xfs");
    let s = assert_trees_equal(src, m.path(), &[".prestage"], (0, 0));
    assert!(
        m.path().join(".prestage/manifest.json").is_file(),
        "no /.prestage/manifest.json in the mounted image"
    );
    note!(
        "kernel mount (ro loop, offset {}): {} files ({} bytes), {} dirs, {} symlinks equal to the source, \
         modes equal, owned by 0:0, nothing extra but /.prestage",
        part.offset,
        s.files,
        s.bytes,
        s.dirs,
        s.symlinks
    );
    drop(m);
}

/// The full XFS check of one partition of a raw image against its source tree: sgdisk -v,
/// xfs_repair -n on the extracted partition (and `inspect` with it, for xfs_db checks), GRUB's
/// comparison of every file, the kernel mount comparison (as root) and `prestage verify`.
pub fn check_xfs_image(
    img: &Path,
    layout: &Path,
    label: &str,
    src: &Path,
    inspect: impl FnOnce(&Path),
) -> Part {
    assert_sgdisk_clean(img);
    let part = locate(img, layout, label);
    let btree_dirs = {
        let tmp = tempfile::Builder::new()
            .prefix(".extracted-")
            .tempdir_in(img.parent().expect("image directory"))
            .expect("creating a directory for the extracted partition");
        let pf = tmp.path().join(format!("{label}.xfs"));
        extract_partition(img, part, &pf);
        assert_xfs_repair_clean(&pf);
        inspect(&pf);
        xfs_btree_dirs(&pf)
    };
    if !btree_dirs.is_empty() {
        // GRUB 2.06 (Debian bookworm) fails on any directory whose extent map is a btree, with
        // "invalid number of XFS root keys", also on filesystems mkfs.xfs filled by itself: such
        // directories are read by the kernel mount and `prestage verify` instead.
        note!("GRUB 2.06 cannot read btree-format directories; leaving {btree_dirs:?} to the kernel mount and verify");
    }
    assert_grub_cmp(img, part, src, &btree_dirs);
    mount_check(img, part, src);
    verify_ok(img);
    part
}

/// A throwaway containers-storage (its own storage.conf, driver vfs), for loading payloads with
/// the real skopeo.
pub struct Storage {
    _dir: tempfile::TempDir,
    pub conf: PathBuf,
}

impl Storage {
    pub fn new() -> Storage {
        let dir = scratch("storage");
        let conf = dir.path().join("storage.conf");
        fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                dir.path().display()
            ),
        )
        .expect("writing storage.conf");
        Storage { _dir: dir, conf }
    }

    /// `skopeo` with this storage.
    pub fn skopeo(&self) -> Command {
        let mut c = Command::new(require("skopeo", "skopeo"));
        c.env("CONTAINERS_STORAGE_CONF", &self.conf);
        c
    }

    /// `skopeo inspect --raw containers-storage:REF | sha256sum` must be REF's digest.
    pub fn assert_digest(&self, r: &str) {
        let out = self
            .skopeo()
            .args(["inspect", "--raw"])
            .arg(format!("containers-storage:{r}"))
            .output()
            .expect("running skopeo inspect");
        assert!(
            out.status.success(),
            "{r} is not in the storage: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        use sha2::Digest as _;
        let got = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&out.stdout)));
        let want = r.rsplit('@').next().expect("a by-digest reference");
        assert_eq!(got, want, "digest of {r} as stored");
    }

    /// Loads every image of a mounted payload partition's lists (`ai-images.txt`,
    /// `ocp-images.txt`) under its exact by-digest name, as the node does: `shared` through its
    /// OCI layouts and shared blob directory, `ztp` by untarring each `<name>.tgz` in a scratch
    /// copy and copying its `dir:`. Returns the references loaded.
    pub fn load_payload(&self, root: &Path, payload: &str) -> BTreeSet<String> {
        let list = |name: &str| -> Vec<String> {
            fs::read_to_string(root.join(name))
                .unwrap_or_else(|e| panic!("{name} on the partition: {e}"))
                .lines()
                .map(str::to_string)
                .collect()
        };
        let (ai, ocp) = (list("ai-images.txt"), list("ocp-images.txt"));
        let all: BTreeSet<String> = ai.iter().chain(&ocp).cloned().collect();
        let scratch_dir = scratch("load");
        for r in &all {
            let name = r
                .rsplit('/')
                .next()
                .expect("a reference")
                .replacen(':', "_", 1);
            if payload == "shared" {
                let stage = if ocp.contains(r) {
                    "ocp-images"
                } else {
                    "ai-images"
                };
                let out = self
                    .skopeo()
                    .current_dir(root)
                    .args(["copy", "-q", "--src-shared-blob-dir", "blobs"])
                    .arg(format!("oci:{stage}/{name}"))
                    .arg(format!("containers-storage:{r}"))
                    .output()
                    .expect("running skopeo copy");
                assert!(
                    out.status.success(),
                    "skopeo copy of {r}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            } else {
                let tgz = root.join(format!("{name}.tgz"));
                let out = Command::new(require("tar", "tar"))
                    .current_dir(scratch_dir.path())
                    .args(["--force-local", "-xzf"])
                    .arg(&tgz)
                    .output()
                    .expect("running tar");
                assert!(
                    out.status.success(),
                    "untarring {}: {}",
                    tgz.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                let out = self
                    .skopeo()
                    .args(["copy", "-q"])
                    .arg(format!("dir:{}", scratch_dir.path().join(&name).display()))
                    .arg(format!("containers-storage:{r}"))
                    .output()
                    .expect("running skopeo copy");
                assert!(
                    out.status.success(),
                    "skopeo copy of {r}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                fs::remove_dir_all(scratch_dir.path().join(&name)).expect("removing a copy");
            }
            self.assert_digest(r);
        }
        all
    }
}

/// The extended attributes of `path` (not following a symlink), as the kernel lists them.
pub fn xattrs_of(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let n = rustix::fs::llistxattr_query(path)
        .unwrap_or_else(|e| panic!("listxattr {}: {e}", path.display()));
    let mut names = vec![0u8; n];
    let n = rustix::fs::llistxattr(path, &mut names[..])
        .unwrap_or_else(|e| panic!("listxattr {}: {e}", path.display()));
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        let len = rustix::fs::lgetxattr_query(path, name_os)
            .unwrap_or_else(|e| panic!("getxattr {}: {e}", path.display()));
        let mut v = vec![0u8; len];
        let len = rustix::fs::lgetxattr(path, name_os, &mut v[..])
            .unwrap_or_else(|e| panic!("getxattr {}: {e}", path.display()));
        v.truncate(len);
        out.insert(name.to_vec(), v);
    }
    out
}

/// What [`assert_trees_identical`] compares besides names, types, permission bits, bytes,
/// symlink targets, device numbers, attributes and hard-link identity.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    /// Names at the top of `got` that are not compared.
    pub ignore_at_root: &'a [&'a str],
    /// Compare owners (else `got` must be owned by this uid/gid).
    pub owners: Result<(), (u32, u32)>,
    /// Compare modification times to the nanosecond.
    pub times: bool,
}

/// What a full tree comparison covered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Identical {
    pub entries: usize,
    pub files: usize,
    pub bytes: u64,
    pub xattrs: usize,
    pub hardlinked: usize,
    pub specials: usize,
}

/// Compares a mounted filesystem `got` with the source tree `want`, entry by entry: names,
/// types, permission bits (special bits included), owners, modification times, sizes and bytes,
/// symlink targets, device numbers, every extended attribute (names and values), and which
/// names share an inode (hard links). Panics at the first difference.
pub fn assert_trees_identical(want: &Path, got: &Path, how: Identity) -> Identical {
    fn walk(root: &Path, rel: &Path, ignore: &[&str], out: &mut Vec<(PathBuf, fs::Metadata)>) {
        let mut names: Vec<_> = fs::read_dir(root.join(rel))
            .unwrap_or_else(|e| panic!("listing {}: {e}", root.join(rel).display()))
            .map(|e| e.expect("listing").file_name())
            .filter(|n| !(rel.as_os_str().is_empty() && ignore.iter().any(|i| n == *i)))
            .collect();
        names.sort();
        for n in names {
            let p = rel.join(&n);
            let md = fs::symlink_metadata(root.join(&p))
                .unwrap_or_else(|e| panic!("lstat {}: {e}", root.join(&p).display()));
            let dir = md.is_dir();
            out.push((p.clone(), md));
            if dir {
                walk(root, &p, ignore, out);
            }
        }
    }
    let (mut w, mut g) = (Vec::new(), Vec::new());
    walk(want, Path::new(""), &[], &mut w);
    walk(got, Path::new(""), how.ignore_at_root, &mut g);
    let wn: Vec<&PathBuf> = w.iter().map(|(p, _)| p).collect();
    let gn: Vec<&PathBuf> = g.iter().map(|(p, _)| p).collect();
    if wn != gn {
        let ws: BTreeSet<_> = wn.iter().collect();
        let gs: BTreeSet<_> = gn.iter().collect();
        let missing: Vec<_> = ws.difference(&gs).take(5).collect();
        let extra: Vec<_> = gs.difference(&ws).take(5).collect();
        panic!(
            "the trees differ: missing from the image {missing:?}, extra in the image {extra:?}"
        );
    }
    let mut stats = Identical::default();
    let mut w_inodes: BTreeMap<(u64, u64), Vec<&PathBuf>> = BTreeMap::new();
    let mut g_inodes: BTreeMap<(u64, u64), Vec<&PathBuf>> = BTreeMap::new();
    for ((p, wm), (_, gm)) in w.iter().zip(&g) {
        let shown = format!("/{}", p.display());
        stats.entries += 1;
        assert_eq!(
            gm.mode(),
            wm.mode(),
            "{shown:?}: type and permission bits ({:o} in the image, {:o} in the source)",
            gm.mode(),
            wm.mode()
        );
        match how.owners {
            Ok(()) => assert_eq!(
                (gm.uid(), gm.gid()),
                (wm.uid(), wm.gid()),
                "{shown:?}: owner"
            ),
            Err(o) => assert_eq!((gm.uid(), gm.gid()), o, "{shown:?}: owner"),
        }
        if how.times {
            assert_eq!(
                (gm.mtime(), gm.mtime_nsec()),
                (wm.mtime(), wm.mtime_nsec()),
                "{shown:?}: modification time"
            );
        }
        let t = wm.file_type();
        if t.is_file() {
            assert_eq!(gm.len(), wm.len(), "{shown:?}: size");
            assert_same_bytes(&want.join(p), &got.join(p));
            stats.files += 1;
            stats.bytes += wm.len();
        } else if t.is_symlink() {
            assert_eq!(
                fs::read_link(got.join(p)).expect("readlink"),
                fs::read_link(want.join(p)).expect("readlink"),
                "{shown:?}: symlink target"
            );
        } else if !t.is_dir() {
            assert_eq!(gm.rdev(), wm.rdev(), "{shown:?}: device number");
            stats.specials += 1;
        }
        let (wx, gx) = (xattrs_of(&want.join(p)), xattrs_of(&got.join(p)));
        assert!(
            wx == gx,
            "{shown:?}: extended attributes differ: image has {:?}, source has {:?}",
            gx.keys()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>(),
            wx.keys()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>()
        );
        stats.xattrs += wx.len();
        if !t.is_dir() {
            assert_eq!(gm.nlink(), wm.nlink(), "{shown:?}: link count");
            w_inodes.entry((wm.dev(), wm.ino())).or_default().push(p);
            g_inodes.entry((gm.dev(), gm.ino())).or_default().push(p);
        }
    }
    fn groups(m: BTreeMap<(u64, u64), Vec<&PathBuf>>) -> BTreeSet<Vec<&PathBuf>> {
        m.into_values().filter(|v| v.len() > 1).collect()
    }
    let (wg, gg) = (groups(w_inodes), groups(g_inodes));
    assert_eq!(gg, wg, "names sharing an inode (hard links) differ");
    stats.hardlinked = wg.iter().map(Vec::len).sum();
    stats
}

/// A command that runs `program` as nobody:nogroup with no supplementary groups.
pub fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new(require("setpriv", "util-linux"));
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(program);
    c
}

/// The prestage binary at a path nobody can execute: the build's own when nobody can reach it,
/// otherwise a copy in `dir`.
pub fn binary_for_nobody(dir: &Path) -> PathBuf {
    let own = bin();
    let r = run(as_nobody(&own).arg("--version"));
    if r.status.success() {
        return own;
    }
    let copy = dir.join("prestage");
    if !copy.exists() {
        fs::copy(&own, &copy).expect("copying the binary");
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    copy
}

/// Fails the test unless it runs as root (what it checks needs root; CI runs the tests as root).
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root; CI runs the tests as root (euid here: {})",
        euid()
    );
}
