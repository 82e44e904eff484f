//! Registry access as users have it, against real parts on loopback: Debian's docker-registry
//! with the self-signed `openssl req -x509 … -addext subjectAltName=…` certificate as its own
//! `ca.crt`, with `clientcas` (mTLS) and with token auth (tokens signed by a test key and issued
//! by a token service in this process); Debian's tinyproxy (with Basic auth) in a mount
//! namespace whose `/etc/hosts` alone knows the registry's name, and `NO_PROXY` bypassing it;
//! credential helper scripts on PATH; registries.conf drop-in directories. No secret may appear
//! in any output.

#[path = "registry/mod.rs"]
mod registry;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry::images::{data, Image, Pusher};
use registry::proxy::Proxy;
use registry::{require, Ca, Registry, RegistryOptions};

const USER: &str = "tester";
const PASS: &str = "Registry-Pa55-9f3c";
const PROXY_USER: &str = "puser";
/// Percent-encoded in the proxy URL (tinyproxy takes `[-A-Za-z0-9._]` passwords only).
const PROXY_PASS: &str = "pass-Proxy-77";
const PROXY_PASS_ENC: &str = "pass%2DProxy%2D77";

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

/// The certificate of the registry docs' one-liner: self-signed, `CA:TRUE` (openssl's default
/// for `req -x509`), with the given subjectAltName.
fn self_signed(dir: &Path, san: &str) -> Ca {
    let openssl = require("openssl", "openssl");
    std::fs::create_dir_all(dir).unwrap();
    let (crt, key) = (dir.join("domain.crt"), dir.join("domain.key"));
    run_ok(
        Command::new(openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-days",
                "2",
                "-subj",
                "/CN=registry.test",
                "-addext",
            ])
            .arg(format!("subjectAltName={san}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt),
    );
    let text = String::from_utf8(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&crt)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        text.contains("CA:TRUE"),
        "the one-liner's certificate is a CA: {text}"
    );
    Ca {
        dir: dir.to_path_buf(),
        ca_crt: crt.clone(),
        server_crt: crt,
        server_key: key,
    }
}

/// `DIR/REGISTRY/ca.crt` = `crt`; returns DIR.
fn cert_dir(dir: &Path, registry: &str, crt: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join(registry)).unwrap();
    std::fs::copy(crt, dir.join(registry).join("ca.crt")).unwrap();
    dir.to_path_buf()
}

/// Pushes a small image `repo:v1` through `plain` (a plain-HTTP registry on shared storage).
fn push(plain: &Registry, repo: &str, seed: u64) -> Image {
    Pusher::new(&plain.url()).image(repo, Some("v1"), false, "amd64", &[&data(seed, 48 * 1024)])
}

/// A plain registry and, on the same storage, one started with `opts` (TLS etc.).
fn pair(root: &Path, name: &str, opts: RegistryOptions) -> (Registry, Registry) {
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

fn no_secrets(out: &str) {
    for s in [
        PASS,
        PROXY_PASS,
        PROXY_PASS_ENC,
        REFRESH,
        HELPER_SECRET,
        "Rejected-Refresh-0",
    ] {
        assert!(!out.contains(s), "a secret in the output:\n{out}");
    }
}

/// Runs a pull that must succeed; returns stderr + stdout (checked for secrets).
fn pull_ok(cmd: &mut Command) -> String {
    let out = registry::output(cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    no_secrets(&text);
    text
}

/// Runs a pull that must fail; returns stderr (checked for secrets).
fn pull_fails(cmd: &mut Command) -> String {
    let e = registry::fails(cmd);
    no_secrets(&e);
    e
}

fn pull(root: &Path, store: &str) -> Command {
    let mut c = registry::prestage(root);
    c.args(["pull", "--retries", "1", "--store"])
        .arg(root.join(store));
    c
}

#[test]
fn self_signed_certificate_that_is_its_own_ca() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cert = self_signed(&root.join("cert"), "DNS:registry.test,IP:127.0.0.1");
    let (plain, reg) = pair(
        root,
        "tls",
        RegistryOptions {
            tls: Some(&cert),
            ..Default::default()
        },
    );
    push(&plain, "apps/one", 1);
    let image = format!("{}/apps/one:v1", reg.host());

    say!("the certificate as the registry's ca.crt: accepted");
    let certs = cert_dir(&root.join("certs.d"), &reg.host(), &cert.ca_crt);
    pull_ok(pull(root, "s1").arg("--cert-dir").arg(&certs).arg(&image));

    say!("not configured: refused with the fix named");
    let e = pull_fails(pull(root, "s2").arg(&image));
    assert!(
        e.contains("TLS certificate not trusted") && e.contains("ca.crt"),
        "{e}"
    );

    say!("configured for another registry only: refused");
    let other = cert_dir(&root.join("other.d"), "127.0.0.1:1", &cert.ca_crt);
    let e = pull_fails(pull(root, "s3").arg("--cert-dir").arg(&other).arg(&image));
    assert!(e.contains("TLS certificate not trusted"), "{e}");

    say!("a name the certificate does not hold: refused, though the certificate is trusted");
    let port = reg.port;
    let certs = cert_dir(
        &root.join("local.d"),
        &format!("localhost:{port}"),
        &cert.ca_crt,
    );
    let e = pull_fails(
        pull(root, "s4")
            .arg("--cert-dir")
            .arg(&certs)
            .arg(format!("localhost:{port}/apps/one:v1")),
    );
    assert!(
        e.contains("TLS certificate is not valid for the name")
            && e.contains("not valid for name \"localhost\""),
        "{e}"
    );
}

/// Debian's tinyproxy on 127.0.0.1 with Basic auth, in a mount namespace whose `/etc/hosts`
/// maps the given names to 127.0.0.1: only the proxy can resolve them.
struct Tinyproxy {
    port: u16,
    log: PathBuf,
    child: Child,
}

impl Tinyproxy {
    fn start(dir: &Path, names: &[&str]) -> Tinyproxy {
        let bin = require("tinyproxy", "tinyproxy");
        let unshare = require("unshare", "util-linux");
        std::fs::create_dir_all(dir).unwrap();
        let hosts = dir.join("hosts");
        let mut h = String::from("127.0.0.1 localhost\n");
        for n in names {
            h += &format!("127.0.0.1 {n}\n");
        }
        std::fs::write(&hosts, h).unwrap();
        for _ in 0..5 {
            let port = registry::free_port();
            let conf = dir.join("tinyproxy.conf");
            std::fs::write(
                &conf,
                format!(
                    "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogLevel Info\nMaxClients 64\n\
                     Allow 127.0.0.1\nBasicAuth {PROXY_USER} {PROXY_PASS}\n"
                ),
            )
            .unwrap();
            let log = dir.join("tinyproxy.log");
            let f = std::fs::File::create(&log).unwrap();
            // unshare and sh exec: the child's pid is tinyproxy's.
            let child = Command::new(&unshare)
                .args([
                    "-m",
                    "sh",
                    "-c",
                    "mount --bind \"$0\" /etc/hosts && exec \"$1\" -d -c \"$2\"",
                ])
                .arg(&hosts)
                .arg(&bin)
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(f.try_clone().unwrap())
                .stderr(f)
                .spawn()
                .expect("starting tinyproxy");
            let mut p = Tinyproxy { port, log, child };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return p;
                }
                if let Ok(Some(st)) = p.child.try_wait() {
                    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                    assert!(
                        log.contains("in use") || log.contains("Could not create listening"),
                        "tinyproxy in a mount namespace exited ({st}); this test runs it with \
                         `unshare -m` and a bind-mounted /etc/hosts, which needs root:\n{log}"
                    );
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "tinyproxy did not start listening"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("tinyproxy could not bind a port");
    }

    /// `http://puser:PASSWORD@127.0.0.1:PORT`, the password percent-encoded.
    fn url(&self, password: &str) -> String {
        format!("http://{PROXY_USER}:{password}@127.0.0.1:{}", self.port)
    }

    /// The request lines the proxy logged (`CONNECT host:port HTTP/1.1`, `GET http://…`).
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("): ").map(|(_, r)| r))
            .filter(|r| r.starts_with("CONNECT ") || r.starts_with("GET "))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cmd`'s program and environment, run in a mount namespace whose `/etc/hosts` is `hosts`.
fn with_hosts(cmd: &Command, hosts: &Path) -> Command {
    let mut c = Command::new(require("unshare", "util-linux"));
    c.args([
        "-m",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
    ])
    .arg(hosts)
    .arg(cmd.get_program())
    .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(Stdio::null());
    c
}

#[test]
fn proxies_tunnel_tls_and_no_proxy_bypasses_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cert = self_signed(
        &root.join("cert"),
        "DNS:registry.test,DNS:direct.test,IP:127.0.0.1",
    );
    let (plain, reg) = pair(
        root,
        "tls",
        RegistryOptions {
            tls: Some(&cert),
            htpasswd: Some((USER, PASS)),
            ..Default::default()
        },
    );
    push(&plain, "apps/one", 1);
    let port = reg.port;
    let proxy = Tinyproxy::start(&root.join("proxy"), &["registry.test"]);
    let certs = root.join("certs.d");
    for h in ["registry.test", "direct.test", "127.0.0.1"] {
        cert_dir(&certs, &format!("{h}:{port}"), &cert.ca_crt);
    }
    let auth = root.join("auth.json");
    std::fs::write(&auth, "{\"auths\": {}}").unwrap();
    for h in ["registry.test", "direct.test", "127.0.0.1"] {
        let f = root.join(format!("auth-{h}.json"));
        registry::auth_file(&f, &format!("{h}:{port}"), USER, PASS);
    }
    let pull_via = |store: &str, host: &str| {
        let mut c = pull(root, store);
        c.arg("--cert-dir")
            .arg(&certs)
            .arg("--authfile")
            .arg(root.join(format!("auth-{host}.json")))
            .arg(format!("{host}:{port}/apps/one:v1"));
        c
    };
    let connects = |p: &Tinyproxy| {
        p.requests()
            .iter()
            .filter(|r| r.starts_with("CONNECT "))
            .count()
    };

    say!("registry.test resolves only in the proxy's namespace: not reachable directly");
    let e = pull_fails(&mut pull_via("s0", "registry.test"));
    assert!(e.contains("registry.test"), "{e}");

    say!("HTTPS_PROXY with credentials: CONNECT tunnel, TLS verified end to end");
    pull_ok(pull_via("s1", "registry.test").env("HTTPS_PROXY", proxy.url(PROXY_PASS_ENC)));
    let reqs = proxy.requests();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with(&format!("CONNECT registry.test:{port} "))),
        "{reqs:?}"
    );
    let tunnels = connects(&proxy);

    say!("the lower-case name works too");
    pull_ok(pull_via("s2", "registry.test").env("https_proxy", proxy.url(PROXY_PASS_ENC)));
    assert!(connects(&proxy) > tunnels);

    say!("a wrong proxy password: one clear error naming the proxy, not the password");
    let e = pull_fails(pull_via("s3", "registry.test").env("HTTPS_PROXY", proxy.url("Wrong-77")));
    assert!(!e.contains("Wrong-77"), "{e}");
    assert!(
        e.contains(&format!(
            "proxy http://127.0.0.1:{} (from HTTPS_PROXY)",
            proxy.port
        )),
        "{e}"
    );
    assert!(e.contains("proxy credentials"), "{e}");

    for no_proxy in [
        "registry.test",
        ".test",
        "*.test",
        &format!("registry.test:{port}"),
        "*",
    ] {
        say!("NO_PROXY={no_proxy}: direct, so registry.test does not resolve");
        let before = connects(&proxy);
        let e = pull_fails(
            pull_via("s4", "registry.test")
                .env("HTTPS_PROXY", proxy.url(PROXY_PASS_ENC))
                .env("NO_PROXY", no_proxy),
        );
        assert!(!e.contains("through proxy"), "{e}");
        assert_eq!(connects(&proxy), before, "the proxy was asked");
    }
    say!("NO_PROXY for another port or host: proxied");
    for no_proxy in ["registry.test:1", "other.test,10.0.0.0/8"] {
        pull_ok(
            pull_via("s5", "registry.test")
                .env("HTTPS_PROXY", proxy.url(PROXY_PASS_ENC))
                .env("no_proxy", no_proxy),
        );
    }

    say!("direct.test resolves only for prestage: NO_PROXY is what makes it reachable");
    let hosts = root.join("prestage-hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.1 direct.test\n").unwrap();
    let mut c = pull_via("s6", "direct.test");
    c.env("HTTPS_PROXY", proxy.url(PROXY_PASS_ENC));
    let e = pull_fails(&mut with_hosts(&c, &hosts));
    assert!(
        e.contains(&format!("through proxy http://127.0.0.1:{}", proxy.port)),
        "{e}"
    );
    c.env("NO_PROXY", "direct.test");
    let before = connects(&proxy);
    pull_ok(&mut with_hosts(&c, &hosts));
    assert_eq!(connects(&proxy), before, "the proxy was asked");

    say!("loopback is never proxied (as in Go), whatever the proxy");
    pull_ok(pull_via("s7", "127.0.0.1").env("HTTPS_PROXY", "http://127.0.0.1:9"));

    say!("an unsupported proxy URL: refused, naming the variable and not the password");
    let e = pull_fails(pull_via("s8", "registry.test").env(
        "HTTPS_PROXY",
        format!("socks5://{PROXY_USER}:{PROXY_PASS_ENC}@127.0.0.1:1"),
    ));
    assert!(
        e.contains("HTTPS_PROXY: `socks5://` proxies are not supported"),
        "{e}"
    );
}

/// A one-shot HTTP server answering every GET with `body`; returns its port and the request
/// heads it saw.
fn http_server(body: String) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => break,
                }
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

#[test]
fn update_service_through_an_http_proxy() {
    use prestage::fetch::http::{HttpClient, Timeouts};
    use prestage::fetch::proxy::ProxyConfig;
    use prestage::fetch::tls::TlsSettings;
    use prestage::imageset::graph::GraphSource;

    let dir = tempfile::tempdir().unwrap();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let graph = serde_json::json!({
        "version": 1,
        "nodes": [{
            "version": "4.14.3",
            "payload": format!("quay.io/openshift-release-dev/ocp-release@{digest}"),
            "metadata": {"io.openshift.upgrades.graph.release.channels": "stable-4.14"}
        }],
        "edges": []
    })
    .to_string();
    let (port, seen) = http_server(graph);
    let proxy = Tinyproxy::start(&dir.path().join("proxy"), &["graph.test"]);
    let url = format!("http://graph.test:{port}/api/upgrades_info/v1/graph");
    let client = |vars: Vec<(&'static str, String)>| {
        move |host: &str| -> anyhow::Result<HttpClient> {
            let proxies = ProxyConfig::from_lookup(|n| {
                vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone())
            })?;
            Ok(HttpClient::new(
                TlsSettings::default().client_config(host, false)?,
                proxies,
                Timeouts {
                    connect: Duration::from_secs(10),
                    io: Duration::from_secs(30),
                    connections: 1,
                },
            ))
        }
    };
    let source = GraphSource::parse(&url);

    say!("HTTP_PROXY with credentials (Proxy-Authorization on an absolute-form request)");
    let g = source
        .load(
            "stable-4.14",
            "amd64",
            &client(vec![("HTTP_PROXY", proxy.url(PROXY_PASS_ENC))]),
        )
        .unwrap();
    let dbg = format!("{g:?}");
    assert!(dbg.contains(&digest), "{dbg}");
    let reqs = proxy.requests();
    assert!(
        reqs.iter().any(|r| r.starts_with(&format!(
            "GET http://graph.test:{port}/api/upgrades_info/v1/graph?channel=stable-4.14&arch=amd64 "
        ))),
        "{reqs:?}"
    );
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        !heads[0]
            .to_ascii_lowercase()
            .contains("proxy-authorization"),
        "the proxy credentials went past the proxy: {heads:?}"
    );

    say!("without the proxy, or bypassing it: graph.test does not resolve");
    for vars in [
        vec![],
        vec![
            ("HTTP_PROXY", proxy.url(PROXY_PASS_ENC)),
            ("NO_PROXY", "graph.test".to_string()),
        ],
    ] {
        let e = format!(
            "{:#}",
            source
                .load("stable-4.14", "amd64", &client(vars))
                .unwrap_err()
        );
        assert!(
            e.contains("graph.test") && !e.contains("through proxy"),
            "{e}"
        );
        no_secrets(&e);
    }
    say!("a wrong proxy password: refused by the proxy, the password not shown");
    let e = format!(
        "{:#}",
        source
            .load(
                "stable-4.14",
                "amd64",
                &client(vec![("HTTP_PROXY", proxy.url("Wrong-77"))])
            )
            .unwrap_err()
    );
    // tinyproxy answers a plain-HTTP request with bad credentials with 401.
    assert!(
        e.contains(&format!(
            "HTTP 401 Unauthorized (through proxy http://127.0.0.1:{} (from HTTP_PROXY))",
            proxy.port
        )) && !e.contains("Wrong-77"),
        "{e}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

const HELPER_SECRET: &str = "Helper-Leak-5e1";

/// Writes `docker-credential-NAME` into `bin`: it logs the server it was asked for to
/// `bin/NAME.log` and answers with `answer` (a shell snippet; `$server` is the input).
fn helper(bin: &Path, name: &str, answer: &str) {
    std::fs::create_dir_all(bin).unwrap();
    let p = bin.join(format!("docker-credential-{name}"));
    let log = bin.join(format!("{name}.log"));
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 9\nserver=$(cat)\n\
             printf '%s\\n' \"$server\" >> '{}'\n{answer}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn helper_log(bin: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(bin.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn credential_helpers_and_namespaced_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ca = Ca::new(&root.join("ca"));
    let (plain, reg) = pair(
        root,
        "tls",
        RegistryOptions {
            tls: Some(&ca),
            htpasswd: Some((USER, PASS)),
            ..Default::default()
        },
    );
    push(&plain, "apps/one", 1);
    push(&plain, "apps/two", 2);
    push(&plain, "other/three", 3);
    let host = reg.host();
    let certs = ca.cert_dir(&root.join("certs.d"), &host);
    let bin = root.join("bin");
    helper(
        &bin,
        "good",
        &format!(
            "case \"$server\" in {host}) printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\
             \"Secret\":\"{PASS}\"}}' \"$server\";; *) echo 'credentials not found in native \
             keychain'; exit 1;; esac"
        ),
    );
    helper(
        &bin,
        "broken",
        &format!("echo '{{\"Secret\":\"{HELPER_SECRET}\"}} something went wrong'; exit 3"),
    );
    helper(
        &bin,
        "token",
        &format!("printf '{{\"ServerURL\":\"%s\",\"Username\":\"<token>\",\"Secret\":\"{HELPER_SECRET}\"}}' \"$server\""),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let auth = root.join("auth.json");
    let pull_with = |store: &str, json: String, refs: &[&str]| {
        std::fs::write(&auth, json).unwrap();
        let mut c = pull(root, store);
        c.env("PATH", &path)
            .arg("--cert-dir")
            .arg(&certs)
            .arg("--authfile")
            .arg(&auth);
        for r in refs {
            c.arg(format!("{host}/{r}:v1"));
        }
        c
    };

    say!("credHelpers: the helper is asked once for the registry, with the server on stdin");
    pull_ok(&mut pull_with(
        "s1",
        format!("{{\"credHelpers\": {{\"{host}\": \"good\"}}}}"),
        &["apps/one", "apps/two", "other/three"],
    ));
    assert_eq!(helper_log(&bin, "good"), vec![host.clone()]);

    say!("credsStore: the default helper");
    pull_ok(&mut pull_with(
        "s2",
        "{\"auths\": {}, \"credsStore\": \"good\"}".to_string(),
        &["apps/one"],
    ));
    assert_eq!(helper_log(&bin, "good").len(), 2);

    say!("the file's auths entries before its credsStore");
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    pull_ok(&mut pull_with(
        "s3",
        format!(
            "{{\"auths\": {{\"{host}\": {{\"auth\": \"{}\"}}}}, \"credsStore\": \"broken\"}}",
            b64(&format!("{USER}:{PASS}"))
        ),
        &["apps/one"],
    ));
    assert!(helper_log(&bin, "broken").is_empty());

    say!("a failing helper: one line naming it, its output (with a secret) not shown");
    let e = pull_fails(&mut pull_with(
        "s4",
        format!("{{\"credHelpers\": {{\"{host}\": \"broken\"}}}}"),
        &["apps/one"],
    ));
    assert!(
        e.contains(&format!(
            "credential helper docker-credential-broken (named in {}) failed for {host} \
             (exit status: 3; its output is not shown)",
            auth.display()
        )),
        "{e}"
    );
    assert!(!e.contains("something went wrong"), "{e}");
    let e = pull_fails(&mut pull_with(
        "s5",
        format!("{{\"credHelpers\": {{\"{host}\": \"missing\"}}}}"),
        &["apps/one"],
    ));
    assert!(
        e.contains("credential helper docker-credential-missing (named in")
            && e.contains("is not on PATH"),
        "{e}"
    );

    say!("an identity token where the registry wants a password: said so, not shown");
    let e = pull_fails(&mut pull_with(
        "s6",
        format!("{{\"credHelpers\": {{\"{host}\": \"token\"}}}}"),
        &["apps/one"],
    ));
    assert!(
        e.contains(
            "asks for a user name and password, but the credentials for it are the \
             identity token from credential helper docker-credential-token"
        ),
        "{e}"
    );

    say!("namespaced keys: the longest match wins");
    let json = format!(
        "{{\"auths\": {{\"{host}\": {{\"auth\": \"{}\"}}, \"{host}/apps\": {{\"auth\": \"{}\"}}}}}}",
        b64("wrong:Not-The-Password"),
        b64(&format!("{USER}:{PASS}"))
    );
    pull_ok(&mut pull_with(
        "s7",
        json.clone(),
        &["apps/one", "apps/two"],
    ));
    let e = pull_fails(&mut pull_with("s8", json, &["other/three"]));
    assert!(
        e.contains("the credentials of user `wrong`") && !e.contains("Not-The-Password"),
        "{e}"
    );
}

const REFRESH: &str = "Refresh-Token-3d9a";
const SERVICE: &str = "prestage-registry";
const ISSUER: &str = "prestage-test-issuer";

/// One request the token service saw.
#[derive(Clone, Debug)]
struct TokenRequest {
    method: String,
    target: String,
    form: Vec<(String, String)>,
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A token service (plain HTTP on 127.0.0.1) issuing registry JWTs signed with `key` (PKCS#8
/// DER, RSA) carrying `cert` in `x5c`, for the OAuth2 refresh-token grant with `REFRESH` only.
fn token_service(key: Vec<u8>, cert: Vec<u8>) -> (u16, Arc<Mutex<Vec<TokenRequest>>>) {
    use base64::Engine as _;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&key).expect("token signing key");
    let x5c = base64::engine::general_purpose::STANDARD.encode(&cert);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(1) => head.push(b[0]),
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let mut first = head.lines().next().unwrap_or("").split_whitespace();
            let method = first.next().unwrap_or("").to_string();
            let target = first.next().unwrap_or("").to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            let _ = c.read_exact(&mut body);
            let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let get = |k: &str| {
                form.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            log.lock().unwrap().push(TokenRequest {
                method: method.clone(),
                target,
                form: form.clone(),
            });
            let granted = method == "POST"
                && get("grant_type") == "refresh_token"
                && get("refresh_token") == REFRESH
                && get("service") == SERVICE;
            let (status, answer) = if granted {
                let repo = get("scope")
                    .strip_prefix("repository:")
                    .and_then(|s| s.strip_suffix(":pull"))
                    .unwrap_or("")
                    .to_string();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": ISSUER, "sub": USER, "aud": SERVICE,
                    "exp": now + 600, "nbf": now - 60, "iat": now, "jti": format!("t{now}"),
                    "access": [{"type": "repository", "name": repo, "actions": ["pull"]}]
                });
                let signing = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    signing.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                let jwt = format!("{signing}.{}", b64url(&sig));
                (
                    200,
                    serde_json::json!({"access_token": jwt, "expires_in": 600}).to_string(),
                )
            } else {
                (400, "{\"error\": \"invalid_grant\"}".to_string())
            };
            let _ = write!(
                c,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (port, seen)
}

/// The DER of the first PEM block of `path`.
fn pem_der(path: &Path) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).unwrap();
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

#[test]
fn identity_tokens_with_a_token_auth_registry() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ca = Ca::new(&root.join("ca"));
    let signer = root.join("signer");
    std::fs::create_dir_all(&signer).unwrap();
    run_ok(
        Command::new(require("openssl", "openssl"))
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=prestage token signer",
                "-keyout",
            ])
            .arg(signer.join("key.pem"))
            .arg("-out")
            .arg(signer.join("cert.pem")),
    );
    let (tport, seen) = token_service(
        pem_der(&signer.join("key.pem")),
        pem_der(&signer.join("cert.pem")),
    );
    let realm = format!("http://127.0.0.1:{tport}/token");
    let bundle = signer.join("cert.pem");
    let (plain, reg) = pair(
        root,
        "token",
        RegistryOptions {
            tls: Some(&ca),
            token: Some((&realm, SERVICE, ISSUER, &bundle)),
            ..Default::default()
        },
    );
    push(&plain, "apps/one", 1);
    let host = reg.host();
    let certs = ca.cert_dir(&root.join("certs.d"), &host);
    let auth = root.join("auth.json");
    let pull_with = |store: &str, json: String| {
        std::fs::write(&auth, json).unwrap();
        let mut c = pull(root, store);
        c.arg("--cert-dir")
            .arg(&certs)
            .arg("--authfile")
            .arg(&auth)
            .arg(format!("{host}/apps/one:v1"));
        c
    };

    say!("no credentials: the registry's token auth refuses");
    let e = pull_fails(&mut pull_with("s0", "{\"auths\": {}}".into()));
    assert!(e.contains("no credentials"), "{e}");

    say!("identitytoken: exchanged with the refresh-token grant in a POST body");
    seen.lock().unwrap().clear();
    pull_ok(&mut pull_with(
        "s1",
        format!("{{\"auths\": {{\"{host}\": {{\"identitytoken\": \"{REFRESH}\"}}}}}}"),
    ));
    let reqs = seen.lock().unwrap().clone();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r.method, "POST", "{reqs:?}");
        assert!(
            !r.target.contains(REFRESH),
            "the token in the URL: {reqs:?}"
        );
        let get = |k: &str| r.form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("grant_type"), Some("refresh_token"));
        assert_eq!(get("scope"), Some("repository:apps/one:pull"));
        assert_eq!(get("service"), Some(SERVICE));
        assert_eq!(get("client_id"), Some("prestage"));
    }
    registry::ok(
        registry::prestage(root)
            .args(["store", "verify", "--store"])
            .arg(root.join("s1")),
    );

    say!("an identity token from a credential helper (`<token>` user name)");
    let bin = root.join("bin");
    helper(
        &bin,
        "refresh",
        &format!("printf '{{\"ServerURL\":\"%s\",\"Username\":\"<token>\",\"Secret\":\"{REFRESH}\"}}' \"$server\""),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    pull_ok(
        pull_with(
            "s2",
            format!("{{\"credHelpers\": {{\"{host}\": \"refresh\"}}}}"),
        )
        .env("PATH", &path),
    );
    assert_eq!(helper_log(&bin, "refresh"), vec![host.clone()]);

    say!("a rejected identity token: said so, not shown");
    let e = pull_fails(&mut pull_with(
        "s3",
        format!("{{\"auths\": {{\"{host}\": {{\"identitytoken\": \"Rejected-Refresh-0\"}}}}}}"),
    ));
    assert!(
        e.contains(&format!(
            "the token service of {host} rejected the identity token from {}",
            auth.display()
        )),
        "{e}"
    );
}

#[test]
fn client_certificates_for_mtls_registries() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let ca = Ca::new(&root.join("ca"));
    // A client certificate issued by the same test CA, for clientAuth.
    let openssl = require("openssl", "openssl");
    let c = |n: &str| ca.dir.join(n);
    run_ok(
        Command::new(&openssl)
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=prestage client",
                "-keyout",
            ])
            .arg(c("client.key"))
            .arg("-out")
            .arg(c("client.csr")),
    );
    std::fs::write(c("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    run_ok(
        Command::new(&openssl)
            .args(["x509", "-req", "-days", "2", "-set_serial", "7", "-in"])
            .arg(c("client.csr"))
            .arg("-CA")
            .arg(&ca.ca_crt)
            .arg("-CAkey")
            .arg(c("ca.key"))
            .arg("-extfile")
            .arg(c("client.cnf"))
            .arg("-out")
            .arg(c("client.cert")),
    );
    let (plain, reg) = pair(
        root,
        "mtls",
        RegistryOptions {
            tls: Some(&ca),
            client_ca: Some(&ca.ca_crt),
            ..Default::default()
        },
    );
    push(&plain, "apps/one", 1);
    let host = reg.host();
    let image = format!("{host}/apps/one:v1");
    let certs = ca.cert_dir(&root.join("certs.d"), &host);
    let d = certs.join(&host);

    say!("no client certificate: refused with the fix named");
    let e = pull_fails(pull(root, "s0").arg("--cert-dir").arg(&certs).arg(&image));
    assert!(
        e.contains("client certificate") && e.contains("client.cert"),
        "{e}"
    );

    say!("client.cert + client.key in the registry's directory: accepted");
    std::fs::copy(c("client.cert"), d.join("client.cert")).unwrap();
    std::fs::copy(c("client.key"), d.join("client.key")).unwrap();
    pull_ok(pull(root, "s1").arg("--cert-dir").arg(&certs).arg(&image));

    say!("a certificate without its key, a key without its certificate: refused");
    std::fs::remove_file(d.join("client.key")).unwrap();
    let e = pull_fails(pull(root, "s2").arg("--cert-dir").arg(&certs).arg(&image));
    assert!(
        e.contains("client.cert: client certificate without its key"),
        "{e}"
    );
    std::fs::remove_file(d.join("client.cert")).unwrap();
    std::fs::copy(c("client.key"), d.join("client.key")).unwrap();
    let e = pull_fails(pull(root, "s3").arg("--cert-dir").arg(&certs).arg(&image));
    assert!(
        e.contains("client.key: client key without its certificate"),
        "{e}"
    );
    let key = std::fs::read_to_string(c("client.key")).unwrap();
    let body = key.lines().nth(1).unwrap();
    assert!(!e.contains(body), "{e}");
}

fn served(proxy: &Proxy, what: &str) -> usize {
    proxy
        .log()
        .iter()
        .filter(|e| e.path.contains(what) && (e.status == 200 || e.status == 206))
        .count()
}

#[test]
fn registries_conf_drop_ins_as_installed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let primary = Registry::start(&root.join("primary"), RegistryOptions::default());
    let mirror = Registry::start(&root.join("mirror"), RegistryOptions::default());
    let pp = Proxy::start(primary.port);
    let pm = Proxy::start(mirror.port);
    let img = push(&primary, "ocp/app", 1);
    let mp = Pusher::new(&mirror.url());
    mp.copy("m/ocp/app", &img, &[&data(1, 48 * 1024)]);
    mp.manifest("m/ocp/app", "v1", &img.manifest.media_type, &img.bytes);
    let pinned = format!("{}/ocp/app@{}", pp.host(), img.manifest.digest);
    let tagged = format!("{}/ocp/app:v1", pp.host());

    // The user's registries.conf and its drop-ins (no CONTAINERS_REGISTRIES_CONF).
    let conf_dir = root.join(".config/containers");
    let d = conf_dir.join("registries.conf.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        conf_dir.join("registries.conf"),
        format!(
            "[[registry]]\nlocation = \"{p}/ocp\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"127.0.0.1:1/nowhere\"\n",
            p = pp.host()
        ),
    )
    .unwrap();
    let pull_user = |store: &str, r: &str| {
        let mut c = pull(root, store);
        c.env_remove("CONTAINERS_REGISTRIES_CONF").arg(r);
        c
    };
    let mirror_conf = |pull_from: &str| {
        std::fs::write(
            d.join("50-mirror.conf"),
            format!(
                "[[registry]]\nlocation = \"{p}/ocp\"\ninsecure = true\n\
                 [[registry.mirror]]\nlocation = \"{m}/m/ocp\"\ninsecure = true\n\
                 pull-from-mirror = \"{pull_from}\"\n",
                p = pp.host(),
                m = pm.host()
            ),
        )
        .unwrap();
    };
    std::fs::write(d.join("README.md"), "not a drop-in [[[").unwrap();

    say!("tag-only mirror from a drop-in (replacing the main file's entry): serves tags only");
    mirror_conf("tag-only");
    pull_ok(&mut pull_user("s1", &tagged));
    assert_eq!(served(&pm, "/v2/m/ocp/app/manifests/v1"), 1);
    assert!(pp.log().is_empty(), "primary asked: {:?}", pp.log());
    pm.clear_log();
    pull_ok(&mut pull_user("s2", &pinned));
    assert!(
        pm.log().is_empty(),
        "mirror asked for a digest: {:?}",
        pm.log()
    );
    assert_eq!(served(&pp, "/v2/ocp/app/manifests/"), 1);
    pp.clear_log();

    say!("pull-from-mirror = all: both");
    mirror_conf("all");
    pull_ok(&mut pull_user("s3", &tagged));
    pull_ok(&mut pull_user("s4", &pinned));
    assert_eq!(served(&pm, "/v2/m/ocp/app/manifests/"), 2);
    assert!(pp.log().is_empty(), "primary asked: {:?}", pp.log());

    say!("a later drop-in blocks the registry: refused, naming that file");
    pp.clear_log();
    pm.clear_log();
    std::fs::write(
        d.join("90-block.conf"),
        format!(
            "[[registry]]\nlocation = \"{p}/ocp\"\nblocked = true\n",
            p = pp.host()
        ),
    )
    .unwrap();
    let e = pull_fails(&mut pull_user("s5", &tagged));
    assert!(
        e.contains(&format!(
            "registry `{}/ocp` is blocked in {}",
            pp.host(),
            d.join("90-block.conf").display()
        )),
        "{e}"
    );
    assert!(
        pp.log().is_empty() && pm.log().is_empty(),
        "asked: {:?} {:?}",
        pp.log(),
        pm.log()
    );

    say!("--registries-conf FILE reads FILE.d, not the user's drop-ins");
    let file = root.join("site.conf");
    std::fs::write(&file, "").unwrap();
    let insecure = ["--insecure-registry".to_string(), pp.host()];
    pull_ok(
        pull(root, "s6")
            .args(&insecure)
            .arg("--registries-conf")
            .arg(&file)
            .arg(&tagged),
    );
    std::fs::create_dir_all(root.join("site.conf.d")).unwrap();
    std::fs::write(
        root.join("site.conf.d/block.conf"),
        format!(
            "[[registry]]\nprefix = \"{}\"\nlocation = \"{}\"\nblocked = true\n",
            pp.host(),
            pp.host()
        ),
    )
    .unwrap();
    let e = pull_fails(
        pull(root, "s7")
            .args(&insecure)
            .arg("--registries-conf")
            .arg(&file)
            .arg(&tagged),
    );
    assert!(e.contains("site.conf.d/block.conf"), "{e}");
}
