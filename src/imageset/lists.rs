//! The two stage lists and the mapping the node loads.
//!
//! - Discovery (`ai-images.txt`): the release image, the assisted-installer agent, installer and
//!   controller images, and the release components the discovery rule names (by default
//!   `data/discovery-components.txt`, embedded). When an image set selects several releases
//!   (a channel range), the discovery images of each are listed, so whichever of them a site
//!   installs finds its discovery images on the partition.
//! - Install (`ocp-images.txt`): the release image, every release component (the discovery ones
//!   too: discovery storage is in RAM and gone after the reboot), the controller, the operators'
//!   bundle and related images, and the additional images.
//! - `mapping.txt`: `SRC=DEST:TAG`, one line per image of either list.
//!
//! Every source is written pinned by digest (`registry/repository@sha256:...`); tagged inputs are
//! resolved through a [`Resolve`] first. Blocked images ([`BlockRule`]) and images a [`Filter`]
//! matches are left out and recorded. Lists are sorted and free of duplicates.
//!
//! DEST/TAG scheme: DEST is `localhost/<source repository path>` (the registry host is dropped, as
//! a port is not valid in a repository name, and `localhost/` cannot be mistaken for a real
//! registry). TAG is, as `oc adm release mirror` names them, `<version>-<arch>` for the release
//! image and `<version>-<arch>-<component>` for release components (arch as in release names:
//! `x86_64`, `aarch64`, ...); the original tag for images given by tag; `sha256-<hex>` otherwise.
//! When two different images would get the same DEST:TAG, both fall back to `sha256-<hex>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use regex::Regex;
use serde::Serialize;

use super::catalog::Selected;
use super::config::NotStaged;
use super::filter::{Filter, Filtered};
use super::release::{self, Release};
use crate::fetch::digest::Digest;
use crate::fetch::reference::ImageRef;

/// The discovery rule shipped with prestage.
pub const DEFAULT_DISCOVERY_COMPONENTS: &str = include_str!("../../data/discovery-components.txt");

/// Resolves a tagged reference to the digest of its manifest (list) — by the fetch stage, after
/// pulling it.
pub trait Resolve {
    /// The digest `reference` (a registry reference with a tag) currently points to.
    fn resolve(&self, reference: &ImageRef) -> Result<Digest>;
}

/// Resolution from a table (`reference as normalized by ImageRef` → digest), e.g. built from the
/// store after a pull.
#[derive(Clone, Debug, Default)]
pub struct Resolved(pub BTreeMap<String, Digest>);

impl Resolve for Resolved {
    fn resolve(&self, reference: &ImageRef) -> Result<Digest> {
        match self.0.get(&reference.to_string()) {
            Some(d) => Ok(d.clone()),
            None => bail!("{reference}: not pinned by digest and not resolved"),
        }
    }
}

/// The release components discovery loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryRule {
    /// Where the rule came from, for messages.
    pub source: String,
    /// Component names, sorted.
    pub components: BTreeSet<String>,
}

impl DiscoveryRule {
    /// The rule shipped with prestage.
    pub fn builtin() -> Result<DiscoveryRule> {
        DiscoveryRule::parse(
            "data/discovery-components.txt",
            DEFAULT_DISCOVERY_COMPONENTS,
        )
    }

    /// Parses a rule: one component name per line, `#` comments.
    pub fn parse(file: &str, text: &str) -> Result<DiscoveryRule> {
        let mut components = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let name = line.split('#').next().unwrap_or("").trim();
            if name.is_empty() {
                continue;
            }
            if !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
            {
                bail!(
                    "{file}:{}: `{name}` is not a component name ([a-z0-9-._])",
                    i + 1
                );
            }
            if !components.insert(name.to_string()) {
                bail!("{file}:{}: `{name}` listed twice", i + 1);
            }
        }
        if components.is_empty() {
            bail!("{file}: no component names");
        }
        Ok(DiscoveryRule {
            source: file.to_string(),
            components,
        })
    }

    /// Reads a rule file.
    pub fn load(path: &Path) -> Result<DiscoveryRule> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        DiscoveryRule::parse(&path.display().to_string(), &text)
    }
}

/// The assisted-installer images.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssistedImages {
    /// The agent (discovery only).
    pub agent: Option<String>,
    /// The installer (discovery only).
    pub installer: Option<String>,
    /// The controller/reporter (both stages).
    pub controller: Option<String>,
}

impl AssistedImages {
    /// Sorts references from a list into agent, installer and controller by repository name
    /// (`...assisted-installer-agent...`, `...assisted-installer-controller...` or
    /// `...assisted-installer-reporter...`, `...assisted-installer...`).
    pub fn from_list(file: &str, refs: &[String]) -> Result<AssistedImages> {
        let mut a = AssistedImages::default();
        for r in refs {
            let parsed = ImageRef::parse(r).with_context(|| format!("{file}: {r}"))?;
            let last = parsed.repository.rsplit('/').next().unwrap_or_default();
            let slot = if last.contains("assisted-installer-agent") {
                &mut a.agent
            } else if last.contains("assisted-installer-controller")
                || last.contains("assisted-installer-reporter")
            {
                &mut a.controller
            } else if last.contains("assisted-installer") {
                &mut a.installer
            } else {
                bail!(
                    "{file}: {r}: not an assisted-installer agent, installer or controller image \
                     (by its repository name)"
                );
            };
            if let Some(prev) = slot {
                bail!("{file}: {r}: a second image for the same role as {prev}");
            }
            *slot = Some(r.clone());
        }
        Ok(a)
    }
}

/// Everything the lists are made of.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// The releases (usually one).
    pub releases: &'a [Release],
    /// Architecture the release was chosen for (`amd64`, ...), used in tags.
    pub arch: &'a str,
    /// Assisted-installer images.
    pub assisted: &'a AssistedImages,
    /// Discovery components.
    pub rule: &'a DiscoveryRule,
    /// Operator bundles selected from catalogs.
    pub operators: &'a [Selected],
    /// Additional images (install stage).
    pub additional: &'a [String],
    /// Blocked images ([`BlockRule`]): a reference without tag or digest blocks the repository,
    /// `name:tag` / `name@digest` one image; anything else is a regular expression.
    pub blocked: &'a [String],
    /// Filter.
    pub filter: &'a Filter,
    /// Parts of the image set that were not staged, passed on to the summary.
    pub not_staged: &'a [NotStaged],
}

/// Why an image is staged.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Role {
    /// The release image.
    Release,
    /// A release component.
    Component {
        /// Component name.
        name: String,
    },
    /// Assisted-installer agent.
    Agent,
    /// Assisted-installer installer.
    Installer,
    /// Assisted-installer controller/reporter.
    Controller,
    /// An operator bundle or related image.
    Operator {
        /// Package.
        package: String,
        /// Bundle.
        bundle: String,
    },
    /// An additional image.
    Additional,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Release => write!(f, "release image"),
            Role::Component { name } => write!(f, "release component {name}"),
            Role::Agent => write!(f, "assisted-installer agent"),
            Role::Installer => write!(f, "assisted-installer installer"),
            Role::Controller => write!(f, "assisted-installer controller"),
            Role::Operator { package, bundle } => {
                write!(f, "operator {package} bundle {bundle}")
            }
            Role::Additional => write!(f, "additional image"),
        }
    }
}

/// One staged image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StagedImage {
    /// Pinned source (`registry/repository@sha256:...`).
    pub source: String,
    /// The reference as given.
    pub original: String,
    /// Destination repository (`localhost/...`).
    pub dest: String,
    /// Destination tag.
    pub tag: String,
    /// Why it is staged (first role by priority; an image may have several).
    pub roles: Vec<Role>,
    /// In `ai-images.txt`.
    pub discovery: bool,
    /// In `ocp-images.txt`.
    pub install: bool,
}

/// An image a blocked entry removed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Blocked {
    /// The reference as given.
    pub reference: String,
    /// The blockedImages entry.
    pub rule: String,
}

/// The result: staged images (sorted by source), and what was left out.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImageLists {
    /// Release images, versions and arch, oldest first.
    pub releases: Vec<ReleaseInfo>,
    /// Staged images, sorted by source.
    pub images: Vec<StagedImage>,
    /// Operator bundles selected.
    pub operators: Vec<Selected>,
    /// Blocked images.
    pub blocked: Vec<Blocked>,
    /// Filtered images.
    pub filtered: Vec<Filtered>,
    /// Parts of the image set that were read but not staged.
    pub not_staged: Vec<NotStaged>,
}

/// The release of a set, for the summary.
#[derive(Clone, Debug, Serialize)]
pub struct ReleaseInfo {
    /// Pinned release image.
    pub image: String,
    /// Version.
    pub version: Option<String>,
    /// Architecture.
    pub arch: String,
    /// Number of components.
    pub components: usize,
}

struct Candidate {
    original: String,
    parsed: ImageRef,
    role: Role,
    /// The version of the release it belongs to.
    version: Option<String>,
    discovery: bool,
    install: bool,
}

fn candidates(inp: &Inputs) -> Result<Vec<Candidate>> {
    let mut v = Vec::new();
    let mut add = |r: &str,
                   role: Role,
                   version: &Option<String>,
                   discovery: bool,
                   install: bool|
     -> Result<()> {
        let parsed = ImageRef::parse(r.strip_prefix("docker://").unwrap_or(r))
            .with_context(|| role.to_string())?;
        v.push(Candidate {
            original: r.to_string(),
            parsed,
            role,
            version: version.clone(),
            discovery,
            install,
        });
        Ok(())
    };
    for rel in inp.releases {
        let version = rel.version.clone();
        add(&rel.image, Role::Release, &version, true, true)?;
        let names: BTreeSet<&str> = rel.components.iter().map(|c| c.name.as_str()).collect();
        let missing: Vec<&str> = inp
            .rule
            .components
            .iter()
            .map(|s| s.as_str())
            .filter(|n| !names.contains(n))
            .collect();
        if !missing.is_empty() {
            bail!(
                "release {}: no component {} (named by the discovery rule {})",
                rel.image,
                missing.join(", "),
                inp.rule.source
            );
        }
        for c in &rel.components {
            let disc = inp.rule.components.contains(&c.name);
            add(
                &c.reference,
                Role::Component {
                    name: c.name.clone(),
                },
                &version,
                disc,
                true,
            )?;
        }
    }
    let version = None;
    let a = inp.assisted;
    for (r, role, disc, inst) in [
        (&a.agent, Role::Agent, true, false),
        (&a.installer, Role::Installer, true, false),
        (&a.controller, Role::Controller, true, true),
    ] {
        if let Some(r) = r {
            add(r, role, &version, disc, inst)?;
        }
    }
    for s in inp.operators {
        for i in s.images() {
            add(
                i,
                Role::Operator {
                    package: s.package.clone(),
                    bundle: s.bundle.clone(),
                },
                &version,
                false,
                true,
            )?;
        }
    }
    for r in inp.additional {
        add(r, Role::Additional, &version, false, true)?;
    }
    Ok(v)
}

/// A `blockedImages` entry.
///
/// oc-mirror v2 reads every entry as a regular expression (Go's RE2 syntax, which the `regex`
/// crate shares but for rarities such as `\Q…\E`) and leaves out an image when the expression
/// matches, anywhere unless anchored, either its reference as found (transport prefix removed)
/// or its destination in the mirror (`HOST/PATH:TAG`, where a release component's tag is
/// `VERSION-ARCH-COMPONENT`). prestage does the same with the destination `DEST:TAG` of
/// `mapping.txt` (`localhost/PATH:4.14.3-x86_64-aws-ebs-csi-driver`), so
/// `(aws|gcp|azure|ibm|openstack)` drops the cloud components of a release, and `^quay\.io/`,
/// `.*blocked-image.*` or `alpine` are patterns too. The exception is a plain image reference
/// that names its registry (`HOST[:PORT]/PATH[:TAG|@DIGEST]`, `docker://` allowed), which keeps
/// its exact meaning: without tag or digest, every image of that repository; else that tag or
/// that digest (resolved tags included), and nothing else.
#[derive(Clone, Debug)]
pub enum BlockRule {
    /// A plain reference.
    Reference {
        /// The entry as written, `docker://` removed.
        entry: String,
        /// The reference.
        parsed: ImageRef,
        /// Whether it names a tag.
        tagged: bool,
    },
    /// A regular expression.
    Pattern {
        /// The entry as written.
        entry: String,
        /// The expression.
        re: Regex,
    },
}

impl BlockRule {
    /// Reads an entry.
    pub fn parse(entry: &str) -> Result<BlockRule> {
        if entry.is_empty() {
            bail!("empty (as a regular expression it would block every image)");
        }
        let r = entry.strip_prefix("docker://").unwrap_or(entry);
        let names_registry = r.split_once('/').is_some_and(|(first, _)| {
            first.contains('.') || first.contains(':') || first == "localhost"
        });
        if names_registry {
            if let Ok(parsed) = ImageRef::parse(r) {
                let (name, _) = r.split_once('@').unwrap_or((r, ""));
                let tagged = name.rsplit('/').next().unwrap_or_default().contains(':');
                return Ok(BlockRule::Reference {
                    entry: r.to_string(),
                    parsed,
                    tagged,
                });
            }
        }
        let re = regex::RegexBuilder::new(entry)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| {
                let e = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                anyhow!("`{entry}` is neither an image reference nor a regular expression: {e}")
            })?;
        Ok(BlockRule::Pattern {
            entry: entry.to_string(),
            re,
        })
    }

    /// The entry, as kept (a reference without `docker://`).
    pub fn entry(&self) -> &str {
        match self {
            BlockRule::Reference { entry, .. } | BlockRule::Pattern { entry, .. } => entry,
        }
    }

    /// Whether it blocks the image `found` (the reference as found, parsed as `r`), staged as
    /// `dest` (`DEST:TAG`) when that is known, with manifest digest `digest` when known.
    pub fn blocks(
        &self,
        found: &str,
        r: &ImageRef,
        dest: Option<&str>,
        digest: Option<&Digest>,
    ) -> bool {
        match self {
            BlockRule::Reference { parsed, tagged, .. } => {
                if parsed.name() != r.name() {
                    return false;
                }
                if let Some(d) = &parsed.digest {
                    return Some(d) == digest || Some(d) == r.digest.as_ref();
                }
                if *tagged {
                    return parsed.tag.is_some() && parsed.tag == r.tag;
                }
                true
            }
            BlockRule::Pattern { re, .. } => {
                let found = found.split_once("://").map_or(found, |(_, rest)| rest);
                re.is_match(found) || dest.is_some_and(|d| re.is_match(d))
            }
        }
    }
}

fn block_rules(entries: &[String]) -> Result<Vec<BlockRule>> {
    entries
        .iter()
        .map(|e| BlockRule::parse(e).with_context(|| format!("blocked image `{e}`")))
        .collect()
}

/// The rule blocking a candidate, if any; `tag` is its destination tag when known.
fn blocked_by<'a>(
    rules: &'a [BlockRule],
    c: &Candidate,
    tag: Option<&str>,
    digest: Option<&Digest>,
) -> Option<&'a str> {
    let dest = tag.map(|t| format!("localhost/{}:{t}", c.parsed.repository));
    rules
        .iter()
        .find(|b| b.blocks(&c.original, &c.parsed, dest.as_deref(), digest))
        .map(|b| b.entry())
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
        })
}

/// The tag an image gets before collisions are handled (also what filters see).
fn natural_tag(c: &Candidate, arch: &str) -> Option<String> {
    let t = match (&c.role, c.version.as_deref()) {
        (Role::Release, Some(v)) => Some(format!("{v}-{arch}")),
        (Role::Component { name }, Some(v)) => Some(format!("{v}-{arch}-{name}")),
        // The tag given (`latest` when neither tag nor digest was).
        _ => c.parsed.tag.clone(),
    };
    t.filter(|t| valid_tag(t))
}

/// References that must be resolved to digests before [`build`] (tagged, neither blocked nor
/// filtered), normalized and sorted.
pub fn to_resolve(inp: &Inputs) -> Result<Vec<String>> {
    let arch = release::release_arch(inp.arch)?;
    let rules = block_rules(inp.blocked)?;
    let mut out = BTreeSet::new();
    for c in candidates(inp)? {
        if c.parsed.digest.is_some() {
            continue;
        }
        let tag = natural_tag(&c, arch);
        if blocked_by(&rules, &c, tag.as_deref(), None).is_some() {
            continue;
        }
        if inp
            .filter
            .matching(&c.parsed.to_string(), tag.as_deref())
            .is_some()
        {
            continue;
        }
        out.insert(c.parsed.to_string());
    }
    Ok(out.into_iter().collect())
}

/// Builds the lists.
pub fn build(inp: &Inputs, resolver: &dyn Resolve) -> Result<ImageLists> {
    let arch = release::release_arch(inp.arch)?;
    let rules = block_rules(inp.blocked)?;
    let digest_tag = |d: &Digest| format!("sha256-{}", d.hex());
    let mut blocked = BTreeSet::new();
    let mut filtered = BTreeSet::new();
    // Pinned source -> image, merging duplicates.
    let mut by_source: BTreeMap<String, StagedImage> = BTreeMap::new();
    for c in candidates(inp)? {
        let tag = natural_tag(&c, arch);
        let dest_tag = tag
            .clone()
            .or_else(|| c.parsed.digest.as_ref().map(digest_tag));
        if let Some(b) = blocked_by(&rules, &c, dest_tag.as_deref(), None) {
            blocked.insert(Blocked {
                reference: c.original.clone(),
                rule: b.to_string(),
            });
            continue;
        }
        if let Some(p) = inp.filter.matching(&c.parsed.to_string(), tag.as_deref()) {
            filtered.insert(Filtered {
                reference: c.original.clone(),
                pattern: p.to_string(),
            });
            continue;
        }
        let digest = match &c.parsed.digest {
            Some(d) => d.clone(),
            None => resolver
                .resolve(&c.parsed)
                .with_context(|| format!("resolving {}", c.parsed))?,
        };
        let tag = tag.unwrap_or_else(|| digest_tag(&digest));
        if let Some(b) = blocked_by(&rules, &c, Some(&tag), Some(&digest)) {
            blocked.insert(Blocked {
                reference: c.original.clone(),
                rule: b.to_string(),
            });
            continue;
        }
        let source = format!("{}@{digest}", c.parsed.name());
        let e = by_source
            .entry(source.clone())
            .or_insert_with(|| StagedImage {
                source,
                original: c.original.clone(),
                dest: format!("localhost/{}", c.parsed.repository),
                tag: tag.clone(),
                roles: Vec::new(),
                discovery: false,
                install: false,
            });
        // The highest-priority role names the tag (Role order is the priority).
        if e.roles.first().is_none_or(|r| c.role < *r) {
            e.tag = tag;
            e.original = c.original.clone();
        }
        e.roles.push(c.role);
        e.roles.sort();
        e.roles.dedup();
        e.discovery |= c.discovery;
        e.install |= c.install;
    }
    // Different images with the same DEST:TAG fall back to digest tags.
    let mut by_dest: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for i in by_source.values() {
        by_dest
            .entry((i.dest.clone(), i.tag.clone()))
            .or_default()
            .push(i.source.clone());
    }
    for sources in by_dest.values().filter(|s| s.len() > 1) {
        for s in sources {
            if let Some(i) = by_source.get_mut(s) {
                let hex = i.source.rsplit(':').next().unwrap_or_default().to_string();
                i.tag = format!("sha256-{hex}");
            }
        }
    }
    let mut releases = Vec::new();
    for r in inp.releases {
        let parsed = ImageRef::parse(&r.image)?;
        let image = by_source
            .values()
            .find(|i| i.roles.contains(&Role::Release) && i.original == r.image)
            .map(|i| i.source.clone())
            .unwrap_or_else(|| parsed.to_string());
        releases.push(ReleaseInfo {
            image,
            version: r.version.clone(),
            arch: inp.arch.to_string(),
            components: r.components.len(),
        });
    }
    let mut operators = inp.operators.to_vec();
    operators.sort();
    operators.dedup();
    let lists = ImageLists {
        releases,
        images: by_source.into_values().collect(),
        operators,
        blocked: blocked.into_iter().collect(),
        filtered: filtered.into_iter().collect(),
        not_staged: inp.not_staged.to_vec(),
    };
    lists.check_pinned()?;
    Ok(lists)
}

impl ImageLists {
    fn check_pinned(&self) -> Result<()> {
        for i in &self.images {
            let r = ImageRef::parse(&i.source).with_context(|| format!("source {}", i.source))?;
            if r.digest.is_none() || r.tag.is_some() {
                bail!("{}: not pinned by digest", i.source);
            }
        }
        Ok(())
    }

    /// `ai-images.txt`: one source per line.
    pub fn discovery_txt(&self) -> String {
        self.images
            .iter()
            .filter(|i| i.discovery)
            .fold(String::new(), |mut s, i| {
                let _ = writeln!(s, "{}", i.source);
                s
            })
    }

    /// `ocp-images.txt`: one source per line.
    pub fn install_txt(&self) -> String {
        self.images
            .iter()
            .filter(|i| i.install)
            .fold(String::new(), |mut s, i| {
                let _ = writeln!(s, "{}", i.source);
                s
            })
    }

    /// `mapping.txt`: `SRC=DEST:TAG` per image.
    pub fn mapping_txt(&self) -> String {
        self.images.iter().fold(String::new(), |mut s, i| {
            let _ = writeln!(s, "{}={}:{}", i.source, i.dest, i.tag);
            s
        })
    }

    /// The JSON summary.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).context("serializing the image lists")
    }

    /// Writes `ai-images.txt`, `ocp-images.txt`, `mapping.txt` and, when given, `imageset.yaml`
    /// into `dir` (created if needed).
    pub fn write(&self, dir: &Path, imageset_yaml: Option<&str>) -> Result<()> {
        self.check_pinned()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut files = vec![
            ("ai-images.txt", self.discovery_txt()),
            ("ocp-images.txt", self.install_txt()),
            ("mapping.txt", self.mapping_txt()),
        ];
        if let Some(y) = imageset_yaml {
            files.push(("imageset.yaml", y.to_string()));
        }
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::catalog::tests::{catalog, img};
    use super::super::release::Component;
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    const ART: &str = "quay.io/openshift-release-dev/ocp-v4.0-art-dev";

    fn release() -> Release {
        let rule = DiscoveryRule::builtin().unwrap();
        let mut components: Vec<Component> = rule
            .components
            .iter()
            .enumerate()
            .map(|(i, n)| Component {
                name: n.clone(),
                reference: format!("{ART}@{}", d(0x40 + i as u8)),
            })
            .collect();
        for (i, n) in ["aws-ebs-csi-driver", "console", "installer"]
            .iter()
            .enumerate()
        {
            components.push(Component {
                name: n.to_string(),
                reference: format!("{ART}@{}", d(0x60 + i as u8)),
            });
        }
        // Two components sharing one image.
        components.push(Component {
            name: "zz-alias-of-console".into(),
            reference: format!("{ART}@{}", d(0x61)),
        });
        components.sort();
        Release {
            image: "quay.io/openshift-release-dev/ocp-release:4.14.3-x86_64".into(),
            version: Some("4.14.3".into()),
            metadata_arch: None,
            components,
        }
    }

    fn assisted() -> AssistedImages {
        AssistedImages::from_list(
            "ai.txt",
            &[
                "registry.redhat.io/rhai-tech-preview/assisted-installer-agent-rhel8:v1.0.0-89"
                    .into(),
                "registry.redhat.io/rhai-tech-preview/assisted-installer-rhel8:v1.0.0-89".into(),
                format!(
                    "registry.redhat.io/rhai-tech-preview/assisted-installer-reporter-rhel8@{}",
                    d(0x30)
                ),
            ],
        )
        .unwrap()
    }

    fn resolver() -> Resolved {
        let mut m = BTreeMap::new();
        m.insert(
            "quay.io/openshift-release-dev/ocp-release:4.14.3-x86_64".to_string(),
            d(0x01),
        );
        m.insert(
            "registry.redhat.io/rhai-tech-preview/assisted-installer-agent-rhel8:v1.0.0-89"
                .to_string(),
            d(0x31),
        );
        m.insert(
            "registry.redhat.io/rhai-tech-preview/assisted-installer-rhel8:v1.0.0-89".to_string(),
            d(0x32),
        );
        m.insert(
            "registry.example/tools/troubleshoot:latest".to_string(),
            d(0x50),
        );
        Resolved(m)
    }

    fn golden(got: &str, want: &str) {
        let want = want.trim_start();
        assert_eq!(got, want, "\n--- got ---\n{got}--- want ---\n{want}");
    }

    #[test]
    fn block_rules() {
        let rule = |e: &str| BlockRule::parse(e).unwrap();
        let is_ref = |e: &str| matches!(rule(e), BlockRule::Reference { .. });
        // References name their registry; everything else is a pattern, as in oc-mirror.
        assert!(is_ref("registry.example/foo/proxy"));
        assert!(is_ref("docker://registry.example:5000/foo/proxy:v1"));
        assert!(is_ref("localhost/foo"));
        for p in [
            "alpine",
            "openshift4/ose-aws",
            "(aws|gcp|azure|ibm|openstack)",
            "^blocked-registry.com",
            ".*blocked-image.*",
            "registry.example.com/unwanted/.*",
        ] {
            assert!(!is_ref(p), "{p}");
        }
        assert_eq!(rule("docker://quay.io/a/b").entry(), "quay.io/a/b");
        let e = BlockRule::parse("a(").unwrap_err().to_string();
        assert!(
            e.starts_with("`a(` is neither an image reference nor a regular expression"),
            "{e}"
        );

        let r = |s: &str| ImageRef::parse(s).unwrap();
        let proxy = r("registry.example/foo/proxy:v1");
        let blocks = |e: &str, found: &str, dest: Option<&str>| {
            let parsed = r(found.strip_prefix("docker://").unwrap_or(found));
            rule(e).blocks(found, &parsed, dest, None)
        };
        // A reference: its repository exactly, or its tag, or its digest.
        assert!(blocks(
            "registry.example/foo/proxy",
            "registry.example/foo/proxy:v1",
            None
        ));
        assert!(!blocks(
            "registry.example/foo/proxy",
            "registry.example/foo/proxy-init:v1",
            None
        ));
        assert!(!blocks(
            "registry.example/foo/proxy:v2",
            "registry.example/foo/proxy:v1",
            None
        ));
        assert!(blocks(
            "registry.example/foo/proxy:v1",
            "registry.example/foo/proxy:v1",
            None
        ));
        let pinned = format!("registry.example/foo/proxy@{}", d(7));
        assert!(rule(&pinned).blocks("registry.example/foo/proxy:v1", &proxy, None, Some(&d(7))));
        assert!(!rule(&pinned).blocks("registry.example/foo/proxy:v1", &proxy, None, Some(&d(8))));
        // A pattern: anywhere in the reference as found, or in DEST:TAG.
        assert!(blocks(
            r"registry\.example/foo/pro",
            "registry.example/foo/proxy:v1",
            None
        ));
        assert!(blocks(
            "proxy",
            "docker://registry.example/foo/proxy:v1",
            None
        ));
        assert!(!blocks(
            "^docker",
            "docker://registry.example/foo/proxy:v1",
            None
        ));
        let dest = Some("localhost/ocp/art-dev:4.14.3-x86_64-aws-ebs-csi-driver");
        let art = format!("quay.io/ocp/art-dev@{}", d(9));
        assert!(!blocks("(aws|gcp)", &art, None));
        assert!(blocks("(aws|gcp)", &art, dest));
        assert!(!blocks("(azure|gcp)", &art, dest));
    }

    #[test]
    fn blocked_patterns_in_the_lists() {
        let rel = release();
        let rule = DiscoveryRule::builtin().unwrap();
        let cat = catalog();
        let ops = cat.select("foo", None, None, None).unwrap();
        let additional = vec![img("foo/proxy-extra", 2)];
        let blocked = vec![
            // The aws component (by its tag) and foo's op image (by its reference).
            "(aws|gcp|azure|ibm|openstack)".to_string(),
            "foo/op@".to_string(),
            // A reference: the repository, not `proxy-extra`.
            "registry.example/foo/proxy".to_string(),
        ];
        let a = AssistedImages::default();
        let inp = Inputs {
            releases: std::slice::from_ref(&rel),
            arch: "amd64",
            assisted: &a,
            rule: &rule,
            operators: &ops,
            additional: &additional,
            blocked: &blocked,
            filter: &Filter::default(),
            not_staged: &[],
        };
        let l = build(&inp, &resolver()).unwrap();
        let got: Vec<(&str, &str)> = l
            .blocked
            .iter()
            .map(|b| (b.reference.as_str(), b.rule.as_str()))
            .collect();
        let aws = format!("{ART}@{}", d(0x60));
        let (op, proxy) = (img("foo/op", 17), img("foo/proxy", 18));
        assert_eq!(
            got,
            [
                (aws.as_str(), "(aws|gcp|azure|ibm|openstack)"),
                (op.as_str(), "foo/op@"),
                (proxy.as_str(), "registry.example/foo/proxy")
            ]
        );
        let ocp = l.install_txt();
        assert!(ocp.contains(&img("foo/proxy-extra", 2)), "{ocp}");
        assert!(
            !ocp.contains(&aws) && ocp.contains(&format!("{ART}@{}", d(0x61))),
            "{ocp}"
        );
        // Blocked images are not resolved either.
        let tagged = vec!["registry.example/tools/aws-cli:latest".to_string()];
        let inp = Inputs {
            additional: &tagged,
            ..inp
        };
        assert!(!to_resolve(&inp)
            .unwrap()
            .iter()
            .any(|r| r.contains("aws-cli")));
    }

    #[test]
    fn stage_lists_and_mapping() {
        let rel = release();
        let rule = DiscoveryRule::builtin().unwrap();
        let cat = catalog();
        let mut ops = cat.select("foo", None, None, None).unwrap();
        ops.extend(cat.select("bar", Some("alpha"), None, None).unwrap());
        let additional = vec![
            "registry.example/tools/troubleshoot:latest".to_string(),
            // Already staged as an operator image: listed once.
            img("foo/op", 17),
            img("unwanted/thing", 1),
        ];
        let blocked = vec!["registry.example/foo/proxy".to_string()];
        let filter = Filter::parse(
            "filter.yaml",
            "patterns: ['-aws-', '^registry\\.example/unwanted/']",
        )
        .unwrap();
        let a = assisted();
        let inp = Inputs {
            releases: std::slice::from_ref(&rel),
            arch: "amd64",
            assisted: &a,
            rule: &rule,
            operators: &ops,
            additional: &additional,
            blocked: &blocked,
            filter: &filter,
            not_staged: &[],
        };
        assert_eq!(
            to_resolve(&inp).unwrap(),
            vec![
                "quay.io/openshift-release-dev/ocp-release:4.14.3-x86_64",
                "registry.example/tools/troubleshoot:latest",
                "registry.redhat.io/rhai-tech-preview/assisted-installer-agent-rhel8:v1.0.0-89",
                "registry.redhat.io/rhai-tech-preview/assisted-installer-rhel8:v1.0.0-89",
            ]
        );
        let l = build(&inp, &resolver()).unwrap();
        let h = |n: u8| format!("{n:02x}").repeat(32);
        let mut ai = format!(
            "quay.io/openshift-release-dev/ocp-release@sha256:{}\n",
            h(1)
        );
        for n in 0x40..0x40 + 14 {
            ai += &format!("{ART}@sha256:{}\n", h(n));
        }
        for n in [0x31, 0x30, 0x32] {
            let repo = match n {
                0x30 => "assisted-installer-reporter-rhel8",
                0x31 => "assisted-installer-agent-rhel8",
                _ => "assisted-installer-rhel8",
            };
            ai += &format!(
                "registry.redhat.io/rhai-tech-preview/{repo}@sha256:{}\n",
                h(n)
            );
        }
        golden(&l.discovery_txt(), &ai);

        let mut ocp = format!(
            "quay.io/openshift-release-dev/ocp-release@sha256:{}\n",
            h(1)
        );
        for n in (0x40..0x40 + 14).chain([0x61, 0x62]) {
            ocp += &format!("{ART}@sha256:{}\n", h(n));
        }
        ocp += &format!("registry.example/bar/bundle@sha256:{}\n", h(30));
        ocp += &format!("registry.example/bar/op@sha256:{}\n", h(31));
        ocp += &format!("registry.example/foo/bundle@sha256:{}\n", h(16));
        ocp += &format!("registry.example/foo/op@sha256:{}\n", h(17));
        ocp += &format!("registry.example/tools/troubleshoot@sha256:{}\n", h(0x50));
        ocp += &format!(
            "registry.redhat.io/rhai-tech-preview/assisted-installer-reporter-rhel8@sha256:{}\n",
            h(0x30)
        );
        golden(&l.install_txt(), &ocp);

        let m = l.mapping_txt();
        assert_eq!(m.lines().count(), 14 + 2 + 1 + 3 + 5);
        for want in [
            format!("{ART}@sha256:{}=localhost/openshift-release-dev/ocp-v4.0-art-dev:4.14.3-x86_64-etcd", h(0x40 + 9)),
            format!("{ART}@sha256:{}=localhost/openshift-release-dev/ocp-v4.0-art-dev:4.14.3-x86_64-console", h(0x61)),
            format!("quay.io/openshift-release-dev/ocp-release@sha256:{}=localhost/openshift-release-dev/ocp-release:4.14.3-x86_64", h(1)),
            format!("registry.redhat.io/rhai-tech-preview/assisted-installer-agent-rhel8@sha256:{}=localhost/rhai-tech-preview/assisted-installer-agent-rhel8:v1.0.0-89", h(0x31)),
            format!("registry.redhat.io/rhai-tech-preview/assisted-installer-reporter-rhel8@sha256:{}=localhost/rhai-tech-preview/assisted-installer-reporter-rhel8:sha256-{}", h(0x30), h(0x30)),
            format!("registry.example/tools/troubleshoot@sha256:{}=localhost/tools/troubleshoot:latest", h(0x50)),
            format!("registry.example/foo/op@sha256:{}=localhost/foo/op:sha256-{}", h(17), h(17)),
        ] {
            assert!(m.lines().any(|l| l == want), "missing {want} in\n{m}");
        }
        assert_eq!(
            l.blocked,
            vec![Blocked {
                reference: img("foo/proxy", 18),
                rule: "registry.example/foo/proxy".into()
            }]
        );
        assert_eq!(
            l.filtered
                .iter()
                .map(|f| (f.reference.as_str(), f.pattern.as_str()))
                .collect::<Vec<_>>(),
            vec![
                (format!("{ART}@sha256:{}", h(0x60)).as_str(), "-aws-"),
                (
                    img("unwanted/thing", 1).as_str(),
                    "^registry\\.example/unwanted/"
                ),
            ]
        );
        let foo_op = l
            .images
            .iter()
            .find(|i| i.source == img("foo/op", 17))
            .unwrap();
        assert_eq!(foo_op.roles.len(), 2);
        let json: serde_json::Value = serde_json::from_str(&l.to_json().unwrap()).unwrap();
        assert_eq!(json["releases"][0]["version"], "4.14.3");
        assert_eq!(json["images"].as_array().unwrap().len(), l.images.len());

        let dir = tempfile::tempdir().unwrap();
        l.write(dir.path(), Some("kind: ImageSetConfiguration\n"))
            .unwrap();
        for f in [
            "ai-images.txt",
            "ocp-images.txt",
            "mapping.txt",
            "imageset.yaml",
        ] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ai-images.txt")).unwrap(),
            ai
        );
        // The same inputs give byte-identical output.
        let again = build(&inp, &resolver()).unwrap();
        assert_eq!(again.mapping_txt(), m);
    }

    #[test]
    fn two_releases() {
        // 4.14.4 shares every component with 4.14.3 but etcd and console.
        let old = release();
        let mut new = release();
        new.image = format!("quay.io/openshift-release-dev/ocp-release@{}", d(0x02));
        new.version = Some("4.14.4".into());
        for c in &mut new.components {
            if c.name == "etcd" || c.name == "console" {
                c.reference = format!("{ART}@{}", d(0x90 + c.name.len() as u8));
            }
        }
        let rule = DiscoveryRule::builtin().unwrap();
        let a = AssistedImages::default();
        let filter = Filter::default();
        let releases = [old, new];
        let inp = Inputs {
            releases: &releases,
            arch: "amd64",
            assisted: &a,
            rule: &rule,
            operators: &[],
            additional: &[],
            blocked: &[],
            filter: &filter,
            not_staged: &[],
        };
        let l = build(&inp, &resolver()).unwrap();
        let h = |n: u8| format!("{n:02x}").repeat(32);
        // Discovery: both release images, 14 shared components and the second etcd.
        let ai = l.discovery_txt();
        assert_eq!(ai.lines().count(), 2 + 14 + 1, "{ai}");
        assert!(ai.contains(&format!("{ART}@sha256:{}\n", h(0x94))), "{ai}");
        // Install: 2 releases, 14 + 2 (aws filtered out? no filter here: 3) components of the
        // first, etcd and console of the second.
        let ocp = l.install_txt();
        assert_eq!(ocp.lines().count(), 2 + 14 + 3 + 2, "{ocp}");
        let m = l.mapping_txt();
        for want in [
            format!("{ART}@sha256:{}=localhost/openshift-release-dev/ocp-v4.0-art-dev:4.14.3-x86_64-etcd", h(0x40 + 9)),
            format!("{ART}@sha256:{}=localhost/openshift-release-dev/ocp-v4.0-art-dev:4.14.4-x86_64-etcd", h(0x94)),
            // Shared: named by the older release.
            format!("{ART}@sha256:{}=localhost/openshift-release-dev/ocp-v4.0-art-dev:4.14.3-x86_64-hyperkube", h(0x40 + 10)),
            format!("quay.io/openshift-release-dev/ocp-release@sha256:{}=localhost/openshift-release-dev/ocp-release:4.14.4-x86_64", h(2)),
        ] {
            assert!(m.lines().any(|l| l == want), "missing {want} in\n{m}");
        }
        assert_eq!(l.releases.len(), 2);
        assert_eq!(l.releases[1].version.as_deref(), Some("4.14.4"));
        assert_eq!(
            l.releases[1].image,
            format!("quay.io/openshift-release-dev/ocp-release@sha256:{}", h(2))
        );
    }

    #[test]
    fn unresolved_tags_collisions_and_rules() {
        let rule = DiscoveryRule::builtin().unwrap();
        let a = AssistedImages::default();
        let filter = Filter::default();
        let additional = vec!["quay.io/a/b:v1".to_string()];
        let inp = Inputs {
            releases: &[],
            arch: "amd64",
            assisted: &a,
            rule: &rule,
            operators: &[],
            additional: &additional,
            blocked: &[],
            filter: &filter,
            not_staged: &[],
        };
        let e = format!("{:#}", build(&inp, &Resolved::default()).unwrap_err());
        assert!(
            e.contains("quay.io/a/b:v1: not pinned by digest and not resolved"),
            "{e}"
        );

        // Same repository path and tag from two registries: digest tags for both.
        let additional = vec!["quay.io/a/b:v1".to_string(), "docker.io/a/b:v1".to_string()];
        let inp = Inputs {
            additional: &additional,
            ..inp
        };
        let mut m = BTreeMap::new();
        m.insert("quay.io/a/b:v1".to_string(), d(1));
        m.insert("docker.io/a/b:v1".to_string(), d(2));
        let l = build(&inp, &Resolved(m)).unwrap();
        golden(
            &l.mapping_txt(),
            &format!(
                "docker.io/a/b@{}=localhost/a/b:sha256-{}\nquay.io/a/b@{}=localhost/a/b:sha256-{}\n",
                d(2),
                d(2).hex(),
                d(1),
                d(1).hex()
            ),
        );
        assert_eq!(l.discovery_txt(), "");

        // A release missing a discovery component.
        let mut rel = release();
        rel.components.retain(|c| c.name != "etcd");
        let inp = Inputs {
            releases: std::slice::from_ref(&rel),
            ..inp
        };
        let e = build(&inp, &resolver()).unwrap_err().to_string();
        assert!(
            e.contains(
                "no component etcd (named by the discovery rule data/discovery-components.txt)"
            ),
            "{e}"
        );

        let bad = vec![Selected {
            package: "p".into(),
            channel: "c".into(),
            bundle: "p.v1".into(),
            version: None,
            image: "Not/A/Reference".into(),
            related_images: Vec::new(),
        }];
        let inp = Inputs {
            releases: &[],
            operators: &bad,
            ..inp
        };
        let e = format!("{:#}", build(&inp, &resolver()).unwrap_err());
        assert!(
            e.starts_with("operator p bundle p.v1: `Not/A/Reference`"),
            "{e}"
        );

        assert!(DiscoveryRule::parse("r.txt", "etcd\netcd\n")
            .unwrap_err()
            .to_string()
            .contains("r.txt:2"));
        assert!(DiscoveryRule::parse("r.txt", "Etcd\n").is_err());
        assert!(DiscoveryRule::parse("r.txt", "# nothing\n").is_err());
        assert_eq!(DiscoveryRule::builtin().unwrap().components.len(), 14);
        let e = AssistedImages::from_list("ai.txt", &["quay.io/x/ubi:8".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an assisted-installer"), "{e}");
    }
}
