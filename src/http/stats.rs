//! `GET /-/stats`: store requests by kind, cache sizes, hits and misses, LFS bytes that
//! passed through this server and links to the store it gave instead, as JSON; for
//! server admins.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, Failure, auth, for_caller};

pub(super) async fn handle(
    state: &AppState,
    peer: SocketAddr,
    request: Request,
) -> Result<Response, Failure> {
    if request.method() != Method::GET {
        return Err(Failure::status(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ));
    }
    let (caller, _) = auth::authenticate(state, peer, request.headers()).await?;
    if !caller.server_admin {
        return Err(Failure::status(
            StatusCode::FORBIDDEN,
            "only server admins may read /-/stats",
        ));
    }
    let counts = state.repos.store_counts();
    let requests: serde_json::Map<String, serde_json::Value> = counts
        .fields()
        .iter()
        .map(|(name, n)| ((*name).to_owned(), (*n).into()))
        .collect();
    let (index_bytes, pack_bytes, object_bytes) = state.repos.caches.weighted_sizes();
    let cache = state.repos.caches.stats();
    let mut body = serde_json::json!({
        "store_requests": requests,
        "store_requests_total": counts.total(),
        "index_cache_bytes": index_bytes,
        "pack_cache_bytes": pack_bytes,
        "index_cache_hits": cache.index_hits,
        "index_cache_misses": cache.index_misses,
        "pack_cache_hits": cache.pack_hits,
        "pack_cache_misses": cache.pack_misses,
        "object_cache_bytes": object_bytes,
        "object_cache_hits": cache.object_hits,
        "object_cache_misses": cache.object_misses,
    });
    let retries = state.options.retries.counts();
    body["store_retries"] = retries.retries.into();
    body["store_retries_exhausted"] = retries.exhausted.into();
    body["store_timeouts"] = retries.timeouts.into();
    body["store_creates_recognised"] = retries.recognised.into();
    let lfs = &state.lfs.counters;
    let read = crate::lfs::LfsCounters::get;
    body["lfs_bytes_received"] = read(&lfs.bytes_received).into();
    body["lfs_bytes_sent"] = read(&lfs.bytes_sent).into();
    body["lfs_direct_uploads"] = read(&lfs.direct_uploads).into();
    body["lfs_direct_downloads"] = read(&lfs.direct_downloads).into();
    body["lfs_resumable_uploads_running"] = read(&lfs.resumable_running).into();
    if let Some(disk) = &state.options.disk_cache {
        let (hits, misses) = disk.hits_and_misses();
        body["disk_cache_bytes"] = disk.held_bytes().into();
        body["disk_cache_hits"] = hits.into();
        body["disk_cache_misses"] = misses.into();
    }
    let response = (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    Ok(for_caller(response, &caller))
}
