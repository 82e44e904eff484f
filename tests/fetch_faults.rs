//! `prestage pull` through a counting, fault-injecting proxy in front of Debian's docker-registry:
//! each shared blob is downloaded once (also by two pulls racing on one store), bearer-token
//! auth, transient faults (resets, truncated bodies, flipped bytes, 503, 429 with Retry-After)
//! retried to success with Range resume, permanent faults ending with one clear line, the store
//! never holding a blob whose hash is wrong, and a killed pull resumed by a rerun.

#[path = "registry/mod.rs"]
mod registry;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use registry::images::{data, Image, Pusher};
use registry::proxy::{Fault, Proxy};
use registry::{Registry, RegistryOptions};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    registry: Registry,
    pusher: Pusher,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let registry = Registry::start(&root.join("registry"), RegistryOptions::default());
    let pusher = Pusher::new(&registry.url());
    Setup {
        _dir: dir,
        root,
        registry,
        pusher,
    }
}

/// Three OCI images and a Docker v2s2 image sharing a base layer.
fn push_shared(p: &Pusher, base_seed: u64) -> (Vec<Image>, Vec<u8>) {
    let base = data(base_seed, 2 * MIB);
    let mut v = Vec::new();
    for (i, name) in ["one", "two", "three"].iter().enumerate() {
        let own = data(base_seed + 1 + i as u64, 256 * KIB);
        v.push(p.image(
            &format!("shared/{name}"),
            Some("v1"),
            false,
            "amd64",
            &[&base, &own],
        ));
    }
    v.push(p.image(
        "shared/docker",
        Some("v1"),
        true,
        "amd64",
        &[&base, &data(base_seed + 9, 64 * KIB)],
    ));
    (v, base)
}

fn refs(host: &str) -> Vec<String> {
    ["one", "two", "three", "docker"]
        .iter()
        .map(|n| format!("{host}/shared/{n}:v1"))
        .collect()
}

fn pull(root: &Path, store: &Path, proxy: &Proxy) -> Command {
    let mut c = registry::prestage(root);
    c.arg("pull")
        .arg("--store")
        .arg(store)
        .arg("--insecure-registry")
        .arg(proxy.host())
        .arg("--json");
    c
}

fn verify_store(root: &Path, store: &Path) {
    registry::check_store_hashes(store);
    registry::ok(
        registry::prestage(root)
            .args(["store", "verify", "--store"])
            .arg(store),
    );
}

#[test]
fn shared_blobs_once_with_bearer_auth_even_for_racing_pulls() {
    let s = setup();
    let (images, base) = push_shared(&s.pusher, 100);
    let proxy = Proxy::start_with_bearer(s.registry.port, "robot", "t0ken-pass");
    let auth = s.root.join("auth.json");
    registry::auth_file(&auth, &proxy.host(), "robot", "t0ken-pass");
    let store = s.root.join("store");
    let list = s.root.join("list.txt");
    registry::list_file(&list, &refs(&proxy.host()));

    say!("two pulls of the same images racing on one store");
    // One finds the credentials through --authfile, the other through REGISTRY_AUTH_FILE.
    let spawn = |by_env: bool| {
        let mut c = pull(&s.root, &store, &proxy);
        if by_env {
            c.env("REGISTRY_AUTH_FILE", &auth);
        } else {
            c.arg("--authfile").arg(&auth);
        }
        c.arg("--list")
            .arg(&list)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(false), spawn(true));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sum = registry::summary(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(sum["images"], 4, "{sum}");
    }
    let base_digest = registry::sha256(&base);
    let gets = proxy.blob_gets(&base_digest);
    let served: Vec<_> = gets.iter().filter(|e| e.status == 200).collect();
    assert_eq!(
        served.len(),
        1,
        "shared base layer served {} times: {gets:?}",
        served.len()
    );
    for img in &images {
        for b in &img.blobs {
            let n = proxy
                .blob_gets(&b.digest)
                .iter()
                .filter(|e| e.status == 200)
                .count();
            assert_eq!(n, 1, "blob {} served {n} times", b.digest);
        }
    }
    assert!(
        proxy
            .log()
            .iter()
            .any(|e| e.path.starts_with("/token") && e.status == 200),
        "no token was requested"
    );
    verify_store(&s.root, &store);

    say!("rerun, credentials from $XDG_RUNTIME_DIR/containers/auth.json: no blob requested");
    proxy.clear_log();
    let runtime = s.root.join("run");
    std::fs::create_dir_all(runtime.join("containers")).unwrap();
    std::fs::copy(&auth, runtime.join("containers/auth.json")).unwrap();
    let out = registry::ok(
        pull(&s.root, &store, &proxy)
            .env("XDG_RUNTIME_DIR", &runtime)
            .arg("--list")
            .arg(&list),
    );
    assert_eq!(registry::summary(&out)["blobs_fetched"], 0);
    assert!(
        !proxy.log().iter().any(|e| e.path.contains("/blobs/")),
        "{:?}",
        proxy.log()
    );

    say!("the token service rejects a wrong password");
    let bad = s.root.join("bad.json");
    registry::auth_file(&bad, &proxy.host(), "robot", "not-the-pass");
    let err = registry::fails(
        pull(&s.root, &s.root.join("store2"), &proxy)
            .arg("--authfile")
            .arg(&bad)
            .arg("--list")
            .arg(&list),
    );
    say!("  error: {}", err.trim());
    assert!(err.contains("rejected") && err.contains("`robot`"), "{err}");
    assert!(!err.contains("not-the-pass"), "secret in: {err}");
}

#[test]
fn transient_faults_are_retried_and_resumed() {
    let s = setup();
    let (images, base) = push_shared(&s.pusher, 200);
    let proxy = Proxy::start(s.registry.port);
    let store = s.root.join("store");
    let base_digest = registry::sha256(&base);

    // Manifests: a reset, a 503 and a flipped byte (caught by Docker-Content-Digest).
    proxy.add("/shared/one/manifests/", Fault::ResetBeforeResponse, 1);
    proxy.add("/shared/one/manifests/", Fault::Status(503, None), 1);
    proxy.add("/shared/two/manifests/", Fault::Flip(10), 1);
    // The shared base layer: 429 with Retry-After, a short body, a reset mid-body (both resumed
    // with Range), then a flipped byte (the digest check fails; fetched again whole).
    proxy.add(&base_digest, Fault::Status(429, Some(1)), 1);
    proxy.add(&base_digest, Fault::Truncate(100_000), 1);
    proxy.add(&base_digest, Fault::ResetAfter(MIB as u64), 1);
    proxy.add(&base_digest, Fault::Flip(5000), 1);
    // Other blobs: a reset before the response, a 502.
    proxy.add(&images[1].blobs[2].digest, Fault::ResetBeforeResponse, 2);
    proxy.add(&images[2].blobs[0].digest, Fault::Status(502, None), 1);

    let out = registry::ok(
        pull(&s.root, &store, &proxy)
            .args(["-j", "3"])
            .args(refs(&proxy.host())),
    );
    let sum = registry::summary(&out);
    assert_eq!(sum["images"], 4, "{sum}");
    verify_store(&s.root, &store);

    let gets = proxy.blob_gets(&base_digest);
    let ranges: Vec<Option<&str>> = gets.iter().map(|e| e.range.as_deref()).collect();
    let statuses: Vec<u16> = gets.iter().map(|e| e.status).collect();
    say!("base layer requests: {ranges:?} {statuses:?}");
    // 429, then the short body; the reset mid-body is resumed from what reached the client
    // (bytes still in flight when the connection is reset are lost); the flipped byte fails
    // the digest check and the blob is fetched again whole.
    assert_eq!(ranges.len(), 5, "{gets:?}");
    assert_eq!(
        &ranges[..3],
        [None, None, Some("bytes=100000-")],
        "{gets:?}"
    );
    let resumed_at: u64 = ranges[3]
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("4th request is not a resume: {gets:?}"));
    assert!(
        resumed_at >= 100_000 && resumed_at <= 100_000 + MIB as u64,
        "{gets:?}"
    );
    assert_eq!(ranges[4], None, "{gets:?}");
    assert_eq!(statuses, [429, 200, 206, 206, 200], "{gets:?}");
    for img in &images {
        for b in &img.blobs {
            assert!(store.join("blobs/sha256").join(&b.digest[7..]).is_file());
        }
    }
    assert!(
        std::fs::read_dir(store.join("tmp")).unwrap().all(|e| {
            let p = e.unwrap().path();
            std::fs::metadata(&p).map(|m| m.len() == 0).unwrap_or(true)
        }),
        "partial data left in tmp/"
    );
}

#[test]
fn permanent_faults_end_with_one_clear_line() {
    let s = setup();
    let (images, base) = push_shared(&s.pusher, 300);
    let proxy = Proxy::start(s.registry.port);
    let store = s.root.join("store");
    let base_digest = registry::sha256(&base);
    let one = format!("{}/shared/one:v1", proxy.host());

    say!("a blob corrupted on every attempt");
    proxy.add(&base_digest, Fault::Flip(77), 100);
    let err = registry::fails(pull(&s.root, &store, &proxy).arg("-q").arg(&one));
    say!("  error: {}", err.trim());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&one) && err.contains(&base_digest) && err.contains("digest mismatch"),
        "{err}"
    );
    assert!(!store.join("blobs/sha256").join(&base_digest[7..]).exists());
    verify_store(&s.root, &store);
    proxy.clear_rules();

    say!("403 on a blob");
    let docker = format!("{}/shared/docker:v1", proxy.host());
    proxy.add(&images[3].blobs[2].digest, Fault::Status(403, None), 100);
    let err = registry::fails(pull(&s.root, &store, &proxy).arg("-q").arg(&docker));
    say!("  error: {}", err.trim());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("403") && err.contains(&docker) && err.contains(&images[3].blobs[2].digest),
        "{err}"
    );
    proxy.clear_rules();

    say!("503 for good: gives up after --retries attempts");
    proxy.add("/shared/two/manifests/", Fault::Status(503, None), 100);
    let err = registry::fails(
        pull(&s.root, &store, &proxy)
            .args(["-q", "--retries", "2"])
            .arg(format!("{}/shared/two:v1", proxy.host())),
    );
    say!("  error: {}", err.trim());
    assert!(
        err.contains("503") && err.contains("gave up after 2 attempts"),
        "{err}"
    );
    proxy.clear_rules();

    say!("a digest-pinned manifest served with other bytes");
    let pinned = format!(
        "{}/shared/three@{}",
        proxy.host(),
        images[2].manifest.digest
    );
    proxy.add("/shared/three/manifests/", Fault::Flip(3), 100);
    let err = registry::fails(
        pull(&s.root, &store, &proxy)
            .args(["-q", "--retries", "2"])
            .arg(&pinned),
    );
    say!("  error: {}", err.trim());
    assert!(
        err.contains("hashes to") && err.contains(&images[2].manifest.digest),
        "{err}"
    );
    proxy.clear_rules();

    say!("without faults the same store completes");
    registry::ok(pull(&s.root, &store, &proxy).arg(&one).arg(&pinned));
    verify_store(&s.root, &store);
}

#[test]
fn killed_pull_is_resumed_by_a_rerun() {
    let s = setup();
    let big = data(400, 200 * MIB);
    let img = s.pusher.image(
        "big/app",
        Some("v1"),
        false,
        "amd64",
        &[&big, &data(401, 64 * KIB)],
    );
    drop(big);
    let big_digest = img.blobs[1].digest.clone();
    let big_size = img.blobs[1].size;
    let proxy = Proxy::start(s.registry.port);
    let store = s.root.join("store");
    let reference = format!("{}/big/app:v1", proxy.host());
    let stall_at = 64 * MIB as u64;
    proxy.add(&big_digest, Fault::Stall(stall_at), 1);

    say!("pull stalls after {stall_at} bytes of the 200 MiB layer; killing it");
    let mut child = pull(&s.root, &store, &proxy)
        .arg("-q")
        .arg(&reference)
        .spawn()
        .unwrap();
    let part = store.join("tmp").join(format!("{}.part", &big_digest[7..]));
    let deadline = Instant::now() + Duration::from_secs(180);
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < stall_at {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before it was killed"
        );
        assert!(
            Instant::now() < deadline,
            "the pull never reached the stall point"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!store.join("blobs/sha256").join(&big_digest[7..]).exists());
    assert_eq!(std::fs::metadata(&part).unwrap().len(), stall_at);

    // The proxy logs the stalled request once it sees the client gone; wait for that so the
    // log holds only the rerun's requests.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !proxy
        .blob_gets(&big_digest)
        .iter()
        .any(|e| e.fault.as_deref().is_some_and(|f| f.starts_with("Stall")))
    {
        assert!(
            Instant::now() < deadline,
            "the proxy never saw the killed pull go"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    say!("rerun resumes with Range");
    proxy.clear_log();
    let out = registry::ok(pull(&s.root, &store, &proxy).arg(&reference));
    assert_eq!(registry::summary(&out)["images"], 1);
    let gets = proxy.blob_gets(&big_digest);
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes={stall_at}-").as_str())
    );
    assert_eq!(gets[0].status, 206);
    assert_eq!(gets[0].body_bytes, big_size - stall_at);
    verify_store(&s.root, &store);
}
