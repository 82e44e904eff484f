//! `prestage build` of a release-shaped image set: `fixtures/release-small`, the same shape as
//! the release-scale benchmark's (190 images: a release of 183 components, three
//! assisted-installer images, three OCI indexes; Docker v2s2 and OCI manifests; a base layer
//! under nearly all, group layers, own layers), with every MiB made 256 bytes. Offline: the
//! layout serves every image by digest (`--oci-mirror`).
//!
//! Proves:
//! - a cold build reads the layout's blobs in place (nothing is copied into the store), and
//!   `--fill-store` copies them afterwards so that the next build reads them from the store and
//!   gives the same bytes;
//! - the block map, computed while the image is written, is what bmaptool accepts, also for a
//!   partition that does not start on a 4 KiB boundary;
//! - a damaged blob in the layout fails the build naming the blob, the image and the file, and
//!   leaves nothing at the output path;
//! - output at scale: without a terminal one line per stage and a summary, no line per image
//!   (`-v` adds them, `-q` prints nothing); on a terminal one live line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{repo_root, run, scratch};
use serde_json::Value;

fn fixture() -> PathBuf {
    repo_root().join("fixtures/release-small")
}

/// `prestage build` of the fixture (layout `fixture_dir/oci`) into `out`.
fn build_cmd(dir: &Path, fixture_dir: &Path, layout: &str, out: &Path) -> Command {
    let auth = dir.join("auth.json");
    std::fs::write(&auth, "{\"auths\": {}}\n").unwrap();
    let conf = dir.join("registries.conf");
    std::fs::write(&conf, "").unwrap();
    let oci = fixture_dir.join("oci");
    let mut c = Command::new(common::bin());
    c.arg("build")
        .arg("--release")
        .arg(format!("oci:{}:4.12.0", oci.display()))
        .arg("--assisted-images")
        .arg(fixture_dir.join("assisted-images.txt"))
        .arg("--additional-images")
        .arg(fixture_dir.join("additional-images.txt"))
        .arg("--oci-mirror")
        .arg(&oci)
        .args(["--layout", layout, "--store"])
        .arg(dir.join("store"))
        .arg("--authfile")
        .arg(&auth)
        .arg("--registries-conf")
        .arg(&conf)
        .arg("-o")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH)
        .env("HOME", dir)
        .stdin(Stdio::null());
    c
}

fn blobs_in(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn cold_builds_read_in_place_and_fill_store_feeds_the_next() {
    let dir = scratch("release-cold");
    let cold = dir.path().join("cold.raw");
    let r = run(build_cmd(dir.path(), &fixture(), "demo", &cold).arg("--json")).success();
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["images"], 190, "{}", r.stdout);
    let in_place = s["pull"]["blobs_in_place"].as_u64().unwrap();
    assert!(in_place > 500, "{}", s["pull"]);
    assert_eq!(s["pull"]["blobs_fetched"], 0);
    assert_eq!(
        blobs_in(&dir.path().join("store")),
        0,
        "a cold build copied blobs into the store"
    );
    assert!(s["filled"].is_null());
    run(Command::new(common::bin()).arg("verify").arg(&cold)).success();
    note!("cold: {in_place} blobs read in place, none copied into the store; verified");

    // --fill-store: the image first, then the store gets what was read in place.
    let filled = dir.path().join("filled.raw");
    let r =
        run(build_cmd(dir.path(), &fixture(), "demo", &filled).args(["--json", "--fill-store"]))
            .success();
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["filled"]["blobs_fetched"].as_u64(), Some(in_place));
    assert_eq!(blobs_in(&dir.path().join("store")) as u64, in_place);

    // The next build reads the store, and gives the same bytes.
    let warm = dir.path().join("warm.raw");
    let r = run(build_cmd(dir.path(), &fixture(), "demo", &warm).arg("--json")).success();
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["pull"]["blobs_in_place"], 0);
    assert_eq!(s["pull"]["blobs_reused"].as_u64(), Some(in_place));
    common::assert_same_bytes(&cold, &warm);
    common::assert_same_bytes(
        &dir.path().join("cold.raw.bmap"),
        &dir.path().join("warm.raw.bmap"),
    );
    note!("--fill-store: {in_place} blobs into the store after the image; the warm build reads them there and gives the same image and block map");
}

#[test]
fn the_block_map_written_with_the_image_is_what_bmaptool_checks() {
    let bmaptool = common::require("bmaptool", "bmap-tools");
    let dir = scratch("release-bmap");
    // A data partition starting 512 bytes past a 4 KiB boundary: block-map blocks straddle
    // filesystem blocks.
    let layout = common::write_layout(
        dir.path(),
        "odd.toml",
        "[disk]\nsize = \"1GiB\"\nalignment = \"512B\"\nguid = \"8d5d6c9c-7c8e-4d6b-9a51-2c1c0d4c5e01\"\n\n\
         [[partition]]\nlabel = \"data\"\nstart = 4097\nsize = \"700MiB\"\nfilesystem = \"xfs\"\n\
         guid = \"6a1c5a0e-3a51-4f2b-8d55-1a9f0b7c2d11\"\nfs_uuid = \"3c1f7b8e-21d4-4e0c-9b64-5d0a8e7f6a21\"\n",
    );
    for (name, layout) in [
        ("demo.raw", "demo".to_string()),
        ("odd.raw", layout.display().to_string()),
    ] {
        let img = dir.path().join(name);
        run(&mut build_cmd(dir.path(), &fixture(), &layout, &img)).success();
        let bmap = dir.path().join(format!("{name}.bmap"));
        let disk = dir.path().join("disk.img");
        run(Command::new(&bmaptool)
            .args(["copy", "--bmap"])
            .arg(&bmap)
            .arg(&img)
            .arg(&disk))
        .success();
        common::assert_same_bytes(&img, &disk);
        std::fs::remove_file(&disk).unwrap();
        let text = std::fs::read_to_string(&bmap).unwrap();
        note!(
            "{name}: bmaptool copy checked {} ranges and wrote an identical disk",
            text.matches("<Range").count()
        );
    }
}

#[test]
fn a_damaged_layout_blob_fails_naming_blob_image_and_file() {
    let dir = scratch("release-damaged");
    let copy = dir.path().join("fixture");
    run(Command::new("cp").arg("-r").arg(fixture()).arg(&copy)).success();
    // The first component's own layer: the last layer of its manifest.
    let components = std::fs::read_to_string(copy.join("components.txt")).unwrap();
    let first = components.lines().next().unwrap().to_string();
    let blobs = copy.join("oci/blobs/sha256");
    let m: Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&first[first.len() - 64..])).unwrap())
            .unwrap();
    let layer = m["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = blobs.join(&layer[7..]);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    for payload in ["shared", "ztp"] {
        let out = dir.path().join(format!("{payload}.raw"));
        let r = run(build_cmd(dir.path(), &copy, "demo", &out).args(["--payload", payload]));
        assert!(!r.status.success(), "{payload}: built from a damaged blob");
        let last = r
            .stderr
            .trim()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        assert!(
            last.contains(&layer[7..])
                && last.contains(first.rsplit('@').next().unwrap())
                && last.contains(&path.display().to_string()),
            "{payload}: the error does not name blob, image and file: {last}"
        );
        common::assert_no_output(dir.path(), &format!("{payload}.raw"));
        note!("{payload}: {last}");
    }
}

/// Lines of stderr that name an image or a blob by digest.
fn digest_lines(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.contains("sha256:")).count()
}

#[test]
fn output_at_scale_is_a_line_per_stage() {
    let dir = scratch("release-output");
    let out = dir.path().join("a.raw");
    let r = run(&mut build_cmd(dir.path(), &fixture(), "demo", &out)).success();
    let lines = r.stderr.lines().count();
    assert!(
        lines <= 12 && digest_lines(&r.stderr) == 0,
        "without a terminal: {lines} lines\n{}",
        r.stderr
    );
    for stage in ["plan:", "pull:", "write:"] {
        assert!(
            r.stderr.lines().any(|l| l.starts_with(stage)),
            "no `{stage}` line:\n{}",
            r.stderr
        );
    }
    assert!(!r.stderr.contains('\r') && !r.stderr.contains('\x1b'));
    note!("190 images, no terminal: {lines} lines of output");
    std::fs::remove_file(&out).unwrap();

    let r = run(build_cmd(dir.path(), &fixture(), "demo", &out).arg("-v")).success();
    assert!(
        digest_lines(&r.stderr) >= 190,
        "-v: {} lines with a digest",
        digest_lines(&r.stderr)
    );
    note!("-v: {} lines", r.stderr.lines().count());
    std::fs::remove_file(&out).unwrap();

    let r = run(build_cmd(dir.path(), &fixture(), "demo", &out).arg("-q")).success();
    assert_eq!(r.stderr, "", "-q printed more than errors");
    std::fs::remove_file(&out).unwrap();

    // On a terminal (util-linux `script` gives the run a pseudo-terminal): one live line,
    // redrawn in place, and still no line per image.
    let script = common::require("script", "bsdutils");
    let cmd = build_cmd(dir.path(), &fixture(), "demo", &out);
    let mut line = String::new();
    for a in std::iter::once(cmd.get_program()).chain(cmd.get_args()) {
        line.push_str(&format!(
            "'{}' ",
            a.to_string_lossy().replace('\'', "'\\''")
        ));
    }
    let typescript = dir.path().join("typescript");
    let r = run(Command::new(&script)
        .args(["-q", "-e", "-c", &line])
        .arg(&typescript)
        .env("SOURCE_DATE_EPOCH", common::SOURCE_DATE_EPOCH)
        .env("HOME", dir.path())
        .env("TERM", "xterm")
        .env("COLUMNS", "120"));
    let shown = std::fs::read_to_string(&typescript).unwrap_or_default();
    assert!(r.status.success(), "{}\n{shown}", r.both());
    assert!(
        shown.contains('\r') || shown.contains("\x1b["),
        "no live line on a terminal:\n{shown}"
    );
    assert_eq!(
        digest_lines(&shown),
        0,
        "a line per image on a terminal:\n{shown}"
    );
    note!("terminal: a live line, {} bytes of output", shown.len());
}
