//! Deterministic test images, pushed with plain HTTP distribution API calls (monolithic blob
//! upload POST + PUT, manifest PUT by tag or by digest) to an unauthenticated plain-HTTP registry.

use serde_json::json;

use super::sha256;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A layer tar of `(path, bytes)` regular files (mode 0644, time 0).
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, path, *bytes).unwrap();
    }
    b.into_inner().unwrap()
}

/// Release components of the test releases: the discovery components of the built-in rule,
/// plus three install-only ones.
pub const COMPONENTS: [&str; 17] = [
    "aws-ebs-csi-driver",
    "cloud-credential-operator",
    "cluster-bootstrap",
    "cluster-config-operator",
    "cluster-etcd-operator",
    "cluster-ingress-operator",
    "cluster-kube-apiserver-operator",
    "cluster-kube-controller-manager-operator",
    "cluster-kube-scheduler-operator",
    "cluster-policy-controller",
    "console",
    "etcd",
    "hyperkube",
    "installer",
    "machine-config-operator",
    "must-gather",
    "pod",
];

/// `len` pseudo-random (incompressible) bytes from `seed`.
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

/// A pushed blob or manifest.
#[derive(Clone, Debug)]
pub struct Desc {
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Media type.
    pub media_type: String,
}

/// A pushed image manifest with its blobs.
#[derive(Clone, Debug)]
pub struct Image {
    /// The manifest.
    pub manifest: Desc,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Config then layers.
    pub blobs: Vec<Desc>,
    /// The config's bytes.
    pub config: Vec<u8>,
}

/// Pushes to a plain-HTTP registry without auth.
pub struct Pusher {
    base: String,
    agent: ureq::Agent,
}

impl Pusher {
    /// A pusher for `http://127.0.0.1:PORT`.
    pub fn new(base: &str) -> Pusher {
        Pusher {
            base: base.to_string(),
            agent: ureq::AgentBuilder::new().build(),
        }
    }

    /// Uploads a blob (monolithic POST + PUT).
    pub fn blob(&self, repo: &str, bytes: &[u8], media_type: &str) -> Desc {
        let digest = sha256(bytes);
        let r = self
            .agent
            .post(&format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .call()
            .unwrap_or_else(|e| panic!("starting upload to {repo}: {e}"));
        assert_eq!(r.status(), 202);
        let loc = r.header("Location").expect("upload Location").to_string();
        let loc = if loc.starts_with("http") {
            loc
        } else {
            format!("{}{loc}", self.base)
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self
            .agent
            .put(&format!("{loc}{sep}digest={digest}"))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bytes)
            .unwrap_or_else(|e| panic!("uploading {digest} to {repo}: {e}"));
        assert_eq!(r.status(), 201);
        Desc {
            digest,
            size: bytes.len() as u64,
            media_type: media_type.to_string(),
        }
    }

    /// Puts manifest bytes under `reference` (a tag, or the digest).
    pub fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Desc {
        self.agent
            .put(&format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .set("Content-Type", media_type)
            .send_bytes(bytes)
            .unwrap_or_else(|e| panic!("putting manifest {repo}:{reference}: {e}"));
        Desc {
            digest: sha256(bytes),
            size: bytes.len() as u64,
            media_type: media_type.to_string(),
        }
    }

    /// Pushes an image: a config (from `seed` and `arch`) and the layers, under `tag` or, when
    /// `None`, by digest only. `docker` selects Docker v2s2 media types, else OCI.
    pub fn image(
        &self,
        repo: &str,
        tag: Option<&str>,
        docker: bool,
        arch: &str,
        layers: &[&[u8]],
    ) -> Image {
        let (mt, cfg_t, layer_t) = if docker {
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (
                OCI_MANIFEST,
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar",
            )
        };
        let layer_descs: Vec<Desc> = layers.iter().map(|l| self.blob(repo, l, layer_t)).collect();
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Labels": {"test.repo": repo, "test.tag": tag.unwrap_or("")}},
            "rootfs": {"type": "layers", "diff_ids": layer_descs.iter().map(|d| d.digest.clone()).collect::<Vec<_>>()},
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config = self.blob(repo, &config_bytes, cfg_t);
        let d = |x: &Desc| json!({"mediaType": x.media_type, "digest": x.digest, "size": x.size});
        let m = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": d(&config),
            "layers": layer_descs.iter().map(d).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        let digest = sha256(&bytes);
        let manifest = self.manifest(repo, tag.unwrap_or(&digest), mt, &bytes);
        let mut blobs = vec![config];
        blobs.extend(layer_descs);
        Image {
            manifest,
            bytes,
            blobs,
            config: config_bytes,
        }
    }

    /// Pushes a copy of `img` (whose layers are `layers`) to `repo`, by digest only.
    pub fn copy(&self, repo: &str, img: &Image, layers: &[&[u8]]) {
        self.blob(repo, &img.config, &img.blobs[0].media_type);
        for (l, d) in layers.iter().zip(&img.blobs[1..]) {
            self.blob(repo, l, &d.media_type);
        }
        self.manifest(
            repo,
            &img.manifest.digest,
            &img.manifest.media_type,
            &img.bytes,
        );
    }

    /// Pushes a list (OCI index, or Docker manifest list with `docker`) of `(arch, image)`.
    pub fn list(
        &self,
        repo: &str,
        tag: &str,
        docker: bool,
        entries: &[(&str, &Image)],
    ) -> (Desc, Vec<u8>) {
        let descs: Vec<(&str, &Desc)> = entries.iter().map(|(a, i)| (*a, &i.manifest)).collect();
        self.list_of(repo, tag, docker, &descs)
    }

    /// Pushes a list (OCI index, or Docker manifest list with `docker`) of `(arch, manifest)`,
    /// all for `linux`, under `tag`.
    pub fn list_of(
        &self,
        repo: &str,
        tag: &str,
        docker: bool,
        entries: &[(&str, &Desc)],
    ) -> (Desc, Vec<u8>) {
        let mt = if docker { DOCKER_LIST } else { OCI_INDEX };
        let m = json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "manifests": entries.iter().map(|(arch, d)| json!({
                "mediaType": d.media_type,
                "digest": d.digest,
                "size": d.size,
                "platform": {"architecture": arch, "os": "linux"},
            })).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec_pretty(&m).unwrap();
        (self.manifest(repo, tag, mt, &bytes), bytes)
    }
}
