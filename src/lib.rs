//! stowage: a Git Smart HTTP server whose repositories live in object storage.
//!
//! A tour of the layers, each knowing only those below it:
//! - [`http`]: axum routes, thin: one file per route family, one place that
//!   authenticates, status codes;
//! - [`access`]: users, tokens, grants, visibility and protected refs, kept in the
//!   store and cached; decides what a request may do;
//! - [`lfs`]: Git LFS objects beside each repository's packs: the batch API,
//!   uploads proven by their hash, downloads;
//! - [`protocol`]: git's wire protocol (pkt-lines, v0/v1 negotiation, v2 commands,
//!   receive-pack) as functions over bytes and streams, and [`protocol::serve`], which
//!   answers a git request for one repository;
//! - [`repo`]: the repository model in the store: manifest, packs, object lookup,
//!   walks, pack writing and the push transaction;
//! - [`stowage_store::ObjectStore`]: where every byte lives (filesystem, S3, memory);
//!   [`store_url`] opens one from a URL, [`disk_cache`] keeps local copies of its
//!   packs;
//! - [`hooks`]: webhooks: push events turned into deliveries, sent and retried by any
//!   instance;
//! - [`metrics`]: the Prometheus registry every layer records into;
//! - [`config`]: the settings file (`stowage.toml`) that holds any flag of a command.

pub mod access;
pub mod admission;
pub mod config;
pub mod disk_cache;
pub mod hooks;
pub mod http;
pub mod lfs;
pub mod metrics;
pub mod protocol;
pub mod repo;
pub mod store_url;
pub mod telemetry;
