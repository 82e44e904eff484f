//! `cargo xtask bench build --scale release`: `prestage build` at release scale, from the
//! release-shaped OCI layout of [`crate::release`] (190 images, about 6.2 GiB of distinct
//! blobs), side by side in one run with its baselines, the page cache dropped before each
//! command:
//!
//! - cold: `prestage build` with an empty store, reading the layout in place (`--oci-mirror`),
//!   vs `cp -r` of the layout's blobs plus `sync`;
//! - warm: `prestage build` with every blob in the store vs `cp -r` of the store's blobs plus
//!   `sync`;
//! - peak RSS of the warm build, and of a warm build of a ~2 GiB subset of the same images;
//! - plan vs used: what `prestage plan` predicts against what the built filesystem uses
//!   (`xfs_db` on the partition);
//! - the node-side load of every install image by the generated `extract-ocp.sh`, as the node
//!   runs it (root: a loop device of the partition, a private mount namespace, a throwaway
//!   containers-storage);
//! - the `store` payload: warm build time and peak RSS against `shared`'s, bytes on the
//!   partition, and on the node the time until every install image is usable in place (mount +
//!   one `podman image inspect` of them all) against `shared`'s loader, and the fallback loader;
//! - air-gapped: `prestage build --from-oc-mirror` of an oc-mirror archive set of the same
//!   images ([`crate::archive`], split into 2 GiB tars) vs `cp -r` of the tar files plus `sync`.
//!
//! Needs root (caches, loop devices, mounts). The fixture is written once under `--dir`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench::{drop_caches, measure};
use crate::bench_build::{node_load, partition_loop};
use crate::bench_pull::prestage_bin;
use crate::release::{self, Fixture};
use crate::{cargo, run};

const MIB: u64 = 1 << 20;

fn sh(script: &str) -> Command {
    let mut c = Command::new("bash");
    c.args(["-euo", "pipefail", "-c", script]);
    c
}

fn du(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            n += e.metadata()?.len();
        }
    }
    Ok(n)
}

/// Bytes the filesystem of the image's data partition uses (xfs_db: dblocks - fdblocks).
fn used_bytes(img: &Path) -> Result<u64> {
    let dev = partition_loop(img, true)?;
    let out = Command::new("xfs_db")
        .args([
            "-r",
            "-c",
            "sb 0",
            "-c",
            "print dblocks fdblocks blocksize",
            &dev,
        ])
        .output()
        .context("running xfs_db");
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("xfs_db printed no {k}: {text}"))
    };
    Ok((field("dblocks")? - field("fdblocks")?) * field("blocksize")?)
}

/// Runs `cargo xtask bench build --scale release [--dir DIR]`.
pub fn build(args: &[&str]) -> Result<()> {
    let mut dir = crate::root().join("target/bench-release");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--dir" => dir = PathBuf::from(it.next().context("--dir needs a value")?),
            other => bail!("unknown argument {other} (bench build --scale release [--dir DIR])"),
        }
    }
    if !crate::packages::is_root() {
        bail!("bench build needs root: dropping caches, loop devices, mounts");
    }
    crate::packages::ensure(crate::packages::CI)?;
    crate::packages::ensure(&[crate::bench::TIME])?;
    run(cargo().args(["build", "--release", "--bin", "prestage"]))?;
    let bin = prestage_bin();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let fx: Fixture = release::write(&dir.join("fixture"), release::RELEASE)?;
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("none.conf"), "")?;
    std::fs::write(out.join("auth.json"), "{\"auths\": {}}\n")?;
    let layout_blobs = fx.layout.join("blobs/sha256");
    let layout_bytes = du(&layout_blobs)?;
    let part = (layout_bytes + layout_bytes / 8 + 1024 * MIB).div_ceil(MIB);
    let layout = out.join("bench.toml");
    std::fs::write(
        &layout,
        format!(
            "[disk]\nsize = \"{}MiB\"\n\n[[partition]]\nlabel = \"data\"\nanchor = \"end\"\nsize = \"{part}MiB\"\nfilesystem = \"xfs\"\n",
            part + 1024
        ),
    )?;
    let store = out.join("store");
    let prestage = |sub: &str, set: &[&str]| {
        let mut c = Command::new(&bin);
        c.arg(sub)
            .args(set)
            .arg("--oci-mirror")
            .arg(&fx.layout)
            .arg("--store")
            .arg(&store)
            .arg("--authfile")
            .arg(out.join("auth.json"))
            .arg("--registries-conf")
            .arg(out.join("none.conf"))
            .arg("--layout")
            .arg(&layout)
            .env("SOURCE_DATE_EPOCH", "1700000000");
        c
    };
    let release_ref = format!("oci:{}:{}", fx.layout.display(), release::VERSION);
    let (assisted, additional) = (
        fx.assisted.display().to_string(),
        fx.additional.display().to_string(),
    );
    let full: Vec<&str> = vec![
        "--release",
        &release_ref,
        "--assisted-images",
        &assisted,
        "--additional-images",
        &additional,
    ];
    let build_as = |payload: &str, set: &[&str], img: &Path| -> Result<(f64, u64, Value)> {
        drop_caches();
        let json = PathBuf::from(format!("{}.json", img.display()));
        let (t, rss) = measure(
            prestage("build", set)
                .args(["--quiet", "--json", "--payload", payload])
                .arg("-o")
                .arg(img),
            Some(std::fs::File::create(&json)?),
        )?;
        let s: Value = serde_json::from_slice(&std::fs::read(&json)?)?;
        Ok((t, rss, s))
    };
    let build = |set: &[&str], img: &Path| build_as("shared", set, img);
    let cp = |from: &Path| -> Result<f64> {
        drop_caches();
        let copy = out.join("copy");
        let (t, _) = measure(
            &sh(&format!(
                "cp -r '{}' '{}' && sync",
                from.display(),
                copy.display()
            )),
            None,
        )?;
        let _ = std::fs::remove_dir_all(&copy);
        Ok(t)
    };

    // 1. Cold: an empty store, the layout read in place; vs cp -r of the layout's blobs.
    let t_cp_layout = cp(&layout_blobs)?;
    let cold = out.join("cold.raw");
    let (t_cold, rss_cold, s_cold) = build(&full, &cold)?;
    let cold_bytes = s_cold["partition_bytes"].as_u64().unwrap_or(0);
    let in_place = s_cold["pull"]["blobs_in_place"].as_u64().unwrap_or(0);
    let _ = std::fs::remove_file(&cold);

    // 2. Warm: the store filled (not timed), then vs cp -r of the store's blobs.
    eprintln!("filling the store {}", store.display());
    run(prestage("build", &full)
        .args(["--quiet", "--payload", "shared", "--fill-store", "-o"])
        .arg(out.join("fill.raw")))?;
    let _ = std::fs::remove_file(out.join("fill.raw"));
    let store_bytes = du(&store.join("blobs/sha256"))?;
    let t_cp_store = cp(&store.join("blobs/sha256"))?;
    let warm = out.join("warm.raw");
    let (t_warm, rss_warm, s_warm) = build(&full, &warm)?;
    let warm_bytes = s_warm["partition_bytes"].as_u64().unwrap_or(0);
    let seconds = s_warm["seconds"].clone();

    // 3. Peak RSS on a ~2 GiB subset: the first components, as additional images.
    let refs: Vec<String> = std::fs::read_to_string(&fx.components)
        .with_context(|| format!("reading {}", fx.components.display()))?
        .lines()
        .map(str::to_string)
        .collect();
    let subset = out.join("subset.txt");
    std::fs::write(&subset, refs[..refs.len().min(45)].join("\n") + "\n")?;
    let subset_s = subset.display().to_string();
    let small = out.join("subset.raw");
    let (_, rss_small, s_small) = build(&["--additional-images", &subset_s], &small)?;
    let small_bytes = s_small["partition_bytes"].as_u64().unwrap_or(0);
    let _ = std::fs::remove_file(&small);

    // 4. Plan vs used.
    let plan_out = prestage("plan", &full)
        .args(["--json", "--payload", "shared"])
        .output()
        .context("running prestage plan")?;
    let plan: Value = serde_json::from_slice(&plan_out.stdout).context("the plan's JSON")?;
    let predicted = plan["formats"][0]["fit"]["used"].as_u64().unwrap_or(0);
    let used = used_bytes(&warm)?;

    // 5. Air-gapped: an oc-mirror archive set of the same images (the release's components,
    // the assisted-installer and additional images, by digest), built from in place.
    let archive = dir.join("fixture-archive");
    if !archive.join(".complete").exists() {
        eprintln!(
            "writing the oc-mirror archive set {} (once)",
            archive.display()
        );
        let _ = std::fs::remove_dir_all(&archive);
        let mut images = refs.clone();
        for list in [&fx.assisted, &fx.additional] {
            images.extend(std::fs::read_to_string(list)?.lines().map(str::to_string));
        }
        crate::archive::write(&fx.layout, &images, &archive, 2 << 30)?;
        std::fs::write(archive.join(".complete"), "")?;
    }
    let archive_bytes = du(&archive)?;
    let t_cp_archive = cp(&archive)?;
    let from_archive = out.join("archive.raw");
    drop_caches();
    let json = out.join("archive.json");
    let (t_archive, rss_archive) = measure(
        Command::new(&bin)
            .arg("build")
            .arg("--from-oc-mirror")
            .arg(&archive)
            .arg("--store")
            .arg(out.join("store-archive"))
            .arg("--authfile")
            .arg(out.join("auth.json"))
            .arg("--registries-conf")
            .arg(out.join("none.conf"))
            .arg("--layout")
            .arg(&layout)
            .args(["--quiet", "--json", "--payload", "shared", "-o"])
            .arg(&from_archive)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
        Some(std::fs::File::create(&json)?),
    )?;
    let s_archive: Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    let archive_img_bytes = s_archive["partition_bytes"].as_u64().unwrap_or(0);
    let _ = std::fs::remove_file(&from_archive);

    // 6. The node side.
    let node = node_load(&warm, &out.join("node"), "overlay", true)?;
    let _ = std::fs::remove_dir_all(out.join("node"));

    // 7. The store payload, warm: build, bytes on the partition, and on the node the time until
    // every install image is usable in place (the read-only mount, then one `podman image
    // inspect` of them all by their by-digest names), and the fallback loader's copy into the
    // default storage.
    let store_img = out.join("store.raw");
    let (t_store, rss_store, s_store) = build_as("store", &full, &store_img)?;
    let store_part = s_store["partition_bytes"].as_u64().unwrap_or(0);
    let store_used = used_bytes(&store_img)?;
    let (t_mount, t_inspect, n_store) = store_in_place(&store_img, &out.join("node-store"))?;
    let _ = std::fs::remove_dir_all(out.join("node-store"));
    let store_loader = node_load(&store_img, &out.join("node-store"), "overlay", true)?;
    let _ = std::fs::remove_dir_all(out.join("node-store"));
    let _ = std::fs::remove_file(&store_img);

    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mibs = |b: u64, t: f64| b as f64 / MIB as f64 / t;
    println!();
    println!(
        "release-scale build benchmark: {} images ({} read in place when cold), {:.2} GiB on the \
         partition; caches dropped before each run",
        s_warm["images"],
        in_place,
        gib(warm_bytes)
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>10} {:>13}",
        "command", "seconds", "GiB", "MiB/s", "vs cp", "peak RSS MiB"
    );
    let row = |name: &str, t: f64, b: u64, base: f64, rss: Option<u64>| {
        println!(
            "{:<44} {:>8.2} {:>8.2} {:>8.0} {:>9.2}x {:>13}",
            name,
            t,
            gib(b),
            mibs(b, t),
            mibs(b, t) / base,
            rss.map_or("-".to_string(), |r| format!("{:.1}", r as f64 / 1024.0))
        );
    };
    let cp_layout_rate = mibs(layout_bytes, t_cp_layout);
    let cp_store_rate = mibs(store_bytes, t_cp_store);
    row(
        "cp -r layout blobs + sync",
        t_cp_layout,
        layout_bytes,
        cp_layout_rate,
        None,
    );
    row(
        "prestage build, cold (layout in place)",
        t_cold,
        cold_bytes,
        cp_layout_rate,
        Some(rss_cold),
    );
    row(
        "cp -r store blobs + sync",
        t_cp_store,
        store_bytes,
        cp_store_rate,
        None,
    );
    row(
        "prestage build, warm (store)",
        t_warm,
        warm_bytes,
        cp_store_rate,
        Some(rss_warm),
    );
    let cp_archive_rate = mibs(archive_bytes, t_cp_archive);
    row(
        "cp -r oc-mirror tars + sync",
        t_cp_archive,
        archive_bytes,
        cp_archive_rate,
        None,
    );
    row(
        "prestage build --from-oc-mirror (in place)",
        t_archive,
        archive_img_bytes,
        cp_archive_rate,
        Some(rss_archive),
    );
    println!(
        "warm build seconds: resolve {}, plan {}, pull {}, filesystems {}, write and hash {}, \
         verify {}, report and node files {}",
        seconds["resolve"],
        seconds["plan"],
        seconds["pull"],
        seconds["filesystems"],
        seconds["write"],
        seconds["verify"],
        seconds["finish"]
    );
    println!(
        "peak RSS: {:.2} GiB subset {:.1} MiB, {:.2} GiB release {:.1} MiB",
        gib(small_bytes),
        rss_small as f64 / 1024.0,
        gib(warm_bytes),
        rss_warm as f64 / 1024.0
    );
    println!(
        "plan vs used: predicted {} bytes, the filesystem uses {} ({:+.2}%)",
        predicted,
        used,
        (predicted as f64 - used as f64) * 100.0 / used as f64
    );
    println!(
        "node-side load of every install image (extract-ocp.sh, overlay): {node:.1} s, {:.0} MiB/s of payload",
        mibs(warm_bytes, node)
    );
    println!(
        "store payload (warm): build {t_store:.2} s ({:.2}x the shared build's time), peak RSS \
         {:.1} MiB; on the partition {:.2} GiB of files, the filesystem uses {:.2} GiB (shared: \
         {:.2} GiB)",
        t_store / t_warm,
        rss_store as f64 / 1024.0,
        gib(store_part),
        gib(store_used),
        gib(used)
    );
    println!(
        "store payload on the node: every install image usable in place after the read-only \
         mount ({t_mount:.2} s) and one podman image inspect of all {n_store} by digest \
         ({t_inspect:.2} s): {:.2} s in all vs {node:.1} s for the shared loader ({:.0}x); the \
         fallback loader copying them into the default storage: {store_loader:.1} s",
        t_mount + t_inspect,
        node / (t_mount + t_inspect)
    );
    let _ = std::fs::remove_file(&warm);
    Ok(())
}

/// The `store` payload used in place as the node uses it: the partition of `img` on a read-only
/// loop device mounted `ro` in a private mount namespace, configured as the additional image
/// store of a throwaway containers-storage, the page cache dropped first. Returns the mount's
/// seconds, the seconds of one `podman image inspect` of every install image by its by-digest
/// name (each must resolve), and how many there are.
fn store_in_place(img: &Path, work: &Path) -> Result<(f64, f64, usize)> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work.join("mnt"))?;
    let conf = work.join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n\
             [storage.options]\nadditionalimagestores = [\"{0}/mnt/store\"]\n",
            work.display()
        ),
    )?;
    let dev = partition_loop(img, true)?;
    let script = format!(
        "set -euo pipefail
         s=$(date +%s%N)
         mount -o ro,nouuid {dev} {w}/mnt
         m=$(date +%s%N)
         mapfile -t refs < <(grep -v '^#' {w}/mnt/ocp-images.txt | awk 'NF {{print $1}}')
         podman image inspect --format '{{{{.Id}}}}' \"${{refs[@]}}\" > {w}/ids
         e=$(date +%s%N)
         echo \"$((m - s)) $((e - m)) ${{#refs[@]}}\"",
        w = work.display()
    );
    drop_caches();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", &script])
        .env("CONTAINERS_STORAGE_CONF", &conf)
        .output()
        .context("running podman on the store")?;
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    if !out.status.success() {
        bail!(
            "the store in place: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|w| w.parse().context("the timings"))
        .collect::<Result<_>>()?;
    let [mount, inspect, n] = v[..] else {
        bail!("the store in place: unexpected output {text}");
    };
    Ok((mount as f64 / 1e9, inspect as f64 / 1e9, n as usize))
}
