//! Resolving an image set: from what the user asked for (a release, an ImageSetConfiguration,
//! assisted-installer images, operators, additional images, filters) to the pinned
//! [`ImageLists`] the node loads. Resolves release channels through the update graph (OCP's,
//! OKD's, or the graph data an oc-mirror archive carries), pulls the release and catalog images
//! into the store through the fetch stage, reads their layers from the store (refusing a release
//! built for another architecture than the one asked for), selects operator bundles, and
//! resolves tagged references to digests through the fetch stage (fully pulled, or manifests
//! only when a later stage plans before downloading). From an oc-mirror archive set with
//! neither `--config` nor `--release`, the ImageSetConfiguration it carries is the image set.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

use super::catalog::{self, Selected};
use super::config::{self, ImageSet, ReleaseSpec};
use super::filter::Filter;
use super::graph::{self, GraphSource, ReleaseKind};
use super::layers::{self, Limits};
use super::lists::{self, AssistedImages, DiscoveryRule, ImageLists, Inputs, Resolved};
use super::release::{self, Release};
use crate::fetch::archive::ArchiveSet;
use crate::fetch::connect::Connection;
use crate::fetch::digest::Digest;
use crate::fetch::progress::Progress;
use crate::fetch::pull::{self, Request as PullRequest};
use crate::fetch::reference::{canonical_key, ImageRef};
use crate::fetch::source::Located;
use crate::fetch::store::{Record, Store, StoredImage};

/// Which release components the discovery list takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Discovery {
    /// The rule shipped with prestage (`data/discovery-components.txt`).
    #[default]
    Builtin,
    /// A rule file, one component name per line.
    File(PathBuf),
    /// Component names.
    Names(Vec<String>),
}

/// What to resolve (the `images` / `plan` / `build` options that choose images).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// oc-mirror ImageSetConfiguration.
    pub config: Option<PathBuf>,
    /// Release: a reference, `oci:DIR[:REF]`, or a version X.Y.Z.
    pub release: Option<String>,
    /// Release architecture (default: the config's, else amd64).
    pub arch: Option<String>,
    /// Repository of release images (versions, and releases read from OCI layouts).
    pub release_base: String,
    /// Update graph URL or file (default: api.openshift.com).
    pub update_graph: Option<String>,
    /// Assisted-installer agent image.
    pub agent_image: Option<String>,
    /// Assisted-installer installer image.
    pub installer_image: Option<String>,
    /// Assisted-installer controller image.
    pub controller_image: Option<String>,
    /// List file of assisted-installer images.
    pub assisted_images: Option<PathBuf>,
    /// List file of additional images.
    pub additional_images: Option<PathBuf>,
    /// Discovery rule.
    pub discovery: Discovery,
    /// Filter file.
    pub filter: Option<PathBuf>,
    /// How images given by tag are resolved.
    pub tagged: Tagged,
    /// No progress output.
    pub quiet: bool,
}

/// How images given by tag are resolved to digests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tagged {
    /// Pulled whole (their blobs land in the store).
    #[default]
    Pull,
    /// Only their manifests are fetched (a plan runs before any blob is downloaded).
    ManifestsOnly,
}

/// A resolved image set.
pub struct Resolution {
    /// The effective image set (channels resolved to versions).
    pub set: ImageSet,
    /// The lists.
    pub lists: ImageLists,
    /// The effective `imageset.yaml`.
    pub imageset_yaml: String,
    /// Images whose bytes come from somewhere other than their name (a release read from an OCI
    /// layout, named `BASE@DIGEST` on the node): pinned source → the reference it was read from.
    pub origins: BTreeMap<String, String>,
    /// The store it was resolved with.
    pub store: Store,
    /// The connection it was resolved with.
    pub conn: Connection,
}

/// Pulls the images resolution reads (releases, catalogs): blobs a local source holds are read
/// in place, not copied into the store (their digests are checked as they are read).
struct Puller {
    store: Store,
    conn: Connection,
    quiet: bool,
    arch: String,
    /// What the pulls resolved, by key, and where the blobs read in place lie.
    pulled: std::cell::RefCell<(BTreeMap<String, Record>, BTreeMap<Digest, Located>)>,
}

impl Puller {
    fn pull(&self, refs: &[String]) -> Result<()> {
        if refs.is_empty() {
            return Ok(());
        }
        let requests = refs
            .iter()
            .map(|r| PullRequest::parse(r).map_err(|e| anyhow!("{r}: {e:#}")))
            .collect::<Result<Vec<_>>>()?;
        let mut opts = self.conn.options(requests, &self.arch, false);
        opts.in_place = true;
        let progress = Progress::new(self.quiet);
        let s = pull::pull(&self.store, &opts, &progress);
        progress.finish();
        let s = s?;
        let mut pulled = self.pulled.borrow_mut();
        for r in s.records {
            pulled.0.insert(r.reference.clone(), r);
        }
        pulled.1.extend(s.located);
        Ok(())
    }

    /// Fetches only the manifests of `refs`; returns each one's top-level digest by key.
    fn manifests(&self, refs: &[String]) -> Result<BTreeMap<String, crate::fetch::digest::Digest>> {
        if refs.is_empty() {
            return Ok(BTreeMap::new());
        }
        let requests = refs
            .iter()
            .map(|r| PullRequest::parse(r).map_err(|e| anyhow!("{r}: {e:#}")))
            .collect::<Result<Vec<_>>>()?;
        let opts = self.conn.options(requests, &self.arch, false);
        let records = pull::resolve_manifests(&self.store, &opts)?;
        Ok(records
            .into_iter()
            .map(|r| (r.reference, r.digest))
            .collect())
    }

    fn image(&self, reference: &str) -> Result<StoredImage> {
        let key = canonical_key(reference);
        let pulled = self.pulled.borrow();
        if let Some(r) = pulled.0.get(&key) {
            return self.store.image_of(r.clone(), &pulled.1);
        }
        self.store
            .image(&key)?
            .ok_or_else(|| anyhow!("{reference}: not in the store after pulling it"))
    }

    fn layers(&self, reference: &str) -> Result<(StoredImage, layers::ImageBlobs)> {
        let img = self.image(reference)?;
        let Some(inst) = img.instances.first() else {
            bail!(
                "{reference}: no image manifest for {} in the store",
                self.arch
            );
        };
        let blobs = layers::image_blobs(inst).with_context(|| reference.to_string())?;
        Ok((img, blobs))
    }
}

/// The releases of an image set, channels resolved through the update graph: each as a spec
/// without channel ranges (for the effective `imageset.yaml`) and the reference to pull.
/// `http` gives the HTTP client for the update service's host.
fn resolve_releases(
    set: &ImageSet,
    a: &Request,
    archives: Option<&ArchiveSet>,
    http: &dyn Fn(&str) -> Result<crate::fetch::http::HttpClient>,
) -> Result<Vec<(ReleaseSpec, String)>> {
    let base = Some(a.release_base.as_str()).filter(|b| !b.is_empty());
    let mut out: Vec<(ReleaseSpec, String)> = Vec::new();
    for spec in &set.releases {
        match spec {
            ReleaseSpec::Image(r) => {
                if r.starts_with("oci:") {
                    // Checked now: it names the release on the node once it is read.
                    release::base_repository(&a.release_base)
                        .with_context(|| format!("--release-base for {r}"))?;
                }
                out.push((spec.clone(), r.clone()))
            }
            ReleaseSpec::Version { version, .. } => out.push((
                spec.clone(),
                release::release_ref_for_version(version, &set.arch, base)?,
            )),
            ReleaseSpec::Channel(range) => {
                let g = match (&a.update_graph, archives) {
                    // Air-gapped: the service's answer oc-mirror saved on the connected side.
                    (None, Some(set_)) => {
                        let (bytes, what) = set_
                            .graph_data(&set.arch, &range.name)
                            .with_context(|| format!("release channel {}", range.name))?;
                        graph::parse(&what, &bytes, &range.name)?
                    }
                    (given, _) => GraphSource::parse(
                        given
                            .as_deref()
                            .unwrap_or(range.kind.default_update_graph()),
                    )
                    .load(&range.name, &set.arch, http)
                    .with_context(|| format!("release channel {}", range.name))?,
                };
                let chosen = g.select(range)?;
                if !a.quiet {
                    let versions: Vec<String> =
                        chosen.iter().map(|n| n.version.to_string()).collect();
                    eprintln!(
                        "channel {}: {} release{} ({})",
                        range.name,
                        chosen.len(),
                        if chosen.len() == 1 { "" } else { "s" },
                        versions.join(", ")
                    );
                }
                for n in chosen {
                    let v = n.version.to_string();
                    let spec = match range.kind {
                        ReleaseKind::Ocp => ReleaseSpec::Version {
                            version: v,
                            channel: Some(range.name.clone()),
                        },
                        // OKD versions name no tag: the effective file keeps the channel,
                        // pinned to the version.
                        ReleaseKind::Okd => ReleaseSpec::Channel(graph::ChannelRange {
                            min_version: Some(v.clone()),
                            max_version: Some(v),
                            full: false,
                            shortest_path: false,
                            ..range.clone()
                        }),
                    };
                    out.push((spec, n.payload.clone()));
                }
            }
        }
    }
    // The same release from two entries is staged once.
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|(_, r)| seen.insert(canonical_key(r)));
    Ok(out)
}

/// The image set from the config file (else, with neither `--config` nor `--release`, the one
/// an oc-mirror archive set carries) and the flags.
fn image_set(a: &Request, archives: Option<&ArchiveSet>) -> Result<ImageSet> {
    let carried = match archives {
        Some(set) if a.config.is_none() && a.release.is_none() => set.imageset_config()?,
        _ => None,
    };
    let mut set = match (&a.config, carried) {
        (Some(p), _) => config::load_imageset(p)?,
        (None, Some((text, what))) => {
            if !a.quiet {
                eprintln!("image set: the ImageSetConfiguration of the archive ({what})");
            }
            config::parse_imageset(&what, &text)?
        }
        (None, None) => ImageSet {
            arch: "amd64".to_string(),
            ..ImageSet::default()
        },
    };
    if let Some(r) = &a.release {
        let spec = if let Some(dir) = r.strip_prefix("oci:") {
            if dir.is_empty() {
                bail!("--release oci:: needs a directory");
            }
            ReleaseSpec::Image(r.clone())
        } else if !r.contains('/') {
            semver::Version::parse(r).with_context(|| {
                format!("--release {r}: neither X.Y.Z nor an image reference (HOST/PATH:TAG)")
            })?;
            if release::is_okd_version(r) {
                bail!(
                    "--release {r}: an OKD version names no release tag (OKD releases are not \
                     published as BASE:VERSION-ARCH); give the release image (e.g. \
                     {}:{r}) or a `type: okd` channel in --config",
                    release::OKD_SCOS_RELEASE
                );
            }
            ReleaseSpec::Version {
                version: r.clone(),
                channel: None,
            }
        } else {
            let parsed = ImageRef::parse(r.strip_prefix("docker://").unwrap_or(r))
                .with_context(|| format!("--release {r}: not an image reference"))?;
            ReleaseSpec::Image(parsed.to_string())
        };
        set.merge(ImageSet {
            releases: vec![spec],
            ..ImageSet::default()
        })
        .context("--release and the config")?;
    }
    if let Some(arch) = &a.arch {
        release::release_arch(arch).context("--arch")?;
        set.arch = arch.clone();
    }
    if let Some(p) = &a.additional_images {
        set.additional_images.extend(config::load_list(p)?);
    }
    Ok(set)
}

fn assisted(a: &Request) -> Result<AssistedImages> {
    let mut ai = match &a.assisted_images {
        Some(p) => {
            let refs = config::load_list(p)?;
            AssistedImages::from_list(&p.display().to_string(), &refs)?
        }
        None => AssistedImages::default(),
    };
    for (flag, given, slot) in [
        ("--agent-image", &a.agent_image, &mut ai.agent),
        ("--installer-image", &a.installer_image, &mut ai.installer),
        (
            "--controller-image",
            &a.controller_image,
            &mut ai.controller,
        ),
    ] {
        if let Some(r) = given {
            let parsed = ImageRef::parse(r.strip_prefix("docker://").unwrap_or(r))
                .with_context(|| format!("{flag} {r}"))?;
            *slot = Some(parsed.to_string());
        }
    }
    Ok(ai)
}

fn select_operators(p: &Puller, set: &ImageSet) -> Result<Vec<Selected>> {
    let mut out = Vec::new();
    for o in &set.operators {
        let (img, blobs) = p.layers(&o.catalog)?;
        let labels = match &blobs.config {
            Some(c) => {
                let bytes = c.read_all(layers::MAX_FILE)?;
                layers::config_labels(&bytes)
                    .with_context(|| format!("catalog {}: image config", o.catalog))?
            }
            None => BTreeMap::new(),
        };
        let files =
            layers::read_files(&blobs.layers, &catalog::select(&labels), &Limits::default())
                .with_context(|| format!("catalog {} ({})", o.catalog, img.digest))?;
        let cat = catalog::from_files(&o.catalog, &files, &labels)?;
        let mut picked = Vec::new();
        for pkg in &o.packages {
            picked.extend(cat.select_package(pkg, o.full)?);
        }
        if !o.skip_dependencies {
            let deps = cat.dependencies(&picked)?;
            picked.extend(deps);
        }
        out.extend(picked);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Resolves an image set: pulls the releases and catalogs (and, per `a.tagged`, the images given
/// by tag) through the fetch stage, reads them, and builds the lists.
pub fn resolve(a: &Request, store: Store, conn: Connection) -> Result<Resolution> {
    let archives = conn.archives().cloned();
    let set = image_set(a, archives.as_deref())?;
    let assisted = assisted(a)?;
    let rule = match &a.discovery {
        Discovery::Builtin => DiscoveryRule::builtin()?,
        Discovery::File(p) => DiscoveryRule::load(p)?,
        Discovery::Names(names) => {
            DiscoveryRule::parse("--discovery-component", &names.join("\n"))?
        }
    };
    let filter = match &a.filter {
        Some(p) => Filter::load(p)?,
        None => Filter::default(),
    };
    if set.releases.is_empty()
        && set.operators.is_empty()
        && set.additional_images.is_empty()
        && assisted == AssistedImages::default()
    {
        bail!("no images: give --release, --config or image lists");
    }
    let puller = Puller {
        store,
        conn,
        quiet: a.quiet,
        pulled: Default::default(),
        // The payload of a multi-arch release lists the same components in every instance.
        arch: if set.arch == "multi" {
            "amd64".to_string()
        } else {
            set.arch.clone()
        },
    };
    let chosen = resolve_releases(&set, a, archives.as_deref(), &|host| puller.conn.http(host))?;
    // The releases and the catalogs are read, so they are pulled first.
    let mut first: Vec<String> = chosen.iter().map(|(_, r)| r.clone()).collect();
    first.extend(set.operators.iter().map(|o| o.catalog.clone()));
    first.sort();
    first.dedup();
    puller.pull(&first)?;
    let mut releases: Vec<Release> = Vec::new();
    let mut origins = BTreeMap::new();
    let mut specs = Vec::new();
    let mut digests = std::collections::BTreeSet::new();
    for (spec, r) in chosen {
        let (img, blobs) = puller.layers(&r)?;
        // One release named twice (a pinned version and a channel's payload) is read once.
        if !digests.insert(img.digest.clone()) {
            continue;
        }
        specs.push(spec);
        let mut rel = release::read(&r, &blobs.layers)?;
        let config_arch = match &blobs.config {
            Some(c) => {
                let bytes = c.read_all(layers::MAX_FILE)?;
                layers::config_platform(&bytes)
                    .with_context(|| format!("release image {r}: image config"))?
            }
            None => None,
        };
        release::check_arch(&rel, config_arch.as_deref(), &set.arch)?;
        if r.starts_with("oci:") {
            if rel.okd() && a.release_base == release::DEFAULT_RELEASE_BASE {
                bail!(
                    "release image {r}: an OKD release ({}) named on the node after the OCP \
                     release repository {}: give --release-base with the repository it is \
                     published in (e.g. {})",
                    rel.version.as_deref().unwrap_or_default(),
                    release::DEFAULT_RELEASE_BASE,
                    release::OKD_SCOS_RELEASE
                );
            }
            // A layout has no registry name: the node gets it as BASE@DIGEST.
            rel.image = release::image_in(&a.release_base, &img.digest.to_string())
                .with_context(|| format!("--release-base for {r}"))?;
            origins.insert(rel.image.clone(), r.clone());
        }
        releases.push(rel);
    }
    // Oldest first (the order names shared components' tags); unversioned ones first.
    releases.sort_by_key(|r| {
        r.version
            .as_deref()
            .and_then(|v| semver::Version::parse(v).ok())
    });
    let mut set = set;
    set.releases = specs;
    let operators = select_operators(&puller, &set)?;
    let inputs = Inputs {
        releases: &releases,
        arch: &set.arch,
        assisted: &assisted,
        rule: &rule,
        operators: &operators,
        additional: &set.additional_images,
        blocked: &set.blocked_images,
        filter: &filter,
        not_staged: &set.not_staged,
    };
    let unresolved = lists::to_resolve(&inputs)?;
    // What the first pull resolved stays as read (a tag moving meanwhile changes nothing).
    let rest: Vec<String> = unresolved
        .iter()
        .filter(|r| !first.iter().any(|f| canonical_key(f) == **r))
        .cloned()
        .collect();
    let mut table = BTreeMap::new();
    match a.tagged {
        Tagged::Pull => puller.pull(&rest)?,
        Tagged::ManifestsOnly => table = puller.manifests(&rest)?,
    }
    for r in &unresolved {
        if !table.contains_key(r) {
            table.insert(r.clone(), puller.image(r)?.digest);
        }
    }
    let lists = lists::build(&inputs, &Resolved(table))?;
    let yaml = set.to_yaml()?;
    Ok(Resolution {
        set,
        lists,
        imageset_yaml: yaml,
        origins,
        store: puller.store,
        conn: puller.conn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_from_flags() {
        let a = Request {
            release: Some("4.14.3".into()),
            arch: Some("arm64".into()),
            ..Request::default()
        };
        let set = image_set(&a, None).unwrap();
        let chosen = resolve_releases(&set, &a, None, &|_| unreachable!("no channel")).unwrap();
        assert_eq!(
            chosen[0].1,
            "quay.io/openshift-release-dev/ocp-release:4.14.3-aarch64"
        );
        let a = Request {
            release: Some("docker://quay.io/x/release:4.14.3-x86_64".into()),
            ..Request::default()
        };
        let set = image_set(&a, None).unwrap();
        assert_eq!(
            set.releases,
            [ReleaseSpec::Image("quay.io/x/release:4.14.3-x86_64".into())]
        );
        let a = Request {
            release: Some("oci:/srv/release:4.14.3".into()),
            ..Request::default()
        };
        let set = image_set(&a, None).unwrap();
        assert_eq!(
            set.releases,
            [ReleaseSpec::Image("oci:/srv/release:4.14.3".into())]
        );
        let a = Request {
            release: Some("4.14".into()),
            ..Request::default()
        };
        let e = format!("{:#}", image_set(&a, None).unwrap_err());
        assert!(
            e.starts_with("--release 4.14: neither X.Y.Z nor an image reference"),
            "{e}"
        );
        let a = Request {
            arch: Some("x86_64".into()),
            ..Request::default()
        };
        assert!(image_set(&a, None).is_err());
    }
}
