//! prestage: compose, offline and without root, the disk image that pre-stages OpenShift edge
//! servers: a GPT disk whose `data` partition (XFS, at the end of the disk) holds the content the
//! site install needs. See ARCHITECTURE.md for the map of the pipeline.

pub mod cleanup;
pub mod compose;
pub mod content;
pub mod diskio;
pub mod emit;
pub mod fetch;
pub mod gpt;
pub mod imageset;
pub mod layout;
pub mod manifest;
pub mod plan;
pub mod verify;
pub mod vfat;
pub mod xfs;
