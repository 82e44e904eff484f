//! `prestage build` and `prestage plan`: argument definitions and printing; the work is in
//! [`super`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::{Output, Plan, Request};
use crate::compose::emit::Format as ImageFormat;
use crate::compose::layout::{human, Layout};
use crate::fetch::cli::RegistryArgs;
use crate::fetch::progress::{Progress, Verbosity};
use crate::imageset::cli::ImageSetArgs;
use crate::imageset::resolve::Tagged;
use crate::payload::Format;

/// A payload format on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PayloadArg {
    /// De-duplicated: `blobs/` plus one OCI layout per image and stage, loaded with no untar.
    Shared,
    /// One `<name>.tgz` per image at the root, as the upstream extract script loads them.
    Ztp,
    /// A containers-storage overlay store under `store/`, used in place by the node as an
    /// additional image store (zero copy); a copying loader for clusters without the feature gate.
    Store,
}

impl From<PayloadArg> for Format {
    fn from(p: PayloadArg) -> Format {
        match p {
            PayloadArg::Shared => Format::Shared,
            PayloadArg::Ztp => Format::Ztp,
            PayloadArg::Store => Format::Store,
        }
    }
}

/// An image format on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ImageFormatArg {
    /// Sparse raw image.
    Raw,
    /// qcow2.
    Qcow2,
}

/// The disk and partition of `plan` and `build`.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Disk layout: a built-in name (demo, sno-seed, sno-250g) or a layout file.
    #[arg(long, value_name = "NAME|FILE")]
    pub layout: String,
    /// Partition (GPT label) that receives the payload; the node loaders find it as
    /// /dev/disk/by-partlabel/LABEL.
    #[arg(long, default_value = "data")]
    pub label: String,
}

/// The options `plan` and `build` share.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// The image set.
    #[command(flatten)]
    pub set: ImageSetArgs,
    /// Disk and partition.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Store and registry access (as for `prestage pull`).
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print errors only.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also print a line per blob fetched and per image (the report lists them all).
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
}

/// `prestage build` arguments.
#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// What every run takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Payload format.
    #[arg(long, value_enum, default_value = "shared")]
    pub payload: PayloadArg,
    /// Output image: `.qcow2` selects qcow2, anything else raw.
    #[arg(short, long, value_name = "OUT.raw|OUT.qcow2")]
    pub output: PathBuf,
    /// Output format, overriding the extension.
    #[arg(long, value_enum)]
    pub format: Option<ImageFormatArg>,
    /// Blobs that local sources hold (--oci-mirror layouts, oci: and dir: sources, oc-mirror
    /// archives) are read in place, not copied into the store first; with this flag they are
    /// also copied into the store once the image is in place, for the next build.
    #[arg(long)]
    pub fill_store: bool,
}

/// `prestage plan` arguments.
#[derive(Args, Debug, Clone)]
pub struct PlanArgs {
    /// What every run takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Payload format to plan (default: every format; `store` when its layers are here).
    #[arg(long, value_enum)]
    pub payload: Option<PayloadArg>,
}

impl CommonArgs {
    fn request(&self, formats: Vec<Format>, mtime: i64) -> Result<Request> {
        Ok(Request {
            images: self.set.request(Tagged::ManifestsOnly, self.quiet),
            layout: Layout::named_or_file(&self.target.layout)?,
            label: self.target.label.clone(),
            formats,
            mtime,
            fill_store: false,
        })
    }

    fn prepare(&self, req: &Request) -> Result<super::Prepared> {
        let prepared = super::prepare(req, self.registry.open_store()?, self.registry.connect()?)?;
        crate::imageset::cli::report_not_staged(&prepared.resolution.set);
        Ok(prepared)
    }
}

/// Prints a plan for people.
fn print_plan(p: &Plan, layout: &Layout) {
    println!(
        "image set: {} images ({} discovery, {} install), {} distinct blobs and manifests, {}; \
         {} still to download",
        p.images,
        p.discovery,
        p.install,
        p.unique_files,
        human(p.unique_bytes),
        human(p.to_download)
    );
    if let Some(why) = &p.not_planned {
        println!("store: not planned: {why}");
    }
    for f in &p.formats {
        let x = &f.fit;
        println!(
            "{}: {} in {} files; the filesystem needs {} (data {}, metadata {}, headroom {}) \
             besides its {} log and {} of allocation-group metadata; partition `{}` of {} ({}) \
             holds {}: {}; smallest partition that fits: {}",
            f.format.name(),
            human(f.payload_bytes),
            f.files,
            human(x.needed),
            human(x.data),
            human(x.metadata),
            human(x.headroom),
            human(x.log),
            human(x.overhead),
            p.label,
            layout.source.display(),
            human(x.partition),
            human(x.available),
            if x.fits { "fits" } else { "TOO SMALL" },
            human(x.smallest_partition)
        );
    }
}

/// Runs `prestage plan`.
pub fn plan(a: PlanArgs, mtime: i64) -> Result<()> {
    let formats = match a.payload {
        Some(p) => vec![p.into()],
        None => Format::ALL.to_vec(),
    };
    let req = a.common.request(formats, mtime)?;
    let prepared = a.common.prepare(&req)?;
    let node = crate::node::NodeSet::new(&req.label)?;
    let p = prepared.plan(&req, &|f| node.partition_files_for(f))?;
    if a.common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&p).context("serializing the plan")?
        );
    } else {
        print_plan(&p, &req.layout);
    }
    Ok(())
}

/// Runs `prestage build`.
pub fn build(a: BuildArgs, mtime: i64) -> Result<()> {
    let format = match a.format {
        Some(ImageFormatArg::Raw) => ImageFormat::Raw,
        Some(ImageFormatArg::Qcow2) => ImageFormat::Qcow2,
        None => ImageFormat::from_path(&a.output),
    };
    let mut req = a.common.request(vec![a.payload.into()], mtime)?;
    req.fill_store = a.fill_store;
    let progress = Progress::with(Verbosity::from_flags(a.common.quiet, a.common.verbose));
    let prepared = a.common.prepare(&req)?;
    let node =
        crate::node::NodeSet::new(&req.label)?.for_image(&a.output, format, req.layout.disk_size);
    let out = Output {
        image: a.output.clone(),
        format,
    };
    let quiet = a.common.quiet;
    let s = super::build(&req, &prepared, &out, Some(&node), &progress)?;
    if a.common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&s).context("serializing the summary")?
        );
    } else if !quiet {
        let t = &s.seconds;
        eprintln!(
            "{} ({}, {} disk, {} payload): {} images, {} distinct blobs and manifests, {} on \
             partition `{}`; {} blobs fetched, {} from the store, {} read in place",
            s.output.display(),
            s.image_format,
            human(s.disk_size),
            s.payload.name(),
            s.images,
            s.unique_files,
            human(s.partition_bytes),
            req.label,
            s.pull.blobs_fetched,
            s.pull.blobs_reused,
            s.pull.blobs_in_place
        );
        eprintln!(
            "seconds: resolve {:.1}, plan {:.1}, pull {:.1}, filesystems {:.1}, write and hash \
             {:.1}, verify {:.1}, report and node files {:.1}{}",
            t.resolve,
            t.plan,
            t.pull,
            t.filesystems,
            t.write,
            t.verify,
            t.finish,
            if s.filled.is_some() {
                format!(", fill store {:.1}", t.fill_store)
            } else {
                String::new()
            }
        );
        eprintln!("report: {}", s.report.display());
        if let Some(b) = &s.bmap {
            eprintln!("block map: {}", b.display());
        }
        if let Some(n) = &s.node {
            eprintln!("node files: {}", n.display());
        }
    }
    Ok(())
}
