//! The lab files of a qcow2 image: the image as the disk of a libvirt VM, through kcli or
//! through virt-install / virsh.
//!
//! - `kcli-profile.yml`: a kcli profile whose first disk is the image (kcli finds it by name in
//!   the pool's directory: copy the image there first) and which boots the infra-env's discovery
//!   ISO;
//! - `libvirt.sh`: `libvirt.sh new NAME DISCOVERY_ISO` creates a VM with `virt-install` whose
//!   disk is the image (boot from the disk, then the ISO: the first boot finds no OS on the disk
//!   and boots the ISO, later boots the installed RHCOS); `libvirt.sh attach VM` attaches the image
//!   to an existing VM as its disk `vda` with `virsh attach-disk`. Extra arguments go to
//!   virt-install / virsh (e.g. `--print-xml`); `LIBVIRT_DEFAULT_URI` picks the hypervisor.
//!
//! The VM's size is what Single Node OpenShift needs at least (8 vCPUs, 16 GiB): 8 vCPUs and
//! 32 GiB.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// vCPUs of the VM.
const VCPUS: u32 = 8;
/// Memory of the VM in MiB.
const MEMORY_MIB: u32 = 32768;
/// The VM / profile name.
const NAME: &str = "prestaged-sno";

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A kcli profile.
#[derive(Debug, Serialize)]
struct Profile {
    uefi: bool,
    memory: u32,
    numcpus: u32,
    pool: &'static str,
    disks: Vec<KcliDisk>,
    nets: Vec<&'static str>,
    iso: &'static str,
    start: bool,
}

#[derive(Debug, Serialize)]
struct KcliDisk {
    name: String,
    pool: &'static str,
    size: u64,
    interface: &'static str,
}

/// `kcli-profile.yml` for the image at `image` of `disk_size` bytes.
pub fn kcli_profile(image: &Path, disk_size: u64) -> Result<String> {
    let name = image
        .file_name()
        .with_context(|| format!("{}: not a file path", image.display()))?
        .to_string_lossy()
        .to_string();
    let mut profiles = BTreeMap::new();
    profiles.insert(
        NAME,
        Profile {
            uefi: true,
            memory: MEMORY_MIB,
            numcpus: VCPUS,
            pool: "default",
            disks: vec![KcliDisk {
                name: name.clone(),
                pool: "default",
                size: disk_size.div_ceil(1 << 30),
                interface: "virtio",
            }],
            nets: vec!["default"],
            iso: "discovery.iso",
            start: true,
        },
    );
    let body = serde_yaml_ng::to_string(&profiles).context("serializing kcli-profile.yml")?;
    Ok(format!(
        "# kcli: the pre-staged {name} as the first disk of a VM booting the discovery ISO.\n\
         # Copy the image and the infra-env's ISO (as discovery.iso) into the pool's directory\n\
         # (cp --sparse=always {image} /var/lib/libvirt/images/), add this to\n\
         # ~/.kcli/profiles.yml, then: kcli create vm -p {NAME} sno1\n{body}",
        image = shell_quote(&image.display().to_string()),
    ))
}

/// `libvirt.sh` for the image at `image` (an absolute path).
pub fn libvirt_script(image: &Path) -> String {
    let img = shell_quote(&image.display().to_string());
    format!(
        r#"#!/bin/bash
# libvirt.sh: the pre-staged image as the disk of a libvirt VM. Written by prestage.
#
#   libvirt.sh new NAME DISCOVERY_ISO [virt-install options]   a new VM on this disk
#   libvirt.sh attach VM [virsh options]                        an existing VM with no disk yet
#
# The VM boots from the disk, then from the ISO: the first boot finds no OS on the disk and boots
# the discovery ISO; the install writes RHCOS in front of the data partition.
set -euo pipefail
IMAGE={img}
case "${{1:-}}" in
    new)
        [ "$#" -ge 3 ] || {{ echo "usage: libvirt.sh new NAME DISCOVERY_ISO [virt-install options]" >&2; exit 2; }}
        name=$2 iso=$3
        shift 3
        # virt-install splits --disk at commas: one in the path is written twice.
        exec virt-install --name "${{name}}" --memory {MEMORY_MIB} --vcpus {VCPUS} --os-variant rhel9.0 \
            --boot hd,cdrom --disk "path=${{IMAGE//,/,,}},format=qcow2,bus=virtio" --cdrom "${{iso}}" \
            --network network=default --noautoconsole "$@"
        ;;
    attach)
        [ "$#" -ge 2 ] || {{ echo "usage: libvirt.sh attach VM [virsh options]" >&2; exit 2; }}
        vm=$2
        shift 2
        exec virsh attach-disk "${{vm}}" "${{IMAGE}}" vda --driver qemu --subdriver qcow2 \
            --targetbus virtio --persistent "$@"
        ;;
    *)
        echo "usage: libvirt.sh new NAME DISCOVERY_ISO | libvirt.sh attach VM" >&2
        exit 2
        ;;
esac
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/srv/a.qcow2"), "/srv/a.qcow2");
        assert_eq!(shell_quote("/srv/a b's"), "'/srv/a b'\\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(id)"), "'$(id)'");
    }

    #[test]
    fn profile_names_the_image() {
        let y = kcli_profile(Path::new("/srv/x/demo.qcow2"), (1 << 30) + 1).unwrap();
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&y).unwrap();
        let d = &v[NAME]["disks"][0];
        assert_eq!(d["name"].as_str(), Some("demo.qcow2"));
        assert_eq!(d["size"].as_u64(), Some(2));
    }
}
