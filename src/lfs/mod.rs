//! Git LFS: large files kept beside a repository's packs, in the same store, under the
//! same access rules.
//!
//! ```text
//! <name>.git/lfs/objects/ab/cd/<oid>   an object, named by the SHA-256 of its bytes
//! ```
//!
//! Invariant: an object is at its key only if its bytes hash to its oid. Through this
//! server, an upload is streamed into the store with `Create` while it is hashed, and
//! the hash is checked before the store makes the object visible (a body that does not
//! match fails the write, so nothing appears). Directly to the store (S3, presigned),
//! the upload's SHA-256 and length are signed headers, so the store itself refuses
//! other bytes; direct uploads are offered only by a store seen to refuse a wrong
//! checksum (tested at start), and the verify action checks the stored checksum (or
//! hashes the object) before git-lfs counts it as sent. Objects never change once
//! there, and no compaction or garbage collection touches them.
//!
//! - [`oid`]: [`Oid`], checked (64 lowercase hex digits) before any key is built;
//! - [`batch`]: the batch API (which objects to send or fetch, and where);
//! - [`locks`]: file locks, and the push rule that enforces them;
//! - [`objects`]: uploads through the server, hashed, and downloads;
//! - [`tus`]: resumable uploads of any size (the tus protocol), hashed part by part
//!   ([`hash`]);
//! - [`pointer`]: the pointer files git stores in place of tracked files.
//!
//! This layer knows the store and the repository model, not HTTP.

pub mod batch;
pub mod hash;
pub mod locks;
pub mod objects;
pub mod oid;
pub mod pointer;
pub mod tus;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stowage_store::ObjectStore;
use stowage_store::direct::DirectAccess;

pub use oid::Oid;

use crate::repo::RepoName;

/// Settings of Git LFS.
#[derive(Debug, Clone)]
pub struct LfsConfig {
    /// Largest object accepted, in bytes (`--lfs-max-object-mb`).
    pub max_object_bytes: u64,
    /// Most objects one batch request may name.
    pub max_batch_objects: usize,
    /// Largest batch request body, in bytes.
    pub max_batch_bytes: usize,
    /// How long the links a batch answer gives are good for.
    pub link_lifetime: Duration,
    /// Most locks one repository holds (`--lfs-max-locks`): every push to it reads them.
    pub max_locks: usize,
}

/// A store's own requests: presigned links for transfers straight between clients and
/// the store, and objects written in parts (resumable uploads).
#[derive(Debug, Clone)]
pub struct Direct {
    pub access: Arc<dyn DirectAccess>,
    /// Whether downloads are links to the store (`--lfs-direct`).
    pub downloads: bool,
    /// Whether uploads are too (also: the store refuses wrong checksums).
    pub uploads: bool,
}

impl Default for LfsConfig {
    fn default() -> Self {
        LfsConfig {
            max_object_bytes: 64 << 30,
            max_batch_objects: 1000,
            max_batch_bytes: 1 << 20,
            link_lifetime: Duration::from_secs(15 * 60),
            max_locks: 10_000,
        }
    }
}

/// Bytes of LFS objects that passed through this process, and links to the store that
/// it handed out instead.
#[derive(Debug, Default)]
pub struct LfsCounters {
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub direct_uploads: AtomicU64,
    pub direct_downloads: AtomicU64,
    /// Resumable upload requests being received now.
    pub resumable_running: AtomicU64,
}

impl LfsCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Git LFS over one store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Lfs {
    store: Arc<dyn ObjectStore>,
    direct: Option<Direct>,
    pub config: LfsConfig,
    pub counters: Arc<LfsCounters>,
    /// Locks read, by key and tag (a lock never changes; a new one has a new tag).
    lock_cache: moka::sync::Cache<(String, String), Arc<locks::Lock>>,
}

impl Lfs {
    pub fn new(store: Arc<dyn ObjectStore>, config: LfsConfig) -> Self {
        Lfs {
            store,
            direct: None,
            config,
            counters: Arc::default(),
            lock_cache: moka::sync::Cache::new(100_000),
        }
    }

    /// Transfers go straight to the store through `direct`.
    pub fn with_direct(mut self, direct: Option<Direct>) -> Self {
        self.direct = direct;
        self
    }

    pub fn direct(&self) -> Option<&Direct> {
        self.direct.as_ref()
    }

    /// Whether clients upload straight to the store.
    pub fn direct_uploads(&self) -> bool {
        self.direct.as_ref().is_some_and(|d| d.uploads)
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where `oid` of `repo` is kept.
    pub fn object_key(repo: &RepoName, oid: &Oid) -> stowage_store::Key {
        let hex = oid.to_string();
        repo.key(&format!("lfs/objects/{}/{}/{hex}", &hex[..2], &hex[2..4]))
    }
}

/// Why an LFS operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LfsError {
    #[error("object {0} not found")]
    NotFound(Oid),
    /// The bytes sent do not hash to the oid they were sent as.
    #[error("the content sent does not match object {oid}: its SHA-256 is {actual} ({size} bytes)")]
    Mismatch { oid: Oid, actual: String, size: u64 },
    #[error("object {oid} is {size} bytes; this server accepts objects up to {max} bytes")]
    TooLarge { oid: Oid, size: u64, max: u64 },
    #[error("object {oid} is {actual} bytes, not {claimed}")]
    WrongSize { oid: Oid, claimed: u64, actual: u64 },
    /// A resumable upload's request that does not fit its state (another offset, another
    /// writer).
    #[error("{0}")]
    Conflict(String),
    /// The client's body broke off (what was stored of it stays, for a resumption).
    #[error("the upload broke off: {0}")]
    Interrupted(String),
    #[error(transparent)]
    Store(#[from] stowage_store::Error),
}
