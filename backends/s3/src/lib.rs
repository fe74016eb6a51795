//! The S3 backend of the stowage [`ObjectStore`], for AWS S3 and S3-compatible services.
//!
//! Conditional writes map to S3's own: [`PutMode::Create`] sends `If-None-Match: *` and
//! [`PutMode::Update`] sends `If-Match: <etag>`, so the service, not this process,
//! decides who wins a race. Large bodies are uploaded in parts of [`PART_SIZE`] bytes
//! (never more than one part in memory); a multipart `Create` sends `If-None-Match: *`
//! on the completing request, so nothing appears at the key unless it was free.
//!
//! Configuration comes from the standard AWS chain (environment variables, including
//! `AWS_ENDPOINT_URL`, shared config and credentials files, instance and container
//! credentials); see [`S3Store::from_url`].

mod error;
mod presign;
pub mod testing;

use std::fmt;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use stowage_store::{
    ByteRange, ByteStream, ETag, Error, GetResult, Key, ObjectMeta, ObjectStore, PutMode, Result,
};

use error::{Intent, map_sdk_error};

/// Size of each part of a multipart upload, and the body size from which
/// [`ObjectStore::put_stream`] uses one. S3 requires at least 5 MiB per part.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Where a store lives: a bucket and an optional key prefix, as in `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    /// Prepended to every key, with a `/` after it; empty for the bucket's root.
    pub prefix: String,
}

impl Location {
    /// Parses `s3://bucket` or `s3://bucket/some/prefix`.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| ConfigError::Url(url.to_owned(), "it does not start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ConfigError::Url(url.to_owned(), "the bucket name is empty"));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() && Key::new(prefix).is_err() {
            return Err(ConfigError::Url(
                url.to_owned(),
                "the key prefix is not a valid key",
            ));
        }
        Ok(Location {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

/// Why a store could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid S3 URL {0:?}: {1}")]
    Url(String, &'static str),
}

/// An object store in an S3 bucket, under an optional prefix. Clones share the client.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    location: Location,
    endpoint: Endpoint,
}

/// Where the bucket is reached and with which credentials, for presigned requests.
#[derive(Clone, Default)]
struct Endpoint {
    /// A custom endpoint (`AWS_ENDPOINT_URL`), or `None` for AWS.
    url: Option<String>,
    path_style: bool,
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Whether requests to `endpoint` must use path-style addressing (`host/bucket/key`):
/// when `AWS_S3_FORCE_PATH_STYLE=true`, or when the endpoint's host is an IP address
/// or `localhost`, where virtual-hosted bucket names cannot resolve.
pub fn wants_path_style(endpoint: Option<&str>, force_env: Option<&str>) -> bool {
    if force_env.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
        return true;
    }
    let Some(endpoint) = endpoint else {
        return false;
    };
    let after_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = after_scheme.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok()
}

impl S3Store {
    /// A store for `s3://bucket[/prefix]`, configured by the standard AWS chain. The
    /// region defaults to `us-east-1` when none is configured.
    pub async fn from_url(url: &str) -> Result<Self, ConfigError> {
        let location = Location::parse(url)?;
        let region = aws_config::meta::region::RegionProviderChain::default_provider()
            .or_else(aws_config::Region::new("us-east-1"));
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(region)
            .load()
            .await;
        let path_style = wants_path_style(
            shared.endpoint_url(),
            std::env::var("AWS_S3_FORCE_PATH_STYLE").ok().as_deref(),
        );
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(path_style)
            // stowage's retry layer retries (see `stowage_store::retry`): the SDK
            // would multiply its attempts. Only the parts of a multipart upload, which
            // that layer cannot send again, keep the SDK's retries (see
            // `upload_parts`).
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .timeout_config(timeouts())
            .build();
        let mut store = Self::new(Client::from_conf(config), location);
        store.endpoint = Endpoint {
            url: shared.endpoint_url().map(str::to_owned),
            path_style,
            credentials: shared.credentials_provider(),
        };
        Ok(store)
    }

    /// A store over an already configured client.
    pub fn new(client: Client, location: Location) -> Self {
        S3Store {
            client,
            location,
            endpoint: Endpoint::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    fn object_key(&self, key: &Key) -> String {
        if self.location.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{}", self.location.prefix, key)
        }
    }

    fn list_prefix(&self, prefix: &str) -> String {
        if self.location.prefix.is_empty() {
            prefix.to_owned()
        } else {
            format!("{}/{}", self.location.prefix, prefix)
        }
    }

    /// The store key of an S3 object key, or `None` for objects outside the store's
    /// namespace (not under the prefix, or not valid keys).
    fn store_key(&self, object_key: &str) -> Option<Key> {
        let rel = if self.location.prefix.is_empty() {
            object_key
        } else {
            object_key
                .strip_prefix(self.location.prefix.as_str())?
                .strip_prefix('/')?
        };
        Key::new(rel).ok()
    }

    async fn put_once(&self, key: &Key, body: Bytes, mode: &PutMode) -> Result<ETag> {
        let request = self
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(self.object_key(key))
            .body(S3Body::from(body));
        let (request, intent) = match mode {
            PutMode::Overwrite => (request, Intent::Write),
            PutMode::Create => (request.if_none_match("*"), Intent::Create),
            PutMode::Update(etag) => (request.if_match(etag.as_str()), Intent::Update),
        };
        let output = request
            .send()
            .await
            .map_err(|e| map_sdk_error(key, intent, e))?;
        etag_from(key, output.e_tag())
    }

    /// Uploads `first` and the rest of `body` as a multipart upload; aborts it on any
    /// failure so no parts are left behind.
    async fn put_multipart(
        &self,
        key: &Key,
        first: Bytes,
        body: ByteStream,
        mode: &PutMode,
    ) -> Result<ETag> {
        let upload = self.start_upload(key).await?;
        let result = self.upload_parts(key, &upload, first, body, mode).await;
        if result.is_err()
            && let Err(e) = self.abort_upload(key, &upload).await
        {
            tracing::warn!(key = %key, error = %e, "could not abort a failed multipart upload");
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &Key,
        upload: &str,
        first: Bytes,
        mut body: ByteStream,
        mode: &PutMode,
    ) -> Result<ETag> {
        let mut parts = Vec::new();
        let mut pending = Some(first);
        let mut buf = BytesMut::with_capacity(PART_SIZE);
        loop {
            let part = match pending.take() {
                Some(part) => part,
                None => match next_part(key, &mut body, &mut buf).await? {
                    Some(part) => part,
                    None => break,
                },
            };
            let number = parts.len() as u32 + 1;
            let tag = self.send_part(key, upload, number, part).await?;
            parts.push((number, tag));
        }
        self.complete_upload(key, upload, &parts, mode).await
    }

    /// Starts a multipart upload at `key`; its upload id.
    pub(crate) async fn start_upload(&self, key: &Key) -> Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.location.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|e| map_sdk_error(key, Intent::Write, e))?;
        created
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| malformed(key, "CreateMultipartUpload returned no upload id"))
    }

    /// Sends part `number` of multipart upload `upload`; the part's tag. The SDK retries
    /// this request itself: its body is in memory.
    pub(crate) async fn send_part(
        &self,
        key: &Key,
        upload: &str,
        number: u32,
        body: Bytes,
    ) -> Result<String> {
        let output = self
            .client
            .upload_part()
            .bucket(&self.location.bucket)
            .key(self.object_key(key))
            .upload_id(upload)
            .part_number(number as i32)
            .body(S3Body::from(body))
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default()
                    .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard()),
            )
            .send()
            .await
            .map_err(|e| map_sdk_error(key, Intent::Write, e))?;
        output
            .e_tag()
            .map(str::to_owned)
            .ok_or_else(|| malformed(key, "UploadPart returned no ETag"))
    }

    /// Completes multipart upload `upload` from `parts` (number and tag); with
    /// [`PutMode::Create`], only if nothing is at the key.
    pub(crate) async fn complete_upload(
        &self,
        key: &Key,
        upload: &str,
        parts: &[(u32, String)],
        mode: &PutMode,
    ) -> Result<ETag> {
        let parts = parts
            .iter()
            .map(|(number, tag)| {
                CompletedPart::builder()
                    .part_number(*number as i32)
                    .e_tag(tag)
                    .build()
            })
            .collect();
        let request = self
            .client
            .complete_multipart_upload()
            .bucket(&self.location.bucket)
            .key(self.object_key(key))
            .upload_id(upload)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        let (request, intent) = match mode {
            PutMode::Create => (request.if_none_match("*"), Intent::Create),
            _ => (request, Intent::Write),
        };
        let output = request
            .send()
            .await
            .map_err(|e| map_sdk_error(key, intent, e))?;
        etag_from(key, output.e_tag())
    }

    /// Abandons multipart upload `upload` and its parts.
    pub(crate) async fn abort_upload(&self, key: &Key, upload: &str) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.location.bucket)
            .key(self.object_key(key))
            .upload_id(upload)
            .send()
            .await
            .map_err(|e| map_sdk_error(key, Intent::Write, e))?;
        Ok(())
    }
}

/// The time limits of every request: to connect, between two reads of an answer (a
/// stalled body), and for one attempt of a request. `STOWAGE_S3_READ_TIMEOUT_SECS` and
/// `STOWAGE_S3_ATTEMPT_TIMEOUT_SECS` change the last two (defaults 30 and 120).
pub(crate) fn timeouts() -> aws_sdk_s3::config::timeout::TimeoutConfig {
    let secs = |name: &str, default: u64| {
        std::time::Duration::from_secs(
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default),
        )
    };
    aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_millis(3100))
        .read_timeout(secs("STOWAGE_S3_READ_TIMEOUT_SECS", 30))
        .operation_attempt_timeout(secs("STOWAGE_S3_ATTEMPT_TIMEOUT_SECS", 120))
        .build()
}

/// Fills `buf` from `body` up to [`PART_SIZE`]; returns the part, or `None` at the end.
async fn next_part(key: &Key, body: &mut ByteStream, buf: &mut BytesMut) -> Result<Option<Bytes>> {
    while buf.len() < PART_SIZE {
        match body.next().await {
            Some(chunk) => {
                buf.extend_from_slice(&chunk.map_err(|e| Error::from_io(key.as_str(), e))?)
            }
            None => break,
        }
    }
    if buf.is_empty() {
        return Ok(None);
    }
    let take = buf.len().min(PART_SIZE);
    Ok(Some(buf.split_to(take).freeze()))
}

fn malformed(key: &Key, what: &'static str) -> Error {
    Error::Other {
        key: key.to_string(),
        source: what.into(),
    }
}

fn etag_from(key: &Key, etag: Option<&str>) -> Result<ETag> {
    etag.map(ETag::new)
        .ok_or_else(|| malformed(key, "the response carries no ETag"))
}

fn range_header(range: ByteRange) -> String {
    match range {
        ByteRange::Bounded { start, end } => format!("bytes={start}-{}", end.saturating_sub(1)),
        ByteRange::From(start) => format!("bytes={start}-"),
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, key: &Key) -> Result<GetResult> {
        let output = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|e| map_sdk_error(key, Intent::Read, e))?;
        let etag = etag_from(key, output.e_tag())?;
        let modified = system_time(output.last_modified());
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|e| Error::Transient {
                key: key.to_string(),
                source: Box::new(e),
            })?
            .into_bytes();
        Ok(GetResult {
            meta: ObjectMeta {
                key: key.clone(),
                size: bytes.len() as u64,
                etag,
                modified,
            },
            bytes,
        })
    }

    async fn get_range(&self, key: &Key, range: ByteRange) -> Result<Bytes> {
        let mut stream = self.get_range_stream(key, range).await?;
        let mut bytes = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| Error::Transient {
                key: key.to_string(),
                source: Box::new(e),
            })?);
        }
        Ok(bytes.freeze())
    }

    async fn get_range_stream(&self, key: &Key, range: ByteRange) -> Result<ByteStream> {
        // S3 ignores a Range header it cannot parse and sends the whole object: refuse
        // empty ranges here rather than send one.
        if let ByteRange::Bounded { start, end } = range
            && start >= end
        {
            return Err(Error::InvalidRange {
                key: key.to_string(),
                range,
                size: None,
            });
        }
        let output = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(self.object_key(key))
            .range(range_header(range))
            .send()
            .await
            .map_err(|e| map_sdk_error(key, Intent::Range(range), e))?;
        let body = stream::unfold(output.body, |mut body| async move {
            match body.next().await? {
                Ok(chunk) => Some((Ok(chunk), body)),
                Err(e) => Some((Err(std::io::Error::other(e)), body)),
            }
        });
        Ok(body.boxed())
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let output = self
            .client
            .head_object()
            .bucket(&self.location.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|e| map_sdk_error(key, Intent::Read, e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: output.content_length().unwrap_or(0).max(0) as u64,
            etag: etag_from(key, output.e_tag())?,
            modified: system_time(output.last_modified()),
        })
    }

    async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> Result<ETag> {
        self.put_once(key, body, &mode).await
    }

    async fn put_stream(&self, key: &Key, body: ByteStream, mode: PutMode) -> Result<ETag> {
        if matches!(mode, PutMode::Update(_)) {
            return Err(Error::Unsupported {
                operation: "streaming compare-and-swap",
            });
        }
        // Parts are read until the body ends, and once more after that.
        let mut body = body.fuse().boxed();
        let mut buf = BytesMut::with_capacity(PART_SIZE);
        let first = next_part(key, &mut body, &mut buf)
            .await?
            .unwrap_or_default();
        if first.len() < PART_SIZE {
            // The whole body fits in one part: one plain request.
            return self.put_once(key, first, &mode).await;
        }
        // Carry what was read past the first part into the rest of the stream.
        let rest: ByteStream = if buf.is_empty() {
            body
        } else {
            stream::once(async move { Ok(buf.freeze()) })
                .chain(body)
                .boxed()
        };
        self.put_multipart(key, first, rest, &mode).await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.location.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|e| map_sdk_error(key, Intent::Write, e))?;
        Ok(())
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta>> {
        let full_prefix = self.list_prefix(prefix);
        let pages = self
            .client
            .list_objects_v2()
            .bucket(&self.location.bucket)
            .prefix(full_prefix.clone())
            .into_paginator()
            .send();
        let prefix_name = prefix.to_owned();
        stream::unfold(pages, |mut pages| async move {
            let page = pages.next().await?;
            Some((page, pages))
        })
        .flat_map(move |page| {
            let items: Vec<Result<ObjectMeta>> = match page {
                Err(e) => {
                    let key = Key::new(prefix_name.clone())
                        .unwrap_or_else(|_| Key::new("(list)").expect("a valid key"));
                    vec![Err(map_sdk_error(&key, Intent::Read, e))]
                }
                Ok(page) => page
                    .contents()
                    .iter()
                    .filter_map(|object| {
                        let key = self.store_key(object.key()?)?;
                        Some(Ok(ObjectMeta {
                            key,
                            size: object.size().unwrap_or(0).max(0) as u64,
                            etag: ETag::new(object.e_tag().unwrap_or_default()),
                            modified: system_time(object.last_modified()),
                        }))
                    })
                    .collect(),
            };
            stream::iter(items)
        })
        .boxed()
    }
}

/// An S3 timestamp as a `SystemTime`.
fn system_time(time: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<std::time::SystemTime> {
    time.and_then(|t| std::time::SystemTime::try_from(*t).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        let loc = Location::parse("s3://bucket").expect("valid");
        assert_eq!((loc.bucket.as_str(), loc.prefix.as_str()), ("bucket", ""));
        let loc = Location::parse("s3://bucket/team/repos/").expect("valid");
        assert_eq!(
            (loc.bucket.as_str(), loc.prefix.as_str()),
            ("bucket", "team/repos")
        );
        for bad in ["bucket", "s3://", "s3:///x", "s3://b/../x", "file://x"] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_style_for_ip_and_localhost_endpoints() {
        assert!(wants_path_style(Some("http://127.0.0.1:4566"), None));
        assert!(wants_path_style(Some("http://localhost:9000"), None));
        assert!(wants_path_style(Some("http://[::1]:9000"), None));
        assert!(wants_path_style(Some("https://10.1.2.3"), None));
        assert!(!wants_path_style(
            Some("https://s3.eu-west-1.amazonaws.com"),
            None
        ));
        assert!(!wants_path_style(None, None));
        assert!(wants_path_style(
            Some("https://minio.example.com"),
            Some("true")
        ));
        assert!(!wants_path_style(
            Some("https://minio.example.com"),
            Some("false")
        ));
    }

    #[test]
    fn range_headers() {
        assert_eq!(range_header((0..10).into()), "bytes=0-9");
        assert_eq!(range_header(ByteRange::From(7)), "bytes=7-");
    }
}
