//! Opening a store from a URL: `file://PATH`, `s3://bucket[/prefix]` or `memory://`.

use std::sync::Arc;

use stowage_store::retry::RetryStats;
use stowage_store::{FaultStore, LatencyStore, MemoryStore, ObjectStore, RetryPolicy, RetryStore};

/// Why a store URL could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error("unsupported store URL {0:?}: use file://PATH, s3://bucket[/prefix] or memory://")]
    Scheme(String),
    #[error("cannot open {url}: {message}")]
    Open { url: String, message: String },
    #[error("this build of stowage has no S3 support (built without the `s3` feature)")]
    NoS3,
    #[error(transparent)]
    Faults(stowage_store::faults::SpecError),
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

/// The backend `url` names, as a metrics label.
fn backend(url: &str) -> &'static str {
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("file") => "fs",
        Some("s3") => "s3",
        Some("memory") => "memory",
        _ => "other",
    }
}

/// Requests signed for clients to send to the store `url` names itself, if it offers
/// them (S3).
pub async fn direct_access(
    url: &str,
) -> Result<Option<Arc<dyn stowage_store::direct::DirectAccess>>, StoreUrlError> {
    if !url.starts_with("s3://") {
        return Ok(None);
    }
    #[cfg(feature = "s3")]
    {
        let store = stowage_s3::S3Store::from_url(url)
            .await
            .map_err(|e| StoreUrlError::Open {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Some(Arc::new(store)))
    }
    #[cfg(not(feature = "s3"))]
    Err(StoreUrlError::NoS3)
}

/// The layers a store gets under the server and the maintenance commands.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// Delay every request by this much (benchmarks: a local disk made to answer like
    /// a remote store).
    pub latency: std::time::Duration,
    /// Fail the requests this spec chooses (tests; see [`stowage_store::faults`]).
    pub faults: Option<String>,
    /// How transient faults are retried.
    pub retry: RetryPolicy,
}

/// Opens the store `url` names with its layers, from the store outwards: latency,
/// faults, the request metrics, then the retries (so that injected faults are retried
/// as real ones are, and each attempt is timed).
/// Returns the retry layer's counts with it.
pub async fn open_layered(
    url: &str,
    layers: &Layers,
) -> Result<(Arc<dyn ObjectStore>, RetryStats), StoreUrlError> {
    let mut store = open(url).await?;
    if !layers.latency.is_zero() {
        store = Arc::new(LatencyStore::new(store, layers.latency));
    }
    if let Some(spec) = &layers.faults {
        let faults = FaultStore::new(store, spec).map_err(StoreUrlError::Faults)?;
        store = Arc::new(faults);
    }
    let store = Arc::new(crate::metrics::store::MeteredStore::new(
        store,
        backend(url),
    ));
    let retrying = RetryStore::new(store, layers.retry.clone());
    let stats = retrying.stats();
    Ok((Arc::new(retrying), stats))
}
