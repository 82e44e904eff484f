//! The XFS writer: populates the empty filesystem mkfs.xfs made with a content set, writing every
//! inode and every metadata block itself, into the same sparse partition file.
//!
//! mkfs.xfs keeps what it is expert at: geometry, feature bits, the log, the AG headers, the free
//! lists, the root inode chunk and the realtime inodes. This module then:
//! 1. reads that filesystem back (`ondisk`): AGF, AGI and the free extents of every AG, and the
//!    root inode chunk;
//! 2. builds the inode table of the content (`tree`): one inode per file, directory, symlink,
//!    device, FIFO or socket, hard links as extra names with the right link count;
//! 3. gives every inode a number: the free slots of the root chunk, then new 64-inode chunks
//!    aligned as the superblock requires, from the start of the filesystem (`alloc`);
//! 4. chooses each inode's fork formats (attributes first, short form or a leaf block with
//!    remote values: `attr`; directories short form, block, leaf or node: `dir`; symlinks inline
//!    or in a remote block) and writes their blocks right after the inode chunks;
//! 5. allocates file data in content order (the order entries were added), each file one run
//!    split only where free space ends, so a source read front to back is written front to back;
//!    each AG keeps free the blocks the kernel reserves there for its free inode (and, with
//!    reflink, reference count) btree, as a kernel-written filesystem would;
//! 6. writes extent btrees for forks with more extents than the inode holds (`btree`), then every
//!    inode chunk (`inode`), then rebuilds each AG's inode and free space btrees, the AGF and AGI
//!    counters and the superblock totals (`ag`).
//!
//! The result is where each file's bytes go; the pipeline streams them there. Everything is
//! deterministic: the same content, UUID and time give the same bytes (generation numbers are
//! derived from the UUID and inode number).

mod ag;
mod alloc;
mod attr;
mod btree;
mod dir;
mod inode;
mod tree;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context, Result};

use super::{Fill, Run};
use crate::compose::content::{Content, Kind, Time};
use crate::compose::xfs::ondisk::{
    update_crc, Superblock, Xfs, INCOMPAT_BIGTIME_BIT, INCOMPAT_SPINODES_BIT, RO_COMPAT_FINOBT,
    RO_COMPAT_INOBTCNT, RO_COMPAT_REFLINK, SB_CRC_OFFSET, SB_FDBLOCKS_OFFSET, SB_ICOUNT_OFFSET,
    SB_IFREE_OFFSET,
};
use ag::{Chunk, Geometry, INOBT};
use alloc::Alloc;
use attr::AttrShape;
use btree::Format;
use dir::Shape;
use inode::{AttrFork, DataFork, Ext, Spec};
use tree::{DataShape, Forks, What};

/// Filesystem block size of every filesystem prestage writes.
pub(crate) const BLOCK: usize = 4096;
pub(crate) use ag::kernel_reserve;
/// Inode size of every filesystem prestage writes.
pub(crate) const INODE: usize = 512;
/// Inodes per chunk.
const CHUNK_INODES: u64 = 64;
/// Blocks per inode chunk.
const CHUNK_BLOCKS: u32 = (CHUNK_INODES as usize * INODE / BLOCK) as u32;

/// The extent btree of a data fork (`BMA3` blocks, 64-bit pointers).
const BMBT: Format = Format {
    magic: 0x424d_4133,
    long: true,
    rec_len: 16,
    key_len: 8,
};

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Positioned writes to the partition file, coalesced while they are consecutive.
pub(crate) struct Out<'f> {
    f: &'f File,
    start: u64,
    buf: Vec<u8>,
}

impl<'f> Out<'f> {
    fn new(f: &'f File) -> Out<'f> {
        Out {
            f,
            start: 0,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` at byte `at` of the partition file.
    pub(crate) fn write(&mut self, at: u64, bytes: &[u8]) -> Result<()> {
        if at != self.start + self.buf.len() as u64 || self.buf.len() + bytes.len() > 8 << 20 {
            self.flush()?;
            self.start = at;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes out what is buffered.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.f
                .write_all_at(&self.buf, self.start)
                .with_context(|| format!("writing metadata at byte {}", self.start))?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// The features and geometry the writer relies on, checked.
fn check_geometry(sb: &Superblock) -> Result<()> {
    ensure!(
        sb.block_size as usize == BLOCK && sb.inode_size as usize == INODE,
        "mkfs.xfs made {}-byte blocks and {}-byte inodes, expected {BLOCK} and {INODE}",
        sb.block_size,
        sb.inode_size
    );
    ensure!(
        sb.dirblklog == 0,
        "directory blocks of {} bytes are not supported (only the block size)",
        sb.dir_block_size
    );
    ensure!(
        sb.has_ftype,
        "directory entries without file types are not supported"
    );
    ensure!(
        sb.features_incompat & INCOMPAT_SPINODES_BIT != 0,
        "filesystems without sparse inode chunks are not supported"
    );
    Ok(())
}

/// Disk address (512-byte units) of filesystem block `fsb`.
fn daddr(sb: &Superblock, fsb: u64) -> u64 {
    sb.fsb_to_byte(fsb) / 512
}

/// The extents mapping logical blocks `lbs` to physical blocks `phys` (one each), merged where
/// both are consecutive inside one AG.
fn extents_of(lbs: &[u64], phys: &[u64], agblklog: u8) -> Vec<Ext> {
    let mut out: Vec<Ext> = Vec::new();
    for (&off, &fsb) in lbs.iter().zip(phys) {
        match out.last_mut() {
            Some(e)
                if e.off + e.len == off
                    && e.fsb + e.len == fsb
                    && e.fsb >> agblklog == fsb >> agblklog
                    && e.len < alloc::MAX_EXTENT =>
            {
                e.len += 1
            }
            _ => out.push(Ext { off, fsb, len: 1 }),
        }
    }
    out
}

/// Every block of a list of runs, in order.
fn blocks_of(runs: &[alloc::Run]) -> Vec<u64> {
    runs.iter().flat_map(|&(f, l)| f..f + l).collect()
}

/// A deterministic generation number for inode `ino`.
fn generation(uuid: &[u8; 16], ino: u64) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(uuid), &ino.to_be_bytes())
}

/// A remote symlink block: the v5 `XSLM` header and the target.
fn symlink_block(target: &[u8], ino: u64, daddr: u64, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    b[0..4].copy_from_slice(b"XSLM");
    put32(&mut b, 8, target.len() as u32);
    b[16..32].copy_from_slice(uuid);
    put64(&mut b, 32, ino);
    put64(&mut b, 40, daddr);
    b[56..56 + target.len()].copy_from_slice(target);
    update_crc(&mut b, 12);
    b
}

/// A data fork's extent btree: its root level and children (kept in the inode).
struct BtreeRoot {
    level: u16,
    children: Vec<(u64, u64)>,
    blocks: u64,
}

/// Writes the extent btree of a data fork whose `exts` do not fit in `dspace` bytes.
fn write_bmbt(
    out: &mut Out,
    alloc: &mut Alloc,
    sb: &Superblock,
    ino: u64,
    exts: &[Ext],
    dspace: usize,
) -> Result<BtreeRoot> {
    let root_max = (dspace - 4) / 16;
    let sizes = btree::level_sizes(&BMBT, exts.len(), root_max);
    let total: usize = sizes.iter().sum();
    let phys = blocks_of(&alloc.stream(total as u64)?);
    let mut next = phys.iter();
    let addrs: Vec<Vec<u64>> = sizes
        .iter()
        .map(|&n| next.by_ref().take(n).copied().collect())
        .collect();
    let mut recs = Vec::with_capacity(exts.len() * 16);
    for e in exts {
        recs.extend_from_slice(&inode::extent_record(e));
    }
    let (blocks, top) = btree::build(
        &BMBT,
        &recs,
        |r| {
            let l0 = u64::from_be_bytes(r[..8].try_into().unwrap_or([0; 8]));
            ((l0 & !(1 << 63)) >> 9).to_be_bytes().to_vec()
        },
        &addrs,
        |fsb| daddr(sb, fsb),
        ino,
        &sb.meta_uuid,
    );
    for (fsb, b) in blocks {
        out.write(sb.fsb_to_byte(fsb), &b)?;
    }
    let children = top
        .into_iter()
        .map(|(k, a)| (u64::from_be_bytes(k.try_into().unwrap_or([0; 8])), a))
        .collect();
    Ok(BtreeRoot {
        level: sizes.len() as u16,
        children,
        blocks: total as u64,
    })
}

/// Populates the empty filesystem in `file` with `content`; entries without their own time get
/// `default`. Returns where each regular file's bytes go, keyed by content path.
pub(crate) fn populate(
    file: &File,
    content: &Content,
    default: Time,
) -> Result<BTreeMap<String, Fill>> {
    let fs = Xfs::open(file).context("reading what mkfs.xfs made")?;
    let sb = fs.sb().clone();
    check_geometry(&sb)?;
    let uuid = sb.meta_uuid;
    let bigtime = sb.features_incompat & INCOMPAT_BIGTIME_BIT != 0;
    let g = Geometry {
        sb: &sb,
        finobt: sb.features_ro_compat & RO_COMPAT_FINOBT != 0,
        inobtcount: sb.features_ro_compat & RO_COMPAT_INOBTCNT != 0,
    };
    let agcount = sb.ag_count;
    let mut agfs = Vec::with_capacity(agcount as usize);
    let mut agis = Vec::with_capacity(agcount as usize);
    let mut free = Vec::with_capacity(agcount as usize);
    for a in 0..agcount {
        agfs.push(fs.agf(a)?);
        agis.push(fs.agi(a)?);
        free.push(fs.free_extents(a)?);
    }
    let root_chunks = fs.inode_chunks(0)?;
    let [rc] = root_chunks.as_slice() else {
        bail!(
            "mkfs.xfs made {} inode chunks in AG 0, expected only the root's",
            root_chunks.len()
        );
    };
    ensure!(
        rc.holemask == 0 && u64::from(rc.count) == CHUNK_INODES,
        "mkfs.xfs made a sparse root inode chunk"
    );
    ensure!(
        agis.iter().skip(1).all(|a| a.count == 0),
        "mkfs.xfs allocated inodes outside AG 0"
    );

    let nodes = tree::build(content, default)?;
    let n = nodes.len();
    let (earliest, latest) = if bigtime {
        (
            -(1i64 << 31),
            (u64::MAX / 1_000_000_000) as i64 - (1i64 << 31),
        )
    } else {
        (i64::from(i32::MIN), i64::from(i32::MAX))
    };
    if let Some(x) = nodes
        .iter()
        .find(|x| x.time.secs < earliest || x.time.secs > latest)
    {
        bail!(
            "/{}: modification time {} is outside what this filesystem stores ({earliest} to \
             {latest} seconds since 1970{})",
            x.path,
            x.time.secs,
            if bigtime {
                ""
            } else {
                "; the rhel9 profile stores times up to 2486"
            }
        );
    }
    let agino_bits = sb.agblklog + sb.inopblog;
    let ino_of = |agno: u32, agino: u32| (u64::from(agno) << agino_bits) | u64::from(agino);

    // The kernel's per-AG metadata reservation stays free in every AG.
    let mut alloc = Alloc::new(sb.agblklog, free);
    let reflink = sb.features_ro_compat & RO_COMPAT_REFLINK != 0;
    let log_ag = (sb.log_start_fsb >> sb.agblklog) as u32;
    let held: Vec<Vec<(u32, u32)>> = (0..agcount)
        .map(|a| {
            let log = if sb.log_start_fsb != 0 && a == log_ag {
                u64::from(sb.log_blocks)
            } else {
                0
            };
            let r = ag::kernel_reserve(u64::from(fs.ag_length(a)), log, g.finobt, reflink);
            alloc.hold_back(a, r)
        })
        .collect();

    // Inode numbers: the root chunk's free slots, then new chunks.
    let mut chunks: Vec<Vec<Chunk>> = vec![Vec::new(); agcount as usize];
    let mut root_chunk = Chunk {
        startino: rc.startino,
        free: rc.free,
    };
    let mut inos = vec![sb.root_ino; n];
    let mut next = 1;
    for i in 0..64 {
        if next < n && root_chunk.free & (1 << i) != 0 {
            inos[next] = ino_of(0, rc.startino + i);
            root_chunk.free &= !(1u64 << i);
            next += 1;
        }
    }
    chunks[0].push(root_chunk);
    // The root chunk holds mkfs.xfs's own inodes too: place new chunks after it.
    while next < n {
        let ag = alloc.cursor_ag();
        let have = chunks[ag as usize].len();
        if alloc.free_ahead(ag)
            < u64::from(2 * CHUNK_BLOCKS) + ag::inode_btree_blocks(have + 1, g.finobt) as u64
        {
            ensure!(
                ag + 1 < agcount,
                "no room left for {} more inodes: the partition is too small",
                n - next
            );
            alloc.skip_to_ag(ag + 1);
            continue;
        }
        let fsb = alloc.contig(CHUNK_BLOCKS, sb.inode_align.max(1))?;
        let (a, agbno) = alloc.split(fsb);
        let startino = agbno << sb.inopblog;
        let mut c = Chunk {
            startino,
            free: u64::MAX,
        };
        for i in 0..64 {
            if next == n {
                break;
            }
            inos[next] = ino_of(a, startino + i);
            c.free &= !(1u64 << i);
            next += 1;
        }
        chunks[a as usize].push(c);
    }
    // The inode btrees' extra blocks, next to the chunks they describe.
    let mut ino_extra = vec![Vec::new(); agcount as usize];
    let mut fino_extra = vec![Vec::new(); agcount as usize];
    for a in 0..agcount as usize {
        let nrec = chunks[a].len();
        ino_extra[a] = alloc.in_ag(a as u32, ag::extra_blocks(&INOBT, nrec))?;
        if g.finobt {
            let nfree = chunks[a].iter().filter(|c| c.free != 0).count();
            fino_extra[a] = alloc.in_ag(a as u32, ag::extra_blocks(&INOBT, nfree))?;
        }
    }

    // Fork formats, and the metadata blocks of each inode in inode order.
    let mut out = Out::new(file);
    let forks: Vec<Forks> = (0..n)
        .map(|i| tree::forks(&nodes, i, &inos))
        .collect::<Result<_>>()?;
    let mut dext: Vec<Vec<Ext>> = vec![Vec::new(); n];
    let mut aext: Vec<Vec<Ext>> = vec![Vec::new(); n];
    for id in 0..n {
        let (node, f, ino) = (&nodes[id], &forks[id], inos[id]);
        let shown = || format!("/{}", node.path);
        if let AttrShape::Leaf { blocks } = f.attr {
            let fsb = alloc.contig(blocks as u32, 1)?;
            let addrs: Vec<u64> = (0..blocks as u64).map(|i| daddr(&sb, fsb + i)).collect();
            let bl = attr::blocks(node.xattrs, ino, &uuid, &addrs).with_context(shown)?;
            for (i, b) in bl.iter().enumerate() {
                out.write(sb.fsb_to_byte(fsb + i as u64), b)?;
            }
            aext[id] = vec![Ext {
                off: 0,
                fsb,
                len: blocks as u64,
            }];
        }
        match (&f.data, node.what) {
            (DataShape::Dir(shape), _) if !matches!(shape, Shape::Short(_)) => {
                let lbs = shape.logical_blocks();
                let phys = blocks_of(&alloc.stream(lbs.len() as u64)?);
                let addrs: Vec<u64> = phys.iter().map(|&p| daddr(&sb, p)).collect();
                let ents = tree::entries(&nodes, node, &inos);
                let place = dir::Place {
                    ino,
                    parent: inos[node.parent as usize],
                    uuid: &uuid,
                    daddr: &addrs,
                };
                let bl = dir::blocks(*shape, &ents, &place).with_context(shown)?;
                for (b, &p) in bl.iter().zip(&phys) {
                    out.write(sb.fsb_to_byte(p), b)?;
                }
                dext[id] = extents_of(&lbs, &phys, sb.agblklog);
            }
            (DataShape::RemoteLink, What::Symlink(t)) => {
                let fsb = alloc.contig(1, 1)?;
                out.write(
                    sb.fsb_to_byte(fsb),
                    &symlink_block(t, ino, daddr(&sb, fsb), &uuid),
                )?;
                dext[id] = vec![Ext {
                    off: 0,
                    fsb,
                    len: 1,
                }];
            }
            _ => {}
        }
    }

    // File data, in the order the content was added.
    let mut fills = BTreeMap::new();
    for e in content.in_order() {
        if e.kind != Kind::File || e.size == 0 {
            continue;
        }
        let id = nodes[1..]
            .binary_search_by(|x| x.path.cmp(e.path.as_str()))
            .map(|i| i + 1)
            .map_err(|_| anyhow::anyhow!("internal error: {} has no inode", e.path))?;
        let DataShape::File(blocks) = forks[id].data else {
            bail!("internal error: {} is not a file inode", e.path);
        };
        let runs = alloc
            .stream(blocks)
            .with_context(|| format!("placing /{}", e.path))?;
        let mut off = 0u64;
        let mut exts = Vec::with_capacity(runs.len());
        let mut fruns = Vec::with_capacity(runs.len());
        for (fsb, len) in runs {
            exts.push(Ext { off, fsb, len });
            let file_offset = off * BLOCK as u64;
            fruns.push(Run {
                file_offset,
                part_offset: sb.fsb_to_byte(fsb),
                len: (len * BLOCK as u64).min(e.size - file_offset),
            });
            off += len;
        }
        dext[id] = exts;
        fills.insert(
            e.path.clone(),
            Fill {
                path: e.path.clone(),
                size: e.size,
                runs: fruns,
            },
        );
    }

    // Extent btrees for forks with more extents than the inode holds.
    let mut roots: BTreeMap<usize, BtreeRoot> = BTreeMap::new();
    for id in 0..n {
        if dext[id].len() * 16 > forks[id].dspace {
            let r = write_bmbt(
                &mut out,
                &mut alloc,
                &sb,
                inos[id],
                &dext[id],
                forks[id].dspace,
            )
            .with_context(|| format!("extent btree of /{}", nodes[id].path))?;
            roots.insert(id, r);
        }
    }

    // Every inode chunk.
    for (a, list) in chunks.iter().enumerate() {
        for c in list {
            let first = ino_of(a as u32, c.startino);
            let at = sb.ino_to_byte(first);
            let mut buf = vec![0u8; CHUNK_INODES as usize * INODE];
            for (i, b) in buf.chunks_mut(INODE).enumerate() {
                let ino = first + i as u64;
                if ino == sb.rbm_ino || ino == sb.rsum_ino {
                    file.read_exact_at(b, sb.ino_to_byte(ino))
                        .with_context(|| format!("reading inode {ino}"))?;
                    let big = u64::from_be_bytes(b[120..128].try_into().unwrap_or([0; 8])) & 8 != 0;
                    let t = inode::timestamp(default, big);
                    for at in [32, 40, 48, 144] {
                        b[at..at + 8].copy_from_slice(&t);
                    }
                    update_crc(b, 100);
                } else if c.free & (1 << i) != 0 {
                    inode::free(b, ino, generation(&uuid, ino), &uuid);
                } else {
                    let id = inos
                        .binary_search(&ino)
                        .map_err(|_| anyhow::anyhow!("internal error: inode {ino} has no entry"))?;
                    encode_node(
                        b,
                        &nodes,
                        &forks,
                        &inos,
                        id,
                        &dext[id],
                        &aext[id],
                        roots.get(&id),
                        bigtime,
                        &uuid,
                    )
                    .with_context(|| format!("writing the inode of /{}", nodes[id].path))?;
                }
            }
            out.write(at, &buf)?;
        }
    }

    // AG btrees and headers, then the superblock's totals.
    out.flush()?;
    for (a, h) in held.iter().enumerate() {
        alloc.give_back(a as u32, h);
    }
    let mut totals = ag::Totals::default();
    for a in 0..agcount as usize {
        let (count, freecount) = ag::write_inode_btrees(
            &mut out,
            file,
            &g,
            &agis[a],
            &chunks[a],
            &ino_extra[a],
            &fino_extra[a],
        )?;
        totals.icount += count;
        totals.ifree += freecount;
    }
    for agf in &agfs {
        totals.fdblocks += ag::write_free_space(&mut out, file, &g, agf, &mut alloc)?;
    }
    out.flush()?;
    let mut sbuf = vec![0u8; sb.sect_size as usize];
    file.read_exact_at(&mut sbuf, 0)
        .context("reading the superblock")?;
    put64(&mut sbuf, SB_ICOUNT_OFFSET, totals.icount);
    put64(&mut sbuf, SB_IFREE_OFFSET, totals.ifree);
    put64(&mut sbuf, SB_FDBLOCKS_OFFSET, totals.fdblocks);
    update_crc(&mut sbuf, SB_CRC_OFFSET);
    out.write(0, &sbuf)?;
    out.flush()?;
    Ok(fills)
}

/// Encodes the inode of node `id`.
#[allow(clippy::too_many_arguments)]
fn encode_node(
    b: &mut [u8],
    nodes: &[tree::Node],
    forks: &[Forks],
    inos: &[u64],
    id: usize,
    dext: &[Ext],
    aext: &[Ext],
    root: Option<&BtreeRoot>,
    bigtime: bool,
    uuid: &[u8; 16],
) -> Result<()> {
    let (node, f, ino) = (&nodes[id], &forks[id], inos[id]);
    let short;
    let (size, data) = match (&f.data, node.what) {
        (DataShape::Dir(Shape::Short(len)), _) => {
            let ents = tree::entries(nodes, node, inos);
            short = dir::short_form(&ents, inos[node.parent as usize])?;
            ensure!(
                short.len() == *len,
                "internal error: short-form size changed"
            );
            (*len as u64, DataFork::Local(&short))
        }
        (DataShape::Dir(shape), _) => (shape.size(), DataFork::Extents(dext)),
        (DataShape::InlineLink, What::Symlink(t)) => (t.len() as u64, DataFork::Local(t)),
        (DataShape::RemoteLink, What::Symlink(t)) => (t.len() as u64, DataFork::Extents(dext)),
        (DataShape::File(_), What::File(size)) => (size, DataFork::Extents(dext)),
        (DataShape::Special, What::Special(_, rdev)) => (0, DataFork::Dev(rdev)),
        _ => bail!("internal error: inode kind and data fork disagree"),
    };
    let data = match (root, data) {
        (Some(r), _) => DataFork::Btree(r.level, &r.children),
        (None, d) => d,
    };
    let attr = match &f.attr {
        AttrShape::None => AttrFork::None,
        AttrShape::Short(v) => AttrFork::Local(v),
        AttrShape::Leaf { .. } => AttrFork::Extents(aext),
    };
    let nblocks = dext.iter().map(|e| e.len).sum::<u64>()
        + aext.iter().map(|e| e.len).sum::<u64>()
        + root.map_or(0, |r| r.blocks);
    let spec = Spec {
        ino,
        mode: node.mode(),
        uid: node.uid,
        gid: node.gid,
        nlink: node.nlink,
        time: node.time,
        size,
        nblocks,
        nextents: dext.len() as u64,
        data,
        attr,
        forkoff: f.forkoff,
        gen: generation(uuid, ino),
    };
    inode::encode(b, &spec, bigtime, uuid);
    Ok(())
}

/// What a content set takes in the filesystem, computed by the writer's own sizing rules without
/// a filesystem (inode numbers assumed to fit in 32 bits, as they do when the inodes fit in the
/// first terabyte).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Inodes (the root's included).
    pub inodes: u64,
    /// Blocks of inode chunks beyond the root chunk mkfs.xfs makes, and of the inode btrees.
    pub inode_blocks: u64,
    /// Directory blocks.
    pub dir_blocks: u64,
    /// Attribute leaf and remote value blocks.
    pub attr_blocks: u64,
    /// Remote symlink blocks.
    pub symlink_blocks: u64,
    /// File data blocks.
    pub data_blocks: u64,
    /// Extent btree blocks of files larger than `ag_blocks` allows in the inode's extents.
    pub btree_blocks: u64,
}

impl Usage {
    /// All blocks.
    pub fn total(&self) -> u64 {
        self.inode_blocks
            + self.dir_blocks
            + self.attr_blocks
            + self.symlink_blocks
            + self.data_blocks
            + self.btree_blocks
    }
}

/// The blocks `content` takes, by the same rules [`populate`] follows; `extent_blocks` is the
/// longest run a file's data gets before it is split (an AG's free space).
pub fn usage(content: &Content, extent_blocks: u64) -> Result<Usage> {
    let nodes = tree::build(content, Time::default())?;
    let n = nodes.len() as u64;
    // Inode numbers as they would be assigned: the root chunk's 61 free slots, then chunks.
    let inos: Vec<u64> = (0..n).map(|i| if i == 0 { 128 } else { 130 + i }).collect();
    let mut u = Usage {
        inodes: n,
        ..Usage::default()
    };
    let chunks = (n - 1).saturating_sub(61).div_ceil(CHUNK_INODES);
    u.inode_blocks =
        chunks * u64::from(CHUNK_BLOCKS) + 2 * ag::extra_blocks(&INOBT, chunks as usize + 1) as u64;
    let per_extent = extent_blocks.clamp(1, alloc::MAX_EXTENT);
    for id in 0..nodes.len() {
        let f = tree::forks(&nodes, id, &inos)?;
        u.attr_blocks += tree::attr_blocks(&f.attr) as u64;
        match f.data {
            DataShape::Dir(_) => u.dir_blocks += f.data.meta_blocks() as u64,
            DataShape::RemoteLink => u.symlink_blocks += 1,
            DataShape::File(blocks) => {
                u.data_blocks += blocks;
                let exts = blocks.div_ceil(per_extent) + u64::from(blocks > per_extent);
                if exts as usize * 16 > f.dspace {
                    let sizes = btree::level_sizes(&BMBT, exts as usize, (f.dspace - 4) / 16);
                    u.btree_blocks += sizes.iter().sum::<usize>() as u64;
                }
            }
            _ => {}
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::xfs::ondisk::test_support::{Image, MIB};

    /// Free space cut into more extents than a btree block holds gets multi-level free space
    /// btrees, which the reader and xfs_db walk to the same extents and totals.
    #[test]
    fn free_space_btrees_of_many_extents() {
        let img = Image::new();
        img.mkfs("x\n0 0\nd--755 0 0\n$\n", 512 * MIB, &[]);
        let f = File::options()
            .read(true)
            .write(true)
            .open(&img.path)
            .unwrap();
        let fs = Xfs::open(&f).unwrap();
        let sb = fs.sb().clone();
        let free: Vec<Vec<(u32, u32)>> = (0..sb.ag_count)
            .map(|a| fs.free_extents(a).unwrap())
            .collect();
        let agf = fs.agf(1).unwrap();
        let mut alloc = Alloc::new(sb.agblklog, free);
        let (start, _) = alloc.free(1)[0];
        for i in 0..700 {
            alloc.take(1, start + 2 * i, 1);
        }
        let g = Geometry {
            sb: &sb,
            finobt: true,
            inobtcount: false,
        };
        let mut out = Out::new(&f);
        let share = ag::write_free_space(&mut out, &f, &g, &agf, &mut alloc).unwrap();
        out.flush().unwrap();
        let want = alloc.free(1).to_vec();
        assert!(want.len() > 600, "{}", want.len());
        let fs = img.open();
        assert_eq!(fs.free_extents(1).unwrap(), want);
        let agf = fs.agf(1).unwrap();
        let blocks: u32 = want.iter().map(|&(_, l)| l).sum();
        assert_eq!((agf.bno_level, agf.cnt_level), (2, 2));
        assert_eq!(agf.freeblks, blocks);
        assert_eq!(agf.btreeblks, 4, "two leaves besides each root");
        assert_eq!(share, u64::from(blocks + agf.flcount + agf.btreeblks));
        // xfs_db counts the free list's blocks as extents of one block too.
        let (exts, total) = (want.len() as u32 + agf.flcount, blocks + agf.flcount);
        for flag in ["", "-c "] {
            let out = img.db(&[&format!("freesp {flag}-s -a 1")]);
            assert!(
                out.contains(&format!("total free extents {exts}"))
                    && out.contains(&format!("total free blocks {total}")),
                "xfs_db freesp {flag}: {out}"
            );
        }
    }
}
