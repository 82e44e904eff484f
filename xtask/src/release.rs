//! A release-shaped image set, as an OCI layout served with `--oci-mirror`: a synthetic
//! OpenShift release whose `image-references` names 183 components (the 14 discovery components
//! among them), three assisted-installer images and three additional images, 190 images in all:
//! 168 OCI image manifests, 19 Docker v2s2 manifests (the release image and every tenth
//! component) and 3 OCI indexes (amd64 and arm64). Like a real release, one base layer lies
//! under nearly every image, six group layers are each shared by a sixth of the components,
//! and every image has one to three layers of its own.
//!
//! Two scales, the same shape: `release` (`cargo xtask bench build --scale release`: an 80 MiB
//! base, 120 to 220 MiB group layers, own layers of 1 to 26 MiB: about 6.2 GiB of distinct
//! blobs) and `small` (the same with every MiB 256 bytes: `fixtures/release-small`, committed, for
//! the test suite). Layers are single files of pseudo-random bytes in tars gzip'd with stored
//! blocks, written as streams; everything is deterministic, so the same scale gives the same
//! bytes, and a finished layout is reused.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::bench::Noise;
use crate::oci::{Layer, Layout};

/// How big the fixture is.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Its name (`release`, `small`).
    pub name: &'static str,
    /// Bytes per size unit (a MiB, or a KiB).
    pub unit: u64,
}

/// About 6.2 GiB of distinct blobs.
pub const RELEASE: Scale = Scale {
    name: "release",
    unit: 1 << 20,
};
/// The same shape, every MiB 256 bytes: about 1.5 MiB of layer data.
pub const SMALL: Scale = Scale {
    name: "small",
    unit: 256,
};

/// The release version the fixture calls itself.
pub const VERSION: &str = "4.12.0";
const ART: &str = "quay.io/openshift-release-dev/ocp-v4.0-art-dev";
const COMPONENTS: usize = 183;

/// What was written.
pub struct Fixture {
    /// The OCI layout (`oci:DIR:VERSION` is the release).
    pub layout: PathBuf,
    /// The assisted-installer images' list file.
    pub assisted: PathBuf,
    /// The additional images' list file.
    pub additional: PathBuf,
    /// The release components' references, one a line.
    pub components: PathBuf,
}

/// Component names: the discovery components (the rule prestage ships), then numbered ones.
fn components() -> Vec<String> {
    let mut v: Vec<String> = include_str!("../../data/discovery-components.txt")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let mut i = 0;
    while v.len() < COMPONENTS {
        i += 1;
        v.push(format!("release-component-{i:03}"));
    }
    v
}

/// A deterministic size in units, from 1 to 26, for image `i`'s layer `k`.
fn own_units(i: usize, k: usize) -> u64 {
    let x = (i as u64 * 2654435761 + k as u64 * 40503) % 26;
    1 + x
}

fn layer(oci: &Layout, docker: bool, path: &str, len: u64, seed: u64) -> Result<Layer> {
    let mut noise = Noise::new(seed);
    oci.streamed_layer(docker, path, len, &mut |b| noise.fill(b))
}

/// Writes the fixture at `scale` into `dir` (kept when already complete).
pub fn write(dir: &Path, scale: Scale) -> Result<Fixture> {
    let fixture = Fixture {
        layout: dir.join("oci"),
        assisted: dir.join("assisted-images.txt"),
        additional: dir.join("additional-images.txt"),
        components: dir.join("components.txt"),
    };
    let marker = dir.join(format!(".complete-{}", scale.name));
    if marker.exists() {
        return Ok(fixture);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    eprintln!(
        "writing the {}-scale release fixture in {} (once)",
        scale.name,
        dir.display()
    );
    let u = scale.unit;
    let mut oci = Layout::create(&fixture.layout)?;
    // One base under everything, in both manifest flavours (the media type differs).
    let base_o = layer(&oci, false, "usr/lib/base.bin", 80 * u, 1)?;
    let base_d = layer(&oci, true, "usr/lib/base.bin", 80 * u, 1)?;
    let groups = (0..6u64)
        .map(|g| {
            layer(
                &oci,
                false,
                &format!("usr/lib/group{g}.bin"),
                (120 + 20 * g) * u,
                10 + g,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let components = components();
    let mut tags = Vec::new();
    let mut component_refs = Vec::new();
    for (i, c) in components.iter().enumerate() {
        let docker = i % 10 == 9;
        let base = if docker { &base_d } else { &base_o };
        let mut layers: Vec<Layer> = vec![base.clone()];
        if !docker {
            layers.push(groups[i % groups.len()].clone());
        }
        for k in 0..(1 + i % 3) {
            layers.push(layer(
                &oci,
                docker,
                &format!("usr/bin/{c}-{k}"),
                own_units(i, k) * u,
                1000 + (i * 4 + k) as u64,
            )?);
        }
        let refs: Vec<&Layer> = layers.iter().collect();
        let m = oci.image(
            docker,
            "amd64",
            &refs,
            json!({"io.openshift.build.name": c, "io.openshift.release": VERSION}),
        )?;
        tags.push(json!({
            "name": c,
            "from": {"kind": "DockerImage", "name": format!("{ART}@{}", m.digest)},
        }));
        component_refs.push(format!("{ART}@{}", m.digest));
    }
    oci.release(VERSION, tags, &base_d)?;

    let mut assisted = Vec::new();
    for (i, repo) in [
        "quay.io/edge-infrastructure/assisted-installer-agent",
        "quay.io/edge-infrastructure/assisted-installer",
        "quay.io/edge-infrastructure/assisted-installer-controller",
    ]
    .into_iter()
    .enumerate()
    {
        let own = layer(
            &oci,
            false,
            "usr/bin/agent",
            (20 + 4 * i as u64) * u,
            2000 + i as u64,
        )?;
        let m = oci.image(false, "amd64", &[&base_o, &own], json!({}))?;
        oci.tag(&m, &format!("{repo}:v2.30"));
        assisted.push(format!("{repo}@{}", m.digest));
    }
    let mut additional = Vec::new();
    for i in 0..3u64 {
        let mut inst = Vec::new();
        for (k, arch) in ["amd64", "arm64"].into_iter().enumerate() {
            let own = layer(
                &oci,
                false,
                "usr/bin/tool",
                (8 + 2 * i) * u,
                3000 + 2 * i + k as u64,
            )?;
            inst.push((oci.image(false, arch, &[&base_o, &own], json!({}))?, arch));
        }
        let list = oci.list(false, &[(&inst[0].0, inst[0].1), (&inst[1].0, inst[1].1)])?;
        let repo = format!("quay.io/prestage-bench/tool{i}");
        oci.tag(&list, &format!("{repo}:latest"));
        additional.push(format!("{repo}@{}", list.digest));
    }
    oci.finish()?;
    let w = |p: &Path, text: String| -> Result<()> {
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
    };
    w(&fixture.assisted, assisted.join("\n") + "\n")?;
    w(&fixture.additional, additional.join("\n") + "\n")?;
    w(&fixture.components, component_refs.join("\n") + "\n")?;
    w(
        &dir.join("README.txt"),
        format!(
            "A release-shaped image set at the `{}` scale (written by `cargo xtask fixtures`; do not\n\
             edit): oci/ is an OCI image layout holding a synthetic OpenShift {VERSION} release (tag\n\
             {VERSION}) with {COMPONENTS} components, the assisted-installer images and three additional\n\
             images (OCI indexes); the .txt files name them.\n",
            scale.name
        ),
    )?;
    if !fixture.layout.join("index.json").is_file() {
        bail!("the fixture's index.json was not written");
    }
    std::fs::write(&marker, "").with_context(|| format!("writing {}", marker.display()))?;
    Ok(fixture)
}
