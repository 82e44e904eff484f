//! What Assisted Service and GitOps ZTP take: the request bodies that set the two Ignition
//! overrides and the installer arguments, a small script that sends them with curl, and the
//! SiteConfig snippet carrying the same three values.
//!
//! - `discovery.patch`: `{"ignition_config_override": "<discovery override>"}` for
//!   `PATCH /api/assisted-install/v2/infra-envs/{infra_env_id}`;
//! - `pointer.patch`: `{"config": "<install override>"}` for
//!   `PATCH /api/assisted-install/v2/infra-envs/{infra_env_id}/hosts/{host_id}/ignition`;
//! - `installer-args.json`: `["--save-partlabel","<label>"]`, so coreos-installer keeps the
//!   data partition when it writes RHCOS (sent as `{"args": [...]}` to
//!   `.../hosts/{host_id}/installer-args`);
//! - `assisted.sh`: applies them (service URL, infra-env id, host id; token from the
//!   environment, never printed);
//! - `siteconfig.yaml`: `clusters[].ignitionConfigOverride`, `nodes[].ignitionConfigOverride`
//!   and `nodes[].installerArgs` of a `ran.openshift.io/v1` SiteConfig, each a string as the
//!   SiteConfig fields are.
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

/// `assisted.sh` for the partition `label`.
pub fn script(label: &str) -> String {
    SCRIPT.replace("@LABEL@", label)
}

/// The SiteConfig snippet: `spec.clusters[0]` and its `nodes[0]` with the three fields only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfigSnippet {
    /// `spec`.
    pub spec: SiteSpec,
}

/// `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// `spec.clusters`.
    pub clusters: Vec<SiteCluster>,
}

/// `spec.clusters[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SiteCluster {
    /// The discovery override (it goes onto the cluster's InfraEnv).
    pub ignition_config_override: String,
    /// `nodes`.
    pub nodes: Vec<SiteNode>,
}

/// `spec.clusters[].nodes[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SiteNode {
    /// coreos-installer arguments, a JSON array as a string.
    pub installer_args: String,
    /// The install-stage override.
    pub ignition_config_override: String,
}

/// `siteconfig.yaml`.
pub fn siteconfig(discovery: &str, install: &str, label: &str, what: &str) -> Result<String> {
    let snippet = SiteConfigSnippet {
        spec: SiteSpec {
            clusters: vec![SiteCluster {
                ignition_config_override: discovery.to_string(),
                nodes: vec![SiteNode {
                    installer_args: serde_json::to_string(&installer_args(label))
                        .context("serializing the installer arguments")?,
                    ignition_config_override: install.to_string(),
                }],
            }],
        },
    };
    let body = serde_yaml_ng::to_string(&snippet).context("serializing siteconfig.yaml")?;
    Ok(format!(
        "# GitOps ZTP: the pre-staging settings of {what}, for a SiteConfig\n\
         # (ran.openshift.io/v1). Set these three keys in your cluster and in each of its nodes\n\
         # (beside clusterName, hostName, ...); an existing ignitionConfigOverride has to be\n\
         # merged by hand (both are Ignition 3.2.0 JSON).\n{body}"
    ))
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

    #[test]
    fn siteconfig_round_trips() {
        let y = siteconfig("{\"d\":1}", "{\"i\":2}", "data", "x").unwrap();
        let s: SiteConfigSnippet = serde_yaml_ng::from_str(&y).unwrap();
        let c = &s.spec.clusters[0];
        assert_eq!(c.ignition_config_override, "{\"d\":1}");
        assert_eq!(c.nodes[0].ignition_config_override, "{\"i\":2}");
        assert_eq!(c.nodes[0].installer_args, "[\"--save-partlabel\",\"data\"]");
    }
}
