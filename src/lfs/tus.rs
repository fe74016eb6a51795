//! Resumable uploads by the tus protocol, as git-lfs's `tus` adapter speaks it
//! (`lfs.tustransfers=true`): `HEAD` tells how much of an object is stored, `PATCH`
//! sends the rest from there. Objects of any size, past the 5 GiB of one S3 `PUT`.
//!
//! ```text
//! <name>.git/lfs/uploads/<oid>/state        size, part size, offset, parts, hash state
//! <name>.git/lfs/uploads/<oid>/part-<n>-<w> part n, by writer w, where the store has no multipart
//! ```
//!
//! A body is cut into parts of a fixed size; each stored part (an S3 multipart part, or
//! an object of the store) advances the upload's state, which is written by
//! compare-and-swap: any instance resumes an upload where the last part stored ended,
//! and two writers of one upload cannot both advance it. Into an S3 multipart upload
//! another writer may already know of, a part is sent only under a reservation written
//! in the state first, since parts of the same number replace each other there. The
//! state carries the SHA-256 of the parts so far ([`super::hash`]), so the object is
//! hashed, part by part, with nothing read back; it becomes visible (completed with
//! `Create`) only if its hash is its oid. Bytes after the last whole part of an
//! interrupted body are sent again; a body that ends short, cleanly, is an error (git-lfs
//! takes any success for a whole upload).

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use stowage_store::{ByteStream, ETag, Error as StoreError, Key, ObjectStoreExt, PutMode};

use super::hash::{ResumableSha256, SavedSha256};
use super::{Lfs, LfsCounters, LfsError, Oid};
use crate::repo::RepoName;

/// The tus version spoken.
pub const TUS_VERSION: &str = "1.0.0";

/// The smallest part: S3 wants at least 5 MiB for every part but the last.
const MIN_PART: u64 = 16 << 20;

/// The most parts of one upload (S3 takes 10,000).
const MAX_PARTS: u64 = 9_000;

/// What is stored of an upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadState {
    size: u64,
    part_size: u64,
    /// Bytes stored so far: a whole number of parts.
    offset: u64,
    /// The store's multipart upload, if the store has them; else parts are objects.
    multipart: Option<String>,
    /// Number and tag of each stored part: the store's tag of a multipart part, else
    /// the name of the part's object.
    parts: Vec<(u32, String)>,
    /// The hash of the first `offset` bytes.
    sha256: SavedSha256,
    /// A part being sent into a multipart upload that was already shared, and since
    /// when (Unix seconds): no other writer sends a part meanwhile, for parts of the
    /// same number would replace each other at the store.
    #[serde(default)]
    reserved: Option<(u32, u64)>,
}

/// After this long, a reservation is taken for the leftover of a server that died.
const RESERVATION_LAPSES: u64 = 15 * 60;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How a `PATCH` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The object is stored (now, or it was already).
    Complete,
    /// The body ended before the object did; this much is stored.
    Partial(u64),
}

/// Counts a request in [`LfsCounters::resumable_running`] while it lives.
struct Running<'a>(&'a LfsCounters);

impl<'a> Running<'a> {
    fn new(counters: &'a LfsCounters) -> Self {
        LfsCounters::add(&counters.resumable_running, 1);
        Running(counters)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0
            .resumable_running
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn part_size(size: u64) -> u64 {
    let per_part = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    per_part.max(MIN_PART)
}

impl Lfs {
    fn upload_key(repo: &RepoName, oid: &Oid, rest: &str) -> Key {
        repo.key(&format!("lfs/uploads/{oid}/{rest}"))
    }

    async fn upload_state(
        &self,
        repo: &RepoName,
        oid: &Oid,
    ) -> Result<Option<(UploadState, ETag)>, LfsError> {
        let key = Lfs::upload_key(repo, oid, "state");
        let Some(found) = self.store.get_opt(&key).await? else {
            return Ok(None);
        };
        let state = serde_json::from_slice(&found.bytes).map_err(|e| {
            LfsError::Store(StoreError::Other {
                key: key.to_string(),
                source: format!("the upload state is not valid: {e}").into(),
            })
        })?;
        Ok(Some((state, found.meta.etag)))
    }

    /// How much of object `oid` (of `size` bytes) of `repo` is stored: all of it once
    /// the object is there, else what its upload has stored.
    pub async fn tus_offset(&self, repo: &RepoName, oid: &Oid, size: u64) -> Result<u64, LfsError> {
        match self.size(repo, oid).await {
            Ok(_) => return Ok(size),
            Err(LfsError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(match self.upload_state(repo, oid).await? {
            Some((state, _)) if state.size == size => state.offset,
            _ => 0,
        })
    }

    /// Appends `body`, which the client sent from `offset`, to the upload of `oid` of
    /// `size` bytes.
    pub async fn tus_append(
        &self,
        repo: &RepoName,
        oid: Oid,
        size: u64,
        offset: u64,
        mut body: ByteStream,
    ) -> Result<Appended, LfsError> {
        let max = self.config.max_object_bytes;
        if size > max {
            return Err(LfsError::TooLarge { oid, size, max });
        }
        let _running = Running::new(&self.counters);
        if self.size(repo, &oid).await.is_ok() {
            return Ok(Appended::Complete);
        }
        let found = match self.upload_state(repo, &oid).await? {
            // The oid fixes the size: an upload of another size is wrong, and one
            // starting over replaces it.
            Some((state, _)) if state.size != size && offset == 0 => {
                self.drop_upload(repo, &oid, &state).await;
                None
            }
            found => found,
        };
        let (mut state, mut etag) = match found {
            Some((state, _)) if state.size != size => {
                return Err(LfsError::Conflict(format!(
                    "an upload of {oid} as {} bytes is in progress, not {size}",
                    state.size
                )));
            }
            Some((state, _))
                if state
                    .reserved
                    .is_some_and(|(_, at)| now_secs().saturating_sub(at) < RESERVATION_LAPSES) =>
            {
                return Err(LfsError::Conflict(format!(
                    "another upload of {oid} is running"
                )));
            }
            Some((state, etag)) => (state, Some(etag)),
            None => (
                UploadState {
                    size,
                    part_size: part_size(size),
                    offset: 0,
                    multipart: None,
                    parts: Vec::new(),
                    sha256: ResumableSha256::default().save().expect("nothing hashed"),
                    reserved: None,
                },
                None,
            ),
        };
        if offset != state.offset {
            return Err(LfsError::Conflict(format!(
                "this upload continues at byte {}, not {offset}",
                state.offset
            )));
        }
        let mut hasher = ResumableSha256::resume(&state.sha256);
        let mut buf = BytesMut::new();
        loop {
            // The last part is stored once the body has brought all of it.
            let wanted = state.part_size.min(size - state.offset);
            if wanted > 0 && buf.len() as u64 >= wanted && state.offset + wanted < size {
                let part = buf.split_to(wanted as usize).freeze();
                hasher.update(&part);
                self.store_part(repo, &oid, &mut state, &mut etag, part)
                    .await?;
                state.offset += wanted;
                state.sha256 = hasher.save().expect("parts are whole blocks");
                state.reserved = None;
                let first = etag.is_none();
                match self.save_state(repo, &oid, &state, etag).await {
                    Ok(tag) => etag = Some(tag),
                    Err(e) => {
                        // Another writer advanced this upload first: what this one
                        // stored belongs to no state, and goes (into a multipart upload
                        // both share, parts are sent only under a reservation).
                        if first {
                            self.drop_parts(repo, &oid, &state).await;
                        } else if state.multipart.is_none()
                            && let Some((_, name)) = state.parts.last()
                        {
                            let _ = self.store.delete(&Lfs::upload_key(repo, &oid, name)).await;
                        }
                        return Err(e);
                    }
                }
                continue;
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    LfsCounters::add(&self.counters.bytes_received, chunk.len() as u64);
                    if state.offset + (buf.len() + chunk.len()) as u64 > size {
                        return Err(LfsError::Conflict(format!(
                            "more bytes than the {size} of {oid}"
                        )));
                    }
                    buf.extend_from_slice(&chunk);
                }
                // An interrupted body: what is stored stays, for the next request.
                Some(Err(e)) => return Err(LfsError::Interrupted(e.to_string())),
                None => break,
            }
        }
        if state.offset + buf.len() as u64 != size {
            return Ok(Appended::Partial(state.offset));
        }
        let last = buf.freeze();
        hasher.update(&last);
        if !last.is_empty() || state.parts.is_empty() {
            self.store_part(repo, &oid, &mut state, &mut etag, last)
                .await?;
        }
        let digest = hasher.finish();
        if digest != *oid.as_bytes() {
            self.drop_upload(repo, &oid, &state).await;
            return Err(LfsError::Mismatch {
                oid,
                actual: hex::encode(digest),
                size,
            });
        }
        self.complete(repo, &oid, &state).await?;
        Ok(Appended::Complete)
    }

    /// Stores the next part of `state` (saved with `etag`, if it was).
    async fn store_part(
        &self,
        repo: &RepoName,
        oid: &Oid,
        state: &mut UploadState,
        etag: &mut Option<ETag>,
        part: Bytes,
    ) -> Result<(), LfsError> {
        let number = state.parts.len() as u32 + 1;
        // A multipart upload other writers know of: reserve the part first.
        if self.direct.is_some() && state.multipart.is_some() && etag.is_some() {
            state.reserved = Some((number, now_secs()));
            *etag = Some(self.save_state(repo, oid, state, etag.take()).await?);
            if let Err(e) = self.send_part(repo, oid, state, number, part).await {
                state.reserved = None;
                if let Ok(tag) = self.save_state(repo, oid, state, etag.take()).await {
                    *etag = Some(tag);
                }
                return Err(e);
            }
            return Ok(());
        }
        self.send_part(repo, oid, state, number, part).await
    }

    async fn send_part(
        &self,
        repo: &RepoName,
        oid: &Oid,
        state: &mut UploadState,
        number: u32,
        part: Bytes,
    ) -> Result<(), LfsError> {
        let key = Lfs::object_key(repo, oid);
        let tag = match &self.direct {
            Some(direct) => {
                let upload = match &state.multipart {
                    Some(upload) => upload.clone(),
                    None => {
                        let upload = direct.access.start_parts(&key).await?;
                        state.multipart = Some(upload.clone());
                        upload
                    }
                };
                match direct.access.put_part(&key, &upload, number, part).await {
                    Ok(tag) => tag,
                    // The store dropped the multipart upload (a lifecycle rule that
                    // aborts old ones): the upload starts again.
                    Err(StoreError::NotFound { .. }) => {
                        self.drop_upload(repo, oid, state).await;
                        return Err(LfsError::Conflict(format!(
                            "the stored parts of {oid} are gone; upload it again from byte 0"
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                // Named by its writer too: a writer that loses a race for the upload
                // removes its part, never the winner's.
                let mut nonce = [0u8; 4];
                getrandom::fill(&mut nonce).map_err(|e| {
                    LfsError::Store(StoreError::Other {
                        key: key.to_string(),
                        source: format!("no random: {e}").into(),
                    })
                })?;
                let name = format!("part-{number:05}-{}", hex::encode(nonce));
                let part_key = Lfs::upload_key(repo, oid, &name);
                self.store.put(&part_key, part, PutMode::Create).await?;
                name
            }
        };
        state.parts.push((number, tag));
        Ok(())
    }

    /// Writes `state` over the one with `etag` (or as the first); a state changed by
    /// another writer meanwhile stops this one.
    async fn save_state(
        &self,
        repo: &RepoName,
        oid: &Oid,
        state: &UploadState,
        etag: Option<ETag>,
    ) -> Result<ETag, LfsError> {
        let key = Lfs::upload_key(repo, oid, "state");
        let body = Bytes::from(serde_json::to_vec(state).expect("a state serializes"));
        let mode = etag.map_or(PutMode::Create, PutMode::Update);
        match self.store.put(&key, body, mode).await {
            Ok(tag) => Ok(tag),
            Err(StoreError::Precondition { .. } | StoreError::AlreadyExists { .. }) => Err(
                LfsError::Conflict(format!("another upload of {oid} is running")),
            ),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes the upload's object visible and removes the upload.
    async fn complete(
        &self,
        repo: &RepoName,
        oid: &Oid,
        state: &UploadState,
    ) -> Result<(), LfsError> {
        let key = Lfs::object_key(repo, oid);
        match (&self.direct, &state.multipart) {
            (Some(direct), Some(upload)) => {
                match direct
                    .access
                    .complete_parts(&key, upload, &state.parts)
                    .await
                {
                    Ok(()) => {}
                    Err(StoreError::AlreadyExists { .. }) => {
                        let _ = direct.access.abort_parts(&key, upload).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            _ => {
                // Parts are objects: they are streamed into the object, hashed once more
                // on the way, and it appears only if they still hash to the oid.
                let store = self.store.clone();
                let keys: Vec<Key> = state
                    .parts
                    .iter()
                    .map(|(_, name)| Lfs::upload_key(repo, oid, name))
                    .collect();
                let parts = futures::stream::iter(keys)
                    .then(move |key| {
                        let store = store.clone();
                        async move {
                            store
                                .get(&key)
                                .await
                                .map(|found| found.bytes)
                                .map_err(std::io::Error::other)
                        }
                    })
                    .boxed();
                // Those bytes come from the store, not from a client: not counted.
                self.store_hashed(repo, *oid, Some(state.size), parts, false)
                    .await?;
            }
        }
        self.drop_upload(repo, oid, state).await;
        Ok(())
    }

    /// Removes what is left of an upload (its parts, its state).
    async fn drop_upload(&self, repo: &RepoName, oid: &Oid, state: &UploadState) {
        self.drop_parts(repo, oid, state).await;
        let _ = self
            .store
            .delete(&Lfs::upload_key(repo, oid, "state"))
            .await;
    }

    /// Removes the parts of `state`.
    async fn drop_parts(&self, repo: &RepoName, oid: &Oid, state: &UploadState) {
        let key = Lfs::object_key(repo, oid);
        if let (Some(direct), Some(upload)) = (&self.direct, &state.multipart)
            && let Err(e) = direct.access.abort_parts(&key, upload).await
        {
            // Completed ones cannot be aborted; others the store's lifecycle removes.
            tracing::debug!(%oid, error = %e, "aborting an upload's parts failed");
        }
        if state.multipart.is_none() {
            for (_, name) in &state.parts {
                let _ = self.store.delete(&Lfs::upload_key(repo, oid, name)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lfs::LfsConfig;
    use sha2::{Digest, Sha256};
    use std::sync::Arc;
    use stowage_store::MemoryStore;

    fn chunks(data: &[u8], size: usize) -> ByteStream {
        let chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(chunks).boxed()
    }

    #[test]
    fn parts_are_large_enough_and_few_enough() {
        assert_eq!(part_size(1), MIN_PART);
        assert_eq!(part_size(6 << 30), MIN_PART);
        let huge = 1u64 << 40;
        assert!(huge.div_ceil(part_size(huge)) <= MAX_PARTS);
        assert_eq!(part_size(huge) % (1 << 20), 0);
    }

    #[tokio::test]
    async fn an_interrupted_upload_resumes_where_its_last_part_ended() {
        let lfs = Lfs::new(Arc::new(MemoryStore::new()), LfsConfig::default());
        let repo = RepoName::new("data").expect("valid");
        let data: Vec<u8> = (0..(40u32 << 20) + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        let size = data.len() as u64;
        let oid = Oid::from_digest(Sha256::digest(&data).into());
        assert_eq!(lfs.tus_offset(&repo, &oid, size).await.expect("offset"), 0);

        // 20 MiB arrive, then the body ends: one 16 MiB part is stored.
        let first = lfs
            .tus_append(&repo, oid, size, 0, chunks(&data[..20 << 20], 1 << 20))
            .await
            .expect("appended");
        assert_eq!(first, Appended::Partial(16 << 20));
        assert_eq!(
            lfs.tus_offset(&repo, &oid, size).await.expect("offset"),
            16 << 20
        );
        let wrong = lfs
            .tus_append(&repo, oid, size, 0, chunks(&data, 1 << 20))
            .await;
        assert!(matches!(wrong, Err(LfsError::Conflict(_))), "{wrong:?}");
        assert!(lfs.size(&repo, &oid).await.is_err(), "not visible yet");

        // Resumed (as by another instance: only the store is shared).
        let again = Lfs::new(lfs.store().clone(), LfsConfig::default());
        let done = again
            .tus_append(
                &repo,
                oid,
                size,
                16 << 20,
                chunks(&data[16 << 20..], 3 << 20),
            )
            .await
            .expect("appended");
        assert_eq!(done, Appended::Complete);
        assert_eq!(again.size(&repo, &oid).await.expect("stored"), size);
        assert_eq!(
            again.tus_offset(&repo, &oid, size).await.expect("offset"),
            size
        );
        let left = again
            .store()
            .list_all(&format!("{}lfs/uploads/", repo.prefix()))
            .await
            .expect("listed");
        assert!(left.is_empty(), "the upload is cleaned up: {left:?}");
    }

    #[tokio::test]
    async fn bytes_that_do_not_hash_to_the_oid_never_appear() {
        let lfs = Lfs::new(Arc::new(MemoryStore::new()), LfsConfig::default());
        let repo = RepoName::new("data").expect("valid");
        let data = vec![7u8; (17 << 20) + 5];
        let oid = Oid::from_digest(Sha256::digest(b"something else").into());
        let refused = lfs
            .tus_append(&repo, oid, data.len() as u64, 0, chunks(&data, 1 << 20))
            .await;
        assert!(
            matches!(refused, Err(LfsError::Mismatch { .. })),
            "{refused:?}"
        );
        assert!(lfs.size(&repo, &oid).await.is_err());
        assert_eq!(
            lfs.tus_offset(&repo, &oid, data.len() as u64)
                .await
                .expect("offset"),
            0
        );
    }
}
