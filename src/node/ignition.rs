//! The Ignition overrides that install a loader and its systemd unit on the node, one per stage.
//!
//! - discovery (the live ISO Assisted Service boots): `/usr/local/bin/extract-ai.sh` and
//!   `precache-images.service` (`Before=agent.service`);
//! - install (RHCOS on disk, first boot): `/usr/local/bin/extract-ocp.sh` and
//!   `precache-ocp-images.service` (`Before=machine-config-daemon-pull.service
//!   nodeip-configuration.service`).
//!
//! Spec **3.2.0**: Assisted Service parses every override with Ignition's own 3.2 parser, falling
//! back to 3.1 (for OCP 4.6) and refusing anything else, so 3.3 or later would be refused; 3.2.0
//! is what it uses itself, what GitOps ZTP passes through to it, and what every RHCOS since OCP
//! 4.7 runs. File modes are decimal integers (`493` = 0755), contents `data:` URLs (base64).
//!
//! The `store` payload's discovery override is different: no loader, but `storage.conf` and the
//! units that mount the store ([`super::store`]); its install override is the fallback loader
//! and its unit, as here.
//!
//! The units are `Type=oneshot` with only `Before=` and `WantedBy=`: the stage they precede waits
//! for them but starts whether they succeed or fail, so a loader that fails (images missing from
//! the node's storage are then pulled from the network as usual) never blocks the install. They
//! disable themselves after running (`ExecStopPost=`, which runs on success and failure), so an
//! installed node does not reload on every boot. `enabled: true` makes Ignition write the preset
//! (`/etc/systemd/system-preset/20-ignition.preset`) that enables them on first boot.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::loader;
use crate::payload::{Format, Stage};

/// The Ignition spec version of the overrides.
pub const VERSION: &str = "3.2.0";

/// Where a loader is installed on the node.
pub fn loader_path(stage: Stage) -> String {
    format!("/usr/local/bin/{}", loader::file_name(stage))
}

/// The unit that runs a stage's loader.
pub fn unit_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Discovery => "precache-images.service",
        Stage::Install => "precache-ocp-images.service",
    }
}

/// The units a stage's loader runs before.
fn before(stage: Stage) -> &'static str {
    match stage {
        Stage::Discovery => "agent.service",
        Stage::Install => "machine-config-daemon-pull.service nodeip-configuration.service",
    }
}

/// Upper bound on one run: a loader that hangs must not hold the install forever.
const TIMEOUT: &str = "2h";

/// The systemd unit of a stage.
pub fn unit(stage: Stage, format: Format, label: &str) -> String {
    let what = match stage {
        Stage::Discovery => "discovery",
        Stage::Install => "install",
    };
    format!(
        "[Unit]\n\
         Description=Load the pre-staged {what} images ({fmt} payload) from the partition labelled {label}\n\
         Documentation=file://{path}\n\
         Before={before}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={path}\n\
         ExecStopPost=/usr/bin/systemctl --no-reload disable {name}\n\
         TimeoutStartSec={TIMEOUT}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        fmt = format.name(),
        path = loader_path(stage),
        before = before(stage),
        name = unit_name(stage),
    )
}

/// Whether `contents` is a unit file prestage wrote (any version, format, stage or label): what an
/// Ignition merge may replace instead of refusing as the user's own unit.
pub fn is_prestage_unit(contents: &str) -> bool {
    (contents.starts_with("[Unit]\nDescription=Load the pre-staged ")
        && contents.contains("\nDocumentation=file:///usr/local/bin/extract-"))
        || super::store::is_store_unit(contents)
}

/// An Ignition config, the parts the overrides use (spec 3.2.0 field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Metadata: the spec version.
    pub ignition: Meta,
    /// Files.
    pub storage: Storage,
    /// Units.
    pub systemd: Systemd,
}

/// `ignition`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// `3.2.0`.
    pub version: String,
}

/// `storage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// `storage.files`.
    pub files: Vec<File>,
}

/// `storage.files[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Absolute path on the node.
    pub path: String,
    /// Permission bits, as a decimal integer in JSON.
    pub mode: u32,
    /// Replace a file already there.
    pub overwrite: bool,
    /// The bytes.
    pub contents: Resource,
}

/// `contents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// A `data:` URL.
    pub source: String,
}

/// `systemd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Systemd {
    /// `systemd.units`.
    pub units: Vec<Unit>,
}

/// `systemd.units[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// Unit name.
    pub name: String,
    /// Enabled through a preset on first boot.
    pub enabled: bool,
    /// The unit file.
    pub contents: String,
}

/// `bytes` as a base64 `data:` URL.
pub fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:text/plain;charset=utf-8;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The override of `stage`: its loader (`loader_bytes`) and its unit.
pub fn config(stage: Stage, format: Format, label: &str, loader_bytes: &[u8]) -> Config {
    Config {
        ignition: Meta {
            version: VERSION.to_string(),
        },
        storage: Storage {
            files: vec![File {
                path: loader_path(stage),
                mode: 0o755,
                overwrite: true,
                contents: Resource {
                    source: data_url(loader_bytes),
                },
            }],
        },
        systemd: Systemd {
            units: vec![Unit {
                name: unit_name(stage).to_string(),
                enabled: true,
                contents: unit(stage, format, label),
            }],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_decimal_and_contents_data_urls() {
        let c = config(Stage::Install, Format::Shared, "data", b"#!/bin/bash\n");
        let v: serde_json::Value = serde_json::to_value(&c).unwrap();
        assert_eq!(v["ignition"]["version"], "3.2.0");
        assert_eq!(v["storage"]["files"][0]["mode"], 493);
        assert_eq!(
            v["storage"]["files"][0]["contents"]["source"],
            "data:text/plain;charset=utf-8;base64,IyEvYmluL2Jhc2gK"
        );
        assert_eq!(
            v["systemd"]["units"][0]["name"],
            "precache-ocp-images.service"
        );
    }

    #[test]
    fn units_only_order_and_disable_themselves() {
        for s in Stage::ALL {
            let u = unit(s, Format::Ztp, "data");
            for line in u.lines() {
                for dep in ["Requires=", "Requisite=", "BindsTo=", "After=", "PartOf="] {
                    assert!(!line.starts_with(dep), "{line}");
                }
            }
            assert!(u.contains(&format!("ExecStart={}\n", loader_path(s))));
            assert!(u.contains(&format!("disable {}\n", unit_name(s))));
        }
        assert!(unit(Stage::Discovery, Format::Shared, "data").contains("Before=agent.service\n"));
        for f in Format::ALL {
            for s in Stage::ALL {
                assert!(is_prestage_unit(&unit(s, f, "lab-1")));
            }
        }
        for s in Stage::ALL {
            for u in super::super::store::units(s, "lab-1") {
                assert!(is_prestage_unit(&u.contents), "{}", u.name);
            }
        }
        assert!(!is_prestage_unit("[Unit]\nDescription=mine\n"));
        assert!(unit(Stage::Install, Format::Shared, "data")
            .contains("Before=machine-config-daemon-pull.service nodeip-configuration.service\n"));
    }
}
