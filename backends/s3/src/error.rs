//! Mapping of S3 answers to the store's [`Error`].
//!
//! The status code decides, read in the light of what the request meant to do: a 412
//! answers a create with "already exists" but an update with "changed"; a 404 answers a
//! read with "not found" but an update with "changed" (the object it expected is gone).

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use stowage_store::{ByteRange, Error, Key};

/// What the failed request was for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Intent {
    Read,
    Range(ByteRange),
    Write,
    Create,
    Update,
}

pub(crate) fn map_sdk_error<E, R>(key: &Key, intent: Intent, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
    SdkError<E, R>: HasStatus,
{
    let key_name = key.to_string();
    let transient = |err: SdkError<E, R>| Error::Transient {
        key: key.to_string(),
        source: Box::new(err),
    };
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            return transient(err);
        }
        SdkError::ConstructionFailure(_) => {
            return Error::Other {
                key: key_name,
                source: Box::new(err),
            };
        }
        _ => {}
    }
    let status = err.status();
    let code = err.code().map(str::to_owned);
    match (status, code.as_deref(), intent) {
        (Some(412), _, Intent::Create) | (Some(304), _, Intent::Create) => {
            Error::AlreadyExists { key: key_name }
        }
        (_, Some("PreconditionFailed"), Intent::Create) => Error::AlreadyExists { key: key_name },
        (Some(412) | Some(404), _, Intent::Update) => Error::Precondition { key: key_name },
        (_, Some("PreconditionFailed" | "NoSuchKey"), Intent::Update) => {
            Error::Precondition { key: key_name }
        }
        (Some(404), _, _) | (_, Some("NoSuchKey" | "NotFound"), _) => {
            Error::NotFound { key: key_name }
        }
        (Some(416), _, Intent::Range(range)) | (_, Some("InvalidRange"), Intent::Range(range)) => {
            Error::InvalidRange {
                key: key_name,
                range,
                size: None,
            }
        }
        // 409 ConditionalRequestConflict: another conditional write to the key was in
        // flight; S3 asks for a retry.
        (Some(409), Some("ConditionalRequestConflict"), _) => transient(err),
        (Some(429 | 500..=599), _, _) | (_, Some("SlowDown" | "RequestTimeout"), _) => {
            transient(err)
        }
        _ => Error::Other {
            key: key_name,
            source: Box::new(err),
        },
    }
}

/// The HTTP status of a failed request, where the service answered at all.
pub(crate) trait HasStatus {
    fn status(&self) -> Option<u16>;
}

impl<E> HasStatus for SdkError<E, aws_sdk_s3::config::http::HttpResponse> {
    fn status(&self) -> Option<u16> {
        self.raw_response().map(|r| r.status().as_u16())
    }
}
