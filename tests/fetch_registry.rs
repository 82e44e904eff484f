//! `prestage pull` against Debian's docker-registry serving TLS (a CA made by the test) with
//! htpasswd auth: every manifest kind, shared layers fetched once, byte-exact manifests, platform
//! selection, `store verify`, reruns, and clear errors without secrets.

#[path = "registry/mod.rs"]
mod registry;

use std::path::Path;

use prestage::fetch::store::Store;
use registry::images::{data, Image, Pusher};
use registry::{Ca, Registry, RegistryOptions};

const USER: &str = "tester";
const PASS: &str = "s3cret-Pa55word";
const KIB: usize = 1024;

/// A TLS + htpasswd registry and a plain one on the same storage (to push through).
struct Setup {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    _plain: Registry,
    secure: Registry,
    ca: Ca,
    pusher: Pusher,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let ca = Ca::new(&root.join("ca"));
    let plain = Registry::start(&root.join("plain"), RegistryOptions::default());
    let secure = Registry::start(
        &root.join("secure"),
        RegistryOptions {
            tls: Some(&ca),
            htpasswd: Some((USER, PASS)),
            storage: Some(plain.storage.clone()),
            ..RegistryOptions::default()
        },
    );
    let pusher = Pusher::new(&plain.url());
    Setup {
        _dir: dir,
        root,
        _plain: plain,
        secure,
        ca,
        pusher,
    }
}

struct Pushed {
    refs: Vec<String>,
    /// Blobs the default (amd64) pull needs, each once.
    unique: Vec<registry::images::Desc>,
    arm64: Vec<Image>,
    oci_index: (String, Vec<u8>),
    docker_list: (String, Vec<u8>),
    amd64_instances: Vec<Image>,
    pinned: Image,
}

fn push_all(s: &Setup) -> Pushed {
    let p = &s.pusher;
    let host = s.secure.host();
    let base = data(1, 3 * KIB * KIB);
    let mut refs = Vec::new();
    let mut images = Vec::new();
    for (i, name) in ["one", "two", "three"].iter().enumerate() {
        let own = data(10 + i as u64, 512 * KIB);
        images.push(p.image(
            &format!("apps/{name}"),
            Some("v1"),
            false,
            "amd64",
            &[&base, &own],
        ));
        refs.push(format!("{host}/apps/{name}:v1"));
    }
    let oci_amd = p.image("multi/oci", None, false, "amd64", &[&data(20, 256 * KIB)]);
    let oci_arm = p.image("multi/oci", None, false, "arm64", &[&data(21, 256 * KIB)]);
    let (oci_list, oci_bytes) = p.list(
        "multi/oci",
        "v1",
        false,
        &[("amd64", &oci_amd), ("arm64", &oci_arm)],
    );
    refs.push(format!("{host}/multi/oci:v1"));
    let d_amd = p.image("multi/docker", None, true, "amd64", &[&data(22, 256 * KIB)]);
    let d_arm = p.image("multi/docker", None, true, "arm64", &[&data(23, 256 * KIB)]);
    let (d_list, d_bytes) = p.list(
        "multi/docker",
        "v1",
        true,
        &[("amd64", &d_amd), ("arm64", &d_arm)],
    );
    refs.push(format!("{host}/multi/docker:v1"));
    let legacy = p.image(
        "legacy/app",
        Some("v1"),
        true,
        "amd64",
        &[&base, &data(24, 128 * KIB)],
    );
    refs.push(format!("{host}/legacy/app:v1"));
    let pinned = p.image("pinned/app", None, false, "amd64", &[&data(25, 64 * KIB)]);
    refs.push(format!(
        "docker://{host}/pinned/app@{}",
        pinned.manifest.digest
    ));
    images.extend([oci_amd.clone(), d_amd.clone(), legacy, pinned.clone()]);
    let mut unique: Vec<registry::images::Desc> = Vec::new();
    for img in &images {
        for b in &img.blobs {
            if !unique.iter().any(|u| u.digest == b.digest) {
                unique.push(b.clone());
            }
        }
    }
    Pushed {
        refs,
        unique,
        arm64: vec![oci_arm, d_arm],
        oci_index: (oci_list.digest, oci_bytes),
        docker_list: (d_list.digest, d_bytes),
        amd64_instances: vec![oci_amd, d_amd],
        pinned,
    }
}

fn pull_cmd(s: &Setup, store: &Path) -> std::process::Command {
    let auth = s.root.join("auth.json");
    registry::auth_file(&auth, &s.secure.host(), USER, PASS);
    let certs = s.ca.cert_dir(&s.root.join("certs.d"), &s.secure.host());
    let mut c = registry::prestage(&s.root);
    c.arg("pull")
        .arg("--store")
        .arg(store)
        .arg("--authfile")
        .arg(&auth)
        .arg("--cert-dir")
        .arg(&certs)
        .arg("--json");
    c
}

#[test]
fn pulls_every_kind_over_tls_with_auth_once_per_blob() {
    let s = setup();
    let pushed = push_all(&s);
    let store = s.root.join("store");
    let list = s.root.join("images.txt");
    registry::list_file(&list, &pushed.refs);

    say!(
        "pulling {} images over TLS with htpasswd auth",
        pushed.refs.len()
    );
    let out = registry::ok(
        pull_cmd(&s, &store)
            .arg("--list")
            .arg(&list)
            .arg("-j")
            .arg("4"),
    );
    let sum = registry::summary(&out);
    let unique_bytes: u64 = pushed.unique.iter().map(|b| b.size).sum();
    assert_eq!(sum["images"], 7, "{sum}");
    assert_eq!(sum["blobs_fetched"], pushed.unique.len(), "{sum}");
    assert_eq!(sum["blobs_reused"], 0, "{sum}");
    // Bytes received are exactly the unique blob bytes: the shared base layer came once.
    assert_eq!(sum["bytes"], unique_bytes, "{sum}");

    say!("checking the store: hashes, records, platform selection");
    let n = registry::check_store_hashes(&store);
    assert!(n >= pushed.unique.len() + 7, "{n} files");
    for img in &pushed.arm64 {
        for b in &img.blobs[1..] {
            let p = store.join("blobs/sha256").join(&b.digest[7..]);
            assert!(
                !p.exists(),
                "arm64 layer {} fetched without --all-arches",
                b.digest
            );
        }
    }
    let st = Store::open(&store).unwrap();
    for ((list_digest, list_bytes), (reference, inst)) in
        [pushed.oci_index.clone(), pushed.docker_list.clone()]
            .into_iter()
            .zip([
                (
                    format!("{}/multi/oci:v1", s.secure.host()),
                    &pushed.amd64_instances[0],
                ),
                (
                    format!("{}/multi/docker:v1", s.secure.host()),
                    &pushed.amd64_instances[1],
                ),
            ])
    {
        let img = st.image(&reference).unwrap().expect("recorded");
        assert_eq!(img.digest.to_string(), list_digest);
        assert_eq!(img.manifest, list_bytes, "list kept byte-exact");
        assert_eq!(img.instances.len(), 1);
        assert_eq!(img.instances[0].platform.as_deref(), Some("linux/amd64"));
        assert_eq!(
            img.instances[0].manifest, inst.bytes,
            "instance kept byte-exact"
        );
        assert_eq!(img.instances[0].blobs.len(), inst.blobs.len());
        for b in &img.instances[0].blobs {
            assert_eq!(std::fs::metadata(&b.path).unwrap().len(), b.size);
        }
    }
    let pinned_ref = format!(
        "{}/pinned/app@{}",
        s.secure.host(),
        pushed.pinned.manifest.digest
    );
    let img = st
        .image(&pinned_ref)
        .unwrap()
        .expect("digest-pinned image recorded");
    assert_eq!(img.manifest, pushed.pinned.bytes);
    let legacy = st
        .image(&format!("{}/legacy/app:v1", s.secure.host()))
        .unwrap()
        .expect("v2s2 recorded");
    assert_eq!(legacy.media_type, registry::images::DOCKER_MANIFEST);
    drop(st);

    let v = registry::ok(
        registry::prestage(&s.root)
            .args(["store", "verify", "--store"])
            .arg(&store),
    );
    assert!(v.contains("OK: 7 references"), "{v}");

    say!("rerun: nothing fetched");
    let out = registry::ok(pull_cmd(&s, &store).arg("--list").arg(&list));
    let sum = registry::summary(&out);
    assert_eq!(sum["blobs_fetched"], 0, "{sum}");
    assert_eq!(sum["blobs_reused"], pushed.unique.len(), "{sum}");
    assert_eq!(sum["bytes"], 0, "{sum}");

    say!("--all-arches keeps the arm64 instances too");
    let out = registry::ok(
        pull_cmd(&s, &store)
            .arg("--all-arches")
            .arg(format!("{}/multi/oci:v1", s.secure.host()))
            .arg(format!("{}/multi/docker:v1", s.secure.host())),
    );
    let sum = registry::summary(&out);
    assert_eq!(sum["blobs_fetched"], 4, "{sum}");
    let st = Store::open(&store).unwrap();
    let img = st
        .image(&format!("{}/multi/docker:v1", s.secure.host()))
        .unwrap()
        .unwrap();
    let platforms: Vec<_> = img
        .instances
        .iter()
        .filter_map(|i| i.platform.clone())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    drop(st);
    registry::ok(
        registry::prestage(&s.root)
            .args(["store", "verify", "--store"])
            .arg(&store),
    );
}

#[test]
fn auth_and_tls_failures_are_clear_and_secret_free() {
    let s = setup();
    let host = s.secure.host();
    let img = s
        .pusher
        .image("apps/x", Some("v1"), false, "amd64", &[&data(99, 4096)]);
    let store = s.root.join("store");

    say!("wrong password");
    let bad = s.root.join("bad-auth.json");
    let wrong = "Wr0ng-Secret-Value";
    registry::auth_file(&bad, &host, USER, wrong);
    let certs = s.ca.cert_dir(&s.root.join("certs.d"), &host);
    let err = registry::fails(
        registry::prestage(&s.root)
            .args(["pull", "--store"])
            .arg(&store)
            .arg("--authfile")
            .arg(&bad)
            .arg("--cert-dir")
            .arg(&certs)
            .arg(format!("{host}/apps/x:v1")),
    );
    say!("  error: {}", err.trim());
    assert!(
        err.contains("401") && err.contains(&format!("user `{USER}`")),
        "{err}"
    );
    assert!(err.contains(&format!("{host}/apps/x")), "{err}");
    assert!(
        !err.contains(wrong) && !err.contains(PASS),
        "secret in: {err}"
    );
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{wrong}"));
    assert!(!err.contains(&b64), "secret in: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    say!("no credentials at all");
    let err = registry::fails(
        registry::prestage(&s.root)
            .args(["pull", "-q", "--store"])
            .arg(&store)
            .arg("--cert-dir")
            .arg(&certs)
            .arg(format!("{host}/apps/x:v1")),
    );
    say!("  error: {}", err.trim());
    assert!(err.contains("no credentials"), "{err}");

    say!("unknown image");
    let err = registry::fails(pull_cmd(&s, &store).arg(format!("{host}/apps/missing:v1")));
    say!("  error: {}", err.trim());
    assert!(
        err.contains(&format!("{host}/apps/missing:v1")) && err.contains("404"),
        "{err}"
    );
    assert!(!err.contains(PASS), "secret in: {err}");

    say!("digest-pinned reference to a digest the registry does not have");
    let missing = format!("{host}/apps/x@sha256:{}", "0".repeat(64));
    let err = registry::fails(pull_cmd(&s, &store).arg(&missing));
    say!("  error: {}", err.trim());
    assert!(err.contains("404") && err.contains("apps/x"), "{err}");

    say!("private CA not given: TLS error naming the fix");
    let auth = s.root.join("auth.json");
    let err = registry::fails(
        registry::prestage(&s.root)
            .args(["pull", "--store"])
            .arg(&store)
            .arg("--authfile")
            .arg(&auth)
            .arg(format!("{host}/apps/x:v1")),
    );
    say!("  error: {}", err.trim());
    assert!(
        err.contains("certificate") && err.contains("--cert-dir"),
        "{err}"
    );

    say!("explicit opt-out of verification for that registry only");
    let out = registry::ok(
        registry::prestage(&s.root)
            .args(["pull", "--json", "--store"])
            .arg(&store)
            .arg("--authfile")
            .arg(&auth)
            .arg("--insecure-registry")
            .arg(&host)
            .arg(format!("{host}/apps/x:v1")),
    );
    assert_eq!(registry::summary(&out)["images"], 1);
    let st = Store::open(&store).unwrap();
    let got = st.image(&format!("{host}/apps/x:v1")).unwrap().unwrap();
    assert_eq!(got.manifest, img.bytes);
}
