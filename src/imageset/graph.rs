//! Release channels: which releases a `platform.channels` entry selects, from the OpenShift
//! update graph (Cincinnati's `graph` API: `GET URL?channel=NAME&arch=ARCH` with `Accept:
//! application/json`, or the same JSON saved to a file, or the copy oc-mirror saved in its
//! archive's working-dir). `type: okd` channels are asked of OKD's update service.
//!
//! The graph's nodes are releases (`version`, `payload` pinned by digest, channels in
//! `metadata["io.openshift.upgrades.graph.release.channels"]`); `edges` are index pairs and
//! `conditionalEdges` name `from`/`to` versions. A channel entry selects, as oc-mirror does:
//! - neither `minVersion` nor `maxVersion` (and not `full`): the newest release of the channel;
//! - `full: true`: every release of the channel from `minVersion` (default: the oldest) to
//!   `maxVersion` (default: the newest);
//! - otherwise every release from `minVersion` to `maxVersion` (default: the newest); a
//!   `maxVersion` alone selects that release only;
//! - `shortestPath: true`: only the releases on a shortest update path from `minVersion` to
//!   `maxVersion` (conditional edges count as updates; among equally short paths the one
//!   through the newest releases).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use semver::Version;
use serde::Deserialize;

use crate::fetch::http::HttpClient;
use crate::fetch::reference::ImageRef;

/// OpenShift's public update service.
pub const DEFAULT_UPDATE_GRAPH: &str = "https://api.openshift.com/api/upgrades_info/v1/graph";

/// OKD's update service, as oc-mirror queries it for `type: okd` channels (openshift/oc-mirror
/// `internal/pkg/cincinnati/download.go` `OkdUpdateURL`, with the same `channel` and `arch`
/// query as for OCP).
pub const OKD_UPDATE_GRAPH: &str = "https://origin-release.ci.openshift.org/graph";

/// Which releases a channel names (an ImageSetConfiguration channel's `type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseKind {
    /// OpenShift Container Platform (`type: ocp`, the default).
    #[default]
    Ocp,
    /// OKD (`type: okd`): its own update service and release repositories.
    Okd,
}

impl ReleaseKind {
    /// As an ImageSetConfiguration spells it.
    pub fn name(self) -> &'static str {
        match self {
            ReleaseKind::Ocp => "ocp",
            ReleaseKind::Okd => "okd",
        }
    }

    /// The update service oc-mirror asks for such channels.
    pub fn default_update_graph(self) -> &'static str {
        match self {
            ReleaseKind::Ocp => DEFAULT_UPDATE_GRAPH,
            ReleaseKind::Okd => OKD_UPDATE_GRAPH,
        }
    }
}

/// The node metadata key listing a release's channels.
pub const CHANNELS_KEY: &str = "io.openshift.upgrades.graph.release.channels";

/// Largest graph document accepted.
const MAX_GRAPH: u64 = 64 << 20;

/// What a `platform.channels` entry asks for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRange {
    /// Channel name, e.g. `stable-4.14`.
    pub name: String,
    /// Lowest version (inclusive).
    pub min_version: Option<String>,
    /// Highest version (inclusive).
    pub max_version: Option<String>,
    /// Every release of the channel in the range.
    pub full: bool,
    /// Only the releases on a shortest update path from min to max.
    pub shortest_path: bool,
    /// OCP or OKD.
    pub kind: ReleaseKind,
}

/// A release of the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its version.
    pub version: Version,
    /// The release image, pinned by digest.
    pub payload: String,
}

/// A channel's releases and updates.
#[derive(Clone, Debug)]
pub struct Graph {
    /// Where it came from, for messages.
    pub source: String,
    /// Releases, sorted by version.
    pub nodes: Vec<Node>,
    /// Updates, as indices into `nodes`.
    pub edges: BTreeSet<(usize, usize)>,
}

#[derive(Deserialize)]
struct Doc {
    nodes: Vec<NodeDoc>,
    #[serde(default)]
    edges: Vec<[usize; 2]>,
    #[serde(default, rename = "conditionalEdges")]
    conditional_edges: Vec<ConditionalDoc>,
}

#[derive(Deserialize)]
struct NodeDoc {
    version: String,
    payload: String,
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct ConditionalDoc {
    #[serde(default)]
    edges: Vec<FromTo>,
}

#[derive(Deserialize)]
struct FromTo {
    from: String,
    to: String,
}

/// Parses a graph document, keeping the releases of `channel` (a node without channel metadata
/// is taken to be in the channel asked for, as the service only returns those).
pub fn parse(source: &str, bytes: &[u8], channel: &str) -> Result<Graph> {
    let doc: Doc =
        serde_json::from_slice(bytes).map_err(|e| anyhow!("{source}: not an update graph: {e}"))?;
    let mut parsed = Vec::with_capacity(doc.nodes.len());
    for (i, n) in doc.nodes.iter().enumerate() {
        let version = Version::parse(&n.version)
            .map_err(|_| anyhow!("{source}: nodes[{i}].version: `{}` is not X.Y.Z", n.version))?;
        let r = ImageRef::parse(&n.payload)
            .map_err(|e| anyhow!("{source}: nodes[{i}].payload: {e:#}"))?;
        if r.digest.is_none() {
            bail!(
                "{source}: nodes[{i}].payload: `{}` is not pinned by digest",
                n.payload
            );
        }
        let in_channel = match n.metadata.get(CHANNELS_KEY).and_then(|v| v.as_str()) {
            Some(list) => list.split(',').any(|c| c.trim() == channel),
            None => true,
        };
        parsed.push((version, r.to_string(), in_channel));
    }
    // Keep the channel's nodes, sorted by version; map old indices to new ones.
    let mut order: Vec<usize> = (0..parsed.len()).filter(|&i| parsed[i].2).collect();
    order.sort_by(|&a, &b| parsed[a].0.cmp(&parsed[b].0));
    let mut index = vec![None; parsed.len()];
    let mut nodes = Vec::with_capacity(order.len());
    for (new, &old) in order.iter().enumerate() {
        if let Some(prev) = nodes.last().map(|n: &Node| &n.version) {
            if *prev == parsed[old].0 {
                bail!("{source}: release {} is listed twice", parsed[old].0);
            }
        }
        index[old] = Some(new);
        nodes.push(Node {
            version: parsed[old].0.clone(),
            payload: parsed[old].1.clone(),
        });
    }
    let mut edges = BTreeSet::new();
    for (k, [a, b]) in doc.edges.iter().enumerate() {
        if *a >= parsed.len() || *b >= parsed.len() {
            bail!("{source}: edges[{k}]: [{a}, {b}] names no node");
        }
        if let (Some(a), Some(b)) = (index[*a], index[*b]) {
            edges.insert((a, b));
        }
    }
    let by_version: BTreeMap<&Version, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (&n.version, i))
        .collect();
    for c in &doc.conditional_edges {
        for e in &c.edges {
            let (Ok(a), Ok(b)) = (Version::parse(&e.from), Version::parse(&e.to)) else {
                bail!(
                    "{source}: conditionalEdges: `{}` -> `{}` is not a pair of versions",
                    e.from,
                    e.to
                );
            };
            if let (Some(&a), Some(&b)) = (by_version.get(&a), by_version.get(&b)) {
                edges.insert((a, b));
            }
        }
    }
    Ok(Graph {
        source: source.to_string(),
        nodes,
        edges,
    })
}

fn version(field: &str, v: &Option<String>) -> Result<Option<Version>> {
    v.as_deref()
        .map(|s| Version::parse(s).map_err(|_| anyhow!("{field}: `{s}` is not X.Y.Z")))
        .transpose()
}

impl Graph {
    /// The releases `range` selects, oldest first.
    pub fn select(&self, range: &ChannelRange) -> Result<Vec<&Node>> {
        let ch = &range.name;
        let Some(newest) = self.nodes.last() else {
            bail!("{}: channel {ch} has no releases", self.source);
        };
        let min = version("minVersion", &range.min_version)?;
        let max = version("maxVersion", &range.max_version)?;
        let (lo, hi) = match (min, max, range.full) {
            (None, None, false) => (newest.version.clone(), newest.version.clone()),
            (None, Some(h), false) => (h.clone(), h),
            (lo, hi, _) => (
                lo.unwrap_or_else(|| self.nodes[0].version.clone()),
                hi.unwrap_or_else(|| newest.version.clone()),
            ),
        };
        if lo > hi {
            bail!("channel {ch}: minVersion {lo} is above maxVersion {hi}");
        }
        if range.shortest_path {
            return self.shortest_path(ch, &lo, &hi);
        }
        let v: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.version >= lo && n.version <= hi)
            .collect();
        if v.is_empty() {
            let known: Vec<String> = self.nodes.iter().map(|n| n.version.to_string()).collect();
            bail!(
                "{}: channel {ch} has no release from {lo} to {hi} (it has {})",
                self.source,
                known.join(", ")
            );
        }
        Ok(v)
    }

    fn find(&self, ch: &str, v: &Version) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.version == *v)
            .ok_or_else(|| anyhow!("{}: channel {ch} has no release {v}", self.source))
    }

    /// A shortest path from `lo` to `hi`; among equally short ones, the first found when every
    /// node's updates are tried newest first.
    fn shortest_path(&self, ch: &str, lo: &Version, hi: &Version) -> Result<Vec<&Node>> {
        let (from, to) = (self.find(ch, lo)?, self.find(ch, hi)?);
        let mut next: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        for &(a, b) in &self.edges {
            next[a].push(b);
        }
        for n in &mut next {
            n.sort_by(|a, b| b.cmp(a));
        }
        let mut parent = vec![None; self.nodes.len()];
        let mut seen = vec![false; self.nodes.len()];
        seen[from] = true;
        let mut queue = VecDeque::from([from]);
        while let Some(n) = queue.pop_front() {
            if n == to {
                break;
            }
            for &m in &next[n] {
                if !seen[m] {
                    seen[m] = true;
                    parent[m] = Some(n);
                    queue.push_back(m);
                }
            }
        }
        if !seen[to] {
            bail!(
                "{}: channel {ch} has no update path from {lo} to {hi}",
                self.source
            );
        }
        let mut path = vec![to];
        while let Some(p) = parent[*path.last().unwrap_or(&from)] {
            path.push(p);
        }
        path.reverse();
        Ok(path.into_iter().map(|i| &self.nodes[i]).collect())
    }
}

/// Where the update graph comes from: the service's URL, or a file holding its answer.
#[derive(Clone, Debug)]
pub enum GraphSource {
    /// `http(s)://...`: queried with `channel` and `arch`.
    Url(String),
    /// A saved answer (one channel's, or a graph whose nodes carry channel metadata).
    File(std::path::PathBuf),
}

impl GraphSource {
    /// `http://`/`https://` URLs are queried; anything else is a file.
    pub fn parse(s: &str) -> GraphSource {
        if s.starts_with("https://") || s.starts_with("http://") {
            GraphSource::Url(s.to_string())
        } else {
            GraphSource::File(Path::new(s).to_path_buf())
        }
    }

    /// The graph of `channel` for `arch` (`amd64`, ..., `multi`); `http` gives the client of
    /// the service's `host[:port]` (its TLS verification and proxies).
    pub fn load(
        &self,
        channel: &str,
        arch: &str,
        http: &dyn Fn(&str) -> Result<HttpClient>,
    ) -> Result<Graph> {
        match self {
            GraphSource::File(p) => {
                let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                parse(&p.display().to_string(), &bytes, channel)
            }
            GraphSource::Url(u) => {
                // `host[:port]`, as certificate directories are named.
                let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
                let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
                let host = authority.rsplit('@').next().unwrap_or_default();
                if host.is_empty() || u.contains('?') {
                    bail!("update graph {u}: expected http(s)://HOST[:PORT]/PATH without a query");
                }
                let client = http(host)?;
                let shown = format!("{u}?channel={channel}&arch={arch}");
                let mut url = url::Url::parse(u).map_err(|e| anyhow!("update graph {u}: {e}"))?;
                url.query_pairs_mut()
                    .append_pair("channel", channel)
                    .append_pair("arch", arch);
                let resp = client
                    .get(&url, &[("Accept", "application/json")], None)
                    .map_err(|e| match *e {
                        ureq::Error::Status(code, r) => {
                            anyhow!(
                                "update graph {shown}: HTTP {code} {}{}",
                                r.status_text(),
                                client.route(Some(&url))
                            )
                        }
                        ureq::Error::Transport(t) => {
                            // ureq's text starts with the URL again.
                            let msg = format!("{t}{}", client.route(t.url()));
                            let msg = msg
                                .strip_prefix(&format!("{shown}: "))
                                .map(str::to_string)
                                .unwrap_or(msg);
                            if msg.contains("certificate") || msg.contains("UnknownIssuer") {
                                anyhow!(
                                    "update graph {shown}: TLS certificate not trusted ({msg}); \
                                     put the service's CA in --cert-dir DIR/{host}/ca.crt or \
                                     /etc/containers/certs.d/{host}/ca.crt"
                                )
                            } else {
                                anyhow!("update graph {shown}: {msg}")
                            }
                        }
                    })?;
                let mut bytes = Vec::new();
                resp.into_reader()
                    .take(MAX_GRAPH + 1)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("update graph {shown}: reading the answer"))?;
                if bytes.len() as u64 > MAX_GRAPH {
                    bail!("update graph {shown}: answer larger than {MAX_GRAPH} bytes");
                }
                parse(&shown, &bytes, channel)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    /// 4.14.1 .. 4.14.6 in stable-4.14 (4.14.4 only in fast), updates 1->2->3->5->6, 1->3,
    /// 2->5 (conditional), 3->6.
    fn graph() -> Graph {
        let versions = ["4.14.3", "4.14.1", "4.14.2", "4.14.4", "4.14.5", "4.14.6"];
        let nodes: Vec<serde_json::Value> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let ch = if *v == "4.14.4" {
                    "fast-4.14"
                } else {
                    "fast-4.14,stable-4.14"
                };
                serde_json::json!({
                    "version": v,
                    "payload": format!("quay.io/ocp/release@{}", d(i as u8)),
                    "metadata": {CHANNELS_KEY: ch}
                })
            })
            .collect();
        // Indices into `versions`.
        let doc = serde_json::json!({
            "version": 1,
            "nodes": nodes,
            "edges": [[1, 2], [2, 0], [0, 4], [4, 5], [1, 0], [0, 5], [0, 3]],
            "conditionalEdges": [{"edges": [{"from": "4.14.2", "to": "4.14.5"}], "risks": []}]
        });
        parse("g.json", &serde_json::to_vec(&doc).unwrap(), "stable-4.14").unwrap()
    }

    fn sel(min: Option<&str>, max: Option<&str>, full: bool, sp: bool) -> Result<Vec<String>> {
        let g = graph();
        let r = ChannelRange {
            name: "stable-4.14".into(),
            min_version: min.map(Into::into),
            max_version: max.map(Into::into),
            full,
            shortest_path: sp,
            kind: ReleaseKind::Ocp,
        };
        Ok(g.select(&r)?
            .iter()
            .map(|n| n.version.to_string())
            .collect())
    }

    #[test]
    fn channel_selection() {
        let g = graph();
        assert_eq!(g.nodes.len(), 5, "4.14.4 is not in stable");
        assert_eq!(g.nodes[0].payload, format!("quay.io/ocp/release@{}", d(1)));
        assert_eq!(sel(None, None, false, false).unwrap(), ["4.14.6"]);
        assert_eq!(sel(None, Some("4.14.3"), false, false).unwrap(), ["4.14.3"]);
        assert_eq!(
            sel(Some("4.14.2"), None, false, false).unwrap(),
            ["4.14.2", "4.14.3", "4.14.5", "4.14.6"]
        );
        assert_eq!(
            sel(Some("4.14.2"), Some("4.14.5"), false, false).unwrap(),
            ["4.14.2", "4.14.3", "4.14.5"]
        );
        assert_eq!(sel(None, None, true, false).unwrap().len(), 5);
        assert_eq!(
            sel(None, Some("4.14.3"), true, false).unwrap(),
            ["4.14.1", "4.14.2", "4.14.3"]
        );
        // 1->3->6 beats 1->2->3->5->6.
        assert_eq!(
            sel(Some("4.14.1"), Some("4.14.6"), false, true).unwrap(),
            ["4.14.1", "4.14.3", "4.14.6"]
        );
        // The conditional edge 2->5 counts.
        assert_eq!(
            sel(Some("4.14.2"), Some("4.14.5"), false, true).unwrap(),
            ["4.14.2", "4.14.5"]
        );
    }

    #[test]
    fn selection_errors() {
        let e = sel(Some("4.15.0"), Some("4.15.3"), false, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "g.json: channel stable-4.14 has no release from 4.15.0 to 4.15.3 (it has 4.14.1, \
             4.14.2, 4.14.3, 4.14.5, 4.14.6)"
        );
        let e = sel(Some("4.14.4"), Some("4.14.6"), false, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "g.json: channel stable-4.14 has no release 4.14.4"
        );
        let e = sel(Some("4.14.6"), Some("4.14.1"), false, false).unwrap_err();
        assert!(e.to_string().contains("minVersion 4.14.6 is above"), "{e}");
        let e = sel(Some("4.14.5"), Some("4.14.6"), false, true).unwrap();
        assert_eq!(e, ["4.14.5", "4.14.6"]);
        let e = sel(Some("4.14.6"), Some("4.14.6"), false, true).unwrap();
        assert_eq!(e, ["4.14.6"]);

        let bad = |doc: &str| {
            parse("g.json", doc.as_bytes(), "stable-4.14")
                .unwrap_err()
                .to_string()
        };
        assert!(bad("{").starts_with("g.json: not an update graph: "));
        assert_eq!(
            bad(r#"{"nodes":[{"version":"4.14","payload":"quay.io/a/b@sha256:00"}]}"#),
            "g.json: nodes[0].version: `4.14` is not X.Y.Z"
        );
        assert_eq!(
            bad(r#"{"nodes":[{"version":"4.14.1","payload":"quay.io/a/b:4.14.1"}]}"#),
            "g.json: nodes[0].payload: `quay.io/a/b:4.14.1` is not pinned by digest"
        );
        let one = format!(
            r#"{{"nodes":[{{"version":"4.14.1","payload":"q.io/a@{}"}}],"edges":[[0,3]]}}"#,
            d(1)
        );
        assert_eq!(bad(&one), "g.json: edges[0]: [0, 3] names no node");
    }
}
