//! The fetch stage: pulls images from registries (or local OCI layouts and `dir:` copies) into a
//! digest-verified, de-duplicated store that later stages read.
//!
//! - [`reference`](mod@reference), [`digest`]: the reference grammar and content digests;
//! - [`store`]: the store (blobs by digest, byte-exact manifests, records per reference);
//! - [`manifest`]: OCI and Docker manifest kinds, platform selection;
//! - [`registry`], [`http`], [`proxy`], [`auth`], [`tls`], [`mirrors`]: reaching registries
//!   (the client, its proxy routes and redirects, credentials, certificates, registries.conf);
//! - [`local`]: `oci:` and `dir:` sources; [`archive`]: oc-mirror archives and caches read in
//!   place; [`source`]: what every source provides;
//! - [`connect`]: registry settings resolved into a [`connect::Connection`];
//! - [`retry`], [`progress`], [`pull`]: the parallel, resumable pull; [`cli`]: the subcommands.

pub mod archive;
pub mod auth;
pub mod cli;
pub mod connect;
pub mod digest;
pub mod http;
pub mod local;
pub mod manifest;
pub mod mirrors;
pub mod progress;
pub mod proxy;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod retry;
pub mod source;
pub mod store;
pub mod tls;
