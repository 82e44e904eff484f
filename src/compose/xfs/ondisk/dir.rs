//! Directories in all four v3 forms: shortform (inline in the inode), single block (`XDB3`), and
//! leaf and node directories, whose entries live in data blocks (`XDD3`) below the 32 GiB leaf
//! offset (the hash index above it is not needed to list a directory and is not read), including
//! directory blocks larger than the filesystem block; and the walk over the whole tree.
//!
//! Every directory block is checked (magic, CRC32C, its own address, owner inode, filesystem UUID)
//! and every entry is bounds-checked against the block's data area, with its name, file type and
//! inode number validated. The walk refuses a directory reached twice (a cycle) and nesting deeper
//! than [`MAX_WALK_DEPTH`] levels.

use std::collections::HashSet;

use anyhow::{anyhow, bail, ensure, Context, Result};

use super::bmap::Extent;
use super::bytes::{be16, be32, be64, check_crc, field, to_usize, u8_at};
use super::inode::{
    inode_region, FileKind, RawInode, DI_DATA_FORK_OFFSET, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL,
};
use super::{ByteLoc, CrcRegion, Xfs};
use crate::compose::diskio::ReadAt;

/// Offset of the CRC inside a v3 directory data block.
pub(crate) const DIR_DATA_CRC_OFFSET: usize = 4;
const DIR3_BLOCK_MAGIC: u32 = 0x5844_4233; // "XDB3"
const DIR3_DATA_MAGIC: u32 = 0x5844_4433; // "XDD3"
const DIR3_DATA_HEADER_LEN: usize = 64;
const DIR_BLOCK_TAIL_LEN: usize = 8;
const DIR_LEAF_ENTRY_LEN: usize = 8;
const DIR_FREE_TAG: u16 = 0xffff;

/// Byte offset in a directory's address space where the hash index (leaf) blocks start.
pub const DIR_LEAF_OFFSET: u64 = 32 << 30;

/// Deepest directory nesting [`Xfs::walk`] follows.
const MAX_WALK_DEPTH: usize = 2048;

/// The XFS directory name hash (`xfs_da_hashname`), stored in directory hash indexes.
pub fn da_hashname(name: &[u8]) -> u32 {
    let mut hash: u32 = 0;
    let mut groups = name.chunks_exact(4);
    for g in groups.by_ref() {
        hash = (u32::from(g[0]) << 21)
            ^ (u32::from(g[1]) << 14)
            ^ (u32::from(g[2]) << 7)
            ^ u32::from(g[3])
            ^ hash.rotate_left(7 * 4);
    }
    match *groups.remainder() {
        [a, b, c] => {
            (u32::from(a) << 14) ^ (u32::from(b) << 7) ^ u32::from(c) ^ hash.rotate_left(7 * 3)
        }
        [a, b] => (u32::from(a) << 7) ^ u32::from(b) ^ hash.rotate_left(7 * 2),
        [a] => u32::from(a) ^ hash.rotate_left(7),
        _ => hash,
    }
}

/// One directory entry (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirEntry {
    /// Entry name (raw bytes, no NUL or `/`).
    pub name: Vec<u8>,
    /// Inode number it points to.
    pub ino: u64,
    /// File type code stored in the entry (`XFS_DIR3_FT_*`), 0 without the ftype feature.
    pub ftype: u8,
    /// Where the name bytes live: in the directory inode (shortform) or a directory data block.
    pub name_loc: ByteLoc,
}

/// One entry found by [`Xfs::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkEntry {
    /// Path relative to the root, components joined with `/`, no leading slash.
    pub path: Vec<u8>,
    /// Inode number.
    pub ino: u64,
    /// File type, from the inode.
    pub kind: FileKind,
    /// Where the last path component's name bytes live.
    pub name_loc: ByteLoc,
}

/// How a directory is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirForm {
    /// Inline in the inode.
    Shortform,
    /// One directory block holding entries and hash index (`XDB3`).
    Block,
    /// Data blocks plus a single hash index block.
    Leaf,
    /// Data blocks plus a hash index btree and free-space index.
    Node,
}

/// A directory block read from disk.
struct DirBlock {
    byte: u64,
    buf: Vec<u8>,
}

impl<R: ReadAt> Xfs<R> {
    /// Lists directory `ino` in on-disk order, without `.` and `..`. Handles shortform, block,
    /// leaf and node directories.
    pub(crate) fn read_dir(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let raw = self.raw_inode(ino)?;
        ensure!(
            raw.kind() == FileKind::Dir,
            "inode {ino} is not a directory (mode {:#o})",
            raw.mode
        );
        self.read_dir_raw(&raw)
            .with_context(|| format!("reading directory inode {ino}"))
    }

    /// How directory `ino` is stored.
    pub fn dir_form(&self, ino: u64) -> Result<DirForm> {
        let raw = self.raw_inode(ino)?;
        ensure!(
            raw.kind() == FileKind::Dir,
            "inode {ino} is not a directory (mode {:#o})",
            raw.mode
        );
        if raw.format == FMT_LOCAL {
            return Ok(DirForm::Shortform);
        }
        let map = self.fork_map(&raw)?;
        self.dir_form_of(&raw, &map.extents())
    }

    fn dir_form_of(&self, raw: &RawInode, extents: &[Extent]) -> Result<DirForm> {
        match raw.format {
            FMT_LOCAL => return Ok(DirForm::Shortform),
            FMT_EXTENTS | FMT_BTREE => {}
            other => bail!("directory has unsupported data fork format {other}"),
        }
        let per_dirblk = 1u64 << self.sb.dirblklog;
        let last_end = extents
            .last()
            .map(|e| e.file_block + e.blocks)
            .ok_or_else(|| anyhow!("directory has no blocks"))?;
        let leaf_fsb = DIR_LEAF_OFFSET >> self.sb.blocklog;
        if last_end == per_dirblk {
            ensure!(
                raw.size == u64::from(self.sb.dir_block_size),
                "single-block directory has size {} (expected {})",
                raw.size,
                self.sb.dir_block_size
            );
            Ok(DirForm::Block)
        } else if last_end == leaf_fsb + per_dirblk {
            Ok(DirForm::Leaf)
        } else {
            Ok(DirForm::Node)
        }
    }

    fn read_dir_raw(&self, raw: &RawInode) -> Result<Vec<DirEntry>> {
        if raw.format == FMT_LOCAL {
            return self.read_shortform_dir(raw);
        }
        let map = self.fork_map(raw)?;
        let extents = map.extents();
        let form = self.dir_form_of(raw, &extents)?;
        let single = form == DirForm::Block;
        let mut out = Vec::new();
        self.for_each_dir_data_block(&extents, |dblk, phys_fsb| {
            let blk = self
                .read_dir_block(raw.ino, phys_fsb, single)
                .with_context(|| format!("directory block at directory offset block {dblk}"))?;
            self.parse_dir_data_block(raw.ino, &blk, single, &mut out)
                .with_context(|| {
                    format!(
                        "directory block at directory offset block {dblk} (byte {})",
                        blk.byte
                    )
                })
        })?;
        Ok(out)
    }

    /// Calls `f(logical fs block, physical fsb)` for each directory data block (those below the
    /// leaf offset), in logical order. Multi-block directory blocks must be contiguous on disk.
    fn for_each_dir_data_block(
        &self,
        extents: &[Extent],
        mut f: impl FnMut(u64, u64) -> Result<()>,
    ) -> Result<()> {
        let per = 1u64 << self.sb.dirblklog;
        let leaf_fsb = DIR_LEAF_OFFSET >> self.sb.blocklog;
        let mut last = None;
        for e in extents {
            if e.file_block >= leaf_fsb {
                break;
            }
            let end = (e.file_block + e.blocks).min(leaf_fsb);
            let mut lb = e.file_block & !(per - 1);
            while lb < end {
                if last != Some(lb) {
                    let phys = self.map_contiguous(extents, lb, per).with_context(|| {
                        format!("directory block at directory offset block {lb}")
                    })?;
                    f(lb, phys)?;
                    last = Some(lb);
                }
                lb += per;
            }
        }
        Ok(())
    }

    /// Physical start of `count` logical blocks from `lb`, which must be mapped, written and
    /// physically contiguous.
    fn map_contiguous(&self, extents: &[Extent], lb: u64, count: u64) -> Result<u64> {
        let mut start = None;
        for i in 0..count {
            let want = lb + i;
            let idx = extents.partition_point(|e| e.file_block + e.blocks <= want);
            let e = extents
                .get(idx)
                .filter(|e| e.file_block <= want)
                .ok_or_else(|| anyhow!("logical block {want} is not mapped (hole)"))?;
            ensure!(!e.unwritten, "logical block {want} is an unwritten extent");
            let phys = e.start_fsb + (want - e.file_block);
            match start {
                None => start = Some(phys),
                Some(s) => ensure!(
                    phys == s + i,
                    "directory block is split across non-contiguous disk extents (unsupported)"
                ),
            }
        }
        start.ok_or_else(|| anyhow!("empty directory block"))
    }

    fn read_dir_block(&self, owner: u64, phys_fsb: u64, single: bool) -> Result<DirBlock> {
        let dbs = self.sb.dir_block_size as usize;
        let byte = self
            .sb
            .check_fsb_range(phys_fsb, 1u64 << self.sb.dirblklog)?;
        let buf = self.read(byte, dbs)?;
        let magic = be32(&buf, 0)?;
        let want = if single {
            DIR3_BLOCK_MAGIC
        } else {
            DIR3_DATA_MAGIC
        };
        ensure!(
            magic == want,
            "bad directory block magic {magic:#010x} (expected {want:#010x}) at byte {byte}"
        );
        check_crc(&buf, DIR_DATA_CRC_OFFSET)
            .with_context(|| format!("directory block checksum at byte {byte}"))?;
        self.check_self_describing(&buf, byte, 8, 40, 24, owner)
            .with_context(|| format!("directory block header at byte {byte}"))?;
        Ok(DirBlock { byte, buf })
    }

    fn parse_dir_data_block(
        &self,
        dir_ino: u64,
        blk: &DirBlock,
        single: bool,
        out: &mut Vec<DirEntry>,
    ) -> Result<()> {
        let buf = &blk.buf;
        let len = buf.len();
        let end = if single {
            let count = to_usize(
                u64::from(be32(buf, len - DIR_BLOCK_TAIL_LEN)?),
                "leaf count",
            )?;
            count
                .checked_mul(DIR_LEAF_ENTRY_LEN)
                .and_then(|l| len.checked_sub(DIR_BLOCK_TAIL_LEN + l))
                .filter(|&e| e >= DIR3_DATA_HEADER_LEN)
                .ok_or_else(|| anyhow!("block tail claims {count} leaf entries, too many"))?
        } else {
            len
        };
        let region = CrcRegion {
            start: blk.byte,
            len: len as u64,
            crc_offset: blk.byte + DIR_DATA_CRC_OFFSET as u64,
        };
        let ftype_len = usize::from(self.sb.has_ftype);
        let mut pos = DIR3_DATA_HEADER_LEN;
        while pos < end {
            if be16(buf, pos)? == DIR_FREE_TAG {
                let size = usize::from(be16(buf, pos + 2)?);
                ensure!(
                    size >= 8 && size % 8 == 0 && pos + size <= end,
                    "unused entry at offset {pos} has invalid length {size}"
                );
                let tag = usize::from(be16(buf, pos + size - 2)?);
                ensure!(tag == pos, "unused entry at offset {pos} has tag {tag}");
                pos += size;
                continue;
            }
            let ino = be64(buf, pos)?;
            let namelen = usize::from(u8_at(buf, pos + 8)?);
            ensure!(namelen > 0, "entry at offset {pos} has an empty name");
            let size = (8 + 1 + namelen + ftype_len + 2 + 7) & !7;
            ensure!(
                pos + size <= end,
                "entry at offset {pos} ({size} bytes) runs past the data area end {end}"
            );
            let name = field(buf, pos + 9, namelen)?;
            let ftype = if self.sb.has_ftype {
                u8_at(buf, pos + 9 + namelen)?
            } else {
                0
            };
            let tag = usize::from(be16(buf, pos + size - 2)?);
            ensure!(tag == pos, "entry at offset {pos} has tag {tag}");
            if name != b"." && name != b".." {
                let name_off = blk.byte + (pos + 9) as u64;
                out.push(self.make_entry(dir_ino, name, ino, ftype, name_off, region)?);
            }
            pos += size;
        }
        Ok(())
    }

    fn make_entry(
        &self,
        dir_ino: u64,
        name: &[u8],
        ino: u64,
        ftype: u8,
        name_off: u64,
        region: CrcRegion,
    ) -> Result<DirEntry> {
        let shown = String::from_utf8_lossy(name);
        ensure!(
            !name.contains(&b'/') && !name.contains(&0),
            "entry name {shown:?} contains '/' or NUL"
        );
        ensure!(ftype < 9, "entry {shown:?} has invalid file type {ftype}");
        self.sb.check_ino(ino).with_context(|| {
            format!("entry {shown:?} in directory {dir_ino} points to a bad inode")
        })?;
        Ok(DirEntry {
            name: name.to_vec(),
            ino,
            ftype,
            name_loc: ByteLoc {
                offset: name_off,
                len: name.len() as u64,
                region,
            },
        })
    }

    fn read_shortform_dir(&self, raw: &RawInode) -> Result<Vec<DirEntry>> {
        let fork = raw.data_fork()?;
        let size = to_usize(raw.size, "shortform directory size")?;
        let sf = fork.get(..size).ok_or_else(|| {
            anyhow!(
                "shortform directory size {size} exceeds the {}-byte data fork",
                fork.len()
            )
        })?;
        let count = usize::from(u8_at(sf, 0)?);
        let i8count = u8_at(sf, 1)?;
        let ino_len = if i8count == 0 { 4 } else { 8 };
        let read_ino = |off: usize| -> Result<u64> {
            if ino_len == 4 {
                be32(sf, off).map(u64::from)
            } else {
                be64(sf, off)
            }
        };
        let parent = read_ino(2).context("shortform parent pointer")?;
        self.sb
            .check_ino(parent)
            .context("shortform parent pointer")?;
        let region = inode_region(raw.byte, self.sb.inode_size);
        let ftype_len = usize::from(self.sb.has_ftype);
        let mut pos = 2 + ino_len;
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let namelen =
                usize::from(u8_at(sf, pos).with_context(|| format!("shortform entry {i} header"))?);
            ensure!(namelen > 0, "shortform entry {i} has an empty name");
            let name =
                field(sf, pos + 3, namelen).with_context(|| format!("shortform entry {i} name"))?;
            let ftype = if self.sb.has_ftype {
                u8_at(sf, pos + 3 + namelen)?
            } else {
                0
            };
            let ino = read_ino(pos + 3 + namelen + ftype_len)
                .with_context(|| format!("shortform entry {i} inode number"))?;
            let name_off = raw.byte + (DI_DATA_FORK_OFFSET + pos + 3) as u64;
            out.push(self.make_entry(raw.ino, name, ino, ftype, name_off, region)?);
            pos += 3 + namelen + ftype_len + ino_len;
        }
        Ok(out)
    }

    /// Every entry under the root directory: parents before their children, each directory's
    /// entries in on-disk order (a depth-first pre-order walk). Fails on directory cycles and on
    /// nesting deeper than 2048 levels.
    pub fn walk(&self) -> Result<Vec<WalkEntry>> {
        let root = self.sb.root_ino;
        let mut visited = HashSet::new();
        visited.insert(root);
        let mut out = Vec::new();
        let first = self.read_dir(root).context("reading the root directory")?;
        let mut stack: Vec<(Vec<u8>, std::vec::IntoIter<DirEntry>)> =
            vec![(Vec::new(), first.into_iter())];
        while let Some((prefix, iter)) = stack.last_mut() {
            let Some(entry) = iter.next() else {
                stack.pop();
                continue;
            };
            let mut path = prefix.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&entry.name);
            let shown = String::from_utf8_lossy(&path).into_owned();
            let raw = self
                .raw_inode(entry.ino)
                .with_context(|| format!("inode of /{shown}"))?;
            let kind = raw.kind();
            if self.sb.has_ftype && entry.ftype != kind.dir_ftype() {
                bail!(
                    "directory entry /{shown} says file type {} but inode {} is {kind:?}",
                    entry.ftype,
                    entry.ino
                );
            }
            out.push(WalkEntry {
                path: path.clone(),
                ino: entry.ino,
                kind,
                name_loc: entry.name_loc,
            });
            if kind == FileKind::Dir {
                ensure!(
                    visited.insert(entry.ino),
                    "directory /{shown} (inode {}) was already visited: directory cycle",
                    entry.ino
                );
                ensure!(
                    stack.len() < MAX_WALK_DEPTH,
                    "directory /{shown} is nested deeper than {MAX_WALK_DEPTH} levels"
                );
                let children = self
                    .read_dir_raw(&raw)
                    .with_context(|| format!("reading directory /{shown} (inode {})", entry.ino))?;
                stack.push((path, children.into_iter()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::xfs::ondisk::bytes::update_crc;
    use crate::compose::xfs::ondisk::test_support::*;

    #[test]
    fn da_hashname_known_values() {
        assert_eq!(da_hashname(b""), 0);
        assert_eq!(da_hashname(b"."), 0x2e);
        assert_eq!(da_hashname(b".."), (0x2e << 7) ^ 0x2e);
    }

    #[test]
    fn reads_directory_forms() {
        let img = Image::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut blk = names(&mut rng, 99, 12);
        blk.push(gen_name(&mut rng, 99, 255));
        let leaf = names(&mut rng, 400, 255);
        let node = names(&mut rng, 20000, 255);
        let mut proto = String::from("prestage\n0 0\nd--755 0 0\n");
        proto += &dir_proto("blk", &blk, Some("sub"));
        proto += &dir_proto("leaf", &leaf, None);
        proto += &dir_proto("node", &node, None);
        proto += "$\n";
        img.mkfs(&proto, 512 * MIB, &[]);
        let fs = img.open();
        let dev = img.file();
        let root = fs.sb().root_ino;
        assert_eq!(fs.dir_form(root).unwrap(), DirForm::Shortform);

        let blk_ino = lookup(&fs, root, "blk");
        let leaf_ino = lookup(&fs, root, "leaf");
        let node_ino = lookup(&fs, root, "node");
        assert_eq!(fs.dir_form(blk_ino).unwrap(), DirForm::Block);
        assert_eq!(fs.dir_form(leaf_ino).unwrap(), DirForm::Leaf);
        assert_eq!(fs.dir_form(node_ino).unwrap(), DirForm::Node);
        // Large directories end up with a btree data fork, which the reader walks too.
        let node_info = fs.inode(node_ino).unwrap();
        assert_eq!(node_info.format, FMT_BTREE);
        assert_eq!(node_info.extents, img.db_bmap(node_ino));

        let mut blk_all = blk.clone();
        blk_all.push("sub".into());
        check_dir(&fs, &dev, blk_ino, &blk_all);
        check_dir(&fs, &dev, leaf_ino, &leaf);
        check_dir(&fs, &dev, node_ino, &node);

        let walk = fs.walk().unwrap();
        assert_eq!(walk.len(), 3 + blk_all.len() + 1 + leaf.len() + node.len());
        let mut seen = HashSet::new();
        for w in &walk {
            if let Some(p) = w.path.iter().rposition(|&b| b == b'/') {
                assert!(
                    seen.contains(&w.path[..p]),
                    "parent of {:?} not listed first",
                    w.path
                );
            }
            seen.insert(w.path.clone());
        }
        assert!(seen.contains(b"blk/sub/f".as_slice()));

        // update_crc reproduces the stored checksum of a directory block.
        let info = fs.inode(blk_ino).unwrap();
        let byte = fs.sb().fsb_to_byte(info.extents[0].start_fsb);
        let stored = read_dev(&dev, byte, 4096);
        let mut copy = stored.clone();
        copy[4..8].fill(0);
        update_crc(&mut copy, DIR_DATA_CRC_OFFSET);
        assert_eq!(copy, stored);
    }

    #[test]
    fn reads_directory_blocks_larger_than_fs_blocks() {
        let img = Image::new();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let blk = names(&mut rng, 300, 12);
        let leaf = names(&mut rng, 1200, 255);
        let node = names(&mut rng, 3000, 255);
        let mut proto = String::from("prestage\n0 0\nd--755 0 0\n");
        proto += &dir_proto("blk", &blk, None);
        proto += &dir_proto("leaf", &leaf, None);
        proto += &dir_proto("node", &node, None);
        proto += "$\n";
        img.mkfs(&proto, 512 * MIB, &["-n", "size=16384"]);
        let fs = img.open();
        let dev = img.file();
        assert_eq!((fs.sb().dir_block_size, fs.sb().dirblklog), (16384, 2));
        let root = fs.sb().root_ino;
        for (name, entries, form) in [
            ("blk", &blk, DirForm::Block),
            ("leaf", &leaf, DirForm::Leaf),
            ("node", &node, DirForm::Node),
        ] {
            let ino = lookup(&fs, root, name);
            assert_eq!(fs.dir_form(ino).unwrap(), form, "{name}");
            check_dir(&fs, &dev, ino, entries);
        }
        assert_eq!(
            fs.walk().unwrap().len(),
            3 + blk.len() + leaf.len() + node.len()
        );
    }
}
