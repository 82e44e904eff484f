//! Image references: the container reference grammar (`host[:port]/path[:tag][@digest]`, with
//! docker.io normalization) and the source forms `prestage pull` accepts: registry references
//! (optionally prefixed `docker://`), local OCI layouts (`oci:DIR[:REF]`) and containers `dir:`
//! directories.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::digest::Digest;

/// The registry that unqualified names refer to.
pub const DOCKER_HUB: &str = "docker.io";

/// A registry image reference, normalized: `registry/repository[:tag][@digest]`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ImageRef {
    /// `host[:port]`, `docker.io` for Docker Hub.
    pub registry: String,
    /// Path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if given (or `latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// Digest, if pinned.
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses a reference in the container reference grammar.
    pub fn parse(s: &str) -> Result<ImageRef> {
        if s.is_empty() {
            bail!("empty image reference");
        }
        if s.len() > 4096 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("`{s}`: whitespace or control characters in an image reference");
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).with_context(|| format!("`{s}`: bad digest"))?),
            ),
            None => (s, None),
        };
        let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            check_tag(t).with_context(|| format!("`{s}`: bad tag"))?;
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        check_host(&registry).with_context(|| format!("`{s}`: bad registry host"))?;
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        check_path(&repository).with_context(|| format!("`{s}`: bad repository name"))?;
        if registry.len() + 1 + repository.len() > 255 {
            bail!("`{s}`: repository name longer than 255 characters");
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The same image in another registry/repository (a mirror), keeping tag and digest.
    pub fn with_name(&self, registry: &str, repository: &str) -> ImageRef {
        ImageRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn check_tag(t: &str) -> Result<()> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
        });
    if !ok {
        bail!("`{t}` (a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -)");
    }
    Ok(())
}

fn check_host(h: &str) -> Result<()> {
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let Some((ip6, after)) = rest.split_once(']') else {
            bail!("`{h}`: unclosed [");
        };
        if ip6.is_empty() || !ip6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            bail!("`{h}`: bad IPv6 address");
        }
        (None, after.strip_prefix(':'))
    } else {
        match h.split_once(':') {
            Some((a, p)) => (Some(a), Some(p)),
            None => (Some(h), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            bail!("`{h}`");
        }
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            bail!("`{h}`: bad port");
        }
    }
    Ok(())
}

/// Path components: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, joined by `/`.
fn check_path(p: &str) -> Result<()> {
    for comp in p.split('/') {
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let mut ok = !b.is_empty() && alnum(b[0]) && alnum(b[b.len() - 1]);
        let mut i = 0;
        while ok && i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &comp[start..i];
            ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        }
        if !ok {
            bail!(
                "component `{comp}` of `{p}` (lowercase letters, digits and single separators . _ __ -)"
            );
        }
    }
    Ok(())
}

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceRef {
    /// A registry (`[docker://]host/path[:tag][@digest]`).
    Registry(ImageRef),
    /// A local OCI layout directory, optionally naming the image by its
    /// `org.opencontainers.image.ref.name` annotation or manifest digest.
    OciLayout {
        /// The layout directory.
        dir: PathBuf,
        /// The image in it, if the layout holds several.
        image: Option<String>,
    },
    /// A containers `dir:` directory (`manifest.json` and blobs named by digest).
    Dir {
        /// The directory.
        dir: PathBuf,
    },
}

impl SourceRef {
    /// Parses a source as `prestage pull` accepts it.
    pub fn parse(s: &str) -> Result<SourceRef> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, image) = match rest.split_once(':') {
                Some((d, r)) if !r.is_empty() => (d, Some(r.to_string())),
                Some((d, _)) => (d, None),
                None => (rest, None),
            };
            if dir.is_empty() {
                bail!("`{s}`: oci: needs a directory (oci:DIR[:REF])");
            }
            return Ok(SourceRef::OciLayout {
                dir: PathBuf::from(dir),
                image,
            });
        }
        if let Some(dir) = s.strip_prefix("dir:") {
            if dir.is_empty() {
                bail!("`{s}`: dir: needs a directory (dir:DIR)");
            }
            return Ok(SourceRef::Dir {
                dir: PathBuf::from(dir),
            });
        }
        let r = s.strip_prefix("docker://").unwrap_or(s);
        Ok(SourceRef::Registry(ImageRef::parse(r)?))
    }
}

/// The key a reference is recorded under in the store: registry references normalized
/// (`busybox` is `docker.io/library/busybox:latest`), other sources as given.
pub fn canonical_key(s: &str) -> String {
    match SourceRef::parse(s) {
        Ok(SourceRef::Registry(r)) => r.to_string(),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalization() {
        assert_eq!(p("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(p("index.docker.io/foo/bar:1"), "docker.io/foo/bar:1");
        assert_eq!(p("localhost/a"), "localhost/a:latest");
        assert_eq!(
            p("127.0.0.1:5000/a/b-c__d.e:v1.0"),
            "127.0.0.1:5000/a/b-c__d.e:v1.0"
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = ImageRef::parse(&format!("quay.io/x/y@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        let r = ImageRef::parse(&format!("quay.io:443/x/y:t@{d}")).unwrap();
        assert_eq!(r.registry, "quay.io:443");
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(p("[::1]:5000/x"), "[::1]:5000/x:latest");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "UPPER/case",
            "quay.io/a//b",
            "quay.io/a:",
            "quay.io/a:-x",
            "quay.io/a@sha256:zz",
            "quay.io:port/a",
            "a b",
            "quay.io/a-",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources() {
        assert_eq!(
            SourceRef::parse("oci:/tmp/l:v1").unwrap(),
            SourceRef::OciLayout {
                dir: "/tmp/l".into(),
                image: Some("v1".into())
            }
        );
        assert_eq!(
            SourceRef::parse("dir:/x").unwrap(),
            SourceRef::Dir { dir: "/x".into() }
        );
        assert!(matches!(
            SourceRef::parse("docker://quay.io/a").unwrap(),
            SourceRef::Registry(_)
        ));
    }
}
