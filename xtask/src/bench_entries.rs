//! `cargo xtask bench compose`, many-entries half: a tree of 300,000 entries (small files,
//! symlinks, hard links, FIFOs, directories, extended attributes on some files) composed by
//! `prestage compose` side by side with `cp -a` of the same tree into a kernel-mounted XFS
//! (the same profile, a loop device) plus `sync`. Prints both times, the ratio, each command's
//! peak RSS and prestage's RSS per entry; then checks the image as the test suite checks smaller
//! ones: `xfs_repair -n` clean, and the kernel's read-only mount of it identical to the source
//! (names, types, modes, sizes, bytes, symlink targets, attributes, hard-link identity).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::bench::{drop_caches, measure, Noise};
use crate::run;

/// Entries of the benchmark tree.
pub const ENTRIES: usize = 300_000;
const MIB: u64 = 1 << 20;

fn setxattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let p = CString::new(path.as_os_str().as_bytes())?;
    let n = CString::new(name)?;
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        bail!(
            "setxattr {name} on {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn xattrs(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let p = CString::new(path.as_os_str().as_bytes())?;
    let mut names = vec![0u8; 64 << 10];
    // SAFETY: valid path and buffer.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        bail!(
            "listxattr {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    let mut out = BTreeMap::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
    {
        let c = CString::new(name)?;
        let mut v = vec![0u8; 64 << 10];
        // SAFETY: valid strings and buffer.
        let m = unsafe { libc::lgetxattr(p.as_ptr(), c.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if m < 0 {
            bail!(
                "getxattr {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        v.truncate(m as usize);
        out.insert(name.to_vec(), v);
    }
    Ok(out)
}

/// Makes the tree (once; a marker says it is complete). Returns its entry count.
fn make_tree(dir: &Path) -> Result<usize> {
    let marker = dir.join(".complete");
    if let Ok(n) = std::fs::read_to_string(&marker) {
        return n.trim().parse().context("the tree's marker");
    }
    let _ = std::fs::remove_dir_all(dir);
    let mut noise = Noise::new(42);
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    let mut d = 0;
    while n < ENTRIES {
        let sub = dir.join(format!("d{:03}/sub{d:05}", d / 30));
        std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        n += 1;
        let k = if d % 50 == 0 { 2000 } else { 60 };
        for i in 0..k {
            let p = sub.join(format!("entry-{i:04}-{}", "x".repeat(i % 40)));
            match i % 10 {
                0..=6 => {
                    let len = [0, 10, 100, 1000, 5000, 300, 40][i % 7];
                    noise.fill(&mut buf);
                    let mut f =
                        File::create(&p).with_context(|| format!("creating {}", p.display()))?;
                    f.write_all(&buf[..len])?;
                    if i % 100 == 3 {
                        setxattr(&p, "user.bench", &buf[len..len + 100])?;
                    }
                }
                7 => std::os::unix::fs::symlink(format!("entry-{:04}-", (i + 1) % k), &p)?,
                8 => std::fs::hard_link(sub.join("entry-0000-"), &p)?,
                _ => {
                    let c = CString::new(p.as_os_str().as_bytes())?;
                    // SAFETY: a valid path.
                    if unsafe { libc::mkfifo(c.as_ptr(), 0o644) } != 0 {
                        bail!(
                            "mkfifo {}: {}",
                            p.display(),
                            std::io::Error::last_os_error()
                        );
                    }
                }
            }
            n += 1;
        }
        d += 1;
    }
    std::fs::write(&marker, n.to_string())?;
    Ok(n)
}

/// Compares the mounted image `got` with the source `want`; returns the entries compared.
fn compare(want: &Path, got: &Path) -> Result<usize> {
    let mut count = 0;
    let mut w_ino: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut g_ino: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    let (mut wb, mut gb) = (Vec::new(), Vec::new());
    while let Some(rel) = stack.pop() {
        let names = |root: &Path| -> Result<Vec<std::ffi::OsString>> {
            let mut v: Vec<_> = std::fs::read_dir(root.join(&rel))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()?;
            v.retain(|n| !(rel.as_os_str().is_empty() && (n == ".prestage" || n == ".complete")));
            v.sort();
            Ok(v)
        };
        let (wn, gn) = (names(want)?, names(got)?);
        if wn != gn {
            bail!("/{}: the entries differ", rel.display());
        }
        for name in wn {
            let p = rel.join(&name);
            let (wm, gm) = (
                std::fs::symlink_metadata(want.join(&p))?,
                std::fs::symlink_metadata(got.join(&p))?,
            );
            count += 1;
            if wm.mode() != gm.mode() || wm.len() != gm.len() && !wm.is_dir() {
                bail!("/{}: mode or size differs", p.display());
            }
            if wm.file_type().is_symlink() {
                if std::fs::read_link(want.join(&p))? != std::fs::read_link(got.join(&p))? {
                    bail!("/{}: symlink target differs", p.display());
                }
            } else if wm.is_file() {
                wb.clear();
                gb.clear();
                File::open(want.join(&p))?.read_to_end(&mut wb)?;
                File::open(got.join(&p))?.read_to_end(&mut gb)?;
                if wb != gb {
                    bail!("/{}: bytes differ", p.display());
                }
            }
            if xattrs(&want.join(&p))? != xattrs(&got.join(&p))? {
                bail!("/{}: extended attributes differ", p.display());
            }
            if wm.is_dir() {
                stack.push(p);
            } else {
                w_ino.entry(wm.ino()).or_default().push(p.clone());
                g_ino.entry(gm.ino()).or_default().push(p);
            }
        }
    }
    let groups = |m: BTreeMap<u64, Vec<PathBuf>>| -> Vec<Vec<PathBuf>> {
        let mut v: Vec<Vec<PathBuf>> = m.into_values().filter(|g| g.len() > 1).collect();
        for g in &mut v {
            g.sort();
        }
        v.sort();
        v
    };
    if groups(w_ino) != groups(g_ino) {
        bail!("the names sharing an inode (hard links) differ");
    }
    Ok(count)
}

/// The many-entries benchmark under `dir`.
pub fn run_entries(dir: &Path, bin: &Path) -> Result<()> {
    let tree = dir.join("tree300k");
    eprintln!(
        "generating the {ENTRIES}-entry tree in {} (once)",
        tree.display()
    );
    let entries = make_tree(&tree)?;
    let out = dir.join("out300k");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let part = 4096 * MIB;
    let layout = out.join("entries.toml");
    std::fs::write(
        &layout,
        format!(
            "[disk]\nsize = \"{}MiB\"\n\n[[partition]]\nlabel = \"data\"\nanchor = \"end\"\n\
             size = \"{}MiB\"\nfilesystem = \"xfs\"\n",
            part / MIB + 8,
            part / MIB
        ),
    )?;

    // cp -a into a kernel-mounted XFS of the same size and profile, then sync.
    let fsimg = out.join("cp.xfs");
    File::create(&fsimg)?.set_len(part)?;
    run(Command::new("mkfs.xfs")
        .args([
            "-f",
            "-q",
            "-b",
            "size=4096",
            "-m",
            "crc=1,finobt=1,bigtime=0,inobtcount=0,reflink=0,rmapbt=0",
            "-i",
            "size=512,sparse=1,nrext64=0",
        ])
        .arg(&fsimg))?;
    let mnt = out.join("mnt");
    std::fs::create_dir_all(&mnt)?;
    run(Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(&fsimg)
        .arg(&mnt))?;
    drop_caches();
    let cp = measure(
        Command::new("sh").arg("-c").arg(format!(
            "cp -a '{}' '{}/tree' && sync",
            tree.display(),
            mnt.display()
        )),
        None,
    );
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = std::fs::remove_file(&fsimg);
    let (cp_t, cp_rss) = cp?;

    drop_caches();
    let img = out.join("entries.raw");
    let (t, rss) = measure(
        Command::new(bin)
            .args(["compose", "--layout"])
            .arg(&layout)
            .arg("--content")
            .arg(format!("data={}", tree.display()))
            .args(["--owners", "keep", "--xattrs"])
            .arg("-o")
            .arg(&img),
        None,
    )?;
    println!();
    println!(
        "compose benchmark, many entries: {entries} entries (files, symlinks, hard links, FIFOs, \
         directories, attributes); caches dropped before each run"
    );
    println!(
        "{:<32} {:>9} {:>12} {:>13}",
        "command", "seconds", "vs cp -a", "peak RSS MiB"
    );
    println!(
        "{:<32} {:>9.2} {:>11.2}x {:>13.1}",
        "cp -a into mounted XFS + sync",
        cp_t,
        1.0,
        cp_rss as f64 / 1024.0
    );
    println!(
        "{:<32} {:>9.2} {:>11.2}x {:>13.1}",
        "prestage compose raw",
        t,
        cp_t / t,
        rss as f64 / 1024.0
    );
    println!(
        "prestage peak RSS per entry: {:.0} bytes",
        rss as f64 * 1024.0 / entries as f64
    );

    // The image, checked as the tests check smaller ones.
    let pf = out.join("entries.part");
    let start = disk_offset(&img)?;
    run(Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", pf.display()))
        .args(["bs=1M", "conv=sparse", "status=none"])
        .arg(format!("skip={}", start / MIB))
        .arg(format!("count={}", part / MIB)))?;
    let r = Command::new("xfs_repair")
        .args(["-n", "-f"])
        .arg(&pf)
        .output()?;
    if !r.status.success() {
        bail!(
            "xfs_repair -n found problems: {}",
            String::from_utf8_lossy(&r.stdout)
        );
    }
    println!("xfs_repair -n: clean");
    run(Command::new("mount")
        .arg("-o")
        .arg("loop,ro")
        .arg(&pf)
        .arg(&mnt))?;
    let cmp = compare(&tree, &mnt);
    let _ = Command::new("umount").arg(&mnt).status();
    let n = cmp?;
    println!("kernel mount (read-only): {n} entries identical to the source");
    let _ = std::fs::remove_file(&pf);
    let _ = std::fs::remove_file(&img);
    Ok(())
}

/// Byte offset of the first partition of a GPT image (sgdisk).
fn disk_offset(img: &Path) -> Result<u64> {
    let out = Command::new("sgdisk")
        .arg("-i")
        .arg("1")
        .arg(img)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("First sector: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no first sector in sgdisk -i output")?;
    Ok(first * 512)
}
