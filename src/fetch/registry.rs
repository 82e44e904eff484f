//! The registry client (distribution API v2 over HTTP/1.1, with ureq and rustls): manifests by tag
//! or digest with every supported kind in `Accept`, blobs streamed straight into the store with
//! HTTP Range resume, and auth (Basic, or bearer tokens from the registry's token service,
//! authenticated with the pull secret's credentials, or obtained with an identity token through
//! the OAuth2 refresh-token grant), through the environment's proxies ([`super::http`]).
//!
//! A direct client rather than a higher-level crate: resuming a blob with Range from the bytes
//! already on disk, honouring `Retry-After`, counting bytes as they arrive and classifying each
//! failure as transient or permanent all need control over every request.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::auth::{AuthConfig, Credentials, Secret};
use super::digest::Digest;
use super::http::{HttpClient, Timeouts};
use super::manifest::{Descriptor, ACCEPT};
use super::progress::Progress;
use super::proxy::ProxyConfig;
use super::reference::{ImageRef, DOCKER_HUB};
use super::retry::{parse_retry_after, Failure};
use super::source::{FetchedManifest, Source};
use super::store::PartialBlob;
use super::tls::TlsSettings;

/// Largest manifest accepted.
const MAX_MANIFEST: u64 = 8 << 20;

/// Settings shared by every registry connection.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Credentials.
    pub auth: AuthConfig,
    /// Certificates.
    pub tls: TlsSettings,
    /// Proxies.
    pub proxies: ProxyConfig,
    /// Registries (`host[:port]`) whose TLS is not verified and that may be plain HTTP.
    pub insecure: HashSet<String>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of each read/write on a connection.
    pub io_timeout: Duration,
    /// Idle connections kept per host (about the download parallelism).
    pub connections: usize,
}

/// Clients per registry host, shared by all download threads.
pub struct Registries {
    settings: ClientSettings,
    hosts: Mutex<HashMap<(String, bool), Arc<Host>>>,
}

impl Registries {
    /// A client set.
    pub fn new(settings: ClientSettings) -> Registries {
        Registries {
            settings,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The client of `registry`; `insecure` (or the registry being listed as insecure) turns
    /// TLS verification off and allows plain HTTP.
    pub fn host(&self, registry: &str, insecure: bool) -> Result<Arc<Host>> {
        let insecure = insecure || self.settings.insecure.contains(registry);
        let key = (registry.to_string(), insecure);
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = hosts.get(&key) {
            return Ok(h.clone());
        }
        let tls = self.settings.tls.client_config(registry, insecure)?;
        // Blob GETs are often redirected to storage (a CDN, S3): the client follows them, each
        // hop with its own proxy route, credentials only to the same host over https.
        let http = HttpClient::new(
            tls,
            self.settings.proxies.clone(),
            Timeouts {
                connect: self.settings.connect_timeout,
                io: self.settings.io_timeout,
                connections: self.settings.connections,
            },
        );
        let api = if registry == DOCKER_HUB {
            "registry-1.docker.io".to_string()
        } else {
            registry.to_string()
        };
        let h = Arc::new(Host {
            registry: registry.to_string(),
            api,
            http,
            insecure,
            scheme: Mutex::new(None),
            auth: self.settings.auth.clone(),
            headers: Mutex::new(HashMap::new()),
        });
        hosts.insert(key, h.clone());
        Ok(h)
    }
}

/// One registry host: its HTTP client, scheme and per-repository auth headers.
pub struct Host {
    registry: String,
    api: String,
    http: HttpClient,
    insecure: bool,
    scheme: Mutex<Option<&'static str>>,
    auth: AuthConfig,
    /// repository -> Authorization header value that worked (token or Basic).
    headers: Mutex<HashMap<String, Secret>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

#[derive(Deserialize)]
struct RegistryErrors {
    errors: Vec<RegistryError>,
}

#[derive(Deserialize)]
struct RegistryError {
    code: Option<String>,
    message: Option<String>,
}

/// `WWW-Authenticate` parameters.
fn parse_challenge(v: &str) -> (String, HashMap<String, String>) {
    let v = v.trim();
    let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(i) => (&q[..i], &q[i + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        params.insert(k, val.to_string());
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    (scheme.to_ascii_lowercase(), params)
}

/// The registry's own error message from a JSON error body, if any.
fn registry_message(resp: ureq::Response) -> Option<String> {
    let mut body = Vec::new();
    resp.into_reader()
        .take(64 << 10)
        .read_to_end(&mut body)
        .ok()?;
    let e: RegistryErrors = serde_json::from_slice(&body).ok()?;
    let first = e.errors.into_iter().next()?;
    let msg = [first.code, first.message]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(": ");
    (!msg.is_empty()).then_some(msg)
}

fn status_failure(what: &str, code: u16, resp: ureq::Response) -> Failure {
    let retry_after = resp.header("Retry-After").and_then(parse_retry_after);
    let text = resp.status_text().to_string();
    let detail = registry_message(resp)
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    let cause = format!("{what}: HTTP {code} {text}{detail}");
    match code {
        408 | 425 | 429 | 500 | 502 | 503 | 504 => Failure::Transient { cause, retry_after },
        _ => Failure::Permanent(cause),
    }
}

/// A transport error as text, its URL without user info or query (a redirect to blob storage
/// carries a pre-signed query: credentials, never printed).
fn transport_text(t: &ureq::Transport) -> String {
    let mut s = String::new();
    if let Some(u) = t.url() {
        s.push_str(&format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?")));
        if let Some(p) = u.port() {
            s.push_str(&format!(":{p}"));
        }
        s.push_str(u.path());
        s.push_str(": ");
    }
    s.push_str(&t.kind().to_string());
    if let Some(m) = t.message() {
        s.push_str(&format!(": {m}"));
    }
    if let Some(src) = std::error::Error::source(t) {
        s.push_str(&format!(": {src}"));
    }
    s
}

fn transport_failure(what: &str, t: &ureq::Transport, route: &str) -> Failure {
    let msg = format!("{}{route}", transport_text(t));
    if t.kind() == ureq::ErrorKind::ProxyUnauthorized {
        return Failure::Permanent(format!("{what}: {msg}"));
    }
    if msg.contains("CertificateRequired") || msg.contains("BadCertificate") {
        return Failure::Permanent(format!(
            "{what}: the registry refused the connection for want of a client certificate \
             ({msg}); put client.cert and client.key in --cert-dir DIR/HOST:PORT/ or \
             /etc/containers/certs.d/HOST:PORT/"
        ));
    }
    if msg.contains("not valid for name") {
        return Failure::Permanent(format!(
            "{what}: the registry's TLS certificate is not valid for the name used ({msg}); \
             use a name the certificate holds"
        ));
    }
    if msg.contains("certificate") || msg.contains("UnknownIssuer") {
        return Failure::Permanent(format!(
            "{what}: TLS certificate not trusted ({msg}); put the registry's CA in \
             --cert-dir DIR/HOST:PORT/ca.crt or /etc/containers/certs.d/HOST:PORT/ca.crt, \
             or pass --insecure-registry HOST:PORT to skip verification"
        ));
    }
    Failure::transient(format!("{what}: {msg}"))
}

impl Host {
    /// The registry name (`host[:port]`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn url(&self, scheme: &str, repo: &str, path: &str) -> String {
        format!("{scheme}://{}/v2/{repo}/{path}", self.api)
    }

    fn send(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        auth: Option<&Secret>,
    ) -> Result<ureq::Response, Box<ureq::Error>> {
        match url::Url::parse(url) {
            Ok(u) => self.http.get(&u, headers, auth),
            // Repository names are checked by the reference grammar; nothing is sent otherwise.
            Err(e) => Err(Box::new(ureq::Error::from(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("not a valid registry URL: {e}"),
            )))),
        }
    }

    fn transport(&self, what: &str, t: &ureq::Transport) -> Failure {
        transport_failure(what, t, &self.http.route(t.url()))
    }

    /// One request, choosing the scheme (https; http too for insecure registries).
    fn send_any_scheme(
        &self,
        repo: &str,
        path: &str,
        headers: &[(&str, &str)],
        auth: Option<&Secret>,
    ) -> Result<ureq::Response, Box<ureq::Error>> {
        let known = *self.scheme.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = known {
            return self.send(&self.url(s, repo, path), headers, auth);
        }
        match self.send(&self.url("https", repo, path), headers, auth) {
            Err(e) if self.insecure && matches!(*e, ureq::Error::Transport(_)) => {
                match self.send(&self.url("http", repo, path), headers, auth) {
                    // No answer over plain HTTP either, or a TLS server refusing plain HTTP
                    // (400): the HTTPS failure is the one to report.
                    Err(e2)
                        if matches!(
                            *e2,
                            ureq::Error::Transport(_) | ureq::Error::Status(400, _)
                        ) =>
                    {
                        Err(e)
                    }
                    r => {
                        *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) = Some("http");
                        r
                    }
                }
            }
            r => {
                if !matches!(&r, Err(e) if matches!(**e, ureq::Error::Transport(_))) {
                    *self.scheme.lock().unwrap_or_else(|e| e.into_inner()) = Some("https");
                }
                r
            }
        }
    }

    /// The credentials for `repo`; a credential helper's failure is permanent.
    fn credentials(&self, repo: &str, what: &str) -> Result<Option<Credentials>, Failure> {
        self.auth
            .lookup(&self.registry, repo)
            .map_err(|e| Failure::Permanent(format!("{what}: {e}")))
    }

    /// Answers an auth challenge: a bearer token from the realm (for credentials, or in exchange
    /// for an identity token), or Basic credentials.
    fn authorize(&self, repo: &str, challenge: &str, what: &str) -> Result<Secret, Failure> {
        let creds = self.credentials(repo, what)?;
        let (scheme, params) = parse_challenge(challenge);
        let no_creds = || {
            Failure::Permanent(format!(
                "{what}: HTTP 401 Unauthorized: authentication required and no credentials for \
                 {} in the auth files (--authfile, REGISTRY_AUTH_FILE, \
                 $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)",
                self.registry
            ))
        };
        match scheme.as_str() {
            "basic" => match &creds {
                Some(c) if c.has_password() => Ok(c.basic_header()),
                Some(c) => Err(Failure::Permanent(format!(
                    "{what}: {} asks for a user name and password, but the credentials for it \
                     are {}",
                    self.registry,
                    c.describe()
                ))),
                None => Err(no_creds()),
            },
            "bearer" => {
                let Some(realm) = params.get("realm") else {
                    return Err(Failure::Permanent(format!(
                        "{what}: bearer challenge without a realm"
                    )));
                };
                let Ok(mut url) = url::Url::parse(realm) else {
                    return Err(Failure::Permanent(format!(
                        "{what}: the bearer challenge's realm `{realm}` is not a URL"
                    )));
                };
                let scope = format!("repository:{repo}:pull");
                let refresh = creds.as_ref().and_then(|c| c.identity_token.as_ref());
                let result = match refresh {
                    // The OAuth2 refresh-token grant (distribution's token spec), in a POST body.
                    Some(token) => {
                        let mut form = vec![
                            ("grant_type", "refresh_token"),
                            ("refresh_token", token.expose()),
                            ("client_id", "prestage"),
                            ("scope", scope.as_str()),
                        ];
                        if let Some(service) = params.get("service") {
                            form.push(("service", service));
                        }
                        self.http.post_form(&url, &form)
                    }
                    None => {
                        {
                            let mut q = url.query_pairs_mut();
                            q.append_pair("scope", &scope);
                            if let Some(service) = params.get("service") {
                                q.append_pair("service", service);
                            }
                        }
                        let basic = creds
                            .as_ref()
                            .filter(|c| c.has_password())
                            .map(|c| c.basic_header());
                        self.http.get(&url, &[], basic.as_ref())
                    }
                };
                let resp = match result.map_err(|e| *e) {
                    Ok(r) => r,
                    Err(ureq::Error::Status(400 | 401 | 403, _)) => {
                        return Err(match &creds {
                            Some(c) => Failure::Permanent(format!(
                                "{what}: the token service of {} rejected {}",
                                self.registry,
                                c.describe()
                            )),
                            None => no_creds(),
                        })
                    }
                    Err(ureq::Error::Status(code, r)) => {
                        return Err(status_failure(&format!("{what}: token"), code, r))
                    }
                    Err(ureq::Error::Transport(t)) => {
                        return Err(self.transport(&format!("{what}: token"), &t))
                    }
                };
                let mut body = Vec::new();
                resp.into_reader()
                    .take(1 << 20)
                    .read_to_end(&mut body)
                    .map_err(|e| Failure::transient(format!("{what}: reading token: {e}")))?;
                let t: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
                    Failure::Permanent(format!("{what}: the token service sent no token"))
                })?;
                match t.token.or(t.access_token).filter(|t| !t.is_empty()) {
                    Some(t) => Ok(Secret::new(format!("Bearer {t}"))),
                    None => Err(Failure::Permanent(format!(
                        "{what}: the token service sent no token"
                    ))),
                }
            }
            _ => Err(Failure::Permanent(format!(
                "{what}: unsupported auth scheme `{scheme}`"
            ))),
        }
    }

    /// A GET on `/v2/REPO/PATH`, answering at most one auth challenge; non-2xx statuses and
    /// transport errors come back classified.
    pub fn get(
        &self,
        repo: &str,
        path: &str,
        headers: &[(&str, &str)],
        what: &str,
    ) -> Result<ureq::Response, Failure> {
        let cached = self
            .headers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(repo)
            .cloned();
        let mut auth = cached;
        for round in 0..2 {
            let result = self
                .send_any_scheme(repo, path, headers, auth.as_ref())
                .map_err(|e| *e);
            match result {
                Ok(r) => {
                    if let Some(a) = &auth {
                        self.headers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(repo.to_string(), a.clone());
                    }
                    return Ok(r);
                }
                Err(ureq::Error::Status(401, resp)) => {
                    let challenge = resp.header("WWW-Authenticate").unwrap_or("").to_string();
                    let sent_basic = auth
                        .as_ref()
                        .is_some_and(|a| a.expose().starts_with("Basic "));
                    if round == 1
                        || (sent_basic && challenge.to_ascii_lowercase().starts_with("basic"))
                    {
                        let who = match self.credentials(repo, what)? {
                            Some(c) => format!("{} rejected", c.describe()),
                            None => "no credentials".to_string(),
                        };
                        return Err(Failure::Permanent(format!(
                            "{what}: HTTP 401 Unauthorized by {}: {who}",
                            self.registry
                        )));
                    }
                    auth = Some(self.authorize(repo, &challenge, what)?);
                }
                Err(ureq::Error::Status(code, resp)) => {
                    return Err(status_failure(what, code, resp));
                }
                Err(ureq::Error::Transport(t)) => return Err(self.transport(what, &t)),
            }
        }
        Err(Failure::Permanent(format!("{what}: authentication failed")))
    }
}

/// An image in a registry.
pub struct RegistrySource {
    host: Arc<Host>,
    image: ImageRef,
}

impl RegistrySource {
    /// The image `image` on `host`.
    pub fn new(host: Arc<Host>, image: ImageRef) -> RegistrySource {
        RegistrySource { host, image }
    }
}

impl Source for RegistrySource {
    fn describe(&self) -> String {
        self.image.name()
    }

    fn manifest(&self, digest: Option<&Digest>) -> Result<FetchedManifest, Failure> {
        let reference = match digest {
            Some(d) => d.to_string(),
            None => self.image.manifest_reference(),
        };
        let what = format!("manifest {reference}");
        let resp = self.host.get(
            &self.image.repository,
            &format!("manifests/{reference}"),
            &[("Accept", ACCEPT)],
            &what,
        )?;
        let content_type = resp.header("Content-Type").map(str::to_string);
        let declared_digest = resp
            .header("Docker-Content-Digest")
            .and_then(|d| Digest::parse(d).ok());
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::transient(format!("{what}: reading: {e}")))?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(Failure::Permanent(format!(
                "{what}: larger than {MAX_MANIFEST} bytes"
            )));
        }
        Ok(FetchedManifest {
            bytes,
            content_type,
            declared_digest,
        })
    }

    fn blob(
        &self,
        desc: &Descriptor,
        slot: &mut PartialBlob,
        progress: &Progress,
    ) -> Result<(), Failure> {
        let what = "fetch".to_string();
        let io = |e: anyhow::Error| Failure::Permanent(format!("{what}: {e:#}"));
        let offset = slot.offset();
        if offset >= desc.size {
            // Everything is on disk already; the caller verifies it.
            return Ok(());
        }
        let range = format!("bytes={offset}-");
        let headers: Vec<(&str, &str)> = if offset > 0 {
            vec![("Range", range.as_str())]
        } else {
            Vec::new()
        };
        let resp = self.host.get(
            &self.image.repository,
            &format!("blobs/{}", desc.digest),
            &headers,
            &what,
        )?;
        match resp.status() {
            206 => {
                let start = resp
                    .header("Content-Range")
                    .and_then(|v| v.trim().strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(offset) {
                    slot.reset().map_err(io)?;
                    return Err(Failure::transient(format!(
                        "{what}: the registry answered a Range request with another range"
                    )));
                }
            }
            200 => {
                if offset > 0 {
                    slot.reset().map_err(io)?;
                }
            }
            code => {
                return Err(Failure::Permanent(format!(
                    "{what}: unexpected HTTP {code}"
                )))
            }
        }
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    return Err(Failure::transient(format!(
                        "{what}: connection lost after {} of {} bytes: {e}",
                        slot.offset(),
                        desc.size
                    )))
                }
            };
            slot.write(&buf[..n]).map_err(io)?;
            progress.bytes(n as u64);
            if slot.offset() > desc.size {
                // More than the manifest says: let the digest check reject it.
                return Ok(());
            }
        }
        if slot.offset() < desc.size {
            return Err(Failure::transient(format!(
                "{what}: body ended after {} of {} bytes",
                slot.offset(),
                desc.size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed request to a pre-signed blob URL (a redirect to object storage) is reported
    /// without its query or user info: they carry credentials.
    #[test]
    fn transport_errors_do_not_print_signed_queries() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!(
            "http://user:hunter2@127.0.0.1:{port}/v2/a/blobs/sha256:x?X-Amz-Signature=s3cr3t"
        );
        let Err(e) = ureq::get(&url).call() else {
            panic!("a closed port answered");
        };
        let ureq::Error::Transport(t) = e else {
            panic!("not a transport error: {e}");
        };
        assert!(
            t.to_string().contains("s3cr3t"),
            "ureq itself prints the query"
        );
        let text = transport_text(&t);
        assert!(
            !text.contains("s3cr3t") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(
            text.contains(&format!("127.0.0.1:{port}/v2/a/blobs/sha256:x")),
            "{text}"
        );
    }
}
