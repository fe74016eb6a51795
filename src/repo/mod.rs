//! The repository model: how a git repository lives in an [`ObjectStore`].
//!
//! ```text
//! <name>.git/manifest                 HEAD, refs, live packs (the only mutable object)
//! <name>.git/packs/pack-<hash>.pack   immutable, written with Create
//! <name>.git/packs/pack-<hash>.idx    immutable pack index (v2)
//! ```
//!
//! Invariants: the manifest is only replaced by compare-and-swap, so concurrent writers
//! on any number of machines never lose each other's updates; a pack enters a manifest
//! only after its connectivity check passed, so the listed packs are closed under
//! reachability; the manifest is read afresh for every request, never served stale.

pub mod describe;
pub mod event;
pub mod fetch;
pub mod files;
pub mod hash;
pub mod hook;
pub mod indexer;
pub mod maintenance;
pub mod manifest;
pub mod name;
pub mod object_check;
pub mod odb;
pub mod packgen;
pub mod push;
pub mod scratch;
pub mod sparse;
pub mod walk;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use stowage_store::{
    CountingStore, ETag, Error as StoreError, ObjectStore, ObjectStoreExt, PutMode, StoreCounts,
};

pub use manifest::Manifest;
pub use name::RepoName;
pub use odb::{Caches, Odb, OdbError};

/// Settings of the repository layer.
#[derive(Debug, Clone)]
pub struct RepoConfig {
    /// Whether a push to a missing repository creates it.
    pub auto_create: bool,
    /// Whether pushes that are not fast-forwards are refused.
    pub deny_non_fast_forwards: bool,
    /// Where received packs are indexed before they are stored.
    pub tmp_dir: PathBuf,
    /// Largest single object a push may carry, in bytes (guards the indexer's
    /// allocations against hostile packs).
    pub max_object_bytes: usize,
    /// Largest pack a push may send, in bytes.
    pub max_pack_bytes: u64,
    /// Whether pushes start a geometric compaction in the background when the live
    /// packs need one (and garbage collection after it).
    pub compact_after_push: bool,
    /// How long a pack no manifest lists is kept before garbage collection deletes it.
    pub gc_grace: std::time::Duration,
    /// Whether received objects are checked as git's `transfer.fsckObjects` does.
    pub fsck_objects: bool,
    /// Message ids of those checks not to refuse a push for.
    pub fsck_ignore: Vec<String>,
    /// The longest delta chain a pushed pack may hold.
    pub max_delta_depth: u32,
    /// How deep the trees of a push may nest (git's `core.maxTreeDepth`).
    pub max_tree_depth: u32,
    /// The longest ref name a push may set, in bytes.
    pub max_ref_name_bytes: usize,
    /// The pre-receive hook, if any (`--pre-receive-hook`).
    pub pre_receive: Option<hook::PreReceive>,
    /// When set, a compaction that merges every pack into one of at least this many
    /// bytes also stores it as a git bundle of the refs it holds (`--bundle-uri`).
    pub bundle_min_bytes: Option<u64>,
}

impl Default for RepoConfig {
    fn default() -> Self {
        RepoConfig {
            auto_create: true,
            deny_non_fast_forwards: false,
            tmp_dir: std::env::temp_dir(),
            max_object_bytes: 4 << 30,
            max_pack_bytes: 64 << 30,
            compact_after_push: true,
            gc_grace: maintenance::DEFAULT_GRACE,
            fsck_objects: true,
            fsck_ignore: Vec::new(),
            max_delta_depth: 4095,
            max_tree_depth: 2048,
            max_ref_name_bytes: 1024,
            pre_receive: None,
            bundle_min_bytes: None,
        }
    }
}

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("repository {0} not found")]
    NotFound(RepoName),
    #[error("repository {0} already exists")]
    AlreadyExists(RepoName),
    #[error("repository {repo}: {source}")]
    Manifest {
        repo: RepoName,
        source: manifest::ManifestError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Odb(#[from] OdbError),
    /// A request the repository cannot take, in words for the client.
    #[error("{0}")]
    Refused(String),
}

/// How [`Repos::edit_manifest`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edited {
    /// The manifest is as the change wants it (written, or needing no change).
    Done,
    /// The repository does not exist.
    Missing,
    /// Every attempt lost its race.
    Contended,
}

/// How many times a manifest edit is tried before it gives up.
pub const MAX_EDITS: u32 = 32;

/// Every repository in one store, with the caches they share.
#[derive(Debug, Clone)]
pub struct Repos {
    /// The store, through a layer that counts requests.
    pub store: Arc<dyn ObjectStore>,
    counting: CountingStore<Arc<dyn ObjectStore>>,
    pub caches: Caches,
    pub config: RepoConfig,
    /// Repositories this process is compacting; `true` when another push asked for a
    /// compaction meanwhile (one more round follows).
    maintaining: Arc<Maintaining>,
    /// Pushes of this process between storing their pack and swapping the manifest.
    committing: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts a push in [`Repos::committing`] while it lives.
pub(crate) struct Committing(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Committing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

type Maintaining = std::sync::Mutex<std::collections::HashMap<RepoName, bool>>;

/// Takes a repository off the map of running compactions when a compaction task ends
/// without doing so itself (a panic).
struct Running<'a> {
    map: &'a Maintaining,
    repo: &'a RepoName,
    armed: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(self.repo);
        }
    }
}

/// A manifest as read, with the tag a compare-and-swap must name.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub manifest: Manifest,
    pub etag: ETag,
}

impl Repos {
    pub fn new(store: Arc<dyn ObjectStore>, caches: Caches, config: RepoConfig) -> Self {
        let counting = CountingStore::new(store);
        Repos {
            store: Arc::new(counting.clone()),
            counting,
            caches,
            config,
            maintaining: Arc::default(),
            committing: Arc::default(),
        }
    }

    /// After a push that wrote `manifest`: in the background (one task per repository
    /// at a time in this process), prunes the repository if objects no ref reaches have
    /// been in it for the grace period, or else compacts its packs if they need it; then
    /// collects garbage older than the grace period.
    pub fn maintain_in_background(&self, repo: &RepoName, manifest: &Manifest) {
        let due = maintenance::prune_due(manifest, self.config.gc_grace)
            || !maintenance::geometric_selection(&manifest.packs, 2).is_empty();
        if !self.config.compact_after_push || !due {
            return;
        }
        {
            let mut running = self.maintaining.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(again) = running.get_mut(repo) {
                *again = true;
                return;
            }
            running.insert(repo.clone(), false);
        }
        let repos = self.clone();
        let repo = repo.clone();
        tokio::spawn(async move {
            // Clears the entry if the task panics, so that the next push can start a
            // compaction again.
            let mut running_guard = Running {
                map: &repos.maintaining,
                repo: &repo,
                armed: true,
            };
            loop {
                match maintenance::maintain(&repos, &repo).await {
                    Ok(true) => {
                        if let Err(e) =
                            maintenance::collect_garbage(&repos, &repo, repos.config.gc_grace).await
                        {
                            tracing::warn!(repo = %repo, error = %e, "garbage collection failed");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(repo = %repo, error = %e, "maintenance failed"),
                }
                // Under one lock: another round if a push asked for one meanwhile,
                // else done (a later push then starts a new task).
                let mut running = repos.maintaining.lock().unwrap_or_else(|e| e.into_inner());
                match running.get_mut(&repo) {
                    Some(again) if *again => *again = false,
                    _ => {
                        running.remove(&repo);
                        running_guard.armed = false;
                        break;
                    }
                }
            }
        });
    }

    /// Whether this process is compacting `repo` right now.
    pub fn is_maintaining(&self, repo: &RepoName) -> bool {
        self.maintaining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(repo)
    }

    /// Store requests made so far, by kind.
    pub fn store_counts(&self) -> StoreCounts {
        self.counting.counts()
    }

    /// Marks a push as storing its pack and swapping the manifest, until it drops.
    pub(crate) fn committing(&self) -> Committing {
        self.committing
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Committing(self.committing.clone())
    }

    /// Waits, at most `within`, until no push of this process is between storing its
    /// pack and swapping the manifest; whether none is.
    pub async fn commits_done(&self, within: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + within;
        while self.committing.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            if std::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        true
    }

    /// The repository's current manifest, or `None` if it does not exist.
    pub async fn snapshot(&self, repo: &RepoName) -> Result<Option<Snapshot>, RepoError> {
        use tracing::Instrument;
        let Some(found) = self
            .store
            .get_opt(&repo.key("manifest"))
            .instrument(tracing::info_span!("manifest"))
            .await?
        else {
            return Ok(None);
        };
        let manifest = Manifest::parse(&found.bytes).map_err(|source| RepoError::Manifest {
            repo: repo.clone(),
            source,
        })?;
        Ok(Some(Snapshot {
            manifest,
            etag: found.meta.etag,
        }))
    }

    /// The wants a fetch may not have: objects the repository lacks and, while its
    /// packs may hold objects no ref reaches, objects no ref reaches (asked by id).
    pub async fn unserved_wants(
        &self,
        repo: &RepoName,
        snapshot: &Snapshot,
        odb: &Arc<Odb>,
        wants: &[gix_hash::ObjectId],
    ) -> Result<Vec<gix_hash::ObjectId>, RepoError> {
        let mut unserved = fetch::unknown_wants(odb, wants);
        if snapshot.manifest.unreachable_since.is_none() {
            return Ok(unserved);
        }
        let tips = fetch::ref_tips(&snapshot.manifest);
        let by_id: Vec<_> = wants
            .iter()
            .filter(|w| !tips.contains(*w) && !unserved.contains(w))
            .copied()
            .collect();
        if by_id.is_empty() {
            return Ok(unserved);
        }
        let reachable = self.reachable(repo, snapshot, odb).await?;
        unserved.extend(by_id.into_iter().filter(|w| !reachable.contains(w)));
        Ok(unserved)
    }

    /// Every object the refs of `snapshot` reach, cached by manifest.
    pub async fn reachable(
        &self,
        repo: &RepoName,
        snapshot: &Snapshot,
        odb: &Arc<Odb>,
    ) -> Result<Arc<std::collections::HashSet<gix_hash::ObjectId>>, RepoError> {
        // One walk for concurrent askers of one manifest (they wait for it).
        let key = (repo.to_string(), snapshot.etag.as_str().to_owned());
        let (caches, odb, manifest) = (self.caches.clone(), odb.clone(), snapshot.manifest.clone());
        tokio::task::spawn_blocking(move || {
            caches.reachable_or(key, || fetch::reachable(&odb, &manifest).map(Arc::new))
        })
        .await
        .expect("the walk does not panic")
        .map_err(|e| {
            RepoError::Odb(Arc::try_unwrap(e).unwrap_or_else(|e| OdbError::Corrupt {
                pack: "reachable objects".into(),
                message: e.to_string(),
            }))
        })
    }

    /// Opens the objects of `manifest`.
    pub async fn odb(&self, repo: &RepoName, manifest: &Manifest) -> Result<Odb, RepoError> {
        Ok(Odb::open(self.store.clone(), &self.caches, repo, manifest).await?)
    }

    /// Creates an empty repository of objects in `format`, whose HEAD is
    /// `refs/heads/main`.
    pub async fn create(&self, repo: &RepoName, format: gix_hash::Kind) -> Result<(), RepoError> {
        let manifest = Manifest::new("refs/heads/main", format);
        match self
            .store
            .put(
                &repo.key("manifest"),
                Bytes::from(manifest.to_bytes()),
                PutMode::Create,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::AlreadyExists { .. }) => Err(RepoError::AlreadyExists(repo.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks `repo`'s manifest as having Git LFS locks (once; later pushes then check
    /// them).
    pub async fn mark_lfs_locks(&self, repo: &RepoName) -> Result<(), RepoError> {
        let edited = self
            .edit_manifest(repo, None, MAX_EDITS, |m| {
                !std::mem::replace(&mut m.lfs_locks, true)
            })
            .await?;
        match edited {
            Edited::Done => Ok(()),
            Edited::Missing => Err(RepoError::NotFound(repo.clone())),
            Edited::Contended => Err(RepoError::Store(StoreError::Transient {
                key: repo.key("manifest").to_string(),
                source: "too many concurrent writes to the manifest".into(),
            })),
        }
    }

    /// Changes a repository's manifest by compare-and-swap, for a change that is not a
    /// push (a push's swap also re-checks its commands): `change` is applied to the
    /// latest manifest (`start`, if given, then again after each lost race, at most
    /// `attempts` times) and says whether it changed anything; nothing is written when
    /// it did not.
    pub async fn edit_manifest(
        &self,
        repo: &RepoName,
        start: Option<Snapshot>,
        attempts: u32,
        mut change: impl FnMut(&mut Manifest) -> bool,
    ) -> Result<Edited, RepoError> {
        let mut snapshot = start;
        for _ in 0..attempts {
            let current = match snapshot.take() {
                Some(s) => s,
                None => match self.snapshot(repo).await? {
                    Some(s) => s,
                    None => return Ok(Edited::Missing),
                },
            };
            let mut next = current.manifest.clone();
            if !change(&mut next) {
                return Ok(Edited::Done);
            }
            match self
                .store
                .put(
                    &repo.key("manifest"),
                    Bytes::from(next.to_bytes()),
                    PutMode::Update(current.etag.clone()),
                )
                .await
            {
                Ok(_) => return Ok(Edited::Done),
                Err(StoreError::Precondition { .. }) => {
                    crate::metrics::record(|m| m.manifest_conflicts.inc())
                }
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Edited::Contended)
    }

    /// Every repository in the store, sorted by name.
    pub async fn list(&self) -> Result<Vec<RepoName>, RepoError> {
        let mut names: Vec<RepoName> = self
            .store
            .list("")
            .try_filter_map(
                |meta| async move { Ok(RepoName::from_manifest_key(meta.key.as_str())) },
            )
            .try_collect()
            .await?;
        names.sort();
        Ok(names)
    }

    /// Deletes a repository: its manifest first (so it disappears at once), then its
    /// packs.
    pub async fn delete(&self, repo: &RepoName) -> Result<(), RepoError> {
        if self.snapshot(repo).await?.is_none() {
            return Err(RepoError::NotFound(repo.clone()));
        }
        self.store.delete(&repo.key("manifest")).await?;
        let keys: Vec<_> = self
            .store
            .list(&repo.prefix())
            .map_ok(|meta| meta.key)
            .try_collect()
            .await?;
        for key in keys {
            self.store.delete(&key).await?;
        }
        Ok(())
    }
}
