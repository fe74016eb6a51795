//! [`RetryStore`]: the one layer that retries transient store faults
//! ([`Error::Transient`]: 5xx answers, throttling, timeouts, dropped connections, S3's
//! 409 ConditionalRequestConflict), with exponential backoff and full jitter, bounded
//! in attempts and in total time. Backends do not retry on their own (the S3 backend
//! turns the AWS SDK's retries off, but for the parts of a multipart upload, which
//! cannot be sent again from here), so nothing is retried twice over.
//!
//! Meanings are kept across retries:
//! - a `Create` that failed transiently and then finds the key taken looks at what is
//!   there: the same content means an earlier attempt landed (or an earlier writer
//!   wrote the same bytes), and counts as done, the object written once more so that it
//!   is as young as the write that was asked for;
//! - an `Update` (compare-and-swap) is sent again as it was; if an earlier attempt had
//!   landed, the retry is refused with [`Error::Precondition`], and the writer
//!   recognises its own write by the transaction id it recorded in the object;
//! - a stream body cannot be sent again, so [`ObjectStore::put_stream`] is not
//!   retried; [`ObjectStore::put_file`] is, reading the file again;
//! - a listing is started again only if it failed before its first item.
//!
//! Every attempt of a request that sends a body in memory or none, and reads no body
//! of unknown size (`head`, `put`, `delete`, the opening of a ranged read), is cut off
//! after [`RetryPolicy::attempt_timeout`], so a stalled connection cannot hang the
//! request that waits on it; that counts as a transient fault. Reads of whole bodies
//! rely on the backend's own read timeout.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::{
    ByteRange, ByteStream, ETag, Error, GetResult, Key, ObjectMeta, ObjectStore, PutMode, Result,
};

/// How hard a [`RetryStore`] tries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The longest pause before the first retry; each later one may be twice as long,
    /// up to `max_delay`. Each pause is drawn at random below its bound.
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first attempt.
    pub budget: Duration,
    /// Each attempt of a request that moves no body of unknown size is cut off after
    /// this long.
    pub attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            budget: Duration::from_secs(30),
            attempt_timeout: Some(Duration::from_secs(120)),
        }
    }
}

/// What a [`RetryStore`] did, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryCounts {
    /// Requests sent again.
    pub retries: u64,
    /// Requests that still failed transiently when attempts or time ran out.
    pub exhausted: u64,
    /// Attempts cut off by the attempt timeout.
    pub timeouts: u64,
    /// `Create`s found already done by an earlier attempt.
    pub recognised: u64,
}

#[derive(Debug, Default)]
struct Counters {
    retries: AtomicU64,
    exhausted: AtomicU64,
    timeouts: AtomicU64,
    recognised: AtomicU64,
}

/// A handle on a [`RetryStore`]'s counts, kept when the store itself is boxed away.
#[derive(Debug, Clone, Default)]
pub struct RetryStats(Arc<Counters>);

impl RetryStats {
    pub fn counts(&self) -> RetryCounts {
        let c = &self.0;
        RetryCounts {
            retries: c.retries.load(Ordering::Relaxed),
            exhausted: c.exhausted.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            recognised: c.recognised.load(Ordering::Relaxed),
        }
    }
}

/// Retries the transient faults of the store it wraps.
#[derive(Debug, Clone)]
pub struct RetryStore<S> {
    inner: S,
    policy: RetryPolicy,
    stats: RetryStats,
}

/// A pause at random in `0..=bound` (full jitter: retrying clients spread out).
fn jitter(bound: Duration) -> Duration {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into());
    let mut x = seed | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    bound.mul_f64((x >> 11) as f64 / (1u64 << 53) as f64)
}

impl<S: ObjectStore> RetryStore<S> {
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        RetryStore {
            inner,
            policy,
            stats: RetryStats::default(),
        }
    }

    /// The counts of this store (and of its clones).
    pub fn stats(&self) -> RetryStats {
        self.stats.clone()
    }

    /// The pause before retry number `retry` (1 for the first).
    fn pause(&self, retry: u32) -> Duration {
        let bound = self
            .policy
            .initial_delay
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(self.policy.max_delay);
        jitter(bound)
    }

    /// One attempt, cut off after the attempt timeout when `timed`.
    async fn attempt<T>(
        &self,
        key: &Key,
        timed: bool,
        request: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.policy.attempt_timeout.filter(|_| timed) {
            None => request.await,
            Some(limit) => match tokio::time::timeout(limit, request).await {
                Ok(result) => result,
                Err(_) => {
                    self.stats.0.timeouts.fetch_add(1, Ordering::Relaxed);
                    Err(Error::Transient {
                        key: key.to_string(),
                        source: format!("no answer from the store within {limit:?}").into(),
                    })
                }
            },
        }
    }

    /// Runs `request` (given the attempt number, from 0) until it succeeds, fails for
    /// good, or attempts or time run out.
    async fn retried<T, F, Fut>(&self, key: &Key, timed: bool, mut request: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let mut attempt = 0;
        loop {
            match self.attempt(key, timed, request(attempt)).await {
                Err(e) if e.is_retryable() => {
                    if attempt + 1 >= self.policy.attempts || start.elapsed() >= self.policy.budget
                    {
                        self.stats.0.exhausted.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                    attempt += 1;
                    self.stats.0.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(key = %key, attempt, error = %e, "retrying a store request");
                    tokio::time::sleep(self.pause(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// After a `Create` that failed transiently found the key taken: whether what is
    /// there is what was to be written (an earlier attempt landed).
    async fn holds(&self, key: &Key, body: &Bytes) -> Result<Option<ETag>> {
        let found = self.retried(key, true, |_| self.inner.get(key)).await?;
        Ok((found.bytes == *body).then_some(found.meta.etag))
    }

    /// [`RetryStore::holds`] for a file.
    async fn holds_file(&self, key: &Key, path: &Path) -> Result<Option<ETag>> {
        use tokio::io::AsyncReadExt;
        let meta = self.retried(key, true, |_| self.inner.head(key)).await?;
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| Error::from_io(key.as_str(), e))?
            .len();
        if meta.size != size {
            return Ok(None);
        }
        if size == 0 {
            return Ok(Some(meta.etag));
        }
        let mut stored = self
            .retried(key, true, |_| {
                self.inner.get_range_stream(key, ByteRange::From(0))
            })
            .await?;
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::from_io(key.as_str(), e))?;
        let mut buf = Vec::new();
        while let Some(chunk) = stored.next().await {
            let chunk = chunk.map_err(|e| Error::from_io(key.as_str(), e))?;
            buf.resize(chunk.len(), 0);
            file.read_exact(&mut buf)
                .await
                .map_err(|e| Error::from_io(key.as_str(), e))?;
            if buf[..] != chunk[..] {
                return Ok(None);
            }
        }
        Ok(Some(meta.etag))
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for RetryStore<S> {
    // Whole bodies of unknown size are not cut off (a large pack may take long); a
    // backend stalled while sending one fails by its own read timeout.
    async fn get(&self, key: &Key) -> Result<GetResult> {
        self.retried(key, false, |_| self.inner.get(key)).await
    }

    async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes> {
        self.retried(key, false, |_| self.inner.get_range(key, range))
            .await
    }

    async fn get_range_stream(&self, key: &Key, range: ByteRange) -> Result<ByteStream> {
        // The request is retried until it answers; the body then streams as it comes.
        self.retried(key, true, |_| self.inner.get_range_stream(key, range))
            .await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.retried(key, true, |_| self.inner.head(key)).await
    }

    async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag> {
        let result = self
            .retried(key, true, |attempt| {
                let (body, mode) = (body.clone(), mode.clone());
                async move {
                    match self.inner.put(key, body, mode).await {
                        // Taken, after a try that may have landed: tell which below.
                        Err(Error::AlreadyExists { key }) if attempt > 0 => {
                            Ok(Err(Error::AlreadyExists { key }))
                        }
                        other => other.map(Ok),
                    }
                }
            })
            .await?;
        match result {
            Ok(etag) => Ok(etag),
            Err(taken) => match self.holds(key, &body).await? {
                Some(_) => {
                    self.stats.0.recognised.fetch_add(1, Ordering::Relaxed);
                    self.retried(key, true, |_| {
                        self.inner.put(key, body.clone(), PutMode::Overwrite)
                    })
                    .await
                }
                None => Err(taken),
            },
        }
    }

    async fn put_stream(&self, key: &Key, body: ByteStream, mode: PutMode) -> Result<ETag> {
        self.inner.put_stream(key, body, mode).await
    }

    async fn put_file(&self, key: &Key, path: &Path, mode: PutMode) -> Result<ETag> {
        let result = self
            .retried(key, false, |attempt| {
                let mode = mode.clone();
                async move {
                    match self.inner.put_file(key, path, mode).await {
                        Err(Error::AlreadyExists { key }) if attempt > 0 => {
                            Ok(Err(Error::AlreadyExists { key }))
                        }
                        other => other.map(Ok),
                    }
                }
            })
            .await?;
        match result {
            Ok(etag) => Ok(etag),
            Err(taken) => match self.holds_file(key, path).await? {
                Some(_) => {
                    self.stats.0.recognised.fetch_add(1, Ordering::Relaxed);
                    self.retried(key, false, |_| {
                        self.inner.put_file(key, path, PutMode::Overwrite)
                    })
                    .await
                }
                None => Err(taken),
            },
        }
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.retried(key, true, |_| self.inner.delete(key)).await
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        let prefix = prefix.to_owned();
        stream::once(async move {
            let start = Instant::now();
            let mut attempt = 0;
            loop {
                let mut listing = self.inner.list(&prefix);
                match listing.next().await {
                    Some(Err(e))
                        if e.is_retryable()
                            && attempt + 1 < self.policy.attempts
                            && start.elapsed() < self.policy.budget =>
                    {
                        attempt += 1;
                        self.stats.0.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(self.pause(attempt)).await;
                    }
                    // An ended listing is not polled again.
                    None => return stream::empty().boxed(),
                    Some(first) => return stream::once(async { first }).chain(listing).boxed(),
                }
            }
        })
        .flatten()
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FaultStore, MemoryStore, ObjectStoreExt};

    fn quick() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        }
    }

    fn key(k: &str) -> Key {
        Key::new(k).expect("key")
    }

    #[tokio::test]
    async fn transient_faults_are_retried_permanent_ones_are_not() {
        let faults =
            FaultStore::new(MemoryStore::new(), "op=get,nth=1; op=head,after=0").expect("spec");
        let store = RetryStore::new(faults, quick());
        let k = key("a/b");
        store
            .put(&k, Bytes::from_static(b"x"), PutMode::Create)
            .await
            .expect("put");
        assert_eq!(&store.get(&k).await.expect("retried").bytes[..], b"x");
        assert!(
            store
                .head(&k)
                .await
                .expect_err("every head fails")
                .is_retryable()
        );
        let counts = store.stats().counts();
        assert_eq!(counts.retries, 1 + 4);
        assert_eq!(counts.exhausted, 1);

        let faults =
            FaultStore::new(MemoryStore::new(), "op=get,nth=1,error=permanent").expect("spec");
        let store = RetryStore::new(faults, quick());
        store
            .put(&k, Bytes::from_static(b"x"), PutMode::Create)
            .await
            .expect("put");
        assert!(matches!(store.get(&k).await, Err(Error::Other { .. })));
        assert_eq!(store.stats().counts().retries, 0);
    }

    /// A store whose first write lands but whose answer is lost.
    #[derive(Debug, Default)]
    struct LostAnswer {
        inner: MemoryStore,
        lost: AtomicU64,
    }

    #[async_trait]
    impl ObjectStore for LostAnswer {
        async fn get(&self, key: &Key) -> Result<GetResult> {
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes> {
            self.inner.get_range(key, range).await
        }
        async fn get_range_stream(&self, key: &Key, range: ByteRange) -> Result<ByteStream> {
            self.inner.get_range_stream(key, range).await
        }
        async fn head(&self, key: &Key) -> Result<ObjectMeta> {
            self.inner.head(key).await
        }
        async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag> {
            let etag = self.inner.put(key, body, mode).await?;
            if self.lost.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(Error::Transient {
                    key: key.to_string(),
                    source: "the connection dropped before the answer".into(),
                });
            }
            Ok(etag)
        }
        async fn put_stream(&self, key: &Key, body: ByteStream, mode: PutMode) -> Result<ETag> {
            let etag = self.inner.put_stream(key, body, mode).await?;
            if self.lost.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(Error::Transient {
                    key: key.to_string(),
                    source: "the connection dropped before the answer".into(),
                });
            }
            Ok(etag)
        }
        async fn delete(&self, key: &Key) -> Result<()> {
            self.inner.delete(key).await
        }
        fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
    }

    #[tokio::test]
    async fn a_create_that_landed_counts_as_done() {
        let store = RetryStore::new(LostAnswer::default(), quick());
        let k = key("a/b");
        store
            .put(&k, Bytes::from_static(b"same"), PutMode::Create)
            .await
            .expect("recognised as done");
        assert_eq!(store.stats().counts().recognised, 1);
        // Different content at the key is still a conflict.
        let other = RetryStore::new(LostAnswer::default(), quick());
        other
            .inner
            .inner
            .put(&k, Bytes::from_static(b"theirs"), PutMode::Create)
            .await
            .expect("theirs");
        assert!(matches!(
            other
                .put(&k, Bytes::from_static(b"ours"), PutMode::Create)
                .await,
            Err(Error::AlreadyExists { .. })
        ));

        let dir = tempfile_dir();
        let path = dir.join("body");
        std::fs::write(&path, vec![7u8; 3 << 20]).expect("write");
        let store = RetryStore::new(LostAnswer::default(), quick());
        store
            .put_file(&k, &path, PutMode::Create)
            .await
            .expect("a file create that landed counts as done");
        assert_eq!(store.get(&k).await.expect("get").bytes.len(), 3 << 20);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_update_that_landed_is_refused_and_left_to_its_writer() {
        let store = RetryStore::new(LostAnswer::default(), quick());
        let k = key("a/m");
        let first = store
            .inner
            .inner
            .put(&k, Bytes::from_static(b"v1"), PutMode::Create)
            .await
            .expect("v1");
        let result = store
            .put(&k, Bytes::from_static(b"v2"), PutMode::Update(first))
            .await;
        assert!(
            matches!(result, Err(Error::Precondition { .. })),
            "{result:?}"
        );
        assert_eq!(&store.get(&k).await.expect("get").bytes[..], b"v2");
    }

    #[tokio::test]
    async fn listings_restart_only_before_their_first_item() {
        let faults = FaultStore::new(MemoryStore::new(), "op=list,nth=1").expect("spec");
        let store = RetryStore::new(faults, quick());
        store
            .put(&key("p/a"), Bytes::from_static(b"x"), PutMode::Create)
            .await
            .expect("put");
        assert_eq!(store.list_all("p/").await.expect("retried").len(), 1);
        assert!(store.list_all("q/").await.expect("empty").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_request_times_out() {
        #[derive(Debug)]
        struct Stalled;
        #[async_trait]
        impl ObjectStore for Stalled {
            async fn get(&self, _: &Key) -> Result<GetResult> {
                futures::future::pending().await
            }
            async fn get_range(&self, _: &Key, _: ByteRange) -> Result<Bytes> {
                futures::future::pending().await
            }
            async fn head(&self, _: &Key) -> Result<ObjectMeta> {
                futures::future::pending().await
            }
            async fn put(&self, _: &Key, _: Bytes, _: PutMode) -> Result<ETag> {
                futures::future::pending().await
            }
            async fn put_stream(&self, _: &Key, _: ByteStream, _: PutMode) -> Result<ETag> {
                futures::future::pending().await
            }
            async fn delete(&self, _: &Key) -> Result<()> {
                futures::future::pending().await
            }
            fn list(&self, _: &str) -> BoxStream<'_, Result<ObjectMeta>> {
                stream::pending().boxed()
            }
        }
        let store = RetryStore::new(
            Stalled,
            RetryPolicy {
                attempt_timeout: Some(Duration::from_secs(1)),
                attempts: 2,
                ..quick()
            },
        );
        let e = store.head(&key("a/b")).await.expect_err("timed out");
        assert!(e.is_retryable());
        assert_eq!(store.stats().counts().timeouts, 2);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "stowage-retry-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
