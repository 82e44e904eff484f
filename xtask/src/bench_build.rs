//! `cargo xtask bench build`: `prestage build` from a warm store, side by side in one run with
//! its baselines, on one image set of 16 images (2.0 GiB of distinct blobs,
//! 6.5 GiB counted per image) sharing a 256 MiB base layer and one of four 64 MiB middle layers:
//!
//! - `cp -r` of the store's blob files plus `sync` (the floor: the same bytes, copied once);
//! - `prestage build --payload shared` and `--payload ztp` into a raw image (warm store, caches
//!   dropped), with peak RSS, and again with half the images to show the RSS does not grow;
//! - the upstream pipeline from the loopback registry: one `skopeo copy docker://… dir:…` per
//!   image, `tar czf` per image, then copying the archives onto a fresh XFS filesystem (loop
//!   mounted) and `sync`;
//! - bytes on the partition, `shared` vs `ztp`;
//! - node-side loading as the node does it, as root: the generated `extract-ocp.sh` of each
//!   image, on a read-only loop device of its partition seen as /dev/disk/by-partlabel/data
//!   (in a private mount namespace), into a throwaway containers-storage.
//!
//! Needs root (loop devices, mounts, containers-storage). The image set is generated once and
//! kept in the registry storage under `--dir`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::bench::{drop_caches, measure};
use crate::bench_pull::{data, prestage_bin, push_blob, sha256, Registry};
use crate::{cargo, run};

const MIB: u64 = 1 << 20;
const IMAGES: usize = 16;

/// A layer blob: a tar of one file of `len` pseudo-random bytes, gzip'd with stored blocks (the
/// data is incompressible, as image layers are once compressed).
fn layer(seed: u64, len: usize) -> Result<(Vec<u8>, String)> {
    use std::io::Write;
    let body = data(seed, len);
    let mut t = tar::Builder::new(Vec::with_capacity(len + 4096));
    let mut h = tar::Header::new_gnu();
    h.set_size(len as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    t.append_data(&mut h, format!("data/{seed}.bin"), &body[..])
        .context("tar")?;
    let raw = t.into_inner().context("tar")?;
    let diff = sha256(&raw);
    let mut gz = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(raw.len() + 4096),
        flate2::Compression::none(),
    );
    gz.write_all(&raw).context("gzip")?;
    Ok((gz.finish().context("gzip")?, diff))
}

/// Pushes the image set (once); returns `repo@digest` per image.
fn image_set(dir: &Path, port: u16) -> Result<Vec<String>> {
    let saved = dir.join("images.txt");
    if let Ok(t) = std::fs::read_to_string(&saved) {
        return Ok(t.lines().map(str::to_string).collect());
    }
    eprintln!("generating and pushing {IMAGES} images (once)");
    let agent = ureq::AgentBuilder::new().build();
    let base_url = format!("http://127.0.0.1:{port}");
    let base = layer(1, 256 << 20)?;
    let middles = (0..4)
        .map(|i| layer(10 + i, 64 << 20))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for i in 0..IMAGES {
        let repo = format!("bench/app{i:02}");
        let own = layer(100 + i as u64, 96 << 20)?;
        let layers = [&base, &middles[i % 4], &own];
        let mut descs = Vec::new();
        for (blob, _) in layers {
            let d = push_blob(&agent, &base_url, &repo, blob)?;
            descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": blob.len()}));
        }
        let cfg = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": {"Labels": {"bench": i.to_string()}},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>()},
        }))?;
        let cd = push_blob(&agent, &base_url, &repo, &cfg)?;
        let m = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
            "layers": descs,
        }))?;
        let md = sha256(&m);
        agent
            .put(&format!("{base_url}/v2/{repo}/manifests/{md}"))
            .set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .send_bytes(&m)
            .with_context(|| format!("putting the manifest of {repo}"))?;
        out.push(format!("{repo}@{md}"));
    }
    std::fs::write(&saved, out.join("\n") + "\n")
        .with_context(|| format!("writing {}", saved.display()))?;
    Ok(out)
}

fn du_files(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        n += e?.metadata()?.len();
    }
    Ok(n)
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("bash");
    c.args(["-euo", "pipefail", "-c", script]);
    c
}

/// The data partition of a raw image as a read-only loop device (`losetup` output).
pub fn partition_loop(img: &Path, read_only: bool) -> Result<String> {
    let out = Command::new("sgdisk")
        .args(["-i", "1"])
        .arg(img)
        .output()
        .context("running sgdisk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| -> Result<u64> {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("sgdisk -i 1 {}: no {k}", img.display()))
    };
    let first = field("First sector:")?;
    let sectors = field("Partition size:")?;
    let mut losetup = Command::new("losetup");
    losetup.args(["-f", "--show"]);
    if read_only {
        losetup.arg("-r");
    }
    let out = losetup
        .arg("-o")
        .arg((first * 512).to_string())
        .arg("--sizelimit")
        .arg((sectors * 512).to_string())
        .arg(img)
        .output()
        .context("running losetup")?;
    if !out.status.success() {
        bail!("losetup: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Loads the image's install-stage images with its generated loader, as the node would;
/// returns seconds.
pub fn node_load(img: &Path, work: &Path, driver: &str, read_only: bool) -> Result<f64> {
    let _ = std::fs::remove_dir_all(work);
    for d in ["ovl/u", "ovl/w", "storage"] {
        std::fs::create_dir_all(work.join(d))?;
    }
    let conf = work.join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"{driver}\"\ngraphroot = \"{0}/storage/graph\"\nrunroot = \"{0}/storage/run\"\n",
            work.display()
        ),
    )?;
    let dev = partition_loop(img, read_only)?;
    let loader = PathBuf::from(format!("{}.node/extract-ocp.sh", img.display()));
    let script = format!(
        "mount -t overlay overlay -o lowerdir=/dev,upperdir={w}/ovl/u,workdir={w}/ovl/w /dev && \
         mkdir -p /dev/disk/by-partlabel && ln -s {dev} /dev/disk/by-partlabel/data && \
         bash {loader}",
        w = work.display(),
        loader = loader.display()
    );
    drop_caches();
    let t = Instant::now();
    let st = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", &script])
        .env("CONTAINERS_STORAGE_CONF", &conf)
        .stdout(Stdio::null())
        .status()
        .context("running the loader")?;
    let secs = t.elapsed().as_secs_f64();
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    if !st.success() {
        bail!("{} failed: {st}", loader.display());
    }
    Ok(secs)
}

/// Runs `cargo xtask bench build [--dir DIR]`.
pub fn build(args: &[&str]) -> Result<()> {
    let mut dir = crate::root().join("target/bench-build");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--dir" => dir = PathBuf::from(it.next().context("--dir needs a value")?),
            other => bail!("unknown argument {other} (bench build [--dir DIR])"),
        }
    }
    if !crate::packages::is_root() {
        bail!("bench build needs root: loop devices, mounts and containers-storage");
    }
    crate::packages::ensure(crate::packages::CI)?;
    crate::packages::ensure(&[crate::bench::TIME])?;
    run(cargo().args(["build", "--release", "--bin", "prestage"]))?;
    let bin = prestage_bin();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let registry = Registry::start(&dir.join("registry"))?;
    let host = format!("127.0.0.1:{}", registry.port);
    let images: Vec<String> = image_set(&dir, registry.port)?
        .into_iter()
        .map(|r| format!("{host}/{r}"))
        .collect();
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let list = out.join("images.txt");
    std::fs::write(&list, images.join("\n") + "\n")?;
    let half = out.join("half.txt");
    std::fs::write(&half, images[..IMAGES / 2].join("\n") + "\n")?;
    std::fs::write(out.join("none.conf"), "")?;
    std::fs::write(out.join("auth.json"), "{\"auths\": {}}\n")?;
    let store = dir.join("store");
    let prestage = |sub: &str| {
        let mut c = Command::new(&bin);
        c.arg(sub)
            .arg("--store")
            .arg(&store)
            .arg("--insecure-registry")
            .arg(&host)
            .arg("--authfile")
            .arg(out.join("auth.json"))
            .arg("--registries-conf")
            .arg(out.join("none.conf"))
            .env("SOURCE_DATE_EPOCH", "1700000000");
        c
    };
    eprintln!("warming the store {}", store.display());
    run(prestage("pull").arg("-q").arg("--list").arg(&list))?;
    let unique = du_files(&store.join("blobs/sha256"))?;
    let per_image: u64 = {
        let mut n = 0;
        for r in &images {
            let d = r.rsplit('@').next().unwrap_or_default();
            let m = std::fs::read(store.join("manifests/sha256").join(&d[7..]))?;
            let v: serde_json::Value = serde_json::from_slice(&m)?;
            n += v["config"]["size"].as_u64().unwrap_or(0);
            for l in v["layers"].as_array().into_iter().flatten() {
                n += l["size"].as_u64().unwrap_or(0);
            }
        }
        n
    };
    let part = (per_image + per_image / 10 + 1024 * MIB).div_ceil(MIB);
    let layout = out.join("bench.toml");
    std::fs::write(
        &layout,
        format!(
            "[disk]\nsize = \"{}MiB\"\n\n[[partition]]\nlabel = \"data\"\nanchor = \"end\"\nsize = \"{part}MiB\"\nfilesystem = \"xfs\"\n",
            part + 1024
        ),
    )?;

    // 1. cp -r of the blob files + sync.
    drop_caches();
    let (t_cp, rss_cp) = measure(
        sh(&format!(
            "cp -r '{}' '{}' && sync",
            store.join("blobs/sha256").display(),
            out.join("copy").display()
        ))
        .current_dir(&out),
        None,
    )?;
    let _ = std::fs::remove_dir_all(out.join("copy"));

    // 2. prestage build, both payloads (and half the images, for the RSS).
    let mut builds = Vec::new();
    for (payload, l, name) in [
        ("shared", &half, "half-shared.raw"),
        ("shared", &list, "shared.raw"),
        ("ztp", &list, "ztp.raw"),
    ] {
        drop_caches();
        let img = out.join(name);
        let json = out.join(format!("{name}.json"));
        let (t, rss) = measure(
            prestage("build")
                .args([
                    "--quiet",
                    "--json",
                    "--payload",
                    payload,
                    "--additional-images",
                ])
                .arg(l)
                .arg("--layout")
                .arg(&layout)
                .arg("-o")
                .arg(&img),
            Some(std::fs::File::create(&json)?),
        )?;
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
        let bytes = s["partition_bytes"].as_u64().unwrap_or(0);
        builds.push((name, payload, t, rss, bytes, img));
    }

    // 3. The upstream pipeline from the registry.
    let up = out.join("upstream");
    std::fs::create_dir_all(&up)?;
    let xfs = out.join("upstream.xfs");
    let mnt = out.join("upstream.mnt");
    std::fs::create_dir_all(&mnt)?;
    let refs = images.join(" ");
    drop_caches();
    let t = Instant::now();
    run(&mut sh(&format!(
        "cd '{up}'; i=0; for r in {refs}; do echo \"img$i $r\"; i=$((i + 1)); done | \
         xargs -P 2 -n 2 sh -c 'skopeo copy -q --src-tls-verify=false docker://$1 dir:$0'; \
         ls | xargs -P 2 -I{{}} tar czf {{}}.tgz {{}}; \
         truncate -s {part}M '{xfs}'; mkfs.xfs -q -f '{xfs}'; mount -o loop '{xfs}' '{mnt}'; \
         cp *.tgz '{mnt}/'; sync; du -sb '{mnt}' > '{up}.du'; umount '{mnt}'",
        up = up.display(),
        xfs = xfs.display(),
        mnt = mnt.display(),
    )))?;
    let t_up = t.elapsed().as_secs_f64();
    let up_bytes: u64 = std::fs::read_to_string(format!("{}.du", up.display()))?
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&up);
    let _ = std::fs::remove_file(&xfs);

    // 4. Node-side loading of both payloads.
    let driver = "overlay";
    let mut loads = Vec::new();
    for (name, payload, ..) in builds.iter().skip(1) {
        // The ztp loader extracts beside the payload, so its partition is writable.
        let secs = node_load(
            &out.join(name),
            &out.join(format!("node-{payload}")),
            driver,
            *payload == "shared",
        )?;
        loads.push((*payload, secs));
        let _ = std::fs::remove_dir_all(out.join(format!("node-{payload}")));
    }

    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let mibs = |b: u64, t: f64| b as f64 / MIB as f64 / t;
    let cp_rate = mibs(unique, t_cp);
    println!();
    println!(
        "build benchmark: {IMAGES} images, {:.2} GiB of distinct blobs, {:.2} GiB counted per image; \
         warm store, caches dropped before each run",
        gib(unique),
        gib(per_image)
    );
    println!(
        "{:<42} {:>8} {:>10} {:>8} {:>12} {:>13}",
        "command", "seconds", "GiB", "MiB/s", "vs cp rate", "peak RSS MiB"
    );
    println!(
        "{:<42} {:>8.2} {:>10.2} {:>8.0} {:>11.2}x {:>13.1}",
        "cp -r blobs + sync",
        t_cp,
        gib(unique),
        cp_rate,
        1.0,
        rss_cp as f64 / 1024.0
    );
    for (name, payload, t, rss, bytes, _) in &builds {
        println!(
            "{:<42} {:>8.2} {:>10.2} {:>8.0} {:>11.2}x {:>13.1}",
            format!("prestage build {payload} ({name})"),
            t,
            gib(*bytes),
            mibs(*bytes, *t),
            mibs(*bytes, *t) / cp_rate,
            *rss as f64 / 1024.0
        );
    }
    println!(
        "{:<42} {:>8.2} {:>10.2} {:>8.0} {:>11.2}x {:>13}",
        "upstream: skopeo dir + tar czf + cp",
        t_up,
        gib(up_bytes),
        mibs(up_bytes, t_up),
        mibs(up_bytes, t_up) / cp_rate,
        "-"
    );
    let (shared_t, ztp_t) = (builds[1].2, builds[2].2);
    println!(
        "end to end vs upstream: shared {:.2}x faster, ztp {:.2}x faster",
        t_up / shared_t,
        t_up / ztp_t
    );
    let (shared_b, ztp_b) = (builds[1].4, builds[2].4);
    println!(
        "bytes on the partition: shared {:.2} GiB, ztp {:.2} GiB: shared is {:.0}% smaller",
        gib(shared_b),
        gib(ztp_b),
        (1.0 - shared_b as f64 / ztp_b as f64) * 100.0
    );
    println!(
        "peak RSS: {} images {:.1} MiB, {IMAGES} images {:.1} MiB",
        IMAGES / 2,
        builds[0].3 as f64 / 1024.0,
        builds[1].3 as f64 / 1024.0
    );
    if let [(_, s), (_, z)] = loads.as_slice() {
        println!(
            "node-side load of {IMAGES} images (extract-ocp.sh, storage driver {driver}): shared {s:.1} s, ztp {z:.1} s: shared is {:.2}x faster",
            z / s
        );
    }
    for (_, _, _, _, _, img) in &builds {
        let _ = std::fs::remove_file(img);
    }
    Ok(())
}
