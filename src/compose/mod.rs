//! The compose stage: partition content in, verified disk image out.
//!
//! Input: a [`layout::Layout`] (the disk: GPT geometry, partitions, filesystems) and, per
//! partition label, a [`content::Content`] (entries whose bytes come from a
//! [`content::Source`]: a file, a byte range of a file, bytes, or a generator of known length).
//! Output: a raw or qcow2 image at the output path, verified before it is renamed into place
//! (a [`Summary`]).
//!
//! - [`layout`]: layout files, resolved to exact sectors;
//! - [`content`], [`manifest`]: what goes into a partition, and `/.prestage/manifest.json`;
//!   [`tarfile`]: content from a tar archive, read in place;
//! - [`plan`]: the blocks a content set needs in XFS, before anything is written;
//! - [`xfs`]: XFS (mkfs.xfs for the empty filesystem, prestage's writer, the on-disk reader);
//! - `vfat`: FAT partitions; `gpt`: the partition table;
//! - [`emit`]: raw and qcow2 writers and readers; [`bmap`]: bmaptool block maps of raw images;
//!   `diskio`: positioned reads, partition windows;
//! - [`output`]: the lock on an output path, dead runs' leftovers, the free-space checks;
//! - `write`: the image in one pass, every byte read, written and hashed once;
//! - [`verify`]: reading an image back through its own metadata against the manifest (every
//!   file re-read for `prestage verify`; for a fresh image, each file's extents against the runs
//!   its bytes were hashed in);
//! - `pipeline`: the order of work ([`compose`], [`compose_contents`]).

pub mod bmap;
pub mod cli;
pub mod content;
pub mod diskio;
pub mod emit;
pub mod gpt;
pub mod layout;
pub mod manifest;
pub mod output;
mod pipeline;
pub mod plan;
pub mod tarfile;
pub mod verify;
pub(crate) mod vfat;
mod write;
pub mod xfs;

pub use pipeline::{
    compose, compose_contents, compose_contents_with, describe, Hooks, Request, Summary,
};
