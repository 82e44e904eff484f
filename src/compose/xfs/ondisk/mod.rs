//! Read-only access to the on-disk structures of an XFS v5 filesystem, plus the few helpers needed
//! to patch metadata in place.
//!
//! prestage has mkfs.xfs build an empty filesystem, reads its geometry and allocation group headers
//! back, and populates it with its own writer (`super::write`); `prestage verify` then reads the
//! result without mounting it (offline, without root): the tree, every inode's metadata and
//! attributes, and every file's bytes. This module reads exactly the subset of the format that
//! this needs:
//!
//! * the primary superblock (v5 only; unknown incompatible features are refused): `sb.rs`,
//! * allocation group headers (AGF, AGI, AGFL) and the records of their free space and inode
//!   btrees: `ag.rs`,
//! * inodes (v3 inode core, data fork in `local`, `extents` or `btree` format, times, device
//!   numbers): `inode.rs`,
//! * extended attributes in the attribute fork, short form or one leaf block with remote values:
//!   `attr.rs`,
//! * extent lists and bmap btrees of any depth (long-format `BMA3` blocks): `bmap.rs`,
//! * directories in all four v3 forms: shortform (inline in the inode), single block (`XDB3`),
//!   leaf and node (data blocks `XDD3` below the 32 GiB leaf offset; the hash index above it is
//!   not needed to list a directory and is not read), including directory blocks larger than the
//!   filesystem block, and the walk over the tree: `dir.rs`,
//! * symbolic links, inline or in remote `XSLM` blocks: `symlink.rs`,
//! * regular file contents, where holes and unwritten extents read as zeros: `file.rs`.
//!
//! Every metadata block is checked before use: magic number, CRC32C, and where the format records
//! them the block's own address, owner inode and filesystem UUID. All on-disk values are treated
//! as untrusted: parsing never indexes out of bounds, loops are bounded and tree walks detect
//! cycles, so a corrupt image produces an error naming the structure and its location instead of
//! a panic or a hang. Only the data device is read; realtime file contents and external logs are
//! out of scope.
//!
//! All multi-byte on-disk integers are big-endian except the CRC fields, which are little-endian
//! CRC32C values computed over the structure with the CRC field itself zeroed ([`update_crc`]).
//!
//! The safety rules are written once and used by every structure: `bytes.rs` holds the
//! bounds-checked field access and the checksum check, `Xfs::read` keeps every read inside the
//! data device, `Xfs::check_self_describing` checks the address, owner and UUID that every v5
//! block header carries, `Superblock::check_fsb_range` and `Superblock::check_ino` validate every
//! block and inode number before it is read, and the two tree walks (bmap btrees, the directory
//! tree) refuse anything they reach twice and stop at a fixed depth.

mod ag;
mod attr;
mod bmap;
mod bytes;
mod dir;
mod file;
mod inode;
mod sb;
mod symlink;
#[cfg(test)]
pub(crate) mod test_support;

use anyhow::{ensure, Context, Result};

use crate::compose::diskio::ReadAt;
use bytes::{array_at, be16, be64};

pub use ag::{
    Agf, Agi, InobtRec, AGFL_CRC_OFFSET, AGF_CRC_OFFSET, AGI_CRC_OFFSET, BNOBT_MAGIC, CNTBT_MAGIC,
    FINOBT_MAGIC, INOBT_MAGIC, NULL_AG, SBTREE_CRC_OFFSET, SBTREE_HEADER_LEN,
};
pub use attr::{AttrForm, Xattr};
#[cfg(test)]
pub(crate) use bmap::decode_extent;
pub use bmap::{Extent, BMBT_CRC_OFFSET, BMBT_HEADER_LEN};
pub use bytes::update_crc;
pub use dir::{da_hashname, DirForm, WalkEntry, DIR_LEAF_OFFSET};
pub use inode::{
    FileKind, InodeInfo, DIFLAG_PREALLOC, DI_DATA_FORK_OFFSET, DI_FLAGS_OFFSET, DI_GID_OFFSET,
    DI_MODE_OFFSET, DI_SIZE_OFFSET, DI_UID_OFFSET, INODE_CRC_OFFSET,
};
pub use sb::{
    Superblock, INCOMPAT_BIGTIME_BIT, INCOMPAT_SPINODES_BIT, RO_COMPAT_FINOBT, RO_COMPAT_INOBTCNT,
    RO_COMPAT_REFLINK, SB_CRC_OFFSET, SB_FDBLOCKS_OFFSET, SB_ICOUNT_OFFSET, SB_IFREE_OFFSET,
};

/// Where some bytes live on disk, and the checksummed structure containing them, so a caller can
/// overwrite the bytes and then recompute the checksum of `[start, start+len)` stored at
/// `crc_offset` (see [`update_crc`], which takes the offset relative to `start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrcRegion {
    /// Device byte offset of the checksummed structure.
    pub start: u64,
    /// Its length in bytes.
    pub len: u64,
    /// Absolute device byte offset of its 4-byte little-endian CRC field.
    pub crc_offset: u64,
}

/// A byte range on the device and the checksummed structure that contains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteLoc {
    /// Device byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// The structure whose CRC covers these bytes.
    pub region: CrcRegion,
}

/// A read-only XFS v5 filesystem on a [`ReadAt`] device.
pub struct Xfs<R: ReadAt> {
    dev: R,
    sb: Superblock,
}

impl<R: ReadAt> Xfs<R> {
    /// Reads and validates the primary superblock of the filesystem on `dev`.
    pub fn open(dev: R) -> Result<Self> {
        let mut head = vec![0u8; 512];
        dev.read_at(0, &mut head)
            .context("reading the XFS superblock at byte 0")?;
        let sect = usize::from(be16(&head, 102).context("superblock sector size")?);
        if sect > head.len() && sect.is_power_of_two() && sect <= 32768 {
            head = vec![0u8; sect];
            dev.read_at(0, &mut head)
                .context("reading the XFS superblock sector")?;
        }
        let sb = Superblock::parse(&head).context("invalid XFS superblock at byte 0")?;
        let size = dev.size();
        ensure!(
            size >= sb.data_bytes(),
            "the device holds {size} bytes but the XFS data section needs {}",
            sb.data_bytes()
        );
        Ok(Xfs { dev, sb })
    }

    /// The validated superblock.
    pub fn sb(&self) -> &Superblock {
        &self.sb
    }

    /// Reads `len` bytes at device byte `offset`, refusing any range outside the data device.
    pub(crate) fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = offset.checked_add(len as u64);
        ensure!(
            end.is_some_and(|e| e <= self.sb.data_bytes()),
            "{len} bytes at byte {offset} lie outside the {}-byte data device",
            self.sb.data_bytes()
        );
        let mut buf = vec![0u8; len];
        self.dev
            .read_at(offset, &mut buf)
            .with_context(|| format!("reading {len} bytes at byte {offset}"))?;
        Ok(buf)
    }

    /// The filesystem block size in bytes.
    pub(crate) fn block_size(&self) -> usize {
        self.sb.block_size as usize
    }

    /// Checks the common v5 header fields that name the block itself: its disk address (in
    /// 512-byte units), its owner inode and the filesystem UUID.
    pub(crate) fn check_self_describing(
        &self,
        buf: &[u8],
        byte: u64,
        blkno_off: usize,
        owner_off: usize,
        uuid_off: usize,
        owner: u64,
    ) -> Result<()> {
        let blkno = be64(buf, blkno_off)?;
        ensure!(
            blkno == byte / 512,
            "header says it is block {blkno} (512-byte units), but it was read from {}",
            byte / 512
        );
        let stored_owner = be64(buf, owner_off)?;
        ensure!(
            stored_owner == owner,
            "header says it belongs to inode {stored_owner}, expected {owner}"
        );
        let uuid: [u8; 16] = array_at(buf, uuid_off)?;
        ensure!(
            uuid == self.sb.meta_uuid,
            "header carries a different filesystem UUID"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::bmap::decode_extent;
    use super::bytes::crc_ok;
    use super::file::READ_CHUNK;
    use super::inode::{FMT_BTREE, FMT_EXTENTS, S_IFIFO};
    use super::sb::SB_CRC_OFFSET;
    use super::test_support::*;
    use super::*;
    use std::collections::HashMap;
    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;

    fn uuid_string(u: &[u8; 16]) -> String {
        let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    fn write_at(path: &std::path::Path, offset: u64, data: &[u8]) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(data, offset).unwrap();
    }

    #[test]
    fn reads_small_tree() {
        let img = Image::new();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let hello = rng.bytes(3000);
        let data = rng.bytes(12345);
        let hello_src = img.source("hello.src", &hello);
        let data_src = img.source("data.src", &data);
        let empty_src = img.source("empty.src", b"");
        let t336: String = "d/".repeat(168);
        let t337 = format!("{t336}x");
        let t1023: String = (0..1023).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let reserved: &[(&str, u64)] = &[
            ("res1", 1),
            ("res4k", 4096),
            ("res5000", 5000),
            ("res10m", 10_000_000),
            ("res100m", 100 * MIB),
        ];
        let symlinks: &[(&str, &str)] = &[
            ("short", "target/short"),
            ("s336", &t336),
            ("s337", &t337),
            ("s1023", &t1023),
        ];
        let mut proto = String::from("prestage\n0 0\nd--755 0 0\n");
        proto += &format!("hello ---644 0 0 {hello_src}\n");
        proto += &format!("data.bin ---600 1000 1001 {data_src}\n");
        proto += &format!("empty ---644 0 0 {empty_src}\n");
        for (name, size) in reserved {
            proto += &format!("{name} r--644 0 0 {size}\n");
        }
        for (name, target) in symlinks {
            proto += &format!("{name} l--777 0 0 {target}\n");
        }
        proto += "fifo p--644 0 0\nsub d--750 0 0\ninner ---644 0 0 ";
        proto += &format!("{hello_src}\n$\n$\n");
        img.mkfs(&proto, 512 * MIB, &["-L", "prestage"]);

        let fs = img.open();
        let dev = img.file();
        let sb = fs.sb();

        // Superblock against xfs_db.
        let dbsb = img.db_fields(&["sb 0", "print"]);
        let num = |k: &str| -> u64 { dbsb[k].parse().unwrap() };
        assert_eq!(u64::from(sb.block_size), num("blocksize"));
        assert_eq!(sb.block_size, 4096);
        assert_eq!(u64::from(sb.sect_size), num("sectsize"));
        assert_eq!(u64::from(sb.inode_size), num("inodesize"));
        assert_eq!(sb.inode_size, 512);
        assert_eq!(sb.data_blocks, num("dblocks"));
        assert_eq!(u64::from(sb.ag_blocks), num("agblocks"));
        assert_eq!(u64::from(sb.ag_count), num("agcount"));
        assert_eq!(sb.icount, num("icount"));
        assert_eq!(sb.ifree, num("ifree"));
        assert_eq!(sb.free_blocks, num("fdblocks"));
        assert_eq!(sb.root_ino, num("rootino"));
        assert_eq!(sb.log_start_fsb, num("logstart"));
        assert_eq!(u64::from(sb.log_blocks), num("logblocks"));
        assert_eq!(u64::from(sb.agblklog), num("agblklog"));
        assert_eq!(uuid_string(&sb.uuid), dbsb["uuid"]);
        assert_eq!(sb.label, b"prestage");
        assert_eq!(sb.dir_block_size, 4096);
        assert!(sb.has_ftype);
        assert_eq!(
            sb.log_byte_range(),
            (
                num("logstart") * 4096
                    - (num("logstart") >> sb.agblklog)
                        * ((1 << sb.agblklog) - num("agblocks"))
                        * 4096,
                num("logblocks") * 4096
            )
        );
        for r in sb.sb_regions() {
            assert!(crc_ok(&read_dev(&dev, r.start, r.len), SB_CRC_OFFSET));
        }

        // Root listing: shortform, in protofile order.
        let root = sb.root_ino;
        assert_eq!(fs.dir_form(root).unwrap(), DirForm::Shortform);
        assert_eq!(
            img.db_fields(&[&format!("inode {root}"), "print"])["core.format"],
            "1 (local)"
        );
        let mut expected: Vec<String> = vec!["hello".into(), "data.bin".into(), "empty".into()];
        expected.extend(reserved.iter().map(|(n, _)| n.to_string()));
        expected.extend(symlinks.iter().map(|(n, _)| n.to_string()));
        expected.extend(["fifo".into(), "sub".into()]);
        let listing = fs.read_dir(root).unwrap();
        let got: Vec<String> = listing
            .iter()
            .map(|e| String::from_utf8(e.name.clone()).unwrap())
            .collect();
        assert_eq!(got, expected);
        for e in &listing {
            check_loc(&dev, &e.name_loc, &e.name);
            assert_eq!(e.name_loc.region, fs.inode_region(root).unwrap());
        }

        // Walk: parents first, every path once.
        let walk = fs.walk().unwrap();
        let paths: Vec<String> = walk
            .iter()
            .map(|w| String::from_utf8(w.path.clone()).unwrap())
            .collect();
        let mut want_paths = expected.clone();
        want_paths.push("sub/inner".into());
        assert_eq!(paths, want_paths);
        let by_path: HashMap<&str, &WalkEntry> =
            paths.iter().map(|p| p.as_str()).zip(walk.iter()).collect();
        for w in &walk {
            let name = w.path.rsplit(|&b| b == b'/').next().unwrap();
            check_loc(&dev, &w.name_loc, name);
        }
        assert_eq!(by_path["sub"].kind, FileKind::Dir);
        assert_eq!(by_path["fifo"].kind, FileKind::Other(S_IFIFO));
        assert_eq!(by_path["short"].kind, FileKind::Symlink);

        // Copied files read back byte-identical.
        for (path, content) in [
            ("hello", &hello),
            ("data.bin", &data),
            ("sub/inner", &hello),
        ] {
            let ino = by_path[path].ino;
            assert_eq!(&collect_file(&fs, ino), content, "{path}");
            let info = fs.inode(ino).unwrap();
            assert_eq!(info.kind, FileKind::File);
            assert_eq!(info.size, content.len() as u64);
            assert!(info.extents.iter().all(|e| !e.unwritten));
        }
        let data_info = fs.inode(by_path["data.bin"].ino).unwrap();
        assert_eq!(
            (data_info.uid, data_info.gid, data_info.mode),
            (1000, 1001, 0o100600)
        );
        assert!(collect_file(&fs, by_path["empty"].ino).is_empty());

        // Reserved files: size 0, prealloc, unwritten extents exactly as xfs_db reports them.
        for (name, size) in reserved {
            let ino = by_path[name].ino;
            let info = fs.inode(ino).unwrap();
            assert_eq!(info.size, 0, "{name}");
            assert_ne!(info.flags & DIFLAG_PREALLOC, 0, "{name}");
            assert_eq!(info.format, FMT_EXTENTS, "{name}");
            assert_eq!(info.extents, img.db_bmap(ino), "{name}");
            assert!(info.extents.iter().all(|e| e.unwritten), "{name}");
            let blocks: u64 = info.extents.iter().map(|e| e.blocks).sum();
            assert!(blocks >= size.div_ceil(4096), "{name}: {blocks} blocks");
            assert!(collect_file(&fs, ino).is_empty());
            for r in fs.extent_records(ino).unwrap() {
                let raw: [u8; 16] = read_dev(&dev, r.loc.offset, 16).try_into().unwrap();
                assert_eq!(decode_extent(&raw), r.extent);
                check_loc(&dev, &r.loc, &raw);
            }
        }

        // Symlinks, inline and remote. mkfs.xfs up to at least 6.1 writes remote symlink blocks
        // from protofiles without the v5 block header (xfs_repair flags them too): the reader
        // must refuse those clearly; the test then writes the header the kernel would have
        // written, and the result must satisfy both xfs_repair and the reader.
        for (name, target) in symlinks {
            let ino = by_path[name].ino;
            if target.len() > 336 {
                let info = fs.inode(ino).unwrap();
                assert_eq!(info.extents.len(), 1);
                let byte = sb.fsb_to_byte(info.extents[0].start_fsb);
                if read_dev(&dev, byte, 4) != b"XSLM" {
                    let err = format!("{:#}", fs.read_symlink(ino).unwrap_err());
                    assert!(
                        err.contains(&format!("symlink inode {ino}"))
                            && err.contains("bad symlink block magic"),
                        "{err}"
                    );
                    let mut blk = vec![0u8; 4096];
                    blk[..4].copy_from_slice(b"XSLM");
                    blk[8..12].copy_from_slice(&(target.len() as u32).to_be_bytes());
                    blk[16..32].copy_from_slice(&sb.meta_uuid);
                    blk[32..40].copy_from_slice(&ino.to_be_bytes());
                    blk[40..48].copy_from_slice(&(byte / 512).to_be_bytes());
                    blk[56..56 + target.len()].copy_from_slice(target.as_bytes());
                    update_crc(&mut blk, 12);
                    write_at(&img.path, byte, &blk);
                }
            }
            let (got, locs) = fs.read_symlink(ino).unwrap();
            assert_eq!(got, target.as_bytes(), "{name}");
            let mut pos = 0;
            for loc in &locs {
                check_loc(&dev, loc, &got[pos..pos + loc.len as usize]);
                pos += loc.len as usize;
            }
            assert_eq!(pos, got.len());
            let format = &img.db_fields(&[&format!("inode {ino}"), "print"])["core.format"];
            if target.len() <= 336 {
                assert_eq!(format, "1 (local)", "{name}");
                assert_eq!(locs[0].region, fs.inode_region(ino).unwrap());
            } else {
                assert_eq!(format, "2 (extents)", "{name}");
                assert_eq!(locs[0].region.crc_offset, locs[0].region.start + 12);
            }
        }

        // update_crc reproduces the stored checksum of an inode.
        let hello_ino = by_path["hello"].ino;
        let region = fs.inode_region(hello_ino).unwrap();
        let stored = read_dev(&dev, region.start, region.len);
        let mut copy = stored.clone();
        copy[INODE_CRC_OFFSET..INODE_CRC_OFFSET + 4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert!(!crc_ok(&copy, INODE_CRC_OFFSET));
        update_crc(&mut copy, INODE_CRC_OFFSET);
        assert_eq!(copy, stored);

        // Patch a reserved file's size in place: it then reads as zeros, and xfs_repair agrees
        // that the patched image is consistent.
        let res_ino = by_path["res10m"].ino;
        let res_region = fs.inode_region(res_ino).unwrap();
        patch_region(
            &img.path,
            &res_region,
            res_region.start + DI_SIZE_OFFSET as u64,
            &10_000_000u64.to_be_bytes(),
        );
        let fs = img.open();
        let mut total = 0u64;
        let mut chunks = 0;
        fs.read_file(res_ino, &mut |c: &[u8]| {
            assert!(c.len() <= READ_CHUNK && c.iter().all(|&b| b == 0));
            total += c.len() as u64;
            chunks += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((total, chunks), (10_000_000, 10));
        img.repair_check();

        // A corrupted inode byte is caught by the CRC check.
        let byte = stored[130];
        write_at(&img.path, region.start + 130, &[byte ^ 0x40]);
        let fs = img.open();
        let err = format!("{:#}", fs.inode(hello_ino).unwrap_err());
        assert!(
            err.contains("CRC mismatch") && err.contains(&format!("inode {hello_ino}")),
            "{err}"
        );
        assert!(fs.walk().is_err());
        write_at(&img.path, region.start + 130, &[byte]);
        assert!(img.open().inode(hello_ino).is_ok());
    }

    /// Runs every reader entry point over a possibly corrupt device; only panics and hangs fail.
    fn exercise<R: ReadAt>(dev: R, dirs: &[u64], inodes: &[u64]) {
        let Ok(fs) = Xfs::open(dev) else { return };
        let walked: Vec<u64> = fs
            .walk()
            .map(|w| w.into_iter().map(|e| e.ino).collect())
            .unwrap_or_default();
        for &d in dirs {
            let _ = fs.read_dir(d);
            let _ = fs.dir_form(d);
        }
        for &ino in inodes.iter().chain(walked.iter()) {
            let _ = fs.inode(ino);
            let _ = fs.extent_records(ino);
            let _ = fs.read_symlink(ino);
            let mut budget = 64 * MIB;
            let _ = fs.read_file(ino, &mut |c: &[u8]| {
                budget = budget.saturating_sub(c.len() as u64);
                ensure!(budget > 0, "enough");
                Ok(())
            });
        }
    }

    #[test]
    fn survives_corrupted_metadata() {
        let img = Image::new();
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let src = img.source("f.src", &rng.bytes(9000));
        let blk = names(&mut rng, 40, 12);
        let node = names(&mut rng, 2500, 255);
        let mut proto = String::from("prestage\n0 0\nd--755 0 0\n");
        proto += &format!("file ---644 0 0 {src}\nres r--644 0 0 100000\n");
        proto += &format!("link l--777 0 0 {}\n", "x/".repeat(250));
        proto += &dir_proto("blk", &blk, Some("sub"));
        proto += &dir_proto("node", &node, None);
        proto += "$\n";
        img.mkfs(&proto, 512 * MIB, &[]);
        let dev = img.file();
        let fs = img.open();
        let sb = fs.sb().clone();
        let root = sb.root_ino;
        let dirs = [root, lookup(&fs, root, "blk"), lookup(&fs, root, "node")];
        let inodes = [
            lookup(&fs, root, "file"),
            lookup(&fs, root, "res"),
            lookup(&fs, root, "link"),
        ];

        // Every checksummed structure the reader looks at.
        let mut targets: Vec<CrcRegion> = vec![sb.sb_regions()[0]];
        for &ino in dirs.iter().chain(inodes.iter()) {
            targets.push(fs.inode_region(ino).unwrap());
            let info = fs.inode(ino).unwrap();
            for &leaf in &info.bmbt_leaves {
                targets.push(CrcRegion {
                    start: leaf,
                    len: 4096,
                    crc_offset: leaf + 64,
                });
            }
            if info.kind == FileKind::Symlink {
                let start = sb.fsb_to_byte(info.extents[0].start_fsb);
                targets.push(CrcRegion {
                    start,
                    len: 4096,
                    crc_offset: start + 12,
                });
            }
        }
        let mut dir_blocks: Vec<CrcRegion> = Vec::new();
        for &d in &dirs[1..] {
            for e in fs.read_dir(d).unwrap() {
                if !dir_blocks.contains(&e.name_loc.region) {
                    dir_blocks.push(e.name_loc.region);
                }
            }
        }
        targets.extend(dir_blocks.iter().step_by(7).copied());
        assert_eq!(fs.inode(dirs[2]).unwrap().format, FMT_BTREE);

        for round in 0..400 {
            let target = targets[round % targets.len()];
            let mut data = read_dev(&dev, target.start, target.len);
            for _ in 0..1 + rng.below(4) {
                let pos = rng.below(data.len() as u64) as usize;
                match rng.below(3) {
                    0 => data[pos] ^= 1 << rng.below(8),
                    1 => data[pos] = rng.next() as u8,
                    _ => {
                        let end = (pos + 8).min(data.len());
                        data[pos..end].fill(0xff);
                    }
                }
            }
            if rng.below(4) != 0 {
                update_crc(&mut data, (target.crc_offset - target.start) as usize);
            }
            let overlay = Overlay {
                base: &dev,
                at: target.start,
                data,
            };
            exercise(overlay, &dirs, &inodes);
        }
    }
}
