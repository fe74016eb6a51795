//! [`CountingStore`]: an [`ObjectStore`] layer that counts the requests made through
//! it, by kind, so that every operation's cost in store requests can be measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use crate::{
    ByteRange, ByteStream, ETag, GetResult, Key, ObjectMeta, ObjectStore, PutMode, Result,
};

/// Requests made through a [`CountingStore`], by kind. A listing counts one request
/// per call (a backend may page it in several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub get: u64,
    pub get_range: u64,
    pub head: u64,
    pub put: u64,
    pub put_stream: u64,
    pub delete: u64,
    pub list: u64,
}

impl StoreCounts {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.reads() + self.writes() + self.list
    }

    pub fn reads(&self) -> u64 {
        self.get + self.get_range + self.head
    }

    pub fn writes(&self) -> u64 {
        self.put + self.put_stream + self.delete
    }

    /// Named counts, for reports.
    pub fn fields(&self) -> [(&'static str, u64); 7] {
        [
            ("get", self.get),
            ("get_range", self.get_range),
            ("head", self.head),
            ("put", self.put),
            ("put_stream", self.put_stream),
            ("delete", self.delete),
            ("list", self.list),
        ]
    }
}

#[derive(Debug, Default)]
struct Counters {
    get: AtomicU64,
    get_range: AtomicU64,
    head: AtomicU64,
    put: AtomicU64,
    put_stream: AtomicU64,
    delete: AtomicU64,
    list: AtomicU64,
}

/// Counts requests to the store it wraps. Clones share the counters.
#[derive(Debug, Clone)]
pub struct CountingStore<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S: ObjectStore> CountingStore<S> {
    pub fn new(inner: S) -> Self {
        CountingStore {
            inner,
            counters: Arc::default(),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> StoreCounts {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StoreCounts {
            get: load(&c.get),
            get_range: load(&c.get_range),
            head: load(&c.head),
            put: load(&c.put),
            put_stream: load(&c.put_stream),
            delete: load(&c.delete),
            list: load(&c.list),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for CountingStore<S> {
    async fn get(&self, key: &Key) -> Result<GetResult> {
        bump(&self.counters.get);
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes> {
        bump(&self.counters.get_range);
        self.inner.get_range(key, range).await
    }
    async fn get_range_stream(&self, key: &Key, range: ByteRange) -> Result<ByteStream> {
        bump(&self.counters.get_range);
        self.inner.get_range_stream(key, range).await
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        bump(&self.counters.head);
        self.inner.head(key).await
    }
    async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag> {
        bump(&self.counters.put);
        self.inner.put(key, body, mode).await
    }
    async fn put_stream(&self, key: &Key, body: ByteStream, mode: PutMode) -> Result<ETag> {
        bump(&self.counters.put_stream);
        self.inner.put_stream(key, body, mode).await
    }
    async fn put_file(&self, key: &Key, path: &std::path::Path, mode: PutMode) -> Result<ETag> {
        bump(&self.counters.put_stream);
        self.inner.put_file(key, path, mode).await
    }
    async fn delete(&self, key: &Key) -> Result<()> {
        bump(&self.counters.delete);
        self.inner.delete(key).await
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        bump(&self.counters.list);
        self.inner.list(prefix).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, ObjectStoreExt};

    #[tokio::test]
    async fn counts_each_kind_of_request() {
        let store = CountingStore::new(MemoryStore::new());
        let key = Key::new("a/b").expect("key");
        store
            .put(&key, Bytes::from_static(b"x"), PutMode::Create)
            .await
            .expect("put");
        store.get(&key).await.expect("get");
        store.get(&key).await.expect("get");
        store.head(&key).await.expect("head");
        store.list_all("a/").await.expect("list");
        store.delete(&key).await.expect("delete");
        let counts = store.counts();
        assert_eq!(
            (
                counts.get,
                counts.head,
                counts.put,
                counts.list,
                counts.delete
            ),
            (2, 1, 1, 1, 1)
        );
        assert_eq!(counts.total(), 6);
    }
}
