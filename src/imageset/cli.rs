//! `prestage images`: resolve an image set into the lists the node loads. Resolves release
//! channels through the update graph, pulls the release and
//! catalog images into the store through the fetch stage, reads their layers from the store,
//! selects operator bundles, resolves tagged references to digests (by pulling them, which also
//! fills the store for the build), and writes `ai-images.txt`, `ocp-images.txt`, `mapping.txt`
//! and the effective `imageset.yaml` into the output directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use super::catalog::{self, Selected};
use super::config::{self, ImageSet, ReleaseSpec};
use super::filter::Filter;
use super::graph::{self, GraphSource};
use super::layers::{self, Limits};
use super::lists::{self, AssistedImages, DiscoveryRule, Inputs, Resolved};
use super::release::{self, Release};
use crate::fetch::cli::{Connection, RegistryArgs};
use crate::fetch::progress::Progress;
use crate::fetch::pull::{self, Request};
use crate::fetch::reference::{canonical_key, ImageRef};
use crate::fetch::store::{Store, StoredImage};

/// `prestage images` arguments.
#[derive(Args, Debug, Clone, Default)]
pub struct ImagesArgs {
    /// oc-mirror ImageSetConfiguration (mirror.openshift.io/v1alpha2 or v2alpha1).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Release: an image reference, a local OCI layout (oci:DIR[:REF], named on the node
    /// BASE@DIGEST with BASE from --release-base), or a version X.Y.Z (see --release-base,
    /// --arch).
    #[arg(long, value_name = "REF|oci:DIR[:REF]|X.Y.Z")]
    pub release: Option<String>,
    /// Release architecture: amd64, arm64, ppc64le, s390x or multi (default: the config's, else
    /// amd64).
    #[arg(long)]
    pub arch: Option<String>,
    /// Repository of release images, for --release X.Y.Z and release images read from OCI
    /// layouts.
    #[arg(long, value_name = "REPO", default_value = release::DEFAULT_RELEASE_BASE)]
    pub release_base: String,
    /// Update graph for release channels that are not pinned to one version: the update
    /// service's URL (queried with channel and arch) or a file holding its JSON answer
    /// [default: https://api.openshift.com/api/upgrades_info/v1/graph].
    #[arg(long, value_name = "URL|FILE")]
    pub update_graph: Option<String>,
    /// Assisted-installer agent image (discovery stage).
    #[arg(long, value_name = "REF")]
    pub agent_image: Option<String>,
    /// Assisted-installer installer image (discovery stage).
    #[arg(long, value_name = "REF")]
    pub installer_image: Option<String>,
    /// Assisted-installer controller/reporter image (both stages).
    #[arg(long, value_name = "REF")]
    pub controller_image: Option<String>,
    /// List of assisted-installer images (agent, installer, controller), one per line.
    #[arg(long, value_name = "FILE")]
    pub assisted_images: Option<PathBuf>,
    /// List of additional images (install stage), one per line.
    #[arg(long, value_name = "FILE")]
    pub additional_images: Option<PathBuf>,
    /// Discovery component rule replacing the built-in one (one component name per line).
    #[arg(long, value_name = "FILE")]
    pub discovery_components: Option<PathBuf>,
    /// Discovery components replacing the built-in rule, given on the command line
    /// (repeatable, or comma-separated).
    #[arg(
        long,
        value_name = "NAME",
        value_delimiter = ',',
        conflicts_with = "discovery_components"
    )]
    pub discovery_component: Vec<String>,
    /// Filter file: `patterns:` regular expressions matched against sources and tags.
    #[arg(long, value_name = "FILE")]
    pub filter: Option<PathBuf>,
    /// Output directory.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    /// Store and registry access (as for `prestage pull`).
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

struct Puller {
    store: Store,
    conn: Connection,
    quiet: bool,
    arch: String,
}

impl Puller {
    fn pull(&self, refs: &[String]) -> Result<()> {
        if refs.is_empty() {
            return Ok(());
        }
        let requests = refs
            .iter()
            .map(|r| Request::parse(r).map_err(|e| anyhow!("{r}: {e:#}")))
            .collect::<Result<Vec<_>>>()?;
        let opts = self.conn.options(requests, &self.arch, false);
        pull::pull(&self.store, &opts, &Progress::new(self.quiet))?;
        Ok(())
    }

    fn image(&self, reference: &str) -> Result<StoredImage> {
        self.store
            .image(&canonical_key(reference))?
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
/// `tls` gives the TLS configuration for the update service's host.
fn resolve_releases(
    set: &ImageSet,
    a: &ImagesArgs,
    tls: &dyn Fn(&str) -> Result<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Vec<(ReleaseSpec, String)>> {
    let base = Some(a.release_base.as_str()).filter(|b| !b.is_empty());
    let source = GraphSource::parse(
        a.update_graph
            .as_deref()
            .unwrap_or(graph::DEFAULT_UPDATE_GRAPH),
    );
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
                let g = source
                    .load(&range.name, &set.arch, tls)
                    .with_context(|| format!("release channel {}", range.name))?;
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
                    out.push((
                        ReleaseSpec::Version {
                            version: n.version.to_string(),
                            channel: Some(range.name.clone()),
                        },
                        n.payload.clone(),
                    ));
                }
            }
        }
    }
    // The same release from two entries is staged once.
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|(_, r)| seen.insert(canonical_key(r)));
    Ok(out)
}

/// The image set from the config file and the flags.
fn image_set(a: &ImagesArgs) -> Result<ImageSet> {
    let mut set = match &a.config {
        Some(p) => config::load_imageset(p)?,
        None => ImageSet {
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

fn assisted(a: &ImagesArgs) -> Result<AssistedImages> {
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
                let bytes = std::fs::read(c).with_context(|| format!("reading {}", c.display()))?;
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

/// Runs `prestage images`.
pub fn run(a: ImagesArgs) -> Result<()> {
    let set = image_set(&a)?;
    for n in &set.not_staged {
        eprintln!("prestage: {n}");
    }
    let assisted = assisted(&a)?;
    let rule = match &a.discovery_components {
        Some(p) => DiscoveryRule::load(p)?,
        None if !a.discovery_component.is_empty() => {
            DiscoveryRule::parse("--discovery-component", &a.discovery_component.join("\n"))?
        }
        None => DiscoveryRule::builtin()?,
    };
    let filter = match &a.filter {
        Some(p) => Filter::load(p)?,
        None => Filter::default(),
    };
    let conn = a.registry.connect()?;
    if set.releases.is_empty()
        && set.operators.is_empty()
        && set.additional_images.is_empty()
        && assisted == AssistedImages::default()
    {
        bail!("no images: give --release, --config or image lists");
    }
    let puller = Puller {
        store: a.registry.open_store()?,
        conn,
        quiet: a.quiet,
        // The payload of a multi-arch release lists the same components in every instance.
        arch: if set.arch == "multi" {
            "amd64".to_string()
        } else {
            set.arch.clone()
        },
    };
    let chosen = resolve_releases(&set, &a, &|host| puller.conn.tls_config(host))?;
    // The releases and the catalogs are read, so they are pulled first.
    let mut first: Vec<String> = chosen.iter().map(|(_, r)| r.clone()).collect();
    first.extend(set.operators.iter().map(|o| o.catalog.clone()));
    first.sort();
    first.dedup();
    puller.pull(&first)?;
    let mut releases: Vec<Release> = Vec::new();
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
        if r.starts_with("oci:") {
            // A layout has no registry name: the node gets it as BASE@DIGEST.
            rel.image = release::image_in(&a.release_base, &img.digest.to_string())
                .with_context(|| format!("--release-base for {r}"))?;
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
    puller.pull(&rest)?;
    let mut table = BTreeMap::new();
    for r in &unresolved {
        table.insert(r.clone(), puller.image(r)?.digest);
    }
    let out = lists::build(&inputs, &Resolved(table))?;
    out.write(&a.output, Some(&set.to_yaml()?))?;
    if a.json {
        println!("{}", out.to_json()?);
    } else if !a.quiet {
        eprintln!(
            "{}: {} discovery images, {} install images, {} blocked, {} filtered",
            a.output.display(),
            out.images.iter().filter(|i| i.discovery).count(),
            out.images.iter().filter(|i| i.install).count(),
            out.blocked.len(),
            out.filtered.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        images: ImagesArgs,
    }

    #[test]
    fn arguments() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "images",
            "--release",
            "4.14.3",
            "--arch",
            "arm64",
            "-c",
            "isc.yaml",
            "--agent-image",
            "quay.io/ai/assisted-installer-agent-rhel8:v1",
            "--filter",
            "f.yaml",
            "-o",
            "out",
            "--json",
        ])
        .unwrap();
        let a = c.images;
        assert_eq!(a.release.as_deref(), Some("4.14.3"));
        assert_eq!(a.release_base, release::DEFAULT_RELEASE_BASE);
        assert_eq!(a.output, PathBuf::from("out"));
        assert!(a.json);
        assert!(Cli::try_parse_from(["images", "--release", "4.14.3"]).is_err());
        let c = Cli::try_parse_from([
            "images",
            "-o",
            "out",
            "--discovery-component",
            "etcd,pod",
            "--discovery-component",
            "hyperkube",
        ])
        .unwrap();
        assert_eq!(c.images.discovery_component, ["etcd", "pod", "hyperkube"]);
        assert!(Cli::try_parse_from([
            "images",
            "-o",
            "out",
            "--discovery-component",
            "etcd",
            "--discovery-components",
            "rule.txt",
        ])
        .is_err());
    }

    #[test]
    fn release_from_flags() {
        let a = ImagesArgs {
            release: Some("4.14.3".into()),
            arch: Some("arm64".into()),
            ..ImagesArgs::default()
        };
        let set = image_set(&a).unwrap();
        let chosen = resolve_releases(&set, &a, &|_| unreachable!("no channel")).unwrap();
        assert_eq!(
            chosen[0].1,
            "quay.io/openshift-release-dev/ocp-release:4.14.3-aarch64"
        );
        let a = ImagesArgs {
            release: Some("docker://quay.io/x/release:4.14.3-x86_64".into()),
            ..ImagesArgs::default()
        };
        let set = image_set(&a).unwrap();
        assert_eq!(
            set.releases,
            [ReleaseSpec::Image("quay.io/x/release:4.14.3-x86_64".into())]
        );
        let a = ImagesArgs {
            release: Some("oci:/srv/release:4.14.3".into()),
            ..ImagesArgs::default()
        };
        let set = image_set(&a).unwrap();
        assert_eq!(
            set.releases,
            [ReleaseSpec::Image("oci:/srv/release:4.14.3".into())]
        );
        let a = ImagesArgs {
            release: Some("4.14".into()),
            ..ImagesArgs::default()
        };
        let e = format!("{:#}", image_set(&a).unwrap_err());
        assert!(
            e.starts_with("--release 4.14: neither X.Y.Z nor an image reference"),
            "{e}"
        );
        let a = ImagesArgs {
            arch: Some("x86_64".into()),
            ..ImagesArgs::default()
        };
        assert!(image_set(&a).is_err());
    }
}
