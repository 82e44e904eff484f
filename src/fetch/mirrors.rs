//! Mirrors from a registries.conf (containers v2 TOML): `[[registry]]` entries with `prefix`,
//! `location`, `insecure`, `blocked`, `mirror-by-digest-only` and `[[registry.mirror]]` entries
//! with `location`, `insecure` and `pull-from-mirror` (`all`, `digest-only`, `tag-only`).
//!
//! A reference matching a prefix (the longest wins; `*.domain` matches hosts) is rewritten onto
//! each applicable mirror, then onto the entry's location: the sources are tried in that order,
//! a failing mirror falling back to the next. Digest-only mirrors (as an ImageDigestMirrorSet
//! produces) serve only digest-pinned references, and content from them is verified against the
//! pinned digest like any other.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Deserialize;

use super::reference::ImageRef;

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawConf {
    #[serde(default)]
    registry: Vec<RawRegistry>,
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
}

/// Parsed registries.conf.
#[derive(Clone, Debug, Default)]
pub struct RegistriesConf {
    /// Where it came from.
    pub path: Option<PathBuf>,
    /// The entries.
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
    /// The registries.conf to use: `explicit`, else `CONTAINERS_REGISTRIES_CONF`, else
    /// `~/.config/containers/registries.conf`, else `/etc/containers/registries.conf`, else none.
    pub fn load(explicit: Option<&Path>) -> Result<RegistriesConf> {
        let path = match explicit {
            Some(p) => {
                if !p.is_file() {
                    bail!("--registries-conf {}: no such file", p.display());
                }
                Some(p.to_path_buf())
            }
            None => {
                let mut c = Vec::new();
                if let Some(p) = std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
                    c.push(PathBuf::from(p));
                }
                if let Some(h) = std::env::var_os("HOME") {
                    c.push(PathBuf::from(h).join(".config/containers/registries.conf"));
                }
                c.push(PathBuf::from("/etc/containers/registries.conf"));
                c.into_iter().find(|p| p.is_file())
            }
        };
        match path {
            Some(p) => {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                RegistriesConf::parse(&p, &text)
            }
            None => Ok(RegistriesConf::default()),
        }
    }

    /// Parses registries.conf text; errors name the file, line or field, and the problem.
    pub fn parse(path: &Path, text: &str) -> Result<RegistriesConf> {
        let raw: RawConf = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            anyhow::anyhow!(
                "{}:{line}: {}",
                path.display(),
                e.message().lines().next().unwrap_or("invalid TOML")
            )
        })?;
        let mut registries = Vec::new();
        for (i, r) in raw.registry.into_iter().enumerate() {
            let field = |f: &str| format!("registry[{i}].{f}");
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
                let pull_from = if r.mirror_by_digest_only && pull_from == PullFrom::All {
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
            registries.push(RegistryEntry {
                prefix,
                location,
                insecure: r.insecure,
                blocked: r.blocked,
                mirrors,
            });
        }
        Ok(RegistriesConf {
            path: Some(path.to_path_buf()),
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
            if applies {
                v.push(Endpoint {
                    image: rewrite(&m.location)?,
                    insecure: m.insecure,
                    mirror: true,
                });
            }
        }
        if entry.blocked {
            if v.is_empty() {
                bail!(
                    "{image}: registry `{}` is blocked in {}",
                    entry.prefix,
                    self.path
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                );
            }
        } else {
            let location = if entry.prefix.starts_with("*.") {
                image.registry.clone()
            } else {
                entry.location.clone()
            };
            v.push(Endpoint {
                image: rewrite(&location)?,
                insecure: entry.insecure,
                mirror: false,
            });
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
}
