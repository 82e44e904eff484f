//! The files beside an image (`OUT.node/`), judged by the programs that consume them:
//! `ignition-validate` and the real Ignition binary (Debian `ignition`) for the overrides,
//! `systemd-analyze verify` for the units, `shellcheck` for every script, curl (driven by
//! `assisted.sh`) against a recording HTTP endpoint for the Assisted Service calls, a YAML parser
//! for the SiteConfig snippet, `virt-install` / `virsh` (libvirt's test driver) for the lab
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

use common::{require, run, scratch, Run};
use prestage::compose::emit::Format as ImageFormat;
use prestage::node::NodeSet;
use prestage::payload::Format;

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

/// `ignition-validate` must accept `text` with no message at all.
fn assert_valid_ignition(text: &str, what: &str, dir: &Path) {
    let validate = require("ignition-validate", "ignition");
    let f = dir.join("candidate.ign");
    fs::write(&f, text).expect("writing the config");
    let r = run(Command::new(validate).arg(&f));
    assert!(
        r.status.success() && r.both().trim().is_empty(),
        "ignition-validate refuses {what}:\n{}",
        r.both()
    );
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

/// One request an HTTP endpoint received.
#[derive(Debug, Clone)]
struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Whether some process's command line held the token while the request was open.
    token_on_a_command_line: bool,
}

/// A recording HTTP/1.1 endpoint answering every request with `status`; returns its URL and the
/// requests it received.
fn endpoint(status: &'static str, token: &'static str) -> (String, Arc<Mutex<Vec<Request>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1");
    let url = format!("http://{}", l.local_addr().expect("address"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().expect("clone"));
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
            // curl is still running, waiting for the answer: no command line may hold the token.
            let on_cmdline = fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
                .any(|c| c.windows(token.len()).any(|w| w == token.as_bytes()));
            g.lock().expect("lock").push(Request {
                line: line.trim_end().to_string(),
                headers,
                body,
                token_on_a_command_line: on_cmdline,
            });
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
        }
    });
    (url, got)
}

fn assisted(out: &Path, args: &[&str], token: &str) -> Run {
    require("curl", "curl");
    run(Command::new("bash")
        .arg(out.join("assisted.sh"))
        .args(args)
        .env("ASSISTED_TOKEN", token))
}

#[test]
fn assisted_sh_sends_the_bodies_and_never_shows_the_token() {
    const TOKEN: &str = "tok-3f9a1c-never-printed";
    let dir = scratch("node-assisted");
    let out = node_dir(dir.path(), Format::Shared, None);
    let infra = "5c0ffee0-1111-2222-3333-444455556666";
    let host = "0badcafe-aaaa-bbbb-cccc-ddddeeeeffff";

    let (url, got) = endpoint("201 Created", TOKEN);
    let r = assisted(&out, &[&url, infra, host], TOKEN);
    assert!(r.status.success(), "assisted.sh failed:\n{}", r.both());
    assert!(
        !r.both().contains(TOKEN),
        "assisted.sh printed the token:\n{}",
        r.both()
    );
    let reqs = got.lock().expect("lock").clone();
    let base = format!("/api/assisted-install/v2/infra-envs/{infra}");
    let want = [
        (
            format!("PATCH {base} HTTP/1.1"),
            fs::read(out.join("discovery.patch")).expect("read"),
        ),
        (
            format!("PATCH {base}/hosts/{host}/ignition HTTP/1.1"),
            fs::read(out.join("pointer.patch")).expect("read"),
        ),
    ];
    assert_eq!(reqs.len(), 3, "expected three requests: {reqs:#?}");
    for (req, (line, body)) in reqs.iter().zip(&want) {
        assert_eq!(&req.line, line);
        assert_eq!(&req.body, body, "{line}: body");
    }
    assert_eq!(
        reqs[2].line,
        format!("PATCH {base}/hosts/{host}/installer-args HTTP/1.1")
    );
    let args: serde_json::Value = serde_json::from_slice(&reqs[2].body).expect("JSON");
    assert_eq!(
        args,
        serde_json::json!({"args": ["--save-partlabel", "data"]})
    );
    for req in &reqs {
        let h = |k: &str| {
            req.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            h("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            req.line
        );
        assert_eq!(h("content-type"), Some("application/json"), "{}", req.line);
        assert!(
            !req.token_on_a_command_line,
            "{}: the token was on a command line",
            req.line
        );
    }

    // Without a host: the infra-env only. A refusal: an error naming the call, no token.
    let (url, got) = endpoint("201 Created", TOKEN);
    assisted(&out, &[&url, infra], TOKEN).success();
    assert_eq!(got.lock().expect("lock").len(), 1);
    let (url, _) = endpoint("400 Bad Request", TOKEN);
    let r = assisted(&out, &[&url, infra], TOKEN);
    assert_eq!(r.status.code(), Some(2), "{}", r.both());
    assert!(
        r.stderr.contains("HTTP 400") && !r.both().contains(TOKEN),
        "{}",
        r.both()
    );
    let r = assisted(&out, &[&url, "not-a-uuid"], TOKEN);
    assert!(
        !r.status.success() && r.stderr.contains("INFRA_ENV_ID"),
        "{}",
        r.both()
    );
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
