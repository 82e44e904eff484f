//! The image-set stage: decides which images go onto the partition.
//!
//! - [`layers`]: an image's files, read from its layer blobs as streams (whiteouts applied,
//!   hostile archives refused);
//! - [`release`]: the release payload's `image-references` and release image names;
//! - [`catalog`]: file-based operator catalogs and bundle selection;
//! - [`config`]: oc-mirror `ImageSetConfiguration` (v1alpha2, v2alpha1) and plain list files;
//! - [`keys`]: struct keys matched as Go's `encoding/json` matches them (case-insensitively);
//! - [`filter`]: regular-expression filter files;
//! - [`graph`]: release channels resolved through the update graph;
//! - [`lists`]: the discovery and install lists, `mapping.txt` and the JSON summary;
//! - [`resolve`]: the run that joins them: an image-set request in, pinned lists out, pulling
//!   through the fetch stage;
//! - [`cli`]: the options that choose an image set, and `prestage images`.

pub mod catalog;
pub mod cli;
pub mod config;
pub mod filter;
pub mod graph;
pub mod keys;
pub mod layers;
pub mod lists;
pub mod release;
pub mod resolve;
