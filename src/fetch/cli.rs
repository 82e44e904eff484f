//! The `pull` and `store` subcommands: argument definitions (used by `src/main.rs`), list-file
//! parsing, and turning arguments into a [`PullOptions`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::auth::AuthConfig;
use super::mirrors::RegistriesConf;
use super::progress::{self, Progress};
use super::pull::{self, PullOptions, Request};
use super::registry::{ClientSettings, Registries};
use super::retry::RetryPolicy;
use super::store::{self, Store};
use super::tls::TlsSettings;

/// `prestage pull` arguments.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Images: `[docker://]HOST[:PORT]/PATH[:TAG][@DIGEST]`, `oci:DIR[:REF]` or `dir:DIR`.
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
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `prestage store` subcommands.
/// Store and registry options shared by `pull` and `images`.
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
    /// ~/.config/containers/registries.conf, /etc/containers/registries.conf).
    #[arg(long, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Attempts per download before a transient failure becomes fatal.
    #[arg(long, default_value_t = 6)]
    pub retries: u32,
}

/// What [`RegistryArgs`] resolve to: loaded credentials and mirrors, checked options.
pub struct Connection {
    auth: AuthConfig,
    mirrors: RegistriesConf,
    cert_dirs: Vec<PathBuf>,
    insecure: Vec<String>,
    retries: u32,
    /// Parallel downloads.
    pub jobs: usize,
}

impl RegistryArgs {
    /// Checks the options and loads the auth file and registries.conf.
    pub fn connect(&self) -> Result<Connection> {
        if self.jobs == Some(0) {
            bail!("--jobs must be at least 1");
        }
        if self.retries == 0 {
            bail!("--retries must be at least 1");
        }
        for d in &self.cert_dir {
            if !d.is_dir() {
                bail!("--cert-dir {}: no such directory", d.display());
            }
        }
        Ok(Connection {
            auth: AuthConfig::load(self.authfile.as_deref())?,
            mirrors: RegistriesConf::load(self.registries_conf.as_deref())?,
            cert_dirs: self.cert_dir.clone(),
            insecure: self.insecure_registry.clone(),
            retries: self.retries,
            jobs: self.jobs.unwrap_or_else(default_jobs),
        })
    }

    /// Opens (creating it if needed) the store.
    pub fn open_store(&self) -> Result<Store> {
        Store::open(&store_dir(self.store.clone())?)
    }
}

impl Connection {
    /// TLS for another HTTPS service (`host[:port]`, e.g. an update service), with the same
    /// certificate directories and insecure list as the registries.
    pub fn tls_config(&self, host: &str) -> Result<std::sync::Arc<rustls::ClientConfig>> {
        TlsSettings {
            cert_dirs: self.cert_dirs.clone(),
            system_dirs: true,
        }
        .client_config(host, self.insecure.iter().any(|h| h == host))
    }

    /// Pull options for `requests`.
    pub fn options(&self, requests: Vec<Request>, arch: &str, all_arches: bool) -> PullOptions {
        let registries = Registries::new(ClientSettings {
            auth: self.auth.clone(),
            tls: TlsSettings {
                cert_dirs: self.cert_dirs.clone(),
                system_dirs: true,
            },
            insecure: self.insecure.iter().cloned().collect(),
            connect_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(120),
            connections: self.jobs,
        });
        PullOptions {
            requests,
            arch: arch.to_string(),
            all_arches,
            jobs: self.jobs,
            registries,
            mirrors: self.mirrors.clone(),
            retry: RetryPolicy {
                attempts: self.retries,
                ..RetryPolicy::default()
            },
        }
    }
}

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

/// Parses a list file: one reference per line, blank lines and `#` comments ignored.
pub fn parse_list(path: &Path) -> Result<Vec<Request>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--list {}", path.display()))?;
    let mut v = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = match line.find('#') {
            Some(k) => &line[..k],
            None => line,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        if line.split_whitespace().count() > 1 {
            bail!(
                "{}:{}: one reference per line expected, found `{line}`",
                path.display(),
                i + 1
            );
        }
        let r = Request::parse(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e:#}", path.display(), i + 1))?;
        v.push(r);
    }
    Ok(v)
}

fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    (cores * 4).clamp(4, 32)
}

fn store_dir(store: Option<PathBuf>) -> Result<PathBuf> {
    match store {
        Some(s) => Ok(s),
        None => Store::default_dir(),
    }
}

/// The directory of an existing store (for `store verify|prune`, which must not create one).
fn existing_store(store: Option<PathBuf>) -> Result<PathBuf> {
    let dir = store_dir(store)?;
    if !dir.join("blobs/sha256").is_dir() {
        bail!("{}: no prestage store there", dir.display());
    }
    Ok(dir)
}

/// Runs `prestage pull`.
pub fn pull(a: PullArgs) -> Result<()> {
    let mut requests = Vec::new();
    for r in &a.refs {
        requests.push(Request::parse(r).map_err(|e| anyhow::anyhow!("{e:#}"))?);
    }
    if let Some(l) = &a.list {
        requests.extend(parse_list(l)?);
    }
    if requests.is_empty() {
        bail!("nothing to pull: give references or --list FILE");
    }
    let mut seen = HashSet::new();
    requests.retain(|r| seen.insert(r.key.clone()));
    let opts = a
        .registry
        .connect()?
        .options(requests, &a.arch, a.all_arches);
    let store = a.registry.open_store()?;
    let progress = Progress::new(a.quiet);
    let s = pull::pull(&store, &opts, &progress)?;
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
            let dir = existing_store(store)?;
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
            let dir = existing_store(store)?;
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
