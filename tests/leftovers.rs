//! What a killed run leaves is cleaned up by the next one, never what a live run is writing; and
//! an output filesystem too small for the image is refused before the image is written.
//!
//! Runs are caught mid-write with the test-only pause hook: `PRESTAGE_TEST_PAUSE_AFTER_BYTES=N`
//! makes prestage stop itself (SIGSTOP) once it has written N bytes of image or blob data, so the
//! test sees it stopped (waitpid with WUNTRACED), then SIGKILLs it or lets it go on (SIGCONT). No
//! step depends on timing.
//!
//! - compose SIGKILLed mid-write leaves `.OUT.partial-*`, `.OUT.work-*` and `.OUT.lock`; the next
//!   compose to the same output says in one line what it removed, succeeds, and nothing is left;
//! - a second compose to the output of a running one (also through a symlinked directory) fails
//!   with one line naming the running one's pid and touches none of its files; the first one then
//!   finishes and verifies;
//! - `store verify` reports a killed pull's `.part` and a running pull's; `store prune` removes
//!   the dead one while the pull runs, leaves the live one alone (the pull then finishes), and
//!   prunes blobs once the pull has ended;
//! - as root, on a 140 MiB tmpfs: content that cannot fit is refused, raw and qcow2, by the first
//!   check (content and XFS logs) and, for 20,000 files' metadata, by the exact one (what the
//!   image will allocate), before any byte of the image is written (the pause hook at 1 byte
//!   would stop the process otherwise), with both numbers; content that fits composes there.

#[macro_use]
mod common;
mod registry;

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};
use serde_json::json;
use sha2::Digest as _;

use common::*;

const PAUSE: &str = "PRESTAGE_TEST_PAUSE_AFTER_BYTES";

const LAYOUT: &str = "[disk]\nsize = \"1GiB\"\n\n[[partition]]\nlabel = \"data\"\nanchor = \"end\"\nsize = \"600MiB\"\nfilesystem = \"xfs\"\n";

/// A prestage process stopped by its pause hook; SIGKILLed and reaped on drop if still there.
struct Paused {
    child: Option<Child>,
    stderr: PathBuf,
    what: String,
}

impl Paused {
    /// Starts `cmd` with the pause hook at `after` bytes and waits until it has stopped there.
    fn start(cmd: &mut Command, after: u64, stderr: PathBuf, what: &str) -> Paused {
        let err = File::create(&stderr).expect("creating the stderr file");
        let child = cmd
            .env(PAUSE, after.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let pid = Pid::from_child(&child);
        let st = waitpid(Some(pid), WaitOptions::UNTRACED).expect("waitpid");
        let mut p = Paused {
            child: Some(child),
            stderr,
            what: what.to_string(),
        };
        match st {
            Some((_, s)) if s.stopped() => {}
            Some((_, s)) => {
                // Reaped already: nothing left to kill.
                p.child = None;
                panic!(
                    "{what} ended (exit {:?}, signal {:?}) instead of stopping after {after} \
                     bytes: {}",
                    s.exit_status(),
                    s.terminating_signal(),
                    p.stderr_text()
                );
            }
            None => panic!("waitpid returned nothing for {what}"),
        }
        note!("{what}: stopped by the pause hook after {after} bytes");
        p
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL, then reap.
    fn kill(mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        c.kill().expect("SIGKILL");
        c.wait().expect("waiting for the killed process")
    }

    /// SIGCONT, then wait for the end; returns the status and stderr.
    fn resume(mut self) -> (ExitStatus, String) {
        let mut c = self.child.take().expect("running");
        kill_process(Pid::from_child(&c), Signal::CONT).expect("SIGCONT");
        let st = c.wait().expect("waiting for the resumed process");
        note!("{}: resumed, ended with {st}", self.what);
        (st, self.stderr_text())
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("listing a directory")
        .map(|e| {
            e.expect("listing a directory")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

/// (name, inode) of every entry of `dir`.
fn inodes(dir: &Path) -> Vec<(String, u64)> {
    names(dir)
        .into_iter()
        .map(|n| {
            let ino = fs::symlink_metadata(dir.join(&n)).expect("stat").ino();
            (n, ino)
        })
        .collect()
}

/// A content directory with a 16 MiB file and two small ones.
fn content(dir: &Path) -> PathBuf {
    let c = dir.join("content");
    put_dir(&c, 0o755);
    write_random_file(&c.join("big.bin"), 16 * MIB, 7);
    put_file(&c.join("etc/a.conf"), b"a = 1\n", 0o644);
    put_file(&c.join("b.txt"), &small_bytes(3, 5000), 0o644);
    c
}

#[test]
fn a_killed_compose_is_cleaned_up_by_the_next_run() {
    let dir = scratch("leftovers-kill");
    let src = content(dir.path());
    let layout = write_layout(dir.path(), "l.toml", LAYOUT);
    let out_dir = dir.path().join("out");
    put_dir(&out_dir, 0o755);
    let out = out_dir.join("out.raw");

    let p = Paused::start(
        &mut compose_cmd(&layout, &[("data", &src)], &out),
        MIB,
        dir.path().join("first.err"),
        "compose (to be killed)",
    );
    let left = temp_leftovers(&out_dir, "out.raw");
    assert_eq!(
        left.len(),
        3,
        "expected a partial image, a work directory and the lock: {left:?}"
    );
    let partial = left
        .iter()
        .find(|n| n.starts_with(".out.raw.partial-"))
        .expect("a partial image");
    let written = fs::metadata(out_dir.join(partial)).expect("stat").blocks() * 512;
    assert!(
        written >= MIB,
        "the paused run has written only {written} bytes"
    );
    let st = p.kill();
    note!("SIGKILLed mid-write ({st}), {partial} holding {written} bytes; left: {left:?}");
    assert_eq!(
        temp_leftovers(&out_dir, "out.raw"),
        left,
        "the killed run's files"
    );
    assert!(!out.exists());

    let r = compose_ok(&layout, &[("data", &src)], &out);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("removed what an interrupted run left"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line about the removed leftovers: {:?}",
        r.stderr
    );
    for n in left.iter().filter(|n| !n.ends_with(".lock")) {
        assert!(lines[0].contains(n.as_str()), "{n} not named: {}", lines[0]);
    }
    note!("rerun: {}", lines[0]);
    assert_eq!(
        names(&out_dir),
        vec!["out.raw".to_string()],
        "only the image is left"
    );
    verify_ok(&out);
}

#[test]
fn two_composes_to_one_output_do_not_touch_each_other() {
    let dir = scratch("leftovers-concurrent");
    let src = content(dir.path());
    let layout = write_layout(dir.path(), "l.toml", LAYOUT);
    let out_dir = dir.path().join("out");
    put_dir(&out_dir, 0o755);
    let out = out_dir.join("out.raw");
    let alias = dir.path().join("alias");
    std::os::unix::fs::symlink(&out_dir, &alias).expect("symlink");

    let first = Paused::start(
        &mut compose_cmd(&layout, &[("data", &src)], &out),
        MIB,
        dir.path().join("first.err"),
        "first compose",
    );
    let before = inodes(&out_dir);
    assert_eq!(before.len(), 3, "{before:?}");
    let pid = first.pid();
    for target in [out.clone(), alias.join("out.raw")] {
        let r = run(&mut compose_cmd(&layout, &[("data", &src)], &target));
        let line = assert_one_line_error(
            &r,
            dir.path(),
            &[
                &format!("another prestage run (pid {pid}) is writing this output"),
                ".out.raw.lock",
            ],
        );
        note!("second compose: {line}");
        assert_eq!(
            inodes(&out_dir),
            before,
            "the second compose changed the first one's files"
        );
    }
    let (st, err) = first.resume();
    assert!(
        st.success(),
        "the first compose failed after the second one: {err}"
    );
    assert_eq!(names(&out_dir), vec!["out.raw".to_string()]);
    verify_ok(&out);
}

/// Writes a blob into an OCI layout; returns its descriptor.
fn put_blob(layout: &Path, bytes: &[u8], media_type: &str) -> serde_json::Value {
    let hex = hex::encode(sha2::Sha256::digest(bytes));
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).expect("creating blobs/");
    fs::write(dir.join(&hex), bytes).expect("writing a blob");
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

/// An OCI layout holding images `one` and `two`, each with one 4 MiB layer; returns the layers'
/// hex digests.
fn two_images(layout: &Path) -> [String; 2] {
    let mut entries = Vec::new();
    let mut layers = Vec::new();
    for (i, name) in ["one", "two"].iter().enumerate() {
        let layer = small_bytes(100 + i as u64, 4 * MIB as usize);
        let l = put_blob(layout, &layer, "application/vnd.oci.image.layer.v1.tar");
        let cfg = json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [l["digest"].clone()]}});
        let cfg = put_blob(
            layout,
            &serde_json::to_vec(&cfg).expect("json"),
            "application/vnd.oci.image.config.v1+json",
        );
        let m = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cfg, "layers": [l.clone()]});
        let mut d = put_blob(
            layout,
            &serde_json::to_vec(&m).expect("json"),
            "application/vnd.oci.image.manifest.v1+json",
        );
        d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        entries.push(d);
        layers.push(l["digest"].as_str().expect("digest")[7..].to_string());
    }
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .expect("writing oci-layout");
    let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&idx).expect("json"),
    )
    .expect("writing index.json");
    [layers[0].clone(), layers[1].clone()]
}

/// The harness's isolated `prestage` command, without the pause hook unless a test sets it.
fn prestage_in(home: &Path) -> Command {
    let mut c = registry::prestage(home);
    c.env_remove(PAUSE);
    c
}

#[test]
fn store_prune_removes_dead_partial_blobs_and_leaves_a_running_pull_alone() {
    let dir = scratch("leftovers-store");
    let home = dir.path();
    let oci = home.join("layout");
    let [dead_hex, live_hex] = two_images(&oci);
    let store = home.join("store");
    let pull = |name: &str| {
        let mut c = prestage_in(home);
        c.args(["pull", "--quiet", "-j", "1", "--store"])
            .arg(&store)
            .arg(format!("oci:{}:{name}", oci.display()));
        c
    };
    let tmp = store.join("tmp");

    // A pull killed in the middle of its layer leaves a dead partial blob.
    let killed = Paused::start(
        &mut pull("one"),
        2 * MIB,
        home.join("killed.err"),
        "pull (to be killed)",
    );
    killed.kill();
    let dead = tmp.join(format!("{dead_hex}.part"));
    let dead_len = fs::metadata(&dead)
        .unwrap_or_else(|e| panic!("no dead partial blob {}: {e}", dead.display()))
        .len();
    assert!(dead_len >= 2 * MIB, "{dead_len}");

    // A pull stopped in the middle of its layer holds its partial blob.
    let live_pull = Paused::start(&mut pull("two"), 2 * MIB, home.join("live.err"), "pull");
    let live = tmp.join(format!("{live_hex}.part"));
    let live_md = fs::metadata(&live).expect("the running pull's partial blob");
    note!(
        "tmp/: dead {dead_hex}.part ({dead_len} bytes), live {live_hex}.part ({} bytes)",
        live_md.len()
    );

    let mut verify = prestage_in(home);
    verify.args(["store", "verify", "--store"]).arg(&store);
    let v = run(&mut verify).success();
    assert!(
        v.stdout.contains("1 partial blob(s) of interrupted pulls")
            && v.stdout.contains("1 being written by a running pull"),
        "store verify does not report the partial blobs: {}",
        v.both()
    );
    note!("store verify: {}", v.stdout.trim().replace('\n', " / "));

    // Prune removes the dead one at once, then waits for the pull to end before pruning blobs.
    let mut prune = prestage_in(home)
        .args(["store", "prune", "--store"])
        .arg(&store)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting store prune");
    let mut err = std::io::BufReader::new(prune.stderr.take().expect("stderr"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).expect("reading prune's stderr");
    assert!(
        line.contains("waiting for running pulls to end") && line.contains("1 partial blob(s)"),
        "store prune did not wait for the running pull: {line:?}"
    );
    note!("store prune: {}", line.trim());
    assert!(
        !dead.exists(),
        "the dead partial blob is still there while prune waits"
    );
    let md = fs::metadata(&live).expect("the running pull's partial blob was removed");
    assert_eq!(
        (md.ino(), md.len()),
        (live_md.ino(), live_md.len()),
        "the running pull's partial blob was changed"
    );

    let (st, e) = live_pull.resume();
    assert!(st.success(), "the running pull failed: {e}");
    let out = prune.wait_with_output().expect("waiting for store prune");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "store prune failed: {stdout}");
    assert!(
        stdout.contains(&format!("tmp/{dead_hex}.part")),
        "prune does not name the dead partial blob: {stdout}"
    );
    note!("store prune: {}", stdout.trim().replace('\n', " / "));
    assert!(
        names(&tmp).is_empty(),
        "tmp/ after prune: {:?}",
        names(&tmp)
    );
    let v = run(&mut verify).success();
    assert!(
        v.stdout.contains("OK: 1 references") && !v.stdout.contains("partial"),
        "{}",
        v.both()
    );
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        require("mount", "mount");
        put_dir(at, 0o755);
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at))
        .success();
        Tmpfs(at.to_path_buf())
    }
    fn free(&self) -> u64 {
        let st = rustix::fs::statvfs(&self.0).expect("statvfs");
        st.f_bfree * st.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Runs compose with the pause hook at the first byte of image data: it must end with exit code
/// 1 and one line, without ever having stopped. Returns the line.
fn refused_before_writing(cmd: &mut Command, errfile: &Path, hide: &Path) -> String {
    let child = cmd
        .env(PAUSE, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(errfile).expect("creating the stderr file"))
        .spawn()
        .expect("starting compose");
    let mut guard = Paused {
        child: Some(child),
        stderr: errfile.to_path_buf(),
        what: "compose".into(),
    };
    let pid = Pid::from_child(guard.child.as_ref().expect("child"));
    let (_, st) = waitpid(Some(pid), WaitOptions::UNTRACED)
        .expect("waitpid")
        .expect("a status");
    if st.stopped() {
        panic!(
            "compose wrote image bytes before refusing (stopped by the pause hook): {}",
            guard.stderr_text()
        );
    }
    guard.child = None;
    let err = guard.stderr_text();
    assert_eq!(st.exit_status(), Some(1), "exit status; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    let line = err.trim_end().replace(&hide.display().to_string(), "<dir>");
    assert!(line.starts_with("prestage: "), "{line}");
    line
}

/// The two byte counts of a refusal: (needed, free).
fn numbers(line: &str) -> (u64, u64) {
    let v: Vec<u64> = line
        .split('(')
        .skip(1)
        .filter_map(|s| s.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(v.len(), 2, "two byte counts expected in {line:?}");
    (v[0], v[1])
}

#[test]
fn a_too_small_output_filesystem_is_refused_before_writing() {
    if !is_root() {
        note!(
            "NOT run: mounting the small tmpfs this test writes to needs root (euid {}); run the \
             tests as root, as CI does",
            euid()
        );
        return;
    }
    let dir = scratch("leftovers-space");
    let layout = write_layout(dir.path(), "l.toml", LAYOUT);
    let big = dir.path().join("big");
    put_dir(&big, 0o755);
    write_random_file(&big.join("a.bin"), 100 * MIB, 5);
    // 20,000 empty files: no data, but inodes and directories the first check does not count.
    let many = dir.path().join("many");
    for d in 0..100 {
        put_dir(&many.join(format!("d{d:03}")), 0o755);
        for f in 0..200 {
            File::create(many.join(format!("d{d:03}/f{f:03}"))).expect("creating a file");
        }
    }
    let small = dir.path().join("small");
    put_dir(&small, 0o755);
    write_random_file(&small.join("a.bin"), 8 * MIB, 6);

    // The 600 MiB XFS partition has a 64 MiB log: 128 MiB of it in the work file and a raw
    // image, so the first check lets `many` through.
    let fs = Tmpfs::mount(&dir.path().join("mnt"), "140m");
    let cases = [
        ("big", &big, "raw", "need at least"),
        ("big", &big, "qcow2", "need at least"),
        ("many", &many, "raw", "the raw image will allocate"),
        ("many", &many, "qcow2", "the qcow2 image will allocate"),
    ];
    for (what, src, ext, says) in cases {
        let out = fs.0.join(format!("out.{ext}"));
        let free = fs.free();
        let line = refused_before_writing(
            &mut compose_cmd(&layout, &[("data", src)], &out),
            &dir.path().join("err"),
            dir.path(),
        );
        note!("{what} as {ext}: {line}");
        assert!(
            line.contains("not enough free space") && line.contains(says),
            "{line}"
        );
        let (need, avail) = numbers(&line);
        assert!(need > avail, "{line}");
        if what == "big" {
            assert!(need >= 100 * MIB, "{line}");
            // The lock file takes a page of the tmpfs.
            assert!(avail <= free && free - avail <= 64 << 10, "{line}: {free}");
        }
        assert!(
            names(&fs.0).is_empty(),
            "left on the tmpfs: {:?}",
            names(&fs.0)
        );
    }
    let out = fs.0.join("small.raw");
    compose_ok(&layout, &[("data", &small)], &out);
    verify_ok(&out);
    note!(
        "8 MiB of content composed on the same tmpfs: {} allocated",
        fs::metadata(&out).expect("stat").blocks() * 512
    );
}
