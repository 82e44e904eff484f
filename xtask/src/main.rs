//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `demo`: install missing system packages, build prestage, run `prestage build` on the
//!   bundled `fixtures/demo-images` (no network) into a raw (shared payload) and a qcow2 (ztp
//!   payload) image with the `demo` layout, verify both, and say how to flash, attach and load
//!   them.
//! - `fixtures`: regenerate `fixtures/demo-images`.
//! - `ci`: install missing system packages, then `cargo fmt --check`, clippy with `-D warnings`,
//!   the coreos-installer check crate (`tests/coreos-installer`, outside the workspace, built once
//!   here with its own lockfile into `target/coreos-installer`) and every test.
//! - `bench compose`: compose ~4 GiB of files into raw and qcow2 side by side with `cp -r` of the
//!   same tree onto the same disk, and a 300,000-entry tree side by side with `cp -a` into a
//!   mounted XFS (root); print ratios, peak RSS and RSS per entry, and check the big image with
//!   xfs_repair and the kernel.
//! - `bench pull`: prestage pull vs one `skopeo copy` per image from a loopback registry.
//! - `bench build`: prestage build (shared, ztp) from a warm store vs `cp -r` of the blobs and
//!   vs the upstream skopeo + tar pipeline; bytes on the partition; node-side loading; RSS.

mod archive;
mod bench;
mod bench_build;
mod bench_entries;
mod bench_pull;
mod bench_release;
mod fixtures;
mod oci;
mod packages;
mod release;

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
    // No registry is reached: an empty auth file and registries.conf, and the bundled OCI
    // layout serves every image by digest.
    let auth = out.join("auth.json");
    std::fs::write(&auth, "{\"auths\": {}}\n").context("writing the demo auth file")?;
    let conf = out.join("registries.conf");
    std::fs::write(&conf, "").context("writing the demo registries.conf")?;
    let fixtures = "fixtures/demo-images";
    for (name, payload) in [("demo.raw", "shared"), ("demo.qcow2", "ztp")] {
        let img = out.join(name);
        run(Command::new(&bin)
            .args([
                "build",
                "--release",
                &format!("oci:{fixtures}/oci:4.14.3"),
                "--assisted-images",
                &format!("{fixtures}/assisted-images.txt"),
                "--additional-images",
                &format!("{fixtures}/additional-images.txt"),
                "--oci-mirror",
                &format!("{fixtures}/oci"),
                "--layout",
                "demo",
                "--payload",
                payload,
                "--store",
            ])
            .arg(out.join("store"))
            .arg("--authfile")
            .arg(&auth)
            .arg("--registries-conf")
            .arg(&conf)
            .arg("-o")
            .arg(&img))?;
        run(Command::new(&bin).arg("verify").arg(&img))?;
    }
    let raw = out.join("demo.raw");
    let qcow2 = out.join("demo.qcow2");
    println!();
    println!("Demo images (built from {fixtures}, verified):");
    println!(
        "  raw:   {} (shared payload), block map {}.bmap, report {}.report.json",
        raw.display(),
        raw.display(),
        raw.display()
    );
    println!(
        "  qcow2: {} (ztp payload), report {}.report.json",
        qcow2.display(),
        qcow2.display()
    );
    println!();
    println!("Flash the raw image onto a disk (destroys what the disk held):");
    println!(
        "  bmaptool copy --bmap {0}.bmap {0} /dev/sdX   # writes and checks only the mapped blocks",
        raw.display()
    );
    println!(
        "  dd if={} of=/dev/sdX bs=4M oflag=direct status=progress   # every block, holes as zeros",
        raw.display()
    );
    println!("  (not dd conv=sparse: it skips all-zero blocks, the XFS log and zero runs in files");
    println!("   included, and leaves the disk's old bytes there)");
    println!("Attach the qcow2 to a libvirt VM as its disk:");
    println!(
        "  virsh attach-disk VM {} vda --driver qemu --subdriver qcow2 --persistent",
        qcow2.display()
    );
    println!("On the node, the loaders on the partition put every image into containers-storage:");
    println!(
        "  ai-images/extract-ai.sh (discovery) and ocp-images/extract-ocp.sh (install), or for ztp"
    );
    println!(
        "  extract-ai.sh / extract-ocp.sh at the root; the files in {}.node/ install them.",
        raw.display()
    );
    println!("Look inside without root:");
    println!("  target/release/prestage verify {}", qcow2.display());
    println!("  sgdisk -p {}", raw.display());
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
        ["fixtures"] => {
            fixtures::write(&root().join("fixtures/demo-images"))?;
            let small = root().join("fixtures/release-small");
            if small.exists() {
                std::fs::remove_dir_all(&small)
                    .with_context(|| format!("removing {}", small.display()))?;
            }
            release::write(&small, release::SMALL).map(|_| ())
        }
        ["ci"] => ci(),
        ["bench", "compose", rest @ ..] => bench::compose(rest),
        ["bench", "pull", rest @ ..] => bench_pull::pull(rest),
        ["bench", "build", "--scale", "release", rest @ ..] => bench_release::build(rest),
        ["bench", "build", rest @ ..] => bench_build::build(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask demo | ci | fixtures | bench compose [--dir DIR] [--only \
                 files|entries] | bench pull [--dir DIR] | bench build [--scale release] [--dir DIR]"
            );
            std::process::exit(2);
        }
    }
}
