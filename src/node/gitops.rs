//! GitOps ZTP: prestage's settings for a `ClusterInstance` (`clusterinstance.yaml`) and for a
//! `SiteConfig` (`siteconfig.yaml`), and `prestage node IMAGE --into FILE`, which merges them into
//! a user's own file.
//!
//! - **ClusterInstance** (`siteconfig.open-cluster-management.io/v1alpha1`, the SiteConfig
//!   operator of RHACM 2.12 and later; stolostron/siteconfig `api/v1alpha1/
//!   clusterinstance_types.go`): the discovery override is `spec.ignitionConfigOverride` (into
//!   the InfraEnv), the install override `spec.nodes[].ignitionConfigOverride` and the installer
//!   arguments `spec.nodes[].installerArgs` (both onto the BareMetalHost), each a string holding
//!   JSON; cluster manifests come from ConfigMaps named in `spec.extraManifestsRefs`
//!   ([`super::manifests`]).
//! - **SiteConfig** (`ran.openshift.io/v1`, the generator of ztp-site-generate 4.20 and earlier,
//!   removed upstream in November 2025): `spec.clusters[].ignitionConfigOverride`,
//!   `spec.clusters[].nodes[].ignitionConfigOverride` and `.installerArgs`.
//!
//! `--into` edits the file in place ([`merge_into`]): every ClusterInstance and SiteConfig
//! document gets the settings, every node of it too, merged with what it has
//! ([`super::merge`]); other documents and every other byte are left as they are
//! ([`super::yamledit`]: comments, key order, quoting and document order kept). The result is
//! read back with a second YAML parser (libyaml, through serde_yaml_ng) and must equal the input
//! with exactly those values changed; it is written under a temporary name in the file's
//! directory, with the file's mode, and renamed over it. A file already holding the settings is
//! not rewritten.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value as Yaml;

use super::ignition::Config;
use super::json::Json;
use super::manifests::{self, ClusterManifest};
use super::merge::{self, Merged};
use super::yamledit::{self, Edits, Kind, Node, Src, Value};
use crate::compose::gpt;

/// `apiVersion` of a ClusterInstance.
pub const CLUSTER_INSTANCE_API: &str = "siteconfig.open-cluster-management.io/v1alpha1";
/// `apiVersion` of a SiteConfig.
pub const SITE_CONFIG_API: &str = "ran.openshift.io/v1";

/// What prestage sets.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The partition label (`--save-partlabel`).
    pub label: String,
    /// The discovery-stage override.
    pub discovery: Config,
    /// The install-stage override.
    pub install: Config,
    /// Cluster manifests the payload needs.
    pub manifests: Vec<ClusterManifest>,
    /// The image's partition table, to judge a user's `--save-partindex`.
    pub partitions: Option<Vec<gpt::Found>>,
}

impl Settings {
    fn installer_args(&self) -> Json {
        Json::Array(vec![
            Json::String("--save-partlabel".to_string()),
            Json::String(self.label.clone()),
        ])
    }

    fn json(&self, c: &Config) -> Result<Json> {
        Json::of(c).map_err(|e| anyhow::anyhow!("internal error: our override: {e}"))
    }
}

/// `s` indented by `n` spaces on every non-empty line.
fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.split('\n')
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `clusterinstance.yaml`: the three fields (and, when the payload needs cluster manifests, the
/// reference and the ConfigMap) at their ClusterInstance paths. `what` names the image, `image`
/// is how to name it on a command line.
pub fn clusterinstance(s: &Settings, what: &str, image: &str) -> Result<String> {
    let discovery = s.json(&s.discovery)?.to_pretty();
    let install = s.json(&s.install)?.to_pretty();
    let args = yamledit::single_quoted(&s.installer_args().to_compact());
    let mut out = format!(
        "# GitOps ZTP with the SiteConfig operator: the pre-staging settings of {what}, for a\n\
         # ClusterInstance ({CLUSTER_INSTANCE_API}). Merge them into yours, keeping the\n\
         # overrides and installer arguments it already has:\n\
         #   prestage node {image} --into YOUR-CLUSTERINSTANCE.yaml\n\
         # or copy by hand: spec.ignitionConfigOverride (the discovery ISO), and in each node\n\
         # ignitionConfigOverride (the installed system) and installerArgs.\n\
         apiVersion: {CLUSTER_INSTANCE_API}\n\
         kind: ClusterInstance\n\
         spec:\n  ignitionConfigOverride: |\n{}\n",
        indent(&discovery, 4)
    );
    if !s.manifests.is_empty() {
        out.push_str(&format!(
            "  extraManifestsRefs:\n    - name: {}\n",
            manifests::CONFIG_MAP
        ));
    }
    out.push_str(&format!(
        "  nodes:\n    - ignitionConfigOverride: |\n{}\n      installerArgs: {args}\n",
        indent(&install, 8)
    ));
    if !s.manifests.is_empty() {
        out.push_str(&format!(
            "---\n# The cluster manifests of the payload: create this ConfigMap in the \
             ClusterInstance's namespace.\n{}",
            manifests::config_map(&s.manifests, None)?
        ));
    }
    Ok(out)
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
pub fn siteconfig(s: &Settings, what: &str, image: &str) -> Result<String> {
    let snippet = SiteConfigSnippet {
        spec: SiteSpec {
            clusters: vec![SiteCluster {
                ignition_config_override: s.json(&s.discovery)?.to_compact(),
                nodes: vec![SiteNode {
                    installer_args: s.installer_args().to_compact(),
                    ignition_config_override: s.json(&s.install)?.to_compact(),
                }],
            }],
        },
    };
    let body = serde_yaml_ng::to_string(&snippet).context("serializing siteconfig.yaml")?;
    Ok(format!(
        "# GitOps ZTP with the SiteConfig generator of ztp-site-generate 4.20 and\n\
         # earlier: the pre-staging settings of {what}, for a SiteConfig ({SITE_CONFIG_API}).\n\
         # Merge them into yours, keeping the overrides and installer arguments it already has:\n\
         #   prestage node {image} --into YOUR-SITECONFIG.yaml\n\
         # or copy by hand: ignitionConfigOverride into each cluster (beside clusterName), and\n\
         # ignitionConfigOverride and installerArgs into each of its nodes (beside hostName).\n\
         {body}"
    ))
}

/// What `--into` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The documents that received the settings, e.g. `ClusterInstance site-a`.
    pub targets: Vec<String>,
    /// Their nodes.
    pub nodes: usize,
    /// Whether the file changed.
    pub changed: bool,
}

/// One step of a path in a document, for checking the result.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A change `--into` intends, checked against the re-read result.
#[derive(Debug, Clone)]
enum Change {
    /// The string at a path.
    Set(usize, Vec<Seg>, String),
    /// An item appended to the list at a path (created when missing or null).
    Push(usize, Vec<Seg>, Yaml),
    /// A whole document replaced.
    ReplaceDoc(usize, Yaml),
    /// A document added at the end.
    AppendDoc(Yaml),
}

/// Where a node is: its path as messages print it and as steps.
#[derive(Debug, Clone)]
struct At {
    text: String,
    segs: Vec<Seg>,
}

impl At {
    fn root() -> At {
        At {
            text: String::new(),
            segs: Vec::new(),
        }
    }
    fn key(&self, k: &str) -> At {
        let mut segs = self.segs.clone();
        segs.push(Seg::Key(k.to_string()));
        At {
            text: if self.text.is_empty() {
                k.to_string()
            } else {
                format!("{}.{k}", self.text)
            },
            segs,
        }
    }
    fn index(&self, i: usize) -> At {
        let mut segs = self.segs.clone();
        segs.push(Seg::Index(i));
        At {
            text: format!("{}[{i}]", self.text),
            segs,
        }
    }
}

/// The work on one file.
struct Work<'a> {
    src: Src<'a>,
    s: &'a Settings,
    edits: Edits,
    changes: Vec<Change>,
    nodes: usize,
}

impl Work<'_> {
    /// The block mapping at `key` of `map`.
    fn map_at<'n>(&self, map: &'n Node, at: &At, key: &str) -> Result<&'n Node> {
        let a = at.key(key);
        match map.get(key) {
            None => bail!("{}: missing", a.text),
            Some(n) if matches!(n.kind, Kind::Map(..)) => Ok(n),
            Some(n) => bail!("{}: not a mapping ({})", a.text, n.what()),
        }
    }

    /// The non-empty list at `key` of `map`.
    fn list_at<'n>(&self, map: &'n Node, at: &At, key: &str, of: &str) -> Result<&'n [Node]> {
        let a = at.key(key);
        match map.get(key).map(|n| &n.kind) {
            None => bail!("{}: missing; it lists the {of}", a.text),
            Some(Kind::Seq(items, _)) if items.is_empty() => {
                bail!("{}: an empty list: no {of} to pre-stage", a.text)
            }
            Some(Kind::Seq(items, _)) => Ok(items),
            Some(_) if map.get(key).is_some_and(Node::is_null) => {
                bail!("{}: an empty list: no {of} to pre-stage", a.text)
            }
            Some(_) => bail!(
                "{}: not a list ({})",
                a.text,
                map.get(key).map_or("nothing", Node::what)
            ),
        }
    }

    /// The string at `key` of `map` ("" when missing or null).
    fn string_at<'n>(&self, map: &'n Node, at: &At, key: &str, hint: &str) -> Result<&'n str> {
        match map.get(key) {
            None => Ok(""),
            Some(n) if n.is_null() => Ok(""),
            Some(n) => n.str().with_context(|| {
                format!("{}: not a string ({}){hint}", at.key(key).text, n.what())
            }),
        }
    }

    /// Merges an Ignition override at `key` of `map`.
    fn ignition(&mut self, doc: usize, map: &Node, at: &At, ours: &Config) -> Result<()> {
        let key = "ignitionConfigOverride";
        let a = at.key(key);
        let existing = self.string_at(map, at, key, "")?;
        if let Merged::Changed(json) =
            merge::merge_ignition(existing, ours).context(a.text.clone())?
        {
            let text = json.to_pretty();
            self.edits
                .set(&self.src, map, key, &Value::Block(&text))
                .with_context(|| at.text.clone())?;
            self.changes
                .push(Change::Set(doc, a.segs, format!("{text}\n")));
        }
        Ok(())
    }

    /// Merges the installer arguments at `installerArgs` of the node `map`.
    fn installer_args(&mut self, doc: usize, map: &Node, at: &At) -> Result<()> {
        let key = "installerArgs";
        let a = at.key(key);
        let existing = self.string_at(
            map,
            at,
            key,
            ": write the JSON list as a string, '[\"--append-karg\",\"ip=dhcp\"]'",
        )?;
        let args = merge::merge_installer_args(existing, &self.s.label).context(a.text.clone())?;
        if let Some(parts) = &self.s.partitions {
            merge::check_partindex(&args.partindex, parts, &self.s.label)
                .context(a.text.clone())?;
        }
        if let Merged::Changed(list) = args.merged {
            let text = Json::Array(list.into_iter().map(Json::String).collect()).to_compact();
            self.edits
                .set(&self.src, map, key, &Value::Quoted(&text))
                .with_context(|| at.text.clone())?;
            self.changes.push(Change::Set(doc, a.segs, text));
        }
        Ok(())
    }

    /// The install override and installer arguments of every node at `key` of `map`.
    fn nodes(&mut self, doc: usize, map: &Node, at: &At) -> Result<()> {
        let nodes = self.list_at(map, at, "nodes", "nodes")?;
        for (i, node) in nodes.iter().enumerate() {
            let a = at.key("nodes").index(i);
            if !matches!(node.kind, Kind::Map(..)) {
                bail!("{}: not a mapping ({})", a.text, node.what());
            }
            let install = self.s.install.clone();
            self.ignition(doc, node, &a, &install)?;
            self.installer_args(doc, node, &a)?;
            self.nodes += 1;
        }
        Ok(())
    }

    fn cluster_instance(&mut self, doc: usize, root: &Node) -> Result<()> {
        let at = At::root();
        let spec = self.map_at(root, &at, "spec")?;
        let spec_at = at.key("spec");
        let discovery = self.s.discovery.clone();
        self.ignition(doc, spec, &spec_at, &discovery)?;
        self.nodes(doc, spec, &spec_at)?;
        if !self.s.manifests.is_empty() {
            let key = "extraManifestsRefs";
            let listed = match spec.get(key).map(|n| &n.kind) {
                Some(Kind::Seq(items, _)) => items
                    .iter()
                    .any(|i| i.get("name").and_then(Node::str) == Some(manifests::CONFIG_MAP)),
                _ => false,
            };
            if !listed {
                let item = format!("name: {}", manifests::CONFIG_MAP);
                self.edits
                    .append_item(&self.src, spec, key, &item)
                    .context("spec")?;
                let mut m = serde_yaml_ng::Mapping::new();
                m.insert("name".into(), manifests::CONFIG_MAP.into());
                self.changes
                    .push(Change::Push(doc, spec_at.key(key).segs, Yaml::Mapping(m)));
            }
        }
        Ok(())
    }

    fn site_config(&mut self, doc: usize, root: &Node) -> Result<()> {
        let at = At::root();
        let spec = self.map_at(root, &at, "spec")?;
        let spec_at = at.key("spec");
        let clusters = self.list_at(spec, &spec_at, "clusters", "clusters")?;
        for (j, cluster) in clusters.iter().enumerate() {
            let a = spec_at.key("clusters").index(j);
            if !matches!(cluster.kind, Kind::Map(..)) {
                bail!("{}: not a mapping ({})", a.text, cluster.what());
            }
            if !self.s.manifests.is_empty() {
                bail!(
                    "{}: this payload needs cluster manifests ({}), which a SiteConfig takes \
                     from the directory its extraManifestPath names: copy them there from the \
                     image's .node directory (prestage node IMAGE writes it)",
                    a.text,
                    self.s
                        .manifests
                        .iter()
                        .map(|m| m.file_name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let discovery = self.s.discovery.clone();
            self.ignition(doc, cluster, &a, &discovery)?;
            self.nodes(doc, cluster, &a)?;
        }
        Ok(())
    }
}

/// Every document of `text` as serde_yaml_ng reads it.
fn values(text: &str) -> Result<Vec<Yaml>> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Yaml::deserialize(d).map_err(|e| anyhow::anyhow!("not YAML: {e}")))
        .collect()
}

/// `kind` and `metadata.name` of a document, for messages.
fn describe(root: &Node) -> String {
    let kind = root.get("kind").and_then(Node::str).unwrap_or("?");
    match root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::str)
    {
        Some(n) => format!("{kind} {n}"),
        None => kind.to_string(),
    }
}

/// Merges the settings into the YAML `text`; returns the new text (the same when nothing
/// changes) and what was done. Errors name the document and the YAML path.
pub fn merge_text(text: &str, s: &Settings) -> Result<(String, Summary)> {
    let src = Src::new(text);
    let docs = yamledit::parse(&src)?;
    let before = values(text)?;
    if before.len() != docs.len() {
        bail!(
            "internal error: two YAML parsers disagree on the number of documents ({} and {}); \
             nothing was changed",
            docs.len(),
            before.len()
        );
    }
    let mut w = Work {
        src,
        s,
        edits: Edits::default(),
        changes: Vec::new(),
        nodes: 0,
    };
    let mut targets = Vec::new();
    let mut others = Vec::new();
    let mut namespaces: Vec<String> = Vec::new();
    let many = docs.len() > 1;
    for (d, doc) in docs.iter().enumerate() {
        let root = &doc.root;
        let api = root.get("apiVersion").and_then(Node::str);
        let kind = root.get("kind").and_then(Node::str);
        let name = describe(root);
        let place = if many {
            format!("document {}, {name}", d + 1)
        } else {
            name.clone()
        };
        match (api, kind) {
            (Some(CLUSTER_INSTANCE_API), Some("ClusterInstance")) => {
                w.cluster_instance(d, root).context(place.clone())?;
                if !s.manifests.is_empty() {
                    let ns = root
                        .get("metadata")
                        .and_then(|m| m.get("namespace"))
                        .and_then(Node::str)
                        .with_context(|| {
                            format!(
                                "{place}: metadata.namespace: missing; the ConfigMap of the \
                                 payload's cluster manifests goes into the ClusterInstance's \
                                 namespace"
                            )
                        })?;
                    if !namespaces.iter().any(|n| n == ns) {
                        namespaces.push(ns.to_string());
                    }
                }
                targets.push(name);
            }
            (Some(SITE_CONFIG_API), Some("SiteConfig")) => {
                w.site_config(d, root).context(place.clone())?;
                targets.push(name);
            }
            (api, kind)
                if matches!(root.kind, Kind::Map(..)) && (api.is_some() || kind.is_some()) =>
            {
                others.push(format!(
                    "{} ({})",
                    kind.unwrap_or("no kind"),
                    api.unwrap_or("no apiVersion")
                ));
            }
            _ => {}
        }
    }
    if targets.is_empty() {
        bail!(
            "neither a ClusterInstance ({CLUSTER_INSTANCE_API}) nor a SiteConfig \
             ({SITE_CONFIG_API}): {}",
            if others.is_empty() {
                "it holds no Kubernetes object".to_string()
            } else {
                format!("it holds {}", others.join(", "))
            }
        );
    }
    // The manifests' ConfigMap, one per namespace: replaced when it differs, else added.
    for ns in &namespaces {
        let cm_text = manifests::config_map(&s.manifests, Some(ns))?;
        let cm: Yaml = serde_yaml_ng::from_str(&cm_text).context("internal error: ConfigMap")?;
        let found = docs.iter().enumerate().find(|(_, doc)| {
            let r = &doc.root;
            r.get("kind").and_then(Node::str) == Some("ConfigMap")
                && r.get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Node::str)
                    == Some(manifests::CONFIG_MAP)
                && r.get("metadata")
                    .and_then(|m| m.get("namespace"))
                    .and_then(Node::str)
                    == Some(ns.as_str())
        });
        match found {
            Some((d, _)) if before[d] == cm => {}
            Some((d, doc)) => {
                w.edits.replace_doc(&w.src, &doc.root, &cm_text);
                w.changes.push(Change::ReplaceDoc(d, cm));
            }
            None => {
                w.edits.append_doc(&w.src, &cm_text);
                w.changes.push(Change::AppendDoc(cm));
            }
        }
    }
    let summary = Summary {
        targets,
        nodes: w.nodes,
        changed: !w.edits.is_empty(),
    };
    if w.edits.is_empty() {
        return Ok((text.to_string(), summary));
    }
    let out = w.edits.apply(text)?;
    check(before, &out, &w.changes)?;
    Ok((out, summary))
}

/// The value at `segs` of `v`, created (as null) when the last step is a missing key.
fn at_mut<'v>(v: &'v mut Yaml, segs: &[Seg]) -> Option<&'v mut Yaml> {
    let mut cur = v;
    for (i, s) in segs.iter().enumerate() {
        cur = match s {
            Seg::Key(k) => {
                let m = cur.as_mapping_mut()?;
                if i + 1 == segs.len() && !m.contains_key(k.as_str()) {
                    m.insert(Yaml::String(k.clone()), Yaml::Null);
                }
                m.get_mut(k.as_str())?
            }
            Seg::Index(n) => cur.as_sequence_mut()?.get_mut(*n)?,
        };
    }
    Some(cur)
}

/// Checks that `out`, read by serde_yaml_ng, is `before` with exactly `changes` made.
fn check(mut want: Vec<Yaml>, out: &str, changes: &[Change]) -> Result<()> {
    let internal = || {
        anyhow::anyhow!(
            "internal error: the merged YAML does not read back as intended; nothing was written"
        )
    };
    for c in changes {
        match c {
            Change::Set(d, segs, s) => {
                let v = want
                    .get_mut(*d)
                    .and_then(|v| at_mut(v, segs))
                    .ok_or_else(internal)?;
                *v = Yaml::String(s.clone());
            }
            Change::Push(d, segs, item) => {
                let v = want
                    .get_mut(*d)
                    .and_then(|v| at_mut(v, segs))
                    .ok_or_else(internal)?;
                if v.is_null() {
                    *v = Yaml::Sequence(Vec::new());
                }
                v.as_sequence_mut().ok_or_else(internal)?.push(item.clone());
            }
            Change::ReplaceDoc(d, doc) => *want.get_mut(*d).ok_or_else(internal)? = doc.clone(),
            Change::AppendDoc(doc) => want.push(doc.clone()),
        }
    }
    let got = values(out).map_err(|e| internal().context(e))?;
    if got != want {
        return Err(internal());
    }
    Ok(())
}

/// `prestage node IMAGE --into FILE`: merges the settings into `file` in place (temporary name
/// in its directory, its mode kept, renamed over it); a symbolic link is followed, so the file
/// it points to is the one rewritten. Nothing is written when nothing changes or on any error.
pub fn merge_into(file: &Path, s: &Settings) -> Result<Summary> {
    let shown = file.display().to_string();
    let target = fs::canonicalize(file).with_context(|| format!("{shown}: cannot read"))?;
    let text = fs::read_to_string(&target).with_context(|| format!("{shown}: cannot read"))?;
    let (out, summary) = merge_text(&text, s).with_context(|| shown.clone())?;
    if !summary.changed {
        return Ok(summary);
    }
    let dir = target
        .parent()
        .with_context(|| format!("{shown}: no parent directory"))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let perms = fs::metadata(&target)
        .with_context(|| format!("{shown}: reading its mode"))?
        .permissions();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    crate::cleanup::register(tmp.path());
    let tmp_path = tmp.path().to_path_buf();
    let r = (|| -> Result<()> {
        tmp.write_all(out.as_bytes())
            .with_context(|| format!("writing {}", tmp_path.display()))?;
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("writing {}", tmp_path.display()))?;
        if fs::read(&tmp_path).with_context(|| format!("reading {}", tmp_path.display()))?
            != out.as_bytes()
        {
            bail!("{}: read back other bytes than written", tmp_path.display());
        }
        fs::set_permissions(&tmp_path, perms)
            .with_context(|| format!("setting the mode of {}", tmp_path.display()))?;
        tmp.persist(&target)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming into {}", target.display()))?;
        Ok(())
    })();
    crate::cleanup::forget(&tmp_path);
    r?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{ignition, loader};
    use crate::payload::{Format, Stage};

    fn settings(manifests: Vec<ClusterManifest>) -> Settings {
        let c = |stage| {
            ignition::config(
                stage,
                Format::Shared,
                "data",
                loader::script(Format::Shared, stage, "data")
                    .unwrap()
                    .as_bytes(),
            )
        };
        Settings {
            label: "data".to_string(),
            discovery: c(Stage::Discovery),
            install: c(Stage::Install),
            manifests,
            partitions: None,
        }
    }

    const CI: &str = "# my site\napiVersion: siteconfig.open-cluster-management.io/v1alpha1\nkind: ClusterInstance\nmetadata:\n  name: \"site-a\"\n  namespace: site-a\nspec:\n  clusterName: \"site-a\" # quoted\n  nodes:\n    - hostName: \"n1\"\n      installerArgs: '[\"--append-karg\",\"ip=dhcp\"]'\n";

    #[test]
    fn a_clusterinstance_gets_the_three_fields_and_a_second_run_changes_nothing() {
        let s = settings(Vec::new());
        let (out, sum) = merge_text(CI, &s).unwrap();
        assert!(sum.changed && sum.nodes == 1, "{sum:?}");
        assert_eq!(sum.targets, ["ClusterInstance site-a"]);
        assert!(out.starts_with("# my site\napiVersion: siteconfig.open-cluster-management.io/v1alpha1\nkind: ClusterInstance\nmetadata:\n  name: \"site-a\"\n  namespace: site-a\nspec:\n  clusterName: \"site-a\" # quoted\n  nodes:\n    - hostName: \"n1\"\n      installerArgs: '[\"--append-karg\",\"ip=dhcp\",\"--save-partlabel\",\"data\"]'\n      ignitionConfigOverride: |\n        {\n"), "{out}");
        let (again, sum) = merge_text(&out, &s).unwrap();
        assert!(!sum.changed);
        assert_eq!(again, out);
    }

    #[test]
    fn manifests_go_into_a_config_map_named_in_extra_manifests_refs() {
        let s = settings(manifests::dummy());
        let (out, _) = merge_text(CI, &s).unwrap();
        let docs = values(&out).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0]["spec"]["extraManifestsRefs"][0]["name"].as_str(),
            Some(manifests::CONFIG_MAP)
        );
        assert_eq!(docs[1]["kind"].as_str(), Some("ConfigMap"));
        assert_eq!(docs[1]["metadata"]["namespace"].as_str(), Some("site-a"));
        assert!(docs[1]["data"]["99-prestage-test.yaml"]
            .as_str()
            .is_some_and(|m| m.contains("kind: MachineConfig")));
        let (again, sum) = merge_text(&out, &s).unwrap();
        assert!(!sum.changed, "{again}");
        // A changed manifest replaces the ConfigMap in place.
        let mut other = manifests::dummy();
        other[0].yaml = other[0].yaml.replace("spec: {}", "spec:\n  config: {}");
        let (third, sum) = merge_text(&out, &settings(other)).unwrap();
        assert!(sum.changed);
        let docs = values(&third).unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[1]["data"]["99-prestage-test.yaml"]
            .as_str()
            .is_some_and(|m| m.contains("config: {}")));
        // The snippet carries both too.
        let snippet = clusterinstance(&s, "x", "x.raw").unwrap();
        let docs = values(&snippet).unwrap();
        assert_eq!(
            docs[0]["spec"]["extraManifestsRefs"][0]["name"].as_str(),
            Some(manifests::CONFIG_MAP)
        );
        assert_eq!(docs[1]["kind"].as_str(), Some("ConfigMap"));
        // A SiteConfig cannot take them.
        let sc = "apiVersion: ran.openshift.io/v1\nkind: SiteConfig\nspec:\n  clusters:\n    - clusterName: a\n      nodes:\n        - hostName: n\n";
        let e = format!("{:#}", merge_text(sc, &s).unwrap_err());
        assert!(
            e.contains(
                "spec.clusters[0]: this payload needs cluster manifests (99-prestage-test.yaml)"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_snippet_reads_back_as_the_overrides() {
        let s = settings(Vec::new());
        let y = clusterinstance(&s, "x", "x.raw").unwrap();
        let v: Yaml = serde_yaml_ng::from_str(&y).unwrap();
        let ign = |v: &Yaml| Json::parse(v.as_str().unwrap()).unwrap();
        assert_eq!(
            ign(&v["spec"]["ignitionConfigOverride"]),
            Json::of(&s.discovery).unwrap()
        );
        assert_eq!(
            ign(&v["spec"]["nodes"][0]["ignitionConfigOverride"]),
            Json::of(&s.install).unwrap()
        );
        assert_eq!(
            v["spec"]["nodes"][0]["installerArgs"].as_str(),
            Some("[\"--save-partlabel\",\"data\"]")
        );
        // Merging it into itself changes nothing: it already holds everything.
        let (_, sum) = merge_text(&y, &s).unwrap();
        assert!(!sum.changed);
    }

    #[test]
    fn bad_files_name_the_document_and_path() {
        let s = settings(Vec::new());
        for (text, want) in [
            ("a: 1\n", "neither a ClusterInstance"),
            ("apiVersion: v1\nkind: ConfigMap\n", "it holds ConfigMap (v1)"),
            (
                "apiVersion: siteconfig.open-cluster-management.io/v1alpha1\nkind: ClusterInstance\nmetadata:\n  name: x\nspec:\n  nodes: []\n",
                "ClusterInstance x: spec.nodes: an empty list",
            ),
            (
                "apiVersion: siteconfig.open-cluster-management.io/v1alpha1\nkind: ClusterInstance\nspec:\n  nodes:\n    - installerArgs: [\"-n\"]\n",
                "ClusterInstance: spec.nodes[0].installerArgs: not a string (a list)",
            ),
            (
                "x: 1\n---\napiVersion: siteconfig.open-cluster-management.io/v1alpha1\nkind: ClusterInstance\nspec:\n  ignitionConfigOverride: '{\"ignition\":{\"version\":\"2.2.0\"}}'\n  nodes:\n    - hostName: a\n",
                "document 2, ClusterInstance: spec.ignitionConfigOverride: ignition.version 2.2.0: not Ignition 3.x",
            ),
            ("a: [1\n", "not YAML"),
        ] {
            let e = format!("{:#}", merge_text(text, &s).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
