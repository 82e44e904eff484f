//! Shared harness for the fetch tests: Debian's `docker-registry` started on 127.0.0.1 (random
//! free port; optional TLS with a CA made by openssl, optional htpasswd auth), deterministic test
//! images pushed with plain HTTP API calls, a counting and fault-injecting HTTP proxy, and
//! helpers to run `prestage pull` and inspect the store.
//!
//! Every external tool is looked up with [`require`], which fails the test naming the tool and
//! the Debian package that provides it.

#![allow(dead_code)]

pub mod images;
pub mod proxy;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Prints one progress line straight to stderr (not captured), so CI logs show what ran.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let t = std::thread::current();
        let line = format!("[{}] {}\n", t.name().unwrap_or("test"), format!($($arg)*));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

/// The path of a system tool, or a failed test naming the Debian package to install.
pub fn require(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| {
            panic!(
                "this test needs `{tool}`: install it with `apt-get install {package}` \
                 (or run `cargo xtask ci`, which installs the test tools)"
            )
        })
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1/localhost, made with openssl.
pub struct Ca {
    /// Directory holding the files.
    pub dir: PathBuf,
    /// CA certificate (PEM).
    pub ca_crt: PathBuf,
    /// Server certificate (PEM).
    pub server_crt: PathBuf,
    /// Server key (PEM).
    pub server_key: PathBuf,
}

impl Ca {
    /// Makes a CA and a server certificate in `dir`.
    pub fn new(dir: &Path) -> Ca {
        let openssl = require("openssl", "openssl");
        std::fs::create_dir_all(dir).unwrap();
        let p = |n: &str| dir.join(n);
        run_ok(
            Command::new(&openssl)
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=prestage test CA",
                    "-keyout",
                ])
                .arg(p("ca.key"))
                .arg("-out")
                .arg(p("ca.crt")),
        );
        let ca = Ca {
            dir: dir.to_path_buf(),
            ca_crt: p("ca.crt"),
            server_crt: p("server.crt"),
            server_key: p("server.key"),
        };
        ca.issue(
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
            "crt",
        );
        ca
    }

    /// Issues `NAME.key` and `NAME.EXT` (the certificate) in the CA's directory for `subject`,
    /// with the openssl extensions `ext`.
    pub fn issue(&self, name: &str, subject: &str, ext: &str, cert_ext: &str) -> PathBuf {
        let openssl = require("openssl", "openssl");
        let p = |n: &str| self.dir.join(n);
        run_ok(
            Command::new(&openssl)
                .args([
                    "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout",
                ])
                .arg(p(&format!("{name}.key")))
                .arg("-out")
                .arg(p(&format!("{name}.csr"))),
        );
        std::fs::write(p(&format!("{name}.cnf")), ext).unwrap();
        let serial = 2 + self.dir.read_dir().map(|d| d.count()).unwrap_or(0);
        run_ok(
            Command::new(&openssl)
                .args(["x509", "-req", "-days", "2", "-set_serial"])
                .arg(serial.to_string())
                .arg("-in")
                .arg(p(&format!("{name}.csr")))
                .arg("-CA")
                .arg(&self.ca_crt)
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p(&format!("{name}.cnf")))
                .arg("-out")
                .arg(p(&format!("{name}.{cert_ext}"))),
        );
        p(&format!("{name}.{cert_ext}"))
    }

    /// A `--cert-dir` holding the CA for `registry` (`host:port`) in the certs.d convention.
    pub fn cert_dir(&self, root: &Path, registry: &str) -> PathBuf {
        let d = root.join(registry);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&self.ca_crt, d.join("ca.crt")).unwrap();
        root.to_path_buf()
    }
}

/// What a registry is started with.
#[derive(Default)]
pub struct RegistryOptions<'a> {
    /// Serve TLS with this CA's server certificate.
    pub tls: Option<&'a Ca>,
    /// htpasswd (bcrypt) auth with this user and password.
    pub htpasswd: Option<(&'a str, &'a str)>,
    /// Storage directory (shared with another registry instance), else a new one.
    pub storage: Option<PathBuf>,
    /// Write the access log (one line per request) into `registry.log`.
    pub access_log: bool,
    /// With `tls`: require client certificates issued by the CAs of this file
    /// (`http.tls.clientcas`).
    pub client_ca: Option<&'a Path>,
    /// Token auth (`auth.token`): realm URL, service, issuer, and the certificate bundle whose
    /// keys sign the tokens.
    pub token: Option<(&'a str, &'a str, &'a str, &'a Path)>,
}

/// A running `docker-registry`, killed on drop.
pub struct Registry {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Its storage directory.
    pub storage: PathBuf,
    /// Its log (and access log, when enabled).
    pub log: PathBuf,
    child: Child,
}

impl Registry {
    /// Starts a registry in `dir` and waits until it accepts connections (on another port if
    /// the one picked was taken meanwhile).
    pub fn start(dir: &Path, opts: RegistryOptions) -> Registry {
        let mut last = String::new();
        for _ in 0..5 {
            match Registry::try_start(dir, &opts) {
                Ok(r) => return r,
                Err(log) if log.contains("address already in use") => last = log,
                Err(log) => panic!("docker-registry exited: {log}"),
            }
        }
        panic!("docker-registry could not bind a port: {last}")
    }

    fn try_start(dir: &Path, opts: &RegistryOptions) -> Result<Registry, String> {
        let bin = require("docker-registry", "docker-registry");
        std::fs::create_dir_all(dir).unwrap();
        let storage = opts.storage.clone().unwrap_or_else(|| dir.join("storage"));
        std::fs::create_dir_all(&storage).unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: {}\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: prestage-test-secret\n",
            !opts.access_log,
            storage.display()
        );
        if let Some(ca) = opts.tls {
            cfg += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                ca.server_crt.display(),
                ca.server_key.display()
            );
            if let Some(c) = opts.client_ca {
                cfg += &format!("    clientcas:\n      - {}\n", c.display());
            }
        }
        if let Some((realm, service, issuer, bundle)) = opts.token {
            cfg += &format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    \
                 issuer: {issuer}\n    rootcertbundle: {}\n",
                bundle.display()
            );
        }
        if let Some((user, pass)) = opts.htpasswd {
            let htpasswd = require("htpasswd", "apache2-utils");
            let out = Command::new(htpasswd)
                .args(["-Bbn", user, pass])
                .output()
                .expect("running htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let f = dir.join("htpasswd");
            std::fs::write(&f, &out.stdout).unwrap();
            cfg += &format!(
                "auth:\n  htpasswd:\n    realm: prestage-test\n    path: {}\n",
                f.display()
            );
        }
        let cfg_path = dir.join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let mut reg = Registry {
            port,
            storage,
            log: dir.join("registry.log"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(st)) = reg.child.try_wait() {
                return Err(format!(
                    "({st}) {}",
                    std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(reg)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The blob GET requests in the access log so far (`RegistryOptions::access_log`), as
    /// their request paths.
    pub fn blob_gets(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split('"').nth(1))
            .filter(|r| r.starts_with("GET /v2/") && r.contains("/blobs/"))
            .map(|r| r.split_whitespace().nth(1).unwrap_or_default().to_string())
            .collect()
    }

    /// Plain-HTTP base URL (for registries without TLS).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain registry to push through, and one on the same storage served with `opts` (TLS,
/// auth, ...), in `root/NAME-plain` and `root/NAME`.
pub fn pair(root: &Path, name: &str, opts: RegistryOptions) -> (Registry, Registry) {
    let plain = Registry::start(
        &root.join(format!("{name}-plain")),
        RegistryOptions::default(),
    );
    let served = Registry::start(
        &root.join(name),
        RegistryOptions {
            storage: Some(plain.storage.clone()),
            ..opts
        },
    );
    (plain, served)
}

/// The number of successful (200, 206) responses of `proxy` to paths containing `what`.
pub fn served(proxy: &proxy::Proxy, what: &str) -> usize {
    proxy
        .log()
        .iter()
        .filter(|e| e.path.contains(what) && (e.status == 200 || e.status == 206))
        .count()
}

/// An auth.json with `user:pass` for `host`.
pub fn auth_file(path: &Path, host: &str, user: &str, pass: &str) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    std::fs::write(
        path,
        format!("{{\"auths\": {{\"{host}\": {{\"auth\": \"{b64}\"}}}}}}\n"),
    )
    .unwrap();
}

/// The prestage binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_prestage"))
}

/// A `prestage` command with an environment that cannot pick up this machine's auth files,
/// registries.conf (an empty one of its own, without drop-ins) or proxies.
pub fn prestage(home: &Path) -> Command {
    std::fs::create_dir_all(home).unwrap();
    let conf = home.join("no-registries.conf");
    if !conf.exists() {
        std::fs::write(&conf, "").unwrap();
    }
    let mut c = Command::new(bin());
    c.env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env(
            "CONTAINERS_REGISTRIES_CONF",
            home.join("no-registries.conf"),
        )
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR");
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        c.env_remove(v);
    }
    c.stdin(Stdio::null());
    c
}

/// Runs a command, returning its output.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed:\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `--json` summary of a pull.
pub fn summary(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON summary ({e}): {stdout}"))
}

/// sha256 of bytes as `sha256:hex`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Checks every file of the store's blobs/ and manifests/ hashes to its name; returns how many.
pub fn check_store_hashes(store: &Path) -> usize {
    let mut n = 0;
    for sub in ["blobs/sha256", "manifests/sha256"] {
        let dir = store.join(sub);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let got = sha256(&std::fs::read(&p).unwrap());
            assert_eq!(got, format!("sha256:{name}"), "{} is corrupt", p.display());
            n += 1;
        }
    }
    n
}

/// Writes a list file.
pub fn list_file(path: &Path, refs: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    writeln!(f, "# images for the test").unwrap();
    for r in refs {
        writeln!(f, "{r}  # an image").unwrap();
    }
}
