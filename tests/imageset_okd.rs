//! OKD releases and the release architecture check, offline.
//!
//! Proves: oc-mirror's own `type: okd` example (`tests/fixtures/oc-mirror/`) is accepted and
//! goes, as oc-mirror goes, to OKD's update service (`origin-release.ci.openshift.org/graph`,
//! the channel and architecture asked; here through a proxy that is not there, so nothing
//! leaves the machine); an OKD channel pinned to a version resolves through OKD's graph (a saved
//! answer) to its release, read by digest from an OCI layout, and its components, the effective
//! `imageset.yaml` keeping `type: okd`; `--release oci:` of an OKD release resolves its
//! components under `--release-base` and is refused under the OCP default; a release whose
//! own architecture is not the one asked for is refused by `plan`, naming both.

#[allow(unused_macros)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::Digest as _;

const VERSION: &str = "4.18.0-okd-scos.8";
const RELEASE_REPO: &str = "quay.io/okd/scos-release";
const CONTENT: &str = "quay.io/okd/scos-content";

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn put(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let d = sha(bytes);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
    (d, bytes.len())
}

fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, p, *bytes).unwrap();
    }
    b.into_inner().unwrap()
}

/// An OCI image (one uncompressed layer) in the layout `dir`; returns the manifest digest.
fn image(dir: &Path, arch: &str, files: &[(&str, &[u8])]) -> (String, usize) {
    let layer = tar(files);
    let (ld, ls) = put(dir, &layer);
    let config = json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [ld]}});
    let (cd, cs) = put(dir, &serde_json::to_vec(&config).unwrap());
    let m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}],
    });
    put(dir, &serde_json::to_vec(&m).unwrap())
}

/// An OKD release as an OCI layout: the release image (tag VERSION) and its components, which
/// its image-references names as `quay.io/okd/scos-content@sha256:…`. Returns the layout and
/// the release manifest digest.
fn okd_layout(root: &Path) -> (PathBuf, String, Vec<String>) {
    let dir = root.join("okd");
    let rule = include_str!("../data/discovery-components.txt");
    let mut tags = Vec::new();
    let mut refs = Vec::new();
    let names: Vec<&str> = rule
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .chain(["console", "installer"])
        .collect();
    for (i, n) in names.iter().enumerate() {
        let body = format!("{n} {i}");
        let (d, _) = image(&dir, "amd64", &[(&format!("usr/bin/{n}"), body.as_bytes())]);
        let r = format!("{CONTENT}@{d}");
        tags.push(json!({"name": n, "from": {"kind": "DockerImage", "name": r}}));
        refs.push(r);
    }
    let is = serde_json::to_vec(&json!({
        "kind": "ImageStream", "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": VERSION}, "spec": {"tags": tags},
    }))
    .unwrap();
    let meta = serde_json::to_vec(&json!({
        "kind": "cincinnati-metadata-v0", "version": VERSION, "metadata": {},
    }))
    .unwrap();
    let (d, s) = image(
        &dir,
        "amd64",
        &[
            ("release-manifests/image-references", &is),
            ("release-manifests/release-metadata", &meta),
        ],
    );
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": s,
        "annotations": {"org.opencontainers.image.ref.name": VERSION}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (dir, d, refs)
}

/// Runs `prestage ARGS --store ROOT/store` with a home and registries.conf of its own and no
/// proxy but `proxy`.
fn run(root: &Path, proxy: Option<&str>, args: &[&str]) -> common::Run {
    let home = root.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let conf = root.join("registries.conf");
    std::fs::write(&conf, "").unwrap();
    let mut c = Command::new(common::bin());
    c.args(args)
        .arg("--store")
        .arg(root.join("store"))
        .env("HOME", &home)
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR");
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        c.env_remove(v);
    }
    if let Some(p) = proxy {
        c.env("HTTPS_PROXY", p);
    }
    common::run(&mut c)
}

#[test]
fn the_oc_mirror_okd_example_goes_to_okds_update_service() {
    let dir = common::scratch("okd-example");
    let root = dir.path();
    let example = common::repo_root().join("tests/fixtures/oc-mirror/imageset-config-okd.yaml");
    // A proxy that is not there: the request fails on this machine, after it was formed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = format!("http://127.0.0.1:{port}");
    let out = root.join("out");
    let r = run(
        root,
        Some(&proxy),
        &[
            "images",
            "-q",
            "-c",
            example.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let line = common::assert_one_line_error(
        &r,
        root,
        &[
            "release channel okd: update graph \
             https://origin-release.ci.openshift.org/graph?channel=okd&arch=amd64",
            "through proxy",
        ],
    );
    assert!(!line.contains("only ocp"), "{line}");
    note!("the OKD example is accepted and asks OKD's update service: {line}");
}

#[test]
fn okd_releases_from_the_graph_and_from_a_layout() {
    let dir = common::scratch("okd-release");
    let root = dir.path();
    let (layout, digest, components) = okd_layout(root);
    let payload = format!("{RELEASE_REPO}@{digest}");
    let graph = root.join("okd-graph.json");
    std::fs::write(
        &graph,
        serde_json::to_vec(&json!({"nodes": [
            {"version": "4.17.0-okd-scos.0", "payload": format!("{RELEASE_REPO}@sha256:{}", "1".repeat(64)),
             "metadata": {"io.openshift.upgrades.graph.release.channels": "4-stable"}},
            {"version": VERSION, "payload": payload,
             "metadata": {"io.openshift.upgrades.graph.release.channels": "4-stable"}}],
            "edges": [[0, 1]]}))
        .unwrap(),
    )
    .unwrap();
    // oc-mirror's docs/okd-mirror.md configuration: a pinned OKD version.
    let isc = root.join("isc.yaml");
    std::fs::write(
        &isc,
        format!(
            "apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\nmirror:\n  \
             platform:\n    graph: false\n    channels:\n      - name: 4-stable\n        \
             minVersion: {VERSION}\n        maxVersion: {VERSION}\n        type: okd\n"
        ),
    )
    .unwrap();
    let out = root.join("from-graph");
    run(
        root,
        None,
        &[
            "images",
            "-q",
            "-c",
            isc.to_str().unwrap(),
            "--update-graph",
            graph.to_str().unwrap(),
            "--oci-mirror",
            layout.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    )
    .success();
    let ocp = std::fs::read_to_string(out.join("ocp-images.txt")).unwrap();
    assert!(ocp.contains(&payload), "{ocp}");
    for c in &components {
        assert!(ocp.contains(c.as_str()), "{c} missing:\n{ocp}");
    }
    let ai = std::fs::read_to_string(out.join("ai-images.txt")).unwrap();
    assert_eq!(
        ai.lines().count(),
        15,
        "release + 14 discovery components:\n{ai}"
    );
    let yaml = std::fs::read_to_string(out.join("imageset.yaml")).unwrap();
    assert!(
        yaml.contains("type: okd") && yaml.contains(&format!("maxVersion: {VERSION}")),
        "{yaml}"
    );
    let mapping = std::fs::read_to_string(out.join("mapping.txt")).unwrap();
    assert!(
        mapping.contains(&format!("{VERSION}-x86_64-etcd")),
        "{mapping}"
    );
    note!("an OKD channel resolves through OKD's graph to {payload} and its components");

    // The release from the layout: named after --release-base, which the OCP default is not.
    let release = format!("oci:{}:{VERSION}", layout.display());
    let r = run(
        root,
        None,
        &["images", "-q", "--release", &release, "-o", "x"],
    );
    common::assert_one_line_error(
        &r,
        root,
        &["an OKD release (4.18.0-okd-scos.8)", "--release-base"],
    );
    let out = root.join("from-layout");
    run(
        root,
        None,
        &[
            "images",
            "-q",
            "--release",
            &release,
            "--release-base",
            RELEASE_REPO,
            "-o",
            out.to_str().unwrap(),
        ],
    )
    .success();
    let ocp = std::fs::read_to_string(out.join("ocp-images.txt")).unwrap();
    assert!(ocp.contains(&payload), "{ocp}");
    assert_eq!(ocp.lines().count(), 1 + components.len(), "{ocp}");
    let r = run(root, None, &["images", "--release", VERSION, "-o", "x"]);
    common::assert_one_line_error(&r, root, &["an OKD version names no release tag"]);
}

#[test]
fn plan_refuses_a_release_of_another_architecture() {
    let dir = common::scratch("release-arch");
    let root = dir.path();
    let fixture = common::repo_root().join("fixtures/demo-images/oci");
    let release = format!("oci:{}:4.14.3", fixture.display());
    let r = run(
        root,
        None,
        &[
            "plan",
            "-q",
            "--release",
            &release,
            "--arch",
            "arm64",
            "--layout",
            "demo",
        ],
    );
    let line = common::assert_one_line_error(
        &r,
        root,
        &[
            "is built for amd64 (its image config says architecture amd64",
            "but arm64 was asked for",
            "ocp-release:4.14.3-aarch64",
        ],
    );
    note!("{line}");
    run(
        root,
        None,
        &[
            "plan",
            "-q",
            "--release",
            &release,
            "--oci-mirror",
            fixture.to_str().unwrap(),
            "--layout",
            "demo",
        ],
    )
    .success();
}
