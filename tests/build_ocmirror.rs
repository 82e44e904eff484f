//! `prestage build`, `plan`, `images` and `pull` from oc-mirror v2 output (`--from-oc-mirror`),
//! written by `tests/ocmirror/` the way oc-mirror writes it (cache tree, working-dir, archive
//! tars split by size): a release found through the archive's graph data, its components by
//! digest, assisted-installer images by tag, and additional images (a Docker v2s2 image by
//! digest, an OCI image by tag, an OCI index, a Docker manifest list).
//!
//! Proves: a build from a split archive set runs with no network at all (a network namespace of
//! its own, the registry gone) and gives, byte for byte, the image a build of the same image set
//! from Debian's docker-registry gives; every image of both payloads loads with the real skopeo
//! under its exact by-digest name; an incremental archive without its predecessor fails before
//! anything is written, naming the blobs, the images and what to pass, and builds with it; a
//! damaged member and a truncated tar each give one line naming archive file, member and image,
//! with nothing at the output path; `images` and `pull` work from an archive, the cache form
//! (oc-mirror's cache directory plus its working-dir) builds, and a located blob is the byte
//! range of its member.

#[path = "registry/mod.rs"]
mod registry;

#[allow(unused_macros)]
mod common;

mod ocmirror;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ocmirror::{ImageSet, Workspace};
use prestage::fetch::archive::source::ArchiveSource;
use prestage::fetch::archive::ArchiveSet;
use prestage::fetch::digest::Digest;
use prestage::fetch::manifest::Descriptor;
use prestage::fetch::reference::ImageRef;
use prestage::fetch::source::Source;
use serde_json::Value;

/// The host the images of the registry-less tests name.
const HOST: &str = "registry.example:5000";
/// Segment size: small enough that the fixture spans several tars.
const SEGMENT: u64 = 400 << 10;

fn demo_layout() -> PathBuf {
    common::repo_root().join("layouts/demo.toml")
}

/// A mirror-to-disk run of `set`: the workspace and the directory of its tars alone, as carried
/// across the air gap.
fn mirrored(root: &Path, set: &ImageSet, carried: &str) -> (Workspace, PathBuf) {
    let mut ws = Workspace::new(root);
    ws.mirror(set);
    let tars = ws.archive(set, SEGMENT);
    assert!(tars.len() >= 2, "the fixture spans {} tar(s)", tars.len());
    let dir = root.join(carried);
    std::fs::create_dir_all(&dir).unwrap();
    for t in &tars {
        std::fs::copy(t, dir.join(t.file_name().unwrap())).unwrap();
    }
    (ws, dir)
}

/// `prestage ARGS` with the test's isolated environment, a fixed SOURCE_DATE_EPOCH.
fn prestage(home: &Path) -> Command {
    let mut c = registry::prestage(home);
    c.env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH);
    c
}

/// The same command run in a network namespace of its own (no interface but a down loopback):
/// any attempt to reach a registry or update service fails.
fn offline(cmd: &Command) -> Command {
    let mut c = Command::new(common::require("unshare", "util-linux"));
    c.arg("--net").arg("--").arg(cmd.get_program());
    c.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(std::process::Stdio::null());
    c
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

#[test]
fn offline_build_from_a_split_archive_equals_the_registry_build_and_loads() {
    assert!(
        common::is_root(),
        "this test needs root (a network namespace, loop mounts, containers-storage); CI runs the \
         tests as root"
    );
    let dir = common::scratch("ocmirror-build");
    let root = dir.path();
    let home = root.join("home");
    let reg = registry::Registry::start(&root.join("registry"), Default::default());
    let host = reg.host();
    let set = ImageSet::new(&host);
    set.push(&reg.url());
    let (_ws, carried) = mirrored(root, &set, "carried");
    let ai = write(&root.join("ai.txt"), &set.assisted_list());

    // From the registry: the same ImageSetConfiguration, the graph answer saved to a file.
    let isc = write(&root.join("isc.yaml"), &set.isc());
    let graph = root.join("graph.json");
    std::fs::write(&graph, &set.graph).unwrap();
    let from_registry = root.join("registry.raw");
    let out = registry::ok(
        prestage(&home)
            .arg("build")
            .arg("--config")
            .arg(&isc)
            .arg("--update-graph")
            .arg(&graph)
            .arg("--assisted-images")
            .arg(&ai)
            .args(["--insecure-registry", &host, "--layout", "demo", "--json"])
            .arg("--store")
            .arg(root.join("store-registry"))
            .arg("-o")
            .arg(&from_registry),
    );
    let s: Value = serde_json::from_str(&out).unwrap();
    // Release, 17 components, 3 assisted-installer images, 4 additional images.
    assert_eq!(s["images"], 25, "{s}");
    drop(reg);

    // From the archive's tars alone, with no network: its own ImageSetConfiguration and graph.
    let storage = common::Storage::new();
    for (payload, name) in [("shared", "archive.raw"), ("ztp", "archive-ztp.raw")] {
        let img = root.join(name);
        let mut c = prestage(&home);
        c.arg("build")
            .arg("--from-oc-mirror")
            .arg(&carried)
            .arg("--assisted-images")
            .arg(&ai)
            .args(["--layout", "demo", "--payload", payload, "--json"])
            .arg("--store")
            .arg(root.join(format!("store-{payload}")))
            .arg("-o")
            .arg(&img);
        let out = registry::ok(&mut offline(&c));
        let s: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(s["images"], 25, "{s}");
        // Read in place: nothing of the archive is copied into the store first.
        assert!(
            s["pull"]["blobs_in_place"].as_u64().unwrap() > 0,
            "{}",
            s["pull"]
        );
        assert_eq!(s["pull"]["blobs_fetched"], 0, "{}", s["pull"]);
        let stored = std::fs::read_dir(root.join(format!("store-{payload}/blobs/sha256")))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(stored, 0, "{payload}: blobs were copied into the store");
        if payload == "shared" {
            common::assert_same_bytes(&from_registry, &img);
            say!("shared: the archive build, offline, is byte for byte the registry build");
        }
        let part = common::locate(&img, &demo_layout(), "data");
        let m = common::Mount::read_only(&img, part, "xfs");
        let loaded = storage.load_payload(m.path(), payload);
        assert_eq!(loaded.len(), 25);
        for i in set.images() {
            assert!(loaded.contains(&i.pinned()), "{} not loaded", i.pinned());
        }
        say!("{payload}: all 25 images load under their exact by-digest names");
        common::verify_ok(&img);
    }
}

/// The last line of stderr of a failed `prestage -q` run: exactly one line.
fn one_line(r: &common::Run, dir: &Path, needles: &[&str]) -> String {
    let line = common::assert_one_line_error(r, dir, needles);
    say!("  {line}");
    line
}

fn build_cmd(home: &Path, store: &Path, out: &Path, archives: &[&Path]) -> Command {
    let mut c = prestage(home);
    c.arg("build");
    for a in archives {
        c.arg("--from-oc-mirror").arg(a);
    }
    c.args(["--layout", "demo", "-q", "--store"])
        .arg(store)
        .arg("-o")
        .arg(out);
    c
}

fn blob_count(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn an_incremental_archive_needs_its_predecessor() {
    let dir = common::scratch("ocmirror-incremental");
    let root = dir.path();
    let home = root.join("home");
    let mut set = ImageSet::new(HOST);
    let mut ws = Workspace::new(root);
    ws.mirror(&set);
    let day1 = root.join("day1");
    std::fs::create_dir_all(&day1).unwrap();
    for t in ws.archive(&set, SEGMENT) {
        std::fs::copy(&t, day1.join(t.file_name().unwrap())).unwrap();
    }
    // The next run mirrors one image more; its archive leaves out what day 1 carried.
    let new = set.add_image("tools/new", 900);
    ws.mirror(&set);
    let day2 = root.join("day2");
    std::fs::create_dir_all(&day2).unwrap();
    for t in ws.archive(&set, SEGMENT) {
        std::fs::copy(&t, day2.join(t.file_name().unwrap())).unwrap();
    }

    say!("day 2 alone: refused before anything is written");
    let store = root.join("store");
    let out = root.join("site.raw");
    for sub in ["build", "plan"] {
        let mut c = build_cmd(&home, &store, &out, &[&day2]);
        if sub == "plan" {
            c = prestage(&home);
            c.args(["plan", "--from-oc-mirror"])
                .arg(&day2)
                .args(["--layout", "demo", "-q", "--store"])
                .arg(&store);
        }
        let r = common::run(&mut c);
        let line = one_line(
            &r,
            root,
            &[
                "in none of the oc-mirror archives given",
                &set.release.man.digest,
                &set.release.pinned(),
                "the archive is incremental",
                ".history-2025-06-01T10:00:01Z",
                "pass the earlier archives",
            ],
        );
        assert!(!line.contains(&new.man.digest), "{line}");
        common::assert_no_output(root, "site.raw");
        assert_eq!(
            blob_count(&store),
            0,
            "blobs were copied before the refusal"
        );
    }

    say!("day 2's tag links to what day 1 carried: the link is named");
    let bytag = &set.additional[1];
    let r = common::run(
        prestage(&home)
            .args(["pull", "-q", "--from-oc-mirror"])
            .arg(&day2)
            .arg("--store")
            .arg(&store)
            .arg(&bytag.source),
    );
    one_line(
        &r,
        root,
        &[
            &format!(
                "needed by 1 image ({} (tag link <dir>/day2/mirror_0000",
                bytag.source
            ),
            ": member docker/registry/v2/repositories/tools/bytag/_manifests/tags/v1/current/link",
            &bytag.man.digest,
            "pass the earlier archives",
        ],
    );
    assert_eq!(blob_count(&store), 0);

    say!("with day 1 given too, it builds");
    let r = common::run(&mut build_cmd(&home, &store, &out, &[&day1, &day2])).success();
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    let report: Value =
        serde_json::from_slice(&std::fs::read(root.join("site.raw.report.json")).unwrap()).unwrap();
    let sources: Vec<&str> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources.len(), 26);
    assert!(sources.contains(&new.pinned().as_str()), "{sources:?}");
    common::verify_ok(&out);
}

/// The member of `archives`' tars holding `digest`'s blob: (tar, data offset, size, name).
fn member_of(archives: &Path, digest: &str) -> (PathBuf, u64, u64, String) {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let want = format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
    let mut tars: Vec<PathBuf> = std::fs::read_dir(archives)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    tars.sort();
    for t in tars {
        let idx = prestage::fetch::archive::tarindex::index(&t).unwrap();
        if let Some(m) = idx.members.iter().find(|m| m.name == want) {
            return (t, m.offset, m.size, m.name.clone());
        }
    }
    panic!("no member {want}");
}

#[test]
fn a_damaged_member_and_a_truncated_tar_give_one_line() {
    let dir = common::scratch("ocmirror-damaged");
    let root = dir.path();
    let home = root.join("home");
    let set = ImageSet::new(HOST);
    let (_ws, carried) = mirrored(root, &set, "carried");
    let out = root.join("site.raw");

    say!("a member whose bytes do not match its digest");
    let bytag = &set.additional[1];
    assert!(bytag.source.ends_with("tools/bytag:v1"));
    let layer = bytag.man.blobs.last().unwrap();
    let (tar, offset, size, member) = member_of(&carried, layer);
    let original = std::fs::read(&tar).unwrap();
    let mut bytes = original.clone();
    bytes[(offset + size / 2) as usize] ^= 0x40;
    std::fs::write(&tar, &bytes).unwrap();
    let store = root.join("store-a");
    let r = common::run(&mut build_cmd(&home, &store, &out, &[&carried]));
    let tar_name = tar.file_name().unwrap().to_string_lossy().into_owned();
    one_line(
        &r,
        root,
        &[
            &tar_name,
            &member,
            &bytag.pinned(),
            layer,
            "hashes to",
            "damaged",
        ],
    );
    common::assert_no_output(root, "site.raw");
    assert!(
        !store.join("blobs/sha256").join(&layer[7..]).exists(),
        "a damaged blob was stored"
    );
    std::fs::write(&tar, &original).unwrap();

    say!("a tar cut inside a member");
    // The last member of a tar that is not the last one (a blob): nothing else is lost with it.
    let mut tars: Vec<PathBuf> = std::fs::read_dir(&carried)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    tars.sort();
    let (tar, m) = tars[..tars.len() - 1]
        .iter()
        .find_map(|t| {
            let idx = prestage::fetch::archive::tarindex::index(t).unwrap();
            let m = idx.members.last().unwrap().clone();
            m.name
                .starts_with("docker/registry/v2/blobs/")
                .then(|| (t.clone(), m))
        })
        .expect("a tar ending with a blob member");
    let digest = format!("sha256:{}", m.name.rsplit('/').nth(1).unwrap());
    let needing: Vec<String> = set
        .images()
        .iter()
        .filter(|i| i.man.all_digests().contains(&digest))
        .map(|i| i.pinned())
        .collect();
    assert!(!needing.is_empty(), "{digest}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tar)
        .unwrap()
        .set_len(m.offset + m.size / 2)
        .unwrap();
    let store = root.join("store-b");
    let r = common::run(&mut build_cmd(&home, &store, &out, &[&carried]));
    let tar_name = tar.file_name().unwrap().to_string_lossy().into_owned();
    let line = one_line(
        &r,
        root,
        &[&tar_name, &m.name, "truncated", "copy it again"],
    );
    assert!(
        needing.iter().any(|i| line.contains(i.as_str())),
        "names none of {needing:?}: {line}"
    );
    common::assert_no_output(root, "site.raw");
}

#[test]
fn images_pull_locate_and_the_cache_form() {
    let dir = common::scratch("ocmirror-images");
    let root = dir.path();
    let home = root.join("home");
    let set = ImageSet::new(HOST);
    let (ws, carried) = mirrored(root, &set, "carried");

    say!("images: lists by source reference, from the archive's own configuration");
    let lists = root.join("lists");
    registry::ok(
        prestage(&home)
            .args(["images", "-q", "--from-oc-mirror"])
            .arg(&carried)
            .arg("--store")
            .arg(root.join("store"))
            .arg("-o")
            .arg(&lists),
    );
    let ocp = std::fs::read_to_string(lists.join("ocp-images.txt")).unwrap();
    for i in set.images() {
        assert!(
            ocp.contains(&i.pinned()),
            "{} not listed:\n{ocp}",
            i.pinned()
        );
    }
    let yaml = std::fs::read_to_string(lists.join("imageset.yaml")).unwrap();
    assert!(
        yaml.contains("minVersion: 4.14.3") && yaml.contains("maxVersion: 4.14.3"),
        "{yaml}"
    );

    say!("a PATH that is not there, or holds no archive: one line");
    for (name, needle) in [
        ("absent", "No such file or directory"),
        ("home", "no oc-mirror archive there (no mirror_NNNNNN.tar"),
    ] {
        let r = common::run(
            prestage(&home)
                .args(["images", "-q", "--from-oc-mirror"])
                .arg(root.join(name))
                .arg("-o")
                .arg(root.join("x")),
        );
        one_line(
            &r,
            root,
            &[&format!("--from-oc-mirror <dir>/{name}"), needle],
        );
    }

    say!("pull: the store filled from the archive");
    let store = root.join("store-pull");
    let out = registry::ok(
        prestage(&home)
            .args(["pull", "--json", "--from-oc-mirror"])
            .arg(&carried)
            .arg("--list")
            .arg(lists.join("ocp-images.txt"))
            .arg("--store")
            .arg(&store),
    );
    assert_eq!(registry::summary(&out)["images"], 25, "{out}");
    assert!(registry::check_store_hashes(&store) > 0);
    let v = registry::ok(
        prestage(&home)
            .args(["store", "verify", "--store"])
            .arg(&store),
    );
    assert!(v.contains("OK: 25 references"), "{v}");
    let e = registry::fails(
        prestage(&home)
            .args(["pull", "--from-oc-mirror"])
            .arg(&carried)
            .arg("--store")
            .arg(&store)
            .arg(format!("{HOST}/tools/absent:v1")),
    );
    assert!(
        e.contains("no tag v1 of tools/absent in the oc-mirror archives given"),
        "{e}"
    );

    say!("locate: a blob is the byte range of its member");
    let set_ = Arc::new(ArchiveSet::open(std::slice::from_ref(&carried)).unwrap());
    let img = &set.additional[1];
    let src = ArchiveSource::new(set_, ImageRef::parse(&img.pinned()).unwrap());
    for d in &img.man.blobs {
        let bytes = &set.content.blobs[d];
        let desc = Descriptor {
            media_type: String::new(),
            digest: Digest::parse(d).unwrap(),
            size: bytes.len() as u64,
            platform: None,
        };
        let at = src.locate(&desc).expect("located");
        let f = std::fs::File::open(&at.path).unwrap();
        let mut buf = vec![0u8; bytes.len()];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, at.offset).unwrap();
        assert_eq!(&buf, bytes);
        assert!(
            at.what.contains("mirror_0000")
                && at
                    .what
                    .contains(": member docker/registry/v2/blobs/sha256/"),
            "{}",
            at.what
        );
        let wrong = Descriptor {
            size: desc.size + 1,
            ..desc
        };
        assert!(src.locate(&wrong).is_none());
    }

    say!("the cache form: oc-mirror's cache directory and its working-dir");
    let isc = write(&root.join("isc.yaml"), &set.isc());
    let ai = write(&root.join("ai.txt"), &set.assisted_list());
    let img = root.join("cache.raw");
    let r = common::run(
        prestage(&home)
            .arg("build")
            .arg("--from-oc-mirror")
            .arg(&ws.cache)
            .arg("--from-oc-mirror")
            .arg(ws.working_dir())
            .arg("--config")
            .arg(&isc)
            .arg("--assisted-images")
            .arg(&ai)
            .args(["--layout", "demo", "-q", "--store"])
            .arg(root.join("store-cache"))
            .arg("-o")
            .arg(&img),
    )
    .success();
    assert!(r.stderr.is_empty(), "{}", r.stderr);
    common::verify_ok(&img);
}
