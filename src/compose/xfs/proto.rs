//! mkfs.xfs protofiles, and stand-in names for what a protofile cannot spell.
//!
//! mkfs.xfs reads a protofile as whitespace-separated tokens: a name containing a space, tab or
//! newline, a name starting with `:` (a comment) or the name `$` (end of directory) cannot be
//! written, and neither can a symlink target with such bytes. Such a name gets a *stand-in* of the
//! same length whose XFS directory hash equals the real name's, so mkfs.xfs places it exactly
//! where the real name belongs in every directory format (short-form, block, leaf, node): after
//! mkfs, overwriting the stand-in's bytes with the real name (and the checksum of the block or
//! inode holding it) yields the filesystem mkfs would have made for the real name. The hash is
//! linear over GF(2) in the name's bits, so stand-ins are found by Gaussian elimination.
//! A one-byte name (`$`, a space) hashes to its own byte, so no other one-byte name shares its
//! hash: its stand-in is the nearest free byte with no other name hashing in between, and the
//! directory's hash index entry is corrected after mkfs without changing its order.
//! Symlink targets are not hashed: their stand-in only replaces the unwritable bytes.
//!
//! Regular files are *reserved* entries (`r`, size only): mkfs.xfs never copies file data
//! (xfsprogs 6.1 corrupts multi-extent files it copies); empty files are copied from /dev/null.

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Result};

use super::ondisk::da_hashname;
use crate::compose::content::{Content, Entry, Kind};

/// Whether a protofile can carry `name` as a token.
fn is_writable(name: &[u8]) -> bool {
    !name.is_empty()
        && name != b"$"
        && name[0] != b':'
        && !name
            .iter()
            .any(|&b| matches!(b, b' ' | b'\t' | b'\n' | 0 | b'/'))
}

/// A byte a stand-in name may contain anywhere except first position (`:`).
fn is_ok_byte(b: u8) -> bool {
    !matches!(b, b' ' | b'\t' | b'\n' | 0 | b'/')
}

/// A deterministic pseudo-random sequence (xorshift), seeded from the name, so the same content
/// always gets the same stand-ins.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Contribution of bit `bit` of byte `pos` to the hash of a `len`-byte name.
fn column(len: usize, pos: usize, bit: u32) -> u32 {
    let mut v = vec![0u8; len];
    v[pos] = 1 << bit;
    da_hashname(&v)
}

/// A stand-in for a one-byte name, whose hash is the byte itself, so no other name shares it:
/// the nearest writable, free byte such that no other name of the directory hashes between the
/// two. The directory's hash index then keeps its order when the hash is corrected after mkfs.
fn one_byte_stand_in(name: u8, taken: &HashSet<Vec<u8>>, hashes: &[u32]) -> Result<Vec<u8>> {
    let b = i32::from(name);
    for d in 1..256 {
        for c in [b - d, b + d] {
            let Ok(c) = u8::try_from(c) else { continue };
            let (lo, hi) = (u32::from(c.min(name)), u32::from(c.max(name)));
            if is_writable(&[c])
                && !taken.contains(&vec![c])
                && !hashes.iter().any(|&h| (lo..=hi).contains(&h))
            {
                return Ok(vec![c]);
            }
        }
    }
    bail!(
        "no stand-in found for the one-byte name {:?}",
        char::from(name)
    )
}

/// Finds a stand-in for `name`: same length, writable, not in `taken`, and for names of two or
/// more bytes the same XFS hash. `hashes` are the hashes of the directory's other names.
pub fn stand_in(name: &[u8], taken: &HashSet<Vec<u8>>, hashes: &[u32]) -> Result<Vec<u8>> {
    let len = name.len();
    if len == 1 {
        return one_byte_stand_in(name[0], taken, hashes);
    }
    if len == 0 {
        bail!("empty name");
    }
    let target = da_hashname(name);
    let cols: Vec<(usize, u32, u32)> = (0..len)
        .flat_map(|p| (0..8).map(move |b| (p, b, column(len, p, b))))
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ u64::from(target) ^ (len as u64) << 40);
    const FILL: &[u8] = b"_-.+=~xXq#";
    for _ in 0..4000 {
        // Replace the unwritable bytes, then fix the hash with flips chosen by elimination over
        // the columns in a random order.
        let mut cand = name.to_vec();
        for (i, b) in cand.iter_mut().enumerate() {
            if !is_ok_byte(*b) || (i == 0 && *b == b':') {
                *b = FILL[(rng.next() % FILL.len() as u64) as usize];
            }
        }
        let mut order: Vec<usize> = (0..cols.len()).collect();
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        // Basis indexed by its highest set bit, each with the columns it combines.
        let mut basis: Vec<Option<(u32, Vec<usize>)>> = vec![None; 32];
        // Column combinations that hash to zero: adding one keeps the hash.
        let mut null: Vec<Vec<usize>> = Vec::new();
        for &c in &order {
            let mut v = cols[c].2;
            let mut combo = vec![c];
            loop {
                if v == 0 {
                    null.push(combo);
                    break;
                }
                let top = 31 - v.leading_zeros() as usize;
                match &basis[top] {
                    Some((bv, bc)) => {
                        v ^= bv;
                        xor_sets(&mut combo, bc);
                    }
                    None => {
                        basis[top] = Some((v, combo));
                        break;
                    }
                }
            }
        }
        let mut t = target ^ da_hashname(&cand);
        let mut flips: Vec<usize> = Vec::new();
        while t != 0 {
            let top = 31 - t.leading_zeros() as usize;
            let Some((bv, bc)) = &basis[top] else { break };
            t ^= bv;
            xor_sets(&mut flips, bc);
        }
        if t != 0 {
            continue;
        }
        // Move through the solution space: add a few random null-space vectors.
        if !null.is_empty() {
            for _ in 0..(rng.next() % 4) {
                let v = &null[(rng.next() % null.len() as u64) as usize];
                xor_sets(&mut flips, v);
            }
        }
        for &c in &flips {
            let (p, b, _) = cols[c];
            cand[p] ^= 1 << b;
        }
        if is_writable(&cand)
            && da_hashname(&cand) == target
            && !taken.contains(&cand)
            && cand != name
        {
            return Ok(cand);
        }
    }
    bail!(
        "no same-hash stand-in found for name {:?}",
        String::from_utf8_lossy(name)
    )
}

fn xor_sets(a: &mut Vec<usize>, b: &[usize]) {
    for &x in b {
        if let Some(i) = a.iter().position(|&y| y == x) {
            a.swap_remove(i);
        } else {
            a.push(x);
        }
    }
}

/// A stand-in for a symlink target: unwritable bytes replaced, same length.
fn target_stand_in(target: &[u8]) -> Vec<u8> {
    let mut t = target.to_vec();
    for (i, b) in t.iter_mut().enumerate() {
        if matches!(*b, b' ' | b'\t' | b'\n') || (i == 0 && *b == b':') {
            *b = b'_';
        }
    }
    if t == b"$" {
        t[0] = b'_';
    }
    t
}

/// The protofile for a content set, and how its names map back.
pub struct Proto {
    /// Protofile text (bytes: names need not be UTF-8).
    pub text: Vec<u8>,
    /// For every entry, the path as mkfs.xfs will create it (stand-ins in place).
    pub proto_paths: BTreeMap<Vec<u8>, String>,
    /// Entries whose name was replaced by a stand-in: content path -> stand-in name.
    pub renamed: BTreeMap<String, Vec<u8>>,
    /// Symlinks whose target was replaced: content path -> stand-in target.
    pub retargeted: BTreeMap<String, Vec<u8>>,
}

fn mode_token(kind: u8, e: &Entry) -> String {
    let u = if e.mode & 0o4000 != 0 { 'u' } else { '-' };
    let g = if e.mode & 0o2000 != 0 { 'g' } else { '-' };
    format!("{}{u}{g}{:03o}", kind as char, e.mode & 0o777)
}

/// Builds the protofile for `content`.
pub fn build(content: &Content) -> Result<Proto> {
    let children = content.children();
    let mut proto = Proto {
        text: b"/dev/null\n0 0\nd--755 0 0\n".to_vec(),
        proto_paths: BTreeMap::new(),
        renamed: BTreeMap::new(),
        retargeted: BTreeMap::new(),
    };
    // Stand-in names per directory.
    let mut names: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (dir, kids) in &children {
        let mut taken: HashSet<Vec<u8>> =
            kids.iter().map(|e| e.name().as_bytes().to_vec()).collect();
        let hashes: Vec<u32> = kids
            .iter()
            .map(|e| da_hashname(e.name().as_bytes()))
            .collect();
        for e in kids {
            let n = e.name().as_bytes();
            if is_writable(n) {
                names.insert(e.path.clone(), n.to_vec());
            } else {
                // A one-byte name's stand-in must not cross any other name's hash.
                let own = da_hashname(n);
                let others: Vec<u32> = hashes.iter().copied().filter(|&h| h != own).collect();
                let s = stand_in(n, &taken, &others)
                    .map_err(|err| anyhow::anyhow!("{dir}/{}: {err}", e.name()))?;
                taken.insert(s.clone());
                proto.renamed.insert(e.path.clone(), s.clone());
                names.insert(e.path.clone(), s);
            }
        }
    }
    fn emit(
        dir: &str,
        proto_dir: &[u8],
        children: &BTreeMap<&str, Vec<&Entry>>,
        names: &BTreeMap<String, Vec<u8>>,
        out: &mut Proto,
    ) -> Result<()> {
        let Some(kids) = children.get(dir) else {
            return Ok(());
        };
        for e in kids {
            let name = &names[&e.path];
            let mut ppath = proto_dir.to_vec();
            if !ppath.is_empty() {
                ppath.push(b'/');
            }
            ppath.extend_from_slice(name);
            out.proto_paths.insert(ppath.clone(), e.path.clone());
            out.text.extend_from_slice(name);
            out.text.push(b' ');
            match &e.kind {
                Kind::File if e.size == 0 => out.text.extend_from_slice(
                    format!("{} {} {} /dev/null\n", mode_token(b'-', e), e.uid, e.gid).as_bytes(),
                ),
                Kind::File => out.text.extend_from_slice(
                    format!("{} {} {} {}\n", mode_token(b'r', e), e.uid, e.gid, e.size).as_bytes(),
                ),
                Kind::Symlink(t) => {
                    out.text.extend_from_slice(
                        format!("{} {} {} ", mode_token(b'l', e), e.uid, e.gid).as_bytes(),
                    );
                    if is_writable_target(t) {
                        out.text.extend_from_slice(t);
                    } else {
                        let s = target_stand_in(t);
                        out.text.extend_from_slice(&s);
                        out.retargeted.insert(e.path.clone(), s);
                    }
                    out.text.push(b'\n');
                }
                Kind::Dir => {
                    out.text.extend_from_slice(
                        format!("{} {} {}\n", mode_token(b'd', e), e.uid, e.gid).as_bytes(),
                    );
                    emit(&e.path, &ppath, children, names, out)?;
                    out.text.extend_from_slice(b"$\n");
                }
            }
        }
        Ok(())
    }
    emit("", b"", &children, &names, &mut proto)?;
    proto.text.extend_from_slice(b"$\n");
    Ok(proto)
}

fn is_writable_target(t: &[u8]) -> bool {
    t != b"$" && t[0] != b':' && !t.iter().any(|&b| matches!(b, b' ' | b'\t' | b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_ins_keep_hash_and_length() {
        let taken = HashSet::new();
        for name in [
            &b"a b"[..],
            b" x",
            b"with space.txt",
            b":colon",
            b"$x",
            b"tab\there",
            b"new\nline",
            b"   ",
            "caf\u{e9} au lait \u{2603}".as_bytes(),
            &[b' '; 255][..],
        ] {
            let s = stand_in(name, &taken, &[]).unwrap();
            assert_eq!(s.len(), name.len());
            assert_eq!(da_hashname(&s), da_hashname(name));
            assert!(is_writable(&s), "{s:?}");
        }
    }

    #[test]
    fn one_byte_stand_ins_keep_hash_order() {
        let taken: HashSet<Vec<u8>> = [b"$".to_vec(), b"#".to_vec()].into();
        // `#` is taken and hashes 0x23: the stand-in for `$` (0x24) must be above it.
        let s = stand_in(b"$", &taken, &[0x23, 0x1000]).unwrap();
        assert_eq!(s, b"%");
        // Boxed in by names hashing to 0x23 and 0x25, `$` has no stand-in: a clear error.
        let e = stand_in(b"$", &taken, &[0x23, 0x25])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no stand-in"), "{e}");
        for bad in [b" ", b":", b"\t", b"\n"] {
            let s = stand_in(bad, &HashSet::new(), &[]).unwrap();
            assert!(is_writable(&s) && s.len() == 1, "{s:?}");
        }
    }

    #[test]
    fn stand_ins_avoid_taken_names() {
        let mut taken = HashSet::new();
        let a = stand_in(b"a b c", &taken, &[]).unwrap();
        taken.insert(a.clone());
        let b = stand_in(b"a b c", &taken, &[]).unwrap();
        assert_ne!(a, b);
    }
}
