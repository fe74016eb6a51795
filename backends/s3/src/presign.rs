//! Presigned requests for clients to send to the bucket themselves (Git LFS transfers),
//! signed here with SigV4 in the query string.
//!
//! An upload's length and `x-amz-checksum-sha256` are signed *headers*: S3 refuses a
//! request without them or with other values, and refuses a body whose SHA-256 is not
//! the declared one. The SDK's own presigner moves the checksum into the query string,
//! where S3 ignores it, so the request is signed with `aws-sigv4` directly.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use stowage_store::direct::{DirectAccess, SignedRequest, StoredChecksum};
use stowage_store::{Error, Key, Result};

use crate::S3Store;
use crate::error::{Intent, map_sdk_error};

/// What SigV4 leaves unencoded in a path segment or a query value.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The largest single `PUT` S3 accepts.
const MAX_PUT: u64 = 5 << 30;

fn signing_error(key: &Key, e: impl std::fmt::Display) -> Error {
    Error::Other {
        key: key.to_string(),
        source: format!("signing a request failed: {e}").into(),
    }
}

impl S3Store {
    /// The URL of the object at `key`, without a query.
    fn object_url(&self, key: &Key) -> String {
        let path: Vec<String> = self
            .object_key(key)
            .split('/')
            .map(|segment| utf8_percent_encode(segment, UNRESERVED).to_string())
            .collect();
        let path = path.join("/");
        let bucket = &self.location.bucket;
        let region = self.region();
        match (&self.endpoint.url, self.endpoint.path_style) {
            (Some(base), true) => format!("{}/{bucket}/{path}", base.trim_end_matches('/')),
            (Some(base), false) => {
                let (scheme, host) = base.split_once("://").unwrap_or(("https", base));
                format!("{scheme}://{bucket}.{}/{path}", host.trim_end_matches('/'))
            }
            (None, true) => format!("https://s3.{region}.amazonaws.com/{bucket}/{path}"),
            (None, false) => format!("https://{bucket}.s3.{region}.amazonaws.com/{path}"),
        }
    }

    fn region(&self) -> String {
        self.client
            .config()
            .region()
            .map(|r| r.as_ref().to_owned())
            .unwrap_or_else(|| "us-east-1".to_owned())
    }

    async fn presign(
        &self,
        method: &'static str,
        key: &Key,
        headers: Vec<(String, String)>,
        lifetime: Duration,
    ) -> Result<SignedRequest> {
        let url = self.object_url(key);
        let authority = url
            .split_once("://")
            .map_or("", |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let provider = self
            .endpoint
            .credentials
            .as_ref()
            .ok_or_else(|| signing_error(key, "no credentials are configured"))?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| signing_error(key, e))?;
        let identity: Identity = credentials.into();
        let region = self.region();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(lifetime);
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| signing_error(key, e))?
            .into();
        let mut signed_headers = vec![("host".to_owned(), authority)];
        signed_headers.extend(headers.iter().cloned());
        let request = SignableRequest::new(
            method,
            url.as_str(),
            signed_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::UnsignedPayload,
        )
        .map_err(|e| signing_error(key, e))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| signing_error(key, e))?
            .into_parts();
        let (_, query) = instructions.into_parts();
        let query: Vec<String> = query
            .iter()
            .map(|(name, value)| {
                format!(
                    "{}={}",
                    utf8_percent_encode(name, UNRESERVED),
                    utf8_percent_encode(value, UNRESERVED)
                )
            })
            .collect();
        Ok(SignedRequest {
            method,
            url: format!("{url}?{}", query.join("&")),
            headers,
        })
    }
}

fn sha256_header(sha256: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha256)
}

#[async_trait]
impl DirectAccess for S3Store {
    async fn presign_put(
        &self,
        key: &Key,
        size: u64,
        sha256: &[u8; 32],
        lifetime: Duration,
    ) -> Result<SignedRequest> {
        let headers = vec![
            ("content-length".to_owned(), size.to_string()),
            ("x-amz-checksum-sha256".to_owned(), sha256_header(sha256)),
        ];
        self.presign("PUT", key, headers, lifetime).await
    }

    async fn presign_get(&self, key: &Key, lifetime: Duration) -> Result<SignedRequest> {
        self.presign("GET", key, Vec::new(), lifetime).await
    }

    async fn checksum(&self, key: &Key) -> Result<StoredChecksum> {
        let output = self
            .client
            .head_object()
            .bucket(&self.location.bucket)
            .key(self.object_key(key))
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| map_sdk_error(key, Intent::Read, e))?;
        // A multipart object's checksum is of its parts' checksums ("...-N"): not the
        // object's SHA-256.
        let sha256 = output
            .checksum_sha256()
            .filter(|c| !c.contains('-'))
            .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
        Ok(StoredChecksum {
            size: output.content_length().unwrap_or(0).max(0) as u64,
            sha256,
        })
    }

    async fn refuses_wrong_checksums(&self, scratch: &Key) -> Result<bool> {
        let wrong = [0u8; 32];
        let sent = self
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(self.object_key(scratch))
            .checksum_sha256(sha256_header(&wrong))
            .body(S3Body::from(b"checksum probe".to_vec()))
            .send()
            .await;
        match sent {
            // Refused for its checksum, not for anything else (a policy, a header the
            // service does not know): only then are direct uploads safe.
            Err(aws_sdk_s3::error::SdkError::ServiceError(e)) => {
                use aws_sdk_s3::error::ProvideErrorMetadata;
                let code = e.err().code().unwrap_or("").to_owned();
                let refused = matches!(
                    code.as_str(),
                    "BadDigest" | "InvalidRequest" | "XAmzContentChecksumMismatch"
                );
                if !refused {
                    tracing::warn!(code, "the checksum probe was refused for another reason");
                }
                Ok(refused)
            }
            Err(e) => Err(map_sdk_error(scratch, Intent::Write, e)),
            Ok(_) => {
                let _ = self
                    .client
                    .delete_object()
                    .bucket(&self.location.bucket)
                    .key(self.object_key(scratch))
                    .send()
                    .await;
                Ok(false)
            }
        }
    }

    fn max_put_size(&self) -> u64 {
        MAX_PUT
    }

    async fn start_parts(&self, key: &Key) -> Result<String> {
        self.start_upload(key).await
    }

    async fn put_part(&self, key: &Key, upload: &str, number: u32, body: Bytes) -> Result<String> {
        self.send_part(key, upload, number, body).await
    }

    async fn complete_parts(&self, key: &Key, upload: &str, parts: &[(u32, String)]) -> Result<()> {
        self.complete_upload(key, upload, parts, &stowage_store::PutMode::Create)
            .await
            .map(|_| ())
    }

    async fn abort_parts(&self, key: &Key, upload: &str) -> Result<()> {
        self.abort_upload(key, upload).await
    }
}
