//! Opening a store from a URL: `file://PATH`, `s3://bucket[/prefix]` or `memory://`.

use std::sync::Arc;

use stowage_store::{MemoryStore, ObjectStore};

/// Why a store URL could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error("unsupported store URL {0:?}: use file://PATH, s3://bucket[/prefix] or memory://")]
    Scheme(String),
    #[error("cannot open {url}: {message}")]
    Open { url: String, message: String },
    #[error("this build of stowage has no S3 support (built without the `s3` feature)")]
    NoS3,
}

/// Opens the store `url` names.
pub async fn open(url: &str) -> Result<Arc<dyn ObjectStore>, StoreUrlError> {
    let open_err = |e: &dyn std::fmt::Display| StoreUrlError::Open {
        url: url.to_owned(),
        message: e.to_string(),
    };
    if let Some(path) = url.strip_prefix("file://") {
        let store = stowage_fs::FsStore::new(path).map_err(|e| open_err(&e))?;
        return Ok(Arc::new(store));
    }
    if url == "memory://" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if url.starts_with("s3://") {
        #[cfg(feature = "s3")]
        {
            let store = stowage_s3::S3Store::from_url(url)
                .await
                .map_err(|e| open_err(&e))?;
            return Ok(Arc::new(store));
        }
        #[cfg(not(feature = "s3"))]
        return Err(StoreUrlError::NoS3);
    }
    Err(StoreUrlError::Scheme(url.to_owned()))
}
