//! `prestage build` and `prestage plan` against Debian's docker-registry serving TLS (a test CA)
//! with htpasswd auth, on 127.0.0.1:PORT (a registry with a port): a synthetic release whose
//! components (OCI and Docker v2s2, by digest only) share a base layer, assisted-installer images
//! by tag, an OCI index, a Docker manifest list and a digest-only Docker image.
//!
//! Proves, with real parts: both payloads load with the real skopeo into a throwaway
//! containers-storage under every exact `repo@sha256:` name (the `shared` payload through its OCI
//! layouts and shared blob directory, the `ztp` payload the way the upstream loader does it);
//! the shared payload holds each blob once; a rerun fetches no blob (the registry's access log)
//! and gives the same image bytes; `plan` predicts the used space within 2%; a layout too small
//! fails before any blob request; a damaged store blob fails the build naming the image and the
//! blob, with nothing at the output path; bmaptool writes the image from its block map and
//! refuses an altered one.

#[path = "registry/mod.rs"]
mod registry;

#[allow(unused_macros)]
mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Storage;
use registry::images::{data, tar_of, Desc, Pusher, COMPONENTS};
use registry::{fails, ok, sha256, Ca, Registry, RegistryOptions};
use serde_json::{json, Value};

const USER: &str = "builder";
const PASS: &str = "b4ild-Secr3t";

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A layer as pushed: its blob bytes and the digest of its uncompressed tar.
struct Layer {
    blob: Vec<u8>,
    diff_id: String,
}

fn layer(docker: bool, files: &[(&str, &[u8])]) -> Layer {
    let raw = tar_of(files);
    let diff_id = sha256(&raw);
    Layer {
        blob: if docker { gz(&raw) } else { raw },
        diff_id,
    }
}

/// Pushes an image manifest with correct diff IDs (skopeo checks them when it stores layers);
/// returns its descriptor.
fn push_image(
    p: &Pusher,
    repo: &str,
    tag: Option<&str>,
    docker: bool,
    arch: &str,
    layers: &[&Layer],
) -> Desc {
    let (mt, cfg_t, layer_t) = if docker {
        (
            registry::images::DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    } else {
        (
            registry::images::OCI_MANIFEST,
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar",
        )
    };
    let ls: Vec<Desc> = layers
        .iter()
        .map(|l| p.blob(repo, &l.blob, layer_t))
        .collect();
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Labels": {"test.repo": repo}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
    });
    let c = p.blob(repo, &serde_json::to_vec(&config).unwrap(), cfg_t);
    let d = |x: &Desc| json!({"mediaType": x.media_type, "digest": x.digest, "size": x.size});
    let m = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": d(&c),
        "layers": ls.iter().map(d).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&m).unwrap();
    let digest = sha256(&bytes);
    p.manifest(repo, tag.unwrap_or(&digest), mt, &bytes)
}

/// A TLS + htpasswd registry (with an access log) and a plain one on the same storage to push
/// through, holding the image set.
struct Setup {
    dir: tempfile::TempDir,
    _plain: Registry,
    secure: Registry,
    host: String,
    cert_dir: PathBuf,
    auth: PathBuf,
    additional: PathBuf,
    /// The additional image whose layer the damaged-store test flips.
    pinned: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ca = Ca::new(&root.join("ca"));
    let (plain, secure) = registry::pair(
        root,
        "secure",
        RegistryOptions {
            tls: Some(&ca),
            htpasswd: Some((USER, PASS)),
            access_log: true,
            ..RegistryOptions::default()
        },
    );
    let host = secure.host();
    let p = Pusher::new(&plain.url());
    let base_bytes = data(1, 512 << 10);
    let base_oci = layer(false, &[("usr/lib/base.bin", &base_bytes)]);
    let base_docker = layer(true, &[("usr/lib/base.bin", &base_bytes)]);
    let mut tags = Vec::new();
    for (i, name) in COMPONENTS.iter().enumerate() {
        let docker = i % 2 == 1;
        let own = layer(
            docker,
            &[(
                &format!("usr/bin/{name}"),
                &data(10 + i as u64, 3000 + 97 * i),
            )],
        );
        let base = if docker { &base_docker } else { &base_oci };
        let m = push_image(&p, "ocp/art-dev", None, docker, "amd64", &[base, &own]);
        tags.push(json!({"name": name, "from": {"kind": "DockerImage", "name": format!("{host}/ocp/art-dev@{}", m.digest)}}));
    }
    let refs = serde_json::to_vec(&json!({
        "kind": "ImageStream", "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": "4.14.3"}, "spec": {"tags": tags},
    }))
    .unwrap();
    let payload = layer(
        true,
        &[
            ("release-manifests/image-references", &refs),
            (
                "release-manifests/release-metadata",
                br#"{"kind":"cincinnati-metadata-v0","version":"4.14.3"}"#,
            ),
        ],
    );
    push_image(
        &p,
        "ocp/release",
        Some("4.14.3-x86_64"),
        true,
        "amd64",
        &[&base_docker, &payload],
    );
    for (i, repo) in [
        "ai/assisted-installer-agent-rhel8",
        "ai/assisted-installer-rhel8",
        "ai/assisted-installer-reporter-rhel8",
    ]
    .iter()
    .enumerate()
    {
        let own = layer(false, &[("bin/tool", &data(100 + i as u64, 5000))]);
        push_image(
            &p,
            repo,
            Some("v1.0.0-89"),
            false,
            "amd64",
            &[&base_oci, &own],
        );
    }
    // Additional images: an OCI index, a Docker list, a Docker image by digest only.
    let mut lists = Vec::new();
    for (docker, repo) in [(false, "tools/multi-oci"), (true, "tools/multi-docker")] {
        let base = if docker { &base_docker } else { &base_oci };
        let amd = layer(docker, &[("bin/x", &data(200, 7000))]);
        let arm = layer(docker, &[("bin/x", &data(201, 7000))]);
        let a = push_image(&p, repo, None, docker, "amd64", &[base, &amd]);
        let b = push_image(&p, repo, None, docker, "arm64", &[base, &arm]);
        p.list_of(repo, "v1", docker, &[("amd64", &a), ("arm64", &b)]);
        lists.push(format!("{host}/{repo}:v1"));
    }
    let own = layer(true, &[("bin/pinned", &data(300, 9000))]);
    let pinned = push_image(
        &p,
        "tools/pinned",
        None,
        true,
        "amd64",
        &[&base_docker, &own],
    );
    let pinned = format!("{host}/tools/pinned@{}", pinned.digest);
    lists.push(pinned.clone());
    let additional = root.join("additional.txt");
    std::fs::write(&additional, lists.join("\n") + "\n").unwrap();
    let auth = root.join("auth.json");
    registry::auth_file(&auth, &host, USER, PASS);
    std::fs::create_dir_all(root.join("home")).unwrap();
    let cert_dir = ca.cert_dir(&root.join("certs"), &host);
    Setup {
        dir,
        _plain: plain,
        secure,
        host,
        cert_dir,
        auth,
        additional,
        pinned,
    }
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `prestage SUBCOMMAND` with the image set, registry access and store.
    fn cmd(&self, sub: &str) -> Command {
        let mut c = registry::prestage(&self.path("home"));
        c.arg(sub)
            .arg("--release")
            .arg(format!("{}/ocp/release:4.14.3-x86_64", self.host))
            .arg("--agent-image")
            .arg(format!(
                "{}/ai/assisted-installer-agent-rhel8:v1.0.0-89",
                self.host
            ))
            .arg("--installer-image")
            .arg(format!(
                "{}/ai/assisted-installer-rhel8:v1.0.0-89",
                self.host
            ))
            .arg("--controller-image")
            .arg(format!(
                "{}/ai/assisted-installer-reporter-rhel8:v1.0.0-89",
                self.host
            ))
            .arg("--additional-images")
            .arg(&self.additional)
            .arg("--release-base")
            .arg(format!("{}/ocp/release", self.host));
        self.access(&mut c);
        c
    }

    fn access(&self, c: &mut Command) {
        c.arg("--authfile")
            .arg(&self.auth)
            .arg("--cert-dir")
            .arg(&self.cert_dir)
            .arg("--store")
            .arg(self.path("store"))
            .env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH);
    }

    fn build(&self, payload: &str, out: &Path) -> Value {
        let stdout = ok(self
            .cmd("build")
            .args(["--layout", "demo", "--payload", payload, "--json", "-o"])
            .arg(out));
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }
}

fn demo_layout() -> PathBuf {
    common::repo_root().join("layouts/demo.toml")
}

/// `SRC` lines of a list file on the partition.
fn list(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn require_root(what: &str) {
    assert!(
        common::is_root(),
        "{what} needs root (a loop mount and containers-storage); CI runs the tests as root"
    );
}

/// Every digest an OCI layout of the shared payload reaches: the manifest (or list), instance
/// manifests present in the blob directory, configs and layers.
fn reachable(blobs: &Path, digest: &str, out: &mut BTreeSet<String>) {
    out.insert(digest.to_string());
    let bytes = std::fs::read(blobs.join(&digest[7..])).unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    if let Some(ms) = v["manifests"].as_array() {
        for m in ms {
            let d = m["digest"].as_str().unwrap();
            if blobs.join(&d[7..]).exists() {
                reachable(blobs, d, out);
            }
        }
    } else {
        out.insert(v["config"]["digest"].as_str().unwrap().to_string());
        for l in v["layers"].as_array().unwrap() {
            out.insert(l["digest"].as_str().unwrap().to_string());
        }
    }
}

#[test]
fn both_payloads_load_under_their_exact_digests() {
    require_root("loading the payloads");
    let s = setup();
    let storage = Storage::new();
    let mut images = BTreeSet::new();
    for payload in ["shared", "ztp"] {
        let out = s.path(&format!("{payload}.raw"));
        let sum = s.build(payload, &out);
        assert_eq!(sum["payload"], payload);
        let part = common::locate(&out, &demo_layout(), "data");
        let m = common::Mount::read_only(&out, part, "xfs");
        let root = m.path();
        let ai = list(root, "ai-images.txt");
        let ocp = list(root, "ocp-images.txt");
        // 1 release + 14 discovery components + 3 assisted; 1 + 17 + controller + 3 additional.
        assert_eq!((ai.len(), ocp.len()), (18, 22), "{ai:?}\n{ocp:?}");
        for f in ["mapping.txt", "imageset.yaml"] {
            assert!(root.join(f).is_file(), "{f} at the partition root");
        }
        let report: Value = serde_json::from_slice(
            &std::fs::read(s.path(&format!("{payload}.raw.report.json"))).unwrap(),
        )
        .unwrap();
        // Release, 17 components, 3 assisted-installer images, 3 additional images.
        assert_eq!(report["images"].as_array().unwrap().len(), 24);
        let all: BTreeSet<String> = ai.iter().chain(&ocp).cloned().collect();
        assert_eq!(all.len(), 24);
        let scratch = common::scratch("ztp");
        if payload == "shared" {
            // Each blob and manifest once: the files are exactly the digests the layouts reach.
            let blobs = root.join("blobs/sha256");
            let files: BTreeSet<String> = std::fs::read_dir(&blobs)
                .unwrap()
                .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
                .collect();
            let mut reached = BTreeSet::new();
            for (stage, refs) in [("ai-images", &ai), ("ocp-images", &ocp)] {
                for r in refs {
                    let name = r.rsplit('/').next().unwrap().replacen(':', "_", 1);
                    let index: Value = serde_json::from_slice(
                        &std::fs::read(root.join(stage).join(&name).join("index.json")).unwrap(),
                    )
                    .unwrap();
                    let d = index["manifests"][0]["digest"].as_str().unwrap();
                    assert_eq!(d, r.rsplit('@').next().unwrap(), "{stage}/{name}");
                    reachable(&blobs, d, &mut reached);
                }
            }
            assert_eq!(files, reached, "blob files vs digests the layouts need");
            for f in &files {
                assert_eq!(&sha256(&std::fs::read(blobs.join(&f[7..])).unwrap()), f);
            }
            let shared_layers = files.len();
            let per_image: usize = sum["plan"]["files"].as_u64().unwrap() as usize;
            say!(
                "shared payload: {shared_layers} blob files for 24 images, each digest once ({per_image} files in all)"
            );
            for r in &all {
                let stage = if ocp.contains(r) {
                    "ocp-images"
                } else {
                    "ai-images"
                };
                let name = r.rsplit('/').next().unwrap().replacen(':', "_", 1);
                ok(storage
                    .skopeo()
                    .current_dir(root)
                    .args(["copy", "-q", "--src-shared-blob-dir", "blobs"])
                    .arg(format!("oci:{stage}/{name}"))
                    .arg(format!("containers-storage:{r}")));
                storage.assert_digest(r);
                images.insert(r.clone());
            }
        } else {
            // The upstream loader: name = basename "${uri/:/_}", untar beside, skopeo copy dir:.
            // A writable copy of the partition root: the archives, and the links beside them.
            for e in std::fs::read_dir(root).unwrap() {
                let e = e.unwrap();
                let n = e.file_name().to_string_lossy().into_owned();
                if e.file_type().unwrap().is_symlink() {
                    let t = std::fs::read_link(e.path()).unwrap();
                    std::os::unix::fs::symlink(t, scratch.path().join(&n)).unwrap();
                } else if n.ends_with(".tgz") {
                    std::fs::copy(e.path(), scratch.path().join(&n)).unwrap();
                }
            }
            // Each archive holds exactly one directory, named as the file.
            for e in std::fs::read_dir(root).unwrap() {
                let e = e.unwrap();
                let n = e.file_name().to_string_lossy().into_owned();
                if !n.ends_with(".tgz") || e.file_type().unwrap().is_symlink() {
                    continue;
                }
                let mut a = tar::Archive::new(flate2::read::GzDecoder::new(
                    std::fs::File::open(e.path()).unwrap(),
                ));
                let tops: BTreeSet<String> = a
                    .entries()
                    .unwrap()
                    .map(|x| {
                        let x = x.unwrap();
                        let p = x.path().unwrap().to_string_lossy().into_owned();
                        p.split('/').next().unwrap().to_string()
                    })
                    .collect();
                assert_eq!(
                    tops,
                    BTreeSet::from([n.trim_end_matches(".tgz").to_string()]),
                    "{n}"
                );
            }
            // For a registry with a port that name has a colon, which GNU tar takes for a
            // remote archive (`user@host:file`) unless told `--force-local`: the upstream
            // script fails there whatever the partition holds; with the flag, the names
            // prestage links resolve.
            for r in &all {
                let script = "name=$(basename \"${1/:/_}\") && local=() && \
                     if [[ $name == *:* ]]; then local=(--force-local); fi && \
                     tar \"${local[@]}\" --use-compress-program=pigz -xf \"${name}.tgz\" && \
                     skopeo copy -q \"dir://${PWD}/${name}\" \"containers-storage:$1\" && \
                     rm -rf \"${name}\"";
                common::require("pigz", "pigz");
                ok(Command::new("bash")
                    .current_dir(scratch.path())
                    .env("CONTAINERS_STORAGE_CONF", &storage.conf)
                    .args(["-c", script, "upstream-loader"])
                    .arg(r));
                storage.assert_digest(r);
            }
            // The registry has a port: those names resolve through the symlinks.
            let r = all.iter().next().unwrap();
            assert!(r.starts_with("127.0.0.1:"), "{r}");
            let alt = r.rsplit('/').next().unwrap();
            assert!(
                root.join(format!("{alt}.tgz")).is_symlink(),
                "{alt}.tgz for the upstream loader"
            );
        }
        say!("{payload}: every image of both lists loads under its exact by-digest name");
    }
    assert_eq!(images.len(), 24);
}

#[test]
fn rerun_fetches_no_blob_and_gives_the_same_bytes() {
    let s = setup();
    let a = s.path("a.raw");
    let first = s.build("shared", &a);
    assert!(first["pull"]["blobs_fetched"].as_u64().unwrap() > 0);
    let before = s.secure.blob_gets().len();
    assert!(before > 0, "the access log counts blob requests");
    let b = s.path("b.raw");
    let second = s.build("shared", &b);
    let after = s.secure.blob_gets().len();
    assert_eq!(
        after - before,
        0,
        "the rerun requested blobs: {:?}",
        &s.secure.blob_gets()[before..]
    );
    assert_eq!(second["pull"]["blobs_fetched"], 0);
    common::assert_same_bytes(&a, &b);
    say!(
        "rerun: 0 blob requests ({before} the first time); same image bytes (SOURCE_DATE_EPOCH, fixed GUIDs)"
    );
    // The same for ztp, whose archives are generated while streaming.
    let c = s.path("c.raw");
    let d = s.path("d.raw");
    s.build("ztp", &c);
    s.build("ztp", &d);
    assert_eq!(s.secure.blob_gets().len(), after);
    common::assert_same_bytes(&c, &d);
}

/// Blocks used in an XFS partition file: dblocks - fdblocks, from its superblock.
fn used_bytes(part_file: &Path) -> u64 {
    let out = common::xfs_db(part_file, &["sb 0", "print dblocks fdblocks blocksize"]);
    let f = |k: &str| common::xfs_db_field(&out, k).parse::<u64>().unwrap();
    (f("dblocks") - f("fdblocks")) * f("blocksize")
}

#[test]
fn plan_predicts_the_space_and_a_small_layout_fails_before_any_blob() {
    let s = setup();
    let stdout = ok(s.cmd("plan").args(["--layout", "demo", "--json"]));
    let plan: Value = serde_json::from_str(&stdout).unwrap();
    let formats = plan["formats"].as_array().unwrap();
    assert_eq!(formats.len(), 2);
    let human = ok(s.cmd("plan").args(["--layout", "demo"]));
    assert!(
        human.contains("shared:") && human.contains("ztp:") && human.contains("fits"),
        "{human}"
    );
    // Planning downloads the release (to read its payload) but no staged image's blob.
    for f in formats {
        let payload = f["format"].as_str().unwrap();
        let predicted = f["fit"]["used"].as_u64().unwrap();
        let out = s.path(&format!("{payload}.raw"));
        s.build(payload, &out);
        let part = common::locate(&out, &demo_layout(), "data");
        let pf = s.path(&format!("{payload}.xfs"));
        common::extract_partition(&out, part, &pf);
        let used = used_bytes(&pf);
        let err = (predicted as f64 - used as f64).abs() / used as f64;
        say!(
            "{payload}: plan predicted {predicted} bytes used, the filesystem uses {used} ({:.2}%)",
            err * 100.0
        );
        assert!(err <= 0.02, "{payload}: {predicted} vs {used}");
    }
    // A partition too small: refused with both numbers before any blob request.
    let layout = common::write_layout(
        s.dir.path(),
        "tiny.toml",
        "[disk]\nsize = \"1GiB\"\n[[partition]]\nlabel = \"data\"\nanchor = \"end\"\nsize = \"300MiB\"\nfilesystem = \"xfs\"\n",
    );
    let big = s.path("big.txt");
    let p = Pusher::new(&s._plain.url());
    let l = layer(false, &[("big.bin", &data(400, 240 << 20))]);
    let d = push_image(&p, "tools/big", Some("v1"), false, "amd64", &[&l]);
    std::fs::write(&big, format!("{}/tools/big@{}\n", s.host, d.digest)).unwrap();
    let before = s.secure.blob_gets().len();
    let out = s.path("tiny.raw");
    let mut c = registry::prestage(&s.path("home"));
    c.args(["build", "--additional-images"])
        .arg(&big)
        .arg("--layout")
        .arg(&layout)
        .arg("-o")
        .arg(&out);
    s.access(&mut c);
    let e = fails(&mut c);
    assert!(
        e.contains("too small")
            && e.contains(" needs ")
            && e.contains(" holds ")
            && e.contains("smallest partition"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert_eq!(
        s.secure.blob_gets().len(),
        before,
        "blobs were requested before the plan refused"
    );
    assert!(!out.exists());
    say!(
        "a 240 MiB image for a 300 MiB partition: refused before any blob request: {}",
        e.trim()
    );
}

#[test]
fn a_damaged_store_blob_fails_the_build_naming_image_and_blob() {
    let s = setup();
    s.build("shared", &s.path("good.raw"));
    // Flip one byte of the pinned image's own layer in the store.
    let store = s.path("store");
    let manifest_digest = s.pinned.rsplit('@').next().unwrap();
    let m: Value = serde_json::from_slice(
        &std::fs::read(store.join("manifests/sha256").join(&manifest_digest[7..])).unwrap(),
    )
    .unwrap();
    let layer = m["layers"][1]["digest"].as_str().unwrap().to_string();
    let blob = store.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 0x5a;
    std::fs::write(&blob, &bytes).unwrap();
    for payload in ["shared", "ztp"] {
        let out = s.path(&format!("bad-{payload}.raw"));
        let e = fails(
            s.cmd("build")
                .args(["--layout", "demo", "--payload", payload, "-o"])
                .arg(&out),
        );
        let last = e.trim().lines().last().unwrap_or_default();
        assert!(
            last.contains(&layer) && last.contains(&s.pinned),
            "{payload}: the error names neither the blob nor the image: {e}"
        );
        assert!(!out.exists(), "{payload}: something at the output path");
        assert_eq!(
            common::temp_leftovers(s.dir.path(), &format!("bad-{payload}.raw")),
            Vec::<String>::new()
        );
        say!("{payload}: {last}");
    }
}

#[test]
fn bmaptool_writes_the_image_and_refuses_an_altered_map() {
    let bmaptool = common::require("bmaptool", "bmap-tools");
    let s = setup();
    let img = s.path("img.raw");
    s.build("shared", &img);
    let bmap = s.path("img.raw.bmap");
    let disk = s.path("disk.img");
    ok(Command::new(&bmaptool)
        .args(["copy", "--bmap"])
        .arg(&bmap)
        .arg(&img)
        .arg(&disk));
    common::assert_same_bytes(&img, &disk);
    let text = std::fs::read_to_string(&bmap).unwrap();
    let mapped: u64 = text
        .split("<MappedBlocksCount>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    say!(
        "bmaptool copy: identical disk; {mapped} of {} blocks mapped",
        std::fs::metadata(&img).unwrap().len() / 4096
    );
    // An altered file checksum, and an altered range checksum, are refused.
    let sum = text
        .split("<BmapFileChecksum>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .unwrap()
        .trim()
        .to_string();
    let flipped = format!(
        "{}{}",
        if sum.starts_with('a') { "b" } else { "a" },
        &sum[1..]
    );
    let bad = s.path("bad.bmap");
    std::fs::write(&bad, text.replace(&sum, &flipped)).unwrap();
    let e = fails(
        Command::new(&bmaptool)
            .args(["copy", "--bmap"])
            .arg(&bad)
            .arg(&img)
            .arg(s.path("disk2.img")),
    );
    assert!(e.to_lowercase().contains("checksum"), "{e}");
    // Damaged image data under a good map: the range checksum catches it.
    let damaged = s.path("damaged.raw");
    std::fs::copy(&img, &damaged).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"\xde\xad", 1024).unwrap();
    let e = fails(
        Command::new(&bmaptool)
            .args(["copy", "--bmap"])
            .arg(&bmap)
            .arg(&damaged)
            .arg(s.path("disk3.img")),
    );
    assert!(e.to_lowercase().contains("checksum"), "{e}");
}
