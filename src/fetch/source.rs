//! The interface every image source implements (registries, OCI layouts, `dir:` directories):
//! fetch a manifest, and make one attempt at streaming a blob into the store's partial file.
//! Retrying, de-duplication and verification are the caller's ([`super::pull`]).

use super::digest::Digest;
use super::manifest::Descriptor;
use super::progress::Progress;
use super::retry::Failure;
use super::store::PartialBlob;

/// Manifest bytes as served.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The bytes (the digest is of these).
    pub bytes: Vec<u8>,
    /// The media type the source declared (HTTP Content-Type, OCI descriptor).
    pub content_type: Option<String>,
    /// The digest the source declared (`Docker-Content-Digest`, index entry), if any.
    pub declared_digest: Option<Digest>,
}

/// An image source.
pub trait Source: Send + Sync {
    /// Where the image comes from, for messages (`registry/repository`, `oci:DIR`).
    fn describe(&self) -> String;

    /// The top-level manifest (`None`: what the reference names) or the manifest with a digest
    /// (a list instance).
    fn manifest(&self, digest: Option<&Digest>) -> Result<FetchedManifest, Failure>;

    /// One attempt at appending the blob's bytes from `slot.offset()` on (restarting from 0 if
    /// the source cannot resume). Returns when the source has sent everything it will send; the
    /// caller checks size and digest.
    fn blob(
        &self,
        desc: &Descriptor,
        slot: &mut PartialBlob,
        progress: &Progress,
    ) -> Result<(), Failure>;
}
