//! Registry credentials from pull secrets / auth.json files, in the containers order:
//! `--authfile`, else `REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.docker/config.json` (the first file with an entry for a registry wins).
//!
//! Keys may be `host[:port]`, `host[:port]/namespace…` (the most specific match wins) or
//! Docker-style URLs (`https://index.docker.io/v1/`). Secrets are held in [`Secret`], whose
//! `Debug` and `Display` never show the value, and no error message quotes a file's values.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;

/// A secret string (password, token): redacted in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The value, for putting into a request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A username and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: Secret,
    /// The file they came from.
    pub source: PathBuf,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .field("source", &self.source)
            .finish()
    }
}

impl Credentials {
    /// The `Authorization: Basic …` header value.
    pub fn basic_header(&self) -> Secret {
        let raw = format!("{}:{}", self.username, self.password.expose());
        Secret(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Credentials from the auth files that apply.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Per file, in precedence order: normalized key -> credentials.
    files: Vec<BTreeMap<String, Credentials>>,
}

/// Normalizes an auth.json key: drops a URL scheme and Docker's `/v1/`/`/v2/` suffixes, and maps
/// Docker Hub's names to `docker.io`.
fn normalize_key(k: &str) -> String {
    let mut k = k.trim();
    for scheme in ["https://", "http://"] {
        if let Some(rest) = k.strip_prefix(scheme) {
            k = rest;
            if let Some((host, _)) = k.split_once('/') {
                k = host;
            }
        }
    }
    let k = k.trim_end_matches('/');
    let (host, rest) = match k.split_once('/') {
        Some((h, r)) => (h, Some(r)),
        None => (k, None),
    };
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    match rest {
        Some(r) => format!("{host}/{r}"),
        None => host.to_string(),
    }
}

fn parse_file(path: &Path) -> Result<BTreeMap<String, Credentials>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file: AuthFile = serde_json::from_slice(&bytes).map_err(|e| {
        // serde_json's message names line and column and the expected type, never the value.
        anyhow::anyhow!(
            "{}: not a valid auth file (line {}, column {}: {})",
            path.display(),
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Syntax => "JSON syntax error",
                serde_json::error::Category::Eof => "unexpected end of file",
                _ => "expected {\"auths\": {\"HOST\": {\"auth\": \"BASE64\"}}}",
            }
        )
    })?;
    let mut out = BTreeMap::new();
    for (key, e) in file.auths {
        let (username, password) = match (e.auth, e.username, e.password) {
            (Some(a), _, _) if !a.is_empty() => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok());
                let Some((u, p)) = decoded.as_deref().and_then(|s| s.split_once(':')) else {
                    bail!(
                        "{}: auths.\"{key}\".auth: not the base64 of user:password",
                        path.display()
                    );
                };
                (u.to_string(), p.to_string())
            }
            (_, Some(u), Some(p)) => (u, p),
            _ => continue,
        };
        out.insert(
            normalize_key(&key),
            Credentials {
                username,
                password: Secret(password),
                source: path.to_path_buf(),
            },
        );
    }
    Ok(out)
}

impl AuthConfig {
    /// No credentials.
    pub fn none() -> AuthConfig {
        AuthConfig::default()
    }

    /// Loads `explicit` (which must exist) or the default files that exist.
    pub fn load(explicit: Option<&Path>) -> Result<AuthConfig> {
        let mut paths = Vec::new();
        if let Some(p) = explicit {
            if !p.is_file() {
                bail!("--authfile {}: no such file", p.display());
            }
            paths.push(p.to_path_buf());
        } else {
            if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|p| !p.is_empty()) {
                let p = PathBuf::from(p);
                if !p.is_file() {
                    bail!("REGISTRY_AUTH_FILE {}: no such file", p.display());
                }
                paths.push(p);
            }
            if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
                paths.push(PathBuf::from(x).join("containers/auth.json"));
            }
            if let Some(h) = std::env::var_os("HOME").filter(|p| !p.is_empty()) {
                paths.push(PathBuf::from(h).join(".docker/config.json"));
            }
            paths.retain(|p| p.is_file());
        }
        let files = paths.iter().map(|p| parse_file(p)).collect::<Result<_>>()?;
        Ok(AuthConfig { files })
    }

    /// Credentials for `registry/repository`: the most specific key of the first file that has
    /// one.
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<&Credentials> {
        let full = format!("{registry}/{repository}");
        let mut candidates = vec![full.clone()];
        let mut s = full.as_str();
        while let Some(i) = s.rfind('/') {
            s = &s[..i];
            candidates.push(s.to_string());
        }
        self.files
            .iter()
            .find_map(|f| candidates.iter().find_map(|c| f.get(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_lookup() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("quay.io/org"), "quay.io/org");
        assert_eq!(normalize_key("http://h:5000"), "h:5000");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &p,
            format!(
                r#"{{"auths":{{"quay.io":{{"auth":"{}"}},"quay.io/org":{{"auth":"{}"}}}}}}"#,
                b64("a:pw1"),
                b64("b:pw2")
            ),
        )
        .unwrap();
        let a = AuthConfig::load(Some(&p)).unwrap();
        assert_eq!(a.lookup("quay.io", "org/img").unwrap().username, "b");
        assert_eq!(a.lookup("quay.io", "other/img").unwrap().username, "a");
        assert!(a.lookup("example.com", "x").is_none());
        let dbg = format!("{:?}", a);
        assert!(!dbg.contains("pw1") && !dbg.contains("pw2"), "{dbg}");
        std::fs::write(&p, r#"{"auths":{"quay.io":{"auth":"bm9jb2xvbg=="}}}"#).unwrap();
        let e = AuthConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("auths.\"quay.io\".auth"), "{e}");
        std::fs::write(&p, "{\"auths\": {\"x\": \"secretvalue\"}}").unwrap();
        let e = AuthConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(!e.contains("secretvalue") && e.contains("line 1"), "{e}");
    }
}
