//! An interrupted compose (SIGTERM or SIGINT mid-write, as a CI job timeout or Ctrl-C sends)
//! leaves nothing behind: no image at the output path, and neither the partial image nor the
//! partition-sized work directory.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const MIB: u64 = 1 << 20;

fn interrupt_mid_write(signal: &str) {
    let _big = big_files_lock();
    let dir = scratch(&format!("interrupt-{signal}"));
    let content = dir.path().join("content");
    put_dir(&content, 0o755);
    write_random_file(&content.join("big.bin"), 1024 * MIB, 11);
    let layout = write_layout(
        dir.path(),
        "int.toml",
        "[disk]\nsize = \"2GiB\"\n\n[[partition]]\nlabel = \"data\"\nanchor = \"end\"\nsize = \"1400MiB\"\nfilesystem = \"xfs\"\n",
    );
    let out_dir = dir.path().join("out");
    put_dir(&out_dir, 0o755);
    let out = out_dir.join("int.raw");
    let mut child = compose_cmd(&layout, &[("data", &content)], &out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting prestage compose");
    let prefix = ".int.raw.partial-";
    let mut seen = false;
    while !seen {
        if let Some(st) = child.try_wait().expect("polling prestage") {
            panic!("prestage exited ({st}) before its partial image was seen being written");
        }
        seen = std::fs::read_dir(&out_dir)
            .expect("listing the output directory")
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().starts_with(prefix)
                    && e.metadata()
                        .map(|m| m.blocks() * 512 >= 16 * MIB)
                        .unwrap_or(false)
            });
        std::thread::sleep(Duration::from_millis(2));
    }
    let st = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(st.success(), "kill -{signal} failed");
    let output = child.wait_with_output().expect("waiting for prestage");
    let stderr = String::from_utf8_lossy(&output.stderr);
    note!(
        "prestage after SIG{signal}: {} / {}",
        output.status,
        stderr.trim()
    );
    assert_eq!(
        output.status.code(),
        Some(130),
        "exit status after SIG{signal}: {}",
        output.status
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_no_output(&out_dir, "int.raw");
}

#[test]
fn sigterm_mid_write_leaves_nothing() {
    interrupt_mid_write("TERM");
}

#[test]
fn sigint_mid_write_leaves_nothing() {
    interrupt_mid_write("INT");
}
