//! Mirrors from a registries.conf (containers v2 TOML): `[[registry]]` entries with `prefix`,
//! `location`, `insecure`, `blocked`, `mirror-by-digest-only` and `[[registry.mirror]]` entries
//! with `location`, `insecure` and `pull-from-mirror` (`all`, `digest-only`, `tag-only`; not
//! together with `mirror-by-digest-only`, as in containers/image).
//!
//! Drop-ins as containers-registries.conf.d(5) has them: the `*.conf` files of the `.d`
//! directory next to the main file are read in name order after it (for the system file
//! `/etc/containers/registries.conf.d`, then `~/.config/containers/registries.conf.d`; for the
//! user file `~/.config/containers/registries.conf` only its own; for a file given with
//! `--registries-conf` or `CONTAINERS_REGISTRIES_CONF`, `FILE.d`). A `[[registry]]` of a later
//! file replaces the one with the same prefix; other entries add up.
//!
//! A reference matching a prefix (the longest wins; `*.domain` matches hosts) is rewritten onto
//! each applicable mirror, then onto the entry's location: the sources are tried in that order,
//! a failing mirror falling back to the next. Digest-only mirrors (as an ImageDigestMirrorSet
//! produces) serve only digest-pinned references, and content from them is verified against the
//! pinned digest like any other. A `blocked` registry is never contacted: references to it are
//! refused with the file that blocks it named, unless a mirror that is not itself blocked
//! serves them (as containers/image checks each source it tries).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Deserialize;

use super::reference::ImageRef;

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawConf {
    #[serde(default)]
    registry: Vec<RawRegistry>,
    /// The v1 format's `[registries.search]`, `[registries.insecure]`, `[registries.block]`.
    registries: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
    pull_from_mirror: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    pull_from_mirror: Option<String>,
}

/// When a mirror may serve a reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullFrom {
    /// Tags and digests.
    All,
    /// Digest-pinned references only.
    DigestOnly,
    /// Tag references only.
    TagOnly,
}

/// A mirror of a registry entry.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// `host[:port][/path]`.
    pub location: String,
    /// TLS not verified, plain HTTP allowed.
    pub insecure: bool,
    /// What it may serve.
    pub pull_from: PullFrom,
}

/// A `[[registry]]` entry.
#[derive(Clone, Debug)]
pub struct RegistryEntry {
    /// What it matches (`host[/path]` or `*.domain`).
    pub prefix: String,
    /// Where matching references really are.
    pub location: String,
    /// TLS not verified, plain HTTP allowed.
    pub insecure: bool,
    /// Pulls from it are refused.
    pub blocked: bool,
    /// Mirrors, tried in order before the location.
    pub mirrors: Vec<Mirror>,
    /// The file it came from.
    pub file: PathBuf,
}

/// Parsed registries.conf (with its drop-ins).
#[derive(Clone, Debug, Default)]
pub struct RegistriesConf {
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// The entries, by prefix.
    pub registries: Vec<RegistryEntry>,
}

/// One place to try for an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The image there.
    pub image: ImageRef,
    /// TLS not verified, plain HTTP allowed.
    pub insecure: bool,
    /// Whether it is a mirror.
    pub mirror: bool,
}

/// `[[registry]]` entries from the v1 format's `registries.insecure` and `registries.block`
/// lists (`registries.search` only concerns short names, which prestage does not resolve).
fn v1_registries(path: &Path, v1: &toml::Value) -> Result<Vec<RawRegistry>> {
    let mut out: Vec<RawRegistry> = Vec::new();
    for (table, insecure, blocked) in [("insecure", true, false), ("block", false, true)] {
        let Some(list) = v1.get(table).and_then(|t| t.get("registries")) else {
            continue;
        };
        let Some(list) = list.as_array() else {
            bail!(
                "{}: registries.{table}.registries: expected a list of registries",
                path.display()
            );
        };
        for (i, r) in list.iter().enumerate() {
            let Some(loc) = r.as_str() else {
                bail!(
                    "{}: registries.{table}.registries[{i}]: expected a string",
                    path.display()
                );
            };
            match out.iter_mut().find(|e| e.location.as_deref() == Some(loc)) {
                Some(e) => {
                    e.insecure |= insecure;
                    e.blocked |= blocked;
                }
                None => out.push(RawRegistry {
                    prefix: None,
                    location: Some(loc.to_string()),
                    insecure,
                    blocked,
                    mirror_by_digest_only: false,
                    mirror: Vec::new(),
                    pull_from_mirror: None,
                }),
            }
        }
    }
    Ok(out)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn check_location(path: &Path, field: &str, loc: &str) -> Result<()> {
    if ImageRef::parse(&format!("{loc}/x")).is_err() && ImageRef::parse(loc).is_err() {
        bail!(
            "{}: {field}: `{loc}` is not a registry location (host[:port][/path])",
            path.display()
        );
    }
    if !(loc.contains('.') || loc.contains(':') || loc.starts_with("localhost")) {
        bail!(
            "{}: {field}: `{loc}` does not start with a registry host",
            path.display()
        );
    }
    Ok(())
}

impl RegistriesConf {
    /// The registries.conf to use and its drop-in directories: `explicit`, else
    /// `CONTAINERS_REGISTRIES_CONF`, else `~/.config/containers/registries.conf`, else
    /// `/etc/containers/registries.conf` (which may be missing).
    pub fn load(explicit: Option<&Path>) -> Result<RegistriesConf> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let user_dir = home
            .as_ref()
            .map(|h| h.join(".config/containers/registries.conf.d"));
        let with_d = |p: &Path| {
            let mut d = p.as_os_str().to_owned();
            d.push(".d");
            PathBuf::from(d)
        };
        let (main, dirs): (Option<PathBuf>, Vec<PathBuf>) = match explicit {
            Some(p) => {
                if !p.is_file() {
                    bail!("--registries-conf {}: no such file", p.display());
                }
                (Some(p.to_path_buf()), vec![with_d(p)])
            }
            None => {
                match std::env::var_os("CONTAINERS_REGISTRIES_CONF").filter(|p| !p.is_empty()) {
                    Some(p) => {
                        let p = PathBuf::from(p);
                        if !p.is_file() {
                            bail!("CONTAINERS_REGISTRIES_CONF {}: no such file", p.display());
                        }
                        let d = with_d(&p);
                        (Some(p), vec![d])
                    }
                    None => {
                        let user = home
                            .as_ref()
                            .map(|h| h.join(".config/containers/registries.conf"))
                            .filter(|p| p.is_file());
                        match user {
                            Some(u) => (Some(u), user_dir.into_iter().collect()),
                            None => {
                                let system = PathBuf::from("/etc/containers/registries.conf");
                                let mut dirs =
                                    vec![PathBuf::from("/etc/containers/registries.conf.d")];
                                dirs.extend(user_dir);
                                (system.is_file().then_some(system), dirs)
                            }
                        }
                    }
                }
            }
        };
        let mut files: Vec<PathBuf> = main.into_iter().collect();
        for d in dirs {
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => bail!("{}: {e}", d.display()),
            };
            let mut drop_ins: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
                .collect();
            drop_ins.sort();
            files.extend(drop_ins);
        }
        let mut conf = RegistriesConf::default();
        for f in files {
            let text =
                std::fs::read_to_string(&f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            conf.merge(RegistriesConf::parse(&f, &text)?);
        }
        Ok(conf)
    }

    /// Adds a later file: its entries replace those with the same prefix.
    pub fn merge(&mut self, later: RegistriesConf) {
        self.files.extend(later.files);
        for r in later.registries {
            match self.registries.iter_mut().find(|e| e.prefix == r.prefix) {
                Some(e) => *e = r,
                None => self.registries.push(r),
            }
        }
        self.registries.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    }

    /// Parses registries.conf text; errors name the file, line or field, and the problem.
    pub fn parse(path: &Path, text: &str) -> Result<RegistriesConf> {
        let is_drop_in = path
            .parent()
            .and_then(|d| d.extension())
            .is_some_and(|x| x == "d");
        RegistriesConf::parse_file(path, text, is_drop_in)
    }

    fn parse_file(path: &Path, text: &str, drop_in: bool) -> Result<RegistriesConf> {
        let raw: RawConf = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            anyhow::anyhow!(
                "{}:{line}: {}",
                path.display(),
                e.message().lines().next().unwrap_or("invalid TOML")
            )
        })?;
        let mut raw_registries = raw.registry;
        if let Some(v1) = &raw.registries {
            if drop_in || !raw_registries.is_empty() {
                bail!(
                    "{}: registries: the v1 format ([registries.search], [registries.insecure], \
                     [registries.block]) is not supported {}; use [[registry]] tables",
                    path.display(),
                    if drop_in {
                        "in drop-ins"
                    } else {
                        "together with [[registry]]"
                    }
                );
            }
            raw_registries = v1_registries(path, v1)?;
        }
        let mut registries: Vec<RegistryEntry> = Vec::new();
        for (i, r) in raw_registries.into_iter().enumerate() {
            let field = |f: &str| format!("registry[{i}].{f}");
            if r.pull_from_mirror.is_some() {
                bail!(
                    "{}: {}: only mirrors have pull-from-mirror",
                    path.display(),
                    field("pull-from-mirror")
                );
            }
            let prefix = r
                .prefix
                .clone()
                .filter(|p| !p.is_empty())
                .or_else(|| r.location.clone().filter(|l| !l.is_empty()));
            let Some(prefix) = prefix else {
                bail!(
                    "{}: {}: neither prefix nor location is set",
                    path.display(),
                    field("prefix")
                );
            };
            let location = r
                .location
                .clone()
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| prefix.clone());
            if prefix.starts_with("*.") {
                if r.location.as_deref().is_some_and(|l| !l.is_empty()) {
                    bail!(
                        "{}: {}: a wildcard prefix cannot have a location",
                        path.display(),
                        field("location")
                    );
                }
            } else {
                check_location(path, &field("prefix"), &prefix)?;
                check_location(path, &field("location"), &location)?;
            }
            let mut mirrors = Vec::new();
            for (j, m) in r.mirror.into_iter().enumerate() {
                let mfield = |f: &str| format!("registry[{i}].mirror[{j}].{f}");
                let Some(loc) = m.location.filter(|l| !l.is_empty()) else {
                    bail!("{}: {}: missing", path.display(), mfield("location"));
                };
                check_location(path, &mfield("location"), &loc)?;
                let pull_from = match m.pull_from_mirror.as_deref() {
                    None | Some("") | Some("all") => PullFrom::All,
                    Some("digest-only") => PullFrom::DigestOnly,
                    Some("tag-only") => PullFrom::TagOnly,
                    Some(other) => bail!(
                        "{}: {}: `{other}` is not one of all, digest-only, tag-only",
                        path.display(),
                        mfield("pull-from-mirror")
                    ),
                };
                if r.mirror_by_digest_only && m.pull_from_mirror.is_some() {
                    bail!(
                        "{}: {}: not allowed with the registry's mirror-by-digest-only",
                        path.display(),
                        mfield("pull-from-mirror")
                    );
                }
                let pull_from = if r.mirror_by_digest_only {
                    PullFrom::DigestOnly
                } else {
                    pull_from
                };
                mirrors.push(Mirror {
                    location: loc,
                    insecure: m.insecure,
                    pull_from,
                });
            }
            // The same location named twice must agree on insecure and blocked.
            if let Some(o) = registries
                .iter()
                .find(|o| o.location == location && !location.starts_with("*."))
            {
                for (what, a, b) in [
                    ("insecure", o.insecure, r.insecure),
                    ("blocked", o.blocked, r.blocked),
                ] {
                    if a != b {
                        bail!(
                            "{}: {}: `{location}` is also a registry with {what} = {a}",
                            path.display(),
                            field(what)
                        );
                    }
                }
            }
            // The first entry of a prefix wins, as in containers/image.
            if registries.iter().any(|o| o.prefix == prefix) {
                continue;
            }
            registries.push(RegistryEntry {
                prefix,
                location,
                insecure: r.insecure,
                blocked: r.blocked,
                mirrors,
                file: path.to_path_buf(),
            });
        }
        registries.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        Ok(RegistriesConf {
            files: vec![path.to_path_buf()],
            registries,
        })
    }

    /// The entry matching `name` (`host/repository`) and the length of the matched part.
    fn matching(&self, image: &ImageRef) -> Option<(&RegistryEntry, usize)> {
        let name = image.name();
        self.registries
            .iter()
            .filter_map(|r| {
                if let Some(domain) = r.prefix.strip_prefix("*.") {
                    let host = image.registry.split(':').next().unwrap_or("");
                    (host.ends_with(&format!(".{domain}"))).then_some((r, image.registry.len()))
                } else {
                    let p = r.prefix.as_str();
                    let ok = name == p
                        || (name.starts_with(p) && name.as_bytes().get(p.len()) == Some(&b'/'));
                    ok.then_some((r, p.len()))
                }
            })
            .max_by_key(|(r, n)| (*n, r.prefix.len()))
    }

    /// The blocked entry matching `image`, if any.
    fn blocking(&self, image: &ImageRef) -> Option<&RegistryEntry> {
        self.matching(image).map(|(e, _)| e).filter(|e| e.blocked)
    }

    /// The places to try for `image`, in order: applicable mirrors, then the (rewritten)
    /// location. `insecure` lists registries made insecure on the command line.
    pub fn endpoints(&self, image: &ImageRef) -> Result<Vec<Endpoint>> {
        let Some((entry, matched)) = self.matching(image) else {
            return Ok(vec![Endpoint {
                image: image.clone(),
                insecure: false,
                mirror: false,
            }]);
        };
        let name = image.name();
        let rest = &name[matched..];
        let rewrite = |loc: &str| -> Result<ImageRef> {
            let new = format!("{loc}{rest}");
            let (registry, repository) = new.split_once('/').unwrap_or((&new, ""));
            if repository.is_empty() {
                bail!("mirror location `{loc}` leaves no repository for {image}");
            }
            Ok(image.with_name(registry, repository))
        };
        let mut v = Vec::new();
        for m in &entry.mirrors {
            let applies = match m.pull_from {
                PullFrom::All => true,
                PullFrom::DigestOnly => image.digest.is_some(),
                PullFrom::TagOnly => image.digest.is_none(),
            };
            if !applies {
                continue;
            }
            let mirrored = rewrite(&m.location)?;
            // A mirror that is itself a blocked registry is skipped.
            if self.blocking(&mirrored).is_some() {
                continue;
            }
            v.push(Endpoint {
                image: mirrored,
                insecure: m.insecure,
                mirror: true,
            });
        }
        let location = if entry.prefix.starts_with("*.") {
            image.registry.clone()
        } else {
            entry.location.clone()
        };
        let primary = rewrite(&location)?;
        match self.blocking(&primary).or(entry.blocked.then_some(entry)) {
            Some(b) if v.is_empty() => bail!(
                "{image}: registry `{}` is blocked in {}{}",
                b.prefix,
                b.file.display(),
                if entry.mirrors.is_empty() {
                    ""
                } else {
                    " and none of its mirrors applies"
                }
            ),
            Some(_) => {}
            None => v.push(Endpoint {
                image: primary,
                insecure: entry.insecure,
                mirror: false,
            }),
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn rewriting() {
        let conf = RegistriesConf::parse(
            Path::new("r.conf"),
            r#"
unqualified-search-registries = ["quay.io"]
[[registry]]
prefix = "quay.io/ocp"
location = "quay.io/ocp"
mirror-by-digest-only = true
[[registry.mirror]]
location = "mirror.local:5000/m/ocp"
insecure = true
[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "all.local/q"
pull-from-mirror = "all"
"#,
        )
        .unwrap();
        let r = ImageRef::parse(&format!("quay.io/ocp/release@{D}")).unwrap();
        let e = conf.endpoints(&r).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].image.to_string(),
            format!("mirror.local:5000/m/ocp/release@{D}")
        );
        assert!(e[0].insecure && e[0].mirror);
        assert_eq!(e[1].image, r);
        let t = ImageRef::parse("quay.io/ocp/release:4.16").unwrap();
        assert_eq!(
            conf.endpoints(&t).unwrap().len(),
            1,
            "digest-only mirror skipped"
        );
        let o = ImageRef::parse("quay.io/other/x:1").unwrap();
        let e = conf.endpoints(&o).unwrap();
        assert_eq!(e[0].image.to_string(), "all.local/q/other/x:1");
        let n = ImageRef::parse("quay.io/ocpx/y:1").unwrap();
        assert_eq!(conf.endpoints(&n).unwrap()[0].image.registry, "all.local");
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = RegistriesConf::parse(Path::new("r.conf"), "[[registry]]\nprefix = \n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("r.conf:2:"), "{e}");
        let e = RegistriesConf::parse(
            Path::new("r.conf"),
            "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"some\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("registry[0].mirror[0].pull-from-mirror"), "{e}");
    }

    #[test]
    fn drop_ins_in_order_and_blocked_registries() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("registries.conf");
        let d = dir.path().join("registries.conf.d");
        std::fs::create_dir_all(d.join("sub.conf")).unwrap();
        std::fs::write(
            &main,
            "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"m1.local\"\n\
             [[registry]]\nlocation = \"blocked.io\"\nblocked = true\n\
             [[registry]]\nlocation = \"old.io\"\n",
        )
        .unwrap();
        std::fs::write(
            d.join("20-b.conf"),
            "[[registry]]\nlocation = \"new.io\"\nblocked = true\n",
        )
        .unwrap();
        std::fs::write(
            d.join("10-a.conf"),
            "[[registry]]\nlocation = \"quay.io\"\n[[registry.mirror]]\nlocation = \"m2.local\"\n\
             [[registry]]\nlocation = \"new.io\"\n[[registry.mirror]]\nlocation = \"blocked.io/n\"\n\
             [[registry]]\nprefix = \"mirrored-blocked.io\"\nlocation = \"mirrored-blocked.io\"\nblocked = true\n\
             [[registry.mirror]]\nlocation = \"ok.local/x\"\npull-from-mirror = \"digest-only\"\n",
        )
        .unwrap();
        std::fs::write(d.join("README"), "not toml [[[").unwrap();
        let conf = RegistriesConf::load(Some(&main)).unwrap();
        assert_eq!(
            conf.files,
            vec![main.clone(), d.join("10-a.conf"), d.join("20-b.conf")]
        );
        let ends = |r: &str| {
            conf.endpoints(&ImageRef::parse(r).unwrap())
                .map(|v| v.iter().map(|e| e.image.to_string()).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        // 10-a.conf's quay.io replaces the main file's: m2 only.
        assert_eq!(
            ends("quay.io/a/b:1").unwrap(),
            vec!["m2.local/a/b:1", "quay.io/a/b:1"]
        );
        assert_eq!(ends("old.io/a:1").unwrap(), vec!["old.io/a:1"]);
        let e = ends("blocked.io/a:1").unwrap_err();
        assert_eq!(
            e,
            format!(
                "blocked.io/a:1: registry `blocked.io` is blocked in {}",
                main.display()
            )
        );
        // 20-b.conf replaces 10-a.conf's new.io (and its mirror, itself blocked anyway).
        let e = ends("new.io/a:1").unwrap_err();
        assert!(
            e.contains(&format!("is blocked in {}", d.join("20-b.conf").display())),
            "{e}"
        );
        // A blocked registry's mirror serves what it applies to; the rest is refused.
        assert_eq!(
            ends(&format!("mirrored-blocked.io/p@{D}")).unwrap(),
            vec![format!("ok.local/x/p@{D}")]
        );
        let e = ends("mirrored-blocked.io/p:1").unwrap_err();
        assert!(e.ends_with("and none of its mirrors applies"), "{e}");
    }

    #[test]
    fn refused_combinations() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("r.conf");
        let d = dir.path().join("r.conf.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(&main, "").unwrap();
        std::fs::write(
            d.join("v1.conf"),
            "[registries.search]\nregistries = [\"quay.io\"]\n",
        )
        .unwrap();
        let e = RegistriesConf::load(Some(&main)).unwrap_err().to_string();
        assert!(
            e.contains("v1.conf: registries: the v1 format") && e.contains("drop-ins"),
            "{e}"
        );
        std::fs::remove_file(d.join("v1.conf")).unwrap();
        // The main file may be v1: block and insecure lists.
        std::fs::write(&main, "[registries.block]\nregistries = [\"bad.io\"]\n[registries.insecure]\nregistries = [\"lab.local:5000\"]\n").unwrap();
        let c = RegistriesConf::load(Some(&main)).unwrap();
        let e = c
            .endpoints(&ImageRef::parse("bad.io/x:1").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("registry `bad.io` is blocked"), "{e}");
        assert!(
            c.endpoints(&ImageRef::parse("lab.local:5000/x:1").unwrap())
                .unwrap()[0]
                .insecure
        );
        for (text, want) in [
            (
                "[[registry]]\nlocation = \"q.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"tag-only\"\n",
                "registry[0].mirror[0].pull-from-mirror: not allowed with the registry's mirror-by-digest-only",
            ),
            (
                "[[registry]]\nlocation = \"q.io\"\npull-from-mirror = \"all\"\n",
                "registry[0].pull-from-mirror: only mirrors have pull-from-mirror",
            ),
            (
                "[[registry]]\nprefix = \"q.io/a\"\nlocation = \"q.io\"\n[[registry]]\nprefix = \"q.io/b\"\nlocation = \"q.io\"\nblocked = true\n",
                "registry[1].blocked: `q.io` is also a registry with blocked = false",
            ),
        ] {
            std::fs::write(&main, text).unwrap();
            let e = RegistriesConf::load(Some(&main)).unwrap_err().to_string();
            assert_eq!(e, format!("{}: {want}", main.display()));
        }
    }
}
