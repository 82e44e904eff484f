//! `prestage build --payload store` read by the real engines (as root: a loop mount and
//! containers-storage): images with every hard case (an OCI index, a Docker manifest list, a
//! Docker v2s2 image; whiteouts of a file and of a directory, an opaque directory, a file
//! capability, a `user.*` attribute, a hard link whose header differs from its target's, device
//! nodes, a FIFO, set-ID and sticky bits, sub-second times, a long path, parents without entries,
//! an uncompressed layer) are pushed to a TLS + htpasswd docker-registry and built into an
//! image, whose data partition is mounted read-only and configured as the
//! `additionalimagestores` of a throwaway storage.
//!
//! Proves: `xfs_repair -n` finds the partition clean; every image of both stages resolves by its exact by-digest name (and its mapping
//! tag) with its manifest digest and image ID (skopeo and podman); `podman create` + `podman
//! mount` of each image give the same tree (types, modes, owners, times, device numbers, hard
//! links, contents, every attribute) as the same image pulled by skopeo into an ordinary store
//! (`podman image mount` is not used: podman 4.3 refuses it for an image of a read-only store,
//! "layer not known"); `podman run --rm` runs the image's busybox; `skopeo copy
//! containers-storage:REF oci:DIR` gives back layers with the original diffIDs; the store
//! skopeo writes from the same images agrees with prestage's field by field (layer and image
//! IDs, parents, digests, sizes, compression, owners, names, big data, creation times of the
//! images) and so do the decoded tar-splits; the read-only store's metadata is unchanged after
//! all of it; a second build gives the same image bytes.

#[path = "registry/mod.rs"]
mod registry;

#[allow(unused_macros)]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use registry::images::{Desc, Pusher, DOCKER_MANIFEST, OCI_MANIFEST};
use registry::{ok, sha256, Ca, RegistryOptions};
use serde_json::{json, Value};

const USER: &str = "builder";
const PASS: &str = "st0re-Secr3t";
const T0: u64 = 1_700_000_000;

/// One tar member of a test layer.
struct M {
    name: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    data: Vec<u8>,
    link: Option<String>,
    dev: Option<(u32, u32)>,
    pax: Vec<(String, Vec<u8>)>,
}

fn m(name: &str, kind: tar::EntryType, mode: u32) -> M {
    M {
        name: name.to_string(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: T0,
        data: Vec::new(),
        link: None,
        dev: None,
        pax: Vec::new(),
    }
}

fn dir(name: &str, mode: u32) -> M {
    m(name, tar::EntryType::Directory, mode)
}

fn file(name: &str, mode: u32, data: &[u8]) -> M {
    M {
        data: data.to_vec(),
        ..m(name, tar::EntryType::Regular, mode)
    }
}

fn tar_of(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in members {
        if !e.pax.is_empty() {
            b.append_pax_extensions(e.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        if let Some(l) = &e.link {
            h.set_link_name(l).unwrap();
        }
        if let Some((a, b)) = e.dev {
            h.set_device_major(a).unwrap();
            h.set_device_minor(b).unwrap();
        }
        b.append_data(&mut h, &e.name, e.data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The three layers: L1 (the base, everything but whiteouts), L2 (whiteouts and an opaque
/// directory over L1), L3 (a small layer, pushed uncompressed).
fn layers() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use tar::EntryType as T;
    let busybox = std::fs::read(common::require("/bin/busybox", "busybox-static"))
        .expect("reading /bin/busybox");
    // vfs_cap_data revision 2, effective, permitted = CAP_NET_BIND_SERVICE (bit 10).
    let mut cap = 0x0200_0001u32.to_le_bytes().to_vec();
    cap.extend_from_slice(&(1u32 << 10).to_le_bytes());
    cap.extend_from_slice(&[0; 12]);
    let long_dir = format!("opt/{}/{}", "d".repeat(60), "e".repeat(50));
    let l1 = vec![
        dir("./", 0o755),
        dir("bin/", 0o755),
        file("bin/busybox", 0o755, &busybox),
        M {
            pax: vec![("SCHILY.xattr.security.capability".into(), cap)],
            ..file("bin/tool", 0o755, b"#!/bin/busybox sh\necho tool\n")
        },
        // A hard link whose header's mode and time differ from its target's.
        M {
            link: Some("bin/tool".into()),
            mtime: T0 + 500,
            ..m("bin/tool-hl", T::Link, 0o750)
        },
        M {
            link: Some("busybox".into()),
            mtime: T0 + 100,
            ..m("bin/sh", T::Symlink, 0o777)
        },
        M {
            link: Some("/bin/busybox".into()),
            ..m("bin/ls", T::Symlink, 0o777)
        },
        dir("dev/", 0o755),
        M {
            dev: Some((1, 3)),
            ..m("dev/null", T::Char, 0o666)
        },
        M {
            dev: Some((7, 0)),
            gid: 6,
            ..m("dev/loop0", T::Block, 0o660)
        },
        m("dev/fifo", T::Fifo, 0o600),
        M {
            mtime: T0 + 1,
            ..dir("etc/", 0o755)
        },
        M {
            pax: vec![("mtime".into(), b"1700000000.123456789".to_vec())],
            ..file("etc/hostname", 0o644, b"prestage\n")
        },
        dir("home/", 0o755),
        M {
            uid: 1000,
            gid: 1000,
            ..dir("home/user/", 0o700)
        },
        M {
            uid: 1000,
            gid: 1000,
            pax: vec![("SCHILY.xattr.user.comment".into(), b"hello".to_vec())],
            ..file("home/user/file", 0o640, b"user file\n")
        },
        dir("opt/", 0o755),
        dir("opt/data/", 0o755),
        file("opt/data/a", 0o644, b"a\n"),
        M {
            uid: 2,
            gid: 3,
            ..dir("opt/data/sub/", 0o750)
        },
        file("opt/data/sub/c", 0o644, b"c\n"),
        dir(&format!("{long_dir}/"), 0o755),
        file(&format!("{long_dir}/long-file-name"), 0o600, b"long\n"),
        file("srv/implicit/file", 0o644, b"no parent entries\n"),
        dir("tmp/", 0o1777),
        dir("usr/", 0o755),
        dir("usr/bin/", 0o755),
        file("usr/bin/suid", 0o4755, b"suid\n"),
        file("empty-file", 0o444, b""),
    ];
    let late = |e: M| M {
        mtime: T0 + 2000,
        ..e
    };
    let l2 = vec![
        late(dir("etc/", 0o755)),
        late(file("etc/.wh.hostname", 0o644, b"")),
        late(file("etc/new", 0o644, b"new in L2\n")),
        late(file(".wh.srv", 0o644, b"")),
        late(dir("opt/", 0o755)),
        late(dir("opt/data/", 0o711)),
        late(file("opt/data/.wh..wh..opq", 0o644, b"")),
        late(file(
            "opt/data/fresh",
            0o644,
            b"only file left in the opaque dir\n",
        )),
    ];
    let l3 = vec![dir("b/", 0o755), file("b/only", 0o644, b"image B\n")];
    (tar_of(&l1), tar_of(&l2), tar_of(&l3))
}

/// Whether `path` is a directory without a member of its own (the engines give it the time
/// they unpack it).
fn implicit(path: &str) -> bool {
    [
        "srv".to_string(),
        "srv/implicit".to_string(),
        format!("opt/{}", "d".repeat(60)),
    ]
    .iter()
    .any(|p| p == path)
}

/// Pushes an image manifest; `layers`: (uncompressed tar, blob, media type).
fn push_image(
    p: &Pusher,
    repo: &str,
    docker: bool,
    arch: &str,
    created: &str,
    cmd: &[&str],
    layers: &[(&[u8], &[u8], &str)],
) -> (Desc, Vec<u8>) {
    let (mt, cfg_t) = if docker {
        (
            DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
        )
    } else {
        (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
    };
    let ls: Vec<Desc> = layers.iter().map(|(_, b, t)| p.blob(repo, b, t)).collect();
    let config = json!({
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(t, _, _)| sha256(t)).collect::<Vec<_>>()},
    });
    let c = p.blob(repo, &serde_json::to_vec_pretty(&config).unwrap(), cfg_t);
    let d = |x: &Desc| json!({"mediaType": x.media_type, "digest": x.digest, "size": x.size});
    let m = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": d(&c),
        "layers": ls.iter().map(d).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&m).unwrap();
    let digest = sha256(&bytes);
    (p.manifest(repo, &digest, mt, &bytes), bytes)
}

/// A throwaway containers-storage (overlay), optionally with a read-only additional store;
/// its containers are removed on drop.
struct Storage {
    conf: PathBuf,
    root: PathBuf,
}

impl Storage {
    fn new(dir: &Path, name: &str, additional: Option<&Path>) -> Storage {
        let root = dir.join(name);
        std::fs::create_dir_all(&root).unwrap();
        let mut conf = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            root.display()
        );
        if let Some(a) = additional {
            conf += &format!(
                "[storage.options]\nadditionalimagestores = [\"{}\"]\n",
                a.display()
            );
        }
        let path = root.join("storage.conf");
        std::fs::write(&path, conf).unwrap();
        Storage { conf: path, root }
    }

    fn cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.env("CONTAINERS_STORAGE_CONF", &self.conf)
            .env("TMPDIR", &self.root)
            .env("HOME", &self.root);
        if tool == "podman" {
            // Its own libpod state, apart from any other podman user of this machine.
            c.arg("--tmpdir").arg(self.root.join("libpod"));
            c.args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]);
        }
        c
    }

    fn podman(&self, args: &[&str]) -> String {
        common::run(self.cmd("podman").args(args)).success().stdout
    }

    fn skopeo(&self, args: &[&str]) -> String {
        common::run(self.cmd("skopeo").args(args)).success().stdout
    }

    /// The sha256 of the manifest skopeo reads for `name`.
    fn manifest_digest(&self, name: &str) -> String {
        let out = self
            .cmd("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("containers-storage:{name}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        sha256(&out.stdout)
    }

    /// The image's tree as a container of it sees it (podman create + podman mount).
    fn tree(&self, name: &str) -> BTreeMap<String, String> {
        let id = self.podman(&["create", "--network", "none", name, "/bin/busybox", "true"]);
        let id = id.trim();
        let mnt = self.podman(&["mount", id]);
        let t = describe_tree(Path::new(mnt.trim()));
        self.podman(&["umount", id]);
        self.podman(&["rm", id]);
        t
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        let _ = self.cmd("podman").args(["rm", "-af"]).output();
        let _ = self.cmd("podman").args(["umount", "-a"]).output();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.root.join("graph/overlay"))
            .output();
    }
}

/// Every entry below `root`: type, mode, owner, modification time (directories without a
/// member of their own excepted), device number, link count, content hash, every extended
/// attribute, and which hard-link group it belongs to.
fn describe_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!(
                "symlink->{}",
                std::fs::read_link(e.path()).unwrap().display()
            )
        } else if ft.is_file() {
            let mut bytes = Vec::new();
            std::fs::File::open(e.path())
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            format!("file {} {}", bytes.len(), sha256(&bytes))
        } else if ft.is_char_device() {
            format!("char {}", md.rdev())
        } else if ft.is_block_device() {
            format!("block {}", md.rdev())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            "other".to_string()
        };
        let mtime = if ft.is_dir() && implicit(&rel) {
            "-".to_string()
        } else {
            format!("{}.{:09}", md.mtime(), md.mtime_nsec())
        };
        let mut xattrs = Vec::new();
        if let Ok(n) = rustix::fs::llistxattr_query(e.path()) {
            let mut names = vec![0u8; n];
            let n = rustix::fs::llistxattr(e.path(), &mut names[..]).unwrap_or(0);
            for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
                let name = String::from_utf8_lossy(name).to_string();
                let mut v = vec![0u8; 65536];
                let k = rustix::fs::lgetxattr(e.path(), name.as_str(), &mut v[..]).unwrap_or(0);
                xattrs.push(format!("{name}={}", hex::encode(&v[..k])));
            }
        }
        let link = if !ft.is_dir() && md.nlink() > 1 {
            let first = inodes
                .entry((md.dev(), md.ino()))
                .or_insert_with(|| rel.clone());
            format!(" links={} first={first}", md.nlink())
        } else {
            String::new()
        };
        out.insert(
            rel.clone(),
            format!(
                "{kind} mode={:o} owner={}:{} mtime={mtime} xattrs=[{}]{link}",
                md.mode() & 0o7777,
                md.uid(),
                md.gid(),
                xattrs.join(",")
            ),
        );
    }
    out
}

/// The decoded tar-split of a layer, without the empty segment older tar-split versions
/// append at its end.
fn tar_split(store: &Path, id: &str) -> Vec<String> {
    let gz = std::fs::read(store.join(format!("overlay-layers/{id}.tar-split.gz"))).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    while lines
        .last()
        .is_some_and(|l| l.starts_with("{\"type\":2,\"payload\":\"\","))
    {
        lines.pop();
    }
    lines
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Records of a store's JSON array by `id`, without the fields a pull sets from its clock or
/// at random (and c/image's metadata, which differs between its versions).
fn records(path: &Path, drop: &[&str]) -> BTreeMap<String, Value> {
    let v = json_file(path);
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.as_object().unwrap().clone();
            for k in drop {
                r.remove(*k);
            }
            // Order-free fields: compare as sets.
            for k in ["names", "big-data-names"] {
                if let Some(Value::Array(a)) = r.get_mut(k) {
                    a.sort_by_key(|x| x.to_string());
                }
            }
            (r["id"].as_str().unwrap().to_string(), Value::Object(r))
        })
        .collect()
}

#[test]
fn engines_use_the_store_in_place() {
    assert!(
        common::is_root(),
        "the store engine test needs root (a loop mount, containers-storage with overlay): run \
         the tests as root, as `cargo xtask ci` does"
    );
    for (tool, package) in [
        ("podman", "podman"),
        ("runc", "runc"),
        ("skopeo", "skopeo"),
        ("mount", "mount"),
    ] {
        common::require(tool, package);
    }
    let dir = common::scratch("store-engine");
    let root = dir.path();
    let ca = Ca::new(&root.join("ca"));
    let (plain, secure) = registry::pair(
        root,
        "secure",
        RegistryOptions {
            tls: Some(&ca),
            htpasswd: Some((USER, PASS)),
            ..RegistryOptions::default()
        },
    );
    let host = secure.host();
    let p = Pusher::new(&plain.url());
    let (l1, l2, l3) = layers();
    let (l1gz, l2gz) = (gz(&l1), gz(&l2));
    const GZ_OCI: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    // A: an OCI index (amd64, arm64), layers L1 + L2 (gzip).
    let mut instances = Vec::new();
    for arch in ["amd64", "arm64"] {
        let (d, _) = push_image(
            &p,
            "store/a",
            false,
            arch,
            "2024-01-02T03:04:05.123456789Z",
            &["/bin/busybox", "echo", "hello from A"],
            &[(&l1, &l1gz, GZ_OCI), (&l2, &l2gz, GZ_OCI)],
        );
        instances.push((arch, d));
    }
    let (a_index, _) = p.list_of(
        "store/a",
        "v1",
        false,
        &[("amd64", &instances[0].1), ("arm64", &instances[1].1)],
    );
    // B: Docker v2s2, L1 (gzip, shared with A) + L3 uncompressed.
    let (b, _) = push_image(
        &p,
        "store/b",
        true,
        "amd64",
        "2023-05-06T07:08:09Z",
        &["/bin/busybox", "cat", "/b/only"],
        &[
            (
                &l1,
                &l1gz,
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
            (&l3, &l3, "application/vnd.docker.image.rootfs.diff.tar"),
        ],
    );
    // C: a Docker manifest list whose instance is B (the same image by two digests).
    {
        let src = Pusher::new(&plain.url());
        for (bytes, t) in [
            (&l1gz, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
            (&l3, "application/vnd.docker.image.rootfs.diff.tar"),
        ] {
            src.blob("store/c", bytes, t);
        }
    }
    let b_bytes = fetch_manifest(&plain.url(), "store/b", &b.digest);
    let b_cfg = serde_json::from_slice::<Value>(&b_bytes).unwrap()["config"].clone();
    let cfg_bytes = fetch_blob(&plain.url(), "store/b", b_cfg["digest"].as_str().unwrap());
    p.blob("store/c", &cfg_bytes, b_cfg["mediaType"].as_str().unwrap());
    p.manifest("store/c", &b.digest, DOCKER_MANIFEST, &b_bytes);
    let c_list = p.list_of("store/c", "v1", true, &[("amd64", &b)]).0;

    let a_ref = format!("{host}/store/a@{}", a_index.digest);
    let b_ref = format!("{host}/store/b@{}", b.digest);
    let c_ref = format!("{host}/store/c@{}", c_list.digest);
    let additional = root.join("additional.txt");
    std::fs::write(&additional, format!("{c_ref}\n")).unwrap();
    let auth = root.join("auth.json");
    registry::auth_file(&auth, &host, USER, PASS);
    let certs = ca.cert_dir(&root.join("certs"), &host);
    let build = |payload: &str, name: &str| -> (PathBuf, Value) {
        let out = root.join(name);
        let mut c = registry::prestage(&root.join("home"));
        c.args([
            "build",
            "--agent-image",
            &a_ref,
            "--controller-image",
            &b_ref,
        ])
        .arg("--additional-images")
        .arg(&additional)
        .args(["--layout", "demo", "--payload", payload, "--json", "-o"])
        .arg(&out)
        .arg("--authfile")
        .arg(&auth)
        .arg("--cert-dir")
        .arg(&certs)
        .arg("--store")
        .arg(root.join("blobs"))
        .env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH);
        let v: Value = serde_json::from_str(&ok(&mut c)).unwrap();
        (out, v)
    };
    let (image, summary) = build("store", "store.raw");
    let (_, shared) = build("shared", "shared.raw");
    // Reproducible: the same bytes again (SOURCE_DATE_EPOCH, link names from the layer IDs).
    let (again, _) = build("store", "again.raw");
    common::assert_same_bytes(&image, &again);
    std::fs::remove_file(&again).unwrap();
    note!(
        "payload bytes: store {} (layers unpacked), shared {}",
        summary["plan"]["payload_bytes"],
        shared["plan"]["payload_bytes"]
    );
    assert!(
        summary["plan"]["payload_bytes"].as_u64() > shared["plan"]["payload_bytes"].as_u64(),
        "the store holds the layers unpacked"
    );
    // plan gives the store's size beside the others once the layers are here.
    let mut c = registry::prestage(&root.join("home"));
    c.args([
        "plan",
        "--agent-image",
        &a_ref,
        "--controller-image",
        &b_ref,
    ])
    .arg("--additional-images")
    .arg(&additional)
    .args(["--layout", "demo", "--json", "--authfile"])
    .arg(&auth)
    .arg("--cert-dir")
    .arg(&certs)
    .arg("--store")
    .arg(root.join("blobs"));
    let plan: Value = serde_json::from_str(&ok(&mut c)).unwrap();
    let planned: Vec<&str> = plan["formats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["format"].as_str().unwrap())
        .collect();
    assert_eq!(planned, ["shared", "ztp", "store"], "{plan}");
    assert_eq!(
        plan["formats"][2]["payload_bytes"],
        summary["plan"]["payload_bytes"]
    );
    // The store's report compares it with the other payloads of the same images.
    let report = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(root.join(format!("{name}.report.json"))).unwrap())
            .unwrap()
    };
    let compared = |r: &Value| -> Vec<(String, Value)> {
        r["compared"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["format"].as_str().unwrap().to_string(),
                    f["payload_bytes"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        compared(&report("store.raw")),
        [
            (
                "shared".to_string(),
                shared["plan"]["payload_bytes"].clone()
            ),
            (
                "ztp".to_string(),
                plan["formats"][1]["payload_bytes"].clone()
            )
        ]
    );
    assert_eq!(
        compared(&report("shared.raw")),
        [(
            "ztp".to_string(),
            plan["formats"][1]["payload_bytes"].clone()
        )]
    );

    // The partition, read-only, as the additional store of an empty storage.
    let part = common::locate(
        &image,
        &common::repo_root().join("layouts/demo.toml"),
        "data",
    );
    // The filesystem is clean for xfs_repair (character devices, attributes, hard links).
    let part_file = root.join("data.xfs");
    common::extract_partition(&image, part, &part_file);
    common::assert_xfs_repair_clean(&part_file);
    std::fs::remove_file(&part_file).unwrap();
    let mnt = common::Mount::read_only(&image, part, "xfs");
    let store = mnt.path().join("store");
    let mapping = std::fs::read_to_string(mnt.path().join("mapping.txt")).unwrap();
    let tag_of = |src: &str| -> String {
        mapping
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{src}=")))
            .unwrap_or_else(|| panic!("{src} not in mapping.txt:\n{mapping}"))
            .to_string()
    };
    let meta_before = (
        std::fs::read(store.join("overlay-layers/layers.json")).unwrap(),
        std::fs::read(store.join("overlay-images/images.json")).unwrap(),
    );
    let ro = Storage::new(root, "ro", Some(&store));
    let reference = Storage::new(root, "reference", None);

    // The same images pulled by skopeo into an ordinary store, names in the order prestage
    // gives them (first manifest stored = the record's digest).
    let src_creds = format!("{USER}:{PASS}");
    let src_certs = certs.join(&host);
    let prestage_images = json_file(&store.join("overlay-images/images.json"));
    for img in prestage_images.as_array().unwrap() {
        for name in img["names-history"].as_array().unwrap().iter().rev() {
            let name = name.as_str().unwrap();
            // Tags name the source the mapping gives them for.
            let src = if name.contains('@') {
                name.to_string()
            } else {
                mapping
                    .lines()
                    .find_map(|l| l.split_once('=').filter(|(_, d)| *d == name))
                    .map(|(s, _)| s.to_string())
                    .unwrap_or_else(|| panic!("{name}: not in mapping.txt"))
            };
            reference.skopeo(&[
                "copy",
                "-q",
                "--src-creds",
                &src_creds,
                "--src-cert-dir",
                src_certs.to_str().unwrap(),
                &format!("docker://{src}"),
                &format!("containers-storage:{name}"),
            ]);
        }
    }

    // Every image by its exact by-digest name and its tag: manifest digest and image ID.
    let a_amd = &instances[0].1.digest;
    let cases = [
        (a_ref.clone(), a_index.digest.clone(), a_amd.clone(), true),
        (b_ref.clone(), b.digest.clone(), b.digest.clone(), true),
        (
            c_ref.clone(),
            c_list.digest.clone(),
            b.digest.clone(),
            false,
        ),
    ];
    for (name, top, instance, discovery) in &cases {
        let mut names = vec![name.clone()];
        if *discovery {
            names.push(tag_of(name));
        }
        for n in &names {
            let got = ro.manifest_digest(n);
            let want = if n.contains('@') { top } else { instance };
            assert_eq!(&got, want, "{n}: manifest read from the read-only store");
            let id_ro = ro.podman(&["image", "inspect", "--format", "{{.Id}}", n]);
            let id_ref = reference.podman(&["image", "inspect", "--format", "{{.Id}}", n]);
            assert_eq!(id_ro.trim(), id_ref.trim(), "{n}: image ID");
        }
        note!("{name}: resolves in the read-only store ({top})");
    }
    let listed = ro.podman(&["images", "--format", "{{.ReadOnly}}"]);
    assert!(
        listed.lines().all(|l| l == "true") && !listed.is_empty(),
        "{listed}"
    );

    // The same trees as the ordinary store's.
    for name in [&a_ref, &b_ref, &c_ref] {
        let got = ro.tree(name);
        let want = reference.tree(name);
        assert!(got.len() > 5, "{name}: {got:?}");
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "{name}: {k}");
        }
        assert_eq!(got, want, "{name}");
        note!("{name}: a container sees the same {} entries", got.len());
    }
    let a_tree = ro.tree(&a_ref);
    assert!(!a_tree.contains_key("srv") && !a_tree.contains_key("etc/hostname"));
    assert_eq!(
        a_tree
            .keys()
            .filter(|k| k.starts_with("opt/data/"))
            .collect::<Vec<_>>(),
        ["opt/data/fresh"]
    );
    assert!(
        a_tree["bin/tool"].contains("security.capability=")
            && a_tree["bin/tool"].contains("mode=750")
    );
    assert!(a_tree["bin/tool-hl"].contains("first=bin/tool"));

    // podman run, from the read-only store.
    for (name, want) in [(&a_ref, "hello from A"), (&b_ref, "image B")] {
        let out = ro.podman(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            name,
        ]);
        assert_eq!(out.trim(), want, "{name}");
    }
    note!("podman run --rm runs both images from the read-only store");

    // Copied out again: the original diffIDs.
    for (i, name) in [&a_ref, &b_ref].into_iter().enumerate() {
        let out = root.join(format!("out-{i}"));
        ro.skopeo(&[
            "copy",
            "-q",
            &format!("containers-storage:{name}"),
            &format!("oci:{}", out.display()),
        ]);
        let index = json_file(&out.join("index.json"));
        let blob = |d: &str| {
            std::fs::read(
                out.join("blobs/sha256")
                    .join(d.trim_start_matches("sha256:")),
            )
            .unwrap()
        };
        let m: Value =
            serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap()))
                .unwrap();
        let cfg: Value =
            serde_json::from_slice(&blob(m["config"]["digest"].as_str().unwrap())).unwrap();
        let got: Vec<String> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let b = blob(l["digest"].as_str().unwrap());
                let mut raw = Vec::new();
                if b.starts_with(&[0x1f, 0x8b]) {
                    flate2::read::GzDecoder::new(&b[..])
                        .read_to_end(&mut raw)
                        .unwrap();
                } else {
                    raw = b;
                }
                sha256(&raw)
            })
            .collect();
        let want: Vec<String> = cfg["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "{name}: layers copied out of the store");
        note!("{name}: copied out with its original diffIDs");
    }

    // prestage's store and skopeo's agree, field by field.
    let ref_store = reference.root.join("graph");
    let ours = records(&store.join("overlay-layers/layers.json"), &["created"]);
    let theirs = records(&ref_store.join("overlay-layers/layers.json"), &["created"]);
    assert_eq!(ours, theirs, "layers.json");
    for id in ours.keys() {
        assert_eq!(
            tar_split(&store, id),
            tar_split(&ref_store, id),
            "tar-split of {id}"
        );
    }
    let ignore = ["metadata", "names-history"];
    let ours_i = records(&store.join("overlay-images/images.json"), &ignore);
    let mut theirs_i = records(&ref_store.join("overlay-images/images.json"), &ignore);
    // Debian's containers/image also stores an empty signatures item.
    for r in theirs_i.values_mut() {
        let r = r.as_object_mut().unwrap();
        for k in ["big-data-names"] {
            if let Some(Value::Array(a)) = r.get_mut(k) {
                a.retain(|x| !x.as_str().unwrap_or("").starts_with("signature-"));
            }
        }
        for k in ["big-data-sizes", "big-data-digests"] {
            if let Some(Value::Object(o)) = r.get_mut(k) {
                o.retain(|x, _| !x.starts_with("signature-"));
            }
        }
    }
    assert_eq!(ours_i, theirs_i, "images.json");
    for (id, r) in &ours_i {
        for k in r["big-data-names"].as_array().unwrap() {
            let name = prestage::payload::store::big_data_name(k.as_str().unwrap());
            let path = format!("overlay-images/{id}/{name}");
            assert_eq!(
                std::fs::read(store.join(&path)).unwrap(),
                std::fs::read(ref_store.join(&path)).unwrap(),
                "{path}"
            );
        }
    }
    note!(
        "skopeo's store and prestage's agree: {} layers, {} images, their tar-splits and big data",
        ours.len(),
        ours_i.len()
    );
    let ids: BTreeSet<&String> = ours.keys().collect();
    assert_eq!(ids.len(), 3, "L1, L1+L2, L1+L3 and no more: {ids:?}");

    // Nothing was written to the read-only store.
    drop(ro);
    drop(reference);
    let meta_after = (
        std::fs::read(store.join("overlay-layers/layers.json")).unwrap(),
        std::fs::read(store.join("overlay-images/images.json")).unwrap(),
    );
    assert!(meta_before == meta_after, "the read-only store changed");
}

fn fetch_manifest(base: &str, repo: &str, reference: &str) -> Vec<u8> {
    let r = ureq::get(&format!("{base}/v2/{repo}/manifests/{reference}"))
        .set("Accept", &format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}"))
        .call()
        .unwrap();
    let mut v = Vec::new();
    r.into_reader().read_to_end(&mut v).unwrap();
    v
}

fn fetch_blob(base: &str, repo: &str, digest: &str) -> Vec<u8> {
    let r = ureq::get(&format!("{base}/v2/{repo}/blobs/{digest}"))
        .call()
        .unwrap();
    let mut v = Vec::new();
    r.into_reader().read_to_end(&mut v).unwrap();
    v
}
