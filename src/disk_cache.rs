//! [`DiskCacheStore`]: a bounded read-through cache, in a local directory, of the
//! immutable objects of a store (pack files and pack indexes, named by their
//! checksums), in front of the store itself. Every other object (a repository's
//! manifest) and every write goes to the store; a delete removes the cached copy too.
//!
//! A whole-object read that misses is kept on the way through; a range read that
//! misses is answered by the store while the whole object is copied to the directory
//! in the background (once, however many requests ask meanwhile). When the directory
//! holds more than its limit, the oldest copies are removed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use stowage_fs::FsStore;
use stowage_store::{
    ByteRange, ByteStream, ETag, Error, GetResult, Key, ObjectMeta, ObjectStore, PutMode, Result,
};

/// A store with a local copy of its immutable objects.
#[derive(Debug, Clone)]
pub struct DiskCacheStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    remote: Arc<dyn ObjectStore>,
    local: FsStore,
    max_bytes: u64,
    /// Bytes in the directory, as far as this process knows.
    held: AtomicU64,
    /// Keys being copied in the background.
    filling: Mutex<HashSet<Key>>,
    evicting: tokio::sync::Mutex<()>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Whether `key` names an immutable object: a pack or a pack index.
fn cacheable(key: &Key) -> bool {
    let key = key.as_str();
    key.contains("/packs/pack-") && (key.ends_with(".pack") || key.ends_with(".idx"))
}

impl DiskCacheStore {
    /// Caches `remote`'s packs and indexes in `dir` (created if missing), at most
    /// `max_bytes` of them. Copies a previous run left in `dir` are used.
    pub async fn open(remote: Arc<dyn ObjectStore>, dir: &Path, max_bytes: u64) -> Result<Self> {
        let local = FsStore::new(dir)?;
        let held = local
            .list("")
            .try_fold(0u64, |sum, meta| async move { Ok(sum + meta.size) })
            .await?;
        let store = DiskCacheStore {
            inner: Arc::new(Inner {
                remote,
                local,
                max_bytes,
                held: AtomicU64::new(held),
                filling: Mutex::new(HashSet::new()),
                evicting: tokio::sync::Mutex::new(()),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        };
        store.inner.evict().await;
        Ok(store)
    }

    /// Reads answered from the directory, and reads of cacheable objects that were not.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.inner.hits.load(Ordering::Relaxed),
            self.inner.misses.load(Ordering::Relaxed),
        )
    }

    /// Bytes held in the directory.
    pub fn held_bytes(&self) -> u64 {
        self.inner.held.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn counted<T>(&self, found: Result<T>) -> Option<T> {
        match found {
            Ok(value) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(value)
            }
            Err(Error::NotFound { .. }) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                // A damaged copy is not worth a failed request: read the store.
                tracing::warn!(error = %e, "disk cache read failed");
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn keep(&self, key: &Key, bytes: Bytes) {
        let len = bytes.len() as u64;
        match self.local.put(key, bytes, PutMode::Overwrite).await {
            Ok(_) => {
                self.held.fetch_add(len, Ordering::Relaxed);
                self.evict().await;
            }
            Err(e) => tracing::warn!(key = %key, error = %e, "disk cache write failed"),
        }
    }

    /// Copies `key` from the store in the background, unless that is under way.
    fn fill(self: &Arc<Self>, key: &Key) {
        let mut filling = self.filling.lock().unwrap_or_else(|e| e.into_inner());
        if !filling.insert(key.clone()) {
            return;
        }
        drop(filling);
        let this = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let copied = async {
                let size = this.remote.head(&key).await?.size;
                let body = this
                    .remote
                    .get_range_stream(&key, ByteRange::From(0))
                    .await?;
                this.local
                    .put_stream(&key, body, PutMode::Overwrite)
                    .await?;
                Ok::<_, Error>(size)
            }
            .await;
            match copied {
                Ok(size) => {
                    this.held.fetch_add(size, Ordering::Relaxed);
                    this.evict().await;
                }
                Err(e) => tracing::warn!(key = %key, error = %e, "disk cache fill failed"),
            }
            this.filling
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        });
    }

    /// Removes the oldest copies until the directory is within 90% of its limit.
    async fn evict(&self) {
        if self.held.load(Ordering::Relaxed) <= self.max_bytes {
            return;
        }
        let Ok(_guard) = self.evicting.try_lock() else {
            return;
        };
        let mut copies: Vec<ObjectMeta> = match self.local.list("").try_collect().await {
            Ok(copies) => copies,
            Err(e) => {
                tracing::warn!(error = %e, "disk cache listing failed");
                return;
            }
        };
        copies.sort_by_key(|m| m.modified);
        let mut held: u64 = copies.iter().map(|m| m.size).sum();
        let target = self.max_bytes / 10 * 9;
        for copy in copies {
            if held <= target {
                break;
            }
            if self.local.delete(&copy.key).await.is_ok() {
                held -= copy.size;
            }
        }
        self.held.store(held, Ordering::Relaxed);
    }
}

#[async_trait]
impl ObjectStore for DiskCacheStore {
    async fn get(&self, key: &Key) -> Result<GetResult> {
        if !cacheable(key) {
            return self.inner.remote.get(key).await;
        }
        if let Some(found) = self.inner.counted(self.inner.local.get(key).await) {
            return Ok(found);
        }
        let found = self.inner.remote.get(key).await?;
        self.inner.keep(key, found.bytes.clone()).await;
        Ok(found)
    }

    async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes> {
        if !cacheable(key) {
            return self.inner.remote.get_range(key, range).await;
        }
        if let Some(found) = self
            .inner
            .counted(self.inner.local.get_range(key, range).await)
        {
            return Ok(found);
        }
        self.inner.fill(key);
        self.inner.remote.get_range(key, range).await
    }

    async fn get_range_stream(&self, key: &Key, range: ByteRange) -> Result<ByteStream> {
        if !cacheable(key) {
            return self.inner.remote.get_range_stream(key, range).await;
        }
        let local = self.inner.local.get_range_stream(key, range).await;
        if let Some(found) = self.inner.counted(local) {
            return Ok(found);
        }
        self.inner.fill(key);
        self.inner.remote.get_range_stream(key, range).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.inner.remote.head(key).await
    }

    async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag> {
        self.inner.remote.put(key, body, mode).await
    }

    async fn put_stream(&self, key: &Key, body: ByteStream, mode: PutMode) -> Result<ETag> {
        self.inner.remote.put_stream(key, body, mode).await
    }

    async fn put_file(&self, key: &Key, path: &std::path::Path, mode: PutMode) -> Result<ETag> {
        self.inner.remote.put_file(key, path, mode).await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.inner.remote.delete(key).await?;
        if cacheable(key)
            && let Ok(meta) = self.inner.local.head(key).await
            && self.inner.local.delete(key).await.is_ok()
        {
            self.inner.held.fetch_sub(
                meta.size.min(self.inner.held.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        self.inner.remote.list(prefix)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use stowage_store::{CountingStore, MemoryStore, ObjectStoreExt};

    use super::*;

    fn pack_key(n: u8) -> Key {
        Key::new(format!("r.git/packs/pack-{n:040x}.pack")).unwrap()
    }

    async fn cache(
        max_bytes: u64,
    ) -> (
        DiskCacheStore,
        Arc<CountingStore<MemoryStore>>,
        tempfile::TempDir,
    ) {
        let remote = Arc::new(CountingStore::new(MemoryStore::new()));
        let dir = tempfile::tempdir().unwrap();
        let store = DiskCacheStore::open(remote.clone(), dir.path(), max_bytes)
            .await
            .unwrap();
        (store, remote, dir)
    }

    #[tokio::test]
    async fn packs_are_read_from_the_store_once() {
        let (store, remote, _dir) = cache(1 << 20).await;
        let key = pack_key(1);
        store
            .put(&key, Bytes::from_static(b"PACK data"), PutMode::Create)
            .await
            .unwrap();
        let before = remote.counts().total();
        for _ in 0..3 {
            assert_eq!(store.get(&key).await.unwrap().bytes, &b"PACK data"[..]);
            assert_eq!(
                store.get_range(&key, (5..9).into()).await.unwrap(),
                &b"data"[..]
            );
        }
        assert_eq!(
            remote.counts().total() - before,
            1,
            "one get, the rest local"
        );
        assert_eq!(store.hits_and_misses(), (5, 1));

        // A range read of an object not yet copied is answered by the store and
        // copies it in the background.
        let other = pack_key(2);
        store
            .put(&other, Bytes::from_static(b"PACK other"), PutMode::Create)
            .await
            .unwrap();
        assert_eq!(
            store.get_range(&other, (5..10).into()).await.unwrap(),
            &b"other"[..]
        );
        for _ in 0..100 {
            if store.inner.local.head(&other).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = remote.counts().total();
        assert_eq!(
            store.get_range(&other, (0..4).into()).await.unwrap(),
            &b"PACK"[..]
        );
        assert_eq!(remote.counts().total(), before);

        // A delete removes the copy too.
        store.delete(&key).await.unwrap();
        assert!(store.get_opt(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn manifests_are_never_cached() {
        let (store, _remote, _dir) = cache(1 << 20).await;
        let key = Key::new("r.git/manifest").unwrap();
        store
            .put(&key, Bytes::from_static(b"one"), PutMode::Create)
            .await
            .unwrap();
        assert_eq!(store.get(&key).await.unwrap().bytes, &b"one"[..]);
        store
            .put(&key, Bytes::from_static(b"two"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(store.get(&key).await.unwrap().bytes, &b"two"[..]);
        assert_eq!(store.held_bytes(), 0);
    }

    #[tokio::test]
    async fn the_directory_stays_within_its_limit() {
        let (store, _remote, dir) = cache(100).await;
        for n in 0..5 {
            let key = pack_key(n);
            store
                .put(&key, Bytes::from(vec![n; 40]), PutMode::Create)
                .await
                .unwrap();
            assert_eq!(store.get(&key).await.unwrap().bytes, vec![n; 40]);
            // Distinct modification times for the eviction order.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(store.held_bytes() <= 100, "{}", store.held_bytes());
        let on_disk: u64 = FsStore::new(dir.path())
            .unwrap()
            .list_all("")
            .await
            .unwrap()
            .iter()
            .map(|m| m.size)
            .sum();
        assert!(on_disk <= 100, "{on_disk}");
        // The newest copy is kept; everything still reads right.
        assert!(store.inner.local.head(&pack_key(4)).await.is_ok());
        for n in 0..5 {
            assert_eq!(store.get(&pack_key(n)).await.unwrap().bytes, vec![n; 40]);
        }
    }
}
