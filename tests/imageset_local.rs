//! The image-set stage without a registry: catalogs read from local OCI image layouts
//! (`oci:DIR:REF`) named by a v1alpha2 ImageSetConfiguration, the FBC directory taken from the
//! catalog's `operators.operatorframework.io.index.configs.v1` label, and a SQLite-era catalog
//! refused as unsupported, and a release image read from an OCI layout (`--release oci:...`),
//! named on the node after `--release-base` and its manifest digest.
//!
//! And, through the `prestage` binary, an ImageSetConfiguration as oc-mirror users write them:
//! keys in other cases (`additionalimages`, `blockedimages`), `full: true` on a catalog with
//! packages (every bundle of the channels, within a range), regular expressions in
//! `blockedImages` next to a plain reference, and sections prestage does not stage (Helm charts,
//! `archiveSize`, `graph`) reported once on stderr and in the `--json` summary while the rest is
//! staged.

use std::io::Write;
use std::path::Path;

use prestage::fetch::cli::RegistryArgs;
use prestage::imageset::cli::{run, ImageSetArgs, ImagesArgs};
use sha2::Digest as _;

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn put(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let d = sha(bytes);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(&d["sha256:".len()..]), bytes).unwrap();
    (d, bytes.len())
}

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, *bytes).unwrap();
    }
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    g.write_all(&b.into_inner().unwrap()).unwrap();
    g.finish().unwrap()
}

/// Writes an OCI layout holding one image (`labels`, one gzip layer) named `tag`; returns the
/// manifest digest.
fn layout(dir: &Path, tag: &str, labels: serde_json::Value, layer: &[u8]) -> String {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let (cd, cs) = put(dir, &serde_json::to_vec(&config).unwrap());
    let (ld, ls) = put(dir, layer);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ls}]
    });
    let (md, ms) = put(dir, &serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(
        dir.join("oci-layout"),
        b"{\"imageLayoutVersion\": \"1.0.0\"}",
    )
    .unwrap();
    md
}

fn img(repo: &str, n: u8) -> String {
    format!(
        "registry.example/{repo}@sha256:{}",
        format!("{n:02x}").repeat(32)
    )
}

fn args(root: &Path, config: &Path, out: &str) -> ImagesArgs {
    std::fs::write(root.join("auth.json"), "{\"auths\": {}}\n").unwrap();
    std::fs::write(root.join("registries.conf"), "").unwrap();
    ImagesArgs {
        set: ImageSetArgs {
            config: Some(config.to_path_buf()),
            release_base: "quay.io/openshift-release-dev/ocp-release".into(),
            ..ImageSetArgs::default()
        },
        output: root.join(out),
        registry: RegistryArgs {
            store: Some(root.join("store")),
            authfile: Some(root.join("auth.json")),
            registries_conf: Some(root.join("registries.conf")),
            retries: 1,
            jobs: Some(2),
            ..RegistryArgs::default()
        },
        quiet: true,
        ..ImagesArgs::default()
    }
}

#[test]
fn catalog_from_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let stream = [
        serde_json::json!({"schema": "olm.package", "name": "ptp-operator", "defaultChannel": "stable"}),
        serde_json::json!({"schema": "olm.channel", "name": "stable", "package": "ptp-operator", "entries": [
            {"name": "ptp-operator.v4.14.0"},
            {"name": "ptp-operator.v4.14.1", "replaces": "ptp-operator.v4.14.0"}]}),
        serde_json::json!({"schema": "olm.bundle", "name": "ptp-operator.v4.14.0", "package": "ptp-operator",
            "image": img("ptp/bundle", 1),
            "properties": [{"type": "olm.package", "value": {"packageName": "ptp-operator", "version": "4.14.0"}}],
            "relatedImages": [{"name": "op", "image": img("ptp/op", 2)}]}),
        serde_json::json!({"schema": "olm.bundle", "name": "ptp-operator.v4.14.1", "package": "ptp-operator",
            "image": img("ptp/bundle", 3),
            "properties": [{"type": "olm.package", "value": {"packageName": "ptp-operator", "version": "4.14.1"}},
                           {"type": "olm.package.required", "value": {"packageName": "ptp-helper", "versionRange": ">=1.0.0 <2.0.0"}}],
            "relatedImages": [{"name": "op", "image": img("ptp/op", 4)}, {"name": "daemon", "image": img("ptp/daemon", 5)}]}),
        // The dependency: its default channel's head.
        serde_json::json!({"schema": "olm.package", "name": "ptp-helper", "defaultChannel": "stable"}),
        serde_json::json!({"schema": "olm.channel", "name": "stable", "package": "ptp-helper", "entries": [
            {"name": "ptp-helper.v1.0.0"}]}),
        serde_json::json!({"schema": "olm.bundle", "name": "ptp-helper.v1.0.0", "package": "ptp-helper",
            "image": img("ptp/helper-bundle", 6),
            "properties": [{"type": "olm.package", "value": {"packageName": "ptp-helper", "version": "1.0.0"}}],
            "relatedImages": [{"name": "helper", "image": img("ptp/helper", 7)}]}),
    ]
    .iter()
    .map(|v| v.to_string())
    .collect::<Vec<_>>()
    .join("\n");
    let layer = tar_gz(&[
        ("bin/opm", b"elf"),
        ("fbc/ptp-operator/catalog.json", stream.as_bytes()),
    ]);
    let cat = root.join("catalog");
    layout(
        &cat,
        "v4.14",
        serde_json::json!({"operators.operatorframework.io.index.configs.v1": "/fbc"}),
        &layer,
    );
    let config = root.join("isc.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: mirror.openshift.io/v1alpha2\nkind: ImageSetConfiguration\n\
             storageConfig:\n  local:\n    path: /tmp/unused\nmirror:\n  operators:\n  \
             - catalog: oci:{}:v4.14\n    packages:\n    - name: ptp-operator\n",
            cat.display()
        ),
    )
    .unwrap();
    run(args(root, &config, "out")).unwrap();
    let out = root.join("out");
    // The channel head and the package it requires.
    assert_eq!(
        std::fs::read_to_string(out.join("ocp-images.txt")).unwrap(),
        [
            img("ptp/bundle", 3),
            img("ptp/daemon", 5),
            img("ptp/helper-bundle", 6),
            img("ptp/helper", 7),
            img("ptp/op", 4)
        ]
        .map(|l| l + "\n")
        .concat()
    );
    assert_eq!(
        std::fs::read_to_string(out.join("ai-images.txt")).unwrap(),
        ""
    );
    let yaml = std::fs::read_to_string(out.join("imageset.yaml")).unwrap();
    assert!(
        yaml.contains("apiVersion: mirror.openshift.io/v2alpha1"),
        "{yaml}"
    );
    assert!(
        yaml.contains(&format!("catalog: oci:{}:v4.14", cat.display())),
        "{yaml}"
    );

    // skipDependencies: the selection alone.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("    packages:", "    skipDependencies: true\n    packages:"),
    )
    .unwrap();
    run(args(root, &config, "skip")).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("skip/ocp-images.txt")).unwrap(),
        [img("ptp/bundle", 3), img("ptp/daemon", 5), img("ptp/op", 4)]
            .map(|l| l + "\n")
            .concat()
    );
    let yaml = std::fs::read_to_string(root.join("skip/imageset.yaml")).unwrap();
    assert!(yaml.contains("skipDependencies: true"), "{yaml}");
}

#[test]
fn sqlite_catalog_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cat = root.join("catalog");
    layout(
        &cat,
        "v4.10",
        serde_json::json!({"operators.operatorframework.io.index.database.v1": "/database/index.db"}),
        &tar_gz(&[("database/index.db", b"SQLite format 3\0")]),
    );
    let config = root.join("isc.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\nmirror:\n  \
             operators:\n  - catalog: oci:{}:v4.10\n    packages:\n    - name: ptp-operator\n",
            cat.display()
        ),
    )
    .unwrap();
    let e = format!("{:#}", run(args(root, &config, "out")).unwrap_err());
    assert!(
        e.contains("a SQLite catalog (/database/index.db): unsupported"),
        "{e}"
    );
    assert!(!root.join("out").exists());
}

#[test]
fn release_from_an_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let names: Vec<&str> = prestage::imageset::lists::DEFAULT_DISCOVERY_COMPONENTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .chain(["console"])
        .collect();
    let tags: Vec<serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            serde_json::json!({"name": n, "from": {"kind": "DockerImage",
                "name": img("ocp/art-dev", 0x40 + i as u8)}})
        })
        .collect();
    let refs = serde_json::json!({"kind": "ImageStream", "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": "4.14.3"}, "spec": {"tags": tags}});
    let layer = tar_gz(&[
        (
            "release-manifests/image-references",
            &serde_json::to_vec(&refs).unwrap(),
        ),
        (
            "release-manifests/release-metadata",
            br#"{"kind":"cincinnati-metadata-v0","version":"4.14.3"}"#,
        ),
    ]);
    let rel = root.join("release");
    let digest = layout(&rel, "4.14.3", serde_json::json!({}), &layer);
    let config = root.join("isc.yaml");
    std::fs::write(
        &config,
        "apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\nmirror: {}\n",
    )
    .unwrap();
    let mut a = args(root, &config, "out");
    a.set.release = Some(format!("oci:{}:4.14.3", rel.display()));
    a.set.release_base = "registry.example/ocp/release".into();
    run(a.clone()).unwrap();
    let out = root.join("out");
    let ai = std::fs::read_to_string(out.join("ai-images.txt")).unwrap();
    let ocp = std::fs::read_to_string(out.join("ocp-images.txt")).unwrap();
    let named = format!("registry.example/ocp/release@{digest}");
    assert!(ai.lines().any(|l| l == named), "{ai}");
    assert_eq!(ai.lines().count(), 1 + 14);
    assert_eq!(ocp.lines().count(), 1 + 15);
    let mapping = std::fs::read_to_string(out.join("mapping.txt")).unwrap();
    assert!(
        mapping
            .lines()
            .any(|l| l == format!("{named}=localhost/ocp/release:4.14.3-x86_64")),
        "{mapping}"
    );
    let yaml = std::fs::read_to_string(out.join("imageset.yaml")).unwrap();
    assert!(
        yaml.contains(&format!("release: oci:{}:4.14.3", rel.display())),
        "{yaml}"
    );

    // A release base with a tag cannot name it.
    a.set.release_base = "registry.example/ocp/release:latest".into();
    a.output = root.join("bad");
    let e = format!("{:#}", run(a).unwrap_err());
    assert!(e.contains("give a repository without tag or digest"), "{e}");
    assert!(!root.join("bad").exists());
}

/// A release payload in an OCI layout: the discovery components, `console` and two cloud
/// components; returns the layout and the components' references by name.
fn release_layout(root: &Path) -> (std::path::PathBuf, Vec<(String, String)>) {
    let components: Vec<(String, String)> = prestage::imageset::lists::DEFAULT_DISCOVERY_COMPONENTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .chain(["console", "aws-ebs-csi-driver", "gcp-pd-csi-driver"])
        .enumerate()
        .map(|(i, n)| (n.to_string(), img("ocp/art-dev", 0x40 + i as u8)))
        .collect();
    let tags: Vec<serde_json::Value> = components
        .iter()
        .map(|(n, r)| serde_json::json!({"name": n, "from": {"kind": "DockerImage", "name": r}}))
        .collect();
    let refs = serde_json::json!({"kind": "ImageStream", "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": "4.14.3"}, "spec": {"tags": tags}});
    let layer = tar_gz(&[
        (
            "release-manifests/image-references",
            &serde_json::to_vec(&refs).unwrap(),
        ),
        (
            "release-manifests/release-metadata",
            br#"{"kind":"cincinnati-metadata-v0","version":"4.14.3"}"#,
        ),
    ]);
    let rel = root.join("release");
    layout(&rel, "4.14.3", serde_json::json!({}), &layer);
    (rel, components)
}

/// `ptp-operator`: channel `stable` 4.14.0 <- 4.14.1 <- 4.14.2 (default) and `4.13` (4.13.5);
/// `ptp-helper`: `stable` 1.0.0 <- 1.1.0 (default) and `fast` (1.2.0).
fn full_catalog_layout(root: &Path) -> std::path::PathBuf {
    let bundle = |pkg: &str, v: &str, image: String, related: &[String]| {
        let rel: Vec<serde_json::Value> = related
            .iter()
            .map(|r| serde_json::json!({"name": "x", "image": r}))
            .collect();
        serde_json::json!({"schema": "olm.bundle", "name": format!("{pkg}.v{v}"), "package": pkg,
            "image": image,
            "properties": [{"type": "olm.package", "value": {"packageName": pkg, "version": v}}],
            "relatedImages": rel})
    };
    let chain = |pkg: &str, ch: &str, versions: &[&str]| {
        let mut prev: Option<String> = None;
        let entries: Vec<serde_json::Value> = versions
            .iter()
            .map(|v| {
                let name = format!("{pkg}.v{v}");
                let e = serde_json::json!({"name": name, "replaces": prev});
                prev = Some(name);
                e
            })
            .collect();
        serde_json::json!({"schema": "olm.channel", "name": ch, "package": pkg, "entries": entries})
    };
    let blobs = [
        serde_json::json!({"schema": "olm.package", "name": "ptp-operator", "defaultChannel": "stable"}),
        chain("ptp-operator", "stable", &["4.14.0", "4.14.1", "4.14.2"]),
        chain("ptp-operator", "4.13", &["4.13.5"]),
        bundle(
            "ptp-operator",
            "4.14.0",
            img("ptp/bundle", 0x10),
            &[img("ptp/op", 0x11), img("ptp/op-metrics", 0x12)],
        ),
        bundle(
            "ptp-operator",
            "4.14.1",
            img("ptp/bundle", 0x13),
            &[img("ptp/op", 0x14), img("ptp/cloud-aws", 0x15)],
        ),
        bundle(
            "ptp-operator",
            "4.14.2",
            img("ptp/bundle", 0x16),
            &[img("ptp/op", 0x17), img("ptp/op-metrics", 0x18)],
        ),
        bundle(
            "ptp-operator",
            "4.13.5",
            img("ptp/bundle", 0x19),
            &[img("ptp/op", 0x1a)],
        ),
        serde_json::json!({"schema": "olm.package", "name": "ptp-helper", "defaultChannel": "stable"}),
        chain("ptp-helper", "stable", &["1.0.0", "1.1.0"]),
        chain("ptp-helper", "fast", &["1.2.0"]),
        bundle(
            "ptp-helper",
            "1.0.0",
            img("helper/bundle", 0x20),
            &[img("helper/helper", 0x21)],
        ),
        bundle(
            "ptp-helper",
            "1.1.0",
            img("helper/bundle", 0x22),
            &[img("helper/helper", 0x23)],
        ),
        bundle(
            "ptp-helper",
            "1.2.0",
            img("helper/bundle", 0x24),
            &[img("helper/helper", 0x25)],
        ),
    ];
    let stream: Vec<String> = blobs.iter().map(|b| b.to_string()).collect();
    let layer = tar_gz(&[("configs/ptp/catalog.json", stream.join("\n").as_bytes())]);
    let cat = root.join("catalog");
    layout(&cat, "v4.14", serde_json::json!({}), &layer);
    cat
}

/// Runs `prestage images --json`; returns (exit ok, stdout, stderr).
fn images_bin(root: &Path, config: &Path, out: &str) -> (bool, String, String) {
    std::fs::write(root.join("auth.json"), "{\"auths\": {}}\n").unwrap();
    std::fs::write(root.join("registries.conf"), "").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_prestage"))
        .arg("images")
        .arg("--config")
        .arg(config)
        .arg("-o")
        .arg(root.join(out))
        .arg("--json")
        .arg("--quiet")
        .arg("--store")
        .arg(root.join("store"))
        .arg("--authfile")
        .arg(root.join("auth.json"))
        .arg("--registries-conf")
        .arg(root.join("registries.conf"))
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

#[test]
fn oc_mirror_spellings_full_catalog_and_blocked_patterns() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (rel, components) = release_layout(root);
    let cat = full_catalog_layout(root);
    let troubleshoot = img("tools/troubleshoot", 0x30);
    let config = root.join("imageset-config.yaml");
    // Field names from oc-mirror's documentation, some in the other spellings its own test
    // files use.
    std::fs::write(
        &config,
        format!(
            "\
kind: ImageSetConfiguration
apiVersion: mirror.openshift.io/v2alpha1
archiveSize: 4
mirror:
  platform:
    release: oci:{rel}:4.14.3
    graph: true
  operators:
    - catalog: oci:{cat}:v4.14
      full: true
      packages:
        - name: ptp-operator
          channels:
            - name: stable
        - name: ptp-helper
          maxVersion: 1.1.0
  additionalimages:
    - name: {troubleshoot}
  blockedimages:
    - name: \"(aws|gcp|azure|ibm|openstack)\"
    - name: registry.example/ptp/op
  helm:
    repositories:
      - name: podinfo
        url: https://stefanprodan.github.io/podinfo
        charts:
          - name: podinfo
            version: 5.0.0
",
            rel = rel.display(),
            cat = cat.display()
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = images_bin(root, &config, "out");
    assert!(ok, "{stderr}");
    let out = root.join("out");
    let component = |name: &str| {
        components
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .unwrap()
    };
    let ocp = std::fs::read_to_string(out.join("ocp-images.txt")).unwrap();
    let ocp: Vec<&str> = ocp.lines().collect();
    // full: every bundle of ptp-operator's stable channel (not 4.13), of every ptp-helper
    // channel up to 1.1.0 (not fast's 1.2.0); ptp/op blocked as a repository, op-metrics kept;
    // cloud-aws blocked by the pattern on its reference.
    let mut operators = vec![
        img("helper/bundle", 0x20),
        img("helper/bundle", 0x22),
        img("helper/helper", 0x21),
        img("helper/helper", 0x23),
        img("ptp/bundle", 0x10),
        img("ptp/bundle", 0x13),
        img("ptp/bundle", 0x16),
        img("ptp/op-metrics", 0x12),
        img("ptp/op-metrics", 0x18),
    ];
    operators.sort();
    for o in &operators {
        assert!(ocp.contains(&o.as_str()), "{o} missing: {ocp:#?}");
    }
    for gone in [
        img("ptp/op", 0x11),
        img("ptp/op", 0x14),
        img("ptp/op", 0x17),
        img("ptp/cloud-aws", 0x15),
        img("ptp/bundle", 0x19),
        img("helper/bundle", 0x24),
        component("aws-ebs-csi-driver"),
        component("gcp-pd-csi-driver"),
    ] {
        assert!(!ocp.contains(&gone.as_str()), "{gone} staged: {ocp:#?}");
    }
    // Release image, 14 + console components, 9 operator images, troubleshoot.
    assert_eq!(ocp.len(), 1 + 15 + 9 + 1, "{ocp:#?}");
    assert!(ocp.contains(&troubleshoot.as_str()));
    assert!(ocp.contains(&component("console").as_str()));

    // The summary: what was blocked by which entry, what was not staged.
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let blocked: Vec<(String, String)> = j["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["reference"].as_str().unwrap().to_string(),
                b["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pattern = "(aws|gcp|azure|ibm|openstack)".to_string();
    let reference = "registry.example/ptp/op".to_string();
    let mut want = vec![
        (component("aws-ebs-csi-driver"), pattern.clone()),
        (component("gcp-pd-csi-driver"), pattern.clone()),
        (img("ptp/cloud-aws", 0x15), pattern),
        (img("ptp/op", 0x11), reference.clone()),
        (img("ptp/op", 0x14), reference.clone()),
        (img("ptp/op", 0x17), reference),
    ];
    want.sort();
    assert_eq!(blocked, want);
    let file = config.display().to_string();
    let not_staged: Vec<(&str, &str)> = j["not_staged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["file"].as_str().unwrap(), n["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        not_staged,
        [
            (file.as_str(), "archiveSize"),
            (file.as_str(), "mirror.platform.graph"),
            (file.as_str(), "mirror.helm")
        ]
    );
    // On stderr, once each, and nothing else (--quiet).
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    for (line, field) in lines
        .iter()
        .zip(["archiveSize", "mirror.platform.graph", "mirror.helm"])
    {
        assert!(
            line.starts_with(&format!("prestage: {file}: {field}: not staged: ")),
            "{line}"
        );
    }
    assert!(
        lines[2].ends_with("no Helm charts or their images (1 repository, 0 local charts)"),
        "{stderr}"
    );

    // The effective imageset.yaml: canonical spelling, only what was staged, and it gives the
    // same lists again, with nothing left to report.
    let eff = std::fs::read_to_string(out.join("imageset.yaml")).unwrap();
    for canonical in [
        "additionalImages:",
        "blockedImages:",
        "full: true",
        "maxVersion: 1.1.0",
    ] {
        assert!(eff.contains(canonical), "{canonical}: {eff}");
    }
    for gone in [
        "additionalimages",
        "blockedimages",
        "helm",
        "archiveSize",
        "graph",
    ] {
        assert!(!eff.contains(gone), "{gone}: {eff}");
    }
    assert!(eff.contains("(aws|gcp|azure|ibm|openstack)"), "{eff}");
    let (ok, stdout2, stderr2) = images_bin(root, &out.join("imageset.yaml"), "again");
    assert!(ok, "{stderr2}");
    assert_eq!(stderr2, "");
    for f in ["ai-images.txt", "ocp-images.txt", "mapping.txt"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(root.join("again").join(f)).unwrap(),
            "{f}"
        );
    }
    let j2: serde_json::Value = serde_json::from_str(&stdout2).unwrap();
    assert_eq!(j2["blocked"], j["blocked"]);
    assert_eq!(j2["not_staged"], serde_json::json!([]));
}
