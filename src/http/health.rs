//! Probes for load balancers and orchestrators. Both answer anyone: they say nothing of
//! repositories or users.
//!
//! ```text
//! GET /-/health   200 while the process serves
//! GET /-/ready    200 while the store answers (checked at most once a second) and the
//!                 server is not draining for its exit; else 503 with the reason
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use stowage_store::{Error as StoreError, Key};

use super::AppState;

/// How long a store check counts.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long the store may take to answer a check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the probes answer from.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    /// The last store check: when, and its failure if it failed.
    checked: tokio::sync::Mutex<Option<(Instant, Option<String>)>>,
}

impl Health {
    /// From now on, `/-/ready` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Why the server is not ready, if it is not.
    async fn not_ready(&self, state: &AppState) -> Option<String> {
        if self.draining.load(Ordering::SeqCst) {
            return Some("the server is shutting down".into());
        }
        // One check at a time; the others wait for it and use its answer.
        let mut checked = self.checked.lock().await;
        if let Some((at, failure)) = checked.as_ref()
            && at.elapsed() < CHECK_EVERY
        {
            return failure.clone();
        }
        let failure = store_failure(state).await;
        *checked = Some((Instant::now(), failure.clone()));
        failure
    }
}

/// Whether the store answers a read (a missing key is an answer).
async fn store_failure(state: &AppState) -> Option<String> {
    let key = Key::new(".health/ready").expect("a valid key");
    match tokio::time::timeout(CHECK_TIMEOUT, state.repos.store.head(&key)).await {
        Ok(Ok(_)) | Ok(Err(StoreError::NotFound { .. })) => None,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the store failed");
            Some("the store does not answer".into())
        }
        Err(_) => {
            tracing::warn!("readiness: the store did not answer in time");
            Some("the store does not answer".into())
        }
    }
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text + "\n",
    )
        .into_response()
}

pub(super) async fn health() -> Response {
    plain(StatusCode::OK, "ok".into())
}

pub(super) async fn ready(state: &AppState) -> Response {
    match state.health.not_ready(state).await {
        None => plain(StatusCode::OK, "ready".into()),
        Some(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}
