//! What users already have: oc-mirror's `ImageSetConfiguration` (`mirror.openshift.io/v1alpha2`
//! and `v2alpha1`) and plain list files (one reference per line, as the seed's lists), turned
//! into a typed [`ImageSet`]; and the effective image set written back as a v2alpha1
//! `ImageSetConfiguration` for `imageset.yaml`.
//!
//! Keys are read as oc-mirror reads them, through Go's `encoding/json` rules ([`super::keys`]):
//! `additionalimages`, `blockedImages` and `BlockedImages` are the same field (an exact match
//! preferred, else a case-insensitive one), and the effective `imageset.yaml` is written in the
//! canonical spelling. Otherwise parsing is strict: a key that names no field in any case is an
//! error naming the field's path (e.g. `mirror.operators[0].packages[1].chanels`). Both API
//! versions share one schema, the union of their fields.
//!
//! A release channel pinned to one version (`minVersion == maxVersion`) names the release image
//! by its tag and needs nothing else; any other channel entry is resolved through the update
//! graph ([`super::graph`]) into the releases it selects, and every selected release is staged.
//! `type: okd` channels (exactly `ocp` or `okd`, as oc-mirror reads them) are resolved through
//! OKD's update graph, a pinned version too (OKD versions name no release tag).
//! An operator catalog with `full: true` takes every bundle of its packages' channels (of every
//! channel of a package that names none) within the version range where one is given, instead
//! of the channel heads. The bundles selected bundles depend on are staged too, unless the
//! catalog entry says `skipDependencies: true`. A package-level `minVersion`/`maxVersion`
//! applies to its channels that have no range of their own (to its default channel when it
//! names none). `blockedImages` names are image references or regular expressions
//! ([`super::lists::BlockRule`]).
//!
//! Parts that select nothing prestage stages (`archiveSize`, `storageConfig`, `mirror.helm`,
//! `mirror.samples`, `platform.graph`, `platform.kubeVirtContainer`, the `target*` and
//! `originalRef` names of catalogs and additional images) are read and validated, and recorded
//! in [`ImageSet::not_staged`] for the caller to report; the rest is staged. What prestage
//! cannot do is refused with the reason: one architecture per image set, no whole catalogs
//! (`full: true` or no packages), no `minBundle`, no `full: true` with bundles named.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::graph::{ChannelRange, ReleaseKind};
use super::lists::BlockRule;
use super::release;
use crate::fetch::reference::ImageRef;

/// The ImageSetConfiguration kind.
pub const KIND: &str = "ImageSetConfiguration";
/// oc-mirror v1's API version.
pub const V1ALPHA2: &str = "mirror.openshift.io/v1alpha2";
/// oc-mirror v2's API version.
pub const V2ALPHA1: &str = "mirror.openshift.io/v2alpha1";

/// A release an image set stages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ReleaseSpec {
    /// A release image: a registry reference, or a local OCI layout (`oci:DIR[:REF]`).
    Image(String),
    /// A version (`X.Y.Z`), optionally from a named channel.
    Version {
        /// `X.Y.Z`.
        version: String,
        /// The channel it was given in, if any.
        channel: Option<String>,
    },
    /// Releases of a channel, chosen through the update graph.
    Channel(ChannelRange),
}

/// One channel selection of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChannelSel {
    /// Channel; `None` for the package's default channel, or, in a `full` catalog, for every
    /// channel of the package.
    pub name: Option<String>,
    /// Lowest version to take (inclusive).
    pub min_version: Option<String>,
    /// Highest version to take (inclusive).
    pub max_version: Option<String>,
}

/// A selected package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageSel {
    /// Package name.
    pub name: String,
    /// Channels (at least one, unless bundles are named).
    pub channels: Vec<ChannelSel>,
    /// Bundles named exactly (v2alpha1 `bundles`); when given, `channels` is empty.
    pub bundles: Vec<String>,
}

/// Packages selected from one catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OperatorSet {
    /// The catalog image.
    pub catalog: String,
    /// Packages.
    pub packages: Vec<PackageSel>,
    /// Stage only the selected bundles, not the bundles they depend on (`skipDependencies`).
    pub skip_dependencies: bool,
    /// Every bundle of the selected channels, not only the channel heads (`full: true`).
    pub full: bool,
}

/// A part of an image set that was read and validated but selects nothing prestage stages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NotStaged {
    /// The file it was read from.
    pub file: String,
    /// Its field path, e.g. `mirror.helm`.
    pub field: String,
    /// What it is and why it is not staged.
    pub reason: String,
}

impl std::fmt::Display for NotStaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}: not staged: {}",
            self.file, self.field, self.reason
        )
    }
}

/// An image set: everything that decides the lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImageSet {
    /// The releases (usually one).
    pub releases: Vec<ReleaseSpec>,
    /// Architecture (`amd64`, `arm64`, `ppc64le`, `s390x`, `multi`).
    pub arch: String,
    /// Operators.
    pub operators: Vec<OperatorSet>,
    /// Additional images.
    pub additional_images: Vec<String>,
    /// Images never staged: references or regular expressions ([`super::lists::BlockRule`]).
    pub blocked_images: Vec<String>,
    /// Parts of the configuration that select nothing prestage stages, each reported once.
    pub not_staged: Vec<NotStaged>,
}

// The document, as both API versions spell it.

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Doc {
    kind: String,
    api_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    archive_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    storage_config: Option<StorageConfigDoc>,
    mirror: MirrorDoc,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StorageConfigDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry: Option<RegistryDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local: Option<LocalDoc>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RegistryDoc {
    #[serde(rename = "imageURL")]
    image_url: String,
    #[serde(default, rename = "skipTLS")]
    skip_tls: bool,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct LocalDoc {
    path: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MirrorDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    operators: Vec<OperatorDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    additional_images: Vec<AdditionalImageDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    helm: Option<HelmDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    blocked_images: Vec<ImageDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    samples: Vec<ImageDoc>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HelmDoc {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    repositories: Vec<HelmRepositoryDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    local: Vec<ChartDoc>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HelmRepositoryDoc {
    name: String,
    url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    charts: Vec<ChartDoc>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ChartDoc {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    image_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    platforms: Vec<PlatformFilterDoc>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PlatformFilterDoc {
    os: String,
    architecture: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PlatformDoc {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    architectures: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    channels: Vec<ReleaseChannelDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    graph: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kube_virt_container: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReleaseChannelDoc {
    name: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shortest_path: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    full: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OperatorDoc {
    catalog: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    packages: Vec<PackageDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    full: Option<bool>,
    #[serde(default, alias = "skipDeps", skip_serializing_if = "Option::is_none")]
    skip_dependencies: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_catalog: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    original_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_catalog_source_template: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PackageDoc {
    name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    channels: Vec<IncludeChannelDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    bundles: Vec<ImageDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_bundle: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IncludeChannelDoc {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_bundle: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ImageDoc {
    name: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AdditionalImageDoc {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_tag: Option<String>,
}

/// Deserializes YAML strictly, turning errors into one line `FILE: FIELD.PATH: problem`.
pub(crate) fn from_yaml<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| yaml_error(file, e))
}

/// As [`from_yaml`], struct keys matched as Go's `encoding/json` matches them
/// ([`super::keys`]).
pub(crate) fn from_yaml_go_keys<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T> {
    let de = super::keys::GoKeys(serde_yaml_ng::Deserializer::from_str(text));
    serde_path_to_error::deserialize(de).map_err(|e| yaml_error(file, e))
}

fn yaml_error(file: &str, e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> anyhow::Error {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let msg = inner.to_string();
    let (msg, at) = match msg.rsplit_once(" at line ") {
        Some((m, l)) => (m.to_string(), format!(" (line {l})")),
        None => (msg, String::new()),
    };
    // Name no internal type: `expected struct MirrorDoc` -> `expected a mapping`.
    let msg = match msg.find("expected struct ") {
        Some(k) => {
            let rest = &msg[k + "expected struct ".len()..];
            let end = rest
                .find(|c: char| !c.is_alphanumeric())
                .unwrap_or(rest.len());
            format!("{}expected a mapping{}", &msg[..k], &rest[end..])
        }
        None => msg,
    };
    // serde_yaml_ng prefixes nested errors with its own rendering of the path, keys as written.
    let msg = match msg.split_once(": ") {
        Some((p, rest))
            if !p.contains(' ')
                && path
                    .to_ascii_lowercase()
                    .starts_with(&p.to_ascii_lowercase()) =>
        {
            rest.to_string()
        }
        _ => msg,
    };
    // `unknown field `x`, expected ...`: the path already ends with the field.
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((_, tail)) = rest.split_once('`') {
            return anyhow!("{file}: {path}: unknown field{tail}{at}");
        }
    }
    if path == "." || path.is_empty() {
        anyhow!("{file}: {msg}{at}")
    } else {
        anyhow!("{file}: {path}: {msg}{at}")
    }
}

fn check_ref(file: &str, field: &str, r: &str) -> Result<String> {
    let parsed = ImageRef::parse(r.strip_prefix("docker://").unwrap_or(r))
        .map_err(|e| anyhow!("{file}: {field}: {e:#}"))?;
    Ok(parsed.to_string())
}

/// A registry reference (normalized) or a local OCI layout (`oci:DIR[:REF]`, kept as written).
fn check_image_or_layout(file: &str, field: &str, r: &str) -> Result<String> {
    match r.strip_prefix("oci:") {
        Some("") => bail!("{file}: {field}: `oci:` needs a directory"),
        Some(_) => Ok(r.to_string()),
        None => check_ref(file, field, r),
    }
}

fn check_version(file: &str, field: &str, v: &Option<String>) -> Result<()> {
    if let Some(s) = v {
        semver::Version::parse(s)
            .map_err(|_| anyhow!("{file}: {field}: `{s}` is not a version (X.Y.Z)"))?;
    }
    Ok(())
}

/// Parses an ImageSetConfiguration; `file` names it in messages.
pub fn parse_imageset(file: &str, text: &str) -> Result<ImageSet> {
    let doc: Doc = from_yaml_go_keys(file, text)?;
    if doc.kind != KIND {
        bail!("{file}: kind: expected {KIND}, found `{}`", doc.kind);
    }
    if doc.api_version != V1ALPHA2 && doc.api_version != V2ALPHA1 {
        bail!(
            "{file}: apiVersion: expected {V1ALPHA2} or {V2ALPHA1}, found `{}`",
            doc.api_version
        );
    }
    let m = &doc.mirror;
    let mut set = ImageSet {
        arch: "amd64".to_string(),
        ..ImageSet::default()
    };
    let mut not_staged = |field: &str, reason: String| {
        set.not_staged.push(NotStaged {
            file: file.to_string(),
            field: field.to_string(),
            reason,
        })
    };
    if let Some(a) = doc.archive_size {
        if a < 0 {
            bail!("{file}: archiveSize: {a} is negative");
        }
        not_staged(
            "archiveSize",
            "the size of oc-mirror's archive segments; prestage writes no archives".into(),
        );
    }
    if let Some(sc) = &doc.storage_config {
        if let Some(r) = &sc.registry {
            if r.image_url.is_empty() {
                bail!("{file}: storageConfig.registry.imageURL: empty");
            }
        }
        if let Some(l) = &sc.local {
            if l.path.is_empty() {
                bail!("{file}: storageConfig.local.path: empty");
            }
        }
        not_staged(
            "storageConfig",
            "where oc-mirror keeps its metadata; prestage keeps none".into(),
        );
    }
    if let Some(p) = &m.platform {
        if p.graph == Some(true) {
            not_staged(
                "mirror.platform.graph",
                "the update graph data image serves an OpenShift Update Service, not the node"
                    .into(),
            );
        }
        if p.kube_virt_container == Some(true) {
            not_staged(
                "mirror.platform.kubeVirtContainer",
                "the KubeVirt container image the release names; prestage stages the release's \
                 components"
                    .into(),
            );
        }
    }
    for (i, o) in m.operators.iter().enumerate() {
        for (name, v) in [
            ("targetName", &o.target_name),
            ("targetCatalog", &o.target_catalog),
            ("targetTag", &o.target_tag),
            (
                "targetCatalogSourceTemplate",
                &o.target_catalog_source_template,
            ),
            ("originalRef", &o.original_ref),
        ] {
            if v.is_some() {
                not_staged(
                    &format!("mirror.operators[{i}].{name}"),
                    "a name for oc-mirror's mirror registry; the catalog is read, not staged, \
                     and images keep their own names"
                        .into(),
                );
            }
        }
    }
    for (i, a) in m.additional_images.iter().enumerate() {
        for (name, v) in [("targetRepo", &a.target_repo), ("targetTag", &a.target_tag)] {
            if v.is_some() {
                not_staged(
                    &format!("mirror.additionalImages[{i}].{name}"),
                    "a name in oc-mirror's mirror registry; the image is staged under its own \
                     name (mapping.txt)"
                        .into(),
                );
            }
        }
    }
    if let Some(h) = &m.helm {
        check_helm(file, h)?;
        let n =
            |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        if !h.repositories.is_empty() || !h.local.is_empty() {
            not_staged(
                "mirror.helm",
                format!(
                    "prestage stages no Helm charts or their images ({}, {})",
                    n(h.repositories.len(), "repository", "repositories"),
                    n(h.local.len(), "local chart", "local charts")
                ),
            );
        }
    }
    for (i, x) in m.samples.iter().enumerate() {
        if x.name.is_empty() {
            bail!("{file}: mirror.samples[{i}].name: empty");
        }
    }
    if !m.samples.is_empty() {
        not_staged(
            "mirror.samples",
            "sample images (oc-mirror does not implement them either)".into(),
        );
    }
    if let Some(p) = &m.platform {
        match p.architectures.as_slice() {
            [] => {}
            [a] => {
                release::release_arch(a)
                    .map_err(|e| anyhow!("{file}: mirror.platform.architectures[0]: {e}"))?;
                set.arch = a.clone();
            }
            _ => bail!(
                "{file}: mirror.platform.architectures: {} architectures; a partition stages one \
                 (use `multi` for the manifest-list release)",
                p.architectures.len()
            ),
        }
        let mut releases = Vec::new();
        if let Some(r) = &p.release {
            releases.push(ReleaseSpec::Image(check_image_or_layout(
                file,
                "mirror.platform.release",
                r,
            )?));
        }
        for (i, c) in p.channels.iter().enumerate() {
            let f = format!("mirror.platform.channels[{i}]");
            // oc-mirror reads exactly `ocp` and `okd` (v2alpha1 `type_platform.go`), and any
            // other word silently as ocp; a misspelt `okd` is refused here instead.
            let kind = match c.kind.as_deref() {
                None | Some("ocp") => ReleaseKind::Ocp,
                Some("okd") => ReleaseKind::Okd,
                Some(t) => bail!(
                    "{file}: {f}.type: `{t}`: expected ocp or okd (oc-mirror would read it as \
                     ocp)"
                ),
            };
            check_version(file, &format!("{f}.minVersion"), &c.min_version)?;
            check_version(file, &format!("{f}.maxVersion"), &c.max_version)?;
            if c.name.is_empty() {
                bail!("{file}: {f}.name: empty");
            }
            let spec = match (&c.min_version, &c.max_version, c.full) {
                // An OKD version is no tag of a known repository: it resolves through OKD's
                // update graph, as oc-mirror resolves every channel.
                (Some(a), Some(b), None | Some(false)) if a == b && kind == ReleaseKind::Ocp => {
                    ReleaseSpec::Version {
                        version: a.clone(),
                        channel: Some(c.name.clone()),
                    }
                }
                _ => {
                    if let (Some(a), Some(b)) = (&c.min_version, &c.max_version) {
                        let (lo, hi) = (semver::Version::parse(a)?, semver::Version::parse(b)?);
                        if lo > hi {
                            bail!("{file}: {f}: minVersion {a} is above maxVersion {b}");
                        }
                    }
                    if c.shortest_path == Some(true)
                        && (c.min_version.is_none() || c.max_version.is_none())
                    {
                        bail!("{file}: {f}.shortestPath: needs both minVersion and maxVersion");
                    }
                    ReleaseSpec::Channel(ChannelRange {
                        name: c.name.clone(),
                        min_version: c.min_version.clone(),
                        max_version: c.max_version.clone(),
                        full: c.full == Some(true),
                        shortest_path: c.shortest_path == Some(true),
                        kind,
                    })
                }
            };
            if !releases.contains(&spec) {
                releases.push(spec);
            }
        }
        set.releases = releases;
    }
    for (i, o) in m.operators.iter().enumerate() {
        let f = format!("mirror.operators[{i}]");
        // A local OCI layout (`oci:DIR[:REF]`) is kept as written; the catalog itself is not
        // staged, only read.
        let catalog = check_image_or_layout(file, &format!("{f}.catalog"), &o.catalog)?;
        let full = o.full == Some(true);
        if full && o.packages.is_empty() {
            bail!("{file}: {f}.full: whole catalogs are not supported; list the packages");
        }
        if o.packages.is_empty() {
            bail!("{file}: {f}.packages: empty; list the packages to stage");
        }
        let mut packages = Vec::new();
        for (j, p) in o.packages.iter().enumerate() {
            let f = format!("{f}.packages[{j}]");
            if p.min_bundle.is_some() {
                bail!("{file}: {f}.minBundle: not supported; use minVersion");
            }
            if p.name.is_empty() {
                bail!("{file}: {f}.name: empty");
            }
            if !p.bundles.is_empty() {
                if full {
                    bail!(
                        "{file}: {f}.bundles: `full: true` takes every bundle of the channels; \
                         name bundles or set full, not both"
                    );
                }
                if !p.channels.is_empty()
                    || p.min_version.is_some()
                    || p.max_version.is_some()
                    || p.default_channel.is_some()
                {
                    bail!(
                        "{file}: {f}.bundles: names bundles exactly; give either bundles or \
                         channels and versions"
                    );
                }
                let mut bundles = Vec::new();
                for (k, b) in p.bundles.iter().enumerate() {
                    if b.name.is_empty() {
                        bail!("{file}: {f}.bundles[{k}].name: empty");
                    }
                    bundles.push(b.name.clone());
                }
                packages.push(PackageSel {
                    name: p.name.clone(),
                    channels: Vec::new(),
                    bundles,
                });
                continue;
            }
            check_version(file, &format!("{f}.minVersion"), &p.min_version)?;
            check_version(file, &format!("{f}.maxVersion"), &p.max_version)?;
            let mut channels = Vec::new();
            for (k, c) in p.channels.iter().enumerate() {
                let f = format!("{f}.channels[{k}]");
                if c.min_bundle.is_some() {
                    bail!("{file}: {f}.minBundle: not supported; use minVersion");
                }
                if c.name.is_empty() {
                    bail!("{file}: {f}.name: empty");
                }
                check_version(file, &format!("{f}.minVersion"), &c.min_version)?;
                check_version(file, &format!("{f}.maxVersion"), &c.max_version)?;
                let (min, max) = if c.min_version.is_none() && c.max_version.is_none() {
                    (p.min_version.clone(), p.max_version.clone())
                } else {
                    (c.min_version.clone(), c.max_version.clone())
                };
                channels.push(ChannelSel {
                    name: Some(c.name.clone()),
                    min_version: min,
                    max_version: max,
                });
            }
            if channels.is_empty() {
                channels.push(ChannelSel {
                    // A full catalog takes every channel of a package that names none.
                    name: p.default_channel.clone().filter(|_| !full),
                    min_version: p.min_version.clone(),
                    max_version: p.max_version.clone(),
                });
            }
            packages.push(PackageSel {
                name: p.name.clone(),
                channels,
                bundles: Vec::new(),
            });
        }
        set.operators.push(OperatorSet {
            catalog,
            packages,
            skip_dependencies: o.skip_dependencies == Some(true),
            full,
        });
    }
    for (i, a) in m.additional_images.iter().enumerate() {
        let r = check_ref(file, &format!("mirror.additionalImages[{i}].name"), &a.name)?;
        set.additional_images.push(r);
    }
    for (i, a) in m.blocked_images.iter().enumerate() {
        // Kept as written (a reference without its `docker://`): a reference without a tag or
        // digest blocks the whole repository.
        let rule = BlockRule::parse(&a.name)
            .map_err(|e| anyhow!("{file}: mirror.blockedImages[{i}].name: {e:#}"))?;
        set.blocked_images.push(rule.entry().to_string());
    }
    Ok(set)
}

/// Checks a Helm section.
fn check_helm(file: &str, h: &HelmDoc) -> Result<()> {
    for (i, r) in h.repositories.iter().enumerate() {
        let f = format!("mirror.helm.repositories[{i}]");
        if r.name.is_empty() {
            bail!("{file}: {f}.name: empty");
        }
        if !(r.url.starts_with("https://") || r.url.starts_with("http://")) {
            bail!("{file}: {f}.url: `{}` is not an http(s) URL", r.url);
        }
        for (j, c) in r.charts.iter().enumerate() {
            if c.name.is_empty() {
                bail!("{file}: {f}.charts[{j}].name: empty");
            }
        }
    }
    for (i, c) in h.local.iter().enumerate() {
        let f = format!("mirror.helm.local[{i}]");
        if c.name.is_empty() {
            bail!("{file}: {f}.name: empty");
        }
        if c.path.as_deref().is_none_or(str::is_empty) {
            bail!("{file}: {f}.path: a local chart needs its path");
        }
    }
    Ok(())
}

/// Reads and parses an ImageSetConfiguration file.
pub fn load_imageset(path: &Path) -> Result<ImageSet> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_imageset(&path.display().to_string(), &text)
}

/// Parses a plain list: one image reference per line, blank lines and `#` comments ignored.
/// References are normalized (`docker://` dropped, registry made explicit).
pub fn parse_list(file: &str, text: &str) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.split_whitespace().count() > 1 {
            bail!(
                "{file}:{}: one reference per line expected, found `{line}`",
                i + 1
            );
        }
        v.push(
            check_ref(file, &format!("line {}", i + 1), line).map_err(|e| {
                // `FILE: line N: ...` reads better as `FILE:N: ...`.
                anyhow!(
                    "{}",
                    e.to_string().replacen(
                        &format!("{file}: line {}:", i + 1),
                        &format!("{file}:{}:", i + 1),
                        1
                    )
                )
            })?,
        );
    }
    Ok(v)
}

/// Reads a plain list file.
pub fn load_list(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_list(&path.display().to_string(), &text)
}

impl ImageSet {
    /// Merges another image set into this one (releases: `other`'s when this one has none;
    /// architecture: `other`'s when set; images and operators appended). Two different
    /// release selections are refused: one of them is likely a mistake.
    pub fn merge(&mut self, other: ImageSet) -> Result<()> {
        let same = |a: &ReleaseSpec, b: &ReleaseSpec| match (a, b) {
            // The same version, with or without its channel.
            (
                ReleaseSpec::Version { version: x, .. },
                ReleaseSpec::Version {
                    version: y,
                    channel: None,
                },
            ) => x == y,
            _ => a == b,
        };
        if self.releases.is_empty() {
            self.releases = other.releases;
        } else if !other.releases.is_empty()
            && (self.releases.len() != other.releases.len()
                || self
                    .releases
                    .iter()
                    .zip(&other.releases)
                    .any(|(a, b)| !same(a, b)))
        {
            bail!(
                "two release selections given ({:?} and {:?}); give one",
                self.releases,
                other.releases
            );
        }
        if !other.arch.is_empty() {
            self.arch = other.arch;
        }
        self.operators.extend(other.operators);
        self.additional_images.extend(other.additional_images);
        self.blocked_images.extend(other.blocked_images);
        self.not_staged.extend(other.not_staged);
        Ok(())
    }

    /// The effective image set as a v2alpha1 `ImageSetConfiguration` (YAML), in the canonical
    /// spelling; the parts that were not staged are left out.
    pub fn to_yaml(&self) -> Result<String> {
        let mut platform = PlatformDoc {
            architectures: vec![self.arch.clone()],
            ..PlatformDoc::default()
        };
        for r in &self.releases {
            match r {
                ReleaseSpec::Image(r) => {
                    if let Some(other) = &platform.release {
                        bail!(
                            "release images {other} and {r}: an ImageSetConfiguration names one \
                             release image"
                        );
                    }
                    platform.release = Some(r.clone());
                }
                ReleaseSpec::Channel(c) => platform.channels.push(ReleaseChannelDoc {
                    name: c.name.clone(),
                    kind: Some(c.kind.name().to_string()),
                    min_version: c.min_version.clone(),
                    max_version: c.max_version.clone(),
                    shortest_path: c.shortest_path.then_some(true),
                    full: c.full.then_some(true),
                }),
                ReleaseSpec::Version { version, channel } => {
                    let channel = match channel {
                        Some(c) => c.clone(),
                        None => {
                            let v = semver::Version::parse(version)
                                .with_context(|| format!("release version `{version}`"))?;
                            format!("stable-{}.{}", v.major, v.minor)
                        }
                    };
                    platform.channels.push(ReleaseChannelDoc {
                        name: channel,
                        kind: Some("ocp".to_string()),
                        min_version: Some(version.clone()),
                        max_version: Some(version.clone()),
                        ..ReleaseChannelDoc::default()
                    });
                }
            }
        }
        let operators = self
            .operators
            .iter()
            .map(|o| OperatorDoc {
                catalog: o.catalog.clone(),
                packages: o
                    .packages
                    .iter()
                    .map(|p| {
                        let named: Vec<&ChannelSel> =
                            p.channels.iter().filter(|c| c.name.is_some()).collect();
                        let default = p.channels.iter().find(|c| c.name.is_none());
                        PackageDoc {
                            name: p.name.clone(),
                            channels: named
                                .iter()
                                .map(|c| IncludeChannelDoc {
                                    name: c.name.clone().unwrap_or_default(),
                                    min_version: c.min_version.clone(),
                                    max_version: c.max_version.clone(),
                                    min_bundle: None,
                                })
                                .collect(),
                            bundles: p
                                .bundles
                                .iter()
                                .map(|b| ImageDoc { name: b.clone() })
                                .collect(),
                            min_version: default.and_then(|c| c.min_version.clone()),
                            max_version: default.and_then(|c| c.max_version.clone()),
                            ..PackageDoc::default()
                        }
                    })
                    .collect(),
                skip_dependencies: o.skip_dependencies.then_some(true),
                full: o.full.then_some(true),
                ..OperatorDoc::default()
            })
            .collect();
        let images = |v: &[String]| {
            v.iter()
                .map(|n| ImageDoc { name: n.clone() })
                .collect::<Vec<_>>()
        };
        let additional_images = self
            .additional_images
            .iter()
            .map(|n| AdditionalImageDoc {
                name: n.clone(),
                ..AdditionalImageDoc::default()
            })
            .collect();
        let doc = Doc {
            kind: KIND.to_string(),
            api_version: V2ALPHA1.to_string(),
            mirror: MirrorDoc {
                platform: Some(platform),
                operators,
                additional_images,
                blocked_images: images(&self.blocked_images),
                ..MirrorDoc::default()
            },
            ..Doc::default()
        };
        serde_yaml_ng::to_string(&doc).context("serializing the image set")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const FULL_V2: &str = "\
kind: ImageSetConfiguration
apiVersion: mirror.openshift.io/v2alpha1
mirror:
  platform:
    architectures: [amd64]
    graph: true
    channels:
      - name: stable-4.14
        type: ocp
        minVersion: 4.14.3
        maxVersion: 4.14.3
  operators:
    - catalog: registry.example/redhat/operator-index:v4.14
      packages:
        - name: foo
        - name: bar
          channels:
            - name: alpha
            - name: beta
              minVersion: 1.0.0
              maxVersion: 1.2.0
        - name: baz
          bundles:
            - name: baz.v1.0.0
            - name: baz.v1.1.0
  additionalImages:
    - name: registry.example/tools/troubleshoot:latest
    - name: docker://registry.example/tools/debug@sha256:0101010101010101010101010101010101010101010101010101010101010101
  blockedImages:
    - name: registry.example/foo/proxy
";

    #[test]
    fn v2alpha1_full() {
        let s = parse_imageset("imageset.yaml", FULL_V2).unwrap();
        assert_eq!(
            s.releases,
            [ReleaseSpec::Version {
                version: "4.14.3".into(),
                channel: Some("stable-4.14".into())
            }]
        );
        assert_eq!(s.arch, "amd64");
        assert_eq!(s.operators[0].packages[0].channels[0].name, None);
        assert_eq!(
            s.operators[0].packages[1].channels[1],
            ChannelSel {
                name: Some("beta".into()),
                min_version: Some("1.0.0".into()),
                max_version: Some("1.2.0".into())
            }
        );
        assert_eq!(
            s.operators[0].packages[2].bundles,
            vec!["baz.v1.0.0", "baz.v1.1.0"]
        );
        assert!(s.operators[0].packages[2].channels.is_empty());
        assert_eq!(
            s.additional_images[1],
            "registry.example/tools/debug@sha256:0101010101010101010101010101010101010101010101010101010101010101"
        );
        assert_eq!(s.blocked_images, vec!["registry.example/foo/proxy"]);
        // The effective YAML parses back to the same set.
        let y = s.to_yaml().unwrap();
        assert!(
            y.contains("apiVersion: mirror.openshift.io/v2alpha1"),
            "{y}"
        );
        // `graph: true` selects an image prestage does not stage.
        assert_eq!(
            s.not_staged
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>(),
            [
                "imageset.yaml: mirror.platform.graph: not staged: the update graph data image \
                 serves an OpenShift Update Service, not the node"
            ]
        );
        let mut staged = s.clone();
        staged.not_staged.clear();
        assert_eq!(parse_imageset("effective", &y).unwrap(), staged);
    }

    #[test]
    fn v1alpha2_with_storage_and_release_image() {
        let y = "\
apiVersion: mirror.openshift.io/v1alpha2
kind: ImageSetConfiguration
archiveSize: 4
storageConfig:
  local:
    path: /tmp/mirror
mirror:
  operators:
  - catalog: registry.example/redhat/operator-index:v4.14
    skipDeps: true
    packages:
    - name: foo
      minVersion: 1.1.0
";
        let s = parse_imageset("isc.yaml", y).unwrap();
        assert!(s.releases.is_empty());
        assert_eq!(
            s.operators[0].packages[0].channels,
            vec![ChannelSel {
                name: None,
                min_version: Some("1.1.0".into()),
                max_version: None
            }]
        );
        let back = parse_imageset("effective", &s.to_yaml().unwrap()).unwrap();
        assert_eq!(back.operators, s.operators);
    }

    fn err(y: &str) -> String {
        format!("{:#}", parse_imageset("imageset.yaml", y).unwrap_err())
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let y = FULL_V2.replace("            - name: alpha", "            - nmae: alpha");
        let e = err(&y);
        assert!(
            e.starts_with("imageset.yaml: mirror.operators[0].packages[1].channels[0].nmae: unknown field, expected one of"),
            "{e}"
        );
        let y = FULL_V2.replace(
            "        - name: foo",
            "        - name: foo\n          chanels: []",
        );
        let e = err(&y);
        assert!(
            e.starts_with("imageset.yaml: mirror.operators[0].packages[0].chanels: unknown field"),
            "{e}"
        );
        let e = err(&FULL_V2.replace("mirror:", "mirorr:"));
        assert!(e.starts_with("imageset.yaml: mirorr: unknown field"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = err("kind: ImageSetConfiguration\napiVersion: [\n");
        assert!(e.starts_with("imageset.yaml: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = err("kind: ImageSetConfiguration\napiVersion: x\nmirror: [1]\n");
        assert!(
            e.starts_with("imageset.yaml: mirror: invalid type: sequence, expected a mapping"),
            "{e}"
        );
        let e = err("kind: ImageSetConfiguration\n\tapiVersion: x\n");
        assert!(
            e.starts_with("imageset.yaml: ") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn channel_ranges() {
        let s = parse_imageset(
            "isc.yaml",
            &FULL_V2.replace(
                "        maxVersion: 4.14.3\n",
                "        maxVersion: 4.14.9\n        shortestPath: true\n      - name: fast-4.15\n",
            ),
        )
        .unwrap();
        let range = |name: &str, min: Option<&str>, max: Option<&str>, sp| {
            ReleaseSpec::Channel(ChannelRange {
                name: name.into(),
                min_version: min.map(Into::into),
                max_version: max.map(Into::into),
                full: false,
                shortest_path: sp,
                kind: ReleaseKind::Ocp,
            })
        };
        assert_eq!(
            s.releases,
            [
                range("stable-4.14", Some("4.14.3"), Some("4.14.9"), true),
                range("fast-4.15", None, None, false)
            ]
        );
        let back = parse_imageset("effective", &s.to_yaml().unwrap()).unwrap();
        assert_eq!(back.releases, s.releases);
        let e = err(&FULL_V2.replace("minVersion: 4.14.3", "minVersion: 4.14.10"));
        assert!(
            e.contains(
                "mirror.platform.channels[0]: minVersion 4.14.10 is above maxVersion 4.14.3"
            ),
            "{e}"
        );
        let e = err(&FULL_V2.replace("minVersion: 4.14.3", "shortestPath: true"));
        assert!(
            e.contains(
                "mirror.platform.channels[0].shortestPath: needs both minVersion and maxVersion"
            ),
            "{e}"
        );
        let s = parse_imageset(
            "isc.yaml",
            &FULL_V2.replace(
                "channels:\n      - name: stable-4.14",
                "release: oci:/srv/release:4.14.3\n    channels:\n      - name: stable-4.14",
            ),
        )
        .unwrap();
        assert_eq!(
            s.releases[0],
            ReleaseSpec::Image("oci:/srv/release:4.14.3".into())
        );
    }

    #[test]
    fn okd_channels() {
        // oc-mirror's `docs/okd-mirror.md` configuration, and its v1 example's bare channel.
        let y =
            "apiVersion: mirror.openshift.io/v2alpha1\nkind: ImageSetConfiguration\nmirror:\n  \
                 platform:\n    graph: false\n    channels:\n      - name: 4-stable\n        \
                 minVersion: 4.18.0-okd-scos.8\n        maxVersion: 4.18.0-okd-scos.8\n        \
                 type: okd\n      - name: okd\n        type: okd \n";
        let s = parse_imageset("okd.yaml", y).unwrap();
        let okd = |name: &str, v: Option<&str>| {
            ReleaseSpec::Channel(ChannelRange {
                name: name.into(),
                min_version: v.map(Into::into),
                max_version: v.map(Into::into),
                full: false,
                shortest_path: false,
                kind: ReleaseKind::Okd,
            })
        };
        // A pinned OKD version is no tag: it stays a channel, resolved through OKD's graph.
        assert_eq!(
            s.releases,
            [okd("4-stable", Some("4.18.0-okd-scos.8")), okd("okd", None)]
        );
        let back = parse_imageset("effective", &s.to_yaml().unwrap()).unwrap();
        assert_eq!(back.releases, s.releases);
        assert!(s.to_yaml().unwrap().contains("type: okd"));
        let e = err(&y.replace("type: okd \n", "type: OKD\n"));
        assert!(
            e.contains("mirror.platform.channels[1].type: `OKD`: expected ocp or okd"),
            "{e}"
        );
    }

    #[test]
    fn refusals() {
        let e = err(&FULL_V2.replace("[amd64]", "[amd64, arm64]"));
        assert!(
            e.contains("mirror.platform.architectures: 2 architectures"),
            "{e}"
        );
        let e = err(&FULL_V2.replace("[amd64]", "[sparc]"));
        assert!(e.contains("mirror.platform.architectures[0]"), "{e}");
        let e = err(&FULL_V2.replace("v2alpha1", "v3"));
        assert!(e.contains("apiVersion: expected"), "{e}");
        let e = err(&FULL_V2.replace("minVersion: 1.0.0", "minVersion: one"));
        assert!(
            e.contains(
                "mirror.operators[0].packages[1].channels[1].minVersion: `one` is not a version"
            ),
            "{e}"
        );
        let e = err(&FULL_V2.replace(
            "        - name: baz\n",
            "        - name: baz\n          minVersion: 1.0.0\n",
        ));
        assert!(
            e.contains("mirror.operators[0].packages[2].bundles: names bundles exactly"),
            "{e}"
        );
        let e = err(&FULL_V2.replace("tools/troubleshoot:latest", "Tools/x"));
        assert!(e.contains("mirror.additionalImages[0].name"), "{e}");
        // A whole catalog, and full with bundles named.
        let whole = "kind: ImageSetConfiguration\napiVersion: mirror.openshift.io/v2alpha1\n\
                     mirror:\n  operators:\n    - catalog: registry.example/redhat/index:v4.14\n      \
                     full: true\n";
        let e = err(whole);
        assert_eq!(
            e,
            "imageset.yaml: mirror.operators[0].full: whole catalogs are not supported; list the \
             packages"
        );
        let e = err(&whole.replace("full: true", "full: false"));
        assert!(
            e.starts_with("imageset.yaml: mirror.operators[0].packages: empty"),
            "{e}"
        );
        let e = err(&FULL_V2.replace(
            "    - catalog: registry.example/redhat/operator-index:v4.14\n",
            "    - catalog: registry.example/redhat/operator-index:v4.14\n      full: true\n",
        ));
        assert!(
            e.starts_with(
                "imageset.yaml: mirror.operators[0].packages[2].bundles: `full: true` takes every \
                 bundle"
            ),
            "{e}"
        );
        // Blocked images: a pattern that does not compile, an empty one.
        let e = err(&FULL_V2.replace("name: registry.example/foo/proxy", "name: '(aws|gcp'"));
        assert!(
            e.starts_with(
                "imageset.yaml: mirror.blockedImages[0].name: `(aws|gcp` is neither an image \
                 reference nor a regular expression"
            ) && !e.contains('\n'),
            "{e}"
        );
        let e = err(&FULL_V2.replace("name: registry.example/foo/proxy", "name: ''"));
        assert!(
            e.starts_with("imageset.yaml: mirror.blockedImages[0].name: empty"),
            "{e}"
        );
        // Sections that are not staged are still validated.
        let helm =
            |h: &str| FULL_V2.replace("  blockedImages:", &format!("  helm:\n{h}  blockedImages:"));
        let e = err(&helm(
            "    repositories:\n      - name: podinfo\n        url: stefanprodan.github.io\n",
        ));
        assert!(
            e.starts_with(
                "imageset.yaml: mirror.helm.repositories[0].url: `stefanprodan.github.io` is not \
                 an http(s) URL"
            ),
            "{e}"
        );
        let e = err(&helm("    local:\n      - name: podinfo\n"));
        assert!(
            e.starts_with("imageset.yaml: mirror.helm.local[0].path: a local chart needs its path"),
            "{e}"
        );
        let e = err(&helm("    local:\n      - name: podinfo\n        path: /c.tgz\n        imagepaths: [1, [2]]\n"));
        assert!(
            e.starts_with("imageset.yaml: mirror.helm.local[0].imagePaths[1]: invalid type"),
            "{e}"
        );
        let e = err(&FULL_V2.replace(
            "kind: ImageSetConfiguration\n",
            "kind: ImageSetConfiguration\narchiveSize: -1\n",
        ));
        assert_eq!(e, "imageset.yaml: archiveSize: -1 is negative");
    }

    /// oc-mirror's own reference file (v1 `docs/imageset-config-ref.yaml`), as its users copy it:
    /// `skipTLS`, Helm charts, regular expressions and short names in `blockedImages`.
    const OC_MIRROR_REF: &str = "\
apiVersion: mirror.openshift.io/v1alpha2
kind: ImageSetConfiguration
storageConfig:
  registry:
    imageURL: localhost:5000/test:latest # Stores metadata in an image
    skipTLS: true # Disable TLS certificate checking or use plain HTTP
mirror:
  platform:
    architectures:
      - \"s390x\"
    channels:
      - name: stable-4.9 # References the latest stable release
      - name: stable-4.7 # Annotation references min and max version.
        minVersion: '4.6.13'
        maxVersion: '4.7.18'
    graph: true # Include Cincinnati upgrade graph image in imageset (defaults to false)
  operators:
    - catalog: registry.redhat.io/redhat/redhat-operator-index:v4.12 # References entire catalog
      full: false # full set to false pull the latest version for all package channels with no versions set (default to false)
      packages:
        - name: elasticsearch-operator
          channels:
            - name: 'stable-v0' # Mirrors a single channel from the previous channel head to the current channel head
        - name: rhacs-operator
          minVersion: '3.67.0' # Mirrors all versions from the minimum version to the latest in the package
        - name: mtc-operator
          channels:
            - name: release-1.7  # Mirrors all versions in a single channel from the min version to the max version.
              minVersion: '1.7.0'
              maxVersion: '1.7.5'
  additionalImages: # List of additional images to be included in imageset
    - name: registry.redhat.io/ubi8/ubi:latest
  blockedImages: # Image to block by name or regular expression
    - name: alpine
    - name: redis
    - name: ^blocked-registry.com
  helm:
    local:
      - name: podinfo
        path: /test/podinfo-5.0.0.tar.gz
    repositories:
      - name: podinfo
        url: https://stefanprodan.github.io/podinfo
        charts:
          - name: podinfo
            version: 5.0.0
";

    #[test]
    fn oc_mirror_reference_file() {
        let s = parse_imageset("isc.yaml", OC_MIRROR_REF).unwrap();
        assert_eq!(s.arch, "s390x");
        assert_eq!(s.releases.len(), 2);
        assert_eq!(s.operators[0].packages.len(), 3);
        assert!(!s.operators[0].full);
        assert_eq!(s.additional_images, ["registry.redhat.io/ubi8/ubi:latest"]);
        assert_eq!(
            s.blocked_images,
            ["alpine", "redis", "^blocked-registry.com"]
        );
        let fields: Vec<&str> = s.not_staged.iter().map(|n| n.field.as_str()).collect();
        assert_eq!(
            fields,
            ["storageConfig", "mirror.platform.graph", "mirror.helm"]
        );
        assert_eq!(
            s.not_staged[2].to_string(),
            "isc.yaml: mirror.helm: not staged: prestage stages no Helm charts or their images \
             (1 repository, 1 local chart)"
        );
    }

    #[test]
    fn keys_match_regardless_of_case() {
        // The spellings oc-mirror's own files use (`blockedimages` in its v1 test data,
        // `skipTls`), all-lowercase and all-uppercase ones, and Go's non-ASCII folds.
        let y = "\
APIVERSION: mirror.openshift.io/v1alpha2
Kind: ImageSetConfiguration
archivesize: 4
storageconfig:
  Registry:
    imageurl: registry.example:5000/oc-mirror/metadata:latest
    skipTls: true
mirror:
  Platform:
    channels:
      - name: stable-4.14
        Type: ocp
        minversion: 4.14.3
        MAXVERSION: 4.14.3
  operators:
    - Catalog: registry.example/redhat/operator-index:v4.14
      FULL: true
      \u{17F}kipDependencies: true
      targettag: v1
      packages:
        - name: foo
          defaultchannel: stable
          minVersion: 1.1.0
        - name: bar
          Channels:
            - name: alpha
              maxversion: 0.2.0
  additionalimages:
    - name: registry.example/tools/troubleshoot:latest
      targetrepo: tools/ts
  blockedimages:
    - name: '(aws|gcp|azure|ibm|openstack)'
    - NAME: registry.example/foo/proxy
  Samples:
    - name: registry.example/samples/ruby:latest
";
        let s = parse_imageset("imageset.yaml", y).unwrap();
        assert_eq!(
            s.releases,
            [ReleaseSpec::Version {
                version: "4.14.3".into(),
                channel: Some("stable-4.14".into())
            }]
        );
        let o = &s.operators[0];
        assert!(o.full && o.skip_dependencies);
        // A full catalog's package naming no channel takes every channel, in range.
        assert_eq!(
            o.packages[0].channels,
            [ChannelSel {
                name: None,
                min_version: Some("1.1.0".into()),
                max_version: None
            }]
        );
        assert_eq!(
            o.packages[1].channels[0].max_version.as_deref(),
            Some("0.2.0")
        );
        assert_eq!(
            s.additional_images,
            ["registry.example/tools/troubleshoot:latest"]
        );
        assert_eq!(
            s.blocked_images,
            [
                "(aws|gcp|azure|ibm|openstack)",
                "registry.example/foo/proxy"
            ]
        );
        let fields: Vec<&str> = s.not_staged.iter().map(|n| n.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "archiveSize",
                "storageConfig",
                "mirror.operators[0].targetTag",
                "mirror.additionalImages[0].targetRepo",
                "mirror.samples"
            ]
        );
        // The effective file is written in the canonical spelling and reads back the same.
        let eff = s.to_yaml().unwrap();
        for canonical in [
            "apiVersion:",
            "kind:",
            "platform:",
            "minVersion: 4.14.3",
            "catalog:",
            "full: true",
            "skipDependencies: true",
            "additionalImages:",
            "blockedImages:",
        ] {
            assert!(eff.contains(canonical), "{canonical}: {eff}");
        }
        for gone in [
            "additionalimages",
            "Platform",
            "FULL",
            "targettag",
            "samples",
            "archiveSize",
        ] {
            assert!(!eff.contains(gone), "{gone}: {eff}");
        }
        let back = parse_imageset("effective", &eff).unwrap();
        assert!(back.not_staged.is_empty());
        assert_eq!(back.operators, s.operators);
        assert_eq!(back.blocked_images, s.blocked_images);
        assert_eq!(back.releases, s.releases);

        // A key that names no field in any case is still an error naming it.
        let e = err(&y.replace("additionalimages:", "additionalimagez:"));
        assert!(
            e.starts_with("imageset.yaml: mirror.additionalimagez: unknown field, expected one of"),
            "{e}"
        );
        let e = err(&y.replace("      Channels:", "      channel:"));
        assert!(
            e.starts_with("imageset.yaml: mirror.operators[0].packages[1].channel: unknown field"),
            "{e}"
        );
        // Two spellings of one field are refused (Go would keep the last silently).
        let e = err(&format!(
            "{y}  additionalImages:\n    - name: registry.example/x:1\n"
        ));
        assert!(
            e.starts_with(
                "imageset.yaml: mirror.additionalImages: the same field as `additionalimages` \
                 (keys match regardless of case)"
            ),
            "{e}"
        );
        let e = err(&y.replace(
            "      FULL: true\n",
            "      FULL: true\n      full: false\n",
        ));
        assert!(
            e.starts_with("imageset.yaml: mirror.operators[0].full: the same field as `FULL`"),
            "{e}"
        );
        // Errors below a field matched by case folding name it canonically.
        let e = err(&y.replace("skipTls: true", "skipTls: [true]"));
        assert!(
            e.starts_with("imageset.yaml: storageConfig.registry.skipTLS: invalid type: sequence"),
            "{e}"
        );
    }

    #[test]
    fn merging_flags_into_a_config() {
        let mut s = parse_imageset("imageset.yaml", FULL_V2).unwrap();
        let flag = |r: ReleaseSpec| ImageSet {
            releases: vec![r],
            ..ImageSet::default()
        };
        s.merge(flag(ReleaseSpec::Version {
            version: "4.14.3".into(),
            channel: None,
        }))
        .unwrap();
        assert_eq!(
            s.releases,
            [ReleaseSpec::Version {
                version: "4.14.3".into(),
                channel: Some("stable-4.14".into())
            }]
        );
        assert_eq!(s.arch, "amd64");
        let e = s
            .merge(flag(ReleaseSpec::Image("quay.io/a/b:1".into())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("two release selections given"), "{e}");
    }

    #[test]
    fn plain_lists() {
        let l = parse_list(
            "ai.txt",
            "# seed list\nquay.io/a/b:v1\n\n  registry.example/c@sha256:0101010101010101010101010101010101010101010101010101010101010101  # pinned\n",
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0], "quay.io/a/b:v1");
        let e = parse_list("ai.txt", "quay.io/a/b:v1\nquay.io/A\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ai.txt:2: "), "{e}");
        let e = parse_list("ai.txt", "a b\n").unwrap_err().to_string();
        assert!(e.starts_with("ai.txt:1: one reference per line"), "{e}");
    }
}
