//! prestage: compose, offline and without root, the disk image that pre-stages OpenShift edge
//! servers: a GPT disk whose `data` partition (XFS, at the end of the disk) holds the container
//! images the site install needs. The crate is the pipeline, one module per stage:
//!
//! - [`imageset`]: which images (release, assisted images, operators, additional images) → the
//!   discovery and install lists;
//! - [`fetch`]: those images, from registries or local copies → the de-duplicated store;
//! - [`compose`]: partition content → a verified raw or qcow2 disk image.
//!
//! [`cleanup`] is shared support (`testhook` is a pause hook for the test suite only). See ARCHITECTURE.md for the map.

pub mod cleanup;
pub mod compose;
pub mod fetch;
pub mod imageset;
#[doc(hidden)]
pub mod testhook;
