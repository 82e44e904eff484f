//! Shared helpers of the reader's tests: scratch filesystems built by mkfs.xfs from protofiles,
//! xfs_db and xfs_repair as the reference, seeded names and bytes, and checks of byte locations
//! and directory hash indexes.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;

use super::bytes::{be16, be32, crc_ok, update_crc};
use super::da_hashname;
use super::dir::DIR_LEAF_OFFSET;
use super::file::READ_CHUNK;
use super::{ByteLoc, CrcRegion, DirForm, Extent, Xfs};
use crate::compose::diskio::ReadAt;

/// The settings of xfsprogs' `lts_4.19.conf`. xfsprogs 6.1 rejects the `nrext64=0` line that
/// the shipped file has in its `[metadata]` section, so nrext64 is passed with `-i` instead.
const LTS_4_19_CONF: &str = "[metadata]\nbigtime=0\ncrc=1\nfinobt=1\ninobtcount=0\n\
                             reflink=0\nrmapbt=0\n\n[inode]\nsparse=1\n";

pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;

pub(crate) fn find_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is required by these tests but was not found in PATH, /usr/sbin or \
                 /sbin: install xfsprogs (e.g. `apt-get install xfsprogs`)"
            )
        })
}

/// A scratch directory holding source files, a protofile and the image built from them.
pub(crate) struct Image {
    dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
}

impl Image {
    pub(crate) fn new() -> Image {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs.img");
        Image { dir, path }
    }

    pub(crate) fn source(&self, name: &str, data: &[u8]) -> String {
        let p = self.dir.path().join(name);
        fs::write(&p, data).unwrap();
        p.to_str().unwrap().to_string()
    }

    pub(crate) fn mkfs(&self, proto: &str, size: u64, extra: &[&str]) {
        let conf = self.dir.path().join("lts.conf");
        fs::write(&conf, LTS_4_19_CONF).unwrap();
        let proto_path = self.dir.path().join("proto");
        fs::write(&proto_path, proto).unwrap();
        File::create(&self.path).unwrap().set_len(size).unwrap();
        let mut args: Vec<String> = vec![
            "-f".into(),
            "-q".into(),
            "-K".into(),
            "-c".into(),
            format!("options={}", conf.display()),
        ];
        if !extra.iter().any(|a| a.contains("nrext64")) {
            args.extend(["-i".into(), "nrext64=0".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([
            "-p".into(),
            proto_path.display().to_string(),
            self.path.display().to_string(),
        ]);
        let out = Command::new(find_tool("mkfs.xfs"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mkfs.xfs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn file(&self) -> File {
        File::open(&self.path).unwrap()
    }

    pub(crate) fn open(&self) -> Xfs<File> {
        Xfs::open(self.file()).unwrap()
    }

    pub(crate) fn db(&self, cmds: &[&str]) -> String {
        let mut cmd = Command::new(find_tool("xfs_db"));
        cmd.arg("-r");
        for c in cmds {
            cmd.arg("-c").arg(c);
        }
        let out = cmd.arg(&self.path).output().unwrap();
        assert!(
            out.status.success(),
            "xfs_db {cmds:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `key = value` lines of an xfs_db `print`.
    pub(crate) fn db_fields(&self, cmds: &[&str]) -> HashMap<String, String> {
        self.db(cmds)
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    /// The data fork mapping as printed by `xfs_db -c 'inode N' -c bmap`.
    pub(crate) fn db_bmap(&self, ino: u64) -> Vec<Extent> {
        self.db(&[&format!("inode {ino}"), "bmap"])
            .lines()
            .filter(|l| l.starts_with("data offset"))
            .map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                Extent {
                    file_block: w[2].parse().unwrap(),
                    start_fsb: w[4].parse().unwrap(),
                    blocks: w[7].parse().unwrap(),
                    unwritten: w[9] == "1",
                }
            })
            .collect()
    }

    pub(crate) fn repair_check(&self) {
        let out = Command::new(find_tool("xfs_repair"))
            .arg("-n")
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xfs_repair -n found problems: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A unique protofile-safe name of `len` bytes (at least 7), mixing ASCII and multi-byte UTF-8.
pub(crate) fn gen_name(rng: &mut Rng, i: usize, len: usize) -> String {
    const PIECES: &[&str] = &[
        "a", "Z", "7", "_", "-", ".", "+", "é", "ß", "Ω", "日", "本", "😀",
    ];
    let mut s = format!("{i:06}");
    let len = len.max(s.len());
    loop {
        let p = PIECES[rng.below(PIECES.len() as u64) as usize];
        if s.len() + p.len() > len {
            break;
        }
        s.push_str(p);
    }
    while s.len() < len {
        s.push('x');
    }
    s
}

pub(crate) fn names(rng: &mut Rng, count: usize, max_len: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let len = match i % 7 {
                0 => max_len,
                1 => 7,
                _ => 7 + rng.below((max_len - 6) as u64) as usize,
            };
            gen_name(rng, i, len)
        })
        .collect()
}

pub(crate) fn read_dev(dev: &File, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    FileExt::read_exact_at(dev, &mut buf, offset).unwrap();
    buf
}

/// The bytes at `loc` are `expected` and the structure around them has a valid CRC.
pub(crate) fn check_loc(dev: &File, loc: &ByteLoc, expected: &[u8]) {
    assert_eq!(read_dev(dev, loc.offset, loc.len), expected, "{loc:?}");
    let r = &loc.region;
    assert!(r.start <= loc.offset && loc.offset + loc.len <= r.start + r.len);
    let region = read_dev(dev, r.start, r.len);
    assert!(crc_ok(&region, (r.crc_offset - r.start) as usize), "{r:?}");
}

pub(crate) fn collect_file<R: ReadAt>(fs: &Xfs<R>, ino: u64) -> Vec<u8> {
    let mut out = Vec::new();
    fs.read_file(ino, &mut |chunk: &[u8]| {
        assert!(!chunk.is_empty() && chunk.len() <= READ_CHUNK);
        out.extend_from_slice(chunk);
        Ok(())
    })
    .unwrap();
    out
}

pub(crate) fn lookup<R: ReadAt>(fs: &Xfs<R>, dir: u64, name: &str) -> u64 {
    fs.read_dir(dir)
        .unwrap()
        .into_iter()
        .find(|e| e.name == name.as_bytes())
        .unwrap_or_else(|| panic!("{name} not found"))
        .ino
}

/// Rewrites bytes inside a checksummed region and fixes its CRC, the way prestage patches.
pub(crate) fn patch_region(path: &std::path::Path, region: &CrcRegion, at: u64, data: &[u8]) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut buf = read_dev(&f, region.start, region.len);
    let rel = (at - region.start) as usize;
    buf[rel..rel + data.len()].copy_from_slice(data);
    update_crc(&mut buf, (region.crc_offset - region.start) as usize);
    f.write_all_at(&buf, region.start).unwrap();
}

/// Physical filesystem block of logical block `lb` of a mapping.
fn map_block(extents: &[Extent], lb: u64) -> u64 {
    let e = extents
        .iter()
        .find(|e| e.file_block <= lb && lb < e.file_block + e.blocks)
        .unwrap_or_else(|| panic!("logical block {lb} not mapped"));
    e.start_fsb + (lb - e.file_block)
}

/// Reads the directory block starting at logical fs block `lb`.
fn dir_block_at<R: ReadAt>(fs: &Xfs<R>, dev: &File, extents: &[Extent], lb: u64) -> Vec<u8> {
    let sb = fs.sb();
    let per = 1u64 << sb.dirblklog;
    let first = map_block(extents, lb);
    for i in 1..per {
        assert_eq!(map_block(extents, lb + i), first + i);
    }
    read_dev(dev, sb.fsb_to_byte(first), u64::from(sb.dir_block_size))
}

/// The (hash, name) pairs of a directory's hash index, each resolved to the name stored at
/// the data address the index points to.
fn hashed_names<R: ReadAt>(fs: &Xfs<R>, dev: &File, ino: u64) -> Vec<(u32, Vec<u8>)> {
    let sb = fs.sb();
    let dbs = u64::from(sb.dir_block_size);
    let per = 1u64 << sb.dirblklog;
    let extents = fs.inode(ino).unwrap().extents;
    let name_at = |addr: u32| -> Vec<u8> {
        let byte = u64::from(addr) * 8;
        let blk = dir_block_at(fs, dev, &extents, (byte / dbs) * per);
        let off = (byte % dbs) as usize;
        let len = blk[off + 8] as usize;
        blk[off + 9..off + 9 + len].to_vec()
    };
    let mut leaves: Vec<(u32, u32)> = Vec::new();
    match fs.dir_form(ino).unwrap() {
        DirForm::Shortform => panic!("shortform directories have no hash index"),
        DirForm::Block => {
            let blk = dir_block_at(fs, dev, &extents, 0);
            let n = blk.len();
            let count = be32(&blk, n - 8).unwrap() as usize;
            let start = n - 8 - count * 8;
            for i in 0..count {
                let e = start + i * 8;
                leaves.push((be32(&blk, e).unwrap(), be32(&blk, e + 4).unwrap()));
            }
        }
        DirForm::Leaf | DirForm::Node => {
            let leaf_lb = DIR_LEAF_OFFSET >> sb.blocklog;
            let free_lb = 2 * leaf_lb;
            let mut seen_leaf = false;
            for e in &extents {
                let mut lb = e.file_block.max(leaf_lb);
                while lb < (e.file_block + e.blocks).min(free_lb) {
                    let blk = dir_block_at(fs, dev, &extents, lb);
                    lb += per;
                    match be16(&blk, 8).unwrap() {
                        0x3df1 | 0x3dff => {}
                        0x3ebe => continue,
                        m => panic!("unexpected magic {m:#x} in the leaf range"),
                    }
                    seen_leaf = true;
                    assert!(crc_ok(&blk, 12));
                    let count = be16(&blk, 56).unwrap() as usize;
                    for i in 0..count {
                        let e = 64 + i * 8;
                        leaves.push((be32(&blk, e).unwrap(), be32(&blk, e + 4).unwrap()));
                    }
                }
            }
            assert!(seen_leaf);
        }
    }
    leaves
        .into_iter()
        .filter(|&(_, addr)| addr != 0)
        .map(|(hash, addr)| (hash, name_at(addr)))
        .collect()
}

/// Checks a directory listing against the names the protofile gave it, the hash index
/// against `da_hashname`, and every name location.
pub(crate) fn check_dir<R: ReadAt>(fs: &Xfs<R>, dev: &File, ino: u64, want: &[String]) {
    let listing = fs.read_dir(ino).unwrap();
    let mut got: Vec<Vec<u8>> = listing.iter().map(|e| e.name.clone()).collect();
    let mut want: Vec<Vec<u8>> = want.iter().map(|n| n.as_bytes().to_vec()).collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "directory {ino} listing differs from the protofile"
    );
    for e in &listing {
        check_loc(dev, &e.name_loc, &e.name);
        if fs.dir_form(ino).unwrap() != DirForm::Shortform {
            assert_eq!(e.name_loc.region.len, u64::from(fs.sb().dir_block_size));
            assert_eq!(e.name_loc.region.crc_offset, e.name_loc.region.start + 4);
        }
    }
    if fs.dir_form(ino).unwrap() == DirForm::Shortform {
        return;
    }
    let hashed = hashed_names(fs, dev, ino);
    for (hash, name) in &hashed {
        assert_eq!(
            da_hashname(name),
            *hash,
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    let mut hashed_names: Vec<Vec<u8>> = hashed
        .into_iter()
        .map(|(_, n)| n)
        .filter(|n| n != b"." && n != b"..")
        .collect();
    hashed_names.sort();
    assert!(
        hashed_names == want,
        "directory {ino} hash index differs from the listing"
    );
}

pub(crate) fn dir_proto(name: &str, entries: &[String], sub: Option<&str>) -> String {
    let mut p = format!("{name} d--755 0 0\n");
    for (i, n) in entries.iter().enumerate() {
        p += &match i % 10 {
            3 => format!("{n} r--644 0 0 1\n"),
            5 => format!("{n} l--777 0 0 target/{i}\n"),
            _ => format!("{n} p--644 0 0\n"),
        };
    }
    if let Some(sub) = sub {
        p += &format!("{sub} d--755 0 0\nf r--644 0 0 1\n$\n");
    }
    p + "$\n"
}

/// A device with one byte range replaced, to feed the reader corrupted metadata.
pub(crate) struct Overlay<'a> {
    pub(crate) base: &'a File,
    pub(crate) at: u64,
    pub(crate) data: Vec<u8>,
}

impl ReadAt for Overlay<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        ReadAt::read_at(self.base, offset, buf)?;
        let end = offset + buf.len() as u64;
        let pend = self.at + self.data.len() as u64;
        let from = offset.max(self.at);
        let to = end.min(pend);
        if from < to {
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&self.data[(from - self.at) as usize..(to - self.at) as usize]);
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        ReadAt::size(self.base)
    }
}
