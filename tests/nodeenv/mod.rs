//! Helpers of the node tests: images built from the bundled fixture with `prestage build`, the
//! real Ignition binary applying an override into a throwaway root, and (as root) the data
//! partition seen the way a node sees it: a loop device of the partition, linked as
//! `/dev/disk/by-partlabel/data` in a private mount namespace over an overlay of `/dev`, with a
//! throwaway containers-storage.
//!
//! Loop devices are detached by [`Loop`]'s `Drop`, so a failing test leaves none behind.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use prestage::compose::diskio::Window;
use prestage::compose::gpt;
use prestage::compose::xfs::ondisk::Xfs;

use crate::common::{self, require, run, Run};

/// The discovery image of the test builds: the fixture's OCI index (a multi-arch image), given as
/// the agent image, so the discovery stage loads a manifest list and stores its tag too.
pub const LIST_AGENT: &str = "quay.io/prestage-demo/troubleshoot@sha256:cdef056ba6c22c4030b59b5545cd0682df4dd7bd99d94602d7412f7d2c61f5c2";

/// `prestage build` of the bundled fixture (offline, from its OCI layout) into `out`.
pub fn build_cmd(out: &Path, payload: &str, store: &Path, extra: &[&str]) -> Command {
    let root = common::repo_root();
    let fx = root.join("fixtures/demo-images");
    let dir = out.parent().expect("output directory");
    let auth = dir.join("auth.json");
    let conf = dir.join("registries.conf");
    fs::write(&auth, "{\"auths\":{}}\n").expect("writing auth.json");
    fs::write(&conf, "").expect("writing registries.conf");
    let mut c = Command::new(common::bin());
    c.arg("build")
        .arg("--release")
        .arg(format!("oci:{}:4.14.3", fx.join("oci").display()))
        .arg("--assisted-images")
        .arg(fx.join("assisted-images.txt"))
        .arg("--additional-images")
        .arg(fx.join("additional-images.txt"))
        .arg("--oci-mirror")
        .arg(fx.join("oci"))
        .args(["--agent-image", LIST_AGENT, "--payload", payload, "-q"])
        .arg("--store")
        .arg(store)
        .arg("--authfile")
        .arg(&auth)
        .arg("--registries-conf")
        .arg(&conf)
        .arg("-o")
        .arg(out)
        .args(extra)
        .env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH);
    c
}

/// Builds the fixture with the demo layout; fails the test unless it succeeds.
pub fn build(out: &Path, payload: &str, store: &Path) {
    run(&mut build_cmd(out, payload, store, &["--layout", "demo"])).success();
    assert!(out.is_file(), "{} was not written", out.display());
}

/// Images of both payloads built once per test binary, shared read-only by its tests.
pub struct Built {
    /// `shared.raw` (with `shared.raw.node/`).
    pub shared: PathBuf,
    /// `ztp.raw` (with `ztp.raw.node/`).
    pub ztp: PathBuf,
}

impl Built {
    /// The image of `payload`.
    pub fn image(&self, payload: &str) -> &Path {
        match payload {
            "shared" => &self.shared,
            "ztp" => &self.ztp,
            _ => panic!("no payload {payload}"),
        }
    }
}

static BUILT: OnceLock<Built> = OnceLock::new();

/// The shared images (built on first use, under cargo's test temp dir).
pub fn built() -> &'static Built {
    BUILT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "node-images-{}",
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
                .unwrap_or_default()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating the image directory");
        let store = dir.join("store");
        let b = Built {
            shared: dir.join("shared.raw"),
            ztp: dir.join("ztp.raw"),
        };
        build(&b.shared, "shared", &store);
        build(&b.ztp, "ztp", &store);
        b
    })
}

/// A sparse copy of `image` (and nothing beside it) at `dest`.
pub fn copy_image(image: &Path, dest: &Path) {
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(image)
        .arg(dest))
    .success();
}

/// The byte range of partition `label` of a raw image (read with prestage's GPT reader).
pub fn partition(image: &Path, label: &str) -> (u64, u64) {
    let f = File::open(image).unwrap_or_else(|e| panic!("opening {}: {e}", image.display()));
    let (_, parts) = gpt::read(&f).unwrap_or_else(|e| panic!("{}: {e:#}", image.display()));
    let p = parts
        .iter()
        .find(|p| p.label == label)
        .unwrap_or_else(|| panic!("{}: no partition `{label}`", image.display()));
    (p.offset, p.size)
}

/// Reads the file `path` of the data partition of a raw image through its XFS metadata.
pub fn read_partition_file(image: &Path, path: &str) -> Vec<u8> {
    try_read_partition_file(image, path).unwrap_or_else(|| panic!("{path}: not on the partition"))
}

/// The same, `None` when the partition has no such file.
pub fn try_read_partition_file(image: &Path, path: &str) -> Option<Vec<u8>> {
    let (off, size) = partition(image, "data");
    let f = File::open(image).expect("opening the image");
    let win = Window::new(&f, off, size);
    let fs = Xfs::open(&win).expect("reading the XFS superblock");
    let ino = fs
        .walk()
        .expect("walking the partition")
        .into_iter()
        .find(|w| w.path == path.as_bytes())?
        .ino;
    let mut out = Vec::new();
    fs.read_file(ino, &mut |c| {
        out.extend_from_slice(c);
        Ok(())
    })
    .expect("reading the file");
    Some(out)
}

/// Overwrites bytes of the file `path` of the data partition in the image file itself, where its
/// XFS extents put them: what a bad disk or a damaged copy does to a node's partition.
pub fn patch_partition_file(image: &Path, path: &str, offset: u64, bytes: &[u8]) {
    let (off, size) = partition(image, "data");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .expect("opening the image for writing");
    let win = Window::new(&f, off, size);
    let fs = Xfs::open(&win).expect("reading the XFS superblock");
    let ino = fs
        .walk()
        .expect("walking the partition")
        .into_iter()
        .find(|w| w.path == path.as_bytes())
        .unwrap_or_else(|| panic!("{path}: not on the partition"))
        .ino;
    let info = fs.inode(ino).expect("reading the inode");
    assert!(
        offset + bytes.len() as u64 <= info.size,
        "{path}: patch past its end"
    );
    let bs = u64::from(fs.sb().block_size);
    for (i, b) in bytes.iter().enumerate() {
        let at = offset + i as u64;
        let blk = at / bs;
        let x = info
            .extents
            .iter()
            .find(|x| x.file_block <= blk && blk < x.file_block + x.blocks)
            .unwrap_or_else(|| panic!("{path}: no extent holds byte {at}"));
        let disk = off + fs.sb().fsb_to_byte(x.start_fsb) + (blk - x.file_block) * bs + at % bs;
        f.write_all_at(&[*b], disk).expect("writing the image");
    }
    f.sync_all().expect("syncing the image");
}

/// A loop device over a byte range of a file, detached on drop.
pub struct Loop {
    /// `/dev/loopN`.
    pub dev: String,
}

impl Loop {
    /// Attaches `[offset, offset + size)` of `file` (read-only when `read_only`).
    pub fn attach(file: &Path, offset: u64, size: u64, read_only: bool) -> Loop {
        let losetup = require("losetup", "mount");
        let mut c = Command::new(losetup);
        if read_only {
            c.arg("-r");
        }
        c.args(["-f", "--show", "-o", &offset.to_string(), "--sizelimit"])
            .arg(size.to_string())
            .arg(file);
        let r = run(&mut c).success();
        Loop {
            dev: r.stdout.trim().to_string(),
        }
    }

    /// The data partition of a raw image.
    pub fn data(image: &Path, read_only: bool) -> Loop {
        let (off, size) = partition(image, "data");
        Loop::attach(image, off, size, read_only)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Fails the test unless it runs as root, saying why.
pub fn require_root(what: &str) {
    assert!(
        common::is_root(),
        "{what} needs root (loop devices, mounts, a private mount namespace): run the tests as \
         root, as `cargo xtask ci` does"
    );
}

/// A node's view of a data partition, and a throwaway containers-storage.
pub struct Node {
    /// Scratch directory (storage, overlay, the Ignition root, temp files).
    pub dir: tempfile::TempDir,
    /// The partition's loop device.
    pub lp: Loop,
}

impl Node {
    /// The partition of `image` (a read-only loop device when `read_only`).
    pub fn new(image: &Path, read_only: bool) -> Node {
        require_root("the node tests");
        Node::on_loop(Loop::data(image, read_only))
    }

    /// A node whose data partition is the loop device `lp`.
    pub fn on_loop(lp: Loop) -> Node {
        require_root("the node tests");
        require("unshare", "util-linux");
        require("skopeo", "skopeo");
        let dir = common::scratch("node");
        let conf = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            dir.path().display()
        );
        fs::write(dir.path().join("storage.conf"), conf).expect("writing storage.conf");
        for d in ["tmp", "shims"] {
            fs::create_dir_all(dir.path().join(d)).expect("creating a directory");
        }
        Node { lp, dir }
    }

    /// Empties the throwaway containers-storage.
    pub fn fresh_storage(&self) {
        for d in ["graph", "run"] {
            let p = self.dir.path().join(d);
            if p.exists() {
                fs::remove_dir_all(&p).unwrap_or_else(|e| panic!("removing {}: {e}", p.display()));
            }
        }
    }

    /// A command shim: `name` on the loaders' PATH runs `body` (a shell script) instead.
    pub fn shim(&self, name: &str, body: &str) {
        let p = self.dir.path().join("shims").join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("writing a shim");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// The environment the loaders run with: what systemd gives a system service (PATH), the
    /// throwaway storage, and the scratch temp directory.
    fn env(&self) -> Vec<(String, String)> {
        let d = self.dir.path().display();
        vec![
            (
                "PATH".to_string(),
                format!("{d}/shims:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            ),
            (
                "CONTAINERS_STORAGE_CONF".to_string(),
                format!("{d}/storage.conf"),
            ),
            ("TMPDIR".to_string(), format!("{d}/tmp")),
        ]
    }

    /// Runs the shell script `script` in a private mount namespace where
    /// `/dev/disk/by-partlabel/data` is the partition, with the loaders' environment.
    pub fn sh(&self, script: &str) -> Run {
        let d = self.dir.path();
        let ov = d.join("overlay");
        let _ = fs::remove_dir_all(&ov);
        for s in ["upper", "work"] {
            fs::create_dir_all(ov.join(s)).expect("creating the overlay directories");
        }
        let prelude = format!(
            "mount -t overlay overlay -o lowerdir=/dev,upperdir={0}/upper,workdir={0}/work /dev\n\
             mkdir -p /dev/disk/by-partlabel\n\
             ln -sfn {1} /dev/disk/by-partlabel/data\n",
            ov.display(),
            self.lp.dev
        );
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "bash", "-c"])
            .arg(format!("set -e\n{prelude}set +e\n{script}"))
            .env_clear()
            .current_dir("/");
        for (k, v) in self.env() {
            c.env(k, v);
        }
        run(&mut c)
    }

    /// Runs a loader file as its unit does (`ExecStart=` the path, no arguments, from `/`), under
    /// `timeout` as a safety net (a loader that hangs fails the test instead of blocking it; no
    /// run comes near the bound).
    pub fn load(&self, loader: &Path) -> Run {
        let r = self.sh(&format!("exec timeout 900 {}", loader.display()));
        crate::note!("{}", summary(&r));
        r
    }

    /// `program` with the loaders' environment (outside the mount namespace: the partition is
    /// mounted nowhere there).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env_clear();
        for (k, v) in self.env() {
            c.env(k, v);
        }
        c
    }

    /// The digest of the manifest containers-storage resolves `name` to, if any.
    pub fn stored_digest(&self, name: &str) -> Option<String> {
        let mut c = Command::new("skopeo");
        c.arg("inspect")
            .arg("--raw")
            .arg(format!("containers-storage:{name}"))
            .env_clear();
        for (k, v) in self.env() {
            c.env(k, v);
        }
        let out = c.output().expect("running skopeo inspect");
        out.status
            .success()
            .then(|| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&out.stdout)))
    }

    /// Like [`Node::stored_digest`], of the image config.
    pub fn stored_config(&self, name: &str) -> Option<String> {
        let mut c = Command::new("skopeo");
        c.args(["inspect", "--raw", "--config"])
            .arg(format!("containers-storage:{name}"))
            .env_clear();
        for (k, v) in self.env() {
            c.env(k, v);
        }
        let out = c.output().expect("running skopeo inspect");
        out.status
            .success()
            .then(|| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&out.stdout)))
    }
}

/// The summary line of a loader run.
pub fn summary(r: &Run) -> String {
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains(": summary: "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one summary line from {}:\n{}",
        r.cmd,
        r.stderr
    );
    lines[0].to_string()
}

/// The image references of a list file's text.
pub fn refs(list: &str) -> Vec<String> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// `mapping.txt` as source reference -> tag.
pub fn mapping_tags(mapping: &str) -> BTreeMap<String, String> {
    mapping
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(src, dest)| {
            let tag = dest.rsplit(':').next().unwrap_or_default();
            (src.to_string(), tag.to_string())
        })
        .collect()
}

/// The real Ignition binary's file stages: `fetch-offline` then `files`, with the config from
/// `IGNITION_CONFIG_FILE`, into `root`; its caches and state stay under `work`.
pub fn ignition_apply(config: &Path, root: &Path, work: &Path) -> Run {
    let ign = PathBuf::from("/usr/lib/dracut/modules.d/30ignition/ignition");
    assert!(
        ign.is_file(),
        "{} is missing: install the Debian package `ignition`",
        ign.display()
    );
    fs::create_dir_all(root.join("etc/selinux")).expect("creating etc/selinux");
    fs::write(
        root.join("etc/selinux/config"),
        "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
    )
    .expect("writing etc/selinux/config");
    let shims = work.join("ignition-shims");
    fs::create_dir_all(&shims).expect("creating the shim directory");
    let setfiles = shims.join("setfiles");
    fs::write(&setfiles, "#!/bin/sh\nexit 0\n").expect("writing setfiles");
    fs::set_permissions(&setfiles, fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut last = None;
    for stage in ["fetch-offline", "files"] {
        let r = run(Command::new(&ign)
            .args([
                "-platform",
                "file",
                "-stage",
                stage,
                "-log-to-stdout",
                "-root",
            ])
            .arg(root)
            .arg("-config-cache")
            .arg(work.join("ignition.json"))
            .arg("-state-file")
            .arg(work.join("ignition.state"))
            .arg("-neednet")
            .arg(work.join("ignition.neednet"))
            .env("IGNITION_CONFIG_FILE", config)
            .env("PATH", &path));
        assert!(
            r.status.success() && r.stdout.contains("Ignition finished successfully"),
            "ignition -stage {stage} failed for {}:\n{}",
            config.display(),
            r.both()
        );
        last = Some(r);
    }
    last.expect("ignition ran")
}

/// The bytes of a `data:` URL of the overrides (base64).
pub fn data_url_bytes(url: &str) -> Vec<u8> {
    let b64 = url
        .strip_prefix("data:text/plain;charset=utf-8;base64,")
        .unwrap_or_else(|| panic!("not a base64 data URL: {url:.60}"));
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("decoding a data URL")
}

/// Every document of a YAML text, as JSON values.
pub fn yaml_docs(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).expect("YAML"))
        .collect()
}

/// Makes a CRD schema strict: an object with `properties` and without
/// `x-kubernetes-preserve-unknown-fields` or `additionalProperties` accepts no other key, as
/// the API server's strict field validation refuses unknown fields.
pub fn strict_schema(v: &mut serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Object(m) => {
            if m.contains_key("properties")
                && !m.contains_key("additionalProperties")
                && m.get("x-kubernetes-preserve-unknown-fields") != Some(&J::Bool(true))
            {
                m.insert("additionalProperties".to_string(), J::Bool(false));
            }
            for x in m.values_mut() {
                strict_schema(x);
            }
        }
        J::Array(a) => a.iter_mut().for_each(strict_schema),
        _ => {}
    }
}

/// The `openAPIV3Schema` of `version` of the CRD `crd` (its YAML text), strict, as a validator.
pub fn crd_validator(crd: &str, version: &str) -> jsonschema::Validator {
    let crd = yaml_docs(crd);
    let v = crd[0]["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("the CRD serves no {version}"));
    let mut schema = v["schema"]["openAPIV3Schema"].clone();
    assert!(schema.is_object(), "no openAPIV3Schema");
    strict_schema(&mut schema);
    jsonschema::draft4::options()
        .build(&schema)
        .expect("the CRD's schema compiles")
}

/// The schema's errors for `doc`, one per line.
pub fn schema_errors(v: &jsonschema::Validator, doc: &serde_json::Value) -> String {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `ignition-validate` must accept `text` (of any spec version) with no message at all.
pub fn assert_ignition_validate_accepts(text: &str, what: &str, dir: &Path) {
    let validate = require("ignition-validate", "ignition");
    let f = dir.join("candidate.ign");
    fs::write(&f, text).expect("writing the config");
    let r = run(Command::new(validate).arg(&f));
    assert!(
        r.status.success() && r.both().trim().is_empty(),
        "ignition-validate refuses {what}:\n{}",
        r.both()
    );
}
