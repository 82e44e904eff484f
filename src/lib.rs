//! prestage: compose, offline and without root, the disk image that pre-stages OpenShift edge
//! servers: a GPT disk whose `data` partition (XFS, at the end of the disk) holds the container
//! images the site install needs. The crate is the pipeline, one module per stage:
//!
//! - [`imageset`]: which images (release, assisted images, operators, additional images) → the
//!   discovery and install lists;
//! - [`fetch`]: those images, from registries or local copies → the de-duplicated store;
//! - [`payload`]: stored images → the data partition's content (`shared` or `ztp` layout);
//! - [`node`]: the loaders the node runs and the configuration that runs them;
//! - [`compose`]: partition content → a verified raw or qcow2 disk image;
//! - [`build`]: `prestage build` / `plan`, joining the stages.
//!
//! [`cleanup`] and [`docs`] (shell completions, man pages) are shared support (`testhook` is the
//! test suite's pause hook, in every build and inert unless its variable is set). See
//! ARCHITECTURE.md for the map.

pub mod build;
pub mod cleanup;
pub mod compose;
pub mod docs;
pub mod fetch;
pub mod imageset;
pub mod node;
pub mod payload;
#[doc(hidden)]
pub mod testhook;
