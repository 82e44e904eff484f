//! Mirrors from a registries.conf: digest-pinned references are served by a digest-only mirror
//! (a second Debian docker-registry, plain HTTP) with the prefix rewritten, tags go to the
//! registry itself, and a mirror that lacks an image or fails on a blob falls back to the next
//! source. Counting proxies in front of both registries tell who served what.

#[path = "registry/mod.rs"]
mod registry;

use std::path::Path;

use registry::images::{data, Pusher};
use registry::proxy::{Fault, Proxy};
use registry::{served, Registry, RegistryOptions};

#[test]
fn digest_only_mirror_with_prefix_rewriting_and_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let primary = Registry::start(&root.join("primary"), RegistryOptions::default());
    let mirror = Registry::start(&root.join("mirror"), RegistryOptions::default());
    let pp = Proxy::start(primary.port);
    let pm = Proxy::start(mirror.port);

    let base = data(1, 512 * 1024);
    let own = data(2, 64 * 1024);
    let release = Pusher::new(&primary.url()).image(
        "ocp/release",
        Some("v1"),
        false,
        "amd64",
        &[&base, &own],
    );
    Pusher::new(&mirror.url()).copy("mirror/ocp/release", &release, &[&base, &own]);
    let other =
        Pusher::new(&primary.url()).image("ocp/other", None, false, "amd64", &[&data(3, 4096)]);

    let conf = root.join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "unqualified-search-registries = []\n\n\
             [[registry]]\nprefix = \"{p}/ocp\"\nlocation = \"{p}/ocp\"\ninsecure = true\n\n\
             [[registry.mirror]]\nlocation = \"{m}/mirror/ocp\"\ninsecure = true\npull-from-mirror = \"digest-only\"\n",
            p = pp.host(),
            m = pm.host()
        ),
    )
    .unwrap();
    let pull = |store: &Path| {
        let mut c = registry::prestage(root);
        c.args(["pull", "--json", "--retries", "2", "--registries-conf"])
            .arg(&conf)
            .arg("--store")
            .arg(store);
        c
    };

    say!("digest-pinned: served by the mirror, rewritten to mirror/ocp/release");
    let pinned = format!("{}/ocp/release@{}", pp.host(), release.manifest.digest);
    registry::ok(pull(&root.join("s1")).arg(&pinned));
    assert_eq!(served(&pm, "/v2/mirror/ocp/release/blobs/"), 3);
    assert_eq!(served(&pm, "/v2/mirror/ocp/release/manifests/"), 1);
    assert!(pp.log().is_empty(), "primary asked: {:?}", pp.log());
    let st = prestage::fetch::store::Store::open(&root.join("s1")).unwrap();
    assert!(
        st.image(&pinned).unwrap().is_some(),
        "recorded under the requested reference"
    );
    drop(st);

    say!("tag: the digest-only mirror is skipped");
    pm.clear_log();
    registry::ok(pull(&root.join("s2")).arg(format!("{}/ocp/release:v1", pp.host())));
    assert!(
        pm.log().is_empty(),
        "mirror asked for a tag: {:?}",
        pm.log()
    );
    assert_eq!(served(&pp, "/v2/ocp/release/blobs/"), 3);

    say!("image missing from the mirror: falls back to the registry");
    pp.clear_log();
    let other_ref = format!("{}/ocp/other@{}", pp.host(), other.manifest.digest);
    registry::ok(pull(&root.join("s3")).arg(&other_ref));
    assert!(pm
        .log()
        .iter()
        .any(|e| e.path.contains("/mirror/ocp/other/manifests/") && e.status == 404));
    assert_eq!(served(&pp, "/v2/ocp/other/blobs/"), 2);

    say!("mirror failing on a blob: that blob comes from the registry");
    pp.clear_log();
    pm.clear_log();
    let own_digest = registry::sha256(&own);
    pm.add(&own_digest, Fault::Status(503, None), 100);
    registry::ok(pull(&root.join("s4")).arg(&pinned));
    assert_eq!(served(&pm, "/v2/mirror/ocp/release/blobs/"), 2);
    assert_eq!(
        served(&pp, &format!("/v2/ocp/release/blobs/{own_digest}")),
        1
    );
    registry::ok(
        registry::prestage(root)
            .args(["store", "verify", "--store"])
            .arg(root.join("s4")),
    );
}
