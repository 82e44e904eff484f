//! One image of an oc-mirror archive set as a [`Source`]: its manifests read from the set by
//! digest (a tagged reference resolved through the set's tag links first), its blobs copied
//! into the store's slot from their byte range, or located in place for a build that reads them
//! there ([`Source::locate`]). Every problem is permanent and names the archive file and member:
//! a damaged or truncated archive does not heal by retrying.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::ArchiveSet;
use crate::fetch::digest::Digest;
use crate::fetch::manifest::Descriptor;
use crate::fetch::progress::Progress;
use crate::fetch::reference::ImageRef;
use crate::fetch::retry::Failure;
use crate::fetch::source::{FetchedManifest, Located, Source};
use crate::fetch::store::PartialBlob;

/// An image (named by its source reference) whose bytes come from an archive set.
pub struct ArchiveSource {
    set: Arc<ArchiveSet>,
    image: ImageRef,
}

impl ArchiveSource {
    /// The image `image` of `set`.
    pub fn new(set: Arc<ArchiveSet>, image: ImageRef) -> ArchiveSource {
        ArchiveSource { set, image }
    }

    fn top_digest(&self) -> Result<Digest, Failure> {
        if let Some(d) = &self.image.digest {
            return Ok(d.clone());
        }
        self.set
            .resolve_tag(&self.image)
            .map(|(d, _)| d)
            .map_err(Failure::Permanent)
    }
}

impl Source for ArchiveSource {
    fn describe(&self) -> String {
        format!("oc-mirror archive {}", self.set.describe())
    }

    fn manifest(&self, digest: Option<&Digest>) -> Result<FetchedManifest, Failure> {
        let (d, via) = match digest {
            Some(d) => (d.clone(), None),
            None if self.image.digest.is_some() => (self.top_digest()?, None),
            None => {
                let (d, link) = self
                    .set
                    .resolve_tag(&self.image)
                    .map_err(Failure::Permanent)?;
                (d, Some(link))
            }
        };
        let (bytes, _) = self.set.manifest(&d).map_err(|e| {
            Failure::Permanent(match &via {
                Some(link) => format!("{link} links to {e}"),
                None => e,
            })
        })?;
        Ok(FetchedManifest {
            bytes,
            content_type: None,
            declared_digest: Some(d),
        })
    }

    fn blob(
        &self,
        desc: &Descriptor,
        slot: &mut PartialBlob,
        progress: &Progress,
    ) -> Result<(), Failure> {
        let d = &desc.digest;
        let Some(at) = self.set.blob(d) else {
            return Err(Failure::Permanent(format!(
                "in none of the oc-mirror archives given ({}){}",
                self.set.describe(),
                self.set.missing_hint(std::slice::from_ref(d))
            )));
        };
        if let Some(why) = self.set.damaged(&at.entry) {
            return Err(Failure::Permanent(why));
        }
        if at.entry.size() != desc.size {
            return Err(Failure::Permanent(format!(
                "{}: {} bytes, but the manifest says {} (the archive is damaged: copy it again)",
                at.what,
                at.entry.size(),
                desc.size
            )));
        }
        let (path, offset) = self.set.file_of(&at.entry);
        let fail = |e: String| Failure::Permanent(format!("{}: {e}", at.what));
        slot.reset().map_err(|e| fail(format!("{e:#}")))?;
        let f = File::open(&path).map_err(|e| fail(e.to_string()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < desc.size {
            let n = (desc.size - done).min(buf.len() as u64) as usize;
            f.read_exact_at(&mut buf[..n], offset + done)
                .map_err(|e| fail(e.to_string()))?;
            slot.write(&buf[..n]).map_err(|e| fail(format!("{e:#}")))?;
            progress.bytes(n as u64);
            done += n as u64;
        }
        let got = slot.hashed();
        if &got != d {
            return Err(Failure::Permanent(format!(
                "{}: its bytes hash to {got}, not to the digest it is named by (the archive is \
                 damaged: copy it again)",
                at.what
            )));
        }
        Ok(())
    }

    fn locate(&self, desc: &Descriptor) -> Option<Located> {
        let at = self.set.blob(&desc.digest)?;
        if self.set.damaged(&at.entry).is_some() || at.entry.size() != desc.size {
            return None;
        }
        let (path, offset) = self.set.file_of(&at.entry);
        Some(Located {
            path,
            offset,
            what: at.what,
        })
    }
}
