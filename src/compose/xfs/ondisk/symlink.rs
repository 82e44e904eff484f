//! Symbolic links: targets inline in the inode, or in remote `XSLM` blocks.
//!
//! Targets are at most 1023 bytes and contain no NUL. Every remote block is checked (magic,
//! CRC32C, its own address, owner inode, filesystem UUID) and must say which bytes of the target it
//! holds; the remote extents must cover the target exactly, in order.

use anyhow::{bail, ensure, Context, Result};

use super::bytes::{be32, check_crc, field};
use super::inode::{
    inode_region, FileKind, RawInode, DI_DATA_FORK_OFFSET, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL,
};
use super::{ByteLoc, CrcRegion, Xfs};
use crate::compose::diskio::ReadAt;

const SYMLINK_MAGIC: u32 = 0x5853_4c4d; // "XSLM"
const SYMLINK_HEADER_LEN: usize = 56;
const SYMLINK_CRC_OFFSET: usize = 12;
/// Longest symlink target XFS accepts (MAXPATHLEN less the terminating NUL).
const SYMLINK_MAX_LEN: u64 = 1023;

impl<R: ReadAt> Xfs<R> {
    /// The target of symlink `ino`, and where its bytes live: one [`ByteLoc`] for an inline
    /// target (region: the inode), otherwise one per remote extent, each of which XFS writes as
    /// one buffer with one header (a single block with 4 KiB blocks; region: that buffer).
    ///
    /// Targets are at most 1023 bytes, and remote blocks must carry the v5 `XSLM` header, as the
    /// kernel and xfs_repair require. mkfs.xfs (at least up to 6.1) writes protofile symlinks
    /// longer than the inode's inline area without that header; such links are refused here.
    pub fn read_symlink(&self, ino: u64) -> Result<(Vec<u8>, Vec<ByteLoc>)> {
        let raw = self.raw_inode(ino)?;
        ensure!(
            raw.kind() == FileKind::Symlink,
            "inode {ino} is not a symlink (mode {:#o})",
            raw.mode
        );
        self.read_symlink_raw(&raw)
            .with_context(|| format!("reading symlink inode {ino}"))
    }

    fn read_symlink_raw(&self, raw: &RawInode) -> Result<(Vec<u8>, Vec<ByteLoc>)> {
        let size = raw.size;
        ensure!(
            (1..=SYMLINK_MAX_LEN).contains(&size),
            "symlink length {size} is out of range"
        );
        let size = size as usize;
        let (target, locs) = match raw.format {
            FMT_LOCAL => {
                let target = field(raw.data_fork()?, 0, size)
                    .context("inline symlink target exceeds the data fork")?
                    .to_vec();
                let loc = ByteLoc {
                    offset: raw.byte + DI_DATA_FORK_OFFSET as u64,
                    len: size as u64,
                    region: inode_region(raw.byte, self.sb.inode_size),
                };
                (target, vec![loc])
            }
            FMT_EXTENTS | FMT_BTREE => self.read_remote_symlink(raw, size)?,
            other => bail!("symlink has unsupported data fork format {other}"),
        };
        ensure!(!target.contains(&0), "symlink target contains a NUL byte");
        Ok((target, locs))
    }

    fn read_remote_symlink(&self, raw: &RawInode, size: usize) -> Result<(Vec<u8>, Vec<ByteLoc>)> {
        let map = self.fork_map(raw)?;
        let bs = self.block_size();
        let per_block = bs - SYMLINK_HEADER_LEN;
        let needed = size.div_ceil(per_block) as u64;
        let mut target = Vec::with_capacity(size);
        let mut locs = Vec::new();
        let mut next_block = 0u64;
        for e in map.extents() {
            ensure!(
                e.file_block == next_block && e.file_block + e.blocks <= needed,
                "symlink extent at file block {} does not fit a {size}-byte target",
                e.file_block
            );
            ensure!(!e.unwritten, "symlink block is an unwritten extent");
            next_block += e.blocks;
            let len = e.blocks as usize * bs;
            let byte = self.sb.check_fsb_range(e.start_fsb, e.blocks)?;
            let buf = self.read(byte, len)?;
            let want = (size - target.len()).min(len - SYMLINK_HEADER_LEN);
            self.check_symlink_block(&buf, byte, raw.ino, target.len(), want)
                .with_context(|| format!("remote symlink block at byte {byte}"))?;
            target.extend_from_slice(field(&buf, SYMLINK_HEADER_LEN, want)?);
            locs.push(ByteLoc {
                offset: byte + SYMLINK_HEADER_LEN as u64,
                len: want as u64,
                region: CrcRegion {
                    start: byte,
                    len: len as u64,
                    crc_offset: byte + SYMLINK_CRC_OFFSET as u64,
                },
            });
        }
        ensure!(
            target.len() == size,
            "remote symlink blocks hold {} of {size} bytes",
            target.len()
        );
        Ok((target, locs))
    }

    fn check_symlink_block(
        &self,
        buf: &[u8],
        byte: u64,
        owner: u64,
        offset: usize,
        bytes: usize,
    ) -> Result<()> {
        let magic = be32(buf, 0)?;
        ensure!(
            magic == SYMLINK_MAGIC,
            "bad symlink block magic {magic:#010x} (expected XSLM {SYMLINK_MAGIC:#010x})"
        );
        check_crc(buf, SYMLINK_CRC_OFFSET).context("symlink block checksum")?;
        self.check_self_describing(buf, byte, 40, 32, 16, owner)?;
        let got_offset = be32(buf, 4)? as usize;
        let got_bytes = be32(buf, 8)? as usize;
        ensure!(
            got_offset == offset && got_bytes == bytes,
            "header says {got_bytes} bytes at offset {got_offset}, expected {bytes} at {offset}"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::xfs::ondisk::test_support::*;

    #[test]
    fn reads_inline_targets_and_refuses_other_inodes() {
        let img = Image::new();
        let proto = "prestage\n0 0\nd--755 0 0\nlink l--777 0 0 some/where\nsub d--755 0 0\n$\n$\n";
        img.mkfs(proto, 512 * MIB, &[]);
        let fs = img.open();
        let root = fs.sb().root_ino;
        let link = lookup(&fs, root, "link");
        let (target, locs) = fs.read_symlink(link).unwrap();
        assert_eq!(target, b"some/where");
        let inode = fs.inode_region(link).unwrap();
        let inline = ByteLoc {
            offset: inode.start + DI_DATA_FORK_OFFSET as u64,
            len: 10,
            region: inode,
        };
        assert_eq!(locs, [inline]);
        let sub = lookup(&fs, root, "sub");
        let err = format!("{:#}", fs.read_symlink(sub).unwrap_err());
        assert!(
            err.contains(&format!("inode {sub} is not a symlink")),
            "{err}"
        );
    }
}
