//! The release payload: the release image's `release-manifests/image-references` (an
//! ImageStream whose `spec.tags[].name` is a component and `spec.tags[].from.name` its image)
//! read from the image's layers, as `oc adm release info --pullspecs` lists it; and the release
//! image name of an `X.Y.Z` version and architecture.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::layers::{self, Files, Layer, Limits, Select};
use crate::fetch::reference::ImageRef;

/// Where the release image keeps its component list.
pub const IMAGE_REFERENCES: &str = "release-manifests/image-references";
/// Where the release image keeps its version metadata.
pub const RELEASE_METADATA: &str = "release-manifests/release-metadata";
/// The repository OpenShift release images are published in.
pub const DEFAULT_RELEASE_BASE: &str = "quay.io/openshift-release-dev/ocp-release";
/// The repository OKD (SCOS) release images are published in, for messages: oc-mirror has no
/// OKD repository of its own, it takes OKD releases from OKD's update graph, pinned by digest.
pub const OKD_SCOS_RELEASE: &str = "quay.io/okd/scos-release";
/// The release-metadata key a multi-architecture payload carries (`multi`).
pub const ARCH_KEY: &str = "release.openshift.io/architecture";

/// One release component.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Component {
    /// Component name (`spec.tags[].name`), e.g. `etcd`.
    pub name: String,
    /// Its image, pinned by digest.
    pub reference: String,
}

/// A release payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Release {
    /// The release image reference.
    pub image: String,
    /// `X.Y.Z` from the release metadata (or the ImageStream name), when there is one.
    pub version: Option<String>,
    /// The architecture its release-metadata names (`multi` for a multi-architecture payload).
    pub metadata_arch: Option<String>,
    /// Components, sorted by name.
    pub components: Vec<Component>,
}

#[derive(Deserialize)]
struct ImageStream {
    kind: Option<String>,
    metadata: Option<Metadata>,
    spec: Option<Spec>,
}

#[derive(Deserialize)]
struct Metadata {
    name: Option<String>,
}

#[derive(Deserialize)]
struct Spec {
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
struct Tag {
    name: Option<String>,
    from: Option<From>,
}

#[derive(Deserialize)]
struct From {
    kind: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct ReleaseMetadata {
    version: Option<String>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The files [`read`] needs from the release image.
pub fn select() -> Select {
    Select {
        files: vec![IMAGE_REFERENCES.to_string(), RELEASE_METADATA.to_string()],
        dirs: Vec::new(),
    }
}

/// Reads the release payload of `image` from its layers.
pub fn read(image: &str, layers: &[Layer]) -> Result<Release> {
    let files = layers::read_files(layers, &select(), &Limits::default())
        .with_context(|| format!("release image {image}"))?;
    from_files(image, &files)
}

/// Builds the release from the files read out of the release image.
pub fn from_files(image: &str, files: &Files) -> Result<Release> {
    let Some(refs) = files.files.get(IMAGE_REFERENCES) else {
        bail!("release image {image}: no {IMAGE_REFERENCES} in its layers (not a release image?)");
    };
    let (stream_name, components) = parse_image_references(refs)
        .with_context(|| format!("release image {image}: {IMAGE_REFERENCES}"))?;
    let mut version = None;
    let mut metadata_arch = None;
    if let Some(meta) = files.files.get(RELEASE_METADATA) {
        let m: ReleaseMetadata = serde_json::from_slice(meta)
            .with_context(|| format!("release image {image}: {RELEASE_METADATA}: not JSON"))?;
        version = m.version;
        metadata_arch = m
            .metadata
            .get(ARCH_KEY)
            .and_then(|v| v.as_str())
            .map(str::to_string);
    }
    if version.is_none() {
        version = stream_name.filter(|n| semver::Version::parse(n).is_ok());
    }
    Ok(Release {
        image: image.to_string(),
        version,
        metadata_arch,
        components,
    })
}

impl Release {
    /// Whether it is an OKD release (by its version, e.g. `4.18.0-okd-scos.8`).
    pub fn okd(&self) -> bool {
        self.version.as_deref().is_some_and(is_okd_version)
    }
}

/// Whether a version is OKD's (`okd` in its pre-release part: `4.18.0-okd-scos.8`,
/// `4.15.0-0.okd-2024-03-10-010116`).
pub fn is_okd_version(v: &str) -> bool {
    semver::Version::parse(v).is_ok_and(|v| v.pre.as_str().contains("okd"))
}

/// Refuses a release whose own architecture (its image config's, or `multi` from its
/// release-metadata) is not the one asked for: nodes of `want` could not run its images. A
/// multi-architecture payload serves any architecture (its components are lists); `want`
/// `multi` needs one.
pub fn check_arch(rel: &Release, config_arch: Option<&str>, want: &str) -> Result<()> {
    let multi = rel.metadata_arch.as_deref() == Some("multi");
    let ok = match (want, multi, config_arch) {
        (_, true, _) => true,
        ("multi", false, _) => false,
        (_, false, None) => true,
        (w, false, Some(c)) => c == w,
    };
    if ok {
        return Ok(());
    }
    let own = config_arch.unwrap_or("a single architecture");
    let said = match &rel.metadata_arch {
        Some(m) => format!(
            "its image config says architecture {}, its {RELEASE_METADATA} {ARCH_KEY} {m}",
            config_arch.unwrap_or("nothing")
        ),
        None => format!(
            "its image config says architecture {}, its {RELEASE_METADATA} names no \
             {ARCH_KEY}",
            config_arch.unwrap_or("nothing")
        ),
    };
    let hint = match (release_arch(want), &rel.version) {
        (Ok(a), Some(v)) if !rel.okd() => format!(
            "; stage the {want} release (e.g. {DEFAULT_RELEASE_BASE}:{v}-{a}) or ask for {own}"
        ),
        _ => format!("; stage a {want} release or ask for {own}"),
    };
    bail!(
        "release image {} is built for {own} ({said}), but {want} was asked for (--arch, else \
         the ImageSetConfiguration's mirror.platform.architectures, else amd64): {want} nodes \
         cannot run its images{hint}",
        rel.image
    )
}

/// Parses an `image-references` ImageStream: its name and its components, sorted by name.
pub fn parse_image_references(bytes: &[u8]) -> Result<(Option<String>, Vec<Component>)> {
    let is: ImageStream = serde_json::from_slice(bytes).context("not an ImageStream JSON")?;
    if is.kind.as_deref() != Some("ImageStream") {
        bail!(
            "kind: expected ImageStream, found {}",
            is.kind.as_deref().unwrap_or("nothing")
        );
    }
    let Some(spec) = is.spec else {
        bail!("spec: missing");
    };
    if spec.tags.is_empty() {
        bail!("spec.tags: no components");
    }
    let mut seen = BTreeSet::new();
    let mut components = Vec::new();
    for (i, t) in spec.tags.into_iter().enumerate() {
        let Some(name) = t.name.filter(|n| !n.is_empty()) else {
            bail!("spec.tags[{i}].name: missing");
        };
        let Some(from) = t.from else {
            bail!("spec.tags[{i}] ({name}).from: missing");
        };
        if let Some(k) = from.kind.as_deref() {
            if k != "DockerImage" {
                bail!("spec.tags[{i}] ({name}).from.kind: expected DockerImage, found {k}");
            }
        }
        let Some(reference) = from.name else {
            bail!("spec.tags[{i}] ({name}).from.name: missing");
        };
        let r = ImageRef::parse(&reference)
            .with_context(|| format!("spec.tags[{i}] ({name}).from.name"))?;
        if r.digest.is_none() {
            bail!("spec.tags[{i}] ({name}).from.name: `{reference}` is not pinned by digest");
        }
        if !seen.insert(name.clone()) {
            bail!("spec.tags[{i}].name: component `{name}` listed twice");
        }
        components.push(Component { name, reference });
    }
    components.sort();
    Ok((is.metadata.and_then(|m| m.name), components))
}

/// The release payload's name for an architecture (`amd64` → `x86_64`, ...).
pub fn release_arch(arch: &str) -> Result<&'static str> {
    Ok(match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "ppc64le" => "ppc64le",
        "s390x" => "s390x",
        "multi" => "multi",
        a => bail!("architecture `{a}`: expected one of amd64, arm64, ppc64le, s390x, multi"),
    })
}

/// The release image of version `X.Y.Z[-pre]` for `arch`, under `base` (default
/// [`DEFAULT_RELEASE_BASE`]): `BASE:X.Y.Z-ARCH`.
pub fn release_ref_for_version(version: &str, arch: &str, base: Option<&str>) -> Result<String> {
    let v = semver::Version::parse(version)
        .with_context(|| format!("release version `{version}`: expected X.Y.Z"))?;
    if !v.build.is_empty() {
        bail!("release version `{version}`: build metadata (+...) is not part of release names");
    }
    let b = base_repository(base.unwrap_or(DEFAULT_RELEASE_BASE))?;
    let r = format!("{b}:{v}-{}", release_arch(arch)?);
    ImageRef::parse(&r).with_context(|| format!("release image `{r}`"))?;
    Ok(r)
}

/// The repository a release base names (normalized), refusing a tag or digest.
pub fn base_repository(base: &str) -> Result<String> {
    let b = ImageRef::parse(base).with_context(|| format!("release base `{base}`"))?;
    if base.contains('@') || base.rsplit('/').next().is_some_and(|l| l.contains(':')) {
        bail!("release base `{base}`: give a repository without tag or digest");
    }
    Ok(b.name())
}

/// The name of the release image with manifest `digest` in repository `base`: `BASE@DIGEST`
/// (for a release read from a local OCI layout, which has no registry name).
pub fn image_in(base: &str, digest: &str) -> Result<String> {
    let r = format!("{}@{digest}", base_repository(base)?);
    ImageRef::parse(&r).with_context(|| format!("release image `{r}`"))?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::super::layers::tests::{gz_of, GZ, T};
    use super::*;

    pub fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn stream(tags: &[(&str, String)]) -> Vec<u8> {
        let tags: Vec<_> = tags
            .iter()
            .map(|(n, r)| {
                serde_json::json!({"name": n, "annotations": {}, "from": {"kind": "DockerImage", "name": r}, "generation": null, "importPolicy": {}, "referencePolicy": {"type": ""}})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "kind": "ImageStream", "apiVersion": "image.openshift.io/v1",
            "metadata": {"name": "4.14.3", "creationTimestamp": null},
            "spec": {"lookupPolicy": {"local": false}, "tags": tags}
        }))
        .unwrap()
    }

    #[test]
    fn reads_components_from_layers() {
        let art = "quay.io/openshift-release-dev/ocp-v4.0-art-dev";
        let refs = stream(&[
            ("pod", format!("{art}@{}", digest(2))),
            ("etcd", format!("{art}@{}", digest(1))),
        ]);
        let base = gz_of(&[T::F("usr/bin/cluster-version-operator", b"elf")]);
        let top = gz_of(&[
            T::D("release-manifests/"),
            T::F("release-manifests/image-references", &refs),
            T::F(
                "release-manifests/release-metadata",
                br#"{"kind":"cincinnati-metadata-v0","version":"4.14.3"}"#,
            ),
        ]);
        let files =
            layers::read_files_from(&[(GZ, &base), (GZ, &top)], &select(), &Limits::default())
                .unwrap();
        let r = from_files("quay.io/x/release@sha256:00", &files).unwrap();
        assert_eq!(r.version.as_deref(), Some("4.14.3"));
        assert_eq!(r.metadata_arch, None);
        assert!(!r.okd());
        assert_eq!(
            r.components,
            vec![
                Component {
                    name: "etcd".into(),
                    reference: format!("{art}@{}", digest(1))
                },
                Component {
                    name: "pod".into(),
                    reference: format!("{art}@{}", digest(2))
                },
            ]
        );
    }

    #[test]
    fn missing_or_bad_image_references() {
        let l = gz_of(&[T::F("etc/os-release", b"x")]);
        let files = layers::read_files_from(&[(GZ, &l)], &select(), &Limits::default()).unwrap();
        let e = format!("{:#}", from_files("quay.io/a/b:1", &files).unwrap_err());
        assert!(
            e.contains("quay.io/a/b:1: no release-manifests/image-references"),
            "{e}"
        );
        let e = format!("{:#}", parse_image_references(b"{").unwrap_err());
        assert!(e.contains("not an ImageStream JSON"), "{e}");
        let e = parse_image_references(&stream(&[("etcd", "quay.io/a/b:latest".into())]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.tags[0] (etcd).from.name: `quay.io/a/b:latest` is not pinned"),
            "{e}"
        );
        let r = format!("quay.io/a/b@{}", digest(1));
        let e = parse_image_references(&stream(&[("etcd", r.clone()), ("etcd", r)]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn architecture_check() {
        let rel = |meta: Option<&str>, v: &str| Release {
            image: "quay.io/x/release@sha256:00".into(),
            version: Some(v.into()),
            metadata_arch: meta.map(Into::into),
            components: Vec::new(),
        };
        let single = rel(None, "4.14.3");
        check_arch(&single, Some("amd64"), "amd64").unwrap();
        let e = check_arch(&single, Some("amd64"), "arm64")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is built for amd64 (its image config says architecture amd64")
                && e.contains("but arm64 was asked for")
                && e.contains("ocp-release:4.14.3-aarch64"),
            "{e}"
        );
        assert!(check_arch(&single, Some("amd64"), "multi").is_err());
        let multi = rel(Some("multi"), "4.14.3");
        check_arch(&multi, Some("amd64"), "multi").unwrap();
        check_arch(&multi, Some("amd64"), "arm64").unwrap();
        assert!(is_okd_version("4.18.0-okd-scos.8"));
        assert!(is_okd_version("4.15.0-0.okd-2024-03-10-010116"));
        assert!(!is_okd_version("4.14.3"));
        assert!(rel(None, "4.18.0-okd-scos.8").okd());
    }

    #[test]
    fn release_names() {
        assert_eq!(
            release_ref_for_version("4.14.3", "amd64", None).unwrap(),
            "quay.io/openshift-release-dev/ocp-release:4.14.3-x86_64"
        );
        assert_eq!(
            release_ref_for_version(
                "4.15.0-rc.1",
                "arm64",
                Some("mirror.local:5000/ocp/release")
            )
            .unwrap(),
            "mirror.local:5000/ocp/release:4.15.0-rc.1-aarch64"
        );
        for (a, b) in [
            ("ppc64le", "ppc64le"),
            ("s390x", "s390x"),
            ("multi", "multi"),
        ] {
            assert!(release_ref_for_version("4.14.3", a, None)
                .unwrap()
                .ends_with(b));
        }
        assert!(release_ref_for_version("4.14", "amd64", None).is_err());
        assert!(release_ref_for_version("4.14.3", "mips", None).is_err());
        assert!(release_ref_for_version("4.14.3", "amd64", Some("quay.io/a:b")).is_err());
    }
}
