//! The inodes of a content set: one per file, directory, symlink, device, FIFO or socket (a
//! hard link adds a name, not an inode), each with its directory entries, link count and what
//! its forks must hold; and the choice of fork formats that depends only on that (attributes
//! first, as the kernel gives them priority in the literal area, then the data fork in the
//! space they leave).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};

use super::attr::{self, AttrShape};
use super::dir::{self, Ent, Shape};
use super::inode::LITINO;
use crate::compose::content::{Content, Kind, Time, Xattrs};

const S_IFIFO: u16 = 0o010000;
const S_IFCHR: u16 = 0o020000;
const S_IFDIR: u16 = 0o040000;
const S_IFBLK: u16 = 0o060000;
const S_IFREG: u16 = 0o100000;
const S_IFLNK: u16 = 0o120000;
const S_IFSOCK: u16 = 0o140000;

/// Largest attribute fork offset (8-byte units) the kernel chooses: it leaves the attribute
/// fork room for a btree root with one pointer.
const MAX_FORKOFF: usize = (LITINO - (4 + 16)) / 8;
/// Smallest data fork the kernel leaves beside an attribute fork: a btree root with three
/// pointers, rounded up to 8 bytes.
const MIN_DATA_FORK: usize = 56;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum What<'c> {
    /// A directory.
    Dir,
    /// A regular file of this size.
    File(u64),
    /// A symlink with this target.
    Symlink(&'c [u8]),
    /// A device, FIFO or socket: its type bits and encoded device number.
    Special(u16, u32),
}

/// One inode.
pub(crate) struct Node<'c> {
    pub what: What<'c>,
    /// Permission bits.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub time: Time,
    pub xattrs: &'c Xattrs,
    /// First path (`""` for the root).
    pub path: &'c str,
    /// Parent directory (node index; the root is its own parent).
    pub parent: u32,
    pub nlink: u32,
    /// Directory entries (name, node), sorted by name.
    pub children: Vec<(&'c [u8], u32)>,
}

impl Node<'_> {
    /// Full mode: type and permission bits.
    pub(crate) fn mode(&self) -> u16 {
        let t = match self.what {
            What::Dir => S_IFDIR,
            What::File(_) => S_IFREG,
            What::Symlink(_) => S_IFLNK,
            What::Special(t, _) => t,
        };
        t | (self.perm & 0o7777) as u16
    }

    /// Directory-entry file type.
    pub(crate) fn ftype(&self) -> u8 {
        match self.what {
            What::File(_) => 1,
            What::Dir => 2,
            What::Special(S_IFCHR, _) => 3,
            What::Special(S_IFBLK, _) => 4,
            What::Special(S_IFIFO, _) => 5,
            What::Special(S_IFSOCK, _) => 6,
            What::Symlink(_) => 7,
            What::Special(..) => 0,
        }
    }
}

/// The inodes of `content`: node 0 is the root, the others in path order.
pub(crate) fn build(content: &Content, default: Time) -> Result<Vec<Node<'_>>> {
    let root = content.root();
    let mut nodes = vec![Node {
        what: What::Dir,
        perm: root.mode,
        uid: root.uid,
        gid: root.gid,
        time: root.mtime.unwrap_or(default),
        xattrs: &root.xattrs,
        path: "",
        parent: 0,
        nlink: 2,
        children: Vec::new(),
    }];
    let mut index: HashMap<&str, u32> = HashMap::with_capacity(content.len() + 1);
    index.insert("", 0);
    let mut links = Vec::new();
    for e in content.entries() {
        let what = match &e.kind {
            Kind::Hardlink(_) => {
                links.push(e);
                continue;
            }
            Kind::Dir => What::Dir,
            Kind::File => What::File(e.size),
            Kind::Symlink(t) => What::Symlink(t),
            Kind::CharDevice { major, minor } => What::Special(S_IFCHR, (major << 18) | minor),
            Kind::BlockDevice { major, minor } => What::Special(S_IFBLK, (major << 18) | minor),
            Kind::Fifo => What::Special(S_IFIFO, 0),
            Kind::Socket => What::Special(S_IFSOCK, 0),
        };
        let parent = *index
            .get(e.parent())
            .with_context(|| format!("internal error: {} has no parent", e.path))?;
        let id = nodes.len() as u32;
        nodes.push(Node {
            what,
            perm: e.mode,
            uid: e.uid,
            gid: e.gid,
            time: e.mtime.unwrap_or(default),
            xattrs: &e.xattrs,
            path: &e.path,
            parent,
            nlink: if what == What::Dir { 2 } else { 1 },
            children: Vec::new(),
        });
        index.insert(&e.path, id);
        nodes[parent as usize]
            .children
            .push((e.name().as_bytes(), id));
        if what == What::Dir {
            nodes[parent as usize].nlink += 1;
        }
    }
    for e in links {
        let Kind::Hardlink(t) = &e.kind else { continue };
        let (Some(&id), Some(&parent)) = (index.get(t.as_str()), index.get(e.parent())) else {
            bail!(
                "internal error: hard link {} to {t} without its inode",
                e.path
            );
        };
        nodes[id as usize].nlink += 1;
        nodes[parent as usize]
            .children
            .push((e.name().as_bytes(), id));
    }
    for n in &mut nodes {
        if n.children.len() > 1 {
            n.children.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
    }
    Ok(nodes)
}

/// The fork layout of one inode that does not depend on where its blocks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forks {
    pub attr: AttrShape,
    /// Attribute fork offset (8-byte units; 0 without attributes).
    pub forkoff: u8,
    /// Bytes the data fork may use.
    pub dspace: usize,
    pub data: DataShape,
}

/// How the data fork is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataShape {
    /// A directory.
    Dir(Shape),
    /// An inline symlink.
    InlineLink,
    /// A symlink in one remote block.
    RemoteLink,
    /// File data in this many blocks.
    File(u64),
    /// A device number.
    Special,
}

impl DataShape {
    /// Metadata blocks the data fork needs (not counting file data or an extent btree).
    pub(crate) fn meta_blocks(&self) -> usize {
        match self {
            DataShape::Dir(s) => s.logical_blocks().len(),
            DataShape::RemoteLink => 1,
            _ => 0,
        }
    }
}

/// Blocks an attribute fork needs.
pub(crate) fn attr_blocks(a: &AttrShape) -> usize {
    match a {
        AttrShape::Leaf { blocks } => *blocks,
        _ => 0,
    }
}

/// The entries of directory `n` for the directory encoder, given every node's inode number.
pub(crate) fn entries<'c>(nodes: &[Node<'c>], n: &Node<'c>, inos: &[u64]) -> Vec<Ent<'c>> {
    n.children
        .iter()
        .map(|&(name, id)| Ent {
            name,
            ino: inos[id as usize],
            ftype: nodes[id as usize].ftype(),
        })
        .collect()
}

/// Chooses the forks of node `id`.
pub(crate) fn forks(nodes: &[Node], id: usize, inos: &[u64]) -> Result<Forks> {
    let n = &nodes[id];
    let special = matches!(n.what, What::Special(..));
    let attr = if special {
        attr::shape(n.xattrs, LITINO - 8)
    } else {
        attr::shape(n.xattrs, LITINO - MIN_DATA_FORK)
    }
    .with_context(|| format!("/{}", n.path))?;
    let forkoff = match &attr {
        AttrShape::None => 0,
        _ if special => 1,
        AttrShape::Short(v) => ((LITINO - v.len()) / 8).min(MAX_FORKOFF),
        // One extent record: the leaf and remote value blocks are allocated contiguously.
        AttrShape::Leaf { .. } => ((LITINO - 16) / 8).min(MAX_FORKOFF),
    };
    let dspace = if forkoff == 0 { LITINO } else { forkoff * 8 };
    let data = match n.what {
        What::Dir => {
            let ents = entries(nodes, n, inos);
            DataShape::Dir(dir::shape(&ents, inos[n.parent as usize], dspace))
        }
        What::Symlink(t) if t.len() <= dspace => DataShape::InlineLink,
        What::Symlink(_) => DataShape::RemoteLink,
        What::File(size) => DataShape::File(size.div_ceil(super::BLOCK as u64)),
        What::Special(..) => DataShape::Special,
    };
    Ok(Forks {
        attr,
        forkoff: forkoff as u8,
        dspace,
        data,
    })
}
