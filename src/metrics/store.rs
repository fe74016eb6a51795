//! [`MeteredStore`]: an [`ObjectStore`] layer that times every request it passes on,
//! by backend, operation and outcome. It sits under the retry layer, so each attempt
//! counts once.

use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use stowage_store::{
    ByteRange, ByteStream, ETag, Error, GetResult, Key, ObjectMeta, ObjectStore, PutMode, Result,
};

use super::{StoreLabels, record};

/// Times the requests to the store it wraps.
#[derive(Debug)]
pub struct MeteredStore<S> {
    inner: S,
    backend: &'static str,
}

impl<S: ObjectStore> MeteredStore<S> {
    /// `backend` names the store in labels (`s3`, `fs`, `memory`).
    pub fn new(inner: S, backend: &'static str) -> Self {
        MeteredStore { inner, backend }
    }
}

/// A bounded name for how a request ended.
fn outcome(error: Option<&Error>) -> &'static str {
    match error {
        None => "ok",
        Some(Error::NotFound { .. }) => "not_found",
        Some(Error::Precondition { .. }) => "precondition",
        Some(Error::AlreadyExists { .. }) => "conflict",
        Some(e @ Error::Transient { .. }) => {
            let text = format!("{e:?}");
            if ["SlowDown", "Throttl", "TooManyRequests", "429", "503"]
                .iter()
                .any(|mark| text.contains(mark))
            {
                "throttled"
            } else {
                "transient"
            }
        }
        Some(_) => "error",
    }
}

fn observe(backend: &'static str, operation: &'static str, outcome: &'static str, from: Instant) {
    record(|m| {
        m.store_requests
            .get_or_create(&StoreLabels {
                backend,
                operation,
                outcome,
            })
            .observe(from.elapsed().as_secs_f64());
    });
}

impl<S> MeteredStore<S> {
    async fn timed<T>(
        &self,
        operation: &'static str,
        request: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let from = Instant::now();
        let result = request.await;
        observe(
            self.backend,
            operation,
            outcome(result.as_ref().err()),
            from,
        );
        result
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for MeteredStore<S> {
    async fn get(&self, key: &Key) -> Result<GetResult> {
        self.timed("get", self.inner.get(key)).await
    }
    async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes> {
        self.timed("get_range", self.inner.get_range(key, range))
            .await
    }
    async fn get_range_stream(&self, key: &Key, range: ByteRange) -> Result<ByteStream> {
        self.timed("get_range", self.inner.get_range_stream(key, range))
            .await
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.timed("head", self.inner.head(key)).await
    }
    async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag> {
        self.timed("put", self.inner.put(key, body, mode)).await
    }
    async fn put_stream(&self, key: &Key, body: ByteStream, mode: PutMode) -> Result<ETag> {
        self.timed("put_stream", self.inner.put_stream(key, body, mode))
            .await
    }
    async fn put_file(&self, key: &Key, path: &Path, mode: PutMode) -> Result<ETag> {
        self.timed("put_file", self.inner.put_file(key, path, mode))
            .await
    }
    async fn delete(&self, key: &Key) -> Result<()> {
        self.timed("delete", self.inner.delete(key)).await
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        Box::pin(TimedList {
            inner: self.inner.list(prefix),
            backend: self.backend,
            from: Some(Instant::now()),
        })
    }
}

/// A listing, timed until its end or its first error.
struct TimedList<'a> {
    inner: BoxStream<'a, Result<ObjectMeta>>,
    backend: &'static str,
    from: Option<Instant>,
}

impl Stream for TimedList<'_> {
    type Item = Result<ObjectMeta>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        let ended = match &next {
            Poll::Ready(None) => Some("ok"),
            Poll::Ready(Some(Err(e))) => Some(outcome(Some(e))),
            _ => None,
        };
        if let Some(ended) = ended
            && let Some(from) = self.from.take()
        {
            observe(self.backend, "list", ended, from);
        }
        next
    }
}

impl Drop for TimedList<'_> {
    fn drop(&mut self) {
        // Dropped before its end: the caller had what it needed.
        if let Some(from) = self.from.take() {
            observe(self.backend, "list", "ok", from);
        }
    }
}
