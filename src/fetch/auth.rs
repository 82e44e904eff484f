//! Registry credentials from pull secrets / auth.json files, in the containers order:
//! `--authfile`, else `REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.docker/config.json` (the first file with credentials for a registry wins).
//!
//! In each file, as containers-auth.json(5) and Docker's config.json define them:
//! - `credHelpers` (`{"HOST[:PORT]": "NAME"}`) names the credential helper of one registry, and
//!   `credsStore` (`"NAME"`) the helper of every registry without other credentials in the file;
//!   the helper is run as `docker-credential-NAME get` with the server on stdin and answers
//!   `{"ServerURL", "Username", "Secret"}` (a `Username` of `<token>` makes the secret an
//!   identity token). Helpers run only when a registry asks for credentials, once per server.
//! - `auths` keys may be `host[:port]`, `host[:port]/namespace…` (the most specific match wins)
//!   or Docker-style URLs (`https://index.docker.io/v1/`); an entry holds `auth`
//!   (base64 `user:password`), `username` + `password`, or an `identitytoken` (an OAuth2 refresh
//!   token, exchanged at the registry's token service).
//!
//! Secrets are held in [`Secret`], whose `Debug` and `Display` never show the value; no error
//! message quotes a file's values or a helper's output.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;

use super::reference::DOCKER_HUB;

/// A secret string (password, token): redacted in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The value, for putting into a request only.
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

/// Where credentials came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredSource {
    /// An `auths` entry of this file.
    File(PathBuf),
    /// A credential helper named in a file.
    Helper {
        /// `docker-credential-NAME`.
        program: String,
        /// The file naming it.
        file: PathBuf,
    },
}

impl fmt::Display for CredSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredSource::File(p) => write!(f, "{}", p.display()),
            CredSource::Helper { program, file } => {
                write!(f, "credential helper {program} named in {}", file.display())
            }
        }
    }
}

/// Credentials for one registry: a user name and password, or an identity token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name (may be empty with an identity token).
    pub username: String,
    /// Password or token.
    pub password: Secret,
    /// An OAuth2 refresh token for the registry's token service.
    pub identity_token: Option<Secret>,
    /// Where they came from.
    pub source: CredSource,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .field("identity_token", &self.identity_token)
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

    /// Whether there is a user name and password (not only an identity token).
    pub fn has_password(&self) -> bool {
        !self.username.is_empty() || !self.password.expose().is_empty()
    }

    /// "the credentials of user `NAME` (from SOURCE)" or "the identity token from SOURCE".
    pub fn describe(&self) -> String {
        if self.identity_token.is_some() {
            format!("the identity token from {}", self.source)
        } else {
            format!(
                "the credentials of user `{}` (from {})",
                self.username, self.source
            )
        }
    }
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    auths: BTreeMap<String, RawEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct RawEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// One parsed auth file.
#[derive(Clone, Debug, Default)]
struct AuthFile {
    path: PathBuf,
    /// Normalized key -> credentials.
    auths: BTreeMap<String, Credentials>,
    /// Normalized registry -> helper name.
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

/// What a helper answered for a server: credentials, none, or a one-line failure.
type HelperAnswer = Result<Option<Credentials>, String>;

/// Credentials from the auth files that apply.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// In precedence order.
    files: Vec<AuthFile>,
    /// (program, server) -> answer, shared by every clone.
    helpers: Arc<Mutex<HashMap<(String, String), HelperAnswer>>>,
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

fn helper_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn parse_file(path: &Path) -> Result<AuthFile> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file: RawFile = serde_json::from_slice(&bytes).map_err(|e| {
        // serde_json's message names line and column and the expected type, never the value.
        anyhow::anyhow!(
            "{}: not a valid auth file (line {}, column {}: {})",
            path.display(),
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Syntax => "JSON syntax error",
                serde_json::error::Category::Eof => "unexpected end of file",
                _ =>
                    "expected {\"auths\": {\"HOST\": {\"auth\": \"BASE64\"}}, \
                      \"credHelpers\": {\"HOST\": \"NAME\"}, \"credsStore\": \"NAME\"}",
            }
        )
    })?;
    let mut auths = BTreeMap::new();
    for (key, e) in file.auths {
        let identity_token = e.identitytoken.filter(|t| !t.is_empty()).map(Secret);
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
                (u.to_string(), p.trim_end_matches('\0').to_string())
            }
            (_, Some(u), Some(p)) => (u, p),
            (_, u, _) if identity_token.is_some() => (u.unwrap_or_default(), String::new()),
            _ => continue,
        };
        auths.insert(
            normalize_key(&key),
            Credentials {
                username,
                password: Secret(password),
                identity_token,
                source: CredSource::File(path.to_path_buf()),
            },
        );
    }
    let mut cred_helpers = BTreeMap::new();
    for (key, name) in file.cred_helpers {
        if !helper_name_ok(&name) {
            bail!(
                "{}: credHelpers.\"{key}\": `{name}` is not a credential helper name \
                 (letters, digits, `-`, `_`, `.`)",
                path.display()
            );
        }
        cred_helpers.insert(normalize_key(&key), name);
    }
    let creds_store = file.creds_store.filter(|s| !s.is_empty());
    if let Some(name) = &creds_store {
        if !helper_name_ok(name) {
            bail!(
                "{}: credsStore: `{name}` is not a credential helper name \
                 (letters, digits, `-`, `_`, `.`)",
                path.display()
            );
        }
    }
    Ok(AuthFile {
        path: path.to_path_buf(),
        auths,
        cred_helpers,
        creds_store,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperOutput {
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

/// Runs `docker-credential-NAME get` for `server`; `Ok(None)` when it has no credentials for
/// it. Failures are one line naming the helper, never quoting its output.
fn run_helper(program: &str, server: &str, file: &Path) -> HelperAnswer {
    let named = format!("credential helper {program} (named in {})", file.display());
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{named} is not on PATH"),
            _ => format!("{named} could not be started: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that does not read its input fails below, by its exit status.
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{named}: {e}"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!(
            "{named} failed for {server} ({}; its output is not shown)",
            out.status
        ));
    }
    let answer: HelperOutput = serde_json::from_slice(&out.stdout).map_err(|_| {
        format!(
            "{named} answered {server} with something other than \
             {{\"ServerURL\", \"Username\", \"Secret\"}} JSON (not shown)"
        )
    })?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    let source = CredSource::Helper {
        program: program.to_string(),
        file: file.to_path_buf(),
    };
    Ok(Some(if answer.username == "<token>" {
        Credentials {
            username: String::new(),
            password: Secret(String::new()),
            identity_token: Some(Secret(answer.secret)),
            source,
        }
    } else {
        Credentials {
            username: answer.username,
            password: Secret(answer.secret),
            identity_token: None,
            source,
        }
    }))
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
        Ok(AuthConfig {
            files,
            helpers: Arc::default(),
        })
    }

    /// What helper `name` (named in `file`) has for `registry`, asking it at most once.
    fn helper(&self, name: &str, registry: &str, file: &Path) -> HelperAnswer {
        let program = format!("docker-credential-{name}");
        // Docker stores Docker Hub's credentials under its v1 URL.
        let server = if registry == DOCKER_HUB {
            "https://index.docker.io/v1/".to_string()
        } else {
            registry.to_string()
        };
        let mut cache = self.helpers.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((program.clone(), server.clone()))
            .or_insert_with(|| run_helper(&program, &server, file))
            .clone()
    }

    /// Credentials for `registry/repository`: per file in order, the registry's credential
    /// helper, else the most specific `auths` key, else the file's `credsStore`. `Err` is a
    /// helper's one-line failure.
    pub fn lookup(&self, registry: &str, repository: &str) -> Result<Option<Credentials>, String> {
        let full = format!("{registry}/{repository}");
        let mut candidates = vec![full.clone()];
        let mut s = full.as_str();
        while let Some(i) = s.rfind('/') {
            s = &s[..i];
            candidates.push(s.to_string());
        }
        for f in &self.files {
            if let Some(name) = f.cred_helpers.get(registry) {
                match self.helper(name, registry, &f.path)? {
                    Some(c) => return Ok(Some(c)),
                    None => continue,
                }
            }
            if let Some(c) = candidates.iter().find_map(|c| f.auths.get(c)) {
                return Ok(Some(c.clone()));
            }
            if let Some(name) = &f.creds_store {
                if let Some(c) = self.helper(name, registry, &f.path)? {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
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
        let user = |r: &str, p: &str| a.lookup(r, p).unwrap().map(|c| c.username);
        assert_eq!(user("quay.io", "org/img").as_deref(), Some("b"));
        assert_eq!(user("quay.io", "org").as_deref(), Some("b"));
        assert_eq!(user("quay.io", "orgx/img").as_deref(), Some("a"));
        assert_eq!(user("quay.io", "other/img").as_deref(), Some("a"));
        assert_eq!(user("example.com", "x"), None);
        let dbg = format!("{:?}", a);
        assert!(!dbg.contains("pw1") && !dbg.contains("pw2"), "{dbg}");
        std::fs::write(&p, r#"{"auths":{"quay.io":{"auth":"bm9jb2xvbg=="}}}"#).unwrap();
        let e = AuthConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("auths.\"quay.io\".auth"), "{e}");
        std::fs::write(
            &p,
            r#"{"auths": {"reg.io/ns": {"identitytoken": "refresh-secret"}},
                "credHelpers": {"https://helped.io/v1/": "ecr-login"}, "credsStore": "pass"}"#,
        )
        .unwrap();
        let a = AuthConfig::load(Some(&p)).unwrap();
        let c = a.lookup("reg.io", "ns/img").unwrap().unwrap();
        assert_eq!(
            c.identity_token.as_ref().unwrap().expose(),
            "refresh-secret"
        );
        assert!(!c.has_password());
        assert!(!format!("{c:?} {}", c.describe()).contains("refresh-secret"));
        assert_eq!(
            a.files[0].cred_helpers.get("helped.io").map(String::as_str),
            Some("ecr-login")
        );
        assert_eq!(a.files[0].creds_store.as_deref(), Some("pass"));
        std::fs::write(&p, r#"{"credHelpers": {"quay.io": "../../bin/sh"}}"#).unwrap();
        let e = AuthConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(
            e.contains("credHelpers.\"quay.io\": `../../bin/sh` is not a credential helper name"),
            "{e}"
        );
        std::fs::write(&p, "{\"auths\": {\"x\": \"secretvalue\"}}").unwrap();
        let e = AuthConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(!e.contains("secretvalue") && e.contains("line 1"), "{e}");
    }
}
