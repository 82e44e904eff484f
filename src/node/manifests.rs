//! Cluster manifests a payload needs on the installed cluster, handed to GitOps ZTP as extra
//! manifests: a ConfigMap (one data key per manifest file) that a ClusterInstance names in
//! `spec.extraManifestsRefs` (the SiteConfig operator passes it to the AgentClusterInstall's
//! `manifestsConfigMapRefs`, and Assisted Service applies each file at install time).
//!
//! [`for_format`] is where a payload hands its manifests over: `shared` and `ztp` need none
//! (their loaders copy the images into the node's own containers-storage). A payload the
//! cluster must be configured for (a MachineConfig, a ContainerRuntimeConfig) returns them
//! there; `clusterinstance.yaml` and `prestage node IMAGE --into FILE` then carry the ConfigMap
//! and the reference to it without further changes.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::payload::Format;

/// The name of the ConfigMap holding prestage's cluster manifests (in the ClusterInstance's
/// namespace).
pub const CONFIG_MAP: &str = "prestage-extra-manifests";

/// One cluster manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterManifest {
    /// Its file name, the ConfigMap's data key: `[A-Za-z0-9._-]`, ending in `.yaml` or `.yml`
    /// (Assisted Service takes manifests by those extensions).
    pub file_name: String,
    /// The manifest: one YAML document.
    pub yaml: String,
}

/// The cluster manifests the payload `format` needs for the partition `label`.
pub fn for_format(format: Format, label: &str) -> Vec<ClusterManifest> {
    let _ = label;
    match format {
        Format::Shared | Format::Ztp | Format::Store => Vec::new(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMap<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata<'a>,
    data: BTreeMap<&'a str, &'a str>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}

/// The ConfigMap carrying `manifests` (in `namespace` when given), as one YAML document.
pub fn config_map(manifests: &[ClusterManifest], namespace: Option<&str>) -> Result<String> {
    let mut data = BTreeMap::new();
    for m in manifests {
        let n = &m.file_name;
        if n.is_empty()
            || !n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            || !(n.ends_with(".yaml") || n.ends_with(".yml"))
        {
            bail!("internal error: cluster manifest name `{n}` is not a .yaml ConfigMap key");
        }
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&m.yaml)
            .with_context(|| format!("internal error: cluster manifest {n} is not YAML"))?;
        if data.insert(n.as_str(), m.yaml.as_str()).is_some() {
            bail!("internal error: two cluster manifests named {n}");
        }
    }
    let cm = ConfigMap {
        api_version: "v1",
        kind: "ConfigMap",
        metadata: Metadata {
            name: CONFIG_MAP,
            namespace,
        },
        data,
    };
    serde_yaml_ng::to_string(&cm).context("serializing the manifests' ConfigMap")
}

/// A stand-in for what a payload will hand over, for tests.
#[cfg(test)]
pub(crate) fn dummy() -> Vec<ClusterManifest> {
    vec![ClusterManifest {
        file_name: "99-prestage-test.yaml".to_string(),
        yaml: "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\n\
                   metadata:\n  name: 99-prestage-test\n  labels:\n    \
                   machineconfiguration.openshift.io/role: master\nspec: {}\n"
            .to_string(),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_no_payload_needs_manifests() {
        for f in Format::ALL {
            assert!(for_format(f, "data").is_empty());
        }
    }

    #[test]
    fn the_config_map_carries_each_manifest_under_its_file_name() {
        let y = config_map(&dummy(), Some("site-a")).unwrap();
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&y).unwrap();
        assert_eq!(v["kind"].as_str(), Some("ConfigMap"));
        assert_eq!(v["metadata"]["name"].as_str(), Some(CONFIG_MAP));
        assert_eq!(v["metadata"]["namespace"].as_str(), Some("site-a"));
        assert_eq!(
            v["data"]["99-prestage-test.yaml"].as_str(),
            Some(dummy()[0].yaml.as_str())
        );
        let mut bad = dummy();
        bad[0].file_name = "x.json".into();
        assert!(config_map(&bad, None).is_err());
    }
}
