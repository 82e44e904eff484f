//! Merging prestage's settings into settings a user already has, never replacing them: an
//! Ignition override merged with ours, and coreos-installer arguments with ours added.
//!
//! The same rules hold wherever a user has settings: `prestage node IMAGE --into FILE`
//! (ClusterInstance, SiteConfig) uses these functions, and `assisted.sh` applies them in jq to
//! what Assisted Service holds (tests compare the two).
//!
//! **Ignition** (as Ignition merges configs, which keys files, directories and links by path and
//! units by name): everything of the user's config is kept in its order, and prestage's loader
//! (a file) and unit are appended to `storage.files` and `systemd.units`. Where both define one
//! path or one unit name the merge is refused, naming both, with two exceptions that make it
//! idempotent: an entry equal to ours is kept as it is, and an entry prestage wrote itself (an
//! older loader or unit, recognised by its header) is replaced in place. A path of ours under a
//! user's file or link is refused too. A user's `3.1.0` override **stays 3.1.0**: our entries use
//! only fields 3.1.0 has (`path`, `mode`, `overwrite`, `contents.source`; `name`, `enabled`,
//! `contents`), so nothing needs translating, the user's file changes least, and OCP 4.6 (whose
//! RHCOS speaks 3.1) keeps working; Assisted Service parses 3.1.0 overrides itself and checks the
//! merged config against 3.1. Other versions are refused: Assisted Service takes only 3.1.0 and
//! 3.2.0. An override that replaces itself (`ignition.config.replace`) is refused: ours would be
//! dropped.
//!
//! **Installer arguments** (a JSON list of strings): kept as they are, with
//! `--save-partlabel LABEL` appended unless that exact pair (or `--save-partlabel=LABEL`, or
//! LABEL in a comma list) is there. `--save-partindex` values are returned for the caller to
//! judge ([`check_partindex`], with the image's partition table).
//!
//! Messages name paths, keys and unit names only, never contents: overrides may hold secrets.

use anyhow::{bail, Context, Result};
use base64::Engine as _;

use super::ignition::{self, Config};
use super::json::Json;
use super::loader;
use crate::compose::gpt;

/// What a merge made of the user's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Merged<T> {
    /// The user's value already holds ours: leave it as it is, byte for byte.
    Unchanged,
    /// The merged value to write.
    Changed(T),
}

/// The Ignition versions Assisted Service accepts (`ParseToLatest`: 3.2, then 3.1).
pub const ACCEPTED_VERSIONS: [&str; 2] = ["3.1.0", "3.2.0"];

/// A path as Ignition compares them: `.` and empty components dropped, `..` applied.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether a `storage.files[]` entry holds a loader prestage wrote (a base64 `data:` URL).
fn is_prestage_file(entry: &Json) -> bool {
    let Some(src) = entry
        .get("contents")
        .and_then(|c| c.get("source"))
        .and_then(Json::as_str)
    else {
        return false;
    };
    let Some((head, b64)) = src.strip_prefix("data:").and_then(|s| s.split_once(',')) else {
        return false;
    };
    head.ends_with(";base64")
        && base64::engine::general_purpose::STANDARD
            .decode(b64)
            .is_ok_and(|b| loader::is_prestage_loader(&b))
}

/// Whether a `systemd.units[]` entry is a unit prestage wrote.
fn is_prestage_unit(entry: &Json) -> bool {
    entry
        .get("contents")
        .and_then(Json::as_str)
        .is_some_and(ignition::is_prestage_unit)
}

/// The array at `key` of the object `obj` (created empty when missing).
fn array_at<'a>(obj: &'a mut Json, key: &str, what: &str) -> Result<&'a mut Vec<Json>> {
    let Json::Object(m) = obj else {
        bail!("internal error: {what} is not an object");
    };
    match m.iter_mut().find(|(k, _)| k == key) {
        None => m.push((key.to_string(), Json::Array(Vec::new()))),
        // Ignition reads null as missing.
        Some((_, v @ Json::Null)) => *v = Json::Array(Vec::new()),
        Some(_) => {}
    }
    match m.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v) {
        Some(Json::Array(a)) => Ok(a),
        Some(other) => bail!("{what}.{key}: not a list (a JSON {})", other.kind()),
        None => bail!("internal error: {what}.{key} vanished"),
    }
}

/// The object at `key` of `obj` (created empty when missing).
fn object_at<'a>(obj: &'a mut Json, key: &str) -> Result<&'a mut Json> {
    let Json::Object(m) = obj else {
        bail!("internal error: not an object");
    };
    match m.iter_mut().find(|(k, _)| k == key) {
        None => m.push((key.to_string(), Json::Object(Vec::new()))),
        Some((_, v @ Json::Null)) => *v = Json::Object(Vec::new()),
        Some(_) => {}
    }
    match m.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v) {
        Some(v @ Json::Object(_)) => Ok(v),
        Some(other) => bail!("{key}: not an object (a JSON {})", other.kind()),
        None => bail!("internal error: {key} vanished"),
    }
}

/// Checks that `text` is an Ignition config Assisted Service accepts; returns it parsed.
pub fn parse_override(text: &str) -> Result<Json> {
    let cfg = Json::parse(text).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
    if !matches!(cfg, Json::Object(_)) {
        bail!(
            "not an Ignition config: a JSON {}, not an object",
            cfg.kind()
        );
    }
    let Some(version) = cfg.get("ignition").and_then(|i| i.get("version")) else {
        bail!("not an Ignition config: it has no ignition.version");
    };
    let Some(version) = version.as_str() else {
        bail!("ignition.version: not a string (a JSON {})", version.kind());
    };
    if !ACCEPTED_VERSIONS.contains(&version) {
        let what = if version.starts_with("3.") {
            ""
        } else {
            "not Ignition 3.x; "
        };
        bail!(
            "ignition.version {version}: {what}Assisted Service takes {} overrides only",
            ACCEPTED_VERSIONS.join(" and ")
        );
    }
    let replace = cfg
        .get("ignition")
        .and_then(|i| i.get("config"))
        .and_then(|c| c.get("replace"))
        .and_then(|r| r.get("source"));
    if replace.is_some_and(|s| !matches!(s, Json::Null)) {
        bail!(
            "ignition.config.replace: the override replaces itself with another config, which \
             would drop prestage's loader and unit; merge them into that config instead"
        );
    }
    Ok(cfg)
}

/// Merges our override `ours` into the user's override `existing` (empty: none).
pub fn merge_ignition(existing: &str, ours: &Config) -> Result<Merged<Json>> {
    let ours_json =
        Json::of(ours).map_err(|e| anyhow::anyhow!("internal error: our override: {e}"))?;
    if existing.trim().is_empty() {
        return Ok(Merged::Changed(ours_json));
    }
    let mut cfg = parse_override(existing)?;
    let mut changed = false;

    // Files: ours against every path the user's storage defines.
    {
        let storage = object_at(&mut cfg, "storage")?;
        for kind in ["files", "directories", "links"] {
            if let Some(v) = storage.get(kind) {
                if !matches!(v, Json::Array(_) | Json::Null) {
                    bail!("storage.{kind}: not a list (a JSON {})", v.kind());
                }
            }
        }
        for ours_file in ours.storage.files.iter() {
            let ours_entry = Json::of(ours_file)
                .map_err(|e| anyhow::anyhow!("internal error: our file: {e}"))?;
            let path = clean(&ours_file.path);
            let mut at = None;
            for kind in ["files", "directories", "links"] {
                let Some(Json::Array(list)) = storage.get(kind) else {
                    continue;
                };
                for (i, e) in list.iter().enumerate() {
                    let Some(p) = e.get("path").and_then(Json::as_str) else {
                        bail!("storage.{kind}[{i}]: no path");
                    };
                    let theirs = clean(p);
                    if theirs == path {
                        if kind == "files" && e.same(&ours_entry) {
                            at = Some((i, false));
                        } else if kind == "files" && is_prestage_file(e) {
                            at = Some((i, true));
                        } else {
                            bail!(
                                "storage.{kind}[{i}] ({p}) and prestage's loader (storage.files, \
                                 {}) both define {path}: Ignition would keep one of them; \
                                 move or remove yours",
                                ours_file.path
                            );
                        }
                    } else if kind != "directories" && path.starts_with(&format!("{theirs}/")) {
                        bail!(
                            "storage.{kind}[{i}] ({p}) is a {} where prestage's loader ({}) needs \
                             a directory",
                            if kind == "files" { "file" } else { "link" },
                            ours_file.path
                        );
                    }
                }
            }
            let files = array_at(storage, "files", "storage")?;
            match at {
                Some((_, false)) => {}
                Some((i, true)) => {
                    files[i] = ours_entry;
                    changed = true;
                }
                None => {
                    files.push(ours_entry);
                    changed = true;
                }
            }
        }
    }

    // Units: ours against every unit name.
    {
        let systemd = object_at(&mut cfg, "systemd")?;
        let units = array_at(systemd, "units", "systemd")?;
        for ours_unit in ours.systemd.units.iter() {
            let ours_entry = Json::of(ours_unit)
                .map_err(|e| anyhow::anyhow!("internal error: our unit: {e}"))?;
            let mut at = None;
            for (i, u) in units.iter().enumerate() {
                let Some(name) = u.get("name").and_then(Json::as_str) else {
                    bail!("systemd.units[{i}]: no name");
                };
                if name == ours_unit.name {
                    if u.same(&ours_entry) {
                        at = Some((i, false));
                    } else if is_prestage_unit(u) {
                        at = Some((i, true));
                    } else {
                        bail!(
                            "systemd.units[{i}] ({name}) and prestage's unit (systemd.units, {}) \
                             are one unit: Ignition would keep one of them; rename or remove \
                             yours",
                            ours_unit.name
                        );
                    }
                }
            }
            match at {
                Some((_, false)) => {}
                Some((i, true)) => {
                    units[i] = ours_entry;
                    changed = true;
                }
                None => {
                    units.push(ours_entry);
                    changed = true;
                }
            }
        }
    }
    Ok(if changed {
        Merged::Changed(cfg)
    } else {
        Merged::Unchanged
    })
}

/// What a user's installer arguments became.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The merged list.
    pub merged: Merged<Vec<String>>,
    /// Every `--save-partindex` value the user gave.
    pub partindex: Vec<String>,
}

/// Merges `--save-partlabel label` into the user's installer arguments `existing` (a JSON list
/// of strings as text; empty: none).
pub fn merge_installer_args(existing: &str, label: &str) -> Result<Args> {
    let ours = vec!["--save-partlabel".to_string(), label.to_string()];
    if existing.trim().is_empty() {
        return Ok(Args {
            merged: Merged::Changed(ours),
            partindex: Vec::new(),
        });
    }
    let v = Json::parse(existing).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
    let Json::Array(items) = &v else {
        bail!(
            "not a JSON list of strings: a JSON {}; coreos-installer arguments are written \
             '[\"--append-karg\",\"ip=dhcp\"]'",
            v.kind()
        );
    };
    let mut args = Vec::new();
    for (i, a) in items.iter().enumerate() {
        match a.as_str() {
            Some(s) => args.push(s.to_string()),
            None => bail!(
                "not a JSON list of strings: item {i} is a JSON {}",
                a.kind()
            ),
        }
    }
    let value_of = |i: usize, opt: &str| -> Option<String> {
        let a = &args[i];
        if a == opt {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{opt}=")).map(str::to_string)
        }
    };
    let mut present = false;
    let mut partindex = Vec::new();
    for i in 0..args.len() {
        if let Some(v) = value_of(i, "--save-partlabel") {
            present |= v.split(',').any(|l| l == label);
        }
        if let Some(v) = value_of(i, "--save-partindex") {
            partindex.push(v);
        }
    }
    let merged = if present {
        Merged::Unchanged
    } else {
        args.extend(ours);
        Merged::Changed(args)
    };
    Ok(Args { merged, partindex })
}

/// Parses one `--save-partindex` value as coreos-installer does: numbers and ranges (`5`,
/// `5-7`, `5-`, `-7`), comma-separated; returns inclusive (first, last) pairs.
fn parse_partindex(value: &str) -> Result<Vec<(u32, u32)>> {
    let mut v = Vec::new();
    for piece in value.split(',') {
        let num = |s: &str| -> Result<u32> {
            s.parse::<u32>().ok().filter(|n| *n >= 1).with_context(|| {
                format!(
                    "--save-partindex {value}: `{piece}` is not a partition number or \
                         range (coreos-installer would refuse it)"
                )
            })
        };
        let range = match piece.split_once('-') {
            None => {
                let n = num(piece)?;
                (n, n)
            }
            Some(("", "")) => bail!(
                "--save-partindex {value}: `{piece}` is not a partition number or range \
                 (coreos-installer would refuse it)"
            ),
            Some(("", b)) => (1, num(b)?),
            Some((a, "")) => (num(a)?, u32::MAX),
            Some((a, b)) => (num(a)?, num(b)?),
        };
        v.push(range);
    }
    Ok(v)
}

/// Checks the user's `--save-partindex` values against the image's partition table: keeping a
/// partition that lies before the pre-staged one (where coreos-installer writes RHCOS and the
/// root filesystem grows) makes coreos-installer refuse the install. Keeping the pre-staged
/// partition itself, or numbers this disk does not have, is harmless.
pub fn check_partindex(values: &[String], parts: &[gpt::Found], label: &str) -> Result<()> {
    let Some(data) = parts.iter().find(|p| p.label == label) else {
        bail!("internal error: the image has no partition `{label}`");
    };
    for value in values {
        let ranges = parse_partindex(value)?;
        for p in parts {
            let kept = ranges.iter().any(|&(a, b)| (a..=b).contains(&p.number));
            if kept && p.label != label && p.offset < data.offset {
                bail!(
                    "--save-partindex {value} also keeps partition {} (`{}`) of the image, which \
                     lies before the pre-staged partition {} (`{label}`), where coreos-installer \
                     writes RHCOS: it refuses to install over a kept partition; narrow it to {} \
                     or drop it (prestage adds --save-partlabel {label}, which keeps the \
                     pre-staged partition)",
                    p.number,
                    p.label,
                    data.number,
                    data.number
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Format, Stage};

    fn ours(stage: Stage) -> Config {
        ignition::config(
            stage,
            Format::Shared,
            "data",
            loader::script(Format::Shared, stage, "data")
                .unwrap()
                .as_bytes(),
        )
    }

    const CHRONY: &str = r#"{"ignition":{"version":"3.1.0"},"storage":{"files":[{"path":"/etc/chrony.d/ntp.conf","mode":420,"contents":{"source":"data:,server%20ntp"}}]},"passwd":{"users":[{"name":"core","sshAuthorizedKeys":["ssh-ed25519 AAAA"]}]}}"#;

    fn changed<T>(m: Merged<T>) -> T {
        match m {
            Merged::Changed(v) => v,
            Merged::Unchanged => panic!("expected a change"),
        }
    }

    #[test]
    fn nothing_there_gives_ours() {
        let o = ours(Stage::Discovery);
        let m = changed(merge_ignition("  ", &o).unwrap());
        assert_eq!(m, Json::of(&o).unwrap());
    }

    #[test]
    fn both_kept_in_order_version_kept_and_merging_twice_changes_nothing() {
        let o = ours(Stage::Install);
        let m = changed(merge_ignition(CHRONY, &o).unwrap());
        let text = m.to_compact();
        assert!(
            text.starts_with(
                r#"{"ignition":{"version":"3.1.0"},"storage":{"files":[{"path":"/etc/chrony.d/ntp.conf""#
            ),
            "{text}"
        );
        let files = m.get("storage").and_then(|s| s.get("files")).unwrap();
        let Json::Array(files) = files else { panic!() };
        assert_eq!(files.len(), 2);
        assert_eq!(
            files[1].get("path").and_then(Json::as_str),
            Some("/usr/local/bin/extract-ocp.sh")
        );
        assert!(m.get("passwd").is_some());
        // The order of the top-level keys: the user's, then systemd added at the end.
        let Json::Object(top) = &m else { panic!() };
        let keys: Vec<&str> = top.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["ignition", "storage", "passwd", "systemd"]);
        assert_eq!(merge_ignition(&text, &o).unwrap(), Merged::Unchanged);
        assert_eq!(
            merge_ignition(&m.to_pretty(), &o).unwrap(),
            Merged::Unchanged
        );
    }

    #[test]
    fn an_older_prestage_entry_is_replaced_in_place() {
        let old = ignition::config(
            Stage::Install,
            Format::Ztp,
            "old",
            loader::script(Format::Ztp, Stage::Install, "old")
                .unwrap()
                .as_bytes(),
        );
        let o = ours(Stage::Install);
        let first = changed(merge_ignition(CHRONY, &old).unwrap()).to_compact();
        let second = changed(merge_ignition(&first, &o).unwrap());
        assert_eq!(
            changed(merge_ignition(CHRONY, &o).unwrap()),
            second,
            "replacing ours in place gives what merging into the user's alone gives"
        );
    }

    #[test]
    fn conflicts_name_both() {
        let o = ours(Stage::Discovery);
        let mine_file = r#"{"ignition":{"version":"3.2.0"},"storage":{"files":[{"path":"/etc/a"},{"path":"/usr/local/bin//extract-ai.sh","contents":{"source":"data:,echo"}}]}}"#;
        let e = format!("{:#}", merge_ignition(mine_file, &o).unwrap_err());
        assert!(
            e.contains("storage.files[1] (/usr/local/bin//extract-ai.sh)")
                && e.contains("prestage's loader (storage.files, /usr/local/bin/extract-ai.sh)"),
            "{e}"
        );
        let mine_unit = r#"{"ignition":{"version":"3.2.0"},"systemd":{"units":[{"name":"precache-images.service","enabled":true,"contents":"[Unit]\n"}]}}"#;
        let e = format!("{:#}", merge_ignition(mine_unit, &o).unwrap_err());
        assert!(
            e.contains("systemd.units[0] (precache-images.service)")
                && e.contains("prestage's unit (systemd.units, precache-images.service)"),
            "{e}"
        );
        let link = r#"{"ignition":{"version":"3.2.0"},"storage":{"links":[{"path":"/usr/local/bin","target":"/opt/bin"}]}}"#;
        let e = format!("{:#}", merge_ignition(link, &o).unwrap_err());
        assert!(
            e.contains("storage.links[0] (/usr/local/bin) is a link"),
            "{e}"
        );
    }

    #[test]
    fn bad_overrides_are_refused() {
        let o = ours(Stage::Discovery);
        for (text, want) in [
            ("{not json", "not JSON"),
            ("[1]", "a JSON list, not an object"),
            (r#"{"storage":{}}"#, "no ignition.version"),
            (
                r#"{"ignition":{"version":"2.2.0"}}"#,
                "2.2.0: not Ignition 3.x",
            ),
            (
                r#"{"ignition":{"version":"3.4.0"}}"#,
                "3.4.0: Assisted Service takes 3.1.0 and 3.2.0",
            ),
            (
                r#"{"ignition":{"version":"3.2.0","config":{"replace":{"source":"http://x/y"}}}}"#,
                "ignition.config.replace",
            ),
            (
                r#"{"ignition":{"version":"3.2.0"},"storage":{"files":{}}}"#,
                "storage.files: not a list",
            ),
        ] {
            let e = format!("{:#}", merge_ignition(text, &o).unwrap_err());
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn installer_args_gain_ours_once() {
        let a = merge_installer_args(r#"["--append-karg","ip=dhcp"]"#, "data").unwrap();
        assert_eq!(
            a.merged,
            Merged::Changed(
                ["--append-karg", "ip=dhcp", "--save-partlabel", "data"]
                    .map(String::from)
                    .to_vec()
            )
        );
        for done in [
            r#"["--save-partlabel","data"]"#,
            r#"["--save-partlabel=x,data","-n"]"#,
        ] {
            assert_eq!(
                merge_installer_args(done, "data").unwrap().merged,
                Merged::Unchanged
            );
        }
        let a = merge_installer_args(r#"["--save-partindex","1-3","--save-partindex=6"]"#, "data")
            .unwrap();
        assert_eq!(a.partindex, ["1-3", "6"]);
        for (bad, want) in [
            (r#"{"a":1}"#, "a JSON object"),
            (r#"["-n",1]"#, "item 1 is a JSON number"),
            ("--append-karg", "not JSON"),
        ] {
            let e = format!("{:#}", merge_installer_args(bad, "data").unwrap_err());
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn partindex_keeping_what_rhcos_overwrites_is_refused() {
        let part = |number, label: &str, offset| gpt::Found {
            number,
            label: label.to_string(),
            offset,
            size: 1,
            type_guid: uuid::Uuid::nil(),
        };
        let parts = [part(1, "data", 1 << 30), part(2, "scratch", 1 << 20)];
        check_partindex(&["1".into(), "3-".into()], &parts, "data").unwrap();
        let e = format!(
            "{:#}",
            check_partindex(&["-2".into()], &parts, "data").unwrap_err()
        );
        assert!(e.contains("keeps partition 2 (`scratch`)"), "{e}");
        let e = format!(
            "{:#}",
            check_partindex(&["x".into()], &parts, "data").unwrap_err()
        );
        assert!(e.contains("`x` is not a partition number"), "{e}");
    }
}
