//! `GET /-/stats`: store requests by kind, cache sizes, hits and misses, LFS bytes that
//! passed through this server and links to the store it gave instead, as JSON; for
//! server admins. The same numbers `/metrics` has ([`crate::metrics::State`]).
//!
//! `GET /metrics`: the Prometheus metrics; for server admins on the main listener, for
//! anyone on the `--metrics-listen` one (and not on the main listener then).

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, Failure, auth, for_caller};
use crate::access::Caller;

/// Refuses any method but `GET`.
fn only_get(request: &Request) -> Result<(), Failure> {
    if request.method() != Method::GET {
        return Err(Failure::status(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ));
    }
    Ok(())
}

/// The server admin a request for `path` comes from; anyone else is refused.
async fn admin(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    path: &str,
) -> Result<Caller, Failure> {
    let (caller, _) = auth::authenticate(state, peer, headers).await?;
    if !caller.server_admin {
        return Err(Failure::status(
            StatusCode::FORBIDDEN,
            format!("only server admins may read {path}"),
        ));
    }
    Ok(caller)
}

pub(super) async fn handle(
    state: &AppState,
    peer: SocketAddr,
    request: Request,
) -> Result<Response, Failure> {
    only_get(&request)?;
    let caller = admin(state, peer, request.headers(), "/-/stats").await?;
    let snapshot = state.metrics.snapshot();
    let requests: serde_json::Map<String, serde_json::Value> = snapshot
        .store_requests
        .iter()
        .map(|(name, n)| ((*name).to_owned(), (*n).into()))
        .collect();
    let total: u64 = snapshot.store_requests.iter().map(|(_, n)| n).sum();
    let mut body = serde_json::json!({
        "store_requests": requests,
        "store_requests_total": total,
    });
    for cache in &snapshot.caches {
        body[format!("{}_cache_bytes", cache.name)] = cache.bytes.into();
        body[format!("{}_cache_hits", cache.name)] = cache.hits.into();
        body[format!("{}_cache_misses", cache.name)] = cache.misses.into();
    }
    let retries = snapshot.retries;
    body["store_retries"] = retries.retries.into();
    body["store_retries_exhausted"] = retries.exhausted.into();
    body["store_timeouts"] = retries.timeouts.into();
    body["store_creates_recognised"] = retries.recognised.into();
    body["lfs_bytes_received"] = snapshot.lfs_bytes_received.into();
    body["lfs_bytes_sent"] = snapshot.lfs_bytes_sent.into();
    body["lfs_direct_uploads"] = snapshot.lfs_direct_uploads.into();
    body["lfs_direct_downloads"] = snapshot.lfs_direct_downloads.into();
    body["lfs_resumable_uploads_running"] = snapshot.lfs_resumable_running.into();
    let response = (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    Ok(for_caller(response, &caller))
}

pub(super) async fn metrics(
    state: &AppState,
    peer: SocketAddr,
    request: Request,
) -> Result<Response, Failure> {
    only_get(&request)?;
    let caller = if state.metrics_listener {
        None
    } else if state.options.metrics_listen.is_some() {
        return Err(Failure::status(StatusCode::NOT_FOUND, "not found"));
    } else {
        Some(admin(state, peer, request.headers(), "/metrics").await?)
    };
    let text = crate::metrics::encode(&state.metrics).map_err(|e| Failure::internal(&e))?;
    let response = ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response();
    Ok(match caller {
        Some(caller) => for_caller(response, &caller),
        None => response,
    })
}
