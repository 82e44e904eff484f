//! Regular file contents: exactly `di_size` bytes streamed through the data fork's block map, where
//! holes and unwritten extents read as zeros. Realtime file contents are out of scope.

use anyhow::{anyhow, ensure, Context, Result};

use super::bmap::Extent;
use super::inode::{FileKind, DIFLAG_REALTIME, FMT_BTREE, FMT_EXTENTS};
use super::Xfs;
use crate::compose::diskio::ReadAt;

/// Largest chunk [`Xfs::read_file`] hands to its sink.
pub(crate) const READ_CHUNK: usize = 1 << 20;

impl<R: ReadAt> Xfs<R> {
    /// Streams exactly `di_size` bytes of regular file `ino` to `sink`, in chunks of at most
    /// 1 MiB. Holes and unwritten extents read as zeros; memory use is bounded by the chunk size
    /// and the extent list. Errors from `sink` stop the read and are returned.
    pub fn read_file(&self, ino: u64, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let raw = self.raw_inode(ino)?;
        ensure!(
            raw.kind() == FileKind::File,
            "inode {ino} is not a regular file (mode {:#o})",
            raw.mode
        );
        ensure!(
            raw.flags & DIFLAG_REALTIME == 0,
            "inode {ino} keeps its data on the realtime device, which is not read"
        );
        ensure!(
            matches!(raw.format, FMT_EXTENTS | FMT_BTREE),
            "regular file inode {ino} has unsupported data fork format {}",
            raw.format
        );
        let extents = self.fork_map(&raw)?.extents();
        self.stream(&extents, raw.size, sink)
            .with_context(|| format!("reading file inode {ino}"))
    }

    fn stream(
        &self,
        extents: &[Extent],
        size: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let bs = u64::from(self.sb.block_size);
        let mut chunk = vec![0u8; (size.min(READ_CHUNK as u64)) as usize];
        let mut idx = 0usize;
        let mut pos = 0u64;
        while pos < size {
            let len = (size - pos).min(READ_CHUNK as u64);
            let buf = chunk
                .get_mut(..len as usize)
                .ok_or_else(|| anyhow!("internal chunk sizing error"))?;
            buf.fill(0);
            let chunk_end = pos + len;
            // Skip extents entirely before this chunk.
            while extents
                .get(idx)
                .is_some_and(|e| (e.file_block + e.blocks) * bs <= pos)
            {
                idx += 1;
            }
            let mut j = idx;
            while let Some(e) = extents.get(j) {
                let e_start = e.file_block * bs;
                if e_start >= chunk_end {
                    break;
                }
                let e_end = (e.file_block + e.blocks) * bs;
                let from = e_start.max(pos);
                let to = e_end.min(chunk_end);
                if from < to && !e.unwritten {
                    let disk = self.sb.fsb_to_byte(e.start_fsb) + (from - e_start);
                    let dst = buf
                        .get_mut((from - pos) as usize..(to - pos) as usize)
                        .ok_or_else(|| anyhow!("internal chunk range error"))?;
                    self.dev
                        .read_at(disk, dst)
                        .with_context(|| format!("reading file data at byte {disk}"))?;
                }
                j += 1;
            }
            sink(buf)?;
            pos = chunk_end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::compose::xfs::ondisk::inode::{DIFLAG2_NREXT64, DIFLAG_PREALLOC};
    use crate::compose::xfs::ondisk::sb::INCOMPAT_NREXT64;
    use crate::compose::xfs::ondisk::test_support::*;
    use std::collections::HashSet;

    #[test]
    fn reserved_file_spanning_allocation_groups() {
        for nrext64 in ["nrext64=0", "nrext64=1"] {
            let img = Image::new();
            let src = img.source("small.src", &Rng(7).bytes(5000));
            let proto = format!(
                "prestage\n0 0\nd--755 0 0\nbig r--644 0 0 {}\nsmall ---644 0 0 {src}\n$\n",
                600 * MIB
            );
            img.mkfs(&proto, GIB, &["-d", "agcount=8", "-i", nrext64]);
            let fs = img.open();
            let sb = fs.sb().clone();
            let has_nrext64 = sb.features_incompat & INCOMPAT_NREXT64 != 0;
            assert_eq!(has_nrext64, nrext64 == "nrext64=1");
            let big = lookup(&fs, sb.root_ino, "big");
            let info = fs.inode(big).unwrap();
            assert_eq!(info.flags2 & DIFLAG2_NREXT64 != 0, has_nrext64);
            assert_eq!(info.size, 0);
            assert_ne!(info.flags & DIFLAG_PREALLOC, 0);
            assert_eq!(info.extents, img.db_bmap(big));
            assert_eq!(info.nextents, info.extents.len() as u64);
            assert!(info.extents.iter().all(|e| e.unwritten));
            let ags: HashSet<u64> = info
                .extents
                .iter()
                .map(|e| e.start_fsb >> sb.agblklog)
                .collect();
            assert!(
                ags.len() >= 5,
                "600 MiB should span 5+ AGs of 128 MiB: {ags:?}"
            );
            let blocks: u64 = info.extents.iter().map(|e| e.blocks).sum();
            assert_eq!(blocks, 600 * MIB / 4096);
            let small = lookup(&fs, sb.root_ino, "small");
            assert_eq!(collect_file(&fs, small), Rng(7).bytes(5000));
        }
    }
}
