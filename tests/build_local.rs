//! `prestage build` offline, from the bundled `fixtures/demo-images` (a synthetic release as an
//! OCI layout, assisted-installer and additional images, served by digest through
//! `--oci-mirror`), as `cargo xtask demo` runs it.
//!
//! Proves: both payloads and both image formats build and verify with a built-in layout name;
//! the report lists every image and the block map sits beside raw images only; without a TTY
//! the progress is plain lines; a build killed while writing the image leaves nothing at the
//! output path, and the rerun sweeps the dead run's files and completes; a build killed while
//! `--fill-store` copies the blobs it read in place into the store (after the image) leaves the
//! image in place and verified, and the rerun completes the store, from which the next build
//! reads. Runs are caught mid-write with the test-only pause hook
//! (`PRESTAGE_TEST_PAUSE_AFTER_BYTES`, `PRESTAGE_TEST_PAUSE_IN`), not with timers.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{repo_root, run, scratch, temp_leftovers};
use rustix::process::{waitpid, Pid, WaitOptions};
use serde_json::Value;

const PAUSE: &str = "PRESTAGE_TEST_PAUSE_AFTER_BYTES";
const PAUSE_IN: &str = "PRESTAGE_TEST_PAUSE_IN";

fn fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures/demo-images").join(name)
}

/// `prestage build` of the fixture into `out` with `store`.
fn build_cmd(dir: &Path, payload: &str, out: &Path) -> Command {
    let auth = dir.join("auth.json");
    std::fs::write(&auth, "{\"auths\": {}}\n").unwrap();
    let conf = dir.join("registries.conf");
    std::fs::write(&conf, "").unwrap();
    let mut c = Command::new(common::bin());
    c.arg("build")
        .arg("--release")
        .arg(format!("oci:{}:4.14.3", fixture("oci").display()))
        .arg("--assisted-images")
        .arg(fixture("assisted-images.txt"))
        .arg("--additional-images")
        .arg(fixture("additional-images.txt"))
        .arg("--oci-mirror")
        .arg(fixture("oci"))
        .args(["--layout", "demo", "--payload", payload, "--store"])
        .arg(dir.join("store"))
        .arg("--authfile")
        .arg(&auth)
        .arg("--registries-conf")
        .arg(&conf)
        .arg("-o")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH)
        .env("HOME", dir)
        .env_remove(PAUSE)
        .env_remove(PAUSE_IN)
        .stdin(Stdio::null());
    c
}

#[test]
fn both_payloads_and_formats_build_and_verify() {
    let dir = scratch("build-local");
    for (payload, name) in [("shared", "a.raw"), ("ztp", "b.qcow2")] {
        let out = dir.path().join(name);
        let r = run(build_cmd(dir.path(), payload, &out).arg("--json")).success();
        let s: Value = serde_json::from_str(&r.stdout).expect("the --json summary");
        assert_eq!(s["payload"], payload);
        // Release, 18 components, 3 assisted-installer images, 1 additional image.
        assert_eq!(s["images"], 23);
        let report: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("{name}.report.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(report["format"], "prestage-report/1");
        assert_eq!(report["images"].as_array().unwrap().len(), 23);
        for i in report["images"].as_array().unwrap() {
            let src = i["source"].as_str().unwrap();
            assert!(
                src.contains("@sha256:") && i["digest"].as_str() == src.rsplit('@').next(),
                "{i}"
            );
            assert!(i["bytes"].as_u64().unwrap() > 0);
        }
        let bmap = dir.path().join(format!("{name}.bmap"));
        assert_eq!(bmap.exists(), name.ends_with(".raw"), "{}", bmap.display());
        assert!(dir.path().join(format!("{name}.node")).is_dir());
        let v = run(Command::new(common::bin()).arg("verify").arg(&out)).success();
        note!("{payload} {name}: {}", v.stdout.trim());
        // No TTY: the progress is plain lines, no bar escape sequences.
        assert!(
            !r.stderr.contains('\r') && !r.stderr.contains('\x1b'),
            "{}",
            r.stderr
        );
    }
}

/// Starts `cmd` with the pause hook at `after` bytes; returns the stopped child.
fn start_paused(cmd: &mut Command, after: u64, log: &Path) -> std::process::Child {
    let child = cmd
        .env(PAUSE, after.to_string())
        .stdout(Stdio::null())
        .stderr(File::create(log).unwrap())
        .spawn()
        .expect("starting prestage build");
    let st = waitpid(Some(Pid::from_child(&child)), WaitOptions::UNTRACED)
        .expect("waitpid")
        .expect("a status");
    assert!(
        st.1.stopped(),
        "the build ended instead of stopping at {after} bytes: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    child
}

#[test]
fn a_killed_build_leaves_nothing_and_a_killed_store_fill_leaves_the_image() {
    let dir = scratch("build-killed");
    let out = dir.path().join("site.raw");
    let log = dir.path().join("stderr.txt");
    // Killed while writing the image (1 MiB in), blobs read in place from the layout.
    let mut child = start_paused(
        build_cmd(dir.path(), "ztp", &out).env(PAUSE_IN, "image"),
        1 << 20,
        &log,
    );
    let left = temp_leftovers(dir.path(), "site.raw");
    assert!(
        left.iter().any(|l| l.contains(".partial-")),
        "no partial image while writing: {left:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "something at the output path after SIGKILL");
    for f in ["site.raw.report.json", "site.raw.bmap"] {
        assert!(!dir.path().join(f).exists(), "{f} before the image");
    }
    let r = run(build_cmd(dir.path(), "ztp", &out).arg("--json")).success();
    assert!(
        r.stderr
            .contains("removed what an interrupted run left beside it"),
        "{}",
        r.stderr
    );
    assert_eq!(temp_leftovers(dir.path(), "site.raw"), Vec::<String>::new());
    run(Command::new(common::bin()).arg("verify").arg(&out)).success();
    note!("killed while writing the image: nothing at the output path; the rerun swept the dead run's files and verifies");

    // Killed while --fill-store copies into the store, after the image is in place.
    let filled = dir.path().join("filled.raw");
    let mut child = start_paused(
        build_cmd(dir.path(), "shared", &filled)
            .arg("--fill-store")
            .env(PAUSE_IN, "store"),
        1,
        &log,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        filled.exists(),
        "the image is not in place before the store is filled"
    );
    run(Command::new(common::bin()).arg("verify").arg(&filled)).success();
    let r =
        run(build_cmd(dir.path(), "shared", &filled).args(["--fill-store", "--json"])).success();
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    let filled_blobs = s["filled"]["blobs_fetched"].as_u64().unwrap();
    assert!(filled_blobs > 0, "{}", s["filled"]);
    let r = run(build_cmd(dir.path(), "shared", &out).arg("--json")).success();
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["pull"]["blobs_in_place"], 0, "the store is not complete");
    assert_eq!(s["pull"]["blobs_fetched"], 0);
    note!("killed while filling the store: the image was in place and verifies; the rerun copied {filled_blobs} blobs and the next build reads only the store");
}
