//! The storage contract of stowage.
//!
//! Everything stowage keeps (packs, pack indexes, manifests) lives behind the small,
//! byte-oriented [`ObjectStore`] trait defined here. Correctness of every ref update,
//! across any number of server instances, rests on its conditional writes:
//!
//! - [`PutMode::Create`] writes only if the key does not exist (S3 `If-None-Match: *`);
//! - [`PutMode::Update`] writes only if the object still has the given [`ETag`]
//!   (S3 `If-Match`): a compare-and-swap that leaves the stored object unchanged when
//!   it fails.
//!
//! Tour of the crate:
//! - [`key`]: [`Key`], a validated store key (no `..`, no empty segments, no NUL);
//! - [`error`]: the one [`Error`] enum callers match on to decide what to retry;
//! - [`memory`]: [`MemoryStore`], the in-memory backend for unit tests;
//! - [`counting`]: [`CountingStore`], a layer that counts requests by kind;
//! - [`latency`]: [`LatencyStore`], a layer that delays every request (benchmarks);
//! - [`faults`]: [`FaultStore`], a layer that fails chosen requests (tests);
//! - [`retry`]: [`RetryStore`], the one layer that retries transient faults;
//! - [`direct`]: [`direct::DirectAccess`], requests signed for a client to send to the
//!   store itself (S3 presigned URLs);
//! - [`contract`]: the test suite that defines a backend. Every
//!   backend (memory, filesystem, S3) runs it.
//!
//! The filesystem and S3 backends live in their own crates (`stowage-fs`, `stowage-s3`).

pub mod counting;
pub mod direct;
pub mod error;
pub mod faults;
pub mod key;
pub mod latency;
pub mod memory;
pub mod retry;

pub mod contract;

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use sha2::{Digest, Sha256};

pub use counting::{CountingStore, StoreCounts};
pub use error::{Error, Result};
pub use faults::FaultStore;
pub use key::Key;
pub use latency::LatencyStore;
pub use memory::MemoryStore;
pub use retry::{RetryPolicy, RetryStore};

/// An opaque version tag of a stored object, as returned by a put, `get` or `head`.
///
/// Two reads of an unchanged object return equal tags; any write that changes the
/// object changes its tag. Backends choose the representation (S3 keeps its quotes).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    pub fn new(tag: impl Into<String>) -> Self {
        ETag(tag.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag the memory and filesystem backends give to an object with this content:
    /// a SHA-256 prefix, so equal content means equal tag in every process.
    pub fn of_content(content: &[u8]) -> Self {
        let mut hasher = ContentHasher::default();
        hasher.update(content);
        hasher.finish()
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ETag({})", self.0)
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Computes [`ETag::of_content`] incrementally, for bodies that arrive as a stream.
#[derive(Default)]
pub struct ContentHasher(Sha256);

impl fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentHasher")
    }
}

impl ContentHasher {
    pub fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }

    pub fn finish(self) -> ETag {
        let digest = self.0.finalize();
        ETag(hex::encode(&digest[..16]))
    }
}

/// How a put treats an existing object at the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Write only if nothing is stored at the key; otherwise fail with
    /// [`Error::AlreadyExists`].
    Create,
    /// Compare-and-swap: write only if the stored object still has this tag. Fails with
    /// [`Error::Precondition`] if it changed or is gone; the stored object is then
    /// unchanged.
    Update(ETag),
}

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: Key,
    /// Size in bytes.
    pub size: u64,
    pub etag: ETag,
    /// When the object was last written, as the store records it (`None` if the store
    /// does not say). Garbage collection keeps anything written within its grace period.
    pub modified: Option<std::time::SystemTime>,
}

/// An object's content together with its metadata, read in one request.
#[derive(Debug, Clone)]
pub struct GetResult {
    pub bytes: Bytes,
    pub meta: ObjectMeta,
}

/// A byte range of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `start..end`, end exclusive. An end past the object's size is clamped to it.
    Bounded { start: u64, end: u64 },
    /// From `start` to the end of the object.
    From(u64),
}

impl From<Range<u64>> for ByteRange {
    fn from(range: Range<u64>) -> Self {
        ByteRange::Bounded {
            start: range.start,
            end: range.end,
        }
    }
}

impl ByteRange {
    /// The `start..end` this range selects in an object of `size` bytes, or an
    /// [`Error::InvalidRange`] if it selects nothing: it starts at or past the end (so
    /// every range of an empty object is invalid, as in S3), or it is an empty bounded
    /// range.
    pub fn resolve(self, key: &Key, size: u64) -> Result<Range<u64>> {
        let (start, end) = match self {
            ByteRange::Bounded { start, end } if start < end => (start, end.min(size)),
            ByteRange::Bounded { start, .. } => (start, start),
            ByteRange::From(start) => (start, size),
        };
        if start >= end {
            return Err(Error::InvalidRange {
                key: key.to_string(),
                range: self,
                size: Some(size),
            });
        }
        Ok(start..end)
    }
}

/// A body for [`ObjectStore::put_stream`]: chunks as they arrive.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// The file at `path` as a [`ByteStream`] of 1 MiB chunks.
pub async fn file_stream(key: &Key, path: &Path) -> Result<ByteStream> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::from_io(key.as_str(), e))?;
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    // Fused: a reader may ask again after the end.
    Ok(chunks.fuse().boxed())
}

/// The storage contract. See the crate documentation for the guarantees; the
/// `contract` module is their executable definition.
///
/// Implementations must be safe to use from many tasks, processes and machines at once:
/// conditional puts are atomic with respect to every other write to the same key.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug + 'static {
    /// The whole object with its size and tag.
    async fn get(&self, key: &Key) -> Result<GetResult>;

    /// Part of an object. Fails with [`Error::InvalidRange`] when the range starts past
    /// the end.
    async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes>;

    /// Part of an object as a stream of chunks, read with one request where the backend
    /// can, so that large objects need not be held whole. Range errors as
    /// [`ObjectStore::get_range`]. The default reads the range whole.
    async fn get_range_stream(&self, key: &Key, range: ByteRange) -> Result<ByteStream> {
        let bytes = self.get_range(key, range).await?;
        Ok(futures::stream::once(async move { Ok(bytes) }).boxed())
    }

    /// Size and tag without the content.
    async fn head(&self, key: &Key) -> Result<ObjectMeta>;

    /// Stores `body` at `key` as `mode` allows; returns the new tag.
    async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag>;

    /// Stores a body that may be too large to hold in memory. `mode` is
    /// [`PutMode::Overwrite`] or [`PutMode::Create`]; an [`PutMode::Update`] is refused
    /// with [`Error::Unsupported`], since compare-and-swap is for small mutable objects.
    /// Nothing is visible at `key` until the whole body has been stored.
    async fn put_stream(&self, key: &Key, body: ByteStream, mode: PutMode) -> Result<ETag>;

    /// Stores the file at `path` as [`ObjectStore::put_stream`] does. Unlike a stream, a
    /// file can be read again, so layers that retry can retry this. Layers that wrap a
    /// store must pass it on to the store they wrap.
    async fn put_file(&self, key: &Key, path: &Path, mode: PutMode) -> Result<ETag> {
        let body = file_stream(key, path).await?;
        self.put_stream(key, body, mode).await
    }

    /// Removes the object. Deleting a key that does not exist succeeds.
    async fn delete(&self, key: &Key) -> Result<()>;

    /// Every object whose key starts with `prefix` (a plain string prefix, as in S3),
    /// streamed across as many pages as the backend needs. Order is unspecified.
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>>;
}

/// Conveniences built only on [`ObjectStore`]'s required methods, so that no backend
/// can get them subtly wrong.
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// The object, or `None` if nothing is stored at `key`.
    async fn get_opt(&self, key: &Key) -> Result<Option<GetResult>> {
        match self.get(key).await {
            Ok(found) => Ok(Some(found)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every key under `prefix`, collected.
    async fn list_all(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        use futures::TryStreamExt;
        self.list(prefix).try_collect().await
    }
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}

#[async_trait]
impl<T: ObjectStore + ?Sized> ObjectStore for std::sync::Arc<T> {
    async fn get(&self, key: &Key) -> Result<GetResult> {
        (**self).get(key).await
    }
    async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes> {
        (**self).get_range(key, range).await
    }
    async fn get_range_stream(&self, key: &Key, range: ByteRange) -> Result<ByteStream> {
        (**self).get_range_stream(key, range).await
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        (**self).head(key).await
    }
    async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag> {
        (**self).put(key, body, mode).await
    }
    async fn put_stream(&self, key: &Key, body: ByteStream, mode: PutMode) -> Result<ETag> {
        (**self).put_stream(key, body, mode).await
    }
    async fn put_file(&self, key: &Key, path: &Path, mode: PutMode) -> Result<ETag> {
        (**self).put_file(key, path, mode).await
    }
    async fn delete(&self, key: &Key) -> Result<()> {
        (**self).delete(key).await
    }
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        (**self).list(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new("a/b").expect("valid key")
    }

    #[test]
    fn ranges_resolve_like_s3() {
        let k = key();
        assert_eq!(ByteRange::from(2..5).resolve(&k, 10).ok(), Some(2..5));
        assert_eq!(ByteRange::from(2..50).resolve(&k, 10).ok(), Some(2..10));
        assert_eq!(ByteRange::From(7).resolve(&k, 10).ok(), Some(7..10));
        assert!(ByteRange::From(0).resolve(&k, 0).is_err());
        assert!(ByteRange::from(3..3).resolve(&k, 10).is_err());
        assert!(ByteRange::From(10).resolve(&k, 10).is_err());
        assert!(ByteRange::from(11..12).resolve(&k, 10).is_err());
        assert!(
            ByteRange::Bounded { start: 5, end: 3 }
                .resolve(&k, 10)
                .is_err()
        );
    }

    #[test]
    fn content_tags_depend_on_content_only() {
        assert_eq!(ETag::of_content(b"x"), ETag::of_content(b"x"));
        assert_ne!(ETag::of_content(b"x"), ETag::of_content(b"y"));
        let mut h = ContentHasher::default();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finish(), ETag::of_content(b"hello world"));
    }
}
