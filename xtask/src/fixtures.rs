//! `cargo xtask fixtures`: writes `fixtures/demo-images/`, the bundled content `cargo xtask demo`
//! builds from with no network: a small synthetic OpenShift release as a local OCI layout (a
//! release image whose `release-manifests/image-references` names 18 component images, the 14
//! discovery components among them, all in the layout and sharing a base layer), the three
//! assisted-installer images and one additional image (an OCI index, amd64 and arm64), with the
//! list files that name them. The output is deterministic; it is committed, and this task
//! regenerates it.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::bench::Noise;
use crate::oci::Layout;

/// Install-only components of the release, besides the discovery ones.
const INSTALL_ONLY: &[&str] = &[
    "cluster-version-operator",
    "console",
    "installer",
    "oauth-server",
];

/// The release's components: the discovery ones (`data/discovery-components.txt`, the rule
/// prestage ships) and a few install-only ones.
fn components() -> Vec<String> {
    include_str!("../../data/discovery-components.txt")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .chain(INSTALL_ONLY.iter().copied())
        .map(str::to_string)
        .collect()
}

const VERSION: &str = "4.14.3";
const ART: &str = "quay.io/openshift-release-dev/ocp-v4.0-art-dev";

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.div_ceil(8) * 8];
    Noise::new(seed).fill(&mut v);
    v.truncate(len);
    v
}

/// Writes the fixture tree into `dir` (replacing it).
pub fn write(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let mut oci = Layout::create(&dir.join("oci"))?;
    // Every image shares the base layer: the `shared` payload holds it once.
    let base_bytes = noise(1, 192 << 10);
    let base_d = oci.layer(true, &[("usr/share/base/base.bin", &base_bytes)], 6)?;
    let base_o = oci.layer(false, &[("usr/share/base/base.bin", &base_bytes)], 6)?;
    let mut tags = Vec::new();
    let components = components();
    for (i, c) in components.iter().enumerate() {
        let own = noise(100 + i as u64, 4096 + 512 * i);
        let path = format!("usr/bin/{c}");
        let l = oci.layer(true, &[(&path, &own)], 6)?;
        let m = oci.image(
            true,
            "amd64",
            &[&base_d, &l],
            json!({"io.openshift.build.name": c, "io.openshift.release": VERSION}),
        )?;
        tags.push(json!({
            "name": c,
            "from": {"kind": "DockerImage", "name": format!("{ART}@{}", m.digest)},
        }));
    }
    oci.release(VERSION, tags, &base_d)?;

    // The assisted-installer images (OCI manifests), one from a registry with a port.
    let mut assisted = Vec::new();
    for (i, (repo, tag)) in [
        (
            "quay.io/edge-infrastructure/assisted-installer-agent",
            "v2.30",
        ),
        ("quay.io/edge-infrastructure/assisted-installer", "v2.30"),
        (
            "registry.example.com:5000/edge/assisted-installer-controller",
            "v2.30",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let own = noise(200 + i as u64, 8192);
        let l = oci.layer(false, &[("usr/bin/agent", &own)], 6)?;
        let m = oci.image(false, "amd64", &[&base_o, &l], json!({}))?;
        oci.tag(&m, &format!("{repo}:{tag}"));
        assisted.push(format!("{repo}@{}", m.digest));
    }

    // One additional image, an OCI index of two architectures.
    let mut inst = Vec::new();
    for (i, arch) in ["amd64", "arm64"].into_iter().enumerate() {
        let own = noise(300 + i as u64, 16384);
        let l = oci.layer(false, &[("usr/bin/troubleshoot", &own)], 6)?;
        inst.push((oci.image(false, arch, &[&base_o, &l], json!({}))?, arch));
    }
    let list = oci.list(false, &[(&inst[0].0, inst[0].1), (&inst[1].0, inst[1].1)])?;
    oci.tag(&list, "quay.io/prestage-demo/troubleshoot:latest");
    let additional = format!("quay.io/prestage-demo/troubleshoot@{}", list.digest);
    oci.finish()?;

    let w = |name: &str, text: String| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    w(
        "assisted-images.txt",
        format!(
            "# The assisted-installer images of the demo (in oci/).\n{}\n",
            assisted.join("\n")
        ),
    )?;
    w(
        "additional-images.txt",
        format!("# An additional image of the demo (in oci/).\n{additional}\n"),
    )?;
    w(
        "README.txt",
        format!(
            "Bundled content for `cargo xtask demo` (written by `cargo xtask fixtures`; do not edit):\n\
             oci/ is an OCI image layout holding a synthetic OpenShift {VERSION} release (tag {VERSION}),\n\
             its {} component images (named in the release's image-references as {ART}@sha256:...),\n\
             the assisted-installer images and one additional image; the .txt files name them.\n",
            components.len()
        ),
    )?;
    Ok(())
}
