//! XFS by reserve-and-fill: an XFS filesystem holding a content set, built without root and
//! without letting mkfs.xfs copy any file data.
//!
//! 1. [`proto`] writes a protofile in which every regular file is a *reserved* entry of its exact
//!    size, with same-hash stand-ins for names a protofile cannot spell.
//! 2. mkfs.xfs (run through duct, its stderr surfaced) builds the filesystem in a sparse,
//!    partition-sized file: metadata plus unwritten extents for every file.
//! 3. [`ondisk`] reads the result back: the tree, each file's inode and extents.
//! 4. The metadata is finished in place: real names and symlink targets over the stand-ins, each
//!    file's size, its extents marked written (also in extent btree leaves), the prealloc flag
//!    cleared, modes, owners and timestamps set, and every touched checksum recomputed.
//! 5. The result, a [`Built`], tells the emit stage which byte ranges of the partition file are
//!    metadata to copy and where each file's bytes go; the file data itself is streamed from its
//!    source straight into the output image and never passes through the partition file.

pub mod ondisk;
pub mod proto;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use crate::compose::content::{Content, Kind};
use crate::compose::layout::{Partition, XfsOptions};
use crate::compose::plan::{BLOCK, INODE};
use ondisk::{update_crc, ByteLoc, FileKind, Xfs, INODE_CRC_OFFSET};

/// Where a stretch of a file's bytes goes in the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Offset in the file.
    pub file_offset: u64,
    /// Offset in the partition.
    pub part_offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// A regular file to stream into the image.
#[derive(Debug, Clone)]
pub struct Fill {
    /// Content path of the file.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Where its bytes go, in file order, covering `[0, size)` exactly.
    pub runs: Vec<Run>,
}

/// A finished XFS partition, minus file data.
#[derive(Debug)]
pub struct Built {
    /// The sparse partition-sized file mkfs.xfs made, with finished metadata.
    pub part_file: PathBuf,
    /// Byte ranges of `part_file` to copy into the image: everything mkfs.xfs wrote.
    pub metadata: Vec<(u64, u64)>,
    /// Byte ranges that must be written as zeros: the parts of the log mkfs.xfs zeroed by punching
    /// holes, which would otherwise keep a used disk's old bytes when a sparse image is flashed.
    pub zeros: Vec<(u64, u64)>,
    /// Regular files with data, keyed by content path.
    pub fills: BTreeMap<String, Fill>,
}

/// Inode core offsets (v3 inodes) and values beyond the ones [`ondisk`] exports.
mod core {
    pub use super::ondisk::{
        DIFLAG_PREALLOC, DI_DATA_FORK_OFFSET as LITERAL, DI_FLAGS_OFFSET as FLAGS,
        DI_GID_OFFSET as GID, DI_MODE_OFFSET as MODE, DI_SIZE_OFFSET as SIZE, DI_UID_OFFSET as UID,
    };
    pub const FORMAT: usize = 5;
    pub const ATIME: usize = 32;
    pub const MTIME: usize = 40;
    pub const CTIME: usize = 48;
    pub const NEXTENTS: usize = 76;
    pub const FLAGS2: usize = 120;
    pub const CRTIME: usize = 144;
    pub const DIFLAG2_BIGTIME: u64 = 0x8;
    pub const FMT_EXTENTS: u8 = 2;
    pub const FMT_BTREE: u8 = 3;
}

use ondisk::{BMBT_CRC_OFFSET, BMBT_HEADER_LEN as BMBT_RECS_OFFSET};

/// Runs mkfs.xfs, reporting its own message on failure.
fn mkfs(
    part_file: &Path,
    size: u64,
    sector: u64,
    opts: &XfsOptions,
    label: &str,
    uuid: Uuid,
    proto: &Path,
) -> Result<()> {
    let f = File::create(part_file).with_context(|| format!("creating {}", part_file.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {}", part_file.display()))?;
    drop(f);
    let (m, i) = opts.profile.mkfs_opts();
    let mut args: Vec<String> = vec![
        "-f".into(),
        "-q".into(),
        "-K".into(),
        // The filesystem's sector size must be at least the disk's (4Kn disks).
        "-s".into(),
        format!("size={sector}"),
        "-b".into(),
        format!("size={BLOCK}"),
        "-m".into(),
        format!("{m},uuid={uuid}"),
        "-i".into(),
        format!("size={INODE},{i}"),
        "-L".into(),
        label.into(),
    ];
    if let Some(n) = opts.agcount {
        args.push("-d".into());
        args.push(format!("agcount={n}"));
    }
    if let Some(l) = opts.log_size {
        args.push("-l".into());
        args.push(format!("size={l}"));
    }
    args.push("-p".into());
    args.push(proto.display().to_string());
    args.push(part_file.display().to_string());
    let out = duct::cmd("mkfs.xfs", &args)
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::anyhow!("mkfs.xfs not found: install xfsprogs (apt-get install xfsprogs)")
            } else {
                anyhow::anyhow!("running mkfs.xfs: {e}")
            }
        })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let msg = msg.trim().replace('\n', "; ");
        if msg.contains("No space left") || msg.contains("[28 ") {
            bail!("mkfs.xfs ran out of space in the {size}-byte partition `{label}` (the size estimate was too low; make the partition larger): {msg}");
        }
        bail!("mkfs.xfs failed ({}): {msg}", out.status);
    }
    Ok(())
}

/// Sorts and merges overlapping or touching ranges.
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, l) in v {
        match out.last_mut() {
            Some((ps, pl)) if *ps + *pl >= s => *pl = (*pl).max(s + l - *ps),
            _ => out.push((s, l)),
        }
    }
    out
}

/// The parts of `range` not covered by the sorted, disjoint `covered` ranges.
fn subtract(range: (u64, u64), covered: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut at, end) = (range.0, range.0 + range.1);
    let mut out = Vec::new();
    for &(s, l) in covered {
        if s + l <= at || s >= end {
            continue;
        }
        if s > at {
            out.push((at, s - at));
        }
        at = at.max(s + l);
    }
    if at < end {
        out.push((at, end - at));
    }
    out
}

/// Reads, changes and re-checksums one structure of the partition file.
fn patch(
    f: &File,
    start: u64,
    len: u64,
    crc_offset: u64,
    edit: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, start)
        .with_context(|| format!("reading metadata at {start}"))?;
    edit(&mut buf)?;
    update_crc(&mut buf, (crc_offset - start) as usize);
    f.write_all_at(&buf, start)
        .with_context(|| format!("writing metadata at {start}"))
}

/// Overwrites bytes described by `loc` with `bytes`, fixing the containing checksum.
fn patch_bytes(f: &File, loc: &ByteLoc, bytes: &[u8]) -> Result<()> {
    if loc.len != bytes.len() as u64 {
        bail!(
            "internal error: stand-in is {} bytes, the real bytes {}",
            loc.len,
            bytes.len()
        );
    }
    let r = &loc.region;
    patch(f, r.start, r.len, r.crc_offset, |buf| {
        let at = (loc.offset - r.start) as usize;
        buf.get_mut(at..at + bytes.len())
            .context("internal error: name outside its block")?
            .copy_from_slice(bytes);
        Ok(())
    })
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Encodes a timestamp (seconds since the epoch) for an inode with or without bigtime.
fn timestamp(secs: i64, bigtime: bool) -> [u8; 8] {
    if bigtime {
        // Nanoseconds since 1901-12-13T20:45:52Z (the most negative 32-bit time).
        let ns = (secs + (1i64 << 31)).max(0) as u64 * 1_000_000_000;
        ns.to_be_bytes()
    } else {
        let s = secs.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&s.to_be_bytes());
        out
    }
}

/// Sets an inode's access, modification, change and creation times to `secs`.
fn set_times(inode: &mut [u8], secs: i64) {
    let t = timestamp(secs, be64(inode, core::FLAGS2) & core::DIFLAG2_BIGTIME != 0);
    for at in [core::ATIME, core::MTIME, core::CTIME, core::CRTIME] {
        inode[at..at + 8].copy_from_slice(&t);
    }
}

/// Clears the unwritten flag of `n` packed extent records starting at `at`.
fn mark_written(buf: &mut [u8], at: usize, n: usize) -> Result<()> {
    for i in 0..n {
        let b = buf
            .get_mut(at + i * 16)
            .context("extent record outside its block")?;
        *b &= 0x7f;
    }
    Ok(())
}

/// Builds the XFS filesystem for `content` in `work/<label>.xfs`, finished except for file data.
pub fn build(
    part: &Partition,
    sector: u64,
    opts: &XfsOptions,
    uuid: Uuid,
    content: &Content,
    mtime: i64,
    work: &Path,
) -> Result<Built> {
    let (label, size, fs_label) = (
        part.label.as_str(),
        part.size(sector),
        part.fs_label.as_str(),
    );
    let proto = proto::build(content)
        .with_context(|| format!("partition `{label}`: writing the protofile"))?;
    let proto_path = work.join(format!("{label}.proto"));
    std::fs::write(&proto_path, &proto.text)
        .with_context(|| format!("writing {}", proto_path.display()))?;
    let part_file = work.join(format!("{label}.xfs"));
    mkfs(&part_file, size, sector, opts, fs_label, uuid, &proto_path)
        .with_context(|| format!("partition `{label}`"))?;

    let f = File::options()
        .read(true)
        .write(true)
        .open(&part_file)
        .with_context(|| format!("opening {}", part_file.display()))?;
    let fs = Xfs::open(&f)
        .with_context(|| format!("partition `{label}`: reading what mkfs.xfs made"))?;
    let sb = fs.sb();
    check_features(sb, opts)?;
    if u64::from(sb.block_size) != BLOCK || u64::from(sb.inode_size) != INODE {
        bail!(
            "mkfs.xfs made {}-byte blocks and {}-byte inodes, expected {BLOCK} and {INODE}",
            sb.block_size,
            sb.inode_size
        );
    }
    let walk = fs.walk().context("listing the new filesystem")?;
    if walk.len() != content.len() {
        bail!(
            "mkfs.xfs created {} entries, the content has {}",
            walk.len(),
            content.len()
        );
    }
    let mut by_path: BTreeMap<&str, (u64, ByteLoc)> = BTreeMap::new();
    for w in &walk {
        let path = proto.proto_paths.get(&w.path).with_context(|| {
            format!(
                "mkfs.xfs created an unexpected entry {:?}",
                String::from_utf8_lossy(&w.path)
            )
        })?;
        by_path.insert(path.as_str(), (w.ino, w.name_loc));
    }

    // Real names over the stand-ins (same length: only bytes and checksums change; one-byte
    // names also get their hash index entry corrected, which keeps its place in the order).
    for (path, stand_in) in &proto.renamed {
        let (_, loc) = &by_path[path.as_str()];
        let e = content
            .get(path)
            .context("internal error: renamed entry not in content")?;
        let real = e.name().as_bytes();
        patch_bytes(&f, loc, real).with_context(|| format!("naming {path}"))?;
        let (old, new) = (ondisk::da_hashname(stand_in), ondisk::da_hashname(real));
        if old != new {
            let dir_ino = match e.parent() {
                "" => sb.root_ino,
                p => {
                    by_path
                        .get(p)
                        .context("internal error: parent not created")?
                        .0
                }
            };
            fix_leaf_hash(&fs, &f, dir_ino, old, new).with_context(|| format!("naming {path}"))?;
        }
    }

    // Symlinks: mkfs.xfs (6.1 at least) writes remote targets without the v5 block header, so
    // remote symlink blocks are rewritten whole; inline stand-in targets get their real bytes.
    for e in content.entries() {
        let Kind::Symlink(target) = &e.kind else {
            continue;
        };
        let (ino, _) = by_path[e.path.as_str()];
        let info = fs
            .inode(ino)
            .with_context(|| format!("reading symlink {}", e.path))?;
        if info.format == core::FMT_EXTENTS {
            write_remote_symlink(&f, sb, ino, &info.extents, target)
                .with_context(|| format!("writing symlink {}", e.path))?;
        } else if proto.retargeted.contains_key(&e.path) {
            let (stand_in, locs) = fs
                .read_symlink(ino)
                .with_context(|| format!("reading symlink {}", e.path))?;
            if stand_in.len() != target.len() {
                bail!(
                    "symlink {}: mkfs.xfs stored {} bytes, expected {}",
                    e.path,
                    stand_in.len(),
                    target.len()
                );
            }
            let mut at = 0usize;
            for loc in &locs {
                let n = loc.len as usize;
                patch_bytes(&f, loc, &target[at..at + n])
                    .with_context(|| format!("writing symlink target of {}", e.path))?;
                at += n;
            }
        }
    }

    // Inodes: mode, owner, times; regular files get their size and written extents.
    let mut fills = BTreeMap::new();
    let root = (sb.root_ino, 0o755u32, 0u32, 0u32, None::<(&str, u64)>);
    let mut todo = vec![root];
    for e in content.entries() {
        let (ino, _) = by_path[e.path.as_str()];
        let file = matches!(e.kind, Kind::File).then_some((e.path.as_str(), e.size));
        todo.push((ino, e.mode, e.uid, e.gid, file));
    }
    for (ino, mode, uid, gid, file) in todo {
        let info = fs
            .inode(ino)
            .with_context(|| format!("reading inode {ino}"))?;
        let mut leaves = Vec::new();
        if let Some((path, size)) = file.filter(|&(_, s)| s > 0) {
            if !matches!(info.kind, FileKind::File) {
                bail!("{path}: mkfs.xfs did not create a regular file");
            }
            let runs = runs_for(path, size, &info.extents, sb)?;
            fills.insert(
                path.to_string(),
                Fill {
                    path: path.to_string(),
                    size,
                    runs,
                },
            );
            if info.format == core::FMT_BTREE {
                leaves = info.bmbt_leaves.clone();
            } else if info.format != core::FMT_EXTENTS {
                bail!("{path}: unexpected data fork format {}", info.format);
            }
        }
        let ino_at = info.byte_offset;
        patch(&f, ino_at, INODE, ino_at + INODE_CRC_OFFSET as u64, |b| {
            let fmt = b[core::MODE..core::MODE + 2][0] & 0xf0;
            let new_mode = (u16::from(fmt) << 8) | (mode & 0o7777) as u16;
            b[core::MODE..core::MODE + 2].copy_from_slice(&new_mode.to_be_bytes());
            b[core::UID..core::UID + 4].copy_from_slice(&uid.to_be_bytes());
            b[core::GID..core::GID + 4].copy_from_slice(&gid.to_be_bytes());
            set_times(b, mtime);
            if let Some((_, size)) = file.filter(|&(_, s)| s > 0) {
                b[core::SIZE..core::SIZE + 8].copy_from_slice(&size.to_be_bytes());
                let flags = be16(b, core::FLAGS) & !core::DIFLAG_PREALLOC;
                b[core::FLAGS..core::FLAGS + 2].copy_from_slice(&flags.to_be_bytes());
                if b[core::FORMAT] == core::FMT_EXTENTS {
                    let n = u32::from_be_bytes([
                        b[core::NEXTENTS],
                        b[core::NEXTENTS + 1],
                        b[core::NEXTENTS + 2],
                        b[core::NEXTENTS + 3],
                    ]);
                    mark_written(b, core::LITERAL, n as usize)?;
                }
            }
            Ok(())
        })
        .with_context(|| format!("finishing inode {ino}"))?;
        for leaf in leaves {
            patch(&f, leaf, BLOCK, leaf + BMBT_CRC_OFFSET as u64, |b| {
                let n = be16(b, 6) as usize;
                mark_written(b, BMBT_RECS_OFFSET, n)
            })
            .with_context(|| format!("finishing the extent btree of inode {ino}"))?;
        }
    }
    // The realtime bitmap and summary inodes exist even without a realtime device; they only get
    // the same timestamps, so that a fixed SOURCE_DATE_EPOCH gives byte-identical filesystems.
    let mut raw_sb = [0u8; 80];
    f.read_exact_at(&mut raw_sb, 0)
        .context("reading the superblock")?;
    for at in [64, 72] {
        let ino = be64(&raw_sb, at);
        let ino_at = sb.ino_to_byte(ino);
        patch(&f, ino_at, INODE, ino_at + INODE_CRC_OFFSET as u64, |b| {
            set_times(b, mtime);
            Ok(())
        })
        .with_context(|| format!("setting the timestamps of inode {ino}"))?;
    }
    f.sync_all().context("syncing the partition file")?;
    let (log_at, log_len) = sb.log_byte_range();
    let metadata = merge(crate::compose::diskio::data_ranges(&part_file)?);
    let zeros = subtract((log_at, log_len), &metadata);
    Ok(Built {
        part_file,
        metadata,
        zeros,
        fills,
    })
}

/// Replaces hash `old` by `new` in the hash index of directory `dir_ino` (block, leaf and node
/// forms; short-form directories have none). The caller guarantees that no other entry hashes
/// between the two, so the index stays sorted; in a node-form directory the entry must not be the
/// last of its leaf block, whose hash is also a key in the node above.
fn fix_leaf_hash<R: crate::compose::diskio::ReadAt>(
    fs: &Xfs<R>,
    f: &File,
    dir_ino: u64,
    old: u32,
    new: u32,
) -> Result<()> {
    use ondisk::DirForm;
    let form = fs.dir_form(dir_ino)?;
    if form == DirForm::Shortform {
        return Ok(());
    }
    let sb = fs.sb();
    let dbs = u64::from(sb.dir_block_size);
    let info = fs.inode(dir_ino)?;
    let map = |lb: u64| -> Result<u64> {
        let x = info
            .extents
            .iter()
            .find(|x| x.file_block <= lb && lb < x.file_block + x.blocks)
            .context("directory block not mapped")?;
        Ok(sb.fsb_to_byte(x.start_fsb + (lb - x.file_block)))
    };
    // (byte of the block, offset of the first entry, entry count) of every hash index block.
    let mut blocks: Vec<(u64, usize, usize)> = Vec::new();
    let mut buf = vec![0u8; dbs as usize];
    if form == DirForm::Block {
        let at = map(0)?;
        f.read_exact_at(&mut buf, at)
            .context("reading the directory block")?;
        let n = buf.len();
        let count = u32::from_be_bytes([buf[n - 8], buf[n - 7], buf[n - 6], buf[n - 5]]) as usize;
        let first = n
            .checked_sub(8 + count * 8)
            .context("bad directory block tail")?;
        blocks.push((at, first, count));
    } else {
        let per = 1u64 << sb.dirblklog;
        let leaf_lb = ondisk::DIR_LEAF_OFFSET >> sb.blocklog;
        for x in &info.extents {
            let mut lb = x.file_block.max(leaf_lb);
            while lb < (x.file_block + x.blocks).min(2 * leaf_lb) {
                let at = map(lb)?;
                lb += per;
                f.read_exact_at(&mut buf, at)
                    .context("reading a directory leaf block")?;
                if matches!(be16(&buf, 8), 0x3df1 | 0x3dff) {
                    blocks.push((at, 64, be16(&buf, 56) as usize));
                }
            }
        }
    }
    for (at, first, count) in blocks {
        f.read_exact_at(&mut buf, at)
            .context("reading a directory hash block")?;
        let hit = (0..count).find(|&i| {
            let e = first + i * 8;
            buf.get(e..e + 8)
                .is_some_and(|b| b[..4] == old.to_be_bytes() && b[4..] != [0; 4])
        });
        let Some(i) = hit else { continue };
        if form == DirForm::Node && i + 1 == count {
            bail!("the name is the last of its hash block in a node-format directory; rename it or add it to a smaller directory");
        }
        let crc_at = if form == DirForm::Block { 4 } else { 12 };
        return patch(f, at, dbs, at + crc_at, |b| {
            let e = first + i * 8;
            b[e..e + 4].copy_from_slice(&new.to_be_bytes());
            Ok(())
        });
    }
    bail!("hash {old:#x} not found in the directory's hash index")
}

/// Writes a remote symlink block as the kernel would: the v5 `XSLM` header (magic, byte count,
/// filesystem UUID, owner inode, disk address), the target, and the block checksum.
fn write_remote_symlink(
    f: &File,
    sb: &ondisk::Superblock,
    ino: u64,
    extents: &[ondisk::Extent],
    target: &[u8],
) -> Result<()> {
    const HEADER: usize = 56;
    let bs = sb.block_size as usize;
    let [x] = extents else {
        bail!(
            "a {}-byte symlink target in {} extents is not supported",
            target.len(),
            extents.len()
        );
    };
    if x.blocks != 1 || target.len() > bs - HEADER {
        bail!(
            "a {}-byte symlink target over {} blocks is not supported",
            target.len(),
            x.blocks
        );
    }
    let at = sb.fsb_to_byte(x.start_fsb);
    let mut blk = vec![0u8; bs];
    blk[..4].copy_from_slice(b"XSLM");
    blk[8..12].copy_from_slice(&(target.len() as u32).to_be_bytes());
    blk[16..32].copy_from_slice(&sb.meta_uuid);
    blk[32..40].copy_from_slice(&ino.to_be_bytes());
    blk[40..48].copy_from_slice(&(at / 512).to_be_bytes());
    blk[HEADER..HEADER + target.len()].copy_from_slice(target);
    update_crc(&mut blk, 12);
    f.write_all_at(&blk, at)
        .with_context(|| format!("writing the symlink block at {at}"))
}

/// Checks that mkfs.xfs enabled no feature outside the layout's profile.
fn check_features(sb: &ondisk::Superblock, opts: &XfsOptions) -> Result<()> {
    let (ro, incompat) = (sb.features_ro_compat, sb.features_incompat);
    let (ro_ok, in_ok) = opts.profile.allowed_features();
    if ro & !ro_ok != 0 || incompat & !in_ok != 0 {
        bail!(
            "mkfs.xfs enabled features outside the `{}` profile (ro-compat {:#x}, incompat {:#x}); \
             this xfsprogs needs more features switched off to stay mountable by the target kernel",
            opts.profile.name(),
            ro & !ro_ok,
            incompat & !in_ok
        );
    }
    Ok(())
}

/// Maps a reserved file's extents to runs, checking they cover exactly its blocks.
fn runs_for(
    path: &str,
    size: u64,
    extents: &[ondisk::Extent],
    sb: &ondisk::Superblock,
) -> Result<Vec<Run>> {
    let bs = u64::from(sb.block_size);
    let mut runs = Vec::with_capacity(extents.len());
    let mut next_block = 0u64;
    for x in extents {
        if x.file_block != next_block || !x.unwritten {
            bail!("{path}: mkfs.xfs reserved an unexpected extent map (block {} of file, written: {})", x.file_block, !x.unwritten);
        }
        let file_offset = x.file_block * bs;
        let len = (x.blocks * bs).min(size.saturating_sub(file_offset));
        if len > 0 {
            runs.push(Run {
                file_offset,
                part_offset: sb.fsb_to_byte(x.start_fsb),
                len,
            });
        }
        next_block += x.blocks;
    }
    if next_block * bs < size {
        bail!(
            "{path}: mkfs.xfs reserved {} bytes for a {size}-byte file",
            next_block * bs
        );
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_encode() {
        assert_eq!(timestamp(1, false), [0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            timestamp(0, true),
            ((1u64 << 31) * 1_000_000_000).to_be_bytes()
        );
    }

    #[test]
    fn subtracts_ranges() {
        assert_eq!(
            subtract((10, 20), &[(0, 12), (15, 2), (25, 100)]),
            vec![(12, 3), (17, 8)]
        );
        assert_eq!(subtract((10, 5), &[]), vec![(10, 5)]);
    }

    #[test]
    fn merges_ranges() {
        assert_eq!(
            merge(vec![(10, 5), (0, 4), (4, 2), (20, 1)]),
            vec![(0, 6), (10, 5), (20, 1)]
        );
    }
}
