//! The generated loaders on a node, as root: images of both payloads built from the bundled
//! fixture, the data partition a loop device linked as `/dev/disk/by-partlabel/data` in a
//! private mount namespace, the loader installed by the real Ignition binary from the generated
//! override and run as its unit runs it (`ExecStart=`, no arguments, from `/`, a service's
//! PATH), into a throwaway containers-storage (vfs). Every image must then resolve under its
//! exact reference with its digest (`skopeo inspect --raw containers-storage:REF | sha256sum`).
//!
//! The fixture's discovery list holds a manifest list (an OCI index, given as the agent image)
//! and an image from a registry with a port (`registry.example.com:5000/...`).

mod common;
mod nodeenv;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::scratch;
use nodeenv::{
    built, copy_image, read_partition_file, refs, summary, try_read_partition_file, Node,
};
use prestage::build::beside;
use prestage::payload::image::image_name;

/// Installs the loader of `stage` (`discovery` | `install`) from `node_dir`'s override with the
/// real Ignition into a root under the node's scratch directory; returns the loader's path there,
/// as its unit's `ExecStart=` names it.
fn install_loader(node: &Node, node_dir: &Path, stage: &str) -> PathBuf {
    let root = node.dir.path().join(format!("root-{stage}"));
    let work = node.dir.path().join(format!("ignition-{stage}"));
    fs::create_dir_all(&work).expect("creating the Ignition work directory");
    nodeenv::ignition_apply(&node_dir.join(format!("{stage}.ign")), &root, &work);
    let unit = match stage {
        "discovery" => "precache-images.service",
        _ => "precache-ocp-images.service",
    };
    let text = fs::read_to_string(root.join("etc/systemd/system").join(unit))
        .unwrap_or_else(|e| panic!("Ignition wrote no {unit}: {e}"));
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("{unit} has no ExecStart=:\n{text}"));
    assert!(
        exec.starts_with('/') && !exec.contains(char::is_whitespace),
        "{unit}: ExecStart={exec} is not a bare absolute path"
    );
    root.join(exec.trim_start_matches('/'))
}

/// The list and the partition path of a stage's loader.
fn stage_files(payload: &str, stage: &str) -> (&'static str, String) {
    let (list, short, tree) = match stage {
        "discovery" => ("ai-images.txt", "ai", "ai-images"),
        _ => ("ocp-images.txt", "ocp", "ocp-images"),
    };
    let loader = match payload {
        "shared" => format!("{tree}/extract-{short}.sh"),
        _ => format!("extract-{short}.sh"),
    };
    (list, loader)
}

/// `sha256:HEX` of a digest reference.
fn digest_of(r: &str) -> &str {
    r.rsplit_once("@sha256:")
        .map(|(_, h)| h)
        .unwrap_or_else(|| panic!("{r} is not pinned by digest"))
}

/// Every reference of `list` resolves with its digest; in the discovery stage its
/// mapping.txt tag names the same image.
fn assert_all_stored(node: &Node, image: &Path, list: &[String], stage: &str, except: &[&str]) {
    let tags = nodeenv::mapping_tags(&String::from_utf8_lossy(&read_partition_file(
        image,
        "mapping.txt",
    )));
    for r in list.iter().filter(|r| !except.contains(&r.as_str())) {
        assert_eq!(
            node.stored_digest(r).as_deref(),
            Some(digest_of(r)),
            "containers-storage:{r} does not resolve with its digest"
        );
        if stage == "discovery" {
            let tag = tags
                .get(r)
                .unwrap_or_else(|| panic!("mapping.txt has no tag for {r}"));
            let (repo, _) = r.rsplit_once('@').expect("a digest reference");
            assert_eq!(
                node.stored_config(&format!("{repo}:{tag}")),
                node.stored_config(r),
                "the discovery stage did not store {repo}:{tag} as the same image as {r}"
            );
        }
    }
}

fn loads_every_image_then_skips_all(payload: &str) {
    let b = built();
    let image = b.image(payload);
    let node_dir = beside(image, ".node");
    // A read-only device: `ztp` then mounts read-only and extracts into /var/tmp.
    let node = Node::new(image, true);
    for stage in ["discovery", "install"] {
        node.fresh_storage();
        let (list_name, on_partition) = stage_files(payload, stage);
        let list = refs(&String::from_utf8_lossy(&read_partition_file(
            image, list_name,
        )));
        let n = list.len();
        assert!(n >= 18, "{list_name} holds only {n} images");
        let loader = install_loader(&node, &node_dir, stage);
        assert_eq!(
            fs::read(&loader).expect("reading the installed loader"),
            read_partition_file(image, &on_partition),
            "the loader Ignition installs differs from {on_partition} on the partition"
        );

        let r = node.load(&loader);
        assert!(r.status.success(), "{} failed:\n{}", r.cmd, r.stderr);
        let s = summary(&r);
        assert!(
            s.contains(&format!(
                "summary: {n} loaded, 0 skipped, 0 failed of {n} images, 0 list lines refused"
            )),
            "{s}"
        );
        assert_all_stored(&node, image, &list, stage, &[]);
        let port = list
            .iter()
            .find(|r| r.starts_with("registry.example.com:5000/"))
            .expect("the fixture has an image from a registry with a port");
        assert!(node.stored_digest(port).is_some(), "{port} was not loaded");
        if payload == "ztp" {
            let scratch = r
                .stderr
                .lines()
                .find_map(|l| l.split_once("extracting into ").map(|(_, p)| p.to_string()))
                .expect("the ztp loader names its scratch directory");
            assert!(
                scratch.starts_with("/var/tmp/.prestage-scratch."),
                "a read-only partition must make the ztp loader extract into /var/tmp: {scratch}"
            );
            assert!(!Path::new(&scratch).exists(), "{scratch} was left behind");
        }

        let again = node.load(&loader);
        assert!(
            again.status.success(),
            "second run failed:\n{}",
            again.stderr
        );
        let s = summary(&again);
        assert!(
            s.contains(&format!(
                "summary: 0 loaded, {n} skipped, 0 failed of {n} images"
            )),
            "a second run must skip every image: {s}"
        );
    }
    let left: Vec<_> = fs::read_dir(node.dir.path().join("tmp"))
        .expect("listing the loaders' temp directory")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "the loader left {left:?} in TMPDIR");
}

#[test]
fn shared_loaders_load_every_image_then_skip_all() {
    loads_every_image_then_skips_all("shared");
}

#[test]
fn ztp_loaders_load_every_image_then_skip_all() {
    loads_every_image_then_skips_all("ztp");
}

/// The layers of the image manifest `digest` on a shared partition, or of every manifest of a
/// list that the partition holds (the staged platforms').
fn layers(image: &Path, digest: &str) -> Vec<String> {
    let Some(bytes) = try_read_partition_file(image, &format!("blobs/sha256/{digest}")) else {
        return Vec::new();
    };
    let m: serde_json::Value = serde_json::from_slice(&bytes).expect("a manifest");
    if let Some(children) = m["manifests"].as_array() {
        return children
            .iter()
            .flat_map(|c| {
                let d = c["digest"].as_str().expect("digest");
                layers(image, d.trim_start_matches("sha256:"))
            })
            .collect();
    }
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            l["digest"]
                .as_str()
                .expect("layer digest")
                .trim_start_matches("sha256:")
                .to_string()
        })
        .collect()
}

fn corrupted_blob_fails_only_its_image(payload: &str) {
    let b = built();
    let dir = scratch("node-corrupt");
    let bad = dir.path().join("bad.raw");
    copy_image(b.image(payload), &bad);
    let list = refs(&String::from_utf8_lossy(&read_partition_file(
        &bad,
        "ai-images.txt",
    )));
    let n = list.len();
    let target = list
        .iter()
        .find(|r| r.contains("/assisted-installer@"))
        .expect("the discovery list has the assisted installer")
        .clone();
    // The file whose byte flips: a layer only this image has (shared), its own .tgz (ztp).
    let path = match payload {
        "shared" => {
            let mut users: BTreeMap<String, usize> = BTreeMap::new();
            for r in &list {
                for l in layers(&bad, digest_of(r)) {
                    *users.entry(l).or_default() += 1;
                }
            }
            let layer = layers(&bad, digest_of(&target))
                .into_iter()
                .find(|l| users[l] == 1)
                .expect("the assisted installer has a layer of its own in the fixture");
            format!("blobs/sha256/{layer}")
        }
        _ => format!("{}.tgz", image_name(&target)),
    };
    let bytes = read_partition_file(&bad, &path);
    let at = bytes.len() as u64 / 2;
    nodeenv::patch_partition_file(&bad, &path, at, &[bytes[at as usize] ^ 0x5a]);
    note!("flipped byte {at} of {path} in {}", bad.display());

    let node = Node::new(&bad, true);
    let loader = install_loader(&node, &beside(b.image(payload), ".node"), "discovery");
    let r = node.load(&loader);
    assert_eq!(
        r.status.code(),
        Some(1),
        "one failed image must make the loader exit 1:\n{}",
        r.stderr
    );
    let s = summary(&r);
    assert!(
        s.contains(&format!(
            "summary: {} loaded, 0 skipped, 1 failed of {n} images",
            n - 1
        )),
        "{s}"
    );
    assert!(
        r.stderr.contains(&format!("not loaded: {target}\n")),
        "the loader does not name the failed image:\n{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches(&format!("{target}: ")).count(),
        3,
        "the failed image itself must be tried three times:\n{}",
        r.stderr
    );
    assert!(
        node.stored_digest(&target).is_none(),
        "{target} is stored though its {path} is damaged"
    );
    assert_all_stored(&node, &bad, &list, "discovery", &[target.as_str()]);
}

#[test]
fn shared_corrupted_blob_fails_only_its_image() {
    corrupted_blob_fails_only_its_image("shared");
}

#[test]
fn ztp_corrupted_tgz_fails_only_its_image() {
    corrupted_blob_fails_only_its_image("ztp");
}

#[test]
fn a_list_line_is_never_run() {
    let b = built();
    let dir = scratch("node-list");
    let bad = dir.path().join("bad.raw");
    copy_image(&b.shared, &bad);
    let text = String::from_utf8_lossy(&read_partition_file(&bad, "ai-images.txt")).to_string();
    let first = text.lines().next().expect("a first line").to_string();
    // A short path: the line must fit in place of the first reference.
    let pwned = PathBuf::from(format!("/tmp/pwned-{}", std::process::id()));
    let _ = fs::remove_file(&pwned);
    let evil = format!("$(touch {0}) `touch {0}`;touch {0}", pwned.display());
    assert!(
        evil.len() <= first.len(),
        "scratch path too long for the test"
    );
    let line = format!("{evil:<width$}", width = first.len());
    nodeenv::patch_partition_file(&bad, "ai-images.txt", 0, line.as_bytes());
    let n = refs(&text).len() - 1;

    let node = Node::new(&bad, true);
    let loader = install_loader(&node, &beside(&b.shared, ".node"), "discovery");
    let r = node.load(&loader);
    let ran = pwned.exists();
    let _ = fs::remove_file(&pwned);
    assert!(!ran, "a list line was run by the shell");
    assert_eq!(
        r.status.code(),
        Some(1),
        "a refused line must make the loader exit 1"
    );
    assert!(
        r.stderr
            .contains("ai-images.txt:1: not an image reference, refused: "),
        "the refused line is not reported:\n{}",
        r.stderr
    );
    let s = summary(&r);
    assert!(
        s.contains(&format!(
            "summary: {n} loaded, 0 skipped, 0 failed of {n} images, 1 list lines refused"
        )),
        "{s}"
    );
}

#[test]
fn one_cpu_still_completes() {
    let b = built();
    let node = Node::new(&b.shared, true);
    node.shim("nproc", "echo 1");
    let loader = install_loader(&node, &beside(&b.shared, ".node"), "install");
    let n = refs(&String::from_utf8_lossy(&read_partition_file(
        &b.shared,
        "ocp-images.txt",
    )))
    .len();
    let r = node.load(&loader);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{n} images to load from /dev/disk/by-partlabel/data (shared payload), 1 at a time"
        )),
        "nproc=1 must give one job:\n{}",
        r.stderr
    );
    assert!(
        summary(&r).contains(&format!(
            "summary: {n} loaded, 0 skipped, 0 failed of {n} images"
        )),
        "{}",
        summary(&r)
    );
}

#[test]
fn a_failed_umount_leaves_the_partition_in_place() {
    let b = built();
    let dir = scratch("node-umount");
    let copy = dir.path().join("copy.raw");
    copy_image(&b.ztp, &copy);
    // A writable partition: the ztp loader mounts it read-write and extracts on it.
    let node = Node::new(&copy, false);
    node.shim("umount", "echo 'umount: target is busy.' >&2; exit 32");
    let loader = install_loader(&node, &beside(&b.ztp, ".node"), "install");
    let listing = dir.path().join("after.txt");
    let r = node.sh(&format!(
        "{loader}\nrc=$?\n\
         mp=$(findmnt -rn -o TARGET -S {dev} | head -n 1)\n\
         [ -n \"$mp\" ] || {{ echo 'the partition is not mounted any more' >&2; exit 90; }}\n\
         (cd \"$mp\" && find . -mindepth 1 | LC_ALL=C sort) > {listing}\n\
         /usr/bin/umount \"$mp\" || exit 91\n\
         exit $rc",
        loader = loader.display(),
        dev = node.lp.dev,
        listing = listing.display()
    ));
    assert!(r.status.success(), "{}:\n{}", r.cmd, r.stderr);
    assert!(
        r.stderr.contains("could not unmount") && r.stderr.contains("left mounted"),
        "the loader does not report the failed umount:\n{}",
        r.stderr
    );
    let on_partition = format!(
        "extracting into {}/prestage-data.",
        node.dir.path().join("tmp").display()
    );
    assert!(
        r.stderr.contains(&on_partition),
        "a writable partition with room must hold the ztp loader's scratch directory:\n{}",
        r.stderr
    );
    let after = fs::read_to_string(&listing).expect("reading the listing");
    for f in [
        "./ai-images.txt",
        "./ocp-images.txt",
        "./mapping.txt",
        "./.prestage/manifest.json",
    ] {
        assert!(
            after.lines().any(|l| l == f),
            "{f} is gone after the run:\n{after}"
        );
    }
    drop(node);
    // Every file still there with its bytes, and nothing added (the scratch directory is gone).
    common::verify_ok(&copy);
}

#[test]
fn a_failed_copy_quotes_skopeos_error_not_its_first_lines() {
    let b = built();
    let node = Node::new(&b.shared, true);
    let skopeo = common::require("skopeo", "skopeo");
    // skopeo as it fails: informational lines first (far more than 300 bytes), the error last;
    // everything else goes to the real skopeo.
    node.shim(
        "skopeo",
        &format!(
            "if [ \"$1\" = copy ]; then\n\
             for i in 1 2 3 4 5 6; do\n\
             printf 'time=\"2026-01-01T00:00:00Z\" level=info msg=\"Getting image source signatures, part %s of a long informational line that fills the first bytes\"\\n' \"$i\" >&2\n\
             done\n\
             echo 'Error: writing blob: adding layer with blob \"sha256:0123\": no space left on device' >&2\n\
             exit 1\n\
             fi\n\
             exec {} \"$@\"",
            skopeo.display()
        ),
    );
    let loader = install_loader(&node, &beside(&b.shared, ".node"), "install");
    let r = node.sh(&format!(
        "exec timeout 900 {} --retries 1",
        loader.display()
    ));
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    let failed: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains(": copy failed (attempt 1): "))
        .collect();
    assert!(
        !failed.is_empty(),
        "no copy failure reported:\n{}",
        r.stderr
    );
    for l in failed {
        let quoted = l
            .split_once(": copy failed (attempt 1): ")
            .expect("split")
            .1;
        assert!(
            quoted.ends_with("no space left on device"),
            "the journal line does not quote skopeo's error: {l}"
        );
        assert!(
            quoted.len() <= 403,
            "not bounded ({} bytes): {l}",
            quoted.len()
        );
        assert!(!quoted.contains('\n'));
    }
    note!(
        "{}",
        r.stderr
            .lines()
            .find(|l| l.contains("copy failed"))
            .unwrap_or_default()
    );
}
