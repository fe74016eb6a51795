//! Transfers a client makes with the store itself, on a request this process signed:
//! large objects then never pass through the server. Only some stores offer it (S3);
//! the layers of [`crate::ObjectStore`] are not involved.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{Key, Result};

/// A request a client may send as it is, until it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRequest {
    pub method: &'static str,
    pub url: String,
    /// Headers the client must send with exactly these values (they are signed).
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL carries a signature: only where it points.
        let target = self.url.split('?').next().unwrap_or("");
        write!(f, "SignedRequest({} {target})", self.method)
    }
}

/// What a store keeps of an object's content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChecksum {
    pub size: u64,
    /// The SHA-256 of the whole object, if the store recorded one (it does for an
    /// object written by a single upload that declared it).
    pub sha256: Option<[u8; 32]>,
}

/// Signing requests that go to the store directly.
#[async_trait]
pub trait DirectAccess: Send + Sync + fmt::Debug + 'static {
    /// A `PUT` of an object of exactly `size` bytes whose SHA-256 is `sha256` to `key`:
    /// length and checksum are signed headers, so the store refuses any other bytes.
    async fn presign_put(
        &self,
        key: &Key,
        size: u64,
        sha256: &[u8; 32],
        lifetime: Duration,
    ) -> Result<SignedRequest>;

    /// A `GET` of the object at `key`.
    async fn presign_get(&self, key: &Key, lifetime: Duration) -> Result<SignedRequest>;

    /// The object's size and the checksum the store recorded for it.
    async fn checksum(&self, key: &Key) -> Result<StoredChecksum>;

    /// Whether the store refuses a body whose declared SHA-256 is wrong: a test write
    /// under `scratch`, removed afterwards. Direct uploads are safe only where it does.
    async fn refuses_wrong_checksums(&self, scratch: &Key) -> Result<bool>;

    /// The largest object one signed `PUT` may carry.
    fn max_put_size(&self) -> u64;

    /// Starts an object written in parts that can be added over many requests, from
    /// any process (an S3 multipart upload); returns the upload's id.
    async fn start_parts(&self, key: &Key) -> Result<String>;

    /// Stores part `number` (from 1; every part but the last at least 5 MiB) of
    /// `upload`; returns the part's tag.
    async fn put_part(&self, key: &Key, upload: &str, number: u32, body: Bytes) -> Result<String>;

    /// Makes the object of `parts` visible at `key`, only if nothing is there
    /// ([`crate::Error::AlreadyExists`] otherwise; the upload is then left to abort).
    async fn complete_parts(&self, key: &Key, upload: &str, parts: &[(u32, String)]) -> Result<()>;

    /// Drops `upload` and its parts.
    async fn abort_parts(&self, key: &Key, upload: &str) -> Result<()>;
}
