//! `prestage pull` from local copies (an OCI layout built by the test, and containers `dir:`
//! copies made from it by skopeo), `store prune`, and bad input (list files, references, auth
//! files, registries.conf) failing early with one line naming the file and the problem.

#[path = "registry/mod.rs"]
mod registry;

use std::path::Path;

use prestage::fetch::store::Store;
use registry::images::{data, OCI_INDEX, OCI_MANIFEST};
use serde_json::json;

/// Writes a blob into an OCI layout; returns its descriptor.
fn put(layout: &Path, bytes: &[u8], media_type: &str) -> serde_json::Value {
    let d = registry::sha256(bytes);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&d[7..]), bytes).unwrap();
    json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
}

fn image(layout: &Path, arch: &str, layers: &[&[u8]]) -> serde_json::Value {
    let ls: Vec<_> = layers
        .iter()
        .map(|l| put(layout, l, "application/vnd.oci.image.layer.v1.tar"))
        .collect();
    let cfg = json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": ls.iter().map(|l| l["digest"].clone()).collect::<Vec<_>>()}});
    let cfg = put(
        layout,
        &serde_json::to_vec(&cfg).unwrap(),
        "application/vnd.oci.image.config.v1+json",
    );
    let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": ls});
    put(
        layout,
        &serde_json::to_vec_pretty(&m).unwrap(),
        OCI_MANIFEST,
    )
}

fn write_index(layout: &Path, entries: &[(&str, &serde_json::Value)]) {
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    let ms: Vec<_> = entries
        .iter()
        .map(|(name, d)| {
            let mut d = (*d).clone();
            d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
            d
        })
        .collect();
    let idx = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": ms});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec_pretty(&idx).unwrap(),
    )
    .unwrap();
}

fn pull(root: &Path, store: &Path) -> std::process::Command {
    let mut c = registry::prestage(root);
    c.args(["pull", "--json", "--store"]).arg(store);
    c
}

#[test]
fn oci_layout_and_dir_sources_then_prune() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let layout = root.join("layout");
    let base = data(1, 300 * 1024);
    let v1 = image(&layout, "amd64", &[&base, &data(2, 1000)]);
    let amd = image(&layout, "amd64", &[&base, &data(3, 2000)]);
    let arm = image(&layout, "arm64", &[&data(4, 3000)]);
    let mut amd_e = amd.clone();
    amd_e["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let mut arm_e = arm.clone();
    arm_e["platform"] = json!({"os": "linux", "architecture": "arm64"});
    let list = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [arm_e, amd_e]});
    let list = put(
        &layout,
        &serde_json::to_vec_pretty(&list).unwrap(),
        OCI_INDEX,
    );
    write_index(&layout, &[("v1", &v1), ("v2", &list)]);
    let store = root.join("store");
    let l = layout.display();

    say!("oci: layout, a plain image and an index");
    let out = registry::ok(
        pull(root, &store)
            .arg(format!("oci:{l}:v1"))
            .arg(format!("oci:{l}:v2")),
    );
    let sum = registry::summary(&out);
    assert_eq!(sum["images"], 2, "{sum}");
    // base shared: v1 (config, base, own) + v2 amd64 (config, own) = 5 blobs.
    assert_eq!(sum["blobs_fetched"], 5, "{sum}");
    let st = Store::open(&store).unwrap();
    let img = st.image(&format!("oci:{l}:v2")).unwrap().unwrap();
    assert_eq!(img.digest.to_string(), list["digest"].as_str().unwrap());
    assert_eq!(img.instances.len(), 1);
    assert_eq!(
        img.instances[0].digest.to_string(),
        amd["digest"].as_str().unwrap()
    );
    drop(st);

    say!("a warm pull with nothing to fetch rewrites no record");
    let records = || -> Vec<(std::path::PathBuf, i64, i64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let mut v: Vec<_> = std::fs::read_dir(store.join("refs"))
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let m = std::fs::metadata(&p).unwrap();
                (p, m.mtime_nsec(), m.ctime_nsec(), m.ino())
            })
            .collect();
        v.sort();
        v
    };
    let before = records();
    let out = registry::ok(
        pull(root, &store)
            .arg(format!("oci:{l}:v1"))
            .arg(format!("oci:{l}:v2")),
    );
    let sum = registry::summary(&out);
    assert_eq!(
        (sum["images"].as_u64(), sum["blobs_fetched"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(records(), before, "a record was rewritten");

    let err = registry::fails(pull(root, &store).arg(format!("oci:{l}")));
    say!("  error: {}", err.trim());
    assert!(
        err.contains("several images") && err.contains("v1, v2"),
        "{err}"
    );

    say!("dir: copies written by skopeo (a single image, and a list with --all)");
    let skopeo = registry::require("skopeo", "skopeo");
    let d1 = root.join("dir1");
    let d2 = root.join("dir2");
    registry::ok(
        std::process::Command::new(&skopeo)
            .args(["copy", "--preserve-digests"])
            .arg(format!("oci:{l}:v1"))
            .arg(format!("dir:{}", d1.display())),
    );
    registry::ok(
        std::process::Command::new(&skopeo)
            .args(["copy", "--all", "--preserve-digests"])
            .arg(format!("oci:{l}:v2"))
            .arg(format!("dir:{}", d2.display())),
    );
    let store2 = root.join("store2");
    let out = registry::ok(
        pull(root, &store2)
            .arg("--all-arches")
            .arg(format!("dir:{}", d1.display()))
            .arg(format!("dir:{}", d2.display())),
    );
    let sum = registry::summary(&out);
    assert_eq!(sum["images"], 2, "{sum}");
    let st = Store::open(&store2).unwrap();
    let img = st.image(&format!("dir:{}", d2.display())).unwrap().unwrap();
    assert_eq!(img.instances.len(), 2);
    assert_eq!(img.digest.to_string(), list["digest"].as_str().unwrap());
    let img = st.image(&format!("dir:{}", d1.display())).unwrap().unwrap();
    assert_eq!(img.digest.to_string(), v1["digest"].as_str().unwrap());
    drop(st);
    registry::check_store_hashes(&store2);

    say!("a corrupted local blob is refused and never stored");
    let bad_layer = data(5, 5000);
    let v3 = image(&layout, "amd64", &[&bad_layer]);
    let bad_digest = registry::sha256(&bad_layer);
    std::fs::write(
        layout.join("blobs/sha256").join(&bad_digest[7..]),
        data(6, 5000),
    )
    .unwrap();
    write_index(&layout, &[("v1", &v1), ("v2", &list), ("v3", &v3)]);
    let err = registry::fails(pull(root, &store).arg(format!("oci:{l}:v3")));
    say!("  error: {}", err.trim());
    assert!(
        err.contains("digest mismatch") && err.contains(&bad_digest),
        "{err}"
    );
    assert!(!store.join("blobs/sha256").join(&bad_digest[7..]).exists());

    say!("the tag moves: prune drops what only the old image needed");
    let v1b = image(&layout, "amd64", &[&base, &data(7, 1500)]);
    write_index(&layout, &[("v1", &v1b), ("v2", &list)]);
    registry::ok(pull(root, &store).arg(format!("oci:{l}:v1")));
    std::fs::write(store.join("tmp/leftover.part"), b"junk").unwrap();
    let out = registry::ok(
        registry::prestage(root)
            .args(["store", "prune", "--store"])
            .arg(&store),
    );
    say!("  {}", out.trim());
    let old_own = registry::sha256(&data(2, 1000));
    assert!(
        !store.join("blobs/sha256").join(&old_own[7..]).exists(),
        "old layer kept"
    );
    assert!(!store
        .join("manifests/sha256")
        .join(&v1["digest"].as_str().unwrap()[7..])
        .exists());
    assert!(
        store
            .join("blobs/sha256")
            .join(&registry::sha256(&base)[7..])
            .exists(),
        "shared base pruned"
    );
    assert!(!store.join("tmp/leftover.part").exists());
    let st = Store::open(&store).unwrap();
    assert!(st.image(&format!("oci:{l}:v1")).unwrap().is_some());
    assert!(st.image(&format!("oci:{l}:v2")).unwrap().is_some());
    drop(st);
    let v = registry::ok(
        registry::prestage(root)
            .args(["store", "verify", "--store"])
            .arg(&store),
    );
    assert!(v.contains("OK: 2 references"), "{v}");

    say!("store verify finds a corrupted blob");
    let victim = store
        .join("blobs/sha256")
        .join(&registry::sha256(&base)[7..]);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let err = registry::fails(
        registry::prestage(root)
            .args(["store", "verify", "--store"])
            .arg(&store),
    );
    say!("  error: {}", err.trim());
    assert!(
        err.contains(&registry::sha256(&base)) && err.contains("hashes to"),
        "{err}"
    );
}

#[test]
fn bad_input_fails_early_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let one_line = |err: &str| {
        say!("  error: {}", err.trim());
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    };

    let list = root.join("images.txt");
    std::fs::write(
        &list,
        "# release images\nquay.io/openshift-release-dev/ocp-release@sha256:0000000000000000000000000000000000000000000000000000000000000000\n\nquay.io/Bad/Name:v1\n",
    )
    .unwrap();
    let err = registry::fails(pull(root, &store).arg("--list").arg(&list));
    one_line(&err);
    assert!(
        err.contains(&format!("{}:4:", list.display())) && err.contains("Bad"),
        "{err}"
    );

    std::fs::write(&list, "quay.io/a/b:v1 quay.io/c/d:v2\n").unwrap();
    let err = registry::fails(pull(root, &store).arg("--list").arg(&list));
    one_line(&err);
    assert!(err.contains(&format!("{}:1:", list.display())), "{err}");

    let err = registry::fails(pull(root, &store).arg("quay.io/a@sha256:1234"));
    one_line(&err);
    assert!(err.contains("quay.io/a@sha256:1234"), "{err}");

    let auth = root.join("auth.json");
    std::fs::write(
        &auth,
        "{\"auths\": {\"quay.io\": {\"auth\": \"c2VjcmV0LXdpdGhvdXQtY29sb24=\"}}}",
    )
    .unwrap();
    let err = registry::fails(
        pull(root, &store)
            .arg("--authfile")
            .arg(&auth)
            .arg("quay.io/a/b:v1"),
    );
    one_line(&err);
    assert!(
        err.contains(&auth.display().to_string()) && err.contains("auths.\"quay.io\".auth"),
        "{err}"
    );
    assert!(!err.contains("secret-without-colon"), "{err}");
    std::fs::write(&auth, "{\"auths\": {\"quay.io\": {\"auth\": \"x\",}}}").unwrap();
    let err = registry::fails(
        pull(root, &store)
            .arg("--authfile")
            .arg(&auth)
            .arg("quay.io/a/b:v1"),
    );
    one_line(&err);
    assert!(err.contains("line 1"), "{err}");

    let conf = root.join("registries.conf");
    std::fs::write(
        &conf,
        "[[registry]]\nlocation = \"quay.io\"\n\n[[registry.mirror]]\nlocation = \n",
    )
    .unwrap();
    let err = registry::fails(
        pull(root, &store)
            .arg("--registries-conf")
            .arg(&conf)
            .arg("quay.io/a/b:v1"),
    );
    one_line(&err);
    assert!(err.contains(&format!("{}:5:", conf.display())), "{err}");
    std::fs::write(&conf, "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"m.example:5000/q\"\npull-from-mirror = \"sometimes\"\n").unwrap();
    let err = registry::fails(
        pull(root, &store)
            .arg("--registries-conf")
            .arg(&conf)
            .arg("quay.io/a/b:v1"),
    );
    one_line(&err);
    assert!(
        err.contains("registry[0].mirror[0].pull-from-mirror"),
        "{err}"
    );

    let err = registry::fails(
        pull(root, &store)
            .arg("--cert-dir")
            .arg(root.join("nope"))
            .arg("quay.io/a/b:v1"),
    );
    one_line(&err);
    assert!(err.contains("--cert-dir"), "{err}");
}
