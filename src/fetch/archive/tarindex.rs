//! One tar file's member index: every regular member's name, the byte offset of its data in the
//! file and its size, read from the headers alone (the reader seeks past each member's data, so
//! indexing a 500 GiB archive reads a few megabytes). Names come from ustar (with the prefix
//! field), PAX (`path`, `size`) and GNU long-name headers, as Go's `archive/tar` (oc-mirror) and
//! GNU tar write them.
//!
//! Damage is recorded, not fatal here: a member whose data runs past the end of the file is
//! kept as incomplete (whoever needs its bytes gets an error naming it), and a file that ends
//! without the end-of-archive block after its last member, or whose headers stop making sense,
//! is marked as cut there (members after that point are lost). A file that is not a tar at all
//! is an error.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const BLOCK: u64 = 512;

/// A regular member of a tar file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name (a relative path, `./` removed).
    pub name: String,
    /// Offset of its first data byte in the file.
    pub offset: u64,
    /// Its size, as the headers say.
    pub size: u64,
    /// Whether the file holds all of its bytes.
    pub complete: bool,
}

/// How a tar file is damaged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside this member's data, `have` of its `size` bytes in.
    Truncated {
        /// The member.
        member: String,
        /// Bytes of it present.
        have: u64,
        /// Its size.
        size: u64,
    },
    /// The file ends, or stops being a tar, after this member (`None`: before the first).
    Cut {
        /// The last good member.
        after: Option<String>,
        /// What was found there.
        cause: String,
    },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Truncated { member, have, size } => write!(
                f,
                "member {member}: the file ends {have} bytes into its {size} (truncated)"
            ),
            Damage::Cut { after, cause } => match after {
                Some(m) => write!(f, "{cause} after member {m} (truncated)"),
                None => write!(f, "{cause} before its first member (truncated)"),
            },
        }
    }
}

/// The index of one tar file.
#[derive(Clone, Debug)]
pub struct TarIndex {
    /// The file.
    pub path: PathBuf,
    /// Its length.
    pub len: u64,
    /// Its regular members, in file order.
    pub members: Vec<Member>,
    /// Damage found, if any.
    pub damage: Option<Damage>,
}

/// Indexes the regular members of the tar file `path`.
pub fn index(path: &Path) -> Result<TarIndex> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len == 0 {
        bail!("{}: empty file, not a tar archive", path.display());
    }
    let mut archive = tar::Archive::new(&f);
    let mut entries = archive
        .entries_with_seek()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut members = Vec::new();
    let mut damage = None;
    let mut last_name: Option<String> = None;
    // Where the data of the last entry ends, padded to a block: the end marker follows.
    let mut end = 0u64;
    loop {
        let entry = match entries.next() {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                if last_name.is_none() && members.is_empty() {
                    bail!("{}: not a tar archive ({e})", path.display());
                }
                damage = Some(Damage::Cut {
                    after: last_name.clone(),
                    cause: format!("unreadable header ({e})"),
                });
                break;
            }
        };
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = name.trim_start_matches("./").to_string();
        let offset = entry.raw_file_position();
        let size = entry.size();
        let regular = entry.header().entry_type().is_file();
        drop(entry);
        let complete = offset.checked_add(size).is_some_and(|e| e <= len);
        if !complete {
            damage = Some(Damage::Truncated {
                member: name.clone(),
                have: len.saturating_sub(offset),
                size,
            });
        }
        if regular {
            members.push(Member {
                name: name.clone(),
                offset,
                size,
                complete,
            });
        }
        if !complete {
            break;
        }
        end = offset + size.div_ceil(BLOCK) * BLOCK;
        last_name = Some(name);
    }
    if damage.is_none() {
        // A complete archive ends with a zero block after its last member (two, from Go's and
        // GNU tar); a copy cut at a member boundary does not.
        let mut block = [0u8; BLOCK as usize];
        let ok = end + BLOCK <= len
            && f.read_exact_at(&mut block, end).is_ok()
            && block.iter().all(|b| *b == 0);
        if !ok {
            damage = Some(Damage::Cut {
                after: last_name.clone(),
                cause: "no end-of-archive block".to_string(),
            });
        }
    }
    if members.is_empty() && last_name.is_none() && damage.is_some() {
        bail!(
            "{}: not a tar archive (no member header, no end-of-archive block)",
            path.display()
        );
    }
    Ok(TarIndex {
        path: path.to_path_buf(),
        len,
        members,
        damage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(names: &[(&str, usize)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (n, len) in names {
            let mut h = tar::Header::new_ustar();
            h.set_size(*len as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, n, &vec![7u8; *len][..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn members_offsets_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!(
            "docker/registry/v2/blobs/sha256/ab/{}/data",
            "ab".repeat(32)
        );
        let bytes = tar_with(&[("a.txt", 10), (&long, 1000), ("working-dir/x", 3)]);
        let p = dir.path().join("t.tar");
        std::fs::write(&p, &bytes).unwrap();
        let t = index(&p).unwrap();
        assert_eq!(t.damage, None);
        assert_eq!(t.members.len(), 3);
        assert_eq!(t.members[1].name, long);
        let m = &t.members[1];
        assert_eq!(
            &bytes[m.offset as usize..][..m.size as usize],
            &[7u8; 1000][..]
        );

        // Cut inside the second member's data.
        std::fs::write(&p, &bytes[..t.members[1].offset as usize + 100]).unwrap();
        let t = index(&p).unwrap();
        assert_eq!(
            t.damage,
            Some(Damage::Truncated {
                member: long.clone(),
                have: 100,
                size: 1000
            })
        );
        assert!(!t.members[1].complete);

        // Cut at a member boundary: no end marker.
        let m2 = &index(&{
            std::fs::write(&p, &bytes).unwrap();
            p.clone()
        })
        .unwrap()
        .members[2];
        let cut = (m2.offset + 512) as usize;
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let t = index(&p).unwrap();
        assert!(
            matches!(&t.damage, Some(Damage::Cut { after: Some(a), .. }) if a == "working-dir/x"),
            "{:?}",
            t.damage
        );

        std::fs::write(&p, b"not a tar at all, just some text that is long enough").unwrap();
        assert!(index(&p).is_err());
        std::fs::write(&p, b"").unwrap();
        assert!(index(&p).unwrap_err().to_string().contains("empty"));
    }
}
