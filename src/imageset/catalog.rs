//! Operator catalogs in the file-based catalog (FBC) format: the `olm.package`, `olm.channel`
//! and `olm.bundle` blobs a catalog image keeps under `/configs` (JSON streams, several objects
//! per file, and multi-document YAML), and the bundles a package/channel selection needs.
//!
//! A selection takes the channel head (the entry no other entry of the channel `replaces` or
//! `skips`), or, given a minimum and/or maximum version, every entry whose bundle version lies in
//! that range (inclusive). A `full` selection ([`Catalog::select_full`]) takes every entry of
//! the channel within the range where one is given, of every channel of the package when it
//! names none. Each selected bundle contributes its bundle image and its `relatedImages`. SQLite-era catalogs (`/database/index.db`) are refused as unsupported.
//!
//! Dependencies ([`Catalog::dependencies`]) are followed as OLM would install them: a bundle's
//! `olm.package.required` (a package within a version range) and `olm.gvk.required` (an API
//! some bundle provides with `olm.gvk`) are met by a bundle already selected when one fits;
//! otherwise by the package's default channel head when it fits, else the newest fitting
//! bundle of that channel (then of the other channels, by name). For a GVK the first package,
//! by name, that can provide it is taken.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::PackageSel;
use super::layers::{Files, Kind, Select};

/// Image label naming the FBC directory.
pub const CONFIGS_LABEL: &str = "operators.operatorframework.io.index.configs.v1";
/// Image label of SQLite-era catalogs.
pub const DATABASE_LABEL: &str = "operators.operatorframework.io.index.database.v1";
/// Where SQLite-era catalogs keep their database.
pub const DATABASE_PATH: &str = "database/index.db";

/// A parsed catalog.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// The catalog image, for messages.
    pub name: String,
    /// Packages by name.
    pub packages: BTreeMap<String, Package>,
}

/// An operator package.
#[derive(Clone, Debug, Default)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Default channel.
    pub default_channel: Option<String>,
    /// Channels by name.
    pub channels: BTreeMap<String, Channel>,
    /// Bundles by name.
    pub bundles: BTreeMap<String, Bundle>,
}

/// A channel: its upgrade-graph entries.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Channel {
    /// Channel name.
    pub name: String,
    /// Entries.
    #[serde(default)]
    pub entries: Vec<Entry>,
}

/// A channel entry.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Entry {
    /// Bundle name.
    pub name: String,
    /// The bundle this one replaces.
    #[serde(default)]
    pub replaces: Option<String>,
    /// Bundles this one skips.
    #[serde(default)]
    pub skips: Vec<String>,
}

/// A bundle.
#[derive(Clone, Debug, Default)]
pub struct Bundle {
    /// Bundle name.
    pub name: String,
    /// Bundle image.
    pub image: String,
    /// Version from its `olm.package` property.
    pub version: Option<semver::Version>,
    /// `relatedImages[].image`.
    pub related_images: Vec<String>,
    /// What it needs from other bundles.
    pub requires: Vec<Requirement>,
    /// APIs it provides (`olm.gvk`).
    pub provides: Vec<Gvk>,
}

/// An API (group, version, kind).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Gvk {
    /// API group.
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

impl std::fmt::Display for Gvk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} {}", self.group, self.version, self.kind)
    }
}

/// A bundle's dependency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `olm.package.required`: a package within a version range.
    Package {
        /// Package name.
        name: String,
        /// The range as written (`>=1.0.0 <2.0.0`, `||` for alternatives).
        range: String,
        /// The range, parsed.
        parsed: VersionRange,
    },
    /// `olm.gvk.required`: an API.
    Gvk(Gvk),
}

/// A version range in OLM's (blang/semver) syntax: alternatives separated by `||`, each a
/// space-separated list of comparisons (`>=1.0.0`, `<2.0.0`, `=1.2.3`, `!=1.2.4`, `1.2.3`) that
/// must all hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRange(Vec<Vec<(Op, semver::Version)>>);

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=`, `==` or none.
    Eq,
    /// `!=`.
    Ne,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
}

impl VersionRange {
    /// Parses a range.
    pub fn parse(s: &str) -> Result<VersionRange> {
        let mut alts = Vec::new();
        for alt in s.split("||") {
            // `>= 1.0.0` is written with a space too: glue operators to their version.
            let mut toks: Vec<String> = Vec::new();
            let mut glue = false;
            for t in alt.split_whitespace() {
                match toks.last_mut() {
                    Some(last) if glue => last.push_str(t),
                    _ => toks.push(t.to_string()),
                }
                glue = t.chars().all(|c| "<>=!".contains(c));
            }
            let mut all = Vec::new();
            for tok in &toks {
                let (op, rest) = [
                    (">=", Op::Ge),
                    ("<=", Op::Le),
                    ("!=", Op::Ne),
                    ("==", Op::Eq),
                    (">", Op::Gt),
                    ("<", Op::Lt),
                    ("=", Op::Eq),
                ]
                .iter()
                .find_map(|(p, op)| tok.strip_prefix(p).map(|r| (*op, r)))
                .unwrap_or((Op::Eq, tok));
                let v = semver::Version::parse(rest.trim_start_matches('v')).map_err(|_| {
                    anyhow!("range `{s}`: `{tok}` is not a comparison with a version X.Y.Z")
                })?;
                all.push((op, v));
            }
            if all.is_empty() {
                bail!("range `{s}`: an alternative without a version");
            }
            alts.push(all);
        }
        Ok(VersionRange(alts))
    }

    /// Whether `v` is in the range.
    pub fn contains(&self, v: &semver::Version) -> bool {
        self.0.iter().any(|all| {
            all.iter().all(|(op, w)| match op {
                Op::Eq => v == w,
                Op::Ne => v != w,
                Op::Gt => v > w,
                Op::Ge => v >= w,
                Op::Lt => v < w,
                Op::Le => v <= w,
            })
        })
    }
}

/// A bundle a selection took.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Selected {
    /// Package.
    pub package: String,
    /// Channel it was selected from.
    pub channel: String,
    /// Bundle name.
    pub bundle: String,
    /// Bundle version, when it has one.
    pub version: Option<String>,
    /// Bundle image.
    pub image: String,
    /// Related images, sorted, duplicates removed (the bundle image excluded).
    pub related_images: Vec<String>,
}

impl Selected {
    /// Bundle `b` of `package`, taken from `channel`.
    pub fn of(package: &str, channel: &str, b: &Bundle) -> Selected {
        Selected {
            package: package.to_string(),
            channel: channel.to_string(),
            bundle: b.name.clone(),
            version: b.version.as_ref().map(|v| v.to_string()),
            image: b.image.clone(),
            related_images: b.related_images.clone(),
        }
    }

    /// The bundle image and its related images.
    pub fn images(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.image).chain(self.related_images.iter())
    }
}

#[derive(Deserialize)]
struct PackageBlob {
    name: String,
    #[serde(rename = "defaultChannel")]
    default_channel: Option<String>,
}

#[derive(Deserialize)]
struct ChannelBlob {
    package: String,
    #[serde(flatten)]
    channel: Channel,
}

#[derive(Deserialize)]
struct BundleBlob {
    name: String,
    package: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    properties: Vec<Property>,
    #[serde(rename = "relatedImages", default)]
    related_images: Vec<RelatedImage>,
}

#[derive(Deserialize)]
struct Property {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: serde_json::Value,
}

#[derive(Deserialize)]
struct RelatedImage {
    #[serde(default)]
    image: String,
}

/// The FBC directory of a catalog image (from its labels, default `configs`).
pub fn configs_dir(labels: &BTreeMap<String, String>) -> String {
    labels
        .get(CONFIGS_LABEL)
        .map(|d| d.trim_matches('/').to_string())
        .filter(|d| !d.is_empty() && !d.split('/').any(|c| c == ".."))
        .unwrap_or_else(|| "configs".to_string())
}

/// The files to read from a catalog image with these labels.
pub fn select(labels: &BTreeMap<String, String>) -> Select {
    Select {
        files: Vec::new(),
        dirs: vec![configs_dir(labels)],
    }
}

/// Parses the catalog read from a catalog image (`labels` from its config).
pub fn from_files(name: &str, files: &Files, labels: &BTreeMap<String, String>) -> Result<Catalog> {
    let dir = configs_dir(labels);
    let has_fbc = files
        .paths
        .iter()
        .any(|(p, k)| *k == Kind::File && p.starts_with(&format!("{dir}/")));
    if !has_fbc && (labels.contains_key(DATABASE_LABEL) || files.paths.contains_key(DATABASE_PATH))
    {
        bail!(
            "catalog {name}: a SQLite catalog (/{DATABASE_PATH}): unsupported, prestage reads \
             file-based catalogs only (OpenShift 4.11 and later publish them)"
        );
    }
    if !has_fbc {
        bail!("catalog {name}: no file-based catalog under /{dir}");
    }
    let mut c = Catalog {
        name: name.to_string(),
        packages: BTreeMap::new(),
    };
    for (path, bytes) in &files.files {
        c.add_file(path, bytes)
            .with_context(|| format!("catalog {name}: {path}"))?;
    }
    Ok(c)
}

impl Catalog {
    /// Parses one FBC file (JSON stream or multi-document YAML, by extension; others ignored).
    pub fn add_file(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        let values: Vec<serde_json::Value> = if path.ends_with(".json") {
            serde_json::Deserializer::from_slice(bytes)
                .into_iter::<serde_json::Value>()
                .enumerate()
                .map(|(i, v)| v.with_context(|| format!("JSON object {}", i + 1)))
                .collect::<Result<_>>()?
        } else if path.ends_with(".yaml") || path.ends_with(".yml") {
            let mut v = Vec::new();
            for (i, doc) in serde_yaml_ng::Deserializer::from_slice(bytes).enumerate() {
                let value = serde_json::Value::deserialize(doc)
                    .with_context(|| format!("YAML document {}", i + 1))?;
                if !value.is_null() {
                    v.push(value);
                }
            }
            v
        } else {
            return Ok(());
        };
        for (i, v) in values.into_iter().enumerate() {
            self.add_blob(v)
                .with_context(|| format!("blob {}", i + 1))?;
        }
        Ok(())
    }

    fn package_mut(&mut self, name: &str) -> &mut Package {
        self.packages
            .entry(name.to_string())
            .or_insert_with(|| Package {
                name: name.to_string(),
                ..Package::default()
            })
    }

    fn add_blob(&mut self, v: serde_json::Value) -> Result<()> {
        let schema = v
            .get("schema")
            .and_then(|s| s.as_str())
            .ok_or_else(|| anyhow!("schema: missing"))?
            .to_string();
        match schema.as_str() {
            "olm.package" => {
                let b: PackageBlob = serde_json::from_value(v).context("olm.package")?;
                self.package_mut(&b.name).default_channel = b.default_channel;
            }
            "olm.channel" => {
                let b: ChannelBlob = serde_json::from_value(v).context("olm.channel")?;
                let ch = b.channel.name.clone();
                if self
                    .package_mut(&b.package)
                    .channels
                    .insert(ch.clone(), b.channel)
                    .is_some()
                {
                    bail!(
                        "olm.channel: channel `{ch}` of package `{}` defined twice",
                        b.package
                    );
                }
            }
            "olm.bundle" => {
                let b: BundleBlob = serde_json::from_value(v).context("olm.bundle")?;
                let mut version = None;
                let mut requires = Vec::new();
                let mut provides = Vec::new();
                for p in &b.properties {
                    let what = || format!("olm.bundle {}: {}", b.name, p.kind);
                    match p.kind.as_str() {
                        "olm.package" => {
                            if let Some(s) = p.value.get("version").and_then(|v| v.as_str()) {
                                version = Some(semver::Version::parse(s).with_context(|| {
                                    format!("olm.bundle {}: version `{s}` is not semver", b.name)
                                })?);
                            }
                        }
                        "olm.gvk" => provides
                            .push(serde_json::from_value(p.value.clone()).with_context(what)?),
                        "olm.gvk.required" => requires.push(Requirement::Gvk(
                            serde_json::from_value(p.value.clone()).with_context(what)?,
                        )),
                        "olm.package.required" => {
                            let field = |k: &str| {
                                p.value
                                    .get(k)
                                    .and_then(|v| v.as_str())
                                    .map(str::to_string)
                                    .ok_or_else(|| anyhow!("{}: no {k}", what()))
                            };
                            let (name, range) = (field("packageName")?, field("versionRange")?);
                            let parsed = VersionRange::parse(&range).with_context(what)?;
                            requires.push(Requirement::Package {
                                name,
                                range,
                                parsed,
                            });
                        }
                        _ => {}
                    }
                }
                let mut related: Vec<String> = b
                    .related_images
                    .into_iter()
                    .map(|r| r.image)
                    .filter(|i| !i.is_empty() && *i != b.image)
                    .collect();
                related.sort();
                related.dedup();
                let name = b.name.clone();
                let bundle = Bundle {
                    name: b.name,
                    image: b.image,
                    version,
                    related_images: related,
                    requires,
                    provides,
                };
                if self
                    .package_mut(&b.package)
                    .bundles
                    .insert(name.clone(), bundle)
                    .is_some()
                {
                    bail!(
                        "olm.bundle: bundle `{name}` of package `{}` defined twice",
                        b.package
                    );
                }
            }
            // olm.deprecations and other schemas do not name images.
            _ => {}
        }
        Ok(())
    }

    fn package(&self, package: &str) -> Result<&Package> {
        self.packages
            .get(package)
            .ok_or_else(|| anyhow!("catalog {}: no package `{package}`", self.name))
    }

    fn channel<'a>(&self, p: &'a Package, channel: &str) -> Result<&'a Channel> {
        p.channels.get(channel).ok_or_else(|| {
            let names: Vec<&str> = p.channels.keys().map(|s| s.as_str()).collect();
            anyhow!(
                "catalog {}: package `{}` has no channel `{channel}` (channels: {})",
                self.name,
                p.name,
                names.join(", ")
            )
        })
    }

    fn bundle<'a>(&self, p: &'a Package, ch: &Channel, name: &str) -> Result<&'a Bundle> {
        p.bundles.get(name).ok_or_else(|| {
            anyhow!(
                "catalog {}: package `{}` channel `{}` names bundle `{name}`, which the catalog \
                 does not define",
                self.name,
                p.name,
                ch.name
            )
        })
    }

    /// The entries of `ch` whose bundle version lies in `lo..=hi` (every entry without bounds).
    fn in_range<'a>(
        &self,
        p: &'a Package,
        ch: &Channel,
        (lo, hi): &Range,
    ) -> Result<Vec<&'a Bundle>> {
        let mut picked = Vec::new();
        for e in &ch.entries {
            let b = self.bundle(p, ch, &e.name)?;
            if lo.is_none() && hi.is_none() {
                picked.push(b);
                continue;
            }
            let Some(v) = &b.version else {
                bail!(
                    "catalog {}: bundle `{}` has no version, so a version range cannot select it",
                    self.name,
                    b.name
                );
            };
            if lo.as_ref().is_none_or(|l| v >= l) && hi.as_ref().is_none_or(|h| v <= h) {
                picked.push(b);
            }
        }
        Ok(picked)
    }

    fn finish(&self, mut out: Vec<Selected>) -> Result<Vec<Selected>> {
        for s in &out {
            if s.image.is_empty() {
                bail!("catalog {}: bundle `{}` has no image", self.name, s.bundle);
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Selects the bundles of `package` in `channel` (its default channel when `None`): the
    /// channel head, or every entry within `min..=max` when either is given.
    pub fn select(
        &self,
        package: &str,
        channel: Option<&str>,
        min: Option<&str>,
        max: Option<&str>,
    ) -> Result<Vec<Selected>> {
        let cat = &self.name;
        let p = self.package(package)?;
        let channel = match channel {
            Some(c) => c,
            None => p.default_channel.as_deref().ok_or_else(|| {
                anyhow!("catalog {cat}: package `{package}` has no default channel: name one")
            })?,
        };
        let ch = self.channel(p, channel)?;
        let range = parse_range(
            &format!("package `{package}` channel `{channel}`"),
            min,
            max,
        )?;
        let picked = if range.0.is_none() && range.1.is_none() {
            let head = channel_head(ch).with_context(|| {
                format!("catalog {cat}: package `{package}` channel `{channel}`")
            })?;
            vec![self.bundle(p, ch, &head)?]
        } else {
            let picked = self.in_range(p, ch, &range)?;
            if picked.is_empty() {
                bail!(
                    "catalog {cat}: package `{package}` channel `{channel}`: no bundle between \
                     {} and {}",
                    min.unwrap_or("any"),
                    max.unwrap_or("any")
                );
            }
            picked
        };
        self.finish(
            picked
                .into_iter()
                .map(|b| Selected::of(package, channel, b))
                .collect(),
        )
    }

    /// Every bundle of `package` in `channel` within `min..=max` where given (oc-mirror's
    /// `full: true`); with no channel, of every channel of the package, a bundle in several
    /// channels taken once, from the default channel or else the first by name.
    pub fn select_full(
        &self,
        package: &str,
        channel: Option<&str>,
        min: Option<&str>,
        max: Option<&str>,
    ) -> Result<Vec<Selected>> {
        let p = self.package(package)?;
        let channels: Vec<&Channel> = match channel {
            Some(c) => vec![self.channel(p, c)?],
            None => {
                let default = p.default_channel.as_ref().and_then(|d| p.channels.get(d));
                default
                    .into_iter()
                    .chain(
                        p.channels
                            .values()
                            .filter(|c| Some(&c.name) != p.default_channel.as_ref()),
                    )
                    .collect()
            }
        };
        let what = match channel {
            Some(c) => format!("package `{package}` channel `{c}`"),
            None => format!("package `{package}`"),
        };
        let range = parse_range(&what, min, max)?;
        let mut taken = BTreeSet::new();
        let mut out = Vec::new();
        for ch in channels {
            for b in self.in_range(p, ch, &range)? {
                if taken.insert(b.name.as_str()) {
                    out.push(Selected::of(package, &ch.name, b));
                }
            }
        }
        if out.is_empty() {
            bail!(
                "catalog {}: {what}: no bundle between {} and {}",
                self.name,
                min.unwrap_or("any"),
                max.unwrap_or("any")
            );
        }
        self.finish(out)
    }

    /// The bundles a package selection names: its bundles by name, and for each channel
    /// selection [`Catalog::select`], or [`Catalog::select_full`] in a `full` catalog.
    pub fn select_package(&self, pkg: &PackageSel, full: bool) -> Result<Vec<Selected>> {
        let mut out = Vec::new();
        if !pkg.bundles.is_empty() {
            out.extend(self.select_bundles(&pkg.name, &pkg.bundles)?);
        }
        for ch in &pkg.channels {
            let (name, min, max) = (
                ch.name.as_deref(),
                ch.min_version.as_deref(),
                ch.max_version.as_deref(),
            );
            out.extend(if full {
                self.select_full(&pkg.name, name, min, max)?
            } else {
                self.select(&pkg.name, name, min, max)?
            });
        }
        Ok(out)
    }
}

/// A version range (inclusive bounds).
type Range = (Option<semver::Version>, Option<semver::Version>);

fn parse_range(what: &str, min: Option<&str>, max: Option<&str>) -> Result<Range> {
    let parse = |field: &str, v: Option<&str>| -> Result<Option<semver::Version>> {
        v.map(|s| {
            semver::Version::parse(s).with_context(|| format!("{what}: {field} `{s}` is not X.Y.Z"))
        })
        .transpose()
    };
    let (lo, hi) = (parse("minVersion", min)?, parse("maxVersion", max)?);
    if let (Some(l), Some(h)) = (&lo, &hi) {
        if l > h {
            bail!("{what}: minVersion {l} is above maxVersion {h}");
        }
    }
    Ok((lo, hi))
}

impl Catalog {
    /// The bundle of `p` that meets `fits`: the default channel's head when it fits, else the
    /// newest fitting entry of the default channel, then of the other channels by name.
    fn pick<'a>(
        &self,
        p: &'a Package,
        fits: &dyn Fn(&Bundle) -> bool,
    ) -> Option<(&'a str, &'a Bundle)> {
        let mut channels: Vec<&Channel> = Vec::new();
        if let Some(c) = p.default_channel.as_ref().and_then(|d| p.channels.get(d)) {
            channels.push(c);
        }
        channels.extend(
            p.channels
                .values()
                .filter(|c| Some(&c.name) != p.default_channel.as_ref()),
        );
        for ch in channels {
            if let Some(b) = channel_head(ch).ok().and_then(|h| p.bundles.get(&h)) {
                if fits(b) {
                    return Some((&ch.name, b));
                }
            }
            let best = ch
                .entries
                .iter()
                .filter_map(|e| p.bundles.get(&e.name))
                .filter(|b| fits(b))
                .max_by(|a, b| a.version.cmp(&b.version).then(a.name.cmp(&b.name)));
            if let Some(b) = best {
                return Some((&ch.name, b));
            }
        }
        None
    }

    /// The bundles `selected` (bundles of this catalog) depend on, directly or through other
    /// dependencies, that are not selected already.
    pub fn dependencies(&self, selected: &[Selected]) -> Result<Vec<Selected>> {
        let cat = &self.name;
        let mut all: Vec<Selected> = selected.to_vec();
        let mut added = Vec::new();
        let mut next = 0;
        while next < all.len() {
            let s = all[next].clone();
            next += 1;
            let Some(b) = self
                .packages
                .get(&s.package)
                .and_then(|p| p.bundles.get(&s.bundle))
            else {
                continue;
            };
            for req in &b.requires {
                let bundle_of = |x: &Selected| {
                    self.packages
                        .get(&x.package)
                        .and_then(|p| p.bundles.get(&x.bundle))
                };
                let found = match req {
                    Requirement::Package {
                        name,
                        range,
                        parsed,
                    } => {
                        let fits =
                            |c: &Bundle| c.version.as_ref().is_some_and(|v| parsed.contains(v));
                        if all
                            .iter()
                            .any(|x| x.package == *name && bundle_of(x).is_some_and(fits))
                        {
                            continue;
                        }
                        let p = self.packages.get(name).ok_or_else(|| {
                            anyhow!(
                                "catalog {cat}: bundle `{}` requires package `{name}` ({range}), which \
                                 the catalog does not have",
                                s.bundle
                            )
                        })?;
                        self.pick(p, &fits).map(|(ch, b)| Selected::of(name, ch, b)).ok_or_else(|| {
                            anyhow!(
                                "catalog {cat}: bundle `{}` requires package `{name}` ({range}): no \
                                 bundle of it is in that range",
                                s.bundle
                            )
                        })?
                    }
                    Requirement::Gvk(g) => {
                        let fits = |c: &Bundle| c.provides.contains(g);
                        if all.iter().any(|x| bundle_of(x).is_some_and(fits)) {
                            continue;
                        }
                        self.packages
                            .values()
                            .find_map(|p| {
                                self.pick(p, &fits)
                                    .map(|(ch, b)| Selected::of(&p.name, ch, b))
                            })
                            .ok_or_else(|| {
                                anyhow!(
                                    "catalog {cat}: bundle `{}` requires API {g}, which no \
                                     bundle of the catalog provides",
                                    s.bundle
                                )
                            })?
                    }
                };
                if found.image.is_empty() {
                    bail!("catalog {cat}: bundle `{}` has no image", found.bundle);
                }
                all.push(found.clone());
                added.push(found);
            }
        }
        added.sort();
        added.dedup();
        Ok(added)
    }

    /// Selects bundles of `package` by name (oc-mirror v2alpha1 `bundles`); each is reported in
    /// the first channel, by name, that lists it.
    pub fn select_bundles(&self, package: &str, names: &[String]) -> Result<Vec<Selected>> {
        let cat = &self.name;
        let Some(p) = self.packages.get(package) else {
            bail!("catalog {cat}: no package `{package}`");
        };
        let mut out = Vec::new();
        for n in names {
            let Some(b) = p.bundles.get(n) else {
                bail!("catalog {cat}: package `{package}` has no bundle `{n}`");
            };
            if b.image.is_empty() {
                bail!("catalog {cat}: bundle `{n}` has no image");
            }
            let channel = p
                .channels
                .values()
                .find(|c| c.entries.iter().any(|e| e.name == *n))
                .map_or("", |c| c.name.as_str());
            out.push(Selected::of(package, channel, b));
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// The entry of a channel that no other entry replaces or skips.
pub fn channel_head(ch: &Channel) -> Result<String> {
    if ch.entries.is_empty() {
        bail!("no entries");
    }
    let mut superseded = BTreeSet::new();
    for e in &ch.entries {
        if let Some(r) = &e.replaces {
            superseded.insert(r.as_str());
        }
        superseded.extend(e.skips.iter().map(|s| s.as_str()));
    }
    let heads: BTreeSet<&str> = ch
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| !superseded.contains(n))
        .collect();
    match heads.len() {
        1 => Ok(heads.into_iter().next().unwrap_or_default().to_string()),
        0 => bail!("no channel head: every entry is replaced or skipped by another (a cycle)"),
        _ => bail!(
            "several channel heads ({}): the upgrade graph is ambiguous",
            heads.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::layers::{self, tests::*, Limits};
    use super::*;

    pub const CAT: &str = "registry.example/redhat/operator-index:v4.14";

    pub fn img(name: &str, n: u8) -> String {
        format!(
            "registry.example/{name}@sha256:{}",
            format!("{n:02x}").repeat(32)
        )
    }

    /// The `foo` package as a JSON stream: channel `stable` (1.0.0 <- 1.1.0 <- 1.2.0, 1.2.0 also
    /// skipping 1.1.1) and `fast` (head 2.0.0), default `stable`.
    pub fn foo_json() -> String {
        let bundle = |v: &str, n: u8, rel: &[(&str, String)]| {
            let rel: Vec<_> = rel
                .iter()
                .map(|(name, image)| serde_json::json!({"name": name, "image": image}))
                .collect();
            serde_json::json!({
                "schema": "olm.bundle", "name": format!("foo.v{v}"), "package": "foo",
                "image": img("foo/bundle", n),
                "properties": [{"type": "olm.package", "value": {"packageName": "foo", "version": v}},
                               {"type": "olm.gvk", "value": {"group": "x", "kind": "Y", "version": "v1"}}],
                "relatedImages": rel
            })
            .to_string()
        };
        [
            serde_json::json!({"schema": "olm.package", "name": "foo", "defaultChannel": "stable"}).to_string(),
            serde_json::json!({"schema": "olm.channel", "name": "stable", "package": "foo", "entries": [
                {"name": "foo.v1.0.0"},
                {"name": "foo.v1.1.0", "replaces": "foo.v1.0.0"},
                {"name": "foo.v1.1.1", "replaces": "foo.v1.0.0"},
                {"name": "foo.v1.2.0", "replaces": "foo.v1.1.0", "skips": ["foo.v1.1.1"]}
            ]}).to_string(),
            serde_json::json!({"schema": "olm.channel", "name": "fast", "package": "foo", "entries": [
                {"name": "foo.v1.2.0"},
                {"name": "foo.v2.0.0", "replaces": "foo.v1.2.0", "skipRange": ">=1.0.0 <2.0.0"}
            ]}).to_string(),
            bundle("1.0.0", 10, &[("op", img("foo/op", 11))]),
            bundle("1.1.0", 12, &[("op", img("foo/op", 13))]),
            bundle("1.1.1", 14, &[("op", img("foo/op", 15))]),
            bundle("1.2.0", 16, &[("op", img("foo/op", 17)), ("proxy", img("foo/proxy", 18)), ("bundle", img("foo/bundle", 16))]),
            bundle("2.0.0", 20, &[("op", img("foo/op", 21))]),
            serde_json::json!({"schema": "olm.deprecations", "package": "foo", "entries": []}).to_string(),
        ]
        .join("\n")
    }

    /// The `bar` package as multi-document YAML: no default channel.
    pub fn bar_yaml() -> String {
        format!(
            "---\nschema: olm.package\nname: bar\n---\nschema: olm.channel\nname: alpha\n\
             package: bar\nentries:\n  - name: bar.v0.1.0\n---\nschema: olm.bundle\n\
             name: bar.v0.1.0\npackage: bar\nimage: {}\nproperties:\n  - type: olm.package\n    \
             value: {{packageName: bar, version: 0.1.0}}\nrelatedImages:\n  - name: x\n    \
             image: {}\n",
            img("bar/bundle", 30),
            img("bar/op", 31)
        )
    }

    pub fn catalog_layer() -> Vec<u8> {
        let foo_text = foo_json();
        let bar_text = bar_yaml();
        gz_of(&[
            T::F("bin/opm", b"elf"),
            T::D("configs/"),
            T::F("configs/foo/catalog.json", foo_text.as_bytes()),
            T::F("configs/bar/index.yaml", bar_text.as_bytes()),
            T::F("configs/bar/README.md", b"ignored"),
        ])
    }

    pub fn catalog() -> Catalog {
        let labels = BTreeMap::new();
        let l = catalog_layer();
        let files =
            layers::read_files_from(&[(GZ, &l)], &select(&labels), &Limits::default()).unwrap();
        from_files(CAT, &files, &labels).unwrap()
    }

    #[test]
    fn version_ranges_in_olm_syntax() {
        let v = |s: &str| semver::Version::parse(s).unwrap();
        let r = VersionRange::parse(">=1.0.0 <2.0.0 || =3.1.0").unwrap();
        assert!(r.contains(&v("1.0.0")) && r.contains(&v("1.9.9")) && r.contains(&v("3.1.0")));
        assert!(!r.contains(&v("2.0.0")) && !r.contains(&v("0.9.0")) && !r.contains(&v("3.1.1")));
        let r = VersionRange::parse(">= 4.6.0  != 4.7.0").unwrap();
        assert!(r.contains(&v("4.6.0")) && !r.contains(&v("4.7.0")) && r.contains(&v("5.0.0")));
        assert!(VersionRange::parse("v1.2.3").unwrap().contains(&v("1.2.3")));
        for bad in ["", ">=", "1.x", ">=1.0.0 ||", "~1.2.3"] {
            assert!(VersionRange::parse(bad).is_err(), "{bad}");
        }
    }

    /// `app` 1.0.0 requires package `lib` >=1.1.0 <2.0.0 and the API `db.x/v1 Store`; `lib`'s
    /// default channel `stable` has head 2.0.0 and 1.0.0, 1.1.0, 1.2.0; `store` provides the API
    /// and requires `lib` >=1.0.0; `other` provides it too.
    fn dependency_catalog() -> Catalog {
        let bundle = |pkg: &str, v: &str, n: u8, props: serde_json::Value| {
            let mut p = vec![
                serde_json::json!({"type": "olm.package", "value": {"packageName": pkg, "version": v}}),
            ];
            p.extend(props.as_array().unwrap().iter().cloned());
            serde_json::json!({"schema": "olm.bundle", "name": format!("{pkg}.v{v}"), "package": pkg,
                "image": img(&format!("{pkg}/bundle"), n), "properties": p,
                "relatedImages": [{"name": "op", "image": img(&format!("{pkg}/op"), n)}]})
        };
        let gvk = serde_json::json!({"group": "db.x", "version": "v1", "kind": "Store"});
        let chain = |pkg: &str, versions: &[&str]| {
            let mut prev: Option<String> = None;
            let entries: Vec<serde_json::Value> = versions
                .iter()
                .map(|v| {
                    let name = format!("{pkg}.v{v}");
                    let e = serde_json::json!({"name": name, "replaces": prev});
                    prev = Some(name);
                    e
                })
                .collect();
            serde_json::json!({"schema": "olm.channel", "name": "stable", "package": pkg, "entries": entries})
        };
        let blobs = [
            serde_json::json!({"schema": "olm.package", "name": "app", "defaultChannel": "stable"}),
            chain("app", &["1.0.0"]),
            bundle(
                "app",
                "1.0.0",
                1,
                serde_json::json!([
                {"type": "olm.package.required", "value": {"packageName": "lib", "versionRange": ">=1.1.0 <2.0.0"}},
                {"type": "olm.gvk.required", "value": gvk}]),
            ),
            serde_json::json!({"schema": "olm.package", "name": "lib", "defaultChannel": "stable"}),
            chain("lib", &["1.0.0", "1.1.0", "1.2.0", "2.0.0"]),
            bundle("lib", "1.0.0", 10, serde_json::json!([])),
            bundle("lib", "1.1.0", 11, serde_json::json!([])),
            bundle("lib", "1.2.0", 12, serde_json::json!([])),
            bundle("lib", "2.0.0", 20, serde_json::json!([])),
            serde_json::json!({"schema": "olm.package", "name": "store", "defaultChannel": "stable"}),
            chain("store", &["0.5.0"]),
            bundle(
                "store",
                "0.5.0",
                30,
                serde_json::json!([
                {"type": "olm.gvk", "value": gvk},
                {"type": "olm.package.required", "value": {"packageName": "lib", "versionRange": ">=1.0.0"}}]),
            ),
            serde_json::json!({"schema": "olm.package", "name": "zother", "defaultChannel": "stable"}),
            chain("zother", &["9.0.0"]),
            bundle(
                "zother",
                "9.0.0",
                40,
                serde_json::json!([{"type": "olm.gvk", "value": gvk}]),
            ),
        ];
        let text: Vec<String> = blobs.iter().map(|b| b.to_string()).collect();
        let mut c = Catalog {
            name: CAT.into(),
            ..Catalog::default()
        };
        c.add_file("configs/all.json", text.join("\n").as_bytes())
            .unwrap();
        c
    }

    #[test]
    fn dependencies_are_followed() {
        let c = dependency_catalog();
        let app = c.select("app", None, None, None).unwrap();
        let deps = c.dependencies(&app).unwrap();
        let got: Vec<(&str, &str)> = deps
            .iter()
            .map(|s| (s.bundle.as_str(), s.channel.as_str()))
            .collect();
        // lib: the head 2.0.0 is out of range, so the newest in range; the API from `store`
        // (first by name), whose own need for lib >=1.0.0 lib 1.2.0 already meets.
        assert_eq!(got, [("lib.v1.2.0", "stable"), ("store.v0.5.0", "stable")]);
        assert_eq!(deps[0].image, img("lib/bundle", 12));
        assert_eq!(deps[0].related_images, [img("lib/op", 12)]);
        // A selection that already meets the needs adds nothing.
        let mut both = app.clone();
        both.extend(c.select("lib", None, Some("1.1.0"), Some("1.1.0")).unwrap());
        both.extend(c.select("zother", None, None, None).unwrap());
        assert!(c.dependencies(&both).unwrap().is_empty());

        // Unmet needs are clear errors.
        let mut c2 = dependency_catalog();
        c2.packages.remove("store");
        c2.packages.remove("zother");
        let e = c2.dependencies(&app).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("catalog {CAT}: bundle `app.v1.0.0` requires API db.x/v1 Store, which no bundle of the catalog provides")
        );
        let mut c3 = dependency_catalog();
        c3.packages
            .get_mut("lib")
            .unwrap()
            .bundles
            .retain(|n, _| n != "lib.v1.1.0" && n != "lib.v1.2.0");
        let e = c3.dependencies(&app).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("catalog {CAT}: bundle `app.v1.0.0` requires package `lib` (>=1.1.0 <2.0.0): no bundle of it is in that range")
        );
    }

    #[test]
    fn channel_heads_and_related_images() {
        let c = catalog();
        assert_eq!(c.packages.len(), 2);
        let s = c.select("foo", None, None, None).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].bundle, "foo.v1.2.0");
        assert_eq!(s[0].channel, "stable");
        assert_eq!(
            s[0].images().cloned().collect::<Vec<_>>(),
            vec![
                img("foo/bundle", 16),
                img("foo/op", 17),
                img("foo/proxy", 18)
            ]
        );
        let s = c.select("foo", Some("fast"), None, None).unwrap();
        assert_eq!(s[0].bundle, "foo.v2.0.0");
        let s = c.select("bar", Some("alpha"), None, None).unwrap();
        assert_eq!(s[0].related_images, vec![img("bar/op", 31)]);
    }

    #[test]
    fn version_ranges() {
        let c = catalog();
        let names = |s: Vec<Selected>| s.into_iter().map(|b| b.bundle).collect::<Vec<_>>();
        assert_eq!(
            names(
                c.select("foo", Some("stable"), Some("1.1.0"), Some("1.1.1"))
                    .unwrap()
            ),
            vec!["foo.v1.1.0", "foo.v1.1.1"]
        );
        assert_eq!(
            names(c.select("foo", None, Some("1.1.1"), None).unwrap()),
            vec!["foo.v1.1.1", "foo.v1.2.0"]
        );
        assert_eq!(
            names(c.select("foo", None, None, Some("1.0.0")).unwrap()),
            vec!["foo.v1.0.0"]
        );
        let e = c
            .select("foo", None, Some("3.0.0"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no bundle between 3.0.0 and any"), "{e}");
        assert!(c.select("foo", None, Some("1.2"), None).is_err());
        assert!(c.select("foo", None, Some("1.2.0"), Some("1.0.0")).is_err());
    }

    #[test]
    fn full_channels() {
        let c = catalog();
        let got = |s: Vec<Selected>| {
            s.into_iter()
                .map(|b| format!("{}@{}", b.bundle, b.channel))
                .collect::<Vec<_>>()
        };
        // Every entry of the channel, not only its head.
        assert_eq!(
            got(c.select_full("foo", Some("stable"), None, None).unwrap()),
            [
                "foo.v1.0.0@stable",
                "foo.v1.1.0@stable",
                "foo.v1.1.1@stable",
                "foo.v1.2.0@stable"
            ]
        );
        // No channel named: every channel, a bundle in two taken from the default one.
        assert_eq!(
            got(c.select_full("foo", None, None, None).unwrap()),
            [
                "foo.v2.0.0@fast",
                "foo.v1.0.0@stable",
                "foo.v1.1.0@stable",
                "foo.v1.1.1@stable",
                "foo.v1.2.0@stable"
            ]
        );
        // Within the range where one is given.
        assert_eq!(
            got(c.select_full("foo", None, Some("1.1.1"), None).unwrap()),
            ["foo.v2.0.0@fast", "foo.v1.1.1@stable", "foo.v1.2.0@stable"]
        );
        assert_eq!(
            got(c
                .select_full("foo", Some("fast"), None, Some("1.2.0"))
                .unwrap()),
            ["foo.v1.2.0@fast"]
        );
        // A package without a default channel is fine when every channel is taken.
        assert_eq!(
            got(c.select_full("bar", None, None, None).unwrap()),
            ["bar.v0.1.0@alpha"]
        );
        let e = c
            .select_full("foo", None, Some("3.0.0"), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("catalog {CAT}: package `foo`: no bundle between 3.0.0 and any")
        );
        let e = c
            .select_full("foo", Some("beta"), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no channel `beta`"), "{e}");

        // Through a package selection: the channel head, or every entry when full.
        let sel = PackageSel {
            name: "foo".into(),
            channels: vec![super::super::config::ChannelSel {
                name: Some("stable".into()),
                min_version: None,
                max_version: None,
            }],
            bundles: Vec::new(),
        };
        assert_eq!(
            got(c.select_package(&sel, false).unwrap()),
            ["foo.v1.2.0@stable"]
        );
        assert_eq!(c.select_package(&sel, true).unwrap().len(), 4);
    }

    #[test]
    fn bundles_by_name() {
        let c = catalog();
        let s = c
            .select_bundles("foo", &["foo.v2.0.0".into(), "foo.v1.0.0".into()])
            .unwrap();
        let got: Vec<(&str, &str)> = s
            .iter()
            .map(|b| (b.bundle.as_str(), b.channel.as_str()))
            .collect();
        assert_eq!(got, vec![("foo.v2.0.0", "fast"), ("foo.v1.0.0", "stable")]);
        let e = c
            .select_bundles("foo", &["foo.v9".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("catalog {CAT}: package `foo` has no bundle `foo.v9`")
        );
    }

    #[test]
    fn clear_errors() {
        let c = catalog();
        let e = c.select("nope", None, None, None).unwrap_err().to_string();
        assert_eq!(e, format!("catalog {CAT}: no package `nope`"));
        let e = c
            .select("foo", Some("beta"), None, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("catalog {CAT}: package `foo` has no channel `beta` (channels: fast, stable)")
        );
        let e = c.select("bar", None, None, None).unwrap_err().to_string();
        assert!(e.contains("package `bar` has no default channel"), "{e}");

        let two_heads = Channel {
            name: "x".into(),
            entries: vec![
                Entry {
                    name: "a".into(),
                    ..Entry::default()
                },
                Entry {
                    name: "b".into(),
                    ..Entry::default()
                },
            ],
        };
        assert!(channel_head(&two_heads)
            .unwrap_err()
            .to_string()
            .contains("several channel heads (a, b)"));
    }

    #[test]
    fn sqlite_and_malformed_catalogs() {
        let l = gz_of(&[T::F("database/index.db", b"SQLite format 3\0")]);
        let labels = BTreeMap::new();
        let files =
            layers::read_files_from(&[(GZ, &l)], &select(&labels), &Limits::default()).unwrap();
        let e = from_files(CAT, &files, &labels).unwrap_err().to_string();
        assert!(
            e.contains("SQLite catalog") && e.contains("unsupported"),
            "{e}"
        );
        let mut labels = BTreeMap::new();
        labels.insert(DATABASE_LABEL.to_string(), "/database/index.db".to_string());
        let l = gz_of(&[T::F("etc/x", b"")]);
        let files =
            layers::read_files_from(&[(GZ, &l)], &select(&labels), &Limits::default()).unwrap();
        assert!(from_files(CAT, &files, &labels)
            .unwrap_err()
            .to_string()
            .contains("unsupported"));
        let e = from_files(CAT, &files, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no file-based catalog under /configs"), "{e}");

        let mut labels = BTreeMap::new();
        labels.insert(CONFIGS_LABEL.to_string(), "/fbc".to_string());
        let l = gz_of(&[T::F(
            "fbc/p/c.json",
            b"{\"schema\":\"olm.package\",\"name\":\"p\"} {",
        )]);
        let files =
            layers::read_files_from(&[(GZ, &l)], &select(&labels), &Limits::default()).unwrap();
        let e = format!("{:#}", from_files(CAT, &files, &labels).unwrap_err());
        assert!(e.contains("fbc/p/c.json: JSON object 2"), "{e}");
        let l = gz_of(&[T::F("fbc/p/c.yaml", b"schema: olm.bundle\nname: [\n")]);
        let files =
            layers::read_files_from(&[(GZ, &l)], &select(&labels), &Limits::default()).unwrap();
        let e = format!("{:#}", from_files(CAT, &files, &labels).unwrap_err());
        assert!(e.contains("fbc/p/c.yaml: YAML document 1"), "{e}");
    }
}
