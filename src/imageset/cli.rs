//! `prestage images`: the arguments that choose an image set (shared with `plan` and `build`),
//! and the `images` run, which resolves them ([`super::resolve`]) and writes `ai-images.txt`,
//! `ocp-images.txt`, `mapping.txt` and the effective `imageset.yaml` into the output directory.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::release;
use super::resolve::{self, Discovery, Request, Tagged};
use crate::fetch::cli::RegistryArgs;

/// The options that choose an image set, shared by `images`, `plan` and `build`.
#[derive(Args, Debug, Clone, Default)]
pub struct ImageSetArgs {
    /// oc-mirror ImageSetConfiguration (mirror.openshift.io/v1alpha2 or v2alpha1).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Release: an image reference, a local OCI layout (oci:DIR or oci:DIR:REF, named on the
    /// node BASE@DIGEST with BASE from --release-base), or a version X.Y.Z (see --release-base,
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
    /// (default: `https://api.openshift.com/api/upgrades_info/v1/graph`, for `type: okd`
    /// channels `https://origin-release.ci.openshift.org/graph`; with --from-oc-mirror, the
    /// graph data the archive carries).
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
}

/// `prestage images` arguments.
#[derive(Args, Debug, Clone, Default)]
pub struct ImagesArgs {
    /// What to resolve.
    #[command(flatten)]
    pub set: ImageSetArgs,
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

impl ImageSetArgs {
    /// The resolution request these options give.
    pub fn request(&self, tagged: Tagged, quiet: bool) -> Request {
        Request {
            config: self.config.clone(),
            release: self.release.clone(),
            arch: self.arch.clone(),
            release_base: self.release_base.clone(),
            update_graph: self.update_graph.clone(),
            agent_image: self.agent_image.clone(),
            installer_image: self.installer_image.clone(),
            controller_image: self.controller_image.clone(),
            assisted_images: self.assisted_images.clone(),
            additional_images: self.additional_images.clone(),
            discovery: match &self.discovery_components {
                Some(p) => Discovery::File(p.clone()),
                None if !self.discovery_component.is_empty() => {
                    Discovery::Names(self.discovery_component.clone())
                }
                None => Discovery::Builtin,
            },
            filter: self.filter.clone(),
            tagged,
            quiet,
        }
    }
}

/// Says, once, which parts of the image set are read but not staged (also with `--quiet`).
pub fn report_not_staged(set: &super::config::ImageSet) {
    for n in &set.not_staged {
        eprintln!("prestage: {n}");
    }
}

/// Runs `prestage images`.
pub fn run(a: ImagesArgs) -> Result<()> {
    let conn = a.registry.connect()?;
    let store = a.registry.open_store()?;
    let r = resolve::resolve(&a.set.request(Tagged::Pull, a.quiet), store, conn)?;
    report_not_staged(&r.set);
    let out = &r.lists;
    out.write(&a.output, Some(&r.imageset_yaml))?;
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
        assert_eq!(a.set.release.as_deref(), Some("4.14.3"));
        assert_eq!(a.set.release_base, release::DEFAULT_RELEASE_BASE);
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
        assert_eq!(
            c.images.set.discovery_component,
            ["etcd", "pod", "hyperkube"]
        );
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
}
