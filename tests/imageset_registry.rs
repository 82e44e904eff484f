//! The image-set stage against Debian's docker-registry: a synthetic release image whose
//! `image-references` lists component images pushed by digest, a synthetic file-based catalog
//! image (packages, several channels, replaces/skips chains, relatedImages), assisted-installer
//! and additional images pushed by tag, and an ImageSetConfiguration combining them with blocked
//! images and a filter. The lists are compared with golden files (`tests/fixtures/imageset/`,
//! `{{HOST}}` standing for the registry's address and `{{RELEASE}}` for the release image digest,
//! which depends on it; `PRESTAGE_BLESS=1` rewrites them). Malformed inputs must fail with one
//! clear message.

#[path = "registry/mod.rs"]
mod registry;

use std::io::Write;
use std::path::{Path, PathBuf};

use prestage::fetch::cli::RegistryArgs;
use prestage::imageset::cli::{run, ImageSetArgs, ImagesArgs};
use registry::images::{data, Pusher, COMPONENTS};
use registry::{Registry, RegistryOptions};

/// A tar archive of `(path, bytes)` regular files (directories for paths ending in `/`); names
/// are written raw, so hostile ones reach the archive.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
        }
        h.set_cksum();
        b.append(&h, *bytes).unwrap();
    }
    b.into_inner().unwrap()
}

/// Gzip without compression: byte-identical whatever deflate implementation is linked, so the
/// golden digests stay put.
fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    g.write_all(bytes).unwrap();
    g.finish().unwrap()
}

fn image_references(host: &str, version: &str, components: &[(&str, String)]) -> Vec<u8> {
    let tags: Vec<_> = components
        .iter()
        .map(|(name, digest)| {
            serde_json::json!({
                "name": name,
                "annotations": {"io.openshift.build.source-location": "https://example.invalid"},
                "from": {"kind": "DockerImage", "name": format!("{host}/ocp/art-dev@{digest}")},
                "generation": null, "importPolicy": {}, "referencePolicy": {"type": ""}
            })
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "kind": "ImageStream", "apiVersion": "image.openshift.io/v1",
        "metadata": {"name": version, "creationTimestamp": null},
        "spec": {"lookupPolicy": {"local": false}, "tags": tags}
    }))
    .unwrap()
}

fn fake(repo: &str, n: u8) -> String {
    format!(
        "registry.example/{repo}@sha256:{}",
        format!("{n:02x}").repeat(32)
    )
}

/// `foo` (JSON stream): `stable` 1.0.0 <- 1.1.0 <- 1.2.0 (also skipping 1.1.1), `fast` head
/// 2.0.0, default `stable`; `bar` (YAML): `alpha` 0.1.0 <- 0.2.0, `beta` 0.3.0.
fn catalog_files() -> (String, String) {
    let bundle = |pkg: &str, v: &str, n: u8, rel: &[String]| {
        serde_json::json!({
            "schema": "olm.bundle", "name": format!("{pkg}.v{v}"), "package": pkg,
            "image": fake(&format!("{pkg}/bundle"), n),
            "properties": [{"type": "olm.package", "value": {"packageName": pkg, "version": v}}],
            "relatedImages": rel.iter().map(|r| serde_json::json!({"name": "", "image": r})).collect::<Vec<_>>()
        })
        .to_string()
    };
    let foo_json = [
        serde_json::json!({"schema": "olm.package", "name": "foo", "defaultChannel": "stable"})
            .to_string(),
        serde_json::json!({"schema": "olm.channel", "name": "stable", "package": "foo", "entries": [
            {"name": "foo.v1.0.0"},
            {"name": "foo.v1.1.0", "replaces": "foo.v1.0.0"},
            {"name": "foo.v1.1.1", "replaces": "foo.v1.0.0"},
            {"name": "foo.v1.2.0", "replaces": "foo.v1.1.0", "skips": ["foo.v1.1.1"]}]})
        .to_string(),
        serde_json::json!({"schema": "olm.channel", "name": "fast", "package": "foo", "entries": [
            {"name": "foo.v1.2.0"}, {"name": "foo.v2.0.0", "replaces": "foo.v1.2.0"}]})
        .to_string(),
        bundle("foo", "1.0.0", 0x10, &[fake("foo/op", 0x11)]),
        bundle("foo", "1.1.0", 0x12, &[fake("foo/op", 0x13)]),
        bundle("foo", "1.1.1", 0x14, &[fake("foo/op", 0x15)]),
        bundle(
            "foo",
            "1.2.0",
            0x16,
            &[fake("foo/op", 0x17), fake("foo/kube-rbac-proxy", 0x18)],
        ),
        bundle("foo", "2.0.0", 0x20, &[fake("foo/op", 0x21)]),
    ]
    .join("\n");
    let mut bar_yaml = String::from(
        "---\nschema: olm.package\nname: bar\ndefaultChannel: alpha\n---\nschema: olm.channel\n\
         name: alpha\npackage: bar\nentries:\n  - name: bar.v0.1.0\n  - name: bar.v0.2.0\n    \
         replaces: bar.v0.1.0\n---\nschema: olm.channel\nname: beta\npackage: bar\nentries:\n  \
         - name: bar.v0.3.0\n",
    );
    for (v, n) in [("0.1.0", 0x30u8), ("0.2.0", 0x32), ("0.3.0", 0x34)] {
        bar_yaml += &format!(
            "---\nschema: olm.bundle\nname: bar.v{v}\npackage: bar\nimage: {}\nproperties:\n  \
             - type: olm.package\n    value: {{packageName: bar, version: {v}}}\n\
             relatedImages:\n  - name: op\n    image: {}\n",
            fake("bar/bundle", n),
            fake("bar/op", n + 1)
        );
    }
    (foo_json, bar_yaml)
}

struct Setup {
    dir: tempfile::TempDir,
    reg: Registry,
    host: String,
    /// The release image's digest: its payload names the registry, whose port varies.
    release: String,
    /// Release 4.14.6: the components of 4.14.3 but new etcd and console images.
    release6: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(&dir.path().join("registry"), RegistryOptions::default());
    let host = reg.host();
    let p = Pusher::new(&reg.url());
    // Components, by digest only.
    let mut components = Vec::new();
    for (i, name) in COMPONENTS.iter().enumerate() {
        let layer = tar_of(&[
            ("usr/bin/", b""),
            ("usr/bin/component", &data(i as u64, 64)),
        ]);
        let img = p.image("ocp/art-dev", None, false, "amd64", &[&layer]);
        components.push((*name, img.manifest.digest));
    }
    // The release image: Docker media types (gzip layers), a base layer and the payload.
    let refs = image_references(&host, "4.14.3", &components);
    let base = gz(&tar_of(&[("usr/bin/cluster-version-operator", b"elf")]));
    let payload = gz(&tar_of(&[
        ("release-manifests/", b""),
        ("release-manifests/image-references", &refs),
        (
            "release-manifests/release-metadata",
            br#"{"kind":"cincinnati-metadata-v0","version":"4.14.3"}"#,
        ),
    ]));
    let release = p.image(
        "ocp/release",
        Some("4.14.3-x86_64"),
        true,
        "amd64",
        &[&base, &payload],
    );
    let mut components6 = components.clone();
    for (i, (name, digest)) in components6.iter_mut().enumerate() {
        if *name == "etcd" || *name == "console" {
            let layer = tar_of(&[("usr/bin/component", &data(600 + i as u64, 64))]);
            *digest = p
                .image("ocp/art-dev", None, false, "amd64", &[&layer])
                .manifest
                .digest;
        }
    }
    let payload6 = gz(&tar_of(&[
        (
            "release-manifests/image-references",
            &image_references(&host, "4.14.6", &components6),
        ),
        (
            "release-manifests/release-metadata",
            br#"{"kind":"cincinnati-metadata-v0","version":"4.14.6"}"#,
        ),
    ]));
    let release6 = p.image(
        "ocp/release",
        Some("4.14.6-x86_64"),
        true,
        "amd64",
        &[&base, &payload6],
    );
    // Not a release: no image-references.
    p.image(
        "ocp/release",
        Some("4.14.4-x86_64"),
        true,
        "amd64",
        &[&base],
    );
    // A release whose payload layer carries a traversal entry.
    let evil = gz(&tar_of(&[
        ("release-manifests/image-references", &refs),
        (
            "release-manifests/../../../etc/cron.d/x",
            b"* * * * * root true",
        ),
    ]));
    p.image(
        "ocp/release",
        Some("4.14.5-x86_64"),
        true,
        "amd64",
        &[&evil],
    );
    // The catalog: OCI media types (plain tar layer).
    let (foo_json, bar_yaml) = catalog_files();
    let cat = tar_of(&[
        ("bin/opm", b"elf"),
        ("configs/", b""),
        ("configs/foo/catalog.json", foo_json.as_bytes()),
        ("configs/bar/catalog.yaml", bar_yaml.as_bytes()),
    ]);
    p.image("operators/index", Some("v4.14"), false, "amd64", &[&cat]);
    // Assisted-installer and additional images, by tag.
    for (i, repo) in [
        "ai/assisted-installer-agent-rhel8",
        "ai/assisted-installer-rhel8",
        "ai/assisted-installer-reporter-rhel8",
        "tools/troubleshoot",
        "tools/unwanted-aws-helper",
    ]
    .iter()
    .enumerate()
    {
        let layer = tar_of(&[("bin/tool", &data(100 + i as u64, 64))]);
        let tag = if repo.starts_with("tools/") {
            "latest"
        } else {
            "v1.0.0-89"
        };
        p.image(repo, Some(tag), false, "amd64", &[&layer]);
    }
    Setup {
        dir,
        reg,
        host,
        release: release.manifest.digest,
        release6: release6.manifest.digest,
    }
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text.replace("{{HOST}}", &self.host)).unwrap();
        p
    }

    fn args(&self, out: &str) -> ImagesArgs {
        let auth = self.write("auth.json", "{\"auths\": {}}\n");
        let conf = self.write("registries.conf", "");
        ImagesArgs {
            output: self.path(out),
            registry: RegistryArgs {
                store: Some(self.path("store")),
                authfile: Some(auth),
                registries_conf: Some(conf),
                insecure_registry: vec![self.reg.host()],
                retries: 2,
                jobs: Some(4),
                ..RegistryArgs::default()
            },
            set: ImageSetArgs {
                release_base: format!("{}/ocp/release", self.host),
                ..ImageSetArgs::default()
            },
            quiet: true,
            ..ImagesArgs::default()
        }
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/imageset")
}

/// Compares an output file with its golden file (the registry address as `{{HOST}}`).
fn golden(s: &Setup, out: &Path, name: &str, golden_name: &str) {
    let got = std::fs::read_to_string(out.join(name))
        .unwrap()
        .replace(&s.host, "{{HOST}}")
        .replace(&s.release, "{{RELEASE}}");
    let g = fixtures().join(golden_name);
    if std::env::var_os("PRESTAGE_BLESS").is_some() {
        std::fs::create_dir_all(fixtures()).unwrap();
        std::fs::write(&g, &got).unwrap();
    }
    let want = std::fs::read_to_string(&g).unwrap_or_else(|e| panic!("{}: {e}", g.display()));
    assert_eq!(got, want, "{name} differs from {}", g.display());
}

const IMAGESET: &str = "\
kind: ImageSetConfiguration
apiVersion: mirror.openshift.io/v2alpha1
mirror:
  platform:
    architectures: [amd64]
    channels:
      - name: stable-4.14
        type: ocp
        minVersion: 4.14.3
        maxVersion: 4.14.3
  operators:
    - catalog: {{HOST}}/operators/index:v4.14
      packages:
        - name: foo
        - name: bar
          channels:
            - name: alpha
              minVersion: 0.1.0
              maxVersion: 0.2.0
            - name: beta
  additionalImages:
    - name: {{HOST}}/tools/troubleshoot:latest
    - name: {{HOST}}/tools/unwanted-aws-helper:latest
  blockedImages:
    - name: registry.example/foo/kube-rbac-proxy
";

#[test]
fn release_catalog_and_imageset_config() {
    let s = setup();
    let config = s.write("imageset.yaml", IMAGESET);
    let ai = s.write(
        "ai-images.txt",
        "# assisted-installer images\n{{HOST}}/ai/assisted-installer-agent-rhel8:v1.0.0-89\n\
         {{HOST}}/ai/assisted-installer-rhel8:v1.0.0-89\n\
         {{HOST}}/ai/assisted-installer-reporter-rhel8:v1.0.0-89\n",
    );
    let filter = s.write("filter.yaml", "patterns:\n  - '-aws-'\n");
    let t0 = std::time::Instant::now();
    let mut args = s.args("out");
    args.set.config = Some(config);
    args.set.assisted_images = Some(ai);
    args.set.filter = Some(filter);
    run(args.clone()).unwrap();
    say!("prestage images: {:.1}s", t0.elapsed().as_secs_f64());
    let out = s.path("out");
    golden(&s, &out, "ai-images.txt", "ai-images.txt");
    golden(&s, &out, "ocp-images.txt", "ocp-images.txt");
    golden(&s, &out, "mapping.txt", "mapping.txt");
    golden(&s, &out, "imageset.yaml", "imageset.yaml");

    // Discovery: release image, 3 assisted images, the 14 components of the rule.
    let ai = std::fs::read_to_string(out.join("ai-images.txt")).unwrap();
    assert_eq!(ai.lines().count(), 1 + 3 + 14);
    // Install: release image, 16 components (aws filtered), the reporter, 2 + 4 operator
    // images (foo 1.2.0 bundle and op, its proxy blocked; bar 0.1.0, 0.2.0, 0.3.0 bundles and
    // ops), troubleshoot.
    let ocp = std::fs::read_to_string(out.join("ocp-images.txt")).unwrap();
    assert_eq!(ocp.lines().count(), 1 + 16 + 1 + 2 + 6 + 1);
    assert!(ocp.lines().all(|l| l.contains("@sha256:")));

    // Running again gives the same bytes; the effective imageset.yaml reproduces the lists.
    let mut again = args.clone();
    again.output = s.path("again");
    run(again).unwrap();
    for f in [
        "ai-images.txt",
        "ocp-images.txt",
        "mapping.txt",
        "imageset.yaml",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(s.path("again").join(f)).unwrap(),
            "{f}"
        );
    }
    let mut eff = args;
    eff.output = s.path("effective");
    eff.set.config = Some(out.join("imageset.yaml"));
    run(eff).unwrap();
    assert_eq!(
        std::fs::read(out.join("mapping.txt")).unwrap(),
        std::fs::read(s.path("effective").join("mapping.txt")).unwrap()
    );
}

#[test]
fn release_by_version_alone() {
    let s = setup();
    let mut args = s.args("out");
    args.set.release = Some("4.14.3".into());
    run(args).unwrap();
    let ai = std::fs::read_to_string(s.path("out/ai-images.txt")).unwrap();
    assert_eq!(ai.lines().count(), 1 + 14);
    let ocp = std::fs::read_to_string(s.path("out/ocp-images.txt")).unwrap();
    assert_eq!(ocp.lines().count(), 1 + 17);
    let mapping = std::fs::read_to_string(s.path("out/mapping.txt")).unwrap();
    assert!(
        mapping
            .lines()
            .any(|l| l.ends_with("=localhost/ocp/art-dev:4.14.3-x86_64-etcd")),
        "{mapping}"
    );
    assert!(
        mapping
            .lines()
            .any(|l| l.ends_with("=localhost/ocp/release:4.14.3-x86_64")),
        "{mapping}"
    );

    // The discovery rule overridden on the command line.
    let mut args = s.args("two");
    args.set.release = Some("4.14.3".into());
    args.set.discovery_component = vec!["etcd".into(), "pod".into()];
    run(args.clone()).unwrap();
    let ai = std::fs::read_to_string(s.path("two/ai-images.txt")).unwrap();
    assert_eq!(ai.lines().count(), 1 + 2, "{ai}");
    args.set.discovery_component = vec!["etcd".into(), "no-such-component".into()];
    args.output = s.path("three");
    let e = format!("{:#}", run(args).unwrap_err());
    assert!(
        e.contains(
            "no component no-such-component (named by the discovery rule --discovery-component)"
        ),
        "{e}"
    );
}

#[test]
fn malformed_inputs_fail_clearly() {
    let s = setup();
    let fail = |args: ImagesArgs| {
        let e = format!("{:#}", run(args).unwrap_err());
        say!("error: {e}");
        assert!(!e.contains('\n'), "one line expected: {e}");
        e
    };

    let mut a = s.args("o1");
    a.set.release = Some("4.14.4".into());
    let e = fail(a);
    assert!(
        e.contains("/ocp/release:4.14.4-x86_64: no release-manifests/image-references"),
        "{e}"
    );

    let mut a = s.args("o2");
    a.set.release = Some("4.14.5".into());
    let e = fail(a);
    assert!(e.contains("path traversal"), "{e}");

    let mut a = s.args("o3");
    a.set.config = Some(s.write(
        "bad.yaml",
        &IMAGESET.replace("- name: beta", "- nmae: beta"),
    ));
    let e = fail(a);
    assert!(
        e.contains("bad.yaml: mirror.operators[0].packages[1].channels[1].nmae: unknown field"),
        "{e}"
    );

    let mut a = s.args("o4");
    a.set.config = Some(s.write("broken.yaml", "kind: ImageSetConfiguration\nmirror: [\n"));
    let e = fail(a);
    assert!(e.contains("broken.yaml: "), "{e}");

    let mut a = s.args("o5");
    a.set.config = Some(s.write(
        "nopkg.yaml",
        &IMAGESET.replace("- name: foo", "- name: fooo"),
    ));
    let e = fail(a);
    assert!(
        e.contains("/operators/index:v4.14: no package `fooo`"),
        "{e}"
    );

    let mut a = s.args("o6");
    a.set.config = Some(s.write(
        "nochan.yaml",
        &IMAGESET.replace("- name: beta", "- name: gamma"),
    ));
    let e = fail(a);
    assert!(
        e.contains("package `bar` has no channel `gamma` (channels: alpha, beta)"),
        "{e}"
    );
    for o in ["o1", "o2", "o3", "o4", "o5", "o6"] {
        assert!(!s.path(o).join("mapping.txt").exists(), "{o}");
    }
}

type Heads = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// An update service: answers every GET with `body` (status `status`) and records the request
/// heads; over TLS with `tls` (a server certificate and key). Returns its base URL.
fn update_service(status: u16, body: String, tls: Option<(&Path, &Path)>) -> (String, Heads) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!(
        "{scheme}://{}/api/upgrades_info/v1/graph",
        listener.local_addr().unwrap()
    );
    let config = tls.map(|(crt, key)| {
        let certs = CertificateDer::pem_file_iter(crt)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
        )
    });
    let seen = Heads::default();
    let log = seen.clone();
    let answer = move |conn: &mut dyn ReadWrite| {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match conn.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => return,
            }
        }
        log.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&head).into_owned());
        let _ = write!(
            conn,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.flush();
    };
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            match &config {
                Some(c) => {
                    let server = rustls::ServerConnection::new(c.clone()).unwrap();
                    let mut s = rustls::StreamOwned::new(server, conn);
                    answer(&mut s);
                    s.conn.send_close_notify();
                    let _ = s.flush();
                }
                None => answer(&mut { conn }),
            }
        }
    });
    (url, seen)
}

trait ReadWrite: std::io::Read + Write {}
impl<T: std::io::Read + Write> ReadWrite for T {}

/// stable-4.14 holds 4.14.3, 4.14.6 and 4.14.7 (not pushed); 4.14.4 (not pushed) is only in
/// fast-4.14. Updates: 4.14.3 -> 4.14.4 -> 4.14.6, 4.14.3 -> 4.14.6, 4.14.6 -> 4.14.7.
fn update_graph(s: &Setup) -> String {
    let node = |v: &str, digest: &str, channels: &str| {
        serde_json::json!({
            "version": v,
            "payload": format!("{}/ocp/release@{digest}", s.host),
            "metadata": {
                "io.openshift.upgrades.graph.release.channels": channels,
                "io.openshift.upgrades.graph.release.manifestref": digest,
            }
        })
    };
    let missing = format!("sha256:{}", "ee".repeat(32));
    serde_json::to_string(&serde_json::json!({
        "version": 1,
        "nodes": [
            node("4.14.6", &s.release6, "fast-4.14,stable-4.14"),
            node("4.14.3", &s.release, "fast-4.14,stable-4.14"),
            node("4.14.4", &missing, "fast-4.14"),
            node("4.14.7", &missing, "fast-4.14,stable-4.14"),
        ],
        "edges": [[1, 2], [2, 0], [1, 0], [0, 3]],
        "conditionalEdges": []
    }))
    .unwrap()
}

const CHANNEL_RANGE: &str = "\
kind: ImageSetConfiguration
apiVersion: mirror.openshift.io/v1alpha2
mirror:
  platform:
    channels:
      - name: stable-4.14
        minVersion: 4.14.3
        maxVersion: 4.14.6
";

#[test]
fn release_channel_through_the_update_graph() {
    let s = setup();
    let (url, seen) = update_service(200, update_graph(&s), None);
    let mut args = s.args("out");
    args.set.config = Some(s.write("range.yaml", CHANNEL_RANGE));
    args.set.update_graph = Some(url.clone());
    args.set.controller_image = Some(format!(
        "{}/ai/assisted-installer-reporter-rhel8:v1.0.0-89",
        s.host
    ));
    run(args.clone()).unwrap();
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /api/upgrades_info/v1/graph?channel=stable-4.14&arch=amd64 "),
        "{heads:?}"
    );
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("accept: application/json"),
        "{heads:?}"
    );

    // 4.14.3 and 4.14.6 (4.14.4 is not in stable, 4.14.7 above the range).
    let out = s.path("out");
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let (ai, ocp, mapping) = (
        read("ai-images.txt"),
        read("ocp-images.txt"),
        read("mapping.txt"),
    );
    for d in [&s.release, &s.release6] {
        let r = format!("{}/ocp/release@{d}\n", s.host);
        assert!(ai.contains(&r) && ocp.contains(&r), "{ai}\n{ocp}");
    }
    // Discovery: 2 releases, the 14 components of the rule in 4.14.3 and 4.14.6's own etcd,
    // the controller. Install: 2 releases, 17 + 2 components, the controller.
    assert_eq!(ai.lines().count(), 2 + 14 + 1 + 1, "{ai}");
    assert_eq!(ocp.lines().count(), 2 + 17 + 2 + 1, "{ocp}");
    for tag in [
        "ocp/release:4.14.3-x86_64",
        "ocp/release:4.14.6-x86_64",
        "ocp/art-dev:4.14.3-x86_64-etcd",
        "ocp/art-dev:4.14.6-x86_64-etcd",
        "ocp/art-dev:4.14.6-x86_64-console",
        // Shared by both releases: named after the older.
        "ocp/art-dev:4.14.3-x86_64-hyperkube",
    ] {
        assert!(
            mapping
                .lines()
                .any(|l| l.ends_with(&format!("=localhost/{tag}"))),
            "{tag} not in\n{mapping}"
        );
    }
    // The effective imageset.yaml pins both versions: no update graph is needed to repeat it.
    let eff = read("imageset.yaml");
    assert_eq!(eff.matches("minVersion: 4.14.").count(), 2, "{eff}");
    let mut again = args.clone();
    again.set.config = Some(out.join("imageset.yaml"));
    again.set.update_graph = Some("http://127.0.0.1:9/unreachable".into());
    again.output = s.path("again");
    run(again).unwrap();
    assert_eq!(
        read("mapping.txt"),
        std::fs::read_to_string(s.path("again/mapping.txt")).unwrap()
    );

    // The same graph saved to a file, and the shortest path 4.14.3 -> 4.14.6 (direct).
    let file = s.write("graph.json", &update_graph(&s));
    let mut a = args.clone();
    a.set.config = Some(s.write(
        "path.yaml",
        &CHANNEL_RANGE.replace("4.14.6\n", "4.14.6\n        shortestPath: true\n"),
    ));
    a.set.update_graph = Some(file.display().to_string());
    a.output = s.path("path");
    run(a).unwrap();
    assert_eq!(
        read("mapping.txt"),
        std::fs::read_to_string(s.path("path/mapping.txt")).unwrap()
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    // 4.14.3 named twice (pinned, and through the range) is staged and recorded once.
    let mut a = args.clone();
    a.set.config = Some(s.write(
        "twice.yaml",
        &format!(
            "{CHANNEL_RANGE}      - name: stable-4.14\n        minVersion: 4.14.3\n        \
             maxVersion: 4.14.3\n"
        ),
    ));
    a.set.update_graph = Some(file.display().to_string());
    a.output = s.path("twice");
    run(a).unwrap();
    assert_eq!(
        read("mapping.txt"),
        std::fs::read_to_string(s.path("twice/mapping.txt")).unwrap()
    );
    let eff = std::fs::read_to_string(s.path("twice/imageset.yaml")).unwrap();
    assert_eq!(eff.matches("minVersion: 4.14.").count(), 2, "{eff}");

    // Clear failures: an empty range, a release of the graph that is not in the registry, an
    // update service that answers 404.
    let fail = |mut a: ImagesArgs, config: &str, graph: &str, out: &str| {
        a.set.config = Some(s.write(&format!("{out}.yaml"), config));
        a.set.update_graph = Some(graph.to_string());
        a.output = s.path(out);
        let e = format!("{:#}", run(a).unwrap_err());
        say!("error: {e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(!s.path(out).join("mapping.txt").exists(), "{out}");
        e
    };
    let g = file.display().to_string();
    let e = fail(
        args.clone(),
        &CHANNEL_RANGE
            .replace("4.14.3\n", "4.14.10\n")
            .replace("4.14.6\n", "4.14.12\n"),
        &g,
        "f1",
    );
    assert!(e.contains("channel stable-4.14 has no release from 4.14.10 to 4.14.12 (it has 4.14.3, 4.14.6, 4.14.7)"), "{e}");
    let e = fail(
        args.clone(),
        &CHANNEL_RANGE.replace("4.14.6\n", "4.14.7\n"),
        &g,
        "f2",
    );
    assert!(
        e.contains(&format!(
            "{}/ocp/release@sha256:{}",
            s.host,
            "ee".repeat(32)
        )),
        "{e}"
    );
    let (url404, _) = update_service(404, "{}".into(), None);
    let e = fail(args.clone(), CHANNEL_RANGE, &url404, "f3");
    assert!(
        e.contains("release channel stable-4.14: update graph http://") && e.contains("HTTP 404"),
        "{e}"
    );
}

#[test]
fn update_service_over_tls() {
    let s = setup();
    let ca = registry::Ca::new(&s.path("ca"));
    let (url, seen) = update_service(
        200,
        update_graph(&s),
        Some((&ca.server_crt, &ca.server_key)),
    );
    let host = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut args = s.args("untrusted");
    args.set.config = Some(s.write("range.yaml", CHANNEL_RANGE));
    args.set.update_graph = Some(url);
    // The service's CA is not known yet: refused, naming the service.
    let e = format!("{:#}", run(args.clone()).unwrap_err());
    say!("error: {e}");
    assert!(
        e.contains("release channel stable-4.14: update graph https://")
            && e.contains("certificate"),
        "{e}"
    );
    assert!(!s.path("untrusted").exists());
    // With the CA in a --cert-dir (certs.d convention, HOST:PORT/ca.crt).
    args.registry.cert_dir = vec![ca.cert_dir(&s.path("certs"), &host)];
    args.output = s.path("out");
    run(args).unwrap();
    let ocp = std::fs::read_to_string(s.path("out/ocp-images.txt")).unwrap();
    for d in [&s.release, &s.release6] {
        assert!(
            ocp.contains(&format!("{}/ocp/release@{d}\n", s.host)),
            "{ocp}"
        );
    }
    assert!(!seen.lock().unwrap().is_empty());
}
