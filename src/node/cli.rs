//! `prestage node IMAGE [-o DIR] [--label L]` and `prestage node IMAGE --into FILE`: argument
//! definitions and printing; the work is in [`super`], [`super::inspect`] and
//! [`super::gitops`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// `prestage node` arguments.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// An image `prestage build` wrote (raw or qcow2).
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// Directory to write (default: IMAGE.node beside the image); replaced only when prestage
    /// wrote it.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Merge the GitOps ZTP settings into this ClusterInstance or SiteConfig file (one or several
    /// YAML documents) instead: its own overrides and installerArgs are kept, every other byte
    /// too; written in place (temporary name, rename), not rewritten when already merged.
    #[arg(long, value_name = "FILE", conflicts_with = "output")]
    pub into: Option<PathBuf>,
    /// The payload partition (GPT label), when the image has several.
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// Print nothing.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `prestage node`.
pub fn run(a: NodeArgs) -> Result<()> {
    if let Some(file) = &a.into {
        let (found, s) = super::into(&a.image, file, a.label.as_deref())?;
        if !a.quiet {
            let what = format!(
                "{} ({} node{})",
                s.targets.join(", "),
                s.nodes,
                if s.nodes == 1 { "" } else { "s" }
            );
            if s.changed {
                eprintln!(
                    "{}: merged the settings of {} (partition `{}`) into {what}",
                    file.display(),
                    a.image.display(),
                    found.label
                );
            } else {
                eprintln!(
                    "{}: {what} already holds the settings of {}; left as it was",
                    file.display(),
                    a.image.display()
                );
            }
        }
        return Ok(());
    }
    let (found, dir) = super::regenerate(&a.image, a.output.as_deref(), a.label.as_deref())?;
    if !a.quiet {
        eprintln!(
            "{}: {} payload on the partition labelled `{}`; node files: {}",
            a.image.display(),
            found.format.name(),
            found.label,
            dir.display()
        );
    }
    Ok(())
}
