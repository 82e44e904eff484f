//! What Assisted Service's REST API takes: the request bodies that set the two Ignition
//! overrides and the installer arguments, and a small script that merges them into what the
//! service already holds and sends them with curl. (GitOps ZTP's files are in
//! [`super::gitops`].)
//!
//! - `discovery.patch`: `{"ignition_config_override": "<discovery override>"}` for
//!   `PATCH /api/assisted-install/v2/infra-envs/{infra_env_id}`;
//! - `pointer.patch`: `{"config": "<install override>"}` for
//!   `PATCH /api/assisted-install/v2/infra-envs/{infra_env_id}/hosts/{host_id}/ignition`;
//! - `installer-args.json`: `["--save-partlabel","<label>"]`, so coreos-installer keeps the
//!   data partition when it writes RHCOS (sent as `{"args": [...]}` to
//!   `.../hosts/{host_id}/installer-args`);
//! - `assisted.sh`: merges them into what the service holds and applies them (service URL,
//!   infra-env id, host id; token from the environment, never printed; see the script's header);
//!   a payload's cluster manifests (`store`) it uploads to the cluster the infra-env is bound to
//!   (`POST /api/assisted-install/v2/clusters/{cluster_id}/manifests`, folder `openshift`),
//!   replacing only manifests prestage wrote.
//!
//! Everything is serialized with serde from typed values; the Ignition strings are the compact
//! JSON of [`super::ignition::Config`].

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

const SCRIPT: &str = include_str!("assisted.sh");

/// `discovery.patch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfraEnvPatch {
    /// The discovery override, as a string.
    pub ignition_config_override: String,
}

/// `pointer.patch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostIgnitionPatch {
    /// The install-stage override, as a string.
    pub config: String,
}

/// coreos-installer's arguments that keep the partition `label`.
pub fn installer_args(label: &str) -> Vec<String> {
    vec!["--save-partlabel".to_string(), label.to_string()]
}

/// The two patch bodies and the installer arguments, as file bytes.
pub fn bodies(discovery: &str, install: &str, label: &str) -> Result<[(String, Vec<u8>); 3]> {
    let mut d = serde_json::to_vec(&InfraEnvPatch {
        ignition_config_override: discovery.to_string(),
    })
    .context("serializing discovery.patch")?;
    d.push(b'\n');
    let mut p = serde_json::to_vec(&HostIgnitionPatch {
        config: install.to_string(),
    })
    .context("serializing pointer.patch")?;
    p.push(b'\n');
    let mut a =
        serde_json::to_vec(&installer_args(label)).context("serializing installer-args.json")?;
    a.push(b'\n');
    Ok([
        ("discovery.patch".to_string(), d),
        ("pointer.patch".to_string(), p),
        ("installer-args.json".to_string(), a),
    ])
}

/// `assisted.sh` for the partition `label`, uploading `manifests` (files beside it) to the
/// infra-env's cluster; their names are checked ConfigMap keys (`[A-Za-z0-9._-]`).
pub fn script(label: &str, manifests: &[super::manifests::ClusterManifest]) -> String {
    let names = manifests
        .iter()
        .map(|m| m.file_name.as_str())
        .filter(|n| {
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
        .collect::<Vec<_>>()
        .join(" ");
    SCRIPT
        .replace("@LABEL@", label)
        .replace("@MANIFESTS@", &names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_the_ignition_as_strings() {
        let [d, p, a] = bodies("{\"d\":1}", "{\"i\":2}", "data").unwrap();
        assert_eq!(d.1, b"{\"ignition_config_override\":\"{\\\"d\\\":1}\"}\n");
        assert_eq!(p.1, b"{\"config\":\"{\\\"i\\\":2}\"}\n");
        assert_eq!(a.1, b"[\"--save-partlabel\",\"data\"]\n");
    }
}
