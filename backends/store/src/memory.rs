//! An in-memory [`ObjectStore`] for unit tests.
//!
//! Invariant: every operation takes one lock over the whole map, so each is atomic and
//! the conditional puts behave exactly as the contract says.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};

use crate::{
    ByteRange, ByteStream, ETag, Error, GetResult, Key, ObjectMeta, ObjectStore, PutMode, Result,
};

/// Objects in a map; clones share the same map.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<Key, Stored>>>,
}

#[derive(Debug, Clone)]
struct Stored {
    bytes: Bytes,
    etag: ETag,
    modified: std::time::SystemTime,
}

impl Stored {
    fn meta(&self, key: &Key) -> ObjectMeta {
        ObjectMeta {
            key: key.clone(),
            size: self.bytes.len() as u64,
            etag: self.etag.clone(),
            modified: Some(self.modified),
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<Key, Stored>> {
        // A panic while holding the lock cannot leave the map half-updated (every
        // mutation is a single insert or remove), so a poisoned lock is still usable.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stored(&self, key: &Key) -> Result<Stored> {
        self.objects()
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                key: key.to_string(),
            })
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn get(&self, key: &Key) -> Result<GetResult> {
        let stored = self.stored(key)?;
        Ok(GetResult {
            meta: stored.meta(key),
            bytes: stored.bytes,
        })
    }

    async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes> {
        let stored = self.stored(key)?;
        let range = range.resolve(key, stored.bytes.len() as u64)?;
        Ok(stored.bytes.slice(range.start as usize..range.end as usize))
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        Ok(self.stored(key)?.meta(key))
    }

    async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag> {
        let etag = ETag::of_content(&body);
        let mut objects = self.objects();
        match (&mode, objects.get(key)) {
            (PutMode::Create, Some(_)) => {
                return Err(Error::AlreadyExists {
                    key: key.to_string(),
                });
            }
            (PutMode::Update(expected), Some(current)) if current.etag != *expected => {
                return Err(Error::Precondition {
                    key: key.to_string(),
                });
            }
            (PutMode::Update(_), None) => {
                return Err(Error::Precondition {
                    key: key.to_string(),
                });
            }
            _ => {}
        }
        objects.insert(
            key.clone(),
            Stored {
                bytes: body,
                etag: etag.clone(),
                modified: std::time::SystemTime::now(),
            },
        );
        Ok(etag)
    }

    async fn put_stream(&self, key: &Key, mut body: ByteStream, mode: PutMode) -> Result<ETag> {
        if matches!(mode, PutMode::Update(_)) {
            return Err(Error::Unsupported {
                operation: "streaming compare-and-swap",
            });
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::from_io(key.as_str(), e))?;
            buf.extend_from_slice(&chunk);
        }
        self.put(key, buf.freeze(), mode).await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.objects().remove(key);
        Ok(())
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        let found: Vec<Result<ObjectMeta>> = self
            .objects()
            .iter()
            .filter(|(key, _)| key.as_str().starts_with(prefix))
            .map(|(key, stored)| Ok(stored.meta(key)))
            .collect();
        stream::iter(found).boxed()
    }
}
