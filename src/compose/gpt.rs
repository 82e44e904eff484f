//! The partition table: protective MBR, primary and backup GPT for a layout, built with gptman
//! into a list of byte ranges that the emit stage writes into a raw or qcow2 image; and reading a
//! GPT back for `verify`.

use std::io::{self, Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context, Result};
use gptman::{GPTPartitionEntry, GPT};
use uuid::Uuid;

use crate::compose::diskio::ReadAt;
use crate::compose::layout::Layout;

/// A `Read + Write + Seek` device of a given size that reads zeros and records writes, so that
/// gptman can lay out a table for a disk that does not exist as a file.
struct Capture {
    size: u64,
    pos: u64,
    writes: Vec<(u64, Vec<u8>)>,
}

impl Read for Capture {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.size.saturating_sub(self.pos) as usize);
        buf[..n].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos + buf.len() as u64 > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write beyond the end of the disk",
            ));
        }
        match self.writes.last_mut() {
            Some((off, data)) if *off + data.len() as u64 == self.pos => {
                data.extend_from_slice(buf)
            }
            _ => self.writes.push((self.pos, buf.to_vec())),
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Capture {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

/// GUIDs chosen for one image (fixed by the layout or random).
#[derive(Debug, Clone)]
pub struct Guids {
    /// Disk GUID.
    pub disk: Uuid,
    /// Unique GUID per partition, in layout order.
    pub partitions: Vec<Uuid>,
}

impl Guids {
    /// The layout's GUIDs, random where it sets none.
    pub fn for_layout(layout: &Layout) -> Guids {
        Guids {
            disk: layout.disk_guid.unwrap_or_else(Uuid::new_v4),
            partitions: layout
                .partitions
                .iter()
                .map(|p| p.guid.unwrap_or_else(Uuid::new_v4))
                .collect(),
        }
    }
}

/// The bytes of the protective MBR and both GPTs, as `(offset, bytes)` ranges.
pub fn table_writes(layout: &Layout, guids: &Guids) -> Result<Vec<(u64, Vec<u8>)>> {
    let ss = layout.sector_size;
    let mut dev = Capture {
        size: layout.disk_size,
        pos: 0,
        writes: Vec::new(),
    };
    let mut gpt =
        GPT::new_from(&mut dev, ss, guids.disk.to_bytes_le()).context("creating the GPT")?;
    gpt.align = layout.alignment / ss;
    for (i, p) in layout.partitions.iter().enumerate() {
        gpt[(i + 1) as u32] = GPTPartitionEntry {
            partition_type_guid: p.type_guid.to_bytes_le(),
            unique_partition_guid: guids.partitions[i].to_bytes_le(),
            starting_lba: p.start_lba,
            ending_lba: p.end_lba,
            attribute_bits: 0,
            partition_name: p.label.as_str().into(),
        };
    }
    gpt.write_into(&mut dev).context("writing the GPT")?;
    GPT::write_protective_mbr_into(&mut dev, ss).context("writing the protective MBR")?;
    Ok(dev.writes)
}

/// A partition found in an image's GPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Partition number: its entry in the GPT, from 1 (what `--save-partindex` and
    /// `/dev/sdaN` count).
    pub number: u32,
    /// GPT partition name.
    pub label: String,
    /// Byte offset in the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Partition type GUID.
    pub type_guid: Uuid,
}

/// Adapts a `ReadAt` device to `Read + Seek` for gptman.
struct SeqReader<'a, R: ReadAt + ?Sized> {
    dev: &'a R,
    pos: u64,
}

impl<R: ReadAt + ?Sized> Read for SeqReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(self.dev.size().saturating_sub(self.pos) as usize);
        self.dev.read_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: ReadAt + ?Sized> Seek for SeqReader<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.dev.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

/// Reads and checks an image's GPT (header and entry CRCs, primary and backup agreeing, entries
/// inside the usable area and not overlapping) and lists its partitions.
pub fn read(dev: &dyn ReadAt) -> Result<(u64, Vec<Found>)> {
    let mut last_err = None;
    for ss in [512u64, 4096] {
        let mut r = SeqReader { dev, pos: 0 };
        let primary = match GPT::read_from(&mut r, ss) {
            Ok(g) if g.header.is_primary() => g,
            Ok(_) => {
                last_err = Some(anyhow::anyhow!(
                    "primary GPT header is damaged (only the backup is readable)"
                ));
                continue;
            }
            Err(e) => {
                last_err = Some(anyhow::anyhow!("{e}"));
                continue;
            }
        };
        let backup_lba = primary.header.backup_lba;
        if (backup_lba + 1) * ss != dev.size() {
            bail!("GPT backup header is at sector {backup_lba}, not the last sector of the {}-byte disk", dev.size());
        }
        r.seek(SeekFrom::Start(backup_lba * ss))
            .context("seeking to the backup GPT")?;
        let bh = gptman::GPTHeader::read_from(&mut r).context("reading the backup GPT header")?;
        if bh.partition_entry_array_crc32 != primary.header.partition_entry_array_crc32
            || bh.disk_guid != primary.header.disk_guid
        {
            bail!("backup GPT does not match the primary GPT");
        }
        let mut found = Vec::new();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (number, p) in primary.iter() {
            if p.is_unused() {
                continue;
            }
            if p.starting_lba < primary.header.first_usable_lba
                || p.ending_lba > primary.header.last_usable_lba
                || p.ending_lba < p.starting_lba
            {
                bail!(
                    "GPT partition `{}` lies outside the usable area",
                    p.partition_name.as_str()
                );
            }
            if ranges
                .iter()
                .any(|&(s, e)| p.starting_lba <= e && s <= p.ending_lba)
            {
                bail!(
                    "GPT partition `{}` overlaps another partition",
                    p.partition_name.as_str()
                );
            }
            ranges.push((p.starting_lba, p.ending_lba));
            found.push(Found {
                number,
                label: p.partition_name.as_str().to_string(),
                offset: p.starting_lba * ss,
                size: (p.ending_lba - p.starting_lba + 1) * ss,
                type_guid: Uuid::from_bytes_le(p.partition_type_guid),
            });
        }
        return Ok((ss, found));
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no GPT")))
        .context("reading the partition table")
}
