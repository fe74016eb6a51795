//! [`LatencyStore`]: an [`ObjectStore`] layer that waits a fixed time before each
//! request, so that a benchmark on a local disk shows how the server behaves against a
//! remote store such as S3 (about 10 to 30 ms to first byte).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::{
    ByteRange, ByteStream, ETag, GetResult, Key, ObjectMeta, ObjectStore, PutMode, Result,
};

/// Delays every request to the store it wraps by `delay`. A listing is delayed once,
/// before its first item.
#[derive(Debug, Clone)]
pub struct LatencyStore<S> {
    inner: S,
    delay: Duration,
}

impl<S: ObjectStore> LatencyStore<S> {
    pub fn new(inner: S, delay: Duration) -> Self {
        LatencyStore { inner, delay }
    }

    async fn wait(&self) {
        tokio::time::sleep(self.delay).await;
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for LatencyStore<S> {
    async fn get(&self, key: &Key) -> Result<GetResult> {
        self.wait().await;
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes> {
        self.wait().await;
        self.inner.get_range(key, range).await
    }

    async fn get_range_stream(&self, key: &Key, range: ByteRange) -> Result<ByteStream> {
        self.wait().await;
        self.inner.get_range_stream(key, range).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.wait().await;
        self.inner.head(key).await
    }

    async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag> {
        self.wait().await;
        self.inner.put(key, body, mode).await
    }

    async fn put_stream(&self, key: &Key, body: ByteStream, mode: PutMode) -> Result<ETag> {
        self.wait().await;
        self.inner.put_stream(key, body, mode).await
    }

    async fn put_file(&self, key: &Key, path: &std::path::Path, mode: PutMode) -> Result<ETag> {
        self.wait().await;
        self.inner.put_file(key, path, mode).await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.wait().await;
        self.inner.delete(key).await
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        let prefix = prefix.to_owned();
        let inner = &self.inner;
        stream::once(self.wait())
            .flat_map(move |()| inner.list(&prefix))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, ObjectStoreExt};
    use std::time::Instant;

    #[tokio::test]
    async fn every_request_waits_and_passes_through() {
        let store = LatencyStore::new(MemoryStore::new(), Duration::from_millis(30));
        let key = Key::new("a/b").expect("key");
        let start = Instant::now();
        store
            .put(&key, Bytes::from_static(b"x"), PutMode::Create)
            .await
            .expect("put");
        assert_eq!(&store.get(&key).await.expect("get").bytes[..], b"x");
        assert_eq!(store.list_all("a/").await.expect("list").len(), 1);
        assert!(start.elapsed() >= Duration::from_millis(90));
    }
}
