//! The batch API (`POST <repo>.git/info/lfs/objects/batch`): for each object a client
//! names, where to send or fetch it, or why not.
//!
//! Each object is looked up with one `head` (at most [`LOOKUPS`] at a time). An upload
//! of an object that is there already gets no actions: nothing to send. Errors of one
//! object (a malformed oid or size, an unknown hash algorithm, a missing object, one
//! too large) are answered in its place, as git-lfs expects; only a malformed request
//! as a whole fails the whole batch.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use stowage_store::direct::SignedRequest;

use super::{Lfs, LfsCounters, LfsError, Oid};
use crate::repo::RepoName;

/// Objects looked up at once.
const LOOKUPS: usize = 16;

/// A batch request, as git-lfs sends it.
#[derive(Debug, Deserialize)]
pub struct BatchRequest {
    pub operation: String,
    #[serde(default)]
    pub transfers: Vec<String>,
    #[serde(default, rename = "ref")]
    pub git_ref: Option<Value>,
    pub objects: Vec<ObjectSpec>,
    #[serde(default)]
    pub hash_algo: Option<String>,
}

/// One object of a request. Kept loose (any JSON) so that a malformed one is answered
/// in its place rather than failing the batch.
#[derive(Debug, Deserialize)]
pub struct ObjectSpec {
    #[serde(default)]
    pub oid: Value,
    #[serde(default)]
    pub size: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Upload,
    Download,
}

impl BatchRequest {
    /// The operation, or the whole request's error.
    pub fn operation(&self) -> Result<Operation, BatchError> {
        match self.operation.as_str() {
            "upload" => Ok(Operation::Upload),
            "download" => Ok(Operation::Download),
            other => Err(BatchError::Invalid(format!(
                "unknown operation {other:?}: use upload or download"
            ))),
        }
    }
}

/// The answer to a batch.
#[derive(Debug, Serialize)]
pub struct BatchResponse {
    pub transfer: &'static str,
    pub objects: Vec<ObjectAnswer>,
    pub hash_algo: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ObjectAnswer {
    pub oid: Value,
    pub size: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<BTreeMap<&'static str, Action>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ObjectError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub href: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, String>,
    pub expires_in: u64,
}

#[derive(Debug, Serialize)]
pub struct ObjectError {
    pub code: u16,
    pub message: String,
}

/// Why a whole batch is refused.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A malformed request (422).
    #[error("{0}")]
    Invalid(String),
    /// More objects than one batch may name (413).
    #[error("a batch may name at most {max} objects; this one names {count}")]
    TooMany { count: usize, max: usize },
    #[error(transparent)]
    Store(#[from] stowage_store::Error),
}

/// Where the links of an answer point, for transfers through this server: its URL as
/// the client reaches it, and headers the client must send with each transfer (its own
/// credentials, so that a transfer is authorized as the batch was).
#[derive(Debug, Clone, Default)]
pub struct Links {
    /// `scheme://host[:port]`, no trailing `/`.
    pub base: String,
    pub header: BTreeMap<String, String>,
}

impl Links {
    /// The URL of `rest` under `repo`'s LFS endpoint.
    pub fn href(&self, repo: &RepoName, rest: &str) -> String {
        format!("{}/{repo}.git/info/lfs/{rest}", self.base)
    }
}

fn object_error(oid: Value, size: Value, code: u16, message: impl Into<String>) -> ObjectAnswer {
    ObjectAnswer {
        oid,
        size,
        authenticated: None,
        actions: None,
        error: Some(ObjectError {
            code,
            message: message.into(),
        }),
    }
}

impl Lfs {
    /// Answers `request` (whose operation the caller was authorized for) for `repo`.
    pub async fn batch(
        &self,
        repo: &RepoName,
        request: BatchRequest,
        links: &Links,
    ) -> Result<BatchResponse, BatchError> {
        let operation = request.operation()?;
        if request.objects.len() > self.config.max_batch_objects {
            return Err(BatchError::TooMany {
                count: request.objects.len(),
                max: self.config.max_batch_objects,
            });
        }
        // Resumable uploads (tus) when the client offers them: its choice, made with
        // `lfs.tustransfers`.
        let tus = operation == Operation::Upload && request.transfers.iter().any(|t| t == "tus");
        if !tus && !request.transfers.is_empty() && !request.transfers.iter().any(|t| t == "basic")
        {
            return Err(BatchError::Invalid(format!(
                "none of the transfer adapters {:?} is offered here: use basic",
                request.transfers
            )));
        }
        let wrong_algo = request
            .hash_algo
            .as_deref()
            .filter(|a| *a != "sha256")
            .map(str::to_owned);
        let answers: Vec<Result<ObjectAnswer, BatchError>> =
            futures::stream::iter(request.objects.into_iter().map(|spec| {
                let wrong_algo = wrong_algo.clone();
                async move {
                    self.answer(repo, operation, tus, spec, wrong_algo.as_deref(), links)
                        .await
                }
            }))
            .buffered(LOOKUPS)
            .collect()
            .await;
        Ok(BatchResponse {
            transfer: if tus { "tus" } else { "basic" },
            objects: answers.into_iter().collect::<Result<_, _>>()?,
            hash_algo: "sha256",
        })
    }

    async fn answer(
        &self,
        repo: &RepoName,
        operation: Operation,
        tus: bool,
        spec: ObjectSpec,
        wrong_algo: Option<&str>,
        links: &Links,
    ) -> Result<ObjectAnswer, BatchError> {
        let ObjectSpec {
            oid: oid_value,
            size: size_value,
        } = spec;
        let Some(oid) = oid_value.as_str().and_then(Oid::parse) else {
            return Ok(object_error(
                oid_value,
                size_value,
                422,
                "invalid oid: an oid is 64 lowercase hex digits",
            ));
        };
        let Some(size) = size_value.as_u64() else {
            return Ok(object_error(
                oid_value,
                size_value,
                422,
                "invalid size: a size is a whole number of bytes, not negative",
            ));
        };
        if let Some(algo) = wrong_algo {
            return Ok(object_error(
                oid_value,
                size_value,
                409,
                format!("hash algorithm {algo:?} is not supported here: use sha256"),
            ));
        }
        let max = self.config.max_object_bytes;
        if operation == Operation::Upload && size > max {
            let message = LfsError::TooLarge { oid, size, max }.to_string();
            return Ok(object_error(oid_value, size_value, 422, message));
        }
        let stored = match self.size(repo, &oid).await {
            Ok(stored) => Some(stored),
            Err(LfsError::NotFound(_)) => None,
            Err(LfsError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(BatchError::Invalid(e.to_string())),
        };
        let lifetime = self.config.link_lifetime.as_secs();
        let action = |href: String| Action {
            href,
            header: links.header.clone(),
            expires_in: lifetime,
        };
        let signed = |request: SignedRequest| Action {
            href: request.url,
            header: request.headers.into_iter().collect(),
            expires_in: lifetime,
        };
        let key = Lfs::object_key(repo, &oid);
        let object_path = format!("objects/{oid}");
        let mut actions = BTreeMap::new();
        match (operation, stored) {
            (Operation::Download, None) => {
                return Ok(object_error(
                    oid_value,
                    size_value,
                    404,
                    format!("object {oid} not found"),
                ));
            }
            (Operation::Download, Some(actual)) if actual != size => {
                let message = LfsError::WrongSize {
                    oid,
                    claimed: size,
                    actual,
                }
                .to_string();
                return Ok(object_error(oid_value, size_value, 422, message));
            }
            (Operation::Download, Some(_)) => match &self.direct {
                Some(direct) if direct.downloads => {
                    let request = direct
                        .access
                        .presign_get(&key, self.config.link_lifetime)
                        .await?;
                    LfsCounters::add(&self.counters.direct_downloads, 1);
                    actions.insert("download", signed(request));
                }
                _ => {
                    actions.insert("download", action(links.href(repo, &object_path)));
                }
            },
            // There already: nothing to send.
            (Operation::Upload, Some(_)) => {}
            // Resumable, through this server, which hashes it part by part: completing
            // the upload is its verification, and the verify action (where it costs one
            // request, as for basic uploads through the server) checks it completed.
            (Operation::Upload, None) if tus => {
                let href = links.href(repo, &format!("tus/{oid}?size={size}"));
                actions.insert("upload", action(href));
                if !self.direct_uploads() {
                    actions.insert("verify", action(links.href(repo, "verify")));
                }
            }
            (Operation::Upload, None) => match &self.direct {
                Some(direct) if direct.uploads && size <= direct.access.max_put_size() => {
                    let request = direct
                        .access
                        .presign_put(&key, size, oid.as_bytes(), self.config.link_lifetime)
                        .await?;
                    LfsCounters::add(&self.counters.direct_uploads, 1);
                    actions.insert("upload", signed(request));
                    actions.insert("verify", action(links.href(repo, "verify")));
                }
                // Through this server, which hashes the upload as it stores it: the
                // upload is its own verification, and what the verify action checks of
                // it (size) costs one request.
                _ => {
                    actions.insert("upload", action(links.href(repo, &object_path)));
                    if !self.direct_uploads() {
                        actions.insert("verify", action(links.href(repo, "verify")));
                    }
                }
            },
        }
        Ok(ObjectAnswer {
            oid: oid_value,
            size: size_value,
            authenticated: Some(true),
            actions: (!actions.is_empty()).then_some(actions),
            error: None,
        })
    }

    /// The verify action: whether object `oid` of `repo` is stored, with `size` bytes.
    /// Where clients upload to the store directly, also that the store's checksum of
    /// it is `oid` (or, where the store recorded none, that its bytes hash to `oid`);
    /// an object that fails is deleted.
    pub async fn verify(&self, repo: &RepoName, oid: Oid, size: u64) -> Result<(), LfsError> {
        let key = Lfs::object_key(repo, &oid);
        let Some(direct) = self.direct.as_ref().filter(|d| d.uploads) else {
            let actual = self.size(repo, &oid).await?;
            if actual != size {
                return Err(LfsError::WrongSize {
                    oid,
                    claimed: size,
                    actual,
                });
            }
            return Ok(());
        };
        let stored = match direct.access.checksum(&key).await {
            Ok(stored) => stored,
            Err(stowage_store::Error::NotFound { .. }) => return Err(LfsError::NotFound(oid)),
            Err(e) => return Err(e.into()),
        };
        let actual = match stored.sha256 {
            Some(sha256) => sha256,
            None => self.hash_stored(repo, &oid, stored.size).await?,
        };
        if actual != *oid.as_bytes() {
            tracing::warn!(repo = %repo, %oid, "an LFS object does not match its oid; deleting it");
            self.store.delete(&key).await?;
            return Err(LfsError::Mismatch {
                oid,
                actual: hex::encode(actual),
                size: stored.size,
            });
        }
        if stored.size != size {
            return Err(LfsError::WrongSize {
                oid,
                claimed: size,
                actual: stored.size,
            });
        }
        Ok(())
    }

    /// The SHA-256 of the stored object, read through.
    async fn hash_stored(
        &self,
        repo: &RepoName,
        oid: &Oid,
        size: u64,
    ) -> Result<[u8; 32], LfsError> {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        if size > 0 {
            let key = Lfs::object_key(repo, oid);
            let mut stream = self
                .store
                .get_range_stream(&key, stowage_store::ByteRange::From(0))
                .await?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| stowage_store::Error::from_io(key.as_str(), e))?;
                hasher.update(&chunk);
            }
        }
        Ok(hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lfs::LfsConfig;
    use bytes::Bytes;
    use sha2::{Digest, Sha256};
    use std::sync::Arc;
    use stowage_store::MemoryStore;

    fn request(operation: &str, objects: Value) -> BatchRequest {
        serde_json::from_value(serde_json::json!({
            "operation": operation,
            "transfers": ["basic"],
            "objects": objects,
        }))
        .expect("a request")
    }

    #[tokio::test]
    async fn answers_each_object_in_its_place() {
        let lfs = Lfs::new(Arc::new(MemoryStore::new()), LfsConfig::default());
        let repo = RepoName::new("data").expect("valid");
        let content = b"model weights";
        let oid = Oid::from_digest(Sha256::digest(content).into());
        let links = Links {
            base: "http://example.test".into(),
            ..Default::default()
        };
        let missing = "ab".repeat(32);
        let up = lfs
            .batch(
                &repo,
                request(
                    "upload",
                    serde_json::json!([
                        {"oid": oid.to_string(), "size": content.len()},
                        {"oid": "../../etc/passwd", "size": 1},
                        {"oid": missing.to_uppercase(), "size": 1},
                        {"oid": missing, "size": -1},
                    ]),
                ),
                &links,
            )
            .await
            .expect("answered");
        let codes: Vec<Option<u16>> = up
            .objects
            .iter()
            .map(|o| o.error.as_ref().map(|e| e.code))
            .collect();
        assert_eq!(codes, [None, Some(422), Some(422), Some(422)]);
        let actions = up.objects[0].actions.as_ref().expect("actions");
        assert_eq!(
            actions["upload"].href,
            format!("http://example.test/data.git/info/lfs/objects/{oid}")
        );
        assert!(actions.contains_key("verify"));

        let body = futures::stream::once(async { Ok(Bytes::from_static(content)) }).boxed();
        lfs.receive(&repo, oid, None, body).await.expect("stored");
        let again = lfs
            .batch(
                &repo,
                request(
                    "upload",
                    serde_json::json!([{"oid": oid.to_string(), "size": content.len()}]),
                ),
                &links,
            )
            .await
            .expect("answered");
        assert!(again.objects[0].actions.is_none(), "nothing to send");
        let down = lfs
            .batch(
                &repo,
                request(
                    "download",
                    serde_json::json!([
                        {"oid": oid.to_string(), "size": content.len()},
                        {"oid": "2".repeat(64), "size": 5},
                    ]),
                ),
                &links,
            )
            .await
            .expect("answered");
        assert!(
            down.objects[0]
                .actions
                .as_ref()
                .expect("actions")
                .contains_key("download")
        );
        assert_eq!(down.objects[1].error.as_ref().map(|e| e.code), Some(404));

        let unknown = lfs
            .batch(&repo, request("delete", serde_json::json!([])), &links)
            .await;
        assert!(matches!(unknown, Err(BatchError::Invalid(_))));
        let mut wrong_algo = request(
            "download",
            serde_json::json!([{"oid": oid.to_string(), "size": content.len()}]),
        );
        wrong_algo.hash_algo = Some("sha512".into());
        let answer = lfs
            .batch(&repo, wrong_algo, &links)
            .await
            .expect("answered");
        assert_eq!(answer.objects[0].error.as_ref().map(|e| e.code), Some(409));
    }
}
