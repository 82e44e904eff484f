//! Writes oc-mirror v2 output the way oc-mirror writes it, for the tests: the cache (a
//! distribution registry's storage tree), working-dir, and the archive tars of a mirror-to-disk
//! run, from images built in memory (which the tests can also push to a real registry).
//!
//! What is reproduced, from openshift/oc-mirror at commit
//! `855b64a3c9c03634bcab6210b641274772050cda`:
//! - the storage tree (`docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data` for blobs and
//!   manifests; `repositories/<repo>/_manifests/{revisions/sha256/<hex>/link,
//!   tags/<tag>/{current/link, index/sha256/<hex>/link}}` and `_layers/sha256/<hex>/link`), as
//!   the distribution registry oc-mirror runs writes it;
//! - the cache's names (`internal/pkg/release/local_stored_collector.go`, `additional/
//!   local_stored_collector.go`): the source path without its registry host and the source tag,
//!   `sha256-<hex>` for images given by digest only, `openshift/release-images:<release tag>` and
//!   `openshift/release:<release tag>-<component>` for a release (as for a signed release, whose
//!   identity names its tag);
//! - working-dir's release files (`release-images/<name>/<tag>/` OCI layout,
//!   `hold-release/<name>/<tag>/release-manifests/`, `hold-release/cincinnati-graph-data/
//!   <arch>-<channel>.json`, `signatures/<tag>-sha256-<hex>`) and its history
//!   (`.history/.history-<time>`);
//! - the archive (`internal/pkg/archive/archive.go` `BuildArchive`, `permissive_adder.go`):
//!   every file of `repositories/`, then the blobs of each image the history does not list,
//!   then working-dir, then the ImageSetConfiguration as `isc_<time>`; a new
//!   `mirror_%06d.tar` when the next file would take the current one past the segment size
//!   (file data only), a file larger than that alone in a tar of its own; members as Go's
//!   `archive/tar` writes them (ustar, the prefix field for long names, PAX `path` beyond).
//!
//! The one liberty: the segment size is given in bytes (oc-mirror's `archiveSize` counts GiB),
//! so that small fixtures split into several tars. The release signature is a placeholder
//! (prestage does not read signatures).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::registry::images::{
    tar_of, COMPONENTS, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use crate::registry::sha256;

fn hex_of(d: &str) -> &str {
    d.strip_prefix("sha256:").expect("a sha256 digest")
}

/// `len` pseudo-random bytes from `seed`.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A manifest (image or list) with what it references.
#[derive(Clone, Debug)]
pub struct Man {
    pub digest: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// Config and layer digests (images).
    pub blobs: Vec<String>,
    /// Instance manifests (lists).
    pub children: Vec<Man>,
}

impl Man {
    /// Every digest it needs, itself included: manifests, configs, layers.
    pub fn all_digests(&self) -> Vec<String> {
        let mut v = vec![self.digest.clone()];
        v.extend(self.blobs.iter().cloned());
        for c in &self.children {
            v.extend(c.all_digests());
        }
        v
    }
}

/// A layer: its blob and the digest of its uncompressed tar.
pub struct Layer {
    pub digest: String,
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
}

/// Every blob of the test images, by digest.
#[derive(Default)]
pub struct Content {
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl Content {
    pub fn put(&mut self, bytes: Vec<u8>) -> String {
        let d = sha256(&bytes);
        self.blobs.insert(d.clone(), bytes);
        d
    }

    /// A layer holding `files`: gzip'd for Docker images, a plain tar for OCI ones.
    pub fn layer(&mut self, docker: bool, files: &[(&str, &[u8])]) -> Layer {
        let raw = tar_of(files);
        let diff_id = sha256(&raw);
        let (bytes, media_type) = if docker {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&raw).unwrap();
            (
                e.finish().unwrap(),
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (raw, "application/vnd.oci.image.layer.v1.tar")
        };
        let size = bytes.len() as u64;
        Layer {
            digest: self.put(bytes),
            diff_id,
            media_type: media_type.to_string(),
            size,
        }
    }

    /// An image manifest with correct diff IDs (skopeo checks them).
    pub fn image(&mut self, docker: bool, arch: &str, layers: &[&Layer], label: &str) -> Man {
        let (mt, cfg_t) = if docker {
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
            )
        } else {
            (OCI_MANIFEST, "application/vnd.oci.image.config.v1+json")
        };
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": {"test.image": label}},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        }))
        .unwrap();
        let csize = config.len();
        let c = self.put(config);
        let m = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": cfg_t, "digest": c, "size": csize},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        let mut blobs = vec![c];
        blobs.extend(layers.iter().map(|l| l.digest.clone()));
        Man {
            digest: self.put(bytes.clone()),
            media_type: mt.to_string(),
            bytes,
            blobs,
            children: Vec::new(),
        }
    }

    /// A list (OCI index, or Docker manifest list with `docker`) of `(arch, image)`.
    pub fn list(&mut self, docker: bool, entries: &[(&str, &Man)]) -> Man {
        let mt = if docker { DOCKER_LIST } else { OCI_INDEX };
        let m = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "manifests": entries.iter().map(|(arch, img)| json!({
                "mediaType": img.media_type, "digest": img.digest, "size": img.bytes.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        Man {
            digest: self.put(bytes.clone()),
            media_type: mt.to_string(),
            bytes,
            blobs: Vec::new(),
            children: entries.iter().map(|(_, m)| (*m).clone()).collect(),
        }
    }
}

/// An image of the set: its source reference (as the ImageSetConfiguration or the release
/// names it), where oc-mirror caches it, and its manifest.
#[derive(Clone, Debug)]
pub struct Img {
    pub source: String,
    pub cache_repo: String,
    pub cache_tag: String,
    pub man: Man,
}

impl Img {
    /// The source pinned by digest.
    pub fn pinned(&self) -> String {
        let name = self.source.split('@').next().unwrap();
        let last = name.rfind('/').unwrap();
        let name = match name[last..].find(':') {
            Some(i) => &name[..last + i],
            None => name,
        };
        format!("{name}@{}", self.man.digest)
    }
}

/// The test image set: a release with its components, the assisted-installer images by tag
/// and additional images (by digest: a Docker v2s2 image; by tag: an OCI image, an OCI index, a
/// Docker manifest list), every image sharing one base layer.
pub struct ImageSet {
    pub host: String,
    pub content: Content,
    pub release: Img,
    pub components: Vec<Img>,
    pub assisted: Vec<Img>,
    pub additional: Vec<Img>,
    pub version: String,
    /// The graph data oc-mirror saved (`amd64-stable-4.14.json`).
    pub graph: Vec<u8>,
}

pub const RELEASE_TAG: &str = "4.14.3-x86_64";

impl ImageSet {
    /// The set, its images named from registry `host`; `extra` adds that many more additional
    /// images (for an incremental run).
    pub fn new(host: &str) -> ImageSet {
        let mut c = Content::default();
        let base_bytes = data(1, 256 << 10);
        let base_o = c.layer(false, &[("usr/lib/base.bin", &base_bytes)]);
        let base_d = c.layer(true, &[("usr/lib/base.bin", &base_bytes)]);
        let version = "4.14.3".to_string();
        let mut components = Vec::new();
        let mut tags = Vec::new();
        for (i, name) in COMPONENTS.iter().enumerate() {
            let docker = i % 2 == 1;
            let own = c.layer(
                docker,
                &[(
                    &format!("usr/bin/{name}"),
                    &data(10 + i as u64, 3000 + 97 * i),
                )],
            );
            let base = if docker { &base_d } else { &base_o };
            let m = c.image(docker, "amd64", &[base, &own], name);
            let source = format!("{host}/ocp/art-dev@{}", m.digest);
            tags.push(json!({"name": name, "from": {"kind": "DockerImage", "name": source}}));
            components.push(Img {
                source,
                cache_repo: "openshift/release".into(),
                cache_tag: format!("{RELEASE_TAG}-{name}"),
                man: m,
            });
        }
        let refs = serde_json::to_vec(&json!({
            "kind": "ImageStream", "apiVersion": "image.openshift.io/v1",
            "metadata": {"name": version}, "spec": {"tags": tags},
        }))
        .unwrap();
        let meta = serde_json::to_vec(
            &json!({"kind": "cincinnati-metadata-v0", "version": version, "metadata": {}}),
        )
        .unwrap();
        let payload = c.layer(
            true,
            &[
                ("release-manifests/image-references", &refs),
                ("release-manifests/release-metadata", &meta),
            ],
        );
        let rm = c.image(true, "amd64", &[&base_d, &payload], "release");
        let release = Img {
            source: format!("{host}/ocp/release:{RELEASE_TAG}"),
            cache_repo: "openshift/release-images".into(),
            cache_tag: RELEASE_TAG.into(),
            man: rm,
        };
        let mut assisted = Vec::new();
        for (i, repo) in [
            "ai/assisted-installer-agent-rhel8",
            "ai/assisted-installer-rhel8",
            "ai/assisted-installer-reporter-rhel8",
        ]
        .iter()
        .enumerate()
        {
            let own = c.layer(false, &[("bin/tool", &data(100 + i as u64, 5000))]);
            let m = c.image(false, "amd64", &[&base_o, &own], repo);
            assisted.push(Img {
                source: format!("{host}/{repo}:v1.0.0-89"),
                cache_repo: repo.to_string(),
                cache_tag: "v1.0.0-89".into(),
                man: m,
            });
        }
        let mut additional = Vec::new();
        // By digest only: a Docker v2s2 image, cached under a digest-derived tag.
        let own = c.layer(true, &[("bin/pinned", &data(300, 9000))]);
        let m = c.image(true, "amd64", &[&base_d, &own], "pinned");
        additional.push(Img {
            source: format!("{host}/tools/pinned@{}", m.digest),
            cache_repo: "tools/pinned".into(),
            cache_tag: format!("sha256-{}", hex_of(&m.digest)),
            man: m,
        });
        // By tag: an OCI image.
        let own = c.layer(false, &[("bin/bytag", &data(310, 6000))]);
        let m = c.image(false, "amd64", &[&base_o, &own], "bytag");
        additional.push(Img {
            source: format!("{host}/tools/bytag:v1"),
            cache_repo: "tools/bytag".into(),
            cache_tag: "v1".into(),
            man: m,
        });
        // Lists by tag: an OCI index and a Docker manifest list, amd64 and arm64.
        for (docker, repo) in [(false, "tools/multi-oci"), (true, "tools/multi-docker")] {
            let base = if docker { &base_d } else { &base_o };
            let a = c.layer(docker, &[("bin/x", &data(200, 7000))]);
            let b = c.layer(docker, &[("bin/x", &data(201, 7000))]);
            let ia = c.image(docker, "amd64", &[base, &a], repo);
            let ib = c.image(docker, "arm64", &[base, &b], repo);
            let l = c.list(docker, &[("amd64", &ia), ("arm64", &ib)]);
            additional.push(Img {
                source: format!("{host}/{repo}:v1"),
                cache_repo: repo.to_string(),
                cache_tag: "v1".into(),
                man: l,
            });
        }
        let graph = serde_json::to_vec(&json!({
            "version": 1,
            "nodes": [
                {"version": "4.14.2", "payload": format!("{host}/ocp/release@sha256:{}", "2".repeat(64)),
                 "metadata": {"io.openshift.upgrades.graph.release.channels": "candidate-4.14,fast-4.14,stable-4.14"}},
                {"version": version, "payload": release.pinned(),
                 "metadata": {"io.openshift.upgrades.graph.release.channels": "candidate-4.14,fast-4.14,stable-4.14"}},
            ],
            "edges": [[0, 1]],
            "conditionalEdges": [],
        }))
        .unwrap();
        ImageSet {
            host: host.to_string(),
            content: c,
            release,
            components,
            assisted,
            additional,
            version,
            graph,
        }
    }

    /// One more additional image by tag (of an incremental run), sharing the base layer.
    pub fn add_image(&mut self, repo: &str, seed: u64) -> Img {
        let base_bytes = data(1, 256 << 10);
        let base_o = self
            .content
            .layer(false, &[("usr/lib/base.bin", &base_bytes)]);
        let own = self.content.layer(false, &[("bin/new", &data(seed, 4000))]);
        let m = self.content.image(false, "amd64", &[&base_o, &own], repo);
        let img = Img {
            source: format!("{}/{repo}:v2", self.host),
            cache_repo: repo.to_string(),
            cache_tag: "v2".into(),
            man: m,
        };
        self.additional.push(img.clone());
        img
    }

    /// Every image oc-mirror mirrors for the ImageSetConfiguration.
    pub fn images(&self) -> Vec<&Img> {
        let mut v = vec![&self.release];
        v.extend(&self.components);
        v.extend(&self.assisted);
        v.extend(&self.additional);
        v
    }

    /// The ImageSetConfiguration: the channel's newest release, the assisted-installer and
    /// additional images.
    pub fn isc(&self) -> String {
        let mut s = String::from(
            "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\n\
             mirror:\n  platform:\n    channels:\n      - name: stable-4.14\n        type: ocp\n\
             \x20 additionalImages:\n",
        );
        for i in self.assisted.iter().chain(&self.additional) {
            s.push_str(&format!("    - name: {}\n", i.source));
        }
        s
    }

    /// The assisted-installer list file's text.
    pub fn assisted_list(&self) -> String {
        self.assisted
            .iter()
            .map(|i| format!("{}\n", i.source))
            .collect()
    }

    /// Pushes every image to a plain-HTTP registry at `base` under its source name.
    pub fn push(&self, base: &str) {
        let agent = ureq::AgentBuilder::new().build();
        let repo_of = |src: &str| {
            let name = src.split('@').next().unwrap();
            let path = name.split_once('/').unwrap().1;
            let last = path.rfind('/').map(|i| i + 1).unwrap_or(0);
            match path[last..].find(':') {
                Some(i) => (
                    path[..last + i].to_string(),
                    Some(path[last + i + 1..].to_string()),
                ),
                None => (path.to_string(), None),
            }
        };
        for img in self.images() {
            let (repo, tag) = repo_of(&img.source);
            self.push_man(&agent, base, &repo, &img.man, tag.as_deref());
        }
    }

    fn push_man(&self, agent: &ureq::Agent, base: &str, repo: &str, m: &Man, tag: Option<&str>) {
        for c in &m.children {
            self.push_man(agent, base, repo, c, None);
        }
        for d in &m.blobs {
            let r = agent
                .post(&format!("{base}/v2/{repo}/blobs/uploads/"))
                .call()
                .unwrap();
            let loc = r.header("Location").unwrap().to_string();
            let loc = if loc.starts_with("http") {
                loc
            } else {
                format!("{base}{loc}")
            };
            let sep = if loc.contains('?') { '&' } else { '?' };
            agent
                .put(&format!("{loc}{sep}digest={d}"))
                .set("Content-Type", "application/octet-stream")
                .send_bytes(&self.content.blobs[d])
                .unwrap();
        }
        agent
            .put(&format!(
                "{base}/v2/{repo}/manifests/{}",
                tag.unwrap_or(&m.digest)
            ))
            .set("Content-Type", &m.media_type)
            .send_bytes(&m.bytes)
            .unwrap();
    }
}

/// A connected-side oc-mirror workspace: the cache and `DIR/working-dir`.
pub struct Workspace {
    pub cache: PathBuf,
    pub dir: PathBuf,
    /// Blobs archived by earlier runs (the history).
    pub history: BTreeSet<String>,
    runs: u32,
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

impl Workspace {
    pub fn new(root: &Path) -> Workspace {
        Workspace {
            cache: root.join("cache/.oc-mirror/.cache"),
            dir: root.join("out"),
            history: BTreeSet::new(),
            runs: 0,
        }
    }

    pub fn storage(&self) -> PathBuf {
        self.cache.join("docker/registry/v2")
    }

    pub fn working_dir(&self) -> PathBuf {
        self.dir.join("working-dir")
    }

    fn put_blob(&self, d: &str, bytes: &[u8]) {
        let h = hex_of(d);
        write(
            &self
                .storage()
                .join("blobs/sha256")
                .join(&h[..2])
                .join(h)
                .join("data"),
            bytes,
        );
    }

    fn link(&self, repo: &str, rel: &str, d: &str) {
        write(
            &self.storage().join("repositories").join(repo).join(rel),
            d.as_bytes(),
        );
    }

    fn cache_man(&self, set: &ImageSet, repo: &str, m: &Man) {
        for c in &m.children {
            self.cache_man(set, repo, c);
        }
        for b in &m.blobs {
            self.put_blob(b, &set.content.blobs[b]);
            self.link(repo, &format!("_layers/sha256/{}/link", hex_of(b)), b);
        }
        self.put_blob(&m.digest, &m.bytes);
        self.link(
            repo,
            &format!("_manifests/revisions/sha256/{}/link", hex_of(&m.digest)),
            &m.digest,
        );
    }

    /// Mirrors the set into the cache and working-dir (a mirror-to-disk run's first half).
    pub fn mirror(&self, set: &ImageSet) {
        for img in set.images() {
            self.cache_man(set, &img.cache_repo, &img.man);
            let d = &img.man.digest;
            self.link(
                &img.cache_repo,
                &format!("_manifests/tags/{}/current/link", img.cache_tag),
                d,
            );
            self.link(
                &img.cache_repo,
                &format!(
                    "_manifests/tags/{}/index/sha256/{}/link",
                    img.cache_tag,
                    hex_of(d)
                ),
                d,
            );
        }
        let wd = self.working_dir();
        // The release as an OCI layout (oc-mirror copies it with oci: and converts it).
        let rel = &set.release;
        let layout = wd.join("release-images/release").join(RELEASE_TAG);
        let m: Value = serde_json::from_slice(&rel.man.bytes).unwrap();
        let mut oci = m.clone();
        oci["mediaType"] = json!(OCI_MANIFEST);
        oci["config"]["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
        for l in oci["layers"].as_array_mut().unwrap() {
            l["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+gzip");
        }
        let oci_bytes = serde_json::to_vec(&oci).unwrap();
        let oci_d = sha256(&oci_bytes);
        write(
            &layout.join("blobs/sha256").join(hex_of(&oci_d)),
            &oci_bytes,
        );
        for b in &rel.man.blobs {
            write(
                &layout.join("blobs/sha256").join(hex_of(b)),
                &set.content.blobs[b],
            );
        }
        write(
            &layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        );
        write(
            &layout.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": oci_d, "size": oci_bytes.len()}]})).unwrap().as_slice(),
        );
        // Its release-manifests, extracted.
        let payload = &set.content.blobs[rel.man.blobs.last().unwrap()];
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(&payload[..]));
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().into_owned();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            write(
                &wd.join("hold-release/release").join(RELEASE_TAG).join(p),
                &v,
            );
        }
        write(
            &wd.join("hold-release/cincinnati-graph-data/amd64-stable-4.14.json"),
            &set.graph,
        );
        write(
            &wd.join("signatures")
                .join(format!("{RELEASE_TAG}-sha256-{}", hex_of(&rel.man.digest))),
            b"placeholder: a release signature (prestage does not read it)\n",
        );
        write(&wd.join("logs/registry.log"), b"registry log\n");
    }

    /// The archive of a run (`BuildArchive`): writes `mirror_NNNNNN.tar` files into
    /// `self.dir` (after removing earlier ones, as `RemovePastArchives`), splitting at `segment`
    /// bytes; then appends the history. Returns the tar files.
    pub fn archive(&mut self, set: &ImageSet, segment: u64) -> Vec<PathBuf> {
        self.runs += 1;
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "tar") {
                std::fs::remove_file(p).unwrap();
            }
        }
        let mut w = Segments::new(&self.dir, segment);
        // 1: the whole repositories tree.
        for (path, rel) in walk(&self.storage().join("repositories"), &self.cache) {
            w.add(&path, &rel);
        }
        // 2: the blobs of each image, unless in the history or already added.
        let mut added = BTreeSet::new();
        for img in set.images() {
            for d in img.man.all_digests() {
                if self.history.contains(&d) || !added.insert(d.clone()) {
                    continue;
                }
                let h = hex_of(&d);
                let p = self.storage().join("blobs/sha256").join(&h[..2]).join(h);
                for (path, rel) in walk(&p, &self.cache) {
                    w.add(&path, &rel);
                }
            }
        }
        // 4: working-dir, relative to its parent.
        for (path, rel) in walk(&self.working_dir(), &self.dir) {
            w.add(&path, &rel);
        }
        // 5: the ImageSetConfiguration.
        let isc = self.dir.join(format!("isc-{}.yaml", self.runs));
        std::fs::write(&isc, set.isc()).unwrap();
        w.add(&isc, &format!("isc_2025-06-0{}T10:00:00Z", self.runs));
        std::fs::remove_file(&isc).unwrap();
        let tars = w.close();
        // 6: the history, for the next run.
        self.history.extend(added);
        let mut text = String::new();
        for d in &self.history {
            text.push_str(d);
            text.push('\n');
        }
        write(
            &self.working_dir().join(format!(
                ".history/.history-2025-06-0{}T10:00:01Z",
                self.runs
            )),
            text.as_bytes(),
        );
        tars
    }
}

/// Files below `dir` (sorted, as Go's `filepath.Walk`), with their names relative to `base`.
fn walk(dir: &Path, base: &Path) -> Vec<(PathBuf, String)> {
    let mut v = Vec::new();
    if !dir.exists() {
        return v;
    }
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            let rel = e
                .path()
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            v.push((e.path().to_path_buf(), rel));
        }
    }
    v
}

/// The permissive adder: tars of at most `max` bytes of file data, oversized files alone.
struct Segments {
    dir: PathBuf,
    max: u64,
    id: u32,
    current: tar::Builder<std::fs::File>,
    size: u64,
    files: Vec<PathBuf>,
}

impl Segments {
    fn new(dir: &Path, max: u64) -> Segments {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join("mirror_000001.tar");
        Segments {
            dir: dir.to_path_buf(),
            max,
            id: 1,
            current: tar::Builder::new(std::fs::File::create(&p).unwrap()),
            size: 0,
            files: vec![p],
        }
    }

    fn next_file(&mut self) -> PathBuf {
        self.id += 1;
        let p = self.dir.join(format!("mirror_{:06}.tar", self.id));
        self.files.push(p.clone());
        p
    }

    fn add(&mut self, path: &Path, name: &str) {
        let bytes = std::fs::read(path).unwrap();
        let size = bytes.len() as u64;
        if size > self.max {
            let p = self.next_file();
            let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
            append(&mut b, name, &bytes);
            b.finish().unwrap();
            return;
        }
        if size + self.size > self.max {
            let p = self.next_file();
            let mut old = std::mem::replace(
                &mut self.current,
                tar::Builder::new(std::fs::File::create(&p).unwrap()),
            );
            old.finish().unwrap();
            self.size = 0;
        }
        append(&mut self.current, name, &bytes);
        self.size += size;
    }

    fn close(mut self) -> Vec<PathBuf> {
        self.current.finish().unwrap();
        self.files
    }
}

/// Appends a member as Go's `archive/tar` writes it: a ustar header (the name split into prefix
/// and name when longer than 100 bytes), preceded by a PAX `path` record when even that fails.
fn append(b: &mut tar::Builder<std::fs::File>, name: &str, bytes: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_750_000_000);
    if h.set_path(name).is_err() {
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut n = body.len() + 1;
            while format!("{n}{body}").len() != n {
                n += 1;
            }
            format!("{n}{body}")
        };
        let pax = rec("path", name);
        let mut ph = tar::Header::new_ustar();
        ph.set_entry_type(tar::EntryType::XHeader);
        ph.set_size(pax.len() as u64);
        ph.set_mode(0o644);
        ph.set_path("PaxHeaders.0/data").unwrap();
        ph.set_cksum();
        b.append(&ph, pax.as_bytes()).unwrap();
        h.set_path(&name[name.len() - 90..]).unwrap();
    }
    h.set_cksum();
    b.append(&h, bytes).unwrap();
}
