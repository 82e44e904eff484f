//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `demo`: install missing system packages, build, compose `fixtures/demo` into a raw and a
//!   qcow2 image with `layouts/demo.toml`, verify both, and say how to use them.
//! - `ci`: install missing system packages, then `cargo fmt --check`, clippy with `-D warnings`,
//!   the coreos-installer check crate (`tests/coreos-installer`, outside the workspace, built once
//!   here with its own lockfile into `target/coreos-installer`) and every test.
//! - `bench compose`: compose ~4 GiB of files into raw and qcow2 side by side with `cp -r` of the
//!   same tree onto the same disk; print throughput ratios and peak RSS.
//! - `bench pull`: prestage pull vs one `skopeo copy` per image from a loopback registry.

mod bench;
mod bench_pull;
mod fixtures;
mod oci;
mod packages;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command in the workspace root, failing on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let st = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn demo() -> Result<()> {
    packages::ensure(packages::DEMO)?;
    run(cargo().args(["build", "--release", "--bin", "prestage"]))?;
    let bin = root().join("target/release/prestage");
    let out = root().join("target/demo");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for name in ["demo.raw", "demo.qcow2"] {
        let img = out.join(name);
        run(Command::new(&bin)
            .args([
                "compose",
                "--layout",
                "layouts/demo.toml",
                "--content",
                "data=fixtures/demo",
                "-o",
            ])
            .arg(&img))?;
        run(Command::new(&bin).arg("verify").arg(&img))?;
    }
    let raw = out.join("demo.raw");
    let qcow2 = out.join("demo.qcow2");
    println!();
    println!("Demo images (verified):");
    println!("  raw:   {}", raw.display());
    println!("  qcow2: {}", qcow2.display());
    println!();
    println!("Flash the raw image onto a disk (destroys its contents):");
    println!(
        "  dd if={} of=/dev/sdX bs=4M conv=sparse,fsync status=progress",
        raw.display()
    );
    println!("Attach the qcow2 to a libvirt VM as a second disk:");
    println!(
        "  virsh attach-disk VM {} vdb --driver qemu --subdriver qcow2 --persistent",
        qcow2.display()
    );
    println!("Look inside without root:");
    println!("  sgdisk -p {}", raw.display());
    println!("  target/release/prestage verify {}", qcow2.display());
    Ok(())
}

fn ci() -> Result<()> {
    packages::ensure(packages::CI)?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args([
        "fmt",
        "--manifest-path",
        "tests/coreos-installer/Cargo.toml",
        "--",
        "--check",
    ]))?;
    run(cargo().args(["build", "--release", "--bin", "prestage"]))?;
    run(cargo().args([
        "build",
        "--release",
        "--locked",
        "--manifest-path",
        "tests/coreos-installer/Cargo.toml",
        "--target-dir",
        "target/coreos-installer",
    ]))?;
    run(cargo().args(["test", "--workspace", "--release"]))?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["demo"] => demo(),
        ["fixtures"] => fixtures::write(&root().join("fixtures/demo-images")),
        ["ci"] => ci(),
        ["bench", "compose", rest @ ..] => bench::compose(rest),
        ["bench", "pull", rest @ ..] => bench_pull::pull(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask demo | ci | bench compose [--dir DIR] | bench pull [--dir DIR]"
            );
            std::process::exit(2);
        }
    }
}
