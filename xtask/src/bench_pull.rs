//! `cargo xtask bench pull`: the same image set, pulled from a loopback docker-registry by
//! prestage (one `prestage pull`) and by one `skopeo copy docker://… dir:…` per image with the
//! same parallelism, in the same run. Both go through a byte-counting TCP relay, so the bytes
//! each transferred are measured, not estimated. Prints wall times, their ratio, and bytes
//! transferred next to the unique blob bytes.
//!
//! The image set: 12 images of 4 layers each, sharing a 48 MiB base, one of three 24 MiB
//! middle layers, and having their own 4 MiB and 256 KiB layers.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::Digest as _;

use crate::bench::Noise;
use crate::{cargo, root, run};

const MIB: usize = 1 << 20;
const IMAGES: usize = 12;

pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.div_ceil(8) * 8];
    Noise::new(seed).fill(&mut v);
    v.truncate(len);
    v
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("binding 127.0.0.1:0")?
        .port())
}

/// A docker-registry on 127.0.0.1, killed on drop.
pub struct Registry {
    /// Port on 127.0.0.1.
    pub port: u16,
    child: Child,
}

impl Registry {
    /// Starts a registry whose storage is `dir/storage` (kept between runs).
    pub fn start(dir: &Path) -> Result<Registry> {
        let port = free_port()?;
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)
            .with_context(|| format!("creating {}", storage.display()))?;
        let cfg = dir.join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: bench\n",
                storage.display()
            ),
        )
        .with_context(|| format!("writing {}", cfg.display()))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry")?;
        let reg = Registry { port, child };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t.elapsed() > Duration::from_secs(30) {
                bail!("docker-registry did not start listening on {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(reg)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay counting the bytes sent from the registry to clients.
struct Relay {
    port: u16,
    bytes: Arc<AtomicU64>,
}

impl Relay {
    fn start(upstream: u16) -> Result<Relay> {
        let l = TcpListener::bind("127.0.0.1:0").context("binding the relay")?;
        let port = l.local_addr().context("relay address")?.port();
        let bytes = Arc::new(AtomicU64::new(0));
        let counter = bytes.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        return;
                    };
                    let (Ok(mut c2), Ok(mut up2)) = (c.try_clone(), up.try_clone()) else {
                        return;
                    };
                    let t = std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut up2);
                        let _ = up2.shutdown(Shutdown::Write);
                    });
                    let (mut up, mut c) = (up, c);
                    let mut buf = vec![0u8; 256 << 10];
                    loop {
                        match up.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                counter.fetch_add(n as u64, Ordering::Relaxed);
                            }
                        }
                    }
                    let _ = c.shutdown(Shutdown::Write);
                    let _ = t.join();
                });
            }
        });
        Ok(Relay { port, bytes })
    }

    fn take(&self) -> u64 {
        self.bytes.swap(0, Ordering::Relaxed)
    }
}

pub fn push_blob(agent: &ureq::Agent, base: &str, repo: &str, bytes: &[u8]) -> Result<String> {
    let digest = sha256(bytes);
    let r = agent
        .post(&format!("{base}/v2/{repo}/blobs/uploads/"))
        .call()
        .with_context(|| format!("starting an upload to {repo}"))?;
    let loc = r.header("Location").context("upload without Location")?;
    let loc = if loc.starts_with("http") {
        loc.to_string()
    } else {
        format!("{base}{loc}")
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    agent
        .put(&format!("{loc}{sep}digest={digest}"))
        .send_bytes(bytes)
        .with_context(|| format!("uploading {digest}"))?;
    Ok(digest)
}

/// Pushes the image set; returns (references, unique blob bytes, bytes of all images' blobs).
fn push_images(port: u16, relay_port: u16) -> Result<(Vec<String>, u64, u64)> {
    let agent = ureq::AgentBuilder::new().build();
    let base_url = format!("http://127.0.0.1:{port}");
    let base = data(1, 48 * MIB);
    let middles: Vec<Vec<u8>> = (0..3).map(|i| data(10 + i, 24 * MIB)).collect();
    let mut refs = Vec::new();
    let mut unique = std::collections::HashMap::new();
    let mut total = 0u64;
    for i in 0..IMAGES {
        let repo = format!("bench/app{i}");
        let own = data(100 + i as u64, 4 * MIB);
        let small = data(200 + i as u64, 256 * 1024);
        let layers: [&[u8]; 4] = [&base, &middles[i % 3], &own, &small];
        let mut descs = Vec::new();
        for l in layers {
            let d = push_blob(&agent, &base_url, &repo, l)?;
            unique.insert(d.clone(), l.len() as u64);
            total += l.len() as u64;
            descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d, "size": l.len()}));
        }
        let cfg = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Labels": {"bench": i}},
            "rootfs": {"type": "layers", "diff_ids": descs.iter().map(|d| d["digest"].clone()).collect::<Vec<_>>()}
        }))?;
        let cd = push_blob(&agent, &base_url, &repo, &cfg)?;
        unique.insert(cd.clone(), cfg.len() as u64);
        total += cfg.len() as u64;
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
            "layers": descs,
        }))?;
        agent
            .put(&format!("{base_url}/v2/{repo}/manifests/v1"))
            .set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .send_bytes(&m)
            .with_context(|| format!("putting the manifest of {repo}"))?;
        refs.push(format!("127.0.0.1:{relay_port}/{repo}:v1"));
    }
    Ok((refs, unique.values().sum(), total))
}

pub fn prestage_bin() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("release/prestage")
}

fn human(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / MIB as f64)
}

/// Runs `cargo xtask bench pull [--jobs N] [--dir DIR]`.
pub fn pull(args: &[&str]) -> Result<()> {
    let mut dir = root().join("target/bench-pull");
    let mut jobs = 8usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--dir" => dir = PathBuf::from(it.next().context("--dir needs a value")?),
            "--jobs" => {
                jobs = it
                    .next()
                    .context("--jobs needs a value")?
                    .parse()
                    .context("--jobs: not a number")?
            }
            other => bail!("unknown argument {other} (bench pull [--jobs N] [--dir DIR])"),
        }
    }
    crate::packages::ensure(&[("docker-registry", "docker-registry"), ("skopeo", "skopeo")])?;
    run(cargo().args(["build", "--release", "--bin", "prestage"]))?;
    // Everything under DIR/run, which each run removes first: never DIR itself.
    let dir = dir.join("run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let registry = Registry::start(&dir.join("registry"))?;
    let relay = Relay::start(registry.port)?;
    eprintln!("pushing {IMAGES} images to 127.0.0.1:{}", registry.port);
    let (refs, unique, total) = push_images(registry.port, relay.port)?;
    let list = dir.join("images.txt");
    std::fs::write(&list, refs.join("\n") + "\n")
        .with_context(|| format!("writing {}", list.display()))?;
    let host = format!("127.0.0.1:{}", relay.port);

    eprintln!("prestage pull, --jobs {jobs}");
    relay.take();
    // An empty registries.conf of its own: no mirrors of this machine's.
    std::fs::write(dir.join("none.conf"), "").context("writing none.conf")?;
    let t = Instant::now();
    let st = Command::new(prestage_bin())
        .args(["pull", "-q", "--json", "--jobs", &jobs.to_string()])
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--insecure-registry")
        .arg(&host)
        .arg("--list")
        .arg(&list)
        .env("CONTAINERS_REGISTRIES_CONF", dir.join("none.conf"))
        .stdout(Stdio::null())
        .status()
        .context("running prestage pull")?;
    let t_prestage = t.elapsed().as_secs_f64();
    if !st.success() {
        bail!("prestage pull failed: {st}");
    }
    let b_prestage = relay.take();

    eprintln!("skopeo copy docker://… dir:…, one per image, {jobs} at a time");
    let skopeo_dir = dir.join("skopeo");
    std::fs::create_dir_all(&skopeo_dir)
        .with_context(|| format!("creating {}", skopeo_dir.display()))?;
    let t = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, refs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(r) = refs.get(i) else { break };
                let out = skopeo_dir.join(i.to_string());
                let st = Command::new("skopeo")
                    .args(["copy", "--quiet", "--src-tls-verify=false"])
                    .arg(format!("docker://{r}"))
                    .arg(format!("dir:{}", out.display()))
                    .stdout(Stdio::null())
                    .status();
                if !matches!(st, Ok(s) if s.success()) {
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(r.clone());
                }
            });
        }
    });
    let t_skopeo = t.elapsed().as_secs_f64();
    let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
    if !failed.is_empty() {
        bail!("skopeo copy failed for {}", failed.join(", "));
    }
    let b_skopeo = relay.take();

    println!();
    println!(
        "{IMAGES} images, {} of layers in all, {} unique; parallelism {jobs}",
        human(total),
        human(unique)
    );
    println!(
        "  prestage pull:        {t_prestage:7.2} s, {} transferred",
        human(b_prestage)
    );
    println!(
        "  skopeo copy (each):   {t_skopeo:7.2} s, {} transferred",
        human(b_skopeo)
    );
    println!(
        "  prestage is {:.2}x faster; transfers {:.2}x fewer bytes; prestage bytes / unique blob bytes = {:.3}",
        t_skopeo / t_prestage,
        b_skopeo as f64 / b_prestage.max(1) as f64,
        b_prestage as f64 / unique as f64
    );
    Ok(())
}
