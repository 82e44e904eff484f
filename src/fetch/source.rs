//! The interface every image source implements (registries, OCI layouts, `dir:` directories):
//! fetch a manifest, make one attempt at streaming a blob into the store's partial file, and,
//! for sources on this machine, say where a blob's bytes already lie so that a build can read
//! them in place instead of copying them into the store first ([`Source::locate`]).
//! Retrying, de-duplication and verification are the caller's ([`super::pull`]).

use std::path::PathBuf;

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

/// Where a blob's bytes lie on this machine: `size` bytes of `path` from `offset` on. Nothing
/// about them is trusted: whoever reads them checks the digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The file holding the bytes.
    pub path: PathBuf,
    /// Offset of the first byte.
    pub offset: u64,
    /// What the bytes are, for messages (the file, or the archive and its member).
    pub what: String,
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

    /// Where the blob's bytes already lie on this machine, for reading in place; `None` for
    /// remote sources and for blobs this source does not hold. A source that answers must
    /// hold `desc.size` bytes there (the reader still checks their digest).
    fn locate(&self, desc: &Descriptor) -> Option<Located> {
        let _ = desc;
        None
    }
}
