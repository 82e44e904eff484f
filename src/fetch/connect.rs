//! Registry access as a typed value: the settings a run is given (auth file, certificate
//! directories, insecure registries, registries.conf, retries, parallelism) and the
//! [`Connection`] they resolve to (credentials and mirrors loaded, options checked), from which
//! [`PullOptions`] for any set of requests and TLS configurations for other HTTPS services (an
//! update service) are made. With oc-mirror archives (`--from-oc-mirror`), the connection holds
//! their index, made once, and every image comes from them. Used by every stage that reaches registries (`pull`, `images`,
//! `build`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::archive::ArchiveSet;
use super::auth::AuthConfig;
use super::http::{HttpClient, Timeouts};
use super::mirrors::RegistriesConf;
use super::proxy::ProxyConfig;
use super::pull::{PullOptions, Request};
use super::registry::{ClientSettings, Registries};
use super::retry::RetryPolicy;
use super::store::Store;
use super::tls::TlsSettings;

/// How to reach registries (what the command-line options say).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Auth file; `None`: REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.docker/config.json.
    pub authfile: Option<PathBuf>,
    /// Certificate directories (besides /etc/containers/certs.d).
    pub cert_dirs: Vec<PathBuf>,
    /// Registries (`HOST[:PORT]`) reached without certificate checks or over plain HTTP.
    pub insecure: Vec<String>,
    /// registries.conf; `None`: the usual search path.
    pub registries_conf: Option<PathBuf>,
    /// Attempts per download.
    pub retries: u32,
    /// Parallel downloads; `None`: 4 per core, 4 to 32.
    pub jobs: Option<usize>,
    /// OCI layouts serving the digest-pinned images they hold.
    pub oci_mirrors: Vec<PathBuf>,
    /// oc-mirror archives or caches serving every image (no registry is asked).
    pub oc_mirror: Vec<PathBuf>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            authfile: None,
            cert_dirs: Vec::new(),
            insecure: Vec::new(),
            registries_conf: None,
            retries: 6,
            jobs: None,
            oci_mirrors: Vec::new(),
            oc_mirror: Vec::new(),
        }
    }
}

/// What [`Settings`] resolve to: loaded credentials and mirrors, checked options.
pub struct Connection {
    auth: AuthConfig,
    mirrors: RegistriesConf,
    proxies: ProxyConfig,
    cert_dirs: Vec<PathBuf>,
    insecure: Vec<String>,
    retries: u32,
    oci_mirrors: Vec<PathBuf>,
    archives: Option<Arc<ArchiveSet>>,
    /// Parallel downloads.
    pub jobs: usize,
}

impl Settings {
    /// Checks the options and loads the auth file and registries.conf.
    pub fn connect(&self) -> Result<Connection> {
        if self.jobs == Some(0) {
            bail!("--jobs must be at least 1");
        }
        if self.retries == 0 {
            bail!("--retries must be at least 1");
        }
        for d in &self.cert_dirs {
            if !d.is_dir() {
                bail!("--cert-dir {}: no such directory", d.display());
            }
        }
        for d in &self.oci_mirrors {
            if !d.join("blobs/sha256").is_dir() {
                bail!(
                    "--oci-mirror {}: not an OCI image layout (no blobs/sha256)",
                    d.display()
                );
            }
        }
        let archives = if self.oc_mirror.is_empty() {
            None
        } else {
            Some(Arc::new(ArchiveSet::open(&self.oc_mirror)?))
        };
        Ok(Connection {
            archives,
            auth: AuthConfig::load(self.authfile.as_deref())?,
            mirrors: RegistriesConf::load(self.registries_conf.as_deref())?,
            proxies: ProxyConfig::from_env()?,
            cert_dirs: self.cert_dirs.clone(),
            insecure: self.insecure.clone(),
            retries: self.retries,
            oci_mirrors: self.oci_mirrors.clone(),
            jobs: self.jobs.unwrap_or_else(default_jobs),
        })
    }
}

impl Connection {
    /// The oc-mirror archive set every image comes from, when one was given.
    pub fn archives(&self) -> Option<&Arc<ArchiveSet>> {
        self.archives.as_ref()
    }

    /// An HTTP client for another service (`host[:port]`, e.g. an update service), with the
    /// same certificate directories, insecure list and proxies as the registries.
    pub fn http(&self, host: &str) -> Result<HttpClient> {
        let tls = TlsSettings {
            cert_dirs: self.cert_dirs.clone(),
            system_dirs: true,
        }
        .client_config(host, self.insecure.iter().any(|h| h == host))?;
        Ok(HttpClient::new(
            tls,
            self.proxies.clone(),
            Timeouts {
                connect: Duration::from_secs(30),
                io: Duration::from_secs(120),
                connections: 1,
            },
        ))
    }

    /// Pull options for `requests`.
    pub fn options(&self, requests: Vec<Request>, arch: &str, all_arches: bool) -> PullOptions {
        let registries = Registries::new(ClientSettings {
            auth: self.auth.clone(),
            tls: TlsSettings {
                cert_dirs: self.cert_dirs.clone(),
                system_dirs: true,
            },
            proxies: self.proxies.clone(),
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
            oci_mirrors: self.oci_mirrors.clone(),
            archives: self.archives.clone(),
            retry: RetryPolicy {
                attempts: self.retries,
                ..RetryPolicy::default()
            },
            in_place: false,
        }
    }
}

fn default_jobs() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    (cores * 4).clamp(4, 32)
}

/// The store directory: `dir`, else the default (`$XDG_CACHE_HOME/prestage`).
pub fn store_dir(dir: Option<&Path>) -> Result<PathBuf> {
    match dir {
        Some(s) => Ok(s.to_path_buf()),
        None => Store::default_dir(),
    }
}

/// The directory of an existing store (for checks that must not create one).
pub fn existing_store(dir: Option<&Path>) -> Result<PathBuf> {
    let dir = store_dir(dir)?;
    if !dir.join("blobs/sha256").is_dir() {
        bail!("{}: no prestage store there", dir.display());
    }
    Ok(dir)
}

/// Parses a list file: one reference per line, blank lines and `#` comments ignored; each line
/// must be one reference `prestage pull` accepts.
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
