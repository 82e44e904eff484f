//! Block maps for raw images, in bmaptool's format 2.0 (the "The bmap" section of bmaptool's
//! README): `OUT.raw.bmap` lists the image's mapped 4 KiB blocks with a sha256 per range, so a
//! factory station writes only those blocks (`bmaptool copy --bmap OUT.raw.bmap OUT.raw /dev/sdX`)
//! and checks every byte it wrote. Everything else on the disk is a hole of the sparse image:
//! blocks the image leaves unspecified (free space, the disk start kept for RHCOS).
//!
//! The mapped ranges are the image file's data ranges (SEEK_DATA/SEEK_HOLE), which for an image
//! prestage wrote are exactly what it wrote (the XFS log is written out as zeros, so it is
//! mapped). Long ranges are split so that they hash on every core; adjacent ranges are what
//! bmaptool itself writes for fragmented files. The file checksum is the sha256 of the file
//! with its own digits taken as `0`.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::diskio::data_ranges;

/// bmap block size.
pub const BLOCK: u64 = 4096;
/// Longest range (in blocks) hashed as one.
const MAX_RANGE_BLOCKS: u64 = (256 << 20) / BLOCK;

/// What a block map says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    /// Image size in bytes.
    pub image_size: u64,
    /// Mapped block ranges, inclusive, with the sha256 of their bytes.
    pub ranges: Vec<(u64, u64, String)>,
}

impl Bmap {
    /// Blocks in the image.
    pub fn blocks(&self) -> u64 {
        self.image_size.div_ceil(BLOCK)
    }

    /// Mapped blocks.
    pub fn mapped_blocks(&self) -> u64 {
        self.ranges.iter().map(|(a, b, _)| b - a + 1).sum()
    }

    /// The bmap file's text.
    pub fn to_xml(&self) -> String {
        let zeros = "0".repeat(64);
        let text = self.render(&zeros);
        let sum = hex::encode(Sha256::digest(text.as_bytes()));
        self.render(&sum)
    }

    fn render(&self, checksum: &str) -> String {
        let mapped = self.mapped_blocks();
        let pct = if self.blocks() == 0 {
            0.0
        } else {
            mapped as f64 * 100.0 / self.blocks() as f64
        };
        let mut s = String::new();
        s.push_str("<?xml version=\"1.0\" ?>\n");
        s.push_str(
            "<!-- Block map of a raw disk image written by prestage: the blocks that hold data.\n     \
             bmaptool copy writes only these blocks and checks each range's sha256. -->\n",
        );
        s.push_str("<bmap version=\"2.0\">\n");
        let _ = writeln!(s, "    <ImageSize> {} </ImageSize>", self.image_size);
        let _ = writeln!(s, "    <BlockSize> {BLOCK} </BlockSize>");
        let _ = writeln!(s, "    <BlocksCount> {} </BlocksCount>", self.blocks());
        let _ = writeln!(
            s,
            "    <!-- Mapped: {} ({pct:.1}%) -->",
            super::layout::human(mapped * BLOCK)
        );
        let _ = writeln!(s, "    <MappedBlocksCount> {mapped} </MappedBlocksCount>");
        s.push_str("    <ChecksumType> sha256 </ChecksumType>\n");
        let _ = writeln!(s, "    <BmapFileChecksum> {checksum} </BmapFileChecksum>");
        s.push_str("    <BlockMap>\n");
        for (a, b, sum) in &self.ranges {
            if a == b {
                let _ = writeln!(s, "        <Range chksum=\"{sum}\"> {a} </Range>");
            } else {
                let _ = writeln!(s, "        <Range chksum=\"{sum}\"> {a}-{b} </Range>");
            }
        }
        s.push_str("    </BlockMap>\n</bmap>\n");
        s
    }
}

/// Reads the image's data ranges and hashes them (on every core).
pub fn of_image(image: &Path) -> Result<Bmap> {
    let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let size = f
        .metadata()
        .with_context(|| format!("stat {}", image.display()))?
        .len();
    // Block ranges covering the data, merged, then split into hashable pieces.
    let mut blocks: Vec<(u64, u64)> = Vec::new();
    for (start, len) in data_ranges(image)? {
        let a = start / BLOCK;
        let b = (start + len).div_ceil(BLOCK) - 1;
        match blocks.last_mut() {
            Some(last) if last.1 + 1 >= a => last.1 = last.1.max(b),
            _ => blocks.push((a, b)),
        }
    }
    let mut pieces = Vec::new();
    for (a, b) in blocks {
        let mut s = a;
        while s <= b {
            let e = (s + MAX_RANGE_BLOCKS - 1).min(b);
            pieces.push((s, e));
            s = e + 1;
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let sums: std::sync::Mutex<Vec<Option<Result<String>>>> =
        std::sync::Mutex::new(pieces.iter().map(|_| None).collect());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|sc| {
        for _ in 0..threads.min(pieces.len().max(1)) {
            sc.spawn(|| {
                let mut buf = vec![0u8; 4 << 20];
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(a, b)) = pieces.get(i) else { break };
                    let r = hash_range(&f, &mut buf, a * BLOCK, ((b + 1) * BLOCK).min(size))
                        .with_context(|| format!("reading {}", image.display()));
                    if let Ok(mut v) = sums.lock() {
                        v[i] = Some(r);
                    }
                }
            });
        }
    });
    let sums = sums.into_inner().unwrap_or_default();
    let mut ranges = Vec::new();
    for ((a, b), s) in pieces.into_iter().zip(sums) {
        let s = s.context("internal error: a range was not hashed")??;
        ranges.push((a, b, s));
    }
    Ok(Bmap {
        image_size: size,
        ranges,
    })
}

fn hash_range(f: &File, buf: &mut [u8], start: u64, end: u64) -> Result<String> {
    let mut h = Sha256::new();
    let mut pos = start;
    while pos < end {
        let n = ((end - pos) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..n], pos)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_covers_the_file_with_its_digits_zeroed() {
        let b = Bmap {
            image_size: 10 * BLOCK + 100,
            ranges: vec![(0, 0, "a".repeat(64)), (3, 9, "b".repeat(64))],
        };
        let xml = b.to_xml();
        let line = xml
            .lines()
            .find(|l| l.contains("BmapFileChecksum"))
            .unwrap();
        let sum = line.split_whitespace().nth(1).unwrap();
        let zeroed = xml.replace(sum, &"0".repeat(64));
        assert_eq!(hex::encode(Sha256::digest(zeroed.as_bytes())), sum);
        assert!(xml.contains("<BlocksCount> 11 </BlocksCount>"), "{xml}");
        assert!(
            xml.contains("<MappedBlocksCount> 8 </MappedBlocksCount>"),
            "{xml}"
        );
        assert!(xml.contains("> 0 </Range>") && xml.contains("> 3-9 </Range>"));
    }
}
