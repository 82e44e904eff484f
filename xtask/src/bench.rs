//! `cargo xtask bench compose`: prestage compose (raw and qcow2) side by side with `cp -r` of the
//! same tree onto the same disk, in one run. Prints wall time, throughput, the ratio to `cp -r`
//! and each command's peak RSS (from GNU time). Then the many-entries half
//! ([`crate::bench_entries`]): 300,000 entries against `cp -a` into a mounted XFS.
//! `--only files` or `--only entries` runs one half.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{cargo, root, run};

const MIB: u64 = 1 << 20;

/// File sizes of the benchmark tree: 4 KiB to 1.5 GiB, about 4 GiB in all.
fn tree_sizes() -> Vec<u64> {
    let mut v = vec![1536 * MIB, 1024 * MIB, 512 * MIB, 512 * MIB];
    v.extend([128 * MIB; 4]);
    v.extend([16 * MIB; 16]);
    v.extend([MIB; 64]);
    v.extend((0..1000).map(|i| 4096 * (1 + (i * 7919) % 16)));
    v
}

/// Incompressible pseudo-random bytes (xorshift64) from a seed: the same seed, the same bytes.
pub struct Noise(u64);

impl Noise {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Noise {
        Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Fills `buf` (its length a multiple of 8) with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for w in buf.chunks_exact_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            w.copy_from_slice(&self.0.to_le_bytes());
        }
    }
}

/// Writes `size` bytes of incompressible pseudo-random data.
fn write_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut noise = Noise::new(seed);
    let mut buf = vec![0u8; (4 * MIB) as usize];
    let mut left = size;
    while left > 0 {
        noise.fill(&mut buf);
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}

fn make_tree(dir: &Path) -> Result<u64> {
    let sizes = tree_sizes();
    let total: u64 = sizes.iter().sum();
    let marker = dir.join(".complete");
    if marker.exists() {
        return Ok(total);
    }
    let _ = std::fs::remove_dir_all(dir);
    for (i, &size) in sizes.iter().enumerate() {
        let sub = dir.join(format!("d{:02}", i % 37));
        std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        write_file(&sub.join(format!("f{i:04}.bin")), size, i as u64 + 1)?;
    }
    File::create(&marker).with_context(|| format!("creating {}", marker.display()))?;
    Ok(total)
}

/// GNU time, which gives each benchmarked command's own peak RSS.
pub const TIME: (&str, &str) = ("/usr/bin/time", "time");

/// Runs a command (its stdout to `stdout`, or inherited), returning (seconds, peak RSS in KiB).
///
/// The peak comes from GNU time's `%M`, not from this process's `wait4`: Linux carries the
/// pre-exec address space's high-water mark across `exec`, so a child spawned from this
/// process reports at least this process's own RSS (hundreds of MiB after generating image
/// layers). GNU time forks the command from its own small address space.
pub fn measure(cmd: &Command, stdout: Option<File>) -> Result<(f64, u64)> {
    let rss_file = root().join(format!("target/.bench-rss-{}", std::process::id()));
    let mut wrapped = Command::new(TIME.0);
    wrapped
        .args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(cmd.get_current_dir().unwrap_or(&root()));
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(f) = stdout {
        wrapped.stdout(f);
    }
    let t = Instant::now();
    let st = wrapped
        .status()
        .with_context(|| format!("starting {cmd:?} under {}", TIME.0))?;
    let secs = t.elapsed().as_secs_f64();
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    let text = std::fs::read_to_string(&rss_file)
        .with_context(|| format!("reading {}", rss_file.display()))?;
    let _ = std::fs::remove_file(&rss_file);
    let kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<u64>().ok())
        .with_context(|| format!("GNU time printed no peak RSS for {cmd:?}: {text:?}"))?;
    Ok((secs, kib))
}

pub fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// `bench compose [--dir DIR] [--only files|entries]`.
pub fn compose(args: &[&str]) -> Result<()> {
    let mut dir = root().join("target/bench");
    let mut only = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--dir" => dir = PathBuf::from(it.next().context("--dir needs a value")?),
            "--only" => only = Some(*it.next().context("--only needs files or entries")?),
            other => bail!("unknown argument {other}"),
        }
    }
    crate::packages::ensure(crate::packages::DEMO)?;
    crate::packages::ensure(&[TIME, ("xfs_repair", "xfsprogs"), ("losetup", "mount")])?;
    run(cargo().args(["build", "--release", "--bin", "prestage"]))?;
    let bin = root().join("target/release/prestage");
    match only {
        None | Some("files") => files(&dir, &bin)?,
        Some("entries") => {}
        Some(other) => bail!("--only {other}: expected files or entries"),
    }
    if only != Some("files") {
        if !crate::packages::is_root() {
            bail!("the many-entries half needs root (a loop-mounted XFS for cp -a and the check)");
        }
        crate::bench_entries::run_entries(&dir, &bin)?;
    }
    Ok(())
}

/// The large-files half.
fn files(dir: &Path, bin: &Path) -> Result<()> {
    let tree = dir.join("tree");
    eprintln!("generating the benchmark tree in {} (once)", tree.display());
    let total = make_tree(&tree)?;
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let layout = out.join("bench.toml");
    let part = (total + total / 20 + 512 * MIB).div_ceil(MIB);
    std::fs::write(
        &layout,
        format!(
            "[disk]\nsize = \"{}MiB\"\n\n[[partition]]\nlabel = \"data\"\nanchor = \"end\"\nsize = \"{part}MiB\"\nfilesystem = \"xfs\"\n",
            part + 1024
        ),
    )
    .with_context(|| format!("writing {}", layout.display()))?;

    let mut rows: Vec<(&str, f64, u64)> = Vec::new();
    drop_caches();
    let copy = out.join("copy");
    let (t, rss) = measure(
        Command::new("sh").arg("-c").arg(format!(
            "cp -r '{}' '{}' && sync",
            tree.display(),
            copy.display()
        )),
        None,
    )?;
    rows.push(("cp -r + sync", t, rss));
    let _ = std::fs::remove_dir_all(&copy);
    for (name, file) in [
        ("prestage compose raw", "bench.raw"),
        ("prestage compose qcow2", "bench.qcow2"),
    ] {
        drop_caches();
        let img = out.join(file);
        let (t, rss) = measure(
            Command::new(bin)
                .args(["compose", "--layout"])
                .arg(&layout)
                .arg("--content")
                .arg(format!("data={}", tree.display()))
                .arg("-o")
                .arg(&img),
            None,
        )?;
        rows.push((name, t, rss));
        let _ = std::fs::remove_file(&img);
    }
    let base = rows[0].1;
    println!();
    println!(
        "compose benchmark: {} files, {:.2} GiB, largest 1.5 GiB; caches dropped before each run",
        tree_sizes().len(),
        total as f64 / (1u64 << 30) as f64
    );
    println!(
        "{:<24} {:>9} {:>10} {:>12} {:>13}",
        "command", "seconds", "MiB/s", "vs cp -r", "peak RSS MiB"
    );
    for (name, t, rss) in &rows {
        println!(
            "{:<24} {:>9.2} {:>10.0} {:>11.2}x {:>13.1}",
            name,
            t,
            total as f64 / MIB as f64 / t,
            base / t,
            *rss as f64 / 1024.0
        );
    }
    Ok(())
}
