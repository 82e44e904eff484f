//! `prestage node IMAGE [-o DIR] [--label L]`: argument definitions and printing; the work is in
//! [`super`] and [`super::inspect`].

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
    /// The payload partition (GPT label), when the image has several.
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// Print nothing.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `prestage node`.
pub fn run(a: NodeArgs) -> Result<()> {
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
