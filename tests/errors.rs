//! Bad input fails cleanly, and nothing half-written ever sits at the output path.
//!
//! Every layout error (misaligned start, a partition beyond the disk, overlapping partitions,
//! duplicate labels, zero and negative sizes, an XFS partition under 300 MB, an unknown key, a
//! TOML syntax error), a partition too small for its content, `--content` naming a label the
//! layout does not have, and a missing content directory each make `prestage compose` exit 1 with
//! exactly one stderr line starting `prestage: ` that names the layout file and field (or
//! `FILE:LINE:COL`) where there is one, and leave neither the output nor `.OUT.partial-*` /
//! `.OUT.work-*` files behind.
//!
//! `prestage verify` fails the same way on an image in which one byte of one file was changed.
//!
//! And a compose killed with SIGKILL while it writes the image (the test waits until it has seen
//! the temporary `.OUT.partial-*` file hold several MiB of data) leaves no file at the output path.

#[macro_use]
mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A content directory with one small file.
fn small_content(dir: &Path) -> PathBuf {
    let c = dir.join("content");
    put_file(&c.join("hello.txt"), b"hello\n", 0o644);
    c
}

/// Runs compose into a fresh output directory and checks the one-line error and that nothing
/// was left behind; returns the error line.
fn expect_error(
    dir: &Path,
    case: &str,
    layout: &Path,
    contents: &[(&str, &Path)],
    needles: &[&str],
) -> String {
    let out_dir = dir.join(format!("out-{case}"));
    put_dir(&out_dir, 0o755);
    let out = out_dir.join("image.raw");
    let r = run(&mut compose_cmd(layout, contents, &out));
    let line = assert_one_line_error(&r, dir, needles);
    assert_no_output(&out_dir, "image.raw");
    note!("{case}: {line}");
    line
}

/// Checks that `line` is `prestage: FILE:LINE:COL: ...` for the layout file.
fn assert_line_col(line: &str, layout: &Path) {
    let prefix = format!("prestage: {}:", layout.display());
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
    let mut parts = rest.splitn(3, ':');
    let l = parts.next().unwrap_or("");
    let c = parts.next().unwrap_or("");
    assert!(
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_digit())
            && !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_digit()),
        "{line:?} does not name LINE:COL after the file"
    );
}

const DISK: &str = "[disk]\nsize = \"1GiB\"\nsector_size = 512\n";

#[test]
fn layout_errors_name_file_and_field() {
    let dir = scratch("errors-layout");
    let content = small_content(dir.path());
    let cases: &[(&str, String, &[&str])] = &[
        (
            "misaligned",
            format!("{DISK}\n[[partition]]\nlabel = \"data\"\nstart = 2049\nsize = \"400MiB\"\nfilesystem = \"xfs\"\n"),
            &["partition[0].start", "not aligned"],
        ),
        (
            "beyond",
            format!("{DISK}\n[[partition]]\nlabel = \"data\"\nstart = 2048\nsize = \"2GiB\"\nfilesystem = \"xfs\"\n"),
            &["partition[0].size", "beyond"],
        ),
        (
            "beyond-start",
            format!("{DISK}\n[[partition]]\nlabel = \"data\"\nstart = 2095104\nsize = \"1MiB\"\n"),
            &["partition[0].", "beyond"],
        ),
        (
            "overlap",
            format!(
                "{DISK}\n[[partition]]\nlabel = \"data\"\nstart = 2048\nsize = \"400MiB\"\nfilesystem = \"xfs\"\n\
                 \n[[partition]]\nlabel = \"other\"\nstart = 4096\nsize = \"1MiB\"\n"
            ),
            &["partition[1].start", "overlap"],
        ),
        (
            "duplicate",
            format!(
                "{DISK}\n[[partition]]\nlabel = \"data\"\nsize = \"400MiB\"\nfilesystem = \"xfs\"\n\
                 \n[[partition]]\nlabel = \"data\"\nsize = \"1MiB\"\n"
            ),
            &["partition[1].label", "already the label"],
        ),
        (
            "zero-size",
            format!("{DISK}\n[[partition]]\nlabel = \"data\"\nsize = 0\nfilesystem = \"xfs\"\n"),
            &["partition[0].size", "greater than zero"],
        ),
        (
            "small-xfs",
            format!("{DISK}\n[[partition]]\nlabel = \"data\"\nsize = \"200MiB\"\nfilesystem = \"xfs\"\n"),
            &["partition[0].size", "300 MB"],
        ),
    ];
    // Layout files get neutral names, so that no needle is found in the file name.
    for (i, (case, text, needles)) in cases.iter().enumerate() {
        let layout = write_layout(dir.path(), &format!("layout{i:02}.toml"), text);
        let line = expect_error(dir.path(), case, &layout, &[("data", &content)], needles);
        let prefix = format!("prestage: {}: partition[", layout.display());
        assert!(
            line.starts_with(&prefix),
            "{line:?} does not start with {prefix:?}"
        );
    }

    // Errors found by the TOML parser name FILE:LINE:COL.
    let toml_cases: &[(&str, String, &[&str])] = &[
        (
            "negative-size",
            format!("{DISK}\n[[partition]]\nlabel = \"data\"\nsize = -5\nfilesystem = \"xfs\"\n"),
            &["negative"],
        ),
        (
            "unknown-disk-key",
            format!("{DISK}sise = 3\n\n[[partition]]\nlabel = \"data\"\n"),
            &["sise"],
        ),
        (
            "unknown-partition-key",
            format!("{DISK}\n[[partition]]\nlabel = \"data\"\nfilesytem = \"xfs\"\n"),
            &["filesytem"],
        ),
        ("malformed", "[disk\nsize = \"1GiB\"\n".to_string(), &[]),
        (
            "malformed-value",
            format!("{DISK}\n[[partition]]\nlabel = data\n"),
            &[],
        ),
    ];
    for (i, (case, text, needles)) in toml_cases.iter().enumerate() {
        let layout = write_layout(dir.path(), &format!("toml{i:02}.toml"), text);
        let line = expect_error(dir.path(), case, &layout, &[("data", &content)], needles);
        assert_line_col(&line, &layout);
    }
}

/// A negative size written as a string with a unit is reported as negative too.
#[test]
fn negative_size_with_a_unit() {
    let dir = scratch("errors-negative");
    let content = small_content(dir.path());
    let layout = write_layout(
        dir.path(),
        "layout.toml",
        &format!(
            "{DISK}\n[[partition]]\nlabel = \"data\"\nsize = \"-5MiB\"\nfilesystem = \"xfs\"\n"
        ),
    );
    let line = expect_error(
        dir.path(),
        "negative-size-string",
        &layout,
        &[("data", &content)],
        &["negative"],
    );
    assert_line_col(&line, &layout);
}

/// Parses `600 MiB` / `1.5 GiB` / `4096 B` at the start of `s` into bytes.
fn leading_size(s: &str) -> u64 {
    let mut it = s.split_whitespace();
    let num: f64 = it
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number at {s:?}"));
    let unit = it
        .next()
        .unwrap_or("")
        .trim_end_matches(|c: char| !c.is_ascii_alphabetic());
    let mult = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => MIB,
        "GiB" => GIB,
        "TiB" => 1 << 40,
        other => panic!("unknown unit {other:?} in {s:?}"),
    };
    (num * mult as f64) as u64
}

#[test]
fn content_errors() {
    let dir = scratch("errors-content");
    let content = small_content(dir.path());
    let layout = write_layout(
        dir.path(),
        "small.toml",
        &format!("{DISK}\n[[partition]]\nlabel = \"data\"\nanchor = \"end\"\nsize = \"400MiB\"\nfilesystem = \"xfs\"\n"),
    );

    // A partition too small for its content: both numbers in the message. The content is a
    // sparse 600 MiB file (planning fails before any byte is read).
    let big = dir.path().join("big");
    put_dir(&big, 0o755);
    let f = std::fs::File::create(big.join("huge.bin")).expect("creating a sparse file");
    f.set_len(600 * MIB).expect("sizing the sparse file");
    drop(f);
    let line = expect_error(
        dir.path(),
        "too-small",
        &layout,
        &[("data", &big)],
        &["partition `data` is too small"],
    );
    let needs = line
        .split_once("needs ")
        .unwrap_or_else(|| panic!("no `needs X` in {line:?}"))
        .1;
    let holds = line
        .split_once("holds ")
        .unwrap_or_else(|| panic!("no `holds Y` in {line:?}"))
        .1;
    let (needs, holds) = (leading_size(needs), leading_size(holds));
    assert!(
        needs >= 600 * MIB,
        "the content needs at least 600 MiB, the message says {needs} bytes"
    );
    assert!(
        holds <= 400 * MIB && holds > 300 * MIB,
        "the partition holds under 400 MiB, the message says {holds}"
    );

    // --content for a label the layout does not have: the message names the label and the
    // layout file.
    expect_error(
        dir.path(),
        "unknown-label",
        &layout,
        &[("nope", &content)],
        &["`nope`", "<dir>/small.toml"],
    );

    // A content directory that does not exist: the message names it.
    let missing = dir.path().join("no such dir");
    expect_error(
        dir.path(),
        "missing-dir",
        &layout,
        &[("data", &missing)],
        &["<dir>/no such dir"],
    );
}

#[test]
fn killed_while_writing_leaves_no_output() {
    let dir = scratch("errors-kill");
    let content = dir.path().join("content");
    put_dir(&content, 0o755);
    write_random_file(&content.join("big.bin"), 1536 * MIB, 3);
    let layout = write_layout(
        dir.path(),
        "kill.toml",
        "[disk]\nsize = \"2GiB\"\n\n[[partition]]\nlabel = \"data\"\nanchor = \"end\"\nsize = \"1800MiB\"\nfilesystem = \"xfs\"\n",
    );
    let out_dir = dir.path().join("out");
    put_dir(&out_dir, 0o755);
    let out = out_dir.join("killed.raw");
    let mut child = compose_cmd(&layout, &[("data", &content)], &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prestage compose");

    // Watch for the temporary image to hold several MiB of written data (its apparent size is
    // the whole disk from the start: count allocated blocks), then SIGKILL.
    let prefix = ".killed.raw.partial-";
    let threshold = 16 * MIB;
    let mut seen: Option<(String, u64)> = None;
    while seen.is_none() {
        if let Some(st) = child.try_wait().expect("polling prestage") {
            panic!("prestage exited ({st}) before its partial image was seen holding {threshold} bytes");
        }
        for e in std::fs::read_dir(&out_dir)
            .expect("listing the output directory")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                if let Ok(md) = e.metadata() {
                    if md.blocks() * 512 >= threshold {
                        seen = Some((name, md.blocks() * 512));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("sending SIGKILL");
    let status = child.wait().expect("waiting for prestage");
    let (name, bytes) = seen.expect("partial file observed");
    note!("saw {name} holding {bytes} bytes; SIGKILLed prestage ({status})");
    assert!(!status.success(), "prestage finished before it was killed");
    assert!(
        !out.exists(),
        "{} exists after prestage was killed mid-write",
        out.display()
    );
    let left = temp_leftovers(&out_dir, "killed.raw");
    note!(
        "no {} after SIGKILL; left for the next run to remove (tests/leftovers.rs): {left:?}",
        out.display()
    );
}

#[test]
fn verify_detects_a_changed_byte() {
    let dir = scratch("errors-verify");
    let content = dir.path().join("content");
    let marker = small_bytes(0xfeed, 8192);
    put_file(&content.join("sub/target.bin"), &marker, 0o644);
    put_file(&content.join("other.txt"), b"unchanged\n", 0o644);
    let layout = write_layout(
        dir.path(),
        "verify.toml",
        "[disk]\nsize = \"512MiB\"\n\n[[partition]]\nlabel = \"data\"\nfilesystem = \"xfs\"\n",
    );
    let img = dir.path().join("verify.raw");
    compose_ok(&layout, &[("data", &content)], &img);
    verify_ok(&img);

    // Find the file's bytes in the image and change one of them.
    let data = std::fs::read(&img).expect("reading the image");
    let at = data
        .windows(64)
        .position(|w| w == &marker[..64])
        .expect("the file's bytes are in the image");
    assert_eq!(
        &data[at..at + marker.len()],
        &marker[..],
        "the file is stored contiguously"
    );
    drop(data);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .expect("opening the image");
    f.write_all_at(&[marker[5000] ^ 0x01], (at + 5000) as u64)
        .expect("changing a byte");
    drop(f);

    let r = run(Command::new(bin()).arg("verify").arg(&img));
    let line = assert_one_line_error(&r, dir.path(), &["sub/target.bin", "sha256"]);
    note!(
        "after changing byte 5000 of sub/target.bin (image offset {}): {line}",
        at + 5000
    );
}
