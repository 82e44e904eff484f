//! HTTP for registries and the update service: ureq agents sharing one TLS configuration, one
//! agent per proxy route, the route chosen for every request (redirects included) from the
//! [`ProxyConfig`], and redirects followed here so that each hop gets its own route.
//!
//! https URLs reach a proxy with `CONNECT` (ureq sends the proxy's credentials there); http URLs
//! are sent to the proxy in absolute form with `Proxy-Authorization` added here. An
//! `Authorization` header follows a redirect only to the same host and port without leaving
//! https, as Go's client and ureq's `SameHost` do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::auth::Secret;
use super::proxy::{ProxyConfig, ProxyServer};

/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

/// Timeouts and pooling of a client.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Connect timeout.
    pub connect: Duration,
    /// Timeout of each read/write on a connection.
    pub io: Duration,
    /// Idle connections kept per host.
    pub connections: usize,
}

/// An HTTP client for one service (one TLS configuration), routing through proxies.
pub struct HttpClient {
    tls: Arc<rustls::ClientConfig>,
    proxies: ProxyConfig,
    timeouts: Timeouts,
    /// Proxy key ("" = direct) -> agent.
    agents: Mutex<HashMap<String, ureq::Agent>>,
}

/// `(scheme, host, port)` of a URL, the port defaulted by scheme.
fn target(url: &url::Url) -> Option<(&str, String, u16)> {
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_string(),
        url::Host::Ipv4(a) => a.to_string(),
        url::Host::Ipv6(a) => a.to_string(),
    };
    Some((url.scheme(), host, url.port_or_known_default()?))
}

impl HttpClient {
    /// A client verifying servers with `tls`.
    pub fn new(tls: Arc<rustls::ClientConfig>, proxies: ProxyConfig, timeouts: Timeouts) -> Self {
        HttpClient {
            tls,
            proxies,
            timeouts,
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// The proxy a request to `url` goes through, if any.
    pub fn proxy_for(&self, url: &url::Url) -> Option<&ProxyServer> {
        let (scheme, host, port) = target(url)?;
        self.proxies.for_target(scheme, &host, port)
    }

    /// ` through proxy http://HOST:PORT (from VAR)` for messages about `url`, or nothing.
    pub fn route(&self, url: Option<&url::Url>) -> String {
        url.and_then(|u| self.proxy_for(u))
            .map(|p| format!(" (through {p})"))
            .unwrap_or_default()
    }

    fn agent(&self, proxy: Option<&ProxyServer>) -> ureq::Agent {
        let key = proxy.map(|p| p.key()).unwrap_or_default();
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents
            .entry(key)
            .or_insert_with(|| {
                let mut b = ureq::AgentBuilder::new()
                    .tls_config(self.tls.clone())
                    .timeout_connect(self.timeouts.connect)
                    .timeout_read(self.timeouts.io)
                    .timeout_write(self.timeouts.io)
                    .max_idle_connections_per_host(self.timeouts.connections.max(1))
                    .redirects(0)
                    .user_agent(concat!("prestage/", env!("CARGO_PKG_VERSION")));
                if let Some(p) = proxy {
                    b = b.proxy(p.ureq().clone());
                }
                b.build()
            })
            .clone()
    }

    /// A request for `url` on the agent of its route (with `Proxy-Authorization` when an http
    /// URL goes through a proxy with credentials).
    pub fn request(&self, method: &str, url: &url::Url) -> ureq::Request {
        let proxy = self.proxy_for(url);
        let mut req = self.agent(proxy).request_url(method, url);
        if url.scheme() == "http" {
            if let Some(a) = proxy.and_then(|p| p.authorization()) {
                req = req.set("Proxy-Authorization", a.expose());
            }
        }
        req
    }

    /// A GET of `url` with `headers` and `auth`, following redirects; statuses of 400 and more
    /// are errors (as ureq reports them).
    pub fn get(
        &self,
        url: &url::Url,
        headers: &[(&str, &str)],
        auth: Option<&Secret>,
    ) -> Result<ureq::Response, Box<ureq::Error>> {
        let mut url = url.clone();
        let first = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.request("GET", &url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(a) = auth {
                let same_host = url.host_str() == first.host_str()
                    && url.port_or_known_default() == first.port_or_known_default()
                    && (url.scheme() == first.scheme() || url.scheme() == "https");
                if same_host {
                    req = req.set("Authorization", a.expose());
                }
            }
            let resp = req.call().map_err(Box::new)?;
            let next = match resp.status() {
                301 | 302 | 303 | 307 | 308 => {
                    resp.header("Location").and_then(|l| url.join(l).ok())
                }
                _ => None,
            };
            match next {
                Some(n) => url = n,
                None => return Ok(resp),
            }
        }
        Err(Box::new(ureq::Error::from(std::io::Error::other(format!(
            "more than {MAX_REDIRECTS} redirects (the last to {}://{}{})",
            url.scheme(),
            url.host_str().unwrap_or("?"),
            url.path()
        )))))
    }

    /// A POST of an `application/x-www-form-urlencoded` body (not redirected).
    pub fn post_form(
        &self,
        url: &url::Url,
        form: &[(&str, &str)],
    ) -> Result<ureq::Response, Box<ureq::Error>> {
        self.request("POST", url).send_form(form).map_err(Box::new)
    }
}
