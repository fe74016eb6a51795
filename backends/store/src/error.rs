//! The one error type of the storage layer.
//!
//! Callers decide what to do from the variant alone: [`Error::NotFound`],
//! [`Error::AlreadyExists`] and [`Error::Precondition`] are answers, not faults;
//! [`Error::Transient`] may succeed when retried ([`Error::is_retryable`]); everything
//! else is a fault to report.

use crate::ByteRange;

/// A boxed underlying error (I/O, SDK), kept for logs and `source()` chains.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing is stored at the key.
    #[error("object not found: {key}")]
    NotFound { key: String },

    /// A [`PutMode::Create`](crate::PutMode::Create) found an object at the key.
    #[error("object already exists: {key}")]
    AlreadyExists { key: String },

    /// A [`PutMode::Update`](crate::PutMode::Update) found the object changed or gone;
    /// nothing was written.
    #[error("object changed since it was read: {key}")]
    Precondition { key: String },

    /// The key breaks the rules of [`Key`](crate::Key) or of the backend.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },

    /// A range that selects nothing of the object (whose size is given when known).
    #[error("range {range:?} selects nothing of object {key}")]
    InvalidRange {
        key: String,
        range: ByteRange,
        size: Option<u64>,
    },

    /// The backend cannot do this operation (for example a streaming compare-and-swap).
    #[error("{operation} is not supported by this store")]
    Unsupported { operation: &'static str },

    /// A fault that may pass: a 5xx answer, S3 503 SlowDown, a timeout, a dropped
    /// connection, S3's 409 ConditionalRequestConflict. Safe to retry.
    #[error("transient store error on {key}: {source}")]
    Transient {
        key: String,
        #[source]
        source: BoxError,
    },

    /// Any other fault (permissions, a full disk, a missing bucket, a malformed answer).
    #[error("store error on {key}: {source}")]
    Other {
        key: String,
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether the same request may succeed if sent again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Transient { .. })
    }

    /// Wraps an I/O error, sorting out the kinds that mean "try again".
    pub fn from_io(key: impl Into<String>, err: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let key = key.into();
        match err.kind() {
            NotFound => Error::NotFound { key },
            Interrupted | TimedOut | WouldBlock | ConnectionReset | ConnectionAborted
            | BrokenPipe => Error::Transient {
                key,
                source: Box::new(err),
            },
            _ => Error::Other {
                key,
                source: Box::new(err),
            },
        }
    }
}
