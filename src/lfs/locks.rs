//! Git LFS file locks: one object per locked path, written with `Create`, so of two
//! users racing for a path on any number of instances exactly one gets it.
//!
//! ```text
//! <name>.git/lfs/locks/<sha256 of the path>   {"id","path","locked_at","owner":{"name"}}
//! ```
//!
//! A lock's id is the hash of its path followed by a random part: an unlock by id finds
//! the lock's object from the id alone, and an id of an earlier lock of the same path
//! does not unlock a newer one. Before the first lock is written, the repository's
//! manifest is marked ([`crate::repo::Manifest::lfs_locks`]); pushes to a marked
//! repository are refused for every ref whose new commits change a file someone else
//! has locked ([`LockAware`]).

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stowage_store::{Error as StoreError, Key, ObjectMeta, PutMode};

use super::{Lfs, LfsError};
use crate::repo::push::{LockedFile, RefChange, RefPolicy};
use crate::repo::{RepoName, Repos};

/// Longest path a lock may name, in bytes.
pub const MAX_PATH: usize = 4096;

/// Locks read at once when listing.
const READS: usize = 16;

/// One lock, as the locking API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub id: String,
    pub path: String,
    /// RFC 3339.
    pub locked_at: String,
    pub owner: Owner,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub name: String,
}

/// Why a lock could not be taken or released.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{0}")]
    Invalid(String),
    /// Someone holds the path already.
    #[error("{} is already locked by {}", .0.path, .0.owner.name)]
    Exists(Box<Lock>),
    #[error("lock {0} not found")]
    NotFound(String),
    #[error("repository {0} not found")]
    NoRepository(RepoName),
    /// The lock is someone else's and the caller may not (or did not ask to) force.
    #[error("{0}")]
    NotOwner(String),
    #[error(transparent)]
    Lfs(#[from] LfsError),
}

impl From<StoreError> for LockError {
    fn from(e: StoreError) -> Self {
        LockError::Lfs(LfsError::Store(e))
    }
}

impl From<crate::repo::RepoError> for LockError {
    fn from(e: crate::repo::RepoError) -> Self {
        match e {
            crate::repo::RepoError::Store(e) => e.into(),
            crate::repo::RepoError::NotFound(repo) => LockError::NoRepository(repo),
            other => LockError::Invalid(other.to_string()),
        }
    }
}

fn path_hash(path: &str) -> String {
    hex::encode(Sha256::digest(path.as_bytes()))
}

fn locks_prefix(repo: &RepoName) -> String {
    format!("{}lfs/locks/", repo.prefix())
}

fn lock_key(repo: &RepoName, hash: &str) -> Key {
    repo.key(&format!("lfs/locks/{hash}"))
}

/// The name `caller`'s locks are held under (`anonymous` when access control is off).
pub fn owner_of(caller: &crate::access::Caller) -> String {
    caller
        .user
        .clone()
        .unwrap_or_else(|| "anonymous".to_owned())
}

/// Checks a lock's path: not empty, not too long, no NUL.
pub fn check_path(path: &str) -> Result<(), LockError> {
    if path.is_empty() || path.len() > MAX_PATH || path.contains('\0') {
        return Err(LockError::Invalid(format!(
            "invalid path: a locked path is 1 to {MAX_PATH} bytes, without NUL"
        )));
    }
    Ok(())
}

/// A page of `locks` (sorted by id) from `cursor` (an id, inclusive), at most `limit`;
/// with the cursor of the next page, if any.
pub fn page(locks: Vec<Lock>, cursor: Option<&str>, limit: usize) -> (Vec<Lock>, Option<String>) {
    let start = cursor.map_or(0, |c| locks.partition_point(|l| l.id.as_str() < c));
    let mut rest = locks.into_iter().skip(start);
    let page: Vec<Lock> = rest.by_ref().take(limit.max(1)).collect();
    (page, rest.next().map(|l| l.id))
}

impl Lfs {
    /// Locks `path` of `repo` for `owner`. [`LockError::Exists`] with the lock that
    /// holds it when someone (the owner too) has it already.
    pub async fn create_lock(
        &self,
        repos: &Repos,
        repo: &RepoName,
        path: &str,
        owner: &str,
    ) -> Result<Lock, LockError> {
        check_path(path)?;
        let max = self.config.max_locks;
        let held = self
            .store
            .list(&locks_prefix(repo))
            .take(max)
            .try_fold(0usize, |n, _| async move { Ok(n + 1) })
            .await?;
        if held >= max {
            return Err(LockError::Invalid(format!(
                "this repository holds {max} locks, the most it may; unlock some first"
            )));
        }
        repos.mark_lfs_locks(repo).await?;
        let hash = path_hash(path);
        let mut nonce = [0u8; 4];
        getrandom::fill(&mut nonce).map_err(|e| LockError::Invalid(format!("no random: {e}")))?;
        let lock = Lock {
            id: format!("{hash}{}", hex::encode(nonce)),
            path: path.to_owned(),
            locked_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            owner: Owner {
                name: owner.to_owned(),
            },
        };
        let body = serde_json::to_vec(&lock).expect("a lock serializes");
        let key = lock_key(repo, &hash);
        match self
            .store
            .put(&key, Bytes::from(body), PutMode::Create)
            .await
        {
            Ok(_) => Ok(lock),
            Err(StoreError::AlreadyExists { .. }) => match self.read_lock(&key).await? {
                Some(held) => Err(LockError::Exists(Box::new(held))),
                // Released meanwhile: the caller may try again.
                None => Err(LockError::Invalid(format!(
                    "{path} was being unlocked; try again"
                ))),
            },
            Err(e) => Err(e.into()),
        }
    }

    async fn read_lock(&self, key: &Key) -> Result<Option<Lock>, LockError> {
        match self.store.get(key).await {
            Ok(found) => {
                let lock: Lock = serde_json::from_slice(&found.bytes).map_err(|e| {
                    LockError::Invalid(format!("the lock at {key} is not valid: {e}"))
                })?;
                let cached = (key.to_string(), found.meta.etag.to_string());
                self.lock_cache.insert(cached, Arc::new(lock.clone()));
                Ok(Some(lock))
            }
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn lock_of(&self, meta: ObjectMeta) -> Result<Option<Lock>, LockError> {
        let cached = (meta.key.to_string(), meta.etag.to_string());
        if let Some(lock) = self.lock_cache.get(&cached) {
            return Ok(Some((*lock).clone()));
        }
        self.read_lock(&meta.key).await
    }

    /// Every lock of `repo`, sorted by id: one listing, and a read of each lock this
    /// process has not seen yet (locks never change, so they are cached).
    pub async fn locks(&self, repo: &RepoName) -> Result<Vec<Lock>, LockError> {
        let prefix = locks_prefix(repo);
        let metas: Vec<ObjectMeta> = self.store.list(&prefix).try_collect().await?;
        let read: Vec<Result<Option<Lock>, LockError>> = futures::stream::iter(metas)
            .map(|meta| self.lock_of(meta))
            .buffered(READS)
            .collect()
            .await;
        let mut locks = Vec::new();
        for lock in read {
            locks.extend(lock?);
        }
        locks.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(locks)
    }

    /// Releases lock `id` of `repo` for `caller`: their own, or anyone's with `force`
    /// when `may_force` (a repository admin).
    pub async fn unlock(
        &self,
        repo: &RepoName,
        id: &str,
        caller: &str,
        force: bool,
        may_force: bool,
    ) -> Result<Lock, LockError> {
        let not_found = || LockError::NotFound(id.to_owned());
        if id.len() < 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(not_found());
        }
        let key = lock_key(repo, &id[..64]);
        let lock = self
            .read_lock(&key)
            .await?
            .filter(|l| l.id == id)
            .ok_or_else(not_found)?;
        if lock.owner.name != caller {
            if !force {
                return Err(LockError::NotOwner(format!(
                    "{} is locked by {}: only they can unlock it (an admin of the repository \
                     can with --force)",
                    lock.path, lock.owner.name
                )));
            }
            if !may_force {
                return Err(LockError::NotOwner(format!(
                    "{} is locked by {}: only an admin of the repository may force an unlock",
                    lock.path, lock.owner.name
                )));
            }
        }
        self.store.delete(&key).await?;
        Ok(lock)
    }
}

/// A push's rules with the repository's LFS locks added: a ref may not move to commits
/// that change a file locked by someone other than the pusher.
#[derive(Debug)]
pub struct LockAware<P> {
    pub inner: P,
    pub lfs: Lfs,
    pub repo: RepoName,
    /// Who pushes, as lock owners are named.
    pub pusher: String,
}

#[async_trait::async_trait]
impl<P: RefPolicy> RefPolicy for LockAware<P> {
    fn may_create(&self) -> bool {
        self.inner.may_create()
    }

    async fn refresh(&self) -> Result<(), String> {
        self.inner.refresh().await
    }

    fn check(&self, change: &RefChange<'_>) -> Result<(), String> {
        self.inner.check(change)
    }

    async fn locked_files(&self) -> Result<Vec<LockedFile>, String> {
        let locks = self.lfs.locks(&self.repo).await.map_err(|e| {
            tracing::error!(repo = %self.repo, error = %e, "reading LFS locks failed");
            "the LFS locks of this repository cannot be read; try again".to_owned()
        })?;
        Ok(locks
            .into_iter()
            .filter(|l| l.owner.name != self.pusher)
            .map(|l| LockedFile {
                path: l.path,
                owner: l.owner.name,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lfs::LfsConfig;
    use crate::repo::{Caches, RepoConfig};
    use stowage_store::MemoryStore;

    #[tokio::test]
    async fn one_lock_per_path_and_only_its_owner_unlocks() {
        let store: Arc<dyn stowage_store::ObjectStore> = Arc::new(MemoryStore::new());
        let repos = Repos::new(
            store.clone(),
            Caches::new(1 << 20, 1 << 20, 1 << 20),
            RepoConfig::default(),
        );
        let repo = RepoName::new("data").expect("valid");
        repos
            .create(&repo, gix_hash::Kind::Sha1)
            .await
            .expect("created");
        let lfs = Lfs::new(repos.store.clone(), LfsConfig::default());
        let lock = lfs
            .create_lock(&repos, &repo, "models/a.bin", "alice")
            .await
            .expect("locked");
        let taken = lfs.create_lock(&repos, &repo, "models/a.bin", "bob").await;
        assert!(matches!(taken, Err(LockError::Exists(held)) if held.owner.name == "alice"));
        let snapshot = repos.snapshot(&repo).await.expect("read").expect("there");
        assert!(snapshot.manifest.lfs_locks, "the manifest says locks exist");

        lfs.create_lock(&repos, &repo, "b.bin", "bob")
            .await
            .expect("locked");
        assert_eq!(lfs.locks(&repo).await.expect("listed").len(), 2);
        assert!(matches!(
            lfs.unlock(&repo, &lock.id, "bob", false, false).await,
            Err(LockError::NotOwner(_))
        ));
        assert!(matches!(
            lfs.unlock(&repo, &lock.id, "bob", true, false).await,
            Err(LockError::NotOwner(_))
        ));
        let stale = format!("{}00000000", &lock.id[..64]);
        assert!(matches!(
            lfs.unlock(&repo, &stale, "alice", false, false).await,
            Err(LockError::NotFound(_))
        ));
        lfs.unlock(&repo, &lock.id, "carol", true, true)
            .await
            .expect("forced by an admin");
        let left = lfs.locks(&repo).await.expect("listed");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].path, "b.bin");
    }

    #[test]
    fn pages_follow_the_cursor() {
        let lock = |id: &str| Lock {
            id: id.into(),
            path: id.into(),
            locked_at: String::new(),
            owner: Owner { name: "a".into() },
        };
        let all: Vec<Lock> = ["a", "b", "c", "d", "e"].into_iter().map(lock).collect();
        let (first, next) = page(all.clone(), None, 2);
        assert_eq!((first.len(), next.as_deref()), (2, Some("c")));
        let (second, next) = page(all.clone(), next.as_deref(), 2);
        assert_eq!((second[0].id.as_str(), next.as_deref()), ("c", Some("e")));
        let (last, next) = page(all, next.as_deref(), 2);
        assert_eq!((last.len(), next), (1, None));
    }
}
