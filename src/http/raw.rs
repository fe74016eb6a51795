//! `GET|HEAD /<repo>.git/raw/<ref-or-commit>/<path>`: one file at a branch, tag or
//! commit, without git (read). A file git-lfs tracks is answered with its LFS object:
//! streamed, or on S3 a redirect to a presigned URL of the bucket. `ETag` is the blob's
//! id or the LFS oid; `Range` and `If-None-Match` are honoured. Content is always
//! `application/octet-stream` with `nosniff`, so no file is ever rendered as a page of
//! this server.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::lfs::{Wanted, content_response, range_not_satisfiable, wanted_range};
use super::{AppState, Failure, auth, for_caller};
use crate::access::Need;
use crate::lfs::{LfsError, pointer};
use crate::repo::files::FileError;
use crate::repo::{RepoError, RepoName};

const CONTENT_TYPE: &str = "application/octet-stream";

pub(super) async fn handle(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    spec: &str,
    request: Request,
) -> Result<Response, Failure> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Err(Failure::status(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ));
    }
    let allowed = auth::authorize(state, peer, request.headers(), repo, Need::Read).await?;
    let spec = percent_encoding::percent_decode_str(spec)
        .decode_utf8()
        .map_err(|_| Failure::status(StatusCode::BAD_REQUEST, "the path is not UTF-8"))?;
    let file = match state.repos.file(repo, &spec).await {
        Ok(file) => file,
        Err(FileError::Repo(RepoError::NotFound(repo))) => return Err(Failure::NotFound(repo)),
        Err(FileError::Repo(e)) => return Err(Failure::internal(&e)),
        Err(e) => return Err(Failure::status(StatusCode::NOT_FOUND, e.to_string())),
    };
    let head = request.method() == Method::HEAD;
    let response = match pointer::parse(&file.content) {
        Some((oid, _)) => {
            let etag = format!("\"{oid}\"");
            if not_modified(&request, &etag) {
                return Ok(for_caller(not_modified_response(&etag), &allowed.caller));
            }
            if let Some(direct) = state.lfs.direct().filter(|d| d.downloads) {
                let key = crate::lfs::Lfs::object_key(repo, &oid);
                let link = direct
                    .access
                    .presign_get(&key, state.lfs.config.link_lifetime)
                    .await
                    .map_err(|e| Failure::internal(&e))?;
                let mut response = StatusCode::FOUND.into_response();
                let headers = response.headers_mut();
                if let Ok(location) = HeaderValue::from_str(&link.url) {
                    headers.insert(header::LOCATION, location);
                }
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                if let Ok(value) = HeaderValue::from_str(&etag) {
                    headers.insert(header::ETAG, value);
                }
                response
            } else {
                let size = match state.lfs.size(repo, &oid).await {
                    Ok(size) => size,
                    Err(LfsError::NotFound(_)) => {
                        return Err(Failure::status(
                            StatusCode::NOT_FOUND,
                            format!("the LFS object of {spec} ({oid}) is not stored here"),
                        ));
                    }
                    Err(e) => return Err(Failure::internal(&e)),
                };
                match wanted_range(request.headers(), size, &etag) {
                    Wanted::Unsatisfiable => range_not_satisfiable(size),
                    wanted => {
                        let body = if head {
                            Body::empty()
                        } else {
                            let stream = state
                                .lfs
                                .read(repo, &oid, wanted.bytes(size))
                                .await
                                .map_err(|e| Failure::internal(&e))?;
                            Body::from_stream(stream)
                        };
                        content_response(body, &wanted, size, &etag, CONTENT_TYPE)
                    }
                }
            }
        }
        None => {
            let etag = format!("\"{}\"", file.blob);
            if not_modified(&request, &etag) {
                return Ok(for_caller(not_modified_response(&etag), &allowed.caller));
            }
            let size = file.content.len() as u64;
            match wanted_range(request.headers(), size, &etag) {
                Wanted::Unsatisfiable => range_not_satisfiable(size),
                wanted => {
                    let body = if head {
                        Body::empty()
                    } else {
                        let range = wanted.bytes(size);
                        let mut content = file.content;
                        content.truncate(range.end as usize);
                        Body::from(content.split_off(range.start as usize))
                    };
                    content_response(body, &wanted, size, &etag, CONTENT_TYPE)
                }
            }
        }
    };
    let mut response = response;
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(for_caller(response, &allowed.caller))
}

fn not_modified(request: &Request, etag: &str) -> bool {
    request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn not_modified_response(etag: &str) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(value) = HeaderValue::from_str(etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}
