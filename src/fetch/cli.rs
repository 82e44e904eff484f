//! The `pull` and `store` subcommands: argument definitions (used by `src/main.rs`) and
//! printing; the work is in [`super::connect`], [`super::pull`] and [`super::store`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::connect::{self, Connection, Settings};
use super::progress::{self, Progress, Verbosity};
use super::pull::{self, Request};
use super::store::{self, Store};

/// `prestage pull` arguments.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Images: `[docker://]HOST[:PORT]/PATH[:TAG][@DIGEST]`, `oci:DIR[:REF]` or `dir:DIR` (with
    /// --from-oc-mirror, registry references name images of the archive by their source).
    #[arg(value_name = "REF")]
    pub refs: Vec<String>,
    /// File with one reference per line (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    pub list: Option<PathBuf>,
    /// Store and registry access.
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Architecture of the instance kept from manifest lists (`ARCH[/VARIANT]`).
    #[arg(long, default_value = "amd64")]
    pub arch: String,
    /// Keep every instance of manifest lists.
    #[arg(long)]
    pub all_arches: bool,
    /// Print a JSON summary on stdout (images, blobs fetched, blobs reused, bytes, seconds).
    #[arg(long)]
    pub json: bool,
    /// Print errors only.
    #[arg(short, long)]
    pub quiet: bool,
    /// Also print a line per blob fetched and per image recorded.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
}

/// Store and registry options shared by `pull`, `images`, `plan` and `build`.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// Store directory (default `$XDG_CACHE_HOME/prestage`).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Parallel downloads (default: 4 per core, 4 to 32).
    #[arg(short, long)]
    pub jobs: Option<usize>,
    /// Auth file (pull secret / auth.json); default: REGISTRY_AUTH_FILE,
    /// $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Certificate directory: `*.crt` CAs for every registry, `HOST[:PORT]/*.crt` per registry
    /// (repeatable; /etc/containers/certs.d is searched too).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Vec<PathBuf>,
    /// Registry (`HOST[:PORT]`) whose TLS certificate is not verified and that may be reached
    /// over plain HTTP (repeatable).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// registries.conf with mirrors (default: CONTAINERS_REGISTRIES_CONF,
    /// ~/.config/containers/registries.conf, /etc/containers/registries.conf), read with the
    /// `*.conf` drop-ins of the `.d` directory beside it.
    #[arg(long, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Attempts per download before a transient failure becomes fatal.
    #[arg(long, default_value_t = 6)]
    pub retries: u32,
    /// OCI image layout (an oc-mirror archive, another machine's copy) that serves the
    /// digest-pinned images it holds before any registry is asked (repeatable).
    #[arg(long, value_name = "DIR")]
    pub oci_mirror: Vec<PathBuf>,
    /// oc-mirror v2 output every image is read from, in place, with no registry or update
    /// service asked: a directory of mirror_NNNNNN.tar files (and working-dir/), one tar file,
    /// or oc-mirror's cache directory (repeatable: an incremental set oldest first).
    #[arg(long, value_name = "PATH")]
    pub from_oc_mirror: Vec<PathBuf>,
}

impl RegistryArgs {
    /// The registry settings these options give.
    pub fn settings(&self) -> Settings {
        Settings {
            authfile: self.authfile.clone(),
            cert_dirs: self.cert_dir.clone(),
            insecure: self.insecure_registry.clone(),
            registries_conf: self.registries_conf.clone(),
            retries: self.retries,
            jobs: self.jobs,
            oci_mirrors: self.oci_mirror.clone(),
            oc_mirror: self.from_oc_mirror.clone(),
        }
    }

    /// Checks the options and loads the auth file and registries.conf.
    pub fn connect(&self) -> Result<Connection> {
        self.settings().connect()
    }

    /// Opens (creating it if needed) the store.
    pub fn open_store(&self) -> Result<Store> {
        Store::open(&connect::store_dir(self.store.as_deref())?)
    }
}

/// `prestage store` subcommands.
#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Re-hash every blob and manifest, and check every recorded reference is complete.
    Verify {
        /// Store directory (default `$XDG_CACHE_HOME/prestage`).
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// Remove blobs and manifests that no recorded reference needs.
    Prune {
        /// Store directory (default `$XDG_CACHE_HOME/prestage`).
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
}

/// Runs `prestage pull`.
pub fn pull(a: PullArgs) -> Result<()> {
    let mut requests = Vec::new();
    for r in &a.refs {
        requests.push(Request::parse(r).map_err(|e| anyhow::anyhow!("{e:#}"))?);
    }
    if let Some(l) = &a.list {
        requests.extend(connect::parse_list(l)?);
    }
    if requests.is_empty() {
        bail!("nothing to pull: give references or --list FILE");
    }
    pull::dedup(&mut requests);
    let opts = a
        .registry
        .connect()?
        .options(requests, &a.arch, a.all_arches);
    let store = a.registry.open_store()?;
    let progress = Progress::with(Verbosity::from_flags(a.quiet, a.verbose));
    let s = pull::pull(&store, &opts, &progress);
    progress.finish();
    let s = s?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&s).context("serializing the summary")?
        );
    } else if !a.quiet {
        eprintln!(
            "{} images: {} blobs fetched, {} reused, {} received in {:.1}s",
            s.images,
            s.blobs_fetched,
            s.blobs_reused,
            progress::size(s.bytes),
            s.seconds
        );
    }
    Ok(())
}

/// Runs `prestage store verify|prune`.
pub fn store(cmd: StoreCommand) -> Result<()> {
    match cmd {
        StoreCommand::Verify { store } => {
            let dir = connect::existing_store(store.as_deref())?;
            let s = Store::open(&dir)?;
            let partials = s.partials()?;
            let r = s.verify()?;
            let (dead, live): (Vec<_>, Vec<_>) = partials.iter().partition(|p| !p.live);
            if !partials.is_empty() {
                let bytes = |v: &[&store::Partial]| progress::size(v.iter().map(|p| p.bytes).sum());
                println!(
                    "{}: tmp/: {} partial blob(s) of interrupted pulls ({}; `prestage store \
                     prune` removes them), {} being written by a running pull ({})",
                    dir.display(),
                    dead.len(),
                    bytes(&dead),
                    live.len(),
                    bytes(&live)
                );
            }
            for p in &r.problems {
                eprintln!("{}: {p}", dir.display());
            }
            if !r.problems.is_empty() {
                bail!(
                    "{}: {} problem(s) in the store",
                    dir.display(),
                    r.problems.len()
                );
            }
            println!(
                "{}: OK: {} references, {} manifests, {} blobs, {} verified",
                dir.display(),
                r.references,
                r.manifests,
                r.blobs,
                progress::size(r.bytes)
            );
            Ok(())
        }
        StoreCommand::Prune { store } => {
            let dir = connect::existing_store(store.as_deref())?;
            // Dead partial blobs go at once, even while pulls run; blobs and manifests only
            // under the exclusive lock, when no pull runs.
            let s = Store::open(&dir)?;
            let swept = s.remove_dead_partials()?;
            if !swept.removed.is_empty() {
                let names: Vec<String> = swept
                    .removed
                    .iter()
                    .map(|(p, n)| {
                        let name = p.file_name().unwrap_or_default().to_string_lossy();
                        format!("tmp/{name} ({})", progress::size(*n))
                    })
                    .collect();
                println!(
                    "{}: removed {} partial blob(s) of interrupted pulls: {}",
                    dir.display(),
                    swept.removed.len(),
                    names.join(", ")
                );
            }
            s.lock_exclusive(|| {
                eprintln!(
                    "{}: waiting for running pulls to end before pruning blobs and manifests \
                     ({} partial blob(s) they are writing left alone)",
                    dir.display(),
                    swept.live
                )
            })?;
            let r = s.prune()?;
            println!(
                "{}: removed {} files ({}), kept {}",
                dir.display(),
                r.removed,
                progress::size(r.bytes),
                r.kept
            );
            Ok(())
        }
    }
}
