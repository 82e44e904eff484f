//! The node files of the `store` payload, judged by the programs that consume them:
//! `ignition-validate` and the real Ignition for both overrides, `systemd-analyze verify` for
//! every unit (the overrides' and the MachineConfig's), `shellcheck` for the scripts, the
//! machine-config CRDs' own schemas (`tests/fixtures/mco/`, strict) and their CEL path rules for
//! the cluster manifests; and, as root, the real skopeo against a store on an XFS partition:
//! a store written by skopeo itself (the fixture's images: OCI, an OCI index, Docker v2s2, a
//! registry with a port) copied onto a fresh XFS behind a read-only loop device, which the
//! fallback loader copies into an ordinary storage under every exact by-digest name, and which
//! `storage.conf` as the discovery override writes it serves in place; the manifests merged into
//! the upstream ClusterInstance example pass its CRD and ride in `extraManifestsRefs`; and an image
//! `prestage compose` writes with that store on its data partition (prestage's own XFS) is read
//! back by `prestage node` as a store payload, its loader copies every image out of it, and it
//! serves every image in place; and the same for the store `prestage build --payload store`
//! writes itself (the fixture's 21 images of both stages).

mod common;
mod nodeenv;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{require, run, scratch};
use nodeenv::{crd_validator, schema_errors, yaml_docs, Loop, Node};
use prestage::node::{store, NodeSet};
use prestage::payload::Format;
use serde_json::Value as J;

/// `OUT.node/` of the store payload for the partition `data`, written into `dir`.
fn node_dir(dir: &Path) -> PathBuf {
    let out = dir.join("store.node");
    NodeSet::new("data")
        .expect("a valid label")
        .write(Format::Store, &out)
        .expect("writing the node files");
    out
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// `systemd-analyze verify` of `units` (in `/etc/systemd/system` of `root`) is clean: the host's
/// unit directory and the binaries the units run are copied into `root` first.
fn assert_units_verify(root: &Path, units: &[&str], what: &str) {
    let analyze = require("systemd-analyze", "systemd");
    let lib = root.join("usr/lib/systemd");
    if !lib.join("system").exists() {
        fs::create_dir_all(&lib).expect("mkdir");
        run(Command::new("cp")
            .arg("-a")
            .arg("/usr/lib/systemd/system")
            .arg(&lib))
        .success();
    }
    fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
    for b in ["systemctl", "mkdir"] {
        fs::copy(Path::new("/usr/bin").join(b), root.join("usr/bin").join(b)).expect("copy");
    }
    for unit in units {
        let r = run(Command::new(&analyze)
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg(format!("/etc/systemd/system/{unit}")));
        assert!(
            r.status.success() && r.both().trim().is_empty(),
            "systemd-analyze verify {unit} ({what}):\n{}",
            r.both()
        );
    }
}

/// A file an override installs: its path, mode and bytes.
type Installed = (&'static str, u32, Vec<u8>);

#[test]
fn overrides_pass_ignition_validate_and_ignition_installs_what_systemd_accepts() {
    nodeenv::require_root("applying Ignition configs (it sets owners)");
    let dir = scratch("store-ignition");
    let out = node_dir(dir.path());
    assert!(
        !out.join("extract-ai.sh").exists(),
        "the store payload has no discovery loader"
    );
    let cases: [(&str, Vec<Installed>, Vec<&str>); 2] = [
        (
            "discovery.ign",
            vec![(
                store::STORAGE_CONF,
                0o644,
                store::storage_conf().into_bytes(),
            )],
            vec![store::DIR_UNIT, store::MOUNT_UNIT],
        ),
        (
            "install.ign",
            vec![(
                "/usr/local/bin/extract-ocp.sh",
                0o755,
                fs::read(out.join("extract-ocp.sh")).expect("reading the loader"),
            )],
            vec!["precache-ocp-images.service"],
        ),
    ];
    for (ign, files, units) in cases {
        let text = read(&out.join(ign));
        nodeenv::assert_ignition_validate_accepts(&text, ign, dir.path());
        let v: J = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["ignition"]["version"], "3.2.0");
        assert_eq!(
            v["storage"]["files"].as_array().map(Vec::len),
            Some(files.len()),
            "{ign}: files"
        );
        let root = dir.path().join(format!("root-{ign}"));
        let work = dir.path().join(format!("work-{ign}"));
        fs::create_dir_all(&work).expect("mkdir");
        nodeenv::ignition_apply(&out.join(ign), &root, &work);
        for (path, mode, bytes) in files {
            let p = root.join(path.trim_start_matches('/'));
            let meta = fs::metadata(&p).unwrap_or_else(|e| panic!("{ign}: no {path}: {e}"));
            assert_eq!(
                meta.permissions().mode() & 0o7777,
                mode,
                "{ign}: {path} mode"
            );
            assert_eq!(fs::read(&p).expect("read"), bytes, "{ign}: {path} bytes");
        }
        let preset = read(&root.join("etc/systemd/system-preset/20-ignition.preset"));
        for unit in &units {
            assert!(
                preset.lines().any(|l| l == format!("enable {unit}")),
                "{ign}: the preset does not enable {unit}:\n{preset}"
            );
        }
        assert_units_verify(&root, &units, ign);
        note!("{ign}: ignition-validate clean, Ignition installed {units:?}, systemd-analyze verify clean");
    }
}

#[test]
fn the_scripts_are_shellcheck_clean() {
    let shellcheck = require("shellcheck", "shellcheck");
    let dir = scratch("store-shellcheck");
    let out = node_dir(dir.path());
    for s in ["extract-ocp.sh", "assisted.sh"] {
        let r = run(Command::new(&shellcheck).arg(out.join(s)));
        assert!(r.status.success(), "shellcheck {s}:\n{}", r.both());
    }
}

fn mco_fixture(name: &str) -> String {
    read(&common::repo_root().join("tests/fixtures/mco").join(name))
}

/// The CEL rules of `additionalImageStores[].path` in the CRD: (the pattern its `matches()`
/// names, whether it forbids `//`).
fn path_rules(crd: &J) -> (regex::Regex, bool) {
    let path = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["containerRuntimeConfig"]["properties"]["additionalImageStores"]["items"]
        ["properties"]["path"];
    let rules: Vec<&str> = path["x-kubernetes-validations"]
        .as_array()
        .expect("the path's CEL rules")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    let pattern = rules
        .iter()
        .find_map(|r| {
            r.strip_prefix("self.matches('")
                .and_then(|r| r.strip_suffix("')"))
        })
        .expect("a matches() rule");
    (
        regex::Regex::new(pattern).expect("the rule's pattern"),
        rules.contains(&"!self.contains('//')"),
    )
}

#[test]
fn cluster_manifests_pass_the_machine_config_crds_and_carry_units_systemd_accepts() {
    let dir = scratch("store-manifests");
    let out = node_dir(dir.path());
    let crc_crd_text = mco_fixture("0000_80_machine-config_01_containerruntimeconfigs.crd.yaml");
    let crc = crd_validator(&crc_crd_text, "v1");
    let mc = crd_validator(
        &mco_fixture("0000_80_machine-config_01_machineconfigs.crd.yaml"),
        "v1",
    );
    let (pattern, no_double_slash) = path_rules(&yaml_docs(&crc_crd_text)[0]);
    assert!(no_double_slash, "the CRD forbids `//` in a store path");

    let manifests =
        prestage::node::manifests::for_format(Format::Store, "data").expect("manifests");
    let mut kinds = BTreeMap::new();
    for m in &manifests {
        let text = read(&out.join(&m.file_name));
        assert_eq!(text, m.yaml, "{} beside the image", m.file_name);
        let docs = yaml_docs(&text);
        assert_eq!(docs.len(), 1, "{}: one document", m.file_name);
        let d = &docs[0];
        assert_eq!(d["apiVersion"], "machineconfiguration.openshift.io/v1");
        let kind = d["kind"].as_str().expect("kind").to_string();
        let name = d["metadata"]["name"].as_str().expect("metadata.name");
        assert_eq!(
            format!("{}.yaml", name),
            m.file_name.trim_start_matches("99-")
        );
        assert!(
            text.contains("TechPreviewNoUpgrade") && text.contains("4.23"),
            "{}: states the versions and the feature gate",
            m.file_name
        );
        match kind.as_str() {
            "ContainerRuntimeConfig" => {
                let e = schema_errors(&crc, d);
                assert!(
                    e.is_empty(),
                    "{}: the CRD's schema refuses it:\n{e}",
                    m.file_name
                );
                let stores = d["spec"]["containerRuntimeConfig"]["additionalImageStores"]
                    .as_array()
                    .expect("additionalImageStores is a list");
                assert_eq!(stores.len(), 1);
                let p = stores[0]["path"].as_str().expect("path is a string");
                assert_eq!(p, store::STORE_PATH);
                assert!(
                    pattern.is_match(p) && !p.contains("//"),
                    "{p}: the CEL rules refuse it"
                );
                let sel = d["spec"]["machineConfigPoolSelector"]["matchLabels"]
                    .as_object()
                    .expect("a pool selector");
                let role = name.trim_start_matches("prestage-store-");
                assert_eq!(
                    sel.keys().collect::<Vec<_>>(),
                    [&format!(
                        "pools.operator.machineconfiguration.openshift.io/{role}"
                    )]
                );
            }
            "MachineConfig" => {
                let e = schema_errors(&mc, d);
                assert!(
                    e.is_empty(),
                    "{}: the CRD's schema refuses it:\n{e}",
                    m.file_name
                );
                let role = d["metadata"]["labels"]["machineconfiguration.openshift.io/role"]
                    .as_str()
                    .expect("a role label");
                assert!(name.ends_with(&format!("-{role}")));
                // spec.config is an Ignition config: ignition-validate judges it, the real
                // Ignition installs it, systemd judges its units.
                let config = serde_json::to_string(&d["spec"]["config"]).expect("JSON");
                nodeenv::assert_ignition_validate_accepts(&config, &m.file_name, dir.path());
                let cfg = dir.path().join(format!("{name}.ign"));
                fs::write(&cfg, &config).expect("writing the config");
                nodeenv::require_root("applying the MachineConfig's Ignition");
                let root = dir.path().join(format!("root-{name}"));
                let work = dir.path().join(format!("work-{name}"));
                fs::create_dir_all(&work).expect("mkdir");
                nodeenv::ignition_apply(&cfg, &root, &work);
                assert_units_verify(&root, &[store::DIR_UNIT, store::MOUNT_UNIT], name);
            }
            k => panic!("{}: unexpected kind {k}", m.file_name),
        }
        *kinds.entry(kind).or_insert(0) += 1;
    }
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("ContainerRuntimeConfig".to_string(), 2),
            ("MachineConfig".to_string(), 2)
        ])
    );

    // clusterinstance.yaml carries them in its ConfigMap, named in extraManifestsRefs.
    let ci = yaml_docs(&read(&out.join("clusterinstance.yaml")));
    assert_eq!(
        ci[0]["spec"]["extraManifestsRefs"][0]["name"],
        prestage::node::manifests::CONFIG_MAP
    );
    let data = ci[1]["data"].as_object().expect("the ConfigMap's data");
    assert_eq!(data.len(), manifests.len());
    for m in &manifests {
        assert_eq!(data[&m.file_name], J::String(m.yaml.clone()));
    }
}

/// The fixture's images as a store: (source for skopeo, exact by-digest reference).
fn fixture_images(dir: &Path) -> Vec<(String, String)> {
    let fx = common::repo_root().join("fixtures/demo-images/oci");
    let oci = |name: &str| format!("oci:{}:{name}", fx.display());
    // The release image is Docker v2s2, which the OCI layout reader of skopeo 1.9 does not find
    // by name: it is handed over as a dir: layout made from the same blobs.
    let release = dir.join("release-dir");
    let index: J = serde_json::from_str(&read(&fx.join("index.json"))).expect("index.json");
    let desc = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == "4.14.3")
        .expect("the release in the fixture");
    let digest = desc["digest"].as_str().expect("digest");
    let blob = |d: &str| {
        fx.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    fs::create_dir_all(&release).expect("mkdir");
    let manifest = fs::read(blob(digest)).expect("the release manifest");
    fs::write(release.join("manifest.json"), &manifest).expect("write");
    let m: J = serde_json::from_slice(&manifest).expect("JSON");
    let mut blobs = vec![m["config"]["digest"].as_str().expect("config").to_string()];
    for l in m["layers"].as_array().expect("layers") {
        blobs.push(l["digest"].as_str().expect("digest").to_string());
    }
    for b in blobs {
        fs::copy(blob(&b), release.join(b.trim_start_matches("sha256:"))).expect("copy a blob");
    }
    fs::write(
        release.join("version"),
        "Directory Transport Version: 1.1\n",
    )
    .expect("write");
    vec![
        (
            format!("dir:{}", release.display()),
            format!("quay.io/openshift-release-dev/ocp-release@{digest}"),
        ),
        (
            oci("quay.io/edge-infrastructure/assisted-installer-agent:v2.30"),
            "quay.io/edge-infrastructure/assisted-installer-agent@sha256:5aed42cb125c2185ac175821cb61572c19940cb171a01409a4f7673226b59288".to_string(),
        ),
        (
            oci("quay.io/edge-infrastructure/assisted-installer:v2.30"),
            "quay.io/edge-infrastructure/assisted-installer@sha256:e018663a19f6331b95f221ef499c29830fbf6479c7dee2e2684918a443f96ffb".to_string(),
        ),
        (
            oci("registry.example.com:5000/edge/assisted-installer-controller:v2.30"),
            "registry.example.com:5000/edge/assisted-installer-controller@sha256:fda7e056395dfa2e5be4cca3503ce3f434c1bd70a11457ae335212821a578419".to_string(),
        ),
        (
            oci("quay.io/prestage-demo/troubleshoot:latest"),
            nodeenv::LIST_AGENT.to_string(),
        ),
    ]
}

/// The fixture's images copied by skopeo into an overlay store (its root returned), and the
/// partition root's lists (`absent` listed too) in a directory: (store root, lists, references
/// in `ocp-images.txt`'s order).
fn skopeo_store(dir: &Path, absent: &[&str]) -> (PathBuf, PathBuf, Vec<String>) {
    require("skopeo", "skopeo");
    let images = fixture_images(dir);
    let src = dir.join("skopeo-store");
    for (from, to) in &images {
        run(Command::new("skopeo")
            .args(["copy", "-q", from])
            .arg(format!(
                "containers-storage:[overlay@{0}/root+{0}/run:skip_mount_home=true]{to}",
                src.display()
            )))
        .success();
    }
    let refs: Vec<String> = images.into_iter().map(|(_, r)| r).collect();
    let lists = dir.join("lists");
    fs::create_dir_all(&lists).expect("mkdir");
    let listed: Vec<&str> = refs
        .iter()
        .map(String::as_str)
        .chain(absent.iter().copied())
        .collect();
    fs::write(lists.join("ocp-images.txt"), listed.join("\n") + "\n").expect("write");
    fs::write(lists.join("ai-images.txt"), format!("{}\n", refs[4])).expect("write");
    fs::write(lists.join("mapping.txt"), "").expect("write");
    (src.join("root"), lists, refs)
}

/// A data partition holding a store: the fixture's images copied by skopeo into an overlay
/// store, that store's files copied onto a fresh XFS (as the payload puts it: `store/` beside the
/// lists), in `dir`. Returns the XFS file and the references, in `ocp-images.txt`'s order.
fn store_partition(dir: &Path) -> (PathBuf, Vec<String>) {
    store_partition_listing(dir, &[])
}

/// The same, with `absent` (references the store does not hold) listed too.
fn store_partition_listing(dir: &Path, absent: &[&str]) -> (PathBuf, Vec<String>) {
    let mkfs = require("mkfs.xfs", "xfsprogs");
    let (src, lists, refs) = skopeo_store(dir, absent);
    let xfs = dir.join("data.xfs");
    fs::File::create(&xfs)
        .and_then(|f| f.set_len(320 << 20))
        .expect("creating the partition file");
    run(Command::new(mkfs).arg("-q").arg(&xfs)).success();
    let lp = Loop::attach(&xfs, 0, 320 << 20, false);
    let mnt = dir.join("populate");
    fs::create_dir_all(&mnt).expect("mkdir");
    run(Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c"])
        .arg(format!(
            "set -e\nmount -t xfs {dev} {mnt}\nmkdir {mnt}/store\n\
             cp -a {src}/overlay {src}/overlay-layers {src}/overlay-images {mnt}/store/\n\
             cp {lists}/ocp-images.txt {lists}/ai-images.txt {lists}/mapping.txt {mnt}/\n\
             umount {mnt}\n",
            dev = lp.dev,
            mnt = mnt.display(),
            src = src.display(),
            lists = lists.display()
        )))
    .success();
    drop(lp);
    (xfs, refs)
}

/// The node's storage.conf: the machine-config operator's (as the discovery override writes
/// it), its roots in the node's scratch directory, with `stores` as additional image stores.
fn storage_conf(node: &Node, stores: &[&str]) -> String {
    let d = node.dir.path().display();
    let mut conf = store::storage_conf();
    for (from, to) in [
        (
            format!("\"{}\",\n", store::STORE_PATH),
            stores.iter().map(|s| format!("\"{s}\",\n")).collect(),
        ),
        (
            "graphroot = \"/var/lib/containers/storage\"".to_string(),
            format!("graphroot = \"{d}/graph\""),
        ),
        (
            "runroot = \"/run/containers/storage\"".to_string(),
            format!("runroot = \"{d}/run\""),
        ),
    ] {
        assert!(conf.contains(&from), "storage.conf has no {from}");
        conf = conf.replace(&from, &to);
    }
    fs::write(node.dir.path().join("storage.conf"), &conf).expect("writing storage.conf");
    conf
}

/// The sha256 of a layer blob's tar: decompressed when it is gzip (a copy out of containers-storage
/// compresses layers whose media type says gzip).
fn sha256_tar(p: &Path) -> String {
    let r = run(Command::new("bash")
        .arg("-c")
        .arg("set -o pipefail; gzip -dcf -- \"$1\" | sha256sum")
        .arg("bash")
        .arg(p))
    .success();
    r.stdout
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

fn sha256_file(p: &Path) -> String {
    let r = run(Command::new("sha256sum").arg(p)).success();
    r.stdout
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string()
}

/// Each layer of the image stored under `name`, copied out by skopeo, hashes to its diff ID:
/// the layers are complete in the node's own storage.
fn assert_layers_complete(node: &Node, name: &str, out: &Path) {
    let r = run(node
        .cmd("skopeo")
        .args(["copy", "-q"])
        .arg(format!("containers-storage:{name}"))
        .arg(format!("oci:{}", out.display())));
    assert!(r.status.success(), "copying {name} out: {}", r.both());
    let index: J = serde_json::from_str(&read(&out.join("index.json"))).expect("index.json");
    let blob = |d: &J| {
        out.join("blobs/sha256")
            .join(d.as_str().expect("digest").trim_start_matches("sha256:"))
    };
    let m: J =
        serde_json::from_str(&read(&blob(&index["manifests"][0]["digest"]))).expect("manifest");
    let config: J = serde_json::from_str(&read(&blob(&m["config"]["digest"]))).expect("config");
    let layers: Vec<String> = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| format!("sha256:{}", sha256_tar(&blob(&l["digest"]))))
        .collect();
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("a diff ID").to_string())
        .collect();
    assert_eq!(
        layers, diff_ids,
        "{name}: the layers copied out are not its diff IDs"
    );
}

/// Runs `loader` on `node` and checks that it copied every image of `refs` into the node's own
/// storage under its exact by-digest name, every layer complete (copied out into `dir`); returns
/// the loader's seconds.
fn assert_loader_copies_all(node: &Node, loader: &Path, refs: &[String], dir: &Path) -> f64 {
    let t = Instant::now();
    let r = node.load(loader);
    let secs = t.elapsed().as_secs_f64();
    assert!(r.status.success(), "the loader failed:\n{}", r.both());
    assert!(
        nodeenv::summary(&r).contains(&format!(
            "summary: {n} loaded, 0 skipped, 0 failed of {n} images, 0 list lines refused",
            n = refs.len()
        )),
        "{}",
        r.stderr
    );
    // Outside the loader's mount namespace the partition is mounted nowhere: each name resolves
    // in the node's own storage, to its exact digest, with every layer there.
    for (i, name) in refs.iter().enumerate() {
        let want = name.rsplit_once("@sha256:").expect("a digest reference").1;
        assert_eq!(
            node.stored_digest(name).as_deref(),
            Some(want),
            "{name}: not stored under its digest"
        );
        assert_layers_complete(node, name, &dir.join(format!("out-{i}")));
    }
    secs
}

#[test]
fn the_fallback_loader_copies_every_image_out_of_a_read_only_store_under_its_digest() {
    nodeenv::require_root("the node tests");
    let dir = scratch("store-load");
    let out = node_dir(dir.path());
    let (xfs, refs) = store_partition(dir.path());
    let before = sha256_file(&xfs);
    let node = Node::on_loop(Loop::attach(&xfs, 0, 320 << 20, true));
    storage_conf(&node, &[]);

    let secs = assert_loader_copies_all(&node, &out.join("extract-ocp.sh"), &refs, dir.path());
    note!(
        "store fallback loader: {} images (OCI, OCI index, Docker v2s2) copied out of the read-only store in {secs:.1} s",
        refs.len()
    );
    // The run left nothing behind (no work directory, no mount).
    let tmp: Vec<_> = fs::read_dir(node.dir.path().join("tmp"))
        .expect("tmp")
        .collect();
    assert!(tmp.is_empty(), "the loader left {tmp:?}");

    // A second run finds every image and copies nothing.
    let r = node.load(&out.join("extract-ocp.sh"));
    assert!(r.status.success(), "{}", r.both());
    assert!(
        nodeenv::summary(&r).contains(&format!(
            "summary: 0 loaded, {n} skipped, 0 failed of {n} images",
            n = refs.len()
        )),
        "{}",
        r.stderr
    );
    drop(node);
    assert_eq!(sha256_file(&xfs), before, "the partition changed");
}

/// With `storage.conf` as the discovery override writes it (the partition mounted read-only
/// where the mount unit puts it, here under the node's scratch directory), every name resolves
/// in place to its digest, and the loader copies nothing into the node's own storage.
fn assert_served_in_place(node: &Node, out: &Path, refs: &[String]) {
    let mnt = node.dir.path().join("prestage");
    let store_path = mnt.join("store");
    storage_conf(node, &[store_path.to_str().expect("a UTF-8 path")]);
    fs::create_dir_all(&mnt).expect("mkdir");

    // In one mount namespace: the partition read-only where the mount unit puts it (here under
    // the scratch directory), every name resolved through storage.conf, then the loader.
    let mut script = format!(
        "mount -t xfs -o ro,nouuid /dev/disk/by-partlabel/data {}\n",
        mnt.display()
    );
    for name in refs {
        script.push_str(&format!(
            "printf '%s %s\\n' {name} \"$(skopeo inspect --raw containers-storage:{name} | sha256sum | cut -d' ' -f1)\"\n"
        ));
    }
    script.push_str(&format!("{}\n", out.join("extract-ocp.sh").display()));
    let r = node.sh(&script);
    assert!(r.status.success(), "{}", r.both());
    for name in refs {
        let want = name.rsplit_once("@sha256:").expect("a digest").1;
        assert!(
            r.stdout.lines().any(|l| l == format!("{name} {want}")),
            "{name} does not resolve in place to its digest:\n{}",
            r.both()
        );
    }
    assert!(
        nodeenv::summary(&r).contains(&format!(
            "summary: 0 loaded, {n} skipped, 0 failed of {n} images",
            n = refs.len()
        )),
        "the loader copied where the store is an additional image store:\n{}",
        r.stderr
    );
    // Nothing was copied into the node's own storage: its image list is empty.
    let images = node.dir.path().join("graph/overlay-images/images.json");
    let held: J = serde_json::from_str(&fs::read_to_string(&images).unwrap_or("[]".into()))
        .expect("images.json");
    assert_eq!(
        held,
        J::Array(vec![]),
        "images were written into the node's storage"
    );
}

#[test]
fn the_discovery_storage_conf_serves_the_store_in_place_and_the_loader_then_copies_nothing() {
    nodeenv::require_root("the node tests");
    let dir = scratch("store-in-place");
    let out = node_dir(dir.path());
    let (xfs, refs) = store_partition(dir.path());
    let node = Node::on_loop(Loop::attach(&xfs, 0, 320 << 20, true));
    assert_served_in_place(&node, &out, &refs);

    // Without the partition the store path is the empty directory the dir unit creates: the
    // storage works (the names are just not there); a listed path that does not exist would
    // break the whole driver, which is why the dir unit exists.
    let empty = node.dir.path().join("empty/store");
    fs::create_dir_all(&empty).expect("mkdir");
    storage_conf(&node, &[empty.to_str().expect("UTF-8")]);
    let r = run(node
        .cmd("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("containers-storage:{}", refs[0])));
    assert!(!r.status.success());
    assert!(
        !r.both().contains("imageStore"),
        "an empty store broke the driver:\n{}",
        r.both()
    );
    let missing = node.dir.path().join("missing/store");
    storage_conf(&node, &[missing.to_str().expect("UTF-8")]);
    let r = run(node
        .cmd("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("containers-storage:{}", refs[0])));
    assert!(
        !r.status.success() && r.both().contains("can't stat imageStore dir"),
        "a listed store path that does not exist:\n{}",
        r.both()
    );
}

#[test]
fn an_image_missing_from_the_store_fails_alone() {
    nodeenv::require_root("the node tests");
    let dir = scratch("store-missing");
    let out = node_dir(dir.path());
    let absent = "quay.io/prestage-demo/absent@sha256:0000000000000000000000000000000000000000000000000000000000000001";
    let (xfs, refs) = store_partition_listing(dir.path(), &[absent]);
    let node = Node::on_loop(Loop::attach(&xfs, 0, 320 << 20, true));
    storage_conf(&node, &[]);
    let r = node.sh(&format!(
        "{} --retries 1",
        out.join("extract-ocp.sh").display()
    ));
    assert_eq!(r.status.code(), Some(1), "{}", r.both());
    assert!(
        nodeenv::summary(&r).contains(&format!(
            "summary: {n} loaded, 0 skipped, 1 failed of {m} images",
            n = refs.len(),
            m = refs.len() + 1
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("not loaded: {absent}"))
            && r.stderr
                .contains(&format!("{absent}: copy failed (attempt 1): "))
            && r.stderr
                .contains("not in the store on the partition under this name"),
        "{}",
        r.stderr
    );
    for name in &refs {
        let want = name.rsplit_once("@sha256:").expect("a digest").1;
        assert_eq!(node.stored_digest(name).as_deref(), Some(want), "{name}");
    }
    note!(
        "{}",
        r.stderr
            .lines()
            .find(|l| l.contains("copy failed"))
            .unwrap_or_default()
    );
}

fn ztp_fixture(name: &str) -> String {
    read(&common::repo_root().join("tests/fixtures/ztp").join(name))
}

#[test]
fn merged_into_a_clusterinstance_the_manifests_ride_in_extra_manifests_refs() {
    let dir = scratch("store-clusterinstance");
    let settings = NodeSet::new("data")
        .expect("label")
        .gitops(Format::Store, None)
        .expect("settings");
    // The upstream example, its one value the CRD refuses quoted (as tests/node_gitops.rs does).
    let example = ztp_fixture("clusterinstance-example-sno.yaml")
        .replace("      common: true\n", "      common: \"true\"\n");
    let file = dir.path().join("example-sno.yaml");
    fs::write(&file, &example).expect("writing");
    prestage::node::gitops::merge_into(&file, &settings).expect("merging");
    let docs = yaml_docs(&read(&file));
    let ci = crd_validator(
        &ztp_fixture("siteconfig.open-cluster-management.io_clusterinstances.yaml"),
        "v1alpha1",
    );
    let instance = docs
        .iter()
        .find(|d| d["kind"] == "ClusterInstance")
        .expect("the ClusterInstance");
    let e = schema_errors(&ci, instance);
    assert!(
        e.is_empty(),
        "the merged ClusterInstance fails its CRD:\n{e}"
    );
    let refs = instance["spec"]["extraManifestsRefs"]
        .as_array()
        .expect("extraManifestsRefs");
    assert!(refs
        .iter()
        .any(|r| r["name"] == prestage::node::manifests::CONFIG_MAP));
    let cm = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"] == prestage::node::manifests::CONFIG_MAP
        })
        .expect("the manifests' ConfigMap");
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(
        cm["metadata"]["namespace"],
        instance["metadata"]["namespace"]
    );
    let data = cm["data"].as_object().expect("data");
    for m in &settings.manifests {
        assert_eq!(
            data[&m.file_name],
            J::String(m.yaml.clone()),
            "{}",
            m.file_name
        );
    }
    assert_eq!(data.len(), settings.manifests.len());

    // A SiteConfig takes manifests from a directory: refused, saying where they are.
    let sc = dir.path().join("siteconfig.yaml");
    fs::write(&sc, ztp_fixture("siteconfig-example-sno.yaml")).expect("writing");
    let e = format!(
        "{:#}",
        prestage::node::gitops::merge_into(&sc, &settings).expect_err("a SiteConfig")
    );
    assert!(
        e.contains("extraManifestPath")
            && e.contains("99-prestage-store-master.yaml")
            && e.contains(".node directory"),
        "{e}"
    );
    assert_eq!(read(&sc), ztp_fixture("siteconfig-example-sno.yaml"));
}

#[test]
fn prestage_node_reads_a_composed_store_image_and_its_loader_copies_from_prestages_xfs() {
    nodeenv::require_root("the node tests");
    let dir = scratch("store-composed");
    let (src, lists, refs) = skopeo_store(dir.path(), &[]);
    // The partition's content as the payload lays it out, written by prestage's own XFS writer.
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("store")).expect("mkdir");
    run(Command::new("cp")
        .arg("-a")
        .args(["overlay", "overlay-layers", "overlay-images"].map(|d| src.join(d)))
        .arg(data.join("store")))
    .success();
    for f in ["ocp-images.txt", "ai-images.txt", "mapping.txt"] {
        fs::copy(lists.join(f), data.join(f)).expect("copy a list");
    }
    let img = dir.path().join("store.raw");
    run(Command::new(common::bin())
        .args([
            "compose",
            "--layout",
            "demo",
            "--owners",
            "keep",
            "--content",
        ])
        .arg(format!("data={}", data.display()))
        .arg("-o")
        .arg(&img))
    .success();

    // prestage node reads the format back from the image and writes the store's node files.
    let r = run(Command::new(common::bin()).arg("node").arg(&img)).success();
    assert!(r.both().contains("store payload"), "{}", r.both());
    let out = prestage::build::beside(&img, ".node");
    let want = node_dir(dir.path());
    for name in [
        "discovery.ign",
        "install.ign",
        "extract-ocp.sh",
        "99-prestage-store-master.yaml",
    ] {
        assert_eq!(read(&out.join(name)), read(&want.join(name)), "{name}");
    }
    assert!(!out.join("extract-ai.sh").exists());

    let node = Node::new(&img, true);
    storage_conf(&node, &[]);
    let r = node.load(&out.join("extract-ocp.sh"));
    assert!(r.status.success(), "{}", r.both());
    assert!(
        nodeenv::summary(&r).contains(&format!(
            "summary: {n} loaded, 0 skipped, 0 failed of {n} images",
            n = refs.len()
        )),
        "{}",
        r.stderr
    );
    for name in &refs {
        let want = name.rsplit_once("@sha256:").expect("a digest").1;
        assert_eq!(node.stored_digest(name).as_deref(), Some(want), "{name}");
    }
    // And the store on prestage's XFS serves every image in place.
    node.fresh_storage();
    assert_served_in_place(&node, &out, &refs);
}

#[test]
fn prestage_build_payload_store_serves_every_image_in_place_and_its_loader_copies_them_out() {
    nodeenv::require_root("the node tests");
    let dir = scratch("store-built");
    // The fixture (OCI, an OCI index given as the agent image, Docker v2s2, a registry with a
    // port) built by `prestage build --payload store`: the store on the partition is prestage's.
    let img = dir.path().join("store.raw");
    nodeenv::build(&img, "store", &dir.path().join("cache"));
    let out = prestage::build::beside(&img, ".node");
    let want = node_dir(dir.path());
    for name in [
        "discovery.ign",
        "install.ign",
        "extract-ocp.sh",
        "98-prestage-store-mount-master.yaml",
        "99-prestage-store-master.yaml",
    ] {
        assert_eq!(read(&out.join(name)), read(&want.join(name)), "{name}");
    }
    let list = String::from_utf8(nodeenv::read_partition_file(&img, "ocp-images.txt"))
        .expect("ocp-images.txt is UTF-8");
    let refs = nodeenv::refs(&list);
    assert!(refs.len() >= 4, "{list}");
    let before = sha256_file(&img);

    // Where the feature gate is off: the fallback loader on the partition copies every image out
    // of the read-only store under its exact by-digest name.
    let node = Node::new(&img, true);
    storage_conf(&node, &[]);
    let loader = dir.path().join("extract-ocp.sh");
    fs::write(
        &loader,
        nodeenv::read_partition_file(&img, "extract-ocp.sh"),
    )
    .expect("writing the partition's loader");
    fs::set_permissions(&loader, fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_loader_copies_all(&node, &loader, &refs, dir.path());

    // With the discovery storage.conf every image resolves in place, and the loader copies
    // nothing.
    node.fresh_storage();
    assert_served_in_place(&node, &out, &refs);
    drop(node);
    assert_eq!(sha256_file(&img), before, "the image changed");
}
