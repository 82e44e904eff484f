//! HTTP proxies from the environment, as Go's `net/http` (and so skopeo, podman and oc-mirror)
//! read them: `HTTPS_PROXY` for https URLs, `HTTP_PROXY` for http URLs (the upper-case name
//! first, then the lower-case one), and `NO_PROXY` / `no_proxy` naming what is reached directly.
//!
//! `NO_PROXY` is a comma-separated list of `*` (nothing is proxied), IP addresses, CIDR ranges
//! (`10.0.0.0/8`, `fd00::/8`), host names (`example.com` matches it and its subdomains,
//! `.example.com` and `*.example.com` only the subdomains), each optionally with `:PORT`
//! (`[::1]:5000` for IPv6). As in Go, `localhost` and loopback addresses are never proxied.
//!
//! Only `http://` proxies are supported; TLS to a registry goes through them with `CONNECT`.
//! Credentials in the proxy URL (`http://USER:PASSWORD@HOST:PORT`, percent-encoded) are sent as
//! `Proxy-Authorization: Basic` and never shown: errors and messages name the proxy as
//! `http://HOST:PORT` only.

use std::fmt;
use std::net::IpAddr;

use anyhow::{bail, Result};
use base64::Engine as _;

use super::auth::Secret;

/// One proxy server.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyServer {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<Secret>,
    /// The variable it came from.
    var: &'static str,
    /// The same, as ureq takes it (credentials included, for `CONNECT`).
    ureq: ureq::Proxy,
}

impl fmt::Debug for ProxyServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ProxyServer {
    /// `http://HOST:PORT (from VAR)`, without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "proxy http://{}:{} (from {})",
            self.host, self.port, self.var
        )
    }
}

impl ProxyServer {
    /// A key identifying the proxy (host, port, user; not the password).
    pub fn key(&self) -> String {
        format!(
            "{}:{}:{}",
            self.host,
            self.port,
            self.user.as_deref().unwrap_or("")
        )
    }

    /// The proxy as ureq takes it (credentials included, for `CONNECT`).
    pub fn ureq(&self) -> &ureq::Proxy {
        &self.ureq
    }

    /// The `Proxy-Authorization` value for requests sent to the proxy in absolute form (plain
    /// http URLs), if the proxy URL has credentials.
    pub fn authorization(&self) -> Option<Secret> {
        let user = self.user.as_deref()?;
        let pass = self.password.as_ref().map(|p| p.expose()).unwrap_or("");
        Some(Secret::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )))
    }
}

/// One `NO_PROXY` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Bypass {
    All,
    Ip(IpAddr, Option<u16>),
    Net(ipnet::IpNet),
    /// `.domain` (with the leading dot); `exact` also matches `domain` itself.
    Domain {
        suffix: String,
        exact: bool,
        port: Option<u16>,
    },
}

/// Proxies from the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    http: Option<ProxyServer>,
    https: Option<ProxyServer>,
    bypass: Vec<Bypass>,
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Parses a proxy URL; errors name the variable, never the value (it may hold a password).
fn parse_proxy(var: &'static str, value: &str) -> Result<ProxyServer> {
    let v = value.trim();
    let with_scheme = if v.contains("://") {
        v.to_string()
    } else {
        format!("http://{v}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|_| {
        anyhow::anyhow!("{var}: not a proxy URL (expected http://[USER:PASSWORD@]HOST[:PORT])")
    })?;
    if url.scheme() != "http" {
        bail!(
            "{var}: `{}://` proxies are not supported (use an http:// proxy; TLS to the \
             registry is tunnelled through it)",
            url.scheme()
        );
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(_)) => bail!("{var}: IPv6 proxy addresses are not supported"),
        None => bail!("{var}: not a proxy URL (no host)"),
    };
    let user = (!url.username().is_empty()).then(|| decode(url.username()));
    let password = url.password().map(|p| Secret::new(decode(p)));
    if user.as_deref().is_some_and(|u| u.contains(':')) {
        bail!("{var}: the proxy user name cannot contain `:`");
    }
    let port = url.port().unwrap_or(80);
    let creds = match (&user, &password) {
        (Some(u), Some(p)) => format!("{u}:{}@", p.expose()),
        (Some(u), None) => format!("{u}:@"),
        _ => String::new(),
    };
    let ureq = ureq::Proxy::new(format!("http://{creds}{host}:{port}"))
        .map_err(|_| anyhow::anyhow!("{var}: not a usable proxy address"))?;
    Ok(ProxyServer {
        host,
        port,
        user,
        password,
        var,
        ureq,
    })
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse().ok()
}

/// Parses `NO_PROXY` as Go's `httpproxy` does; malformed entries are ignored, as there.
fn parse_no_proxy(value: &str) -> Vec<Bypass> {
    let mut v = Vec::new();
    for p in value.split(',') {
        let p = p.trim().to_ascii_lowercase();
        if p.is_empty() {
            continue;
        }
        if p == "*" {
            return vec![Bypass::All];
        }
        if let Ok(net) = p.parse::<ipnet::IpNet>() {
            v.push(Bypass::Net(net));
            continue;
        }
        // IPv4:port, [IPv6]:port, host:port, or no port.
        let (host, port) = if let Some(rest) = p.strip_prefix('[') {
            match rest.split_once(']') {
                Some((h, tail)) => {
                    let port = match tail.strip_prefix(':') {
                        Some(pp) => match parse_port(pp) {
                            Some(n) => Some(n),
                            None => continue,
                        },
                        None if tail.is_empty() => None,
                        None => continue,
                    };
                    (h.to_string(), port)
                }
                None => continue,
            }
        } else if p.matches(':').count() == 1 {
            let (h, pp) = p.split_once(':').unwrap_or((&p, ""));
            match parse_port(pp) {
                Some(n) => (h.to_string(), Some(n)),
                None => continue,
            }
        } else {
            (p.clone(), None)
        };
        if host.is_empty() {
            continue;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            v.push(Bypass::Ip(ip, port));
            continue;
        }
        let host = host.strip_prefix('*').unwrap_or(&host);
        let (suffix, exact) = match host.strip_prefix('.') {
            Some(_) => (host.to_string(), false),
            None => (format!(".{host}"), true),
        };
        if suffix.len() > 1 {
            v.push(Bypass::Domain {
                suffix,
                exact,
                port,
            });
        }
    }
    v
}

impl ProxyConfig {
    /// No proxies.
    pub fn none() -> ProxyConfig {
        ProxyConfig::default()
    }

    /// Proxies from the process environment.
    pub fn from_env() -> Result<ProxyConfig> {
        ProxyConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Proxies from variables looked up with `get` (`HTTPS_PROXY`, `https_proxy`, …).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<ProxyConfig> {
        let any = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|n| get(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
        };
        let http = any(["HTTP_PROXY", "http_proxy"])
            .map(|(n, v)| parse_proxy(n, &v))
            .transpose()?;
        let https = any(["HTTPS_PROXY", "https_proxy"])
            .map(|(n, v)| parse_proxy(n, &v))
            .transpose()?;
        let bypass = any(["NO_PROXY", "no_proxy"])
            .map(|(_, v)| parse_no_proxy(&v))
            .unwrap_or_default();
        Ok(ProxyConfig {
            http,
            https,
            bypass,
        })
    }

    /// Whether any proxy is configured.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy for a request to `scheme://host:port`, if any (`host` without brackets).
    pub fn for_target(&self, scheme: &str, host: &str, port: u16) -> Option<&ProxyServer> {
        let proxy = match scheme {
            "https" => self.https.as_ref()?,
            "http" => self.http.as_ref()?,
            _ => return None,
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host == "localhost" {
            return None;
        }
        let ip = host.parse::<IpAddr>().ok();
        if ip.is_some_and(|ip| ip.is_loopback()) {
            return None;
        }
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        let bypassed = self.bypass.iter().any(|b| match b {
            Bypass::All => true,
            Bypass::Ip(a, p) => ip == Some(*a) && port_ok(p),
            Bypass::Net(net) => ip.is_some_and(|ip| net.contains(&ip)),
            Bypass::Domain {
                suffix,
                exact,
                port: p,
            } => {
                (host.ends_with(suffix.as_str()) || (*exact && host == &suffix[1..])) && port_ok(p)
            }
        });
        (!bypassed).then_some(proxy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(vars: &[(&str, &str)]) -> ProxyConfig {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyConfig::from_lookup(|n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()))
            .unwrap()
    }

    fn via(c: &ProxyConfig, scheme: &str, host: &str, port: u16) -> Option<String> {
        c.for_target(scheme, host, port).map(|p| p.host.clone())
    }

    #[test]
    fn variables_and_precedence() {
        let c = conf(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "lower:3128"),
            ("http_proxy", "plain"),
        ]);
        assert_eq!(via(&c, "https", "quay.io", 443).as_deref(), Some("upper"));
        assert_eq!(via(&c, "http", "quay.io", 80).as_deref(), Some("plain"));
        assert_eq!(c.http.as_ref().unwrap().port, 80);
        // https never falls back to HTTP_PROXY (Go).
        let c = conf(&[("HTTP_PROXY", "http://p:1")]);
        assert_eq!(via(&c, "https", "quay.io", 443), None);
        let c = conf(&[("https_proxy", "lower:3128")]);
        assert_eq!(via(&c, "https", "quay.io", 443).as_deref(), Some("lower"));
        assert!(conf(&[("HTTPS_PROXY", "")]).is_empty());
    }

    #[test]
    fn loopback_is_never_proxied() {
        let c = conf(&[("HTTPS_PROXY", "http://p:1")]);
        for h in [
            "localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "LOCALHOST.",
        ] {
            assert_eq!(via(&c, "https", h, 5000), None, "{h}");
        }
        assert_eq!(
            via(&c, "https", "localhost.example", 443).as_deref(),
            Some("p")
        );
    }

    #[test]
    fn no_proxy_forms() {
        let c = conf(&[
            ("HTTPS_PROXY", "http://p:1"),
            (
                "NO_PROXY",
                " example.com, .suffix.org,*.star.net, 10.0.0.0/8, 192.168.1.7, \
                 [fd00::1]:5000, ported.io:5000, 172.16.0.1:443, ,fd00:ab::/32",
            ),
        ]);
        let direct = |h: &str, port: u16| via(&c, "https", h, port).is_none();
        assert!(direct("example.com", 443));
        assert!(direct("reg.example.com", 443));
        assert!(direct("EXAMPLE.COM", 443));
        assert!(!direct("notexample.com", 443));
        assert!(direct("a.suffix.org", 443));
        assert!(!direct("suffix.org", 443), ".suffix.org: subdomains only");
        assert!(direct("a.star.net", 443));
        assert!(!direct("star.net", 443));
        assert!(direct("10.1.2.3", 5000));
        assert!(!direct("11.1.2.3", 5000));
        assert!(direct("192.168.1.7", 1));
        assert!(direct("fd00::1", 5000));
        assert!(!direct("fd00::1", 5001));
        assert!(direct("fd00:ab::7", 443));
        assert!(direct("ported.io", 5000));
        assert!(!direct("ported.io", 443));
        assert!(direct("172.16.0.1", 443));
        assert!(!direct("172.16.0.1", 5000));
        // A suffix matches at a dot only.
        assert!(!direct("10example.com", 443));
        let all = conf(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "x.io,*")]);
        assert_eq!(via(&all, "https", "quay.io", 443), None);
        // The upper-case name wins.
        let c = conf(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("NO_PROXY", "a.io"),
            ("no_proxy", "*"),
        ]);
        assert_eq!(via(&c, "https", "b.io", 443).as_deref(), Some("p"));
    }

    #[test]
    fn credentials_are_decoded_and_never_shown() {
        let c = conf(&[(
            "HTTPS_PROXY",
            "http://us%40er:p%3Ass%2Fw0rd@proxy.corp:8080/",
        )]);
        let p = c.https.clone().unwrap();
        assert_eq!(p.user.as_deref(), Some("us@er"));
        assert_eq!(p.password.as_ref().unwrap().expose(), "p:ss/w0rd");
        assert_eq!(p.port, 8080);
        let shown = format!("{p} {p:?} {c:?}");
        assert!(
            !shown.contains("p:ss") && !shown.contains("p%3Ass"),
            "{shown}"
        );
        assert!(
            shown.contains("http://proxy.corp:8080 (from HTTPS_PROXY)"),
            "{shown}"
        );
        let a = p.authorization().unwrap();
        assert_eq!(
            a.expose(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("us@er:p:ss/w0rd")
            )
        );
        for (bad, want) in [
            (
                "https://u:topsecret@proxy:3128",
                "`https://` proxies are not supported",
            ),
            ("socks5://u:topsecret@proxy:1080", "`socks5://` proxies"),
            ("http://u:topsecret@[::1]:3128", "IPv6 proxy addresses"),
            ("http://u:topsecret@proxy:99999", "not a proxy URL"),
        ] {
            let e = ProxyConfig::from_lookup(|n| (n == "HTTPS_PROXY").then(|| bad.to_string()))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("HTTPS_PROXY: ") && e.contains(want), "{e}");
            assert!(!e.contains("topsecret"), "{e}");
        }
    }
}
