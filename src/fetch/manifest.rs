//! Manifest kinds: OCI image manifest and index, Docker v2 schema 2 manifest and manifest list.
//! Parses what a source served (keeping the original bytes elsewhere: the digest is of those
//! bytes) into the blobs an image needs and, for lists, the platform instances.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::digest::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2 manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` header for manifest requests: every kind prestage understands.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor: what a manifest says about a blob or another manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform (`os/arch[/variant]`), for list entries.
    pub platform: Option<Platform>,
}

/// A list entry's platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `v8`.
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A parsed manifest.
#[derive(Clone, Debug)]
pub enum Manifest {
    /// An image: its config and layers, in order.
    Image {
        /// The config blob.
        config: Descriptor,
        /// The layer blobs.
        layers: Vec<Descriptor>,
    },
    /// A list (OCI index or Docker manifest list) of platform instances.
    List {
        /// The entries.
        manifests: Vec<Descriptor>,
    },
}

impl Manifest {
    /// The blobs an image manifest needs (config first), none for a list.
    pub fn blobs(&self) -> Vec<Descriptor> {
        match self {
            Manifest::Image { config, layers } => {
                std::iter::once(config).chain(layers).cloned().collect()
            }
            Manifest::List { .. } => Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: String,
    size: i64,
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
}

fn descriptor(r: RawDescriptor, default_type: &str, what: &str) -> Result<Descriptor> {
    if r.size < 0 {
        bail!("{what}: negative size");
    }
    Ok(Descriptor {
        media_type: r.media_type.unwrap_or_else(|| default_type.to_string()),
        digest: Digest::parse(&r.digest).with_context(|| what.to_string())?,
        size: r.size as u64,
        platform: r.platform.map(|p| Platform {
            os: p.os.unwrap_or_default(),
            architecture: p.architecture.unwrap_or_default(),
            variant: p.variant.filter(|v| !v.is_empty()),
        }),
    })
}

/// Parses manifest bytes; `content_type` is what the source said (HTTP Content-Type, OCI
/// descriptor media type). Returns the effective media type and the parsed manifest.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<(String, Manifest)> {
    let raw: RawManifest =
        serde_json::from_slice(bytes).context("manifest is not valid JSON of a known kind")?;
    if raw.schema_version == Some(1) {
        bail!("Docker schema 1 manifests are not supported (deprecated format)");
    }
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
        .filter(|c| [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].contains(&c.as_str()));
    let media_type = match (raw.media_type.clone(), header) {
        (Some(m), _) => m,
        (None, Some(h)) => h,
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) if raw.layers.is_some() => OCI_MANIFEST.to_string(),
        (None, None) => bail!("manifest has neither `layers` nor `manifests`"),
    };
    let m = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            let Some(entries) = raw.manifests else {
                bail!("{media_type} without `manifests`");
            };
            let manifests = entries
                .into_iter()
                .enumerate()
                .map(|(i, d)| descriptor(d, OCI_MANIFEST, &format!("manifests[{i}]")))
                .collect::<Result<_>>()?;
            Manifest::List { manifests }
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let Some(config) = raw.config else {
                bail!("{media_type} without `config`");
            };
            let config = descriptor(config, "application/octet-stream", "config")?;
            let layers = raw
                .layers
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(i, d)| descriptor(d, "application/octet-stream", &format!("layers[{i}]")))
                .collect::<Result<_>>()?;
            Manifest::Image { config, layers }
        }
        other => bail!("unsupported manifest media type `{other}`"),
    };
    Ok((media_type, m))
}

/// Whether a media type is an image manifest (as opposed to a list).
pub fn is_image_type(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Selects the instances of a list to keep: the `linux/ARCH[/VARIANT]` entry, or every image
/// entry with `all`. Fails when no entry matches, naming what the list has.
pub fn select(manifests: &[Descriptor], arch: &str, all: bool) -> Result<Vec<Descriptor>> {
    if all {
        let v: Vec<_> = manifests
            .iter()
            .filter(|d| is_image_type(&d.media_type))
            .cloned()
            .collect();
        if v.is_empty() {
            bail!("the list has no image manifests");
        }
        return Ok(v);
    }
    let (want_arch, want_variant) = match arch.split_once('/') {
        Some((a, v)) => (a, Some(v)),
        None => (arch, None),
    };
    let found = manifests.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == "linux"
                && p.architecture == want_arch
                && want_variant.is_none_or(|v| p.variant.as_deref() == Some(v))
        }) && is_image_type(&d.media_type)
    });
    match found {
        Some(d) => Ok(vec![d.clone()]),
        None => {
            let have: Vec<String> = manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect();
            bail!(
                "no linux/{arch} instance in the list (it has: {})",
                if have.is_empty() {
                    "no platforms".to_string()
                } else {
                    have.join(", ")
                }
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn kinds() {
        let img = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{D}","size":2}},"layers":[{{"digest":"{D}","size":0}}]}}"#
        );
        let (t, m) = parse(img.as_bytes(), None).unwrap();
        assert_eq!(t, OCI_MANIFEST);
        assert_eq!(m.blobs().len(), 2);
        let (t, _) = parse(img.as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(t, DOCKER_MANIFEST);
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D}","size":2,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let (t, m) = parse(list.as_bytes(), None).unwrap();
        assert_eq!(t, DOCKER_LIST);
        let Manifest::List { manifests } = m else {
            panic!("not a list")
        };
        assert_eq!(select(&manifests, "amd64", false).unwrap()[0].size, 2);
        assert_eq!(select(&manifests, "arm64/v8", false).unwrap()[0].size, 1);
        assert_eq!(select(&manifests, "arm64", true).unwrap().len(), 2);
        let e = select(&manifests, "s390x", false).unwrap_err().to_string();
        assert!(e.contains("linux/arm64/v8"), "{e}");
        assert!(parse(br#"{"schemaVersion":1}"#, None).is_err());
    }
}
