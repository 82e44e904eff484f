//! GitOps ZTP files judged against their real schemas and consumers: the ClusterInstance CRD's
//! own OpenAPI schema (stolostron/siteconfig, `tests/fixtures/ztp/`, made strict as the API
//! server's strict field validation is) for `clusterinstance.yaml` merged into the upstream
//! example, the removed SiteConfig generator's field names and Go types for `siteconfig.yaml`
//! and a merged upstream SiteConfig, and `prestage node IMAGE --into FILE` on real-looking files:
//! `ignition-validate` and the real Ignition (applying each merged override into a throwaway
//! root) must keep the user's files and land ours, installer arguments must hold both, a second
//! run must change nothing, and bad input must give one line and write nothing.

mod common;
mod nodeenv;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{require, run, scratch, Run};
use prestage::build::beside;
use serde_json::Value as J;

/// The shared-payload image of the fixture (with its `.node/` directory), built once.
fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-gitops-image");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating the image directory");
        let img = dir.join("shared.raw");
        nodeenv::build(&img, "shared", &dir.join("store"));
        img
    })
}

fn node_dir() -> PathBuf {
    beside(image(), ".node")
}

fn fixture(name: &str) -> String {
    let p = common::repo_root().join("tests/fixtures/ztp").join(name);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// `prestage node IMAGE --into FILE`.
fn into(file: &Path) -> Run {
    run(Command::new(common::bin())
        .arg("node")
        .arg(image())
        .arg("--into")
        .arg(file))
}

use nodeenv::{schema_errors, yaml_docs as docs};

/// The JSON held in a string field.
fn json_in(v: &J, what: &str) -> J {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"));
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{what} is not JSON: {e}"))
}

/// The ClusterInstance CRD's `v1alpha1` schema, strict, as a validator.
fn crd() -> jsonschema::Validator {
    nodeenv::crd_validator(
        &fixture("siteconfig.open-cluster-management.io_clusterinstances.yaml"),
        "v1alpha1",
    )
}

#[test]
fn clusterinstance_merged_into_the_upstream_example_passes_the_crd_schema() {
    let v = crd();
    // The upstream example as published fails its own CRD in one place (a boolean label value
    // where the schema takes strings; the API server refuses it the same way): that value is
    // quoted here, nothing else is touched.
    let published = fixture("clusterinstance-example-sno.yaml");
    assert_eq!(
        schema_errors(&v, &docs(&published)[0]),
        "/spec/extraLabels/ManagedCluster/common: true is not of type \"string\""
    );
    let example = published.replace("      common: true\n", "      common: \"true\"\n");
    let upstream = docs(&example);
    assert_eq!(
        schema_errors(&v, &upstream[0]),
        "",
        "the upstream example must pass the strict schema"
    );
    // The old snippet's nesting, pasted into a ClusterInstance, is what the schema catches.
    let mut wrong = upstream[0].clone();
    wrong["spec"]["clusters"] = serde_json::json!([{"ignitionConfigOverride": "{}"}]);
    let e = schema_errors(&v, &wrong);
    assert!(e.contains("/spec") && e.contains("clusters"), "{e}");

    let dir = scratch("gitops-crd");
    let file = dir.path().join("example-sno.yaml");
    fs::write(&file, &example).expect("writing");
    let r = into(&file).success();
    note!("{}", r.stderr.trim());
    let text = read(&file);
    let merged = docs(&text);
    assert_eq!(merged.len(), 1);
    assert_eq!(
        schema_errors(&v, &merged[0]),
        "",
        "the merged ClusterInstance fails the CRD's schema"
    );

    let nd = node_dir();
    let discovery: J = serde_json::from_str(&read(&nd.join("discovery.ign"))).expect("JSON");
    let install: J = serde_json::from_str(&read(&nd.join("install.ign"))).expect("JSON");
    let spec = &merged[0]["spec"];
    assert_eq!(
        json_in(
            &spec["ignitionConfigOverride"],
            "spec.ignitionConfigOverride"
        ),
        discovery
    );
    let node = &spec["nodes"][0];
    let ign = json_in(
        &node["ignitionConfigOverride"],
        "nodes[0].ignitionConfigOverride",
    );
    let upstream_ign = json_in(
        &upstream[0]["spec"]["nodes"][0]["ignitionConfigOverride"],
        "upstream override",
    );
    assert_eq!(ign["storage"]["disks"], upstream_ign["storage"]["disks"]);
    assert_eq!(
        ign["storage"]["filesystems"],
        upstream_ign["storage"]["filesystems"]
    );
    let units: Vec<&str> = ign["systemd"]["units"]
        .as_array()
        .expect("units")
        .iter()
        .map(|u| u["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        units,
        ["var-lib-containers.mount", "precache-ocp-images.service"]
    );
    assert_eq!(ign["storage"]["files"], install["storage"]["files"]);
    assert_eq!(
        json_in(&node["installerArgs"], "installerArgs"),
        serde_json::json!(["--save-partlabel", "data"])
    );
    // Every line of the upstream file is still there, in order (only lines were added).
    let mut out_lines = text.lines();
    for l in example.lines() {
        assert!(
            out_lines.any(|o| o == l),
            "the merged file lost or changed the line {l:?}"
        );
    }
    // clusterinstance.yaml carries the same values.
    let snippet = docs(&read(&nd.join("clusterinstance.yaml")));
    assert_eq!(snippet[0]["apiVersion"], merged[0]["apiVersion"]);
    assert_eq!(
        json_in(&snippet[0]["spec"]["ignitionConfigOverride"], "snippet"),
        discovery
    );
    assert_eq!(
        json_in(
            &snippet[0]["spec"]["nodes"][0]["ignitionConfigOverride"],
            "snippet"
        ),
        install
    );
    assert_eq!(
        snippet[0]["spec"]["nodes"][0]["installerArgs"],
        node["installerArgs"]
    );

    // Again: nothing changes, the file is not even rewritten.
    let ino = fs::metadata(&file).expect("stat").ino();
    let r = into(&file).success();
    assert!(r.stderr.contains("already holds"), "{}", r.stderr);
    assert_eq!(read(&file), text);
    assert_eq!(fs::metadata(&file).expect("stat").ino(), ino);
}

/// The SiteConfig generator's types: type name → (YAML key → Go type).
fn siteconfig_types() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut t: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for l in fixture("siteconfig-v1-fields.txt").lines() {
        if l.starts_with('#') || l.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f.len(), 3, "{l}");
        if f[0] == "alias" {
            t.entry(f[1].to_string())
                .or_default()
                .insert(String::new(), f[2].to_string());
        } else {
            t.entry(f[0].to_string())
                .or_default()
                .insert(f[1].to_string(), f[2].to_string());
        }
    }
    t
}

/// Checks `v` against the Go type `ty` as gopkg.in/yaml.v3 decodes it, except that unknown keys
/// are errors (the generator ignored them silently, which is how misplaced settings got lost).
fn check_go(
    types: &BTreeMap<String, BTreeMap<String, String>>,
    ty: &str,
    v: &serde_yaml_ng::Value,
    at: &str,
    errs: &mut Vec<String>,
) {
    use serde_yaml_ng::Value as Y;
    let ty = ty.trim_start_matches('*');
    if v.is_null() {
        return;
    }
    if let Some(inner) = ty.strip_prefix("[]") {
        match v.as_sequence() {
            Some(s) => {
                for (i, x) in s.iter().enumerate() {
                    check_go(types, inner, x, &format!("{at}[{i}]"), errs);
                }
            }
            None => errs.push(format!("{at}: not a list ({ty})")),
        }
        return;
    }
    if let Some(rest) = ty.strip_prefix("map[string]") {
        match v.as_mapping() {
            Some(m) => {
                for (k, x) in m {
                    let k = k.as_str().unwrap_or("?");
                    check_go(types, rest, x, &format!("{at}.{k}"), errs);
                }
            }
            None => errs.push(format!("{at}: not a mapping ({ty})")),
        }
        return;
    }
    match ty {
        "interface{}" => {}
        // yaml.v3 stores any scalar's text into a string.
        "string" => {
            if !matches!(v, Y::String(_) | Y::Bool(_) | Y::Number(_)) {
                errs.push(format!("{at}: not a scalar (string)"));
            }
        }
        "int" | "uint8" => {
            if !v.is_i64() && !v.is_u64() {
                errs.push(format!("{at}: not an integer"));
            }
        }
        "bool" => {
            if !v.is_bool() {
                errs.push(format!("{at}: not a boolean"));
            }
        }
        name => {
            let Some(fields) = types.get(name) else {
                errs.push(format!("{at}: unknown Go type {name}"));
                return;
            };
            if let Some(alias) = fields.get("") {
                check_go(types, alias, v, at, errs);
                return;
            }
            let Some(m) = v.as_mapping() else {
                errs.push(format!("{at}: not a mapping ({name})"));
                return;
            };
            for (k, x) in m {
                let k = k.as_str().unwrap_or("?");
                match fields.get(k) {
                    Some(t) => check_go(types, t, x, &format!("{at}.{k}"), errs),
                    None => errs.push(format!("{at}.{k}: no such field in {name}")),
                }
            }
        }
    }
}

fn siteconfig_errors(text: &str, root: &str) -> String {
    let types = siteconfig_types();
    let mut errs = Vec::new();
    for d in serde_yaml_ng::Deserializer::from_str(text) {
        use serde::Deserialize;
        let v = serde_yaml_ng::Value::deserialize(d).expect("YAML");
        check_go(&types, root, &v, "", &mut errs);
    }
    errs.join("\n")
}

#[test]
fn siteconfig_files_match_the_removed_generators_types() {
    let example = fixture("siteconfig-example-sno.yaml");
    assert_eq!(
        siteconfig_errors(&example, "SiteConfig"),
        "",
        "the upstream example"
    );
    // The checker catches a ClusterInstance-style nesting in a SiteConfig.
    let wrong = "apiVersion: ran.openshift.io/v1\nkind: SiteConfig\nspec:\n  nodes:\n    - installerArgs: '[]'\n";
    assert!(siteconfig_errors(wrong, "SiteConfig").contains(".spec.nodes: no such field in Spec"));

    let nd = node_dir();
    let snippet = read(&nd.join("siteconfig.yaml"));
    assert_eq!(
        siteconfig_errors(&snippet, "SiteConfig"),
        "",
        "siteconfig.yaml"
    );
    let s = docs(&snippet);
    let discovery: J = serde_json::from_str(&read(&nd.join("discovery.ign"))).expect("JSON");
    assert_eq!(
        json_in(
            &s[0]["spec"]["clusters"][0]["ignitionConfigOverride"],
            "snippet"
        ),
        discovery
    );

    let dir = scratch("gitops-siteconfig");
    let file = dir.path().join("example-sno.yaml");
    fs::write(&file, &example).expect("writing");
    into(&file).success();
    let text = read(&file);
    assert_eq!(
        siteconfig_errors(&text, "SiteConfig"),
        "",
        "the merged SiteConfig"
    );
    let m = docs(&text);
    let cluster = &m[0]["spec"]["clusters"][0];
    assert_eq!(
        json_in(&cluster["ignitionConfigOverride"], "cluster"),
        discovery
    );
    let node = &cluster["nodes"][0];
    let ign = json_in(&node["ignitionConfigOverride"], "node");
    assert_eq!(
        ign["systemd"]["units"][1]["name"], "precache-ocp-images.service",
        "{ign}"
    );
    assert_eq!(
        ign["systemd"]["units"][0]["name"],
        "var-lib-containers.mount"
    );
    assert_eq!(
        json_in(&node["installerArgs"], "installerArgs"),
        serde_json::json!(["--save-partlabel", "data"])
    );
    let r = into(&file).success();
    assert!(r.stderr.contains("already holds"), "{}", r.stderr);
    assert_eq!(read(&file), text);
}

/// A site as a GitOps repository holds it: the BMC secret, the ClusterInstance with a discovery
/// override (a chrony drop-in, Ignition 3.1.0) and a node with its own override and
/// installerArgs, and a ConfigMap of extra manifests; comments and quoting as people write them.
const SITE: &str = r#"# Site A: BMC secret, cluster, extra manifests
---
apiVersion: v1
kind: Secret
metadata:
  name: bmc-n1
  namespace: site-a
type: Opaque
data:
  username: "cm9vdA=="   # root
  password: "c2VjcmV0"
---
apiVersion: siteconfig.open-cluster-management.io/v1alpha1
kind: ClusterInstance
metadata:
  name: "site-a"
  namespace: "site-a"
spec:
  baseDomain: "example.com"
  clusterName: "site-a"
  pullSecretRef:
    name: "pull-secret"
  # Discovery ISO: our NTP servers (chrony drop-in)
  ignitionConfigOverride: '{"ignition":{"version":"3.1.0"},"storage":{"files":[{"path":"/etc/chrony.d/10-site.conf","mode":420,"overwrite":true,"contents":{"source":"data:,server%20ntp1.example.com%20iburst%0A"}}]}}'
  templateRefs:
    - name: ai-cluster-templates-v1
      namespace: open-cluster-management
  nodes:
    - hostName: "n1.example.com"   # the SNO node
      role: master
      bmcAddress: "redfish-virtualmedia+https://192.0.2.10/redfish/v1/Systems/1"
      bmcCredentialsName:
        name: bmc-n1
      bootMACAddress: "AA:BB:CC:DD:EE:01"
      installerArgs: '["--append-karg","ip=dhcp"]'
      ignitionConfigOverride: |
        {
          "ignition": {"version": "3.2.0"},
          "storage": {"files": [{"path": "/etc/chrony.d/10-site.conf", "mode": 420, "contents": {"source": "data:,server%20ntp1.example.com%20iburst%0A"}}]}
        }
      templateRefs:
        - name: ai-node-templates-v1
          namespace: open-cluster-management
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: site-a-extra
  namespace: site-a
data:
  01-x.yaml: |
    kind: Something
"#;

/// The documents of `text` with the three fields prestage sets removed from the
/// ClusterInstance.
fn without_ours(text: &str) -> Vec<J> {
    let mut d = docs(text);
    for doc in d.iter_mut().filter(|d| d["kind"] == "ClusterInstance") {
        let spec = doc["spec"].as_object_mut().expect("spec");
        spec.remove("ignitionConfigOverride");
        for n in spec
            .get_mut("nodes")
            .and_then(J::as_array_mut)
            .expect("nodes")
        {
            let n = n.as_object_mut().expect("node");
            n.remove("ignitionConfigOverride");
            n.remove("installerArgs");
        }
    }
    d
}

/// Applies the Ignition config `cfg` with the real Ignition into a fresh root under `dir`.
fn apply(cfg: &J, dir: &Path, name: &str) -> PathBuf {
    let c = dir.join(format!("{name}.ign"));
    fs::write(&c, serde_json::to_vec(cfg).expect("JSON")).expect("writing");
    let validate = require("ignition-validate", "ignition");
    let r = run(Command::new(validate).arg(&c));
    assert!(
        r.status.success() && r.both().trim().is_empty(),
        "ignition-validate refuses the merged {name}:\n{}",
        r.both()
    );
    let root = dir.join(format!("root-{name}"));
    let work = dir.join(format!("work-{name}"));
    fs::create_dir_all(&work).expect("mkdir");
    nodeenv::ignition_apply(&c, &root, &work);
    root
}

#[test]
fn into_keeps_a_users_chrony_override_and_installer_args_and_ignition_applies_both() {
    nodeenv::require_root("applying Ignition configs (it sets owners)");
    let dir = scratch("gitops-into");
    let file = dir.path().join("site-a.yaml");
    fs::write(&file, SITE).expect("writing");
    let r = into(&file).success();
    note!("{}", r.stderr.trim());
    assert!(
        r.stderr.contains("into ClusterInstance site-a (1 node)"),
        "{}",
        r.stderr
    );
    let text = read(&file);

    // Everything but the three values is as it was: the other documents byte for byte, in
    // their order, every comment line, every other key.
    let ci_start = SITE
        .find("---\napiVersion: siteconfig")
        .expect("ClusterInstance");
    let cm_start = SITE
        .rfind("---\napiVersion: v1\nkind: ConfigMap")
        .expect("ConfigMap");
    assert!(text.starts_with(&SITE[..ci_start]), "{text}");
    assert!(text.ends_with(&SITE[cm_start..]), "{text}");
    let mut lines = text.lines();
    for c in SITE.lines().filter(|l| l.contains('#')) {
        assert!(lines.any(|l| l == c), "the line {c:?} is gone:\n{text}");
    }
    assert_eq!(without_ours(&text), without_ours(SITE));

    let d = docs(&text);
    let spec = &d[1]["spec"];
    let discovery = json_in(
        &spec["ignitionConfigOverride"],
        "spec.ignitionConfigOverride",
    );
    let node = &spec["nodes"][0];
    let install = json_in(
        &node["ignitionConfigOverride"],
        "nodes[0].ignitionConfigOverride",
    );
    assert_eq!(
        discovery["ignition"]["version"], "3.1.0",
        "a 3.1.0 override stays 3.1.0"
    );
    assert_eq!(install["ignition"]["version"], "3.2.0");
    assert_eq!(
        json_in(&node["installerArgs"], "installerArgs"),
        serde_json::json!(["--append-karg", "ip=dhcp", "--save-partlabel", "data"])
    );

    // The real Ignition lands the user's file and ours from each override.
    let nd = node_dir();
    for (cfg, name, loader, unit) in [
        (
            &discovery,
            "discovery",
            "extract-ai.sh",
            "precache-images.service",
        ),
        (
            &install,
            "install",
            "extract-ocp.sh",
            "precache-ocp-images.service",
        ),
    ] {
        let root = apply(cfg, dir.path(), name);
        assert_eq!(
            read(&root.join("etc/chrony.d/10-site.conf")),
            "server ntp1.example.com iburst\n",
            "{name}: the user's chrony drop-in"
        );
        assert_eq!(
            fs::read(root.join("usr/local/bin").join(loader)).expect("loader"),
            fs::read(nd.join(loader)).expect("loader"),
            "{name}: our loader"
        );
        assert_eq!(
            read(&root.join("etc/systemd/system").join(unit)),
            read(&nd.join(unit)),
            "{name}: our unit"
        );
        let preset = read(&root.join("etc/systemd/system-preset/20-ignition.preset"));
        assert!(preset.contains(&format!("enable {unit}")), "{preset}");
        note!("{name}: Ignition wrote the chrony drop-in, {loader} and {unit}");
    }

    // Again: byte for byte the same, not rewritten.
    let ino = fs::metadata(&file).expect("stat").ino();
    let r = into(&file).success();
    assert!(r.stderr.contains("already holds"), "{}", r.stderr);
    assert_eq!(read(&file), text);
    assert_eq!(fs::metadata(&file).expect("stat").ino(), ino);

    // A path both define is refused, naming both; nothing is written.
    let clash = dir.path().join("clash.yaml");
    let clash_text = SITE.replace(
        "\"path\": \"/etc/chrony.d/10-site.conf\"",
        "\"path\": \"/usr/local/bin/extract-ocp.sh\"",
    );
    fs::write(&clash, &clash_text).expect("writing");
    let r = into(&clash);
    common::assert_one_line_error(
        &r,
        dir.path(),
        &[
            "<dir>/clash.yaml",
            "document 2, ClusterInstance site-a",
            "spec.nodes[0].ignitionConfigOverride",
            "storage.files[0] (/usr/local/bin/extract-ocp.sh)",
            "prestage's loader (storage.files, /usr/local/bin/extract-ocp.sh)",
        ],
    );
    assert_eq!(read(&clash), clash_text);
    assert!(common::temp_leftovers(dir.path(), "clash.yaml").is_empty());
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let dir = scratch("gitops-bad");
    let ci = |spec: &str| {
        format!(
            "apiVersion: siteconfig.open-cluster-management.io/v1alpha1\nkind: ClusterInstance\n\
             metadata:\n  name: c1\n  namespace: c1\nspec:\n  clusterName: c1\n{spec}"
        )
    };
    let node = "  nodes:\n    - hostName: n1\n";
    let cases: Vec<(&str, String, Vec<&str>)> =
        vec![
        (
            "neither.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: {}\n".to_string(),
            vec!["neither a ClusterInstance", "nor a SiteConfig", "ConfigMap (v1)"],
        ),
        (
            "not-json.yaml",
            ci(&format!("  ignitionConfigOverride: '{{\"ignition\": SECRET'\n{node}")),
            vec!["ClusterInstance c1", "spec.ignitionConfigOverride", "not JSON"],
        ),
        (
            "ignition2.yaml",
            ci(&format!(
                "  ignitionConfigOverride: '{{\"ignition\":{{\"version\":\"2.2.0\"}}}}'\n{node}"
            )),
            vec![
                "spec.ignitionConfigOverride",
                "ignition.version 2.2.0: not Ignition 3.x",
            ],
        ),
        (
            "args-object.yaml",
            ci(&format!("{node}      installerArgs: '{{\"append-karg\": \"x\"}}'\n")),
            vec![
                "spec.nodes[0].installerArgs",
                "not a JSON list of strings: a JSON object",
            ],
        ),
        (
            "args-number.yaml",
            ci(&format!("{node}      installerArgs: '[\"-n\", 2]'\n")),
            vec![
                "spec.nodes[0].installerArgs",
                "not a JSON list of strings: item 1 is a JSON number",
            ],
        ),
        (
            "no-nodes.yaml",
            ci("  nodes: []\n"),
            vec!["ClusterInstance c1", "spec.nodes", "an empty list"],
        ),
        (
            "siteconfig-no-nodes.yaml",
            "apiVersion: ran.openshift.io/v1\nkind: SiteConfig\nmetadata:\n  name: s\nspec:\n  \
             clusters:\n    - clusterName: a\n      nodes: []\n"
                .to_string(),
            vec!["SiteConfig s", "spec.clusters[0].nodes", "an empty list"],
        ),
    ];
    for (name, text, needles) in cases {
        let f = dir.path().join(name);
        fs::write(&f, &text).expect("writing");
        let r = into(&f);
        let mut all = vec![format!("<dir>/{name}")];
        all.extend(needles.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let line = common::assert_one_line_error(&r, dir.path(), &refs);
        assert!(
            !line.contains("SECRET"),
            "the error quotes the override: {line}"
        );
        assert_eq!(read(&f), text, "{name} was changed");
        assert!(
            common::temp_leftovers(dir.path(), name).is_empty(),
            "{name}: temporary files left"
        );
        note!("{name}: {line}");
    }

    // A --save-partindex that keeps only the pre-staged partition (number 1 of this image) is
    // kept, with ours added.
    let f = dir.path().join("partindex.yaml");
    fs::write(
        &f,
        ci(&format!(
            "{node}      installerArgs: '[\"--save-partindex\",\"1\"]'\n"
        )),
    )
    .expect("writing");
    into(&f).success();
    assert_eq!(
        json_in(
            &docs(&read(&f))[0]["spec"]["nodes"][0]["installerArgs"],
            "args"
        ),
        serde_json::json!(["--save-partindex", "1", "--save-partlabel", "data"])
    );
}
