//! System packages the demo and the tests need: each tool is looked up on PATH and the Debian
//! packages providing missing ones are installed with apt-get (as root), saying what and why.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// (tool, Debian package) pairs; a tool given as an absolute path is a file that must exist.
pub type Needs = &'static [(&'static str, &'static str)];

/// What `cargo xtask demo` needs.
pub const DEMO: Needs = &[
    ("mkfs.xfs", "xfsprogs"),
    ("mkfs.fat", "dosfstools"),
    ("mcopy", "mtools"),
    ("sgdisk", "gdisk"),
];

/// What `cargo xtask ci` needs: the demo's tools plus the independent checkers the tests use.
pub const CI: Needs = &[
    ("mkfs.xfs", "xfsprogs"),
    ("xfs_repair", "xfsprogs"),
    ("xfs_db", "xfsprogs"),
    ("mkfs.fat", "dosfstools"),
    ("fsck.fat", "dosfstools"),
    ("mcopy", "mtools"),
    ("sgdisk", "gdisk"),
    ("grub-fstest", "grub-common"),
    ("qemu-img", "qemu-utils"),
    ("setpriv", "util-linux"),
    ("skopeo", "skopeo"),
    ("docker-registry", "docker-registry"),
    ("htpasswd", "apache2-utils"),
    ("openssl", "openssl"),
    ("bmaptool", "bmap-tools"),
    ("pigz", "pigz"),
    ("tinyproxy", "tinyproxy"),
    ("unshare", "util-linux"),
    // The node tests: the consumers of the generated files, and the node's own tools.
    ("ignition-validate", "ignition"),
    ("/usr/lib/dracut/modules.d/30ignition/ignition", "ignition"),
    ("systemd-analyze", "systemd"),
    ("shellcheck", "shellcheck"),
    ("curl", "curl"),
    ("jq", "jq"),
    ("virt-install", "virtinst"),
    ("virsh", "libvirt-clients"),
    ("losetup", "mount"),
    // The store payload's engine tests: podman with runc, and a static busybox in the images.
    ("podman", "podman"),
    ("runc", "runc"),
    ("/bin/busybox", "busybox-static"),
    // The tar content tests: GNU tar, file capabilities and extended attributes.
    ("tar", "tar"),
    ("setcap", "libcap2-bin"),
    ("getcap", "libcap2-bin"),
    ("setfattr", "attr"),
    ("getfattr", "attr"),
    // tests/coreos-installer (coreos-installer's library) links these.
    ("pkg-config", "pkg-config"),
    ("/usr/include/zstd.h", "libzstd-dev"),
    ("/usr/include/openssl/ssl.h", "libssl-dev"),
];

fn on_path(tool: &str) -> bool {
    if tool.starts_with('/') {
        return std::path::Path::new(tool).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(tool).is_file())
}

/// Whether this runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// Installs the packages of missing tools.
pub fn ensure(needs: Needs) -> Result<()> {
    let mut pkgs: Vec<&str> = needs
        .iter()
        .filter(|(t, _)| !on_path(t))
        .map(|&(_, p)| p)
        .collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    if pkgs.is_empty() {
        eprintln!(
            "system packages: all present ({})",
            needs
                .iter()
                .map(|n| n.1)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(());
    }
    let list = pkgs.join(" ");
    if !is_root() {
        bail!("missing system packages: {list}; install them with: sudo apt-get install --no-install-recommends {list}");
    }
    eprintln!("installing missing system packages: {list}");
    let bookworm = std::fs::read_to_string("/etc/os-release")
        .map(|s| s.contains("VERSION_CODENAME=bookworm"))
        .unwrap_or(false);
    let st = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .context("running apt-get update")?;
    if !st.success() {
        bail!("apt-get update failed: {st}");
    }
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
    ]);
    if bookworm {
        cmd.args(["-t", "bookworm"]);
    }
    let st = cmd
        .args(&pkgs)
        .status()
        .context("running apt-get install")?;
    if !st.success() {
        bail!("apt-get install {list} failed: {st}");
    }
    let still: Vec<&str> = needs
        .iter()
        .filter(|(t, _)| !on_path(t))
        .map(|&(t, _)| t)
        .collect();
    if !still.is_empty() {
        bail!(
            "still missing after installing {list}: {}",
            still.join(", ")
        );
    }
    Ok(())
}
