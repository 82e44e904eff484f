//! The `prestage` command line: `compose`, `verify`, `pull`, `store`, `images`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use prestage::compose::content::Owners;
use prestage::compose::emit::{self, Format};
use prestage::compose::{self, layout, verify};

#[derive(Parser)]
#[command(
    name = "prestage",
    version,
    about = "Compose pre-staging disk images for OpenShift edge servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Raw,
    Qcow2,
}

#[derive(Clone, Copy, ValueEnum)]
enum OwnersArg {
    /// Every entry owned by root (0:0).
    Root,
    /// Keep the uid/gid of the source files.
    Keep,
}

#[derive(Subcommand)]
enum Command {
    /// Compose a disk image from a layout and content directories.
    Compose {
        /// Layout file (layouts/*.toml).
        #[arg(long)]
        layout: PathBuf,
        /// Content for a partition: LABEL=DIR (repeatable).
        #[arg(long, value_name = "LABEL=DIR")]
        content: Vec<String>,
        /// Output image; `.qcow2` selects qcow2, anything else raw.
        #[arg(short, long)]
        output: PathBuf,
        /// Output format, overriding the extension.
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// Owner of the content's files in the image.
        #[arg(long, value_enum, default_value = "root")]
        owners: OwnersArg,
    },
    /// Verify an image: GPT, and every XFS partition's files against its manifest.
    Verify {
        /// Raw or qcow2 image.
        image: PathBuf,
        /// Partition that must be present and verified.
        #[arg(long, default_value = "data")]
        label: String,
    },
    /// Resolve a release, operators and extra images into the lists the node loads.
    Images(Box<prestage::imageset::cli::ImagesArgs>),
    /// Pull images from registries or local copies into the store.
    Pull(prestage::fetch::cli::PullArgs),
    /// Check or clean the image store.
    Store {
        #[command(subcommand)]
        command: prestage::fetch::cli::StoreCommand,
    },
}

/// Timestamp for every inode: SOURCE_DATE_EPOCH when set (reproducible builds), else now.
fn mtime() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH: `{v}` is not a number of seconds")),
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Compose {
            layout,
            content,
            output,
            format,
            owners,
        } => {
            let mut contents = Vec::new();
            for c in &content {
                let Some((label, dir)) = c.split_once('=') else {
                    bail!("--content {c}: expected LABEL=DIR");
                };
                if label.is_empty() || dir.is_empty() {
                    bail!("--content {c}: expected LABEL=DIR");
                }
                contents.push((label.to_string(), PathBuf::from(dir)));
            }
            let req = compose::Request {
                layout,
                contents,
                output,
                format: format.map(|f| match f {
                    FormatArg::Raw => Format::Raw,
                    FormatArg::Qcow2 => Format::Qcow2,
                }),
                owners: match owners {
                    OwnersArg::Root => Owners::Root,
                    OwnersArg::Keep => Owners::Keep,
                },
                mtime: mtime()?,
            };
            let s = compose::compose(&req)?;
            println!("{}", compose::describe(&s));
            Ok(())
        }
        Command::Images(args) => prestage::imageset::cli::run(*args),
        Command::Verify { image, label } => {
            let (format, dev) = emit::open(&image)?;
            let reports = verify::verify(&*dev, Some(&label))
                .with_context(|| format!("{}", image.display()))?;
            for r in &reports {
                println!(
                    "{} ({}): partition `{}` OK: {} entries, {} files, {} verified",
                    image.display(),
                    format.name(),
                    r.label,
                    r.entries,
                    r.files,
                    layout::human(r.bytes)
                );
            }
            Ok(())
        }
        Command::Pull(args) => prestage::fetch::cli::pull(args),
        Command::Store { command } => prestage::fetch::cli::store(command),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match prestage::cleanup::install().and_then(|()| run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prestage: {e:#}");
            ExitCode::FAILURE
        }
    }
}
