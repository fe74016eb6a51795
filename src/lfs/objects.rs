//! LFS objects through this server: uploads hashed as they stream into the store,
//! downloads streamed out of it (whole or a range).

use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use stowage_store::{ByteRange, ByteStream, Error as StoreError, ObjectStore, PutMode};

use super::{Lfs, LfsCounters, LfsError, Oid};
use crate::repo::RepoName;

impl Lfs {
    /// Stores `body` as object `oid` of `repo`. The bytes are hashed as they pass; the
    /// object becomes visible only if they hash to `oid` and are no more than the
    /// largest object accepted. `Ok(false)` when the object was there already (the
    /// body was the same bytes, by its hash).
    pub async fn receive(
        &self,
        repo: &RepoName,
        oid: Oid,
        length: Option<u64>,
        body: ByteStream,
    ) -> Result<bool, LfsError> {
        self.store_hashed(repo, oid, length, body, true).await
    }

    /// [`Lfs::receive`]; `from_client` says whether the bytes count as received.
    pub(super) async fn store_hashed(
        &self,
        repo: &RepoName,
        oid: Oid,
        length: Option<u64>,
        body: ByteStream,
        from_client: bool,
    ) -> Result<bool, LfsError> {
        let max = self.config.max_object_bytes;
        if let Some(size) = length.filter(|&n| n > max) {
            return Err(LfsError::TooLarge { oid, size, max });
        }
        let outcome = Arc::new(Mutex::new(None));
        let body = Verifying {
            inner: body,
            hasher: Some(Sha256::new()),
            size: 0,
            max,
            oid,
            outcome: outcome.clone(),
            counters: from_client.then(|| self.counters.clone()),
        };
        let key = Lfs::object_key(repo, &oid);
        let stored = self
            .store
            .put_stream(&key, body.boxed(), PutMode::Create)
            .await;
        if let Some(refusal) = outcome.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(refusal);
        }
        match stored {
            Ok(_) => Ok(true),
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The size of object `oid` of `repo`.
    pub async fn size(&self, repo: &RepoName, oid: &Oid) -> Result<u64, LfsError> {
        match self.store.head(&Lfs::object_key(repo, oid)).await {
            Ok(meta) => Ok(meta.size),
            Err(StoreError::NotFound { .. }) => Err(LfsError::NotFound(*oid)),
            Err(e) => Err(e.into()),
        }
    }

    /// `range` of object `oid` of `repo`, as a stream.
    pub async fn read(
        &self,
        repo: &RepoName,
        oid: &Oid,
        range: Range<u64>,
    ) -> Result<ByteStream, LfsError> {
        if range.is_empty() {
            return Ok(futures::stream::empty().boxed());
        }
        let key = Lfs::object_key(repo, oid);
        let stream = match self
            .store
            .get_range_stream(&key, ByteRange::from(range))
            .await
        {
            Ok(stream) => stream,
            Err(StoreError::NotFound { .. }) => return Err(LfsError::NotFound(*oid)),
            Err(e) => return Err(e.into()),
        };
        let counters = self.counters.clone();
        Ok(stream
            .inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    LfsCounters::add(&counters.bytes_sent, chunk.len() as u64);
                }
            })
            .boxed())
    }
}

/// A body that hashes what passes and, at its end, fails unless the bytes hash to the
/// oid; also fails as soon as it passes the largest size accepted. Why it failed is
/// left in `outcome` for the caller (the store only sees an I/O error).
struct Verifying {
    inner: ByteStream,
    /// `None` once the end was judged.
    hasher: Option<Sha256>,
    size: u64,
    max: u64,
    oid: Oid,
    outcome: Arc<Mutex<Option<LfsError>>>,
    /// Where the bytes are counted, if they come from a client.
    counters: Option<Arc<LfsCounters>>,
}

impl Verifying {
    fn refuse(&mut self, refusal: LfsError) -> Poll<Option<std::io::Result<Bytes>>> {
        let message = refusal.to_string();
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(refusal);
        self.hasher = None;
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            message,
        ))))
    }
}

impl Stream for Verifying {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.hasher.is_none() {
            return Poll::Ready(None);
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.size += chunk.len() as u64;
                if let Some(counters) = &this.counters {
                    LfsCounters::add(&counters.bytes_received, chunk.len() as u64);
                }
                if this.size > this.max {
                    let refusal = LfsError::TooLarge {
                        oid: this.oid,
                        size: this.size,
                        max: this.max,
                    };
                    return this.refuse(refusal);
                }
                if let Some(hasher) = this.hasher.as_mut() {
                    hasher.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                let digest: [u8; 32] = this
                    .hasher
                    .take()
                    .map(|h| h.finalize().into())
                    .unwrap_or_default();
                if digest == *this.oid.as_bytes() {
                    return Poll::Ready(None);
                }
                let refusal = LfsError::Mismatch {
                    oid: this.oid,
                    actual: hex::encode(digest),
                    size: this.size,
                };
                this.refuse(refusal)
            }
            Poll::Ready(Some(Err(e))) => {
                this.hasher = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lfs::LfsConfig;
    use stowage_store::{MemoryStore, ObjectStoreExt};

    fn lfs() -> Lfs {
        Lfs::new(Arc::new(MemoryStore::new()), LfsConfig::default())
    }

    fn oid_of(bytes: &[u8]) -> Oid {
        Oid::from_digest(Sha256::digest(bytes).into())
    }

    fn body(parts: &[&'static [u8]]) -> ByteStream {
        let chunks: Vec<std::io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        futures::stream::iter(chunks).boxed()
    }

    #[tokio::test]
    async fn matching_bytes_are_stored_and_others_never_appear() {
        let lfs = lfs();
        let repo = RepoName::new("data").expect("valid");
        let oid = oid_of(b"hello world");
        assert!(
            lfs.receive(&repo, oid, Some(11), body(&[b"hello ", b"world"]))
                .await
                .expect("stored")
        );
        assert!(
            !lfs.receive(&repo, oid, None, body(&[b"hello world"]))
                .await
                .expect("there")
        );

        let other = oid_of(b"other");
        let refused = lfs.receive(&repo, other, None, body(&[b"tampered"])).await;
        assert!(
            matches!(refused, Err(LfsError::Mismatch { .. })),
            "{refused:?}"
        );
        let key = Lfs::object_key(&repo, &other);
        assert!(lfs.store().get_opt(&key).await.expect("read").is_none());
        assert_eq!(lfs.size(&repo, &oid).await.expect("size"), 11);
        let mut read = lfs.read(&repo, &oid, 6..11).await.expect("read");
        assert_eq!(read.next().await.expect("a chunk").expect("ok"), "world");
    }

    #[tokio::test]
    async fn too_large_is_refused_while_it_streams() {
        let mut lfs = lfs();
        lfs.config.max_object_bytes = 4;
        let repo = RepoName::new("data").expect("valid");
        let oid = oid_of(b"12345");
        let refused = lfs.receive(&repo, oid, None, body(&[b"123", b"45"])).await;
        assert!(
            matches!(refused, Err(LfsError::TooLarge { .. })),
            "{refused:?}"
        );
        let declared = lfs.receive(&repo, oid, Some(5), body(&[b"12345"])).await;
        assert!(matches!(declared, Err(LfsError::TooLarge { .. })));
    }
}
