//! The `prestage` command line: parses the subcommands and hands each to its stage's `cli`
//! module (`build`, `plan`, `node`, `images`, `pull`, `store`, `compose`, `verify`), or to
//! `docs` for its own completions and man pages.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};

use prestage::{build, compose, docs, fetch, imageset, node};

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

#[derive(Subcommand)]
enum Command {
    /// Build a pre-staged disk image from an image set: resolve, plan, pull, compose, verify.
    Build(Box<build::cli::BuildArgs>),
    /// Say, before anything is downloaded, what a build needs and whether the layout fits it.
    Plan(Box<build::cli::PlanArgs>),
    /// Write the node files (loaders, Ignition overrides, Assisted Service, ClusterInstance and
    /// SiteConfig settings) of an image already built, read from the image itself; or merge
    /// them into a ClusterInstance or SiteConfig file (--into).
    Node(node::cli::NodeArgs),
    /// Resolve a release, operators and extra images into the lists the node loads.
    Images(Box<imageset::cli::ImagesArgs>),
    /// Pull images from registries or local copies into the store.
    Pull(fetch::cli::PullArgs),
    /// Check or clean the image store.
    Store {
        #[command(subcommand)]
        command: fetch::cli::StoreCommand,
    },
    /// Compose a disk image from a layout and content directories.
    Compose(compose::cli::ComposeArgs),
    /// Verify an image: GPT, and every XFS partition's files against its manifest.
    Verify(compose::cli::VerifyArgs),
    /// Print the shell completion script for SHELL (e.g. `prestage completions bash >
    /// /etc/bash_completion.d/prestage`).
    Completions {
        /// bash, elvish, fish, powershell or zsh.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page per command into DIR (prestage.1, prestage-build.1, …).
    Man {
        /// Where to write them (e.g. /usr/local/share/man/man1).
        dir: std::path::PathBuf,
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
        Command::Build(a) => build::cli::build(*a, mtime()?),
        Command::Plan(a) => build::cli::plan(*a, mtime()?),
        Command::Node(a) => node::cli::run(a),
        Command::Images(a) => imageset::cli::run(*a),
        Command::Pull(a) => fetch::cli::pull(a),
        Command::Store { command } => fetch::cli::store(command),
        Command::Compose(a) => compose::cli::compose(a, mtime()?),
        Command::Verify(a) => compose::cli::verify(a),
        Command::Completions { shell } => {
            docs::completions(Cli::command(), shell, &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => {
            let pages = docs::man_pages(Cli::command(), &dir)?;
            eprintln!("wrote {} man pages into {}", pages.len(), dir.display());
            Ok(())
        }
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
