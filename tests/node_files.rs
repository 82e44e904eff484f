//! The files beside an image (`OUT.node/`), judged by the programs that consume them:
//! `ignition-validate` and the real Ignition binary (Debian `ignition`) for the overrides,
//! `systemd-analyze verify` for the units, `shellcheck` for every script, `assisted.sh` (curl and
//! jq) against a stand-in Assisted Service holding existing overrides, installer arguments and cluster manifests
//! (its merge compared with prestage's own), a YAML parser for the SiteConfig snippet, `virt-install` / `virsh` (libvirt's test driver) for the lab
//! files, and `prestage node` regenerating the directory from a built image.

mod common;
mod nodeenv;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::{require, run, scratch, Run};
use prestage::compose::emit::Format as ImageFormat;
use prestage::node::NodeSet;
use prestage::payload::{Format, Stage};

const FORMATS: [(&str, Format); 2] = [("shared", Format::Shared), ("ztp", Format::Ztp)];
/// (override, unit, loader) of each stage.
const STAGES: [(&str, &str, &str); 2] = [
    ("discovery.ign", "precache-images.service", "extract-ai.sh"),
    (
        "install.ign",
        "precache-ocp-images.service",
        "extract-ocp.sh",
    ),
];

/// `OUT.node/` of `format` for the partition `data`, written by prestage into `dir`.
fn node_dir(dir: &Path, format: Format, image: Option<(&Path, ImageFormat)>) -> PathBuf {
    let mut set = NodeSet::new("data").expect("a valid label");
    if let Some((p, f)) = image {
        set = set.for_image(p, f, 1 << 30);
    }
    let out = dir.join(format!("{}.node", format.name()));
    set.write(format, &out).expect("writing the node files");
    out
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// `ignition-validate` must accept `text` with no message at all, and it must be spec 3.2.0.
fn assert_valid_ignition(text: &str, what: &str, dir: &Path) {
    nodeenv::assert_ignition_validate_accepts(text, what, dir);
    let v: serde_json::Value = serde_json::from_str(text).expect("Ignition is JSON");
    assert_eq!(v["ignition"]["version"], "3.2.0", "{what}: spec version");
}

#[test]
fn overrides_pass_ignition_validate() {
    let dir = scratch("node-validate");
    for (name, f) in FORMATS {
        let out = node_dir(dir.path(), f, None);
        for (ign, _, _) in STAGES {
            let text = read(&out.join(ign));
            assert_valid_ignition(&text, &format!("{name} {ign}"), dir.path());
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            for file in v["storage"]["files"].as_array().expect("files") {
                assert_eq!(
                    file["mode"], 493,
                    "{ign}: the loader's mode is 0755 as decimal"
                );
                assert!(file["contents"]["source"]
                    .as_str()
                    .expect("a source")
                    .starts_with("data:"));
            }
        }
    }
}

#[test]
fn ignition_installs_loader_unit_and_preset_and_systemd_accepts_the_units() {
    nodeenv::require_root("applying Ignition configs (it sets owners)");
    let analyze = require("systemd-analyze", "systemd");
    let dir = scratch("node-ignition");
    for (name, f) in FORMATS {
        let out = node_dir(dir.path(), f, None);
        for (ign, unit, loader) in STAGES {
            let root = dir.path().join(format!("root-{name}-{unit}"));
            let work = dir.path().join(format!("work-{name}-{unit}"));
            fs::create_dir_all(&work).expect("mkdir");
            nodeenv::ignition_apply(&out.join(ign), &root, &work);

            let installed = root.join("usr/local/bin").join(loader);
            let meta = fs::metadata(&installed)
                .unwrap_or_else(|e| panic!("{name} {ign}: no {}: {e}", installed.display()));
            assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "{loader} mode");
            assert_eq!(
                fs::read(&installed).expect("read"),
                fs::read(out.join(loader)).expect("read"),
                "{name} {ign}: the installed {loader} differs from {loader} beside the image"
            );
            let u = root.join("etc/systemd/system").join(unit);
            let meta = fs::metadata(&u).unwrap_or_else(|e| panic!("{name} {ign}: no {unit}: {e}"));
            assert_eq!(meta.permissions().mode() & 0o7777, 0o644, "{unit} mode");
            assert_eq!(read(&u), read(&out.join(unit)), "{name}: {unit} bytes");
            let preset = read(&root.join("etc/systemd/system-preset/20-ignition.preset"));
            assert!(
                preset.lines().any(|l| l == format!("enable {unit}")),
                "{name} {ign}: the preset does not enable {unit}:\n{preset}"
            );

            // systemd's own check, in that root (its unit directory copied in, so the
            // targets the unit names exist; ExecStart= and ExecStopPost= binaries must too).
            let units = root.join("usr/lib/systemd");
            fs::create_dir_all(&units).expect("mkdir");
            run(Command::new("cp")
                .arg("-a")
                .arg("/usr/lib/systemd/system")
                .arg(&units))
            .success();
            fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
            fs::copy("/usr/bin/systemctl", root.join("usr/bin/systemctl")).expect("copy");
            let r = run(Command::new(&analyze)
                .arg("verify")
                .arg(format!("--root={}", root.display()))
                .arg(format!("/etc/systemd/system/{unit}")));
            assert!(
                r.status.success() && r.both().trim().is_empty(),
                "systemd-analyze verify {unit} ({name}):\n{}",
                r.both()
            );
            note!("{name} {ign}: Ignition installed {loader}, {unit}, its preset; systemd-analyze verify clean");
        }
    }
}

#[test]
fn every_script_is_shellcheck_clean() {
    let shellcheck = require("shellcheck", "shellcheck");
    let dir = scratch("node-shellcheck");
    let img = dir.path().join("lab image.qcow2");
    for (_, f) in FORMATS {
        let out = node_dir(dir.path(), f, Some((&img, ImageFormat::Qcow2)));
        for s in [
            "extract-ai.sh",
            "extract-ocp.sh",
            "assisted.sh",
            "libvirt.sh",
        ] {
            let p = out.join(s);
            let meta = fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(
                meta.permissions().mode() & 0o111,
                0o111,
                "{s} is executable"
            );
            let r = run(Command::new(&shellcheck).arg(&p));
            assert!(r.status.success(), "shellcheck {s}:\n{}", r.both());
        }
    }
}

#[test]
fn siteconfig_and_patches_carry_the_same_ignition() {
    let dir = scratch("node-siteconfig");
    for (name, f) in FORMATS {
        let out = node_dir(dir.path(), f, None);
        let discovery = read(&out.join("discovery.ign")).trim_end().to_string();
        let install = read(&out.join("install.ign")).trim_end().to_string();
        let args: serde_json::Value =
            serde_json::from_str(&read(&out.join("installer-args.json"))).expect("JSON");
        assert_eq!(args, serde_json::json!(["--save-partlabel", "data"]));

        let y: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&read(&out.join("siteconfig.yaml"))).expect("YAML");
        let cluster = &y["spec"]["clusters"][0];
        let node = &cluster["nodes"][0];
        let cluster_ign = cluster["ignitionConfigOverride"]
            .as_str()
            .expect("clusters[].ignitionConfigOverride is a string");
        let node_ign = node["ignitionConfigOverride"]
            .as_str()
            .expect("nodes[].ignitionConfigOverride is a string");
        let node_args = node["installerArgs"]
            .as_str()
            .expect("nodes[].installerArgs is a string");
        assert_valid_ignition(
            cluster_ign,
            &format!("{name} SiteConfig cluster override"),
            dir.path(),
        );
        assert_valid_ignition(
            node_ign,
            &format!("{name} SiteConfig node override"),
            dir.path(),
        );
        assert_eq!(
            cluster_ign, discovery,
            "{name}: cluster override vs discovery.ign"
        );
        assert_eq!(node_ign, install, "{name}: node override vs install.ign");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(node_args).expect("installerArgs is JSON"),
            args
        );

        let d: serde_json::Value =
            serde_json::from_str(&read(&out.join("discovery.patch"))).expect("JSON");
        let p: serde_json::Value =
            serde_json::from_str(&read(&out.join("pointer.patch"))).expect("JSON");
        assert_eq!(d.as_object().map(|o| o.len()), Some(1), "{d}");
        assert_eq!(p.as_object().map(|o| o.len()), Some(1), "{p}");
        assert_eq!(
            d["ignition_config_override"].as_str(),
            Some(discovery.as_str())
        );
        assert_eq!(p["config"].as_str(), Some(install.as_str()));
        for (what, s) in [
            ("discovery.patch", &d["ignition_config_override"]),
            ("pointer.patch", &p["config"]),
        ] {
            assert_valid_ignition(
                s.as_str().expect("a string"),
                &format!("{name} {what}"),
                dir.path(),
            );
        }
    }
}

/// One request the stand-in service received.
#[derive(Debug, Clone)]
struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The watched strings some process's command line held while the request was open (curl is
    /// still running then, waiting for the answer).
    on_a_command_line: Vec<String>,
}

impl Request {
    fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: the body is not JSON: {e}", self.line))
    }
}

/// What the stand-in service holds.
#[derive(Debug, Default)]
struct State {
    /// The infra-env as `GET .../infra-envs/ID` answers it.
    infra_env: serde_json::Value,
    /// The host as `GET .../hosts/ID` answers it.
    host: serde_json::Value,
    /// Every request, in order.
    requests: Vec<Request>,
    /// When set, every request is answered with this status.
    fail: Option<&'static str>,
    /// The cluster's manifests in the folder `openshift`: file name -> contents.
    manifests: std::collections::BTreeMap<String, Vec<u8>>,
}

/// Strings of `/proc/*/cmdline` that contain one of `watch`.
fn on_command_lines(watch: &[String]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(c) = fs::read(e.path().join("cmdline")) {
            for w in watch {
                if c.windows(w.len()).any(|x| x == w.as_bytes()) && !hits.contains(w) {
                    hits.push(w.clone());
                }
            }
        }
    }
    hits
}

/// A stand-in for Assisted Service's REST API on 127.0.0.1, as the parts assisted.sh uses
/// behave (swagger.yaml `v2GetInfraEnv`, `v2GetHost`, `v2UpdateInfraEnv`,
/// `v2UpdateHostIgnition`, `v2UpdateHostInstallerArgs`, and of the cluster's manifests
/// `v2ListClusterManifests`, `v2DownloadClusterManifest`, `v2CreateClusterManifest`,
/// `v2UpdateClusterManifest`): GETs answer the infra-env and host JSON
/// (`ignition_config_override`; `ignition_config_overrides`, `installer_args`, strings), PATCHes
/// replace those fields with what they carry and answer 201; manifests are listed as
/// `{folder, file_name}`, downloaded as their bytes, created from `content` (refused when the
/// file exists, as assisted-service's `validateFileDistinct` does) and replaced from
/// `updated_content` (base64; swagger.yaml and `internal/manifests/manifests.go` at
/// `063b257950f726d6b291dc94b806bc243a1b56de`). Each request is recorded with the
/// `watch` strings found on command lines while it was open.
fn service(state: State, watch: &[&str]) -> (String, Arc<Mutex<State>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1");
    let url = format!("http://{}", l.local_addr().expect("address"));
    let st = Arc::new(Mutex::new(state));
    let s = st.clone();
    let watch: Vec<String> = watch.iter().map(|w| w.to_string()).collect();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.trim_end().split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let len = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let req = Request {
                line: line.trim_end().to_string(),
                headers,
                body,
                on_a_command_line: on_command_lines(&watch),
            };
            let mut g = s.lock().expect("lock");
            let mut parts = req.line.split(' ');
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if let Some(rest) = path.strip_prefix("/api/assisted-install/v2/clusters/") {
                let b64 = |v: &serde_json::Value| {
                    base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().expect("base64 content"))
                        .expect("base64")
                };
                let (status, answer): (&str, Vec<u8>) = match (method, rest.split_once('/')) {
                    ("GET", Some((_, "manifests"))) => (
                        "200 OK",
                        serde_json::Value::Array(
                            g.manifests
                                .keys()
                                .map(|f| serde_json::json!({"folder": "openshift", "file_name": f}))
                                .collect(),
                        )
                        .to_string()
                        .into_bytes(),
                    ),
                    ("GET", Some((_, q)))
                        if q.starts_with("manifests/files?folder=openshift&file_name=") =>
                    {
                        let f = q.rsplit('=').next().unwrap_or_default();
                        match g.manifests.get(f) {
                            Some(b) => ("200 OK", b.clone()),
                            None => ("404 Not Found", b"{}".to_vec()),
                        }
                    }
                    ("POST", Some((_, "manifests"))) => {
                        let v = req.json();
                        assert_eq!(v["folder"], "openshift", "{v}");
                        let f = v["file_name"].as_str().expect("file_name").to_string();
                        match g.manifests.entry(f) {
                            std::collections::btree_map::Entry::Occupied(_) => {
                                ("409 Conflict", b"{}".to_vec())
                            }
                            std::collections::btree_map::Entry::Vacant(e) => {
                                e.insert(b64(&v["content"]));
                                ("201 Created", b"{}".to_vec())
                            }
                        }
                    }
                    ("PATCH", Some((_, "manifests"))) => {
                        let v = req.json();
                        let f = v["file_name"].as_str().expect("file_name").to_string();
                        g.manifests.insert(f, b64(&v["updated_content"]));
                        ("200 OK", b"{}".to_vec())
                    }
                    _ => ("404 Not Found", b"{}".to_vec()),
                };
                g.requests.push(req);
                drop(g);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    answer.len()
                );
                let _ = conn.write_all(&answer);
                continue;
            }
            let path = path
                .strip_prefix("/api/assisted-install/v2/infra-envs/")
                .unwrap_or("");
            let segs: Vec<&str> = path.split('/').collect();
            let (status, answer) = match (g.fail, method, segs.as_slice()) {
                (Some(f), _, _) => (f, "{}".to_string()),
                (None, "GET", [_]) => ("200 OK", g.infra_env.to_string()),
                (None, "GET", [_, "hosts", _]) => ("200 OK", g.host.to_string()),
                (None, "PATCH", [_]) => {
                    let v = req.json()["ignition_config_override"].clone();
                    g.infra_env["ignition_config_override"] = v;
                    ("201 Created", g.infra_env.to_string())
                }
                (None, "PATCH", [_, "hosts", _, "ignition"]) => {
                    let v = req.json()["config"].clone();
                    g.host["ignition_config_overrides"] = v;
                    ("201 Created", "{}".to_string())
                }
                (None, "PATCH", [_, "hosts", _, "installer-args"]) => {
                    let v = req.json()["args"].to_string();
                    g.host["installer_args"] = serde_json::Value::String(v);
                    ("201 Created", g.host.to_string())
                }
                _ => ("404 Not Found", "{}".to_string()),
            };
            g.requests.push(req);
            drop(g);
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, st)
}

/// Runs `assisted.sh` with the token, sampling every process's command line for `watch` while
/// it runs; returns its run and what was found.
fn assisted(out: &Path, args: &[&str], token: &str, watch: &[&str]) -> (Run, Vec<String>) {
    require("curl", "curl");
    require("jq", "jq");
    let watch: Vec<String> = watch.iter().map(|w| w.to_string()).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (stop, seen, watch) = (stop.clone(), seen.clone(), watch.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for h in on_command_lines(&watch) {
                    let mut s = seen.lock().expect("lock");
                    if !s.contains(&h) {
                        s.push(h);
                    }
                }
            }
        })
    };
    let r = run(Command::new("bash")
        .arg(out.join("assisted.sh"))
        .args(args)
        .env("ASSISTED_TOKEN", token));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().expect("sampler");
    let seen = seen.lock().expect("lock").clone();
    (r, seen)
}

const TOKEN: &str = "tok-3f9a1c-never-printed";
const INFRA: &str = "5c0ffee0-1111-2222-3333-444455556666";
const HOST: &str = "0badcafe-aaaa-bbbb-cccc-ddddeeeeffff";

/// Checks what every request carried and that no watched string leaked.
fn assert_clean(r: &Run, seen: &[String], reqs: &[Request], secrets: &[&str]) {
    for s in secrets.iter().chain([&TOKEN]) {
        assert!(
            !r.both().contains(s),
            "assisted.sh printed {s}:\n{}",
            r.both()
        );
    }
    assert!(
        seen.is_empty(),
        "on a command line during the run: {seen:?}"
    );
    for req in reqs {
        assert_eq!(
            req.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            req.line
        );
        if req.line.starts_with("PATCH") {
            assert_eq!(
                req.header("content-type"),
                Some("application/json"),
                "{}",
                req.line
            );
        }
        assert!(
            req.on_a_command_line.is_empty(),
            "{}: on a command line: {:?}",
            req.line,
            req.on_a_command_line
        );
    }
}

/// The request lines of a run.
fn lines(reqs: &[Request]) -> Vec<String> {
    reqs.iter().map(|r| r.line.clone()).collect()
}

fn base() -> String {
    format!("/api/assisted-install/v2/infra-envs/{INFRA}")
}

#[test]
fn assisted_sh_with_nothing_there_sends_ours_and_never_shows_the_token() {
    let dir = scratch("node-assisted");
    let out = node_dir(dir.path(), Format::Shared, None);
    let (url, st) = service(
        State {
            infra_env: serde_json::json!({"id": INFRA}),
            host: serde_json::json!({"id": HOST, "installer_args": ""}),
            ..State::default()
        },
        &[TOKEN],
    );
    let (r, seen) = assisted(&out, &[&url, INFRA, HOST], TOKEN, &[TOKEN]);
    assert!(r.status.success(), "assisted.sh failed:\n{}", r.both());
    let reqs = st.lock().expect("lock").requests.clone();
    assert_clean(&r, &seen, &reqs, &[]);
    let b = base();
    assert_eq!(
        lines(&reqs),
        [
            format!("GET {b} HTTP/1.1"),
            format!("PATCH {b} HTTP/1.1"),
            format!("GET {b}/hosts/{HOST} HTTP/1.1"),
            format!("PATCH {b}/hosts/{HOST}/ignition HTTP/1.1"),
            format!("PATCH {b}/hosts/{HOST}/installer-args HTTP/1.1"),
        ]
    );
    // With nothing there, the bodies are the files beside it, as before.
    let file =
        |n: &str| -> serde_json::Value { serde_json::from_str(&read(&out.join(n))).expect("JSON") };
    assert_eq!(reqs[1].json(), file("discovery.patch"));
    assert_eq!(reqs[3].json(), file("pointer.patch"));
    assert_eq!(
        reqs[4].json(),
        serde_json::json!({"args": file("installer-args.json")})
    );
    for (i, ign) in [(1, "ignition_config_override"), (3, "config")] {
        assert_valid_ignition(
            reqs[i].json()[ign].as_str().expect("a string"),
            &reqs[i].line,
            dir.path(),
        );
    }

    // Without a host: the infra-env only. A refusal: an error naming the call, no token.
    let (url, st) = service(State::default(), &[TOKEN]);
    let (r, _) = assisted(&out, &[&url, INFRA], TOKEN, &[]);
    assert!(r.status.success(), "{}", r.both());
    assert_eq!(st.lock().expect("lock").requests.len(), 2);
    let (url, _) = service(
        State {
            fail: Some("400 Bad Request"),
            ..State::default()
        },
        &[],
    );
    let (r, _) = assisted(&out, &[&url, INFRA], TOKEN, &[]);
    assert_eq!(r.status.code(), Some(2), "{}", r.both());
    assert!(
        r.stderr.contains("GET") && r.stderr.contains("HTTP 400") && !r.both().contains(TOKEN),
        "{}",
        r.both()
    );
    let (r, _) = assisted(&out, &[&url, "not-a-uuid"], TOKEN, &[]);
    assert!(
        !r.status.success() && r.stderr.contains("INFRA_ENV_ID"),
        "{}",
        r.both()
    );
}

/// prestage's own merge (`--into` uses it) of `existing` with our override of `stage`.
fn rust_merge(existing: &str, stage: Stage) -> Option<prestage::node::json::Json> {
    let ours = NodeSet::new("data")
        .expect("label")
        .ignition_config(Format::Shared, stage)
        .expect("override");
    match prestage::node::merge::merge_ignition(existing, &ours).expect("merge") {
        prestage::node::merge::Merged::Changed(j) => Some(j),
        prestage::node::merge::Merged::Unchanged => None,
    }
}

/// The Ignition config a PATCH body carries as a string under `key`.
fn carried(req: &Request, key: &str) -> prestage::node::json::Json {
    prestage::node::json::Json::parse(req.json()[key].as_str().expect("a string")).expect("JSON")
}

const CHRONY_31: &str = r#"{"ignition":{"version":"3.1.0"},"passwd":{"users":[{"name":"core","passwordHash":"$6$SECRET-HASH-7f3c"}]},"storage":{"files":[{"path":"/etc/chrony.d/10-site.conf","mode":420,"overwrite":true,"contents":{"source":"data:,server%20ntp1.example.com%20iburst%0A"}}]}}"#;
const CA_32: &str = r#"{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/etc/pki/ca-trust/source/anchors/site.pem","mode":420,"contents":{"source":"data:,SECRET-CA-91d2"}}]},"systemd":{"units":[{"name":"site-tune.service","enabled":true,"contents":"[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"}]}}"#;

#[test]
fn assisted_sh_merges_into_what_the_service_holds() {
    let dir = scratch("node-assisted-merge");
    let out = node_dir(dir.path(), Format::Shared, None);
    let secrets = ["SECRET-HASH-7f3c", "SECRET-CA-91d2"];
    let mut watch = vec![TOKEN];
    watch.extend(secrets);
    let (url, st) = service(
        State {
            infra_env: serde_json::json!({"id": INFRA, "ignition_config_override": CHRONY_31}),
            host: serde_json::json!({
                "id": HOST,
                "ignition_config_overrides": CA_32,
                "installer_args": "[\"--append-karg\",\"ip=dhcp\",\"--save-partindex\",\"1\"]",
            }),
            ..State::default()
        },
        &watch,
    );
    let (r, seen) = assisted(&out, &[&url, INFRA, HOST], TOKEN, &watch);
    assert!(r.status.success(), "assisted.sh failed:\n{}", r.both());
    let reqs = st.lock().expect("lock").requests.clone();
    assert_clean(&r, &seen, &reqs, &secrets);
    assert_eq!(reqs.len(), 5, "{:#?}", lines(&reqs));
    assert!(
        r.stderr.contains("--save-partindex") && r.stderr.contains("kept"),
        "the kept --save-partindex is not explained:\n{}",
        r.stderr
    );
    // Both the old and ours, exactly as prestage's own merge (the one --into uses) makes them.
    let infra = carried(&reqs[1], "ignition_config_override");
    let want = rust_merge(CHRONY_31, Stage::Discovery).expect("a change");
    assert!(
        infra.same(&want),
        "jq and prestage merge differently:\n{}\n{}",
        infra.to_compact(),
        want.to_compact()
    );
    assert_eq!(
        infra
            .get("ignition")
            .and_then(|i| i.get("version"))
            .and_then(|v| v.as_str()),
        Some("3.1.0")
    );
    let host = carried(&reqs[3], "config");
    assert!(
        host.same(&rust_merge(CA_32, Stage::Install).expect("a change")),
        "{}",
        host.to_compact()
    );
    for (text, what) in [
        (infra.to_compact(), "infra-env"),
        (host.to_compact(), "host"),
    ] {
        nodeenv::assert_ignition_validate_accepts(&text, what, dir.path());
    }
    assert!(infra.to_compact().contains("/etc/chrony.d/10-site.conf"));
    assert!(
        host.to_compact().contains("site-tune.service")
            && host.to_compact().contains("/etc/pki/ca-trust")
    );
    assert_eq!(
        reqs[4].json(),
        serde_json::json!({"args": ["--append-karg", "ip=dhcp", "--save-partindex", "1", "--save-partlabel", "data"]})
    );

    // Again, against what the service now holds: nothing to send.
    st.lock().expect("lock").requests.clear();
    let (r, seen) = assisted(&out, &[&url, INFRA, HOST], TOKEN, &watch);
    assert!(r.status.success(), "{}", r.both());
    let reqs = st.lock().expect("lock").requests.clone();
    assert_clean(&r, &seen, &reqs, &secrets);
    assert!(
        reqs.iter().all(|q| q.line.starts_with("GET ")),
        "a second run sent {:#?}",
        lines(&reqs)
    );
    assert_eq!(r.stderr.matches("unchanged").count(), 3, "{}", r.stderr);
}

#[test]
fn assisted_sh_and_prestage_merge_alike_and_refuse_alike() {
    let dir = scratch("node-assisted-cases");
    let out = node_dir(dir.path(), Format::Shared, None);
    // An override an older prestage (another label and payload) merged before.
    let old = NodeSet::new("old")
        .expect("label")
        .ignition_config(Format::Ztp, Stage::Discovery)
        .expect("override");
    let with_old = match prestage::node::merge::merge_ignition(CHRONY_31, &old).expect("merge") {
        prestage::node::merge::Merged::Changed(j) => j.to_compact(),
        _ => panic!("no change"),
    };
    // Ours already there, its keys in another order.
    let ours_reordered = {
        let mut v: serde_json::Value = serde_json::from_str(
            &rust_merge(CHRONY_31, Stage::Discovery)
                .expect("merge")
                .to_compact(),
        )
        .expect("JSON");
        let f = v["storage"]["files"][1].take();
        let mut rev = serde_json::Map::new();
        for k in ["contents", "overwrite", "mode", "path"] {
            rev.insert(k.to_string(), f[k].clone());
        }
        v["storage"]["files"][1] = serde_json::Value::Object(rev);
        v.to_string()
    };
    for (what, existing) in [
        ("an older prestage entry", with_old.as_str()),
        ("ours reordered", &ours_reordered),
    ] {
        let (url, st) = service(
            State {
                infra_env: serde_json::json!({"ignition_config_override": existing}),
                ..State::default()
            },
            &[],
        );
        let (r, _) = assisted(&out, &[&url, INFRA], TOKEN, &[]);
        assert!(r.status.success(), "{what}: {}", r.both());
        let reqs = st.lock().expect("lock").requests.clone();
        match rust_merge(existing, Stage::Discovery) {
            Some(want) => {
                assert_eq!(reqs.len(), 2, "{what}: {:#?}", lines(&reqs));
                let got = carried(&reqs[1], "ignition_config_override");
                assert!(got.same(&want), "{what}: jq and prestage merge differently");
            }
            None => assert_eq!(
                reqs.len(),
                1,
                "{what}: prestage changes nothing, assisted.sh sent {:#?}",
                lines(&reqs)
            ),
        }
        note!("{what}: {}", r.stderr.lines().last().unwrap_or_default());
    }

    // Refusals: exit 2, one message naming the field and the problem (never the contents), and
    // nothing sent; prestage's merge refuses the same overrides.
    let clash = r#"{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/usr/local/bin/extract-ai.sh","contents":{"source":"data:,SECRET-X"}}]}}"#;
    for (existing, want) in [
        (
            clash,
            vec![
                "storage.files[0] (/usr/local/bin/extract-ai.sh)",
                "prestage's loader (storage.files, /usr/local/bin/extract-ai.sh)",
            ],
        ),
        (r#"{"ignition": SECRET-X"#, vec!["not JSON"]),
        (
            r#"{"ignition":{"version":"3.4.0"},"x":"SECRET-X"}"#,
            vec![
                "ignition.version 3.4.0",
                "Assisted Service takes 3.1.0 and 3.2.0",
            ],
        ),
        (
            r#"{"ignition":{"version":"2.2.0"}}"#,
            vec!["not Ignition 3.x"],
        ),
    ] {
        let (url, st) = service(
            State {
                infra_env: serde_json::json!({"ignition_config_override": existing}),
                ..State::default()
            },
            &[],
        );
        let (r, _) = assisted(&out, &[&url, INFRA], TOKEN, &[]);
        assert_eq!(r.status.code(), Some(2), "{existing}: {}", r.both());
        for w in want
            .iter()
            .chain([&"the infra-env's ignition_config_override"])
        {
            assert!(r.stderr.contains(w), "{existing}: no {w:?} in {}", r.stderr);
        }
        assert!(!r.both().contains("SECRET-X"), "{}", r.both());
        assert_eq!(
            st.lock().expect("lock").requests.len(),
            1,
            "{existing}: something was sent"
        );
        let ours = NodeSet::new("data")
            .expect("label")
            .ignition_config(Format::Shared, Stage::Discovery)
            .expect("override");
        assert!(
            prestage::node::merge::merge_ignition(existing, &ours).is_err(),
            "prestage accepts {existing}"
        );
        note!("refused: {}", r.stderr.lines().last().unwrap_or_default());
    }
    let (url, st) = service(
        State {
            host: serde_json::json!({"installer_args": "{\"append-karg\":\"x\"}"}),
            ..State::default()
        },
        &[],
    );
    let (r, _) = assisted(&out, &[&url, INFRA, HOST], TOKEN, &[]);
    assert_eq!(r.status.code(), Some(2), "{}", r.both());
    assert!(
        r.stderr
            .contains("the host's installer_args: not a JSON list of strings"),
        "{}",
        r.stderr
    );
    assert!(st
        .lock()
        .expect("lock")
        .requests
        .iter()
        .all(|q| !q.line.contains("/hosts/") || q.line.starts_with("GET")));
}

#[test]
fn assisted_sh_and_prestage_merge_the_store_override_alike() {
    let dir = scratch("node-assisted-store");
    let out = node_dir(dir.path(), Format::Store, None);
    let ours = NodeSet::new("data")
        .expect("label")
        .ignition_config(Format::Store, Stage::Discovery)
        .expect("override");
    // The store override of an older prestage run for another label, merged before: its units
    // (same names, other contents) are replaced in place, its storage.conf (the same) kept.
    let old = NodeSet::new("old")
        .expect("label")
        .ignition_config(Format::Store, Stage::Discovery)
        .expect("override");
    let existing = match prestage::node::merge::merge_ignition(CHRONY_31, &old).expect("merge") {
        prestage::node::merge::Merged::Changed(j) => j.to_compact(),
        _ => panic!("no change"),
    };
    let want = match prestage::node::merge::merge_ignition(&existing, &ours).expect("merge") {
        prestage::node::merge::Merged::Changed(j) => j,
        _ => panic!("prestage's merge changes nothing"),
    };
    let (url, st) = service(
        State {
            infra_env: serde_json::json!({"ignition_config_override": existing}),
            ..State::default()
        },
        &[],
    );
    let (r, _) = assisted(&out, &[&url, INFRA], TOKEN, &[]);
    assert!(r.status.success(), "{}", r.both());
    let reqs = st.lock().expect("lock").requests.clone();
    assert_eq!(reqs.len(), 2, "{:#?}", lines(&reqs));
    assert!(
        carried(&reqs[1], "ignition_config_override").same(&want),
        "jq and prestage merge the store override differently"
    );

    // A user's own storage.conf: both refuse, naming the path only.
    let mine = r#"{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/etc/containers/storage.conf","contents":{"source":"data:,SECRET-X"}}]}}"#;
    let (url, st) = service(
        State {
            infra_env: serde_json::json!({"ignition_config_override": mine}),
            ..State::default()
        },
        &[],
    );
    let (r, _) = assisted(&out, &[&url, INFRA], TOKEN, &[]);
    assert_eq!(r.status.code(), Some(2), "{}", r.both());
    assert!(
        r.stderr
            .contains("storage.files[0] (/etc/containers/storage.conf)"),
        "{}",
        r.stderr
    );
    assert!(!r.both().contains("SECRET-X"), "{}", r.both());
    assert_eq!(
        st.lock().expect("lock").requests.len(),
        1,
        "something was sent"
    );
    assert!(prestage::node::merge::merge_ignition(mine, &ours).is_err());
}

#[test]
fn assisted_sh_uploads_the_store_manifests_to_the_infra_envs_cluster() {
    let dir = scratch("node-assisted-manifests");
    let out = node_dir(dir.path(), Format::Store, None);
    let manifests =
        prestage::node::manifests::for_format(Format::Store, "data").expect("manifests");
    let cluster = "c1a55e00-1111-2222-3333-444455556666";
    let capi = format!("/api/assisted-install/v2/clusters/{cluster}/manifests");

    // Bound to a cluster that has a manifest of its own: ours are added, its own is kept.
    let (url, st) = service(
        State {
            infra_env: serde_json::json!({"id": INFRA, "cluster_id": cluster}),
            manifests: [("50-mine.yaml".to_string(), b"kind: Mine\n".to_vec())].into(),
            ..State::default()
        },
        &[],
    );
    let (r, _) = assisted(&out, &[&url, INFRA], TOKEN, &[]);
    assert!(r.status.success(), "{}", r.both());
    {
        let g = st.lock().expect("lock");
        for m in &manifests {
            assert_eq!(
                g.manifests.get(&m.file_name).map(Vec::as_slice),
                Some(m.yaml.as_bytes()),
                "{} was not uploaded as it is",
                m.file_name
            );
        }
        assert_eq!(g.manifests["50-mine.yaml"], b"kind: Mine\n");
        let posts = g
            .requests
            .iter()
            .filter(|q| q.line == format!("POST {capi} HTTP/1.1"))
            .count();
        assert_eq!(posts, manifests.len(), "{:#?}", lines(&g.requests));
        for q in &g.requests {
            assert_eq!(
                q.header("authorization"),
                Some(format!("Bearer {TOKEN}").as_str())
            );
        }
    }
    // Again: every manifest is there as it is, nothing is sent.
    let (r, _) = assisted(&out, &[&url, INFRA], TOKEN, &[]);
    assert!(r.status.success(), "{}", r.both());
    assert!(
        r.stderr
            .contains("already holds 99-prestage-store-master.yaml; unchanged"),
        "{}",
        r.stderr
    );
    let sent = st
        .lock()
        .expect("lock")
        .requests
        .iter()
        .filter(|q| !q.line.starts_with("GET"))
        .count();
    assert_eq!(sent, manifests.len() + 1, "the second run sent something");

    // One prestage wrote differently (another label) is replaced; one of the user's with our
    // name is refused before anything is sent.
    let older = prestage::node::manifests::for_format(Format::Store, "old").expect("manifests");
    let (url, st) = service(
        State {
            infra_env: serde_json::json!({"id": INFRA, "cluster_id": cluster}),
            manifests: [(
                older[0].file_name.clone(),
                older[0].yaml.clone().into_bytes(),
            )]
            .into(),
            ..State::default()
        },
        &[],
    );
    let (r, _) = assisted(&out, &[&url, INFRA], TOKEN, &[]);
    assert!(r.status.success(), "{}", r.both());
    let g = st.lock().expect("lock");
    assert_eq!(
        g.manifests[&manifests[0].file_name],
        manifests[0].yaml.as_bytes()
    );
    assert!(g
        .requests
        .iter()
        .any(|q| q.line == format!("PATCH {capi} HTTP/1.1")));
    drop(g);
    let (url, st) = service(
        State {
            infra_env: serde_json::json!({"id": INFRA, "cluster_id": cluster}),
            manifests: [(manifests[2].file_name.clone(), b"kind: Mine\n".to_vec())].into(),
            ..State::default()
        },
        &[],
    );
    let (r, _) = assisted(&out, &[&url, INFRA], TOKEN, &[]);
    assert_eq!(r.status.code(), Some(2), "{}", r.both());
    assert!(
        r.stderr.contains("is not one prestage wrote"),
        "{}",
        r.stderr
    );
    assert!(
        st.lock()
            .expect("lock")
            .requests
            .iter()
            .all(|q| q.line.starts_with("GET")),
        "something was sent"
    );

    // Not bound to a cluster (late binding): said, and the rest is done.
    let (url, st) = service(
        State {
            infra_env: serde_json::json!({"id": INFRA}),
            ..State::default()
        },
        &[],
    );
    let (r, _) = assisted(&out, &[&url, INFRA], TOKEN, &[]);
    assert!(r.status.success(), "{}", r.both());
    assert!(r.stderr.contains("bound to no cluster"), "{}", r.stderr);
    assert!(st.lock().expect("lock").manifests.is_empty());
    note!(
        "{}",
        r.stderr
            .lines()
            .find(|l| l.contains("no cluster"))
            .unwrap_or_default()
    );
}

#[test]
fn assisted_sh_says_when_jq_is_missing() {
    let dir = scratch("node-assisted-nojq");
    let out = node_dir(dir.path(), Format::Shared, None);
    // A PATH with everything the script runs but jq.
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).expect("mkdir");
    for t in [
        "bash", "curl", "dirname", "mktemp", "rm", "cat", "sed", "head",
    ] {
        std::os::unix::fs::symlink(require(t, "coreutils"), bin.join(t)).expect("symlink");
    }
    let r = run(Command::new(bin.join("bash"))
        .arg(out.join("assisted.sh"))
        .args(["http://127.0.0.1:9", INFRA])
        .env("PATH", &bin)
        .env("ASSISTED_TOKEN", TOKEN));
    assert_eq!(r.status.code(), Some(2), "{}", r.both());
    assert!(r.stderr.contains("jq is not installed"), "{}", r.stderr);
}

#[test]
fn lab_files_attach_the_image_as_the_vm_disk() {
    let virt_install = require("virt-install", "virtinst");
    require("virsh", "libvirt-clients");
    let qemu_img = require("qemu-img", "qemu-utils");
    let dir = scratch("node-lab");
    let sub = dir.path().join("lab images");
    fs::create_dir_all(&sub).expect("mkdir");
    let img = sub.join("demo.qcow2");
    run(Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("1G"))
    .success();
    let iso = dir.path().join("discovery.iso");
    fs::write(&iso, b"").expect("writing the ISO stand-in");
    let out = node_dir(dir.path(), Format::Shared, Some((&img, ImageFormat::Qcow2)));

    let y: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(&out.join("kcli-profile.yml"))).expect("YAML");
    let disk = &y["prestaged-sno"]["disks"][0];
    assert_eq!(disk["name"].as_str(), Some("demo.qcow2"), "{y:?}");
    assert_eq!(disk["size"].as_u64(), Some(1));

    let libvirt = |args: &[&str]| {
        run(Command::new("bash")
            .arg(out.join("libvirt.sh"))
            .args(args)
            .env("LIBVIRT_DEFAULT_URI", "test:///default"))
    };
    let iso_s = iso.display().to_string();
    let r = libvirt(&["new", "sno1", &iso_s, "--print-xml"]);
    assert!(
        r.status.success(),
        "{} ({}):\n{}",
        r.cmd,
        virt_install.display(),
        r.both()
    );
    let disk_src = format!("<source file=\"{}\"/>", img.display());
    let first_disk = r.stdout.split("<disk ").nth(1).unwrap_or_default();
    assert!(
        first_disk.contains("device=\"disk\"")
            && first_disk.contains(&disk_src)
            && first_disk.contains("<target dev=\"vda\" bus=\"virtio\"/>"),
        "virt-install does not make the image the VM's disk:\n{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!("<source file=\"{iso_s}\"/>")),
        "{}",
        r.stdout
    );

    let r = libvirt(&["attach", "test", "--print-xml"]);
    assert!(r.status.success(), "{}:\n{}", r.cmd, r.both());
    for want in [
        "<driver name='qemu' type='qcow2'/>".to_string(),
        format!("<source file='{}'/>", img.display()),
        "<target dev='vda' bus='virtio'/>".to_string(),
    ] {
        assert!(
            r.stdout.contains(&want),
            "virsh attach-disk XML lacks {want}:\n{}",
            r.stdout
        );
    }
}

#[test]
fn prestage_node_regenerates_the_files_of_a_built_image() {
    let dir = scratch("node-cli");
    let store = dir.path().join("store");
    let raw = dir.path().join("shared.raw");
    let qcow2 = dir.path().join("ztp.qcow2");
    nodeenv::build(&raw, "shared", &store);
    nodeenv::build(&qcow2, "ztp", &store);
    for (img, lab) in [(&raw, false), (&qcow2, true)] {
        let built_dir = prestage::build::beside(img, ".node");
        let again = dir.path().join(format!(
            "{}.again",
            img.file_name().expect("name").to_string_lossy()
        ));
        let r = run(Command::new(common::bin())
            .arg("node")
            .arg(img)
            .arg("-o")
            .arg(&again))
        .success();
        note!("prestage node: {}", r.stderr.trim());
        let names = |d: &Path| {
            let mut v: Vec<String> = fs::read_dir(d)
                .expect("listing")
                .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&built_dir), names(&again), "{}", img.display());
        assert_eq!(names(&again).contains(&"libvirt.sh".to_string()), lab);
        for n in names(&again) {
            assert_eq!(
                fs::read(built_dir.join(&n)).expect("read"),
                fs::read(again.join(&n)).expect("read"),
                "{n}: prestage node wrote other bytes than prestage build"
            );
        }
        // Its own directory is replaced in place.
        run(Command::new(common::bin()).arg("node").arg(img)).success();
    }

    // Refusals: one line each, naming the file and what is wrong.
    let foreign = dir.path().join("foreign");
    fs::create_dir_all(&foreign).expect("mkdir");
    let r = run(Command::new(common::bin())
        .arg("node")
        .arg(&raw)
        .arg("-o")
        .arg(&foreign));
    common::assert_one_line_error(
        &r,
        dir.path(),
        &["<dir>/foreign", "not written by prestage"],
    );
    let r = run(Command::new(common::bin())
        .arg("node")
        .arg(&raw)
        .args(["--label", "nosuch"]));
    common::assert_one_line_error(&r, dir.path(), &["<dir>/shared.raw", "`nosuch`", "`data`"]);
    let blank = dir.path().join("blank.raw");
    fs::write(&blank, vec![0u8; 1 << 20]).expect("writing");
    let r = run(Command::new(common::bin()).arg("node").arg(&blank));
    common::assert_one_line_error(&r, dir.path(), &["<dir>/blank.raw"]);
}
