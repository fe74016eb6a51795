//! Git LFS under `/<repo>.git/info/lfs/`, where git-lfs looks without configuration:
//!
//! ```text
//! POST      objects/batch     which objects to send or fetch, and where (read; write to upload)
//! PUT       objects/<oid>     an upload through this server (write)
//! GET, HEAD objects/<oid>     a download, whole or a Range (read)
//! POST      verify            {"oid","size"}: the object is stored (write)
//! HEAD      tus/<oid>?size=N  how much of a resumable upload is stored (write)
//! PATCH     tus/<oid>?size=N  the rest of it, from Upload-Offset (write)
//! POST      locks             {"path"}: lock a file (write)
//! GET       locks             ?path=&id=&cursor=&limit=: list locks (write)
//! POST      locks/verify      {"cursor","limit"}: locks of the caller and of others (write)
//! POST      locks/<id>/unlock {"force"}: release a lock; force needs repository admin
//! ```
//!
//! Requests and answers are `application/vnd.git-lfs+json`; a refusal is
//! `{"message": ...}` with the status git-lfs expects: `401` with `LFS-Authenticate`
//! (git-lfs then asks its credential helper), `403`, `404`, `413`, `422`, `429` with
//! `Retry-After`.

use std::net::SocketAddr;
use std::ops::Range;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AppState, Failure, auth, body_stream, for_caller, read_limited};
use crate::access::{Allowed, Need, Role};
use crate::lfs::batch::{BatchError, BatchRequest, Links, Operation};
use crate::lfs::locks::{LockError, owner_of, page};
use crate::lfs::{LfsError, Oid};
use crate::repo::RepoName;

/// The media type of LFS requests and answers.
pub(super) const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// Largest verify request body.
const MAX_VERIFY_BODY: usize = 4096;

/// A refusal as git-lfs reads it.
pub(super) struct LfsFailure(pub Failure);

impl From<Failure> for LfsFailure {
    fn from(failure: Failure) -> Self {
        LfsFailure(failure)
    }
}

fn lfs_status(status: StatusCode, message: impl Into<String>) -> LfsFailure {
    LfsFailure(Failure::status(status, message))
}

impl IntoResponse for LfsFailure {
    fn into_response(self) -> Response {
        let failure = self.0;
        let user = failure.user();
        let challenge = matches!(failure.innermost(), Failure::Unauthorized);
        let (status, extra, message) = failure.parts();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, LFS_JSON)],
            serde_json::json!({ "message": message }).to_string(),
        )
            .into_response();
        super::add_header(&mut response, extra);
        if challenge {
            response.headers_mut().insert(
                HeaderName::from_static("lfs-authenticate"),
                HeaderValue::from_static(r#"Basic realm="stowage""#),
            );
        }
        super::tag_user(response, user)
    }
}

fn json_reply(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, LFS_JSON)], body).into_response()
}

fn lfs_error(e: LfsError) -> LfsFailure {
    match e {
        LfsError::NotFound(_) => lfs_status(StatusCode::NOT_FOUND, e.to_string()),
        LfsError::Mismatch { .. } | LfsError::WrongSize { .. } => {
            lfs_status(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        LfsError::TooLarge { .. } => lfs_status(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        LfsError::Conflict(message) => lfs_status(StatusCode::CONFLICT, message),
        LfsError::Interrupted(_) => {
            tracing::info!(error = %e, "LFS upload interrupted");
            lfs_status(StatusCode::BAD_REQUEST, e.to_string())
        }
        LfsError::Store(e) => LfsFailure(Failure::internal(&e)),
    }
}

/// Whether a request body says it is LFS JSON (or plain JSON); anything else (a form a
/// browser could send, say) is refused.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = value.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case(LFS_JSON) || media.eq_ignore_ascii_case("application/json")
}

/// Serves `rest` (what follows `info/lfs/`) of `repo`.
pub(super) async fn handle(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    rest: &str,
    request: Request,
) -> Response {
    let method = request.method().clone();
    let answer = match (&method, rest) {
        (&Method::POST, "objects/batch") => batch(state, peer, repo, request).await,
        (&Method::POST, "verify") => verify(state, peer, repo, request).await,
        (&Method::POST, "locks") => create_lock(state, peer, repo, request).await,
        (&Method::GET, "locks") => list_locks(state, peer, repo, request).await,
        (&Method::POST, "locks/verify") => verify_locks(state, peer, repo, request).await,
        (&Method::POST, rest)
            if rest
                .strip_prefix("locks/")
                .and_then(|r| r.strip_suffix("/unlock"))
                .is_some_and(|id| !id.is_empty()) =>
        {
            let id = &rest["locks/".len()..rest.len() - "/unlock".len()];
            unlock(state, peer, repo, id, request).await
        }
        (_, rest) if rest.starts_with("tus/") => {
            tus(state, peer, repo, &rest["tus/".len()..], request).await
        }
        (_, rest) if rest.starts_with("objects/") => {
            let oid = &rest["objects/".len()..];
            match method {
                Method::PUT => upload(state, peer, repo, oid, request).await,
                Method::GET | Method::HEAD => download(state, peer, repo, oid, request).await,
                _ => Err(lfs_status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed",
                )),
            }
        }
        _ => Err(lfs_status(StatusCode::NOT_FOUND, "not found")),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// A place for an upload in the repository's and the process's admission limits
/// (git-lfs retries a 429 or 503 after its `Retry-After`).
async fn admit(state: &AppState, repo: &RepoName) -> Result<crate::admission::Permit, LfsFailure> {
    Ok(state
        .admission
        .admit(repo.as_str())
        .await
        .map_err(Failure::from)?)
}

/// The URL the client reached this server by, for the links of an answer.
fn base_url(state: &AppState, headers: &HeaderMap) -> Result<String, LfsFailure> {
    super::origin(state, headers)
        .ok_or_else(|| lfs_status(StatusCode::BAD_REQUEST, "a valid Host header is needed"))
}

/// Where the links of an answer point, and the credentials they carry: the ones this
/// request came with, so that each transfer is authorized as the batch was.
fn links(state: &AppState, headers: &HeaderMap) -> Result<Links, LfsFailure> {
    let mut links = Links {
        base: base_url(state, headers)?,
        ..Default::default()
    };
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        links
            .header
            .insert("Authorization".to_owned(), value.to_owned());
    }
    Ok(links)
}

/// Authorizes an upload to `repo`: write, and for a repository that does not exist yet
/// (git-lfs sends objects before git sends the push that creates it), the right to
/// create it.
async fn authorize_upload(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    repo: &RepoName,
) -> Result<Allowed, LfsFailure> {
    let allowed = auth::authorize(state, peer, headers, repo, Need::Write).await?;
    if !(allowed.may_create && state.repos.config.auto_create) {
        require_repository(state, repo, &allowed.caller).await?;
    }
    Ok(allowed)
}

/// The repository exists (else the 404 of a missing repository).
async fn require_repository(
    state: &AppState,
    repo: &RepoName,
    caller: &crate::access::Caller,
) -> Result<(), LfsFailure> {
    let exists = state
        .repos
        .snapshot(repo)
        .await
        .map_err(|e| LfsFailure(Failure::internal(&e)))?
        .is_some();
    if !exists {
        return Err(LfsFailure(Failure::Of(
            caller.name().to_owned(),
            Box::new(Failure::NotFound(repo.clone())),
        )));
    }
    Ok(())
}

async fn batch(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    request: Request,
) -> Result<Response, LfsFailure> {
    if !is_json(request.headers()) {
        return Err(lfs_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a batch request is {LFS_JSON}"),
        ));
    }
    let headers = request.headers().clone();
    let limit = state.lfs.config.max_batch_bytes;
    let body = read_limited(request, limit, &state.options.connections).await?;
    let parsed: BatchRequest = serde_json::from_slice(&body).map_err(|e| {
        lfs_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid batch request: {e}"),
        )
    })?;
    let operation = parsed
        .operation()
        .map_err(|e| lfs_status(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let allowed = match operation {
        Operation::Download => {
            let allowed = auth::authorize(state, peer, &headers, repo, Need::Read).await?;
            // Nothing to download from a repository that does not exist.
            require_repository(state, repo, &allowed.caller).await?;
            allowed
        }
        Operation::Upload => authorize_upload(state, peer, &headers, repo).await?,
    };
    let links = links(state, &headers)?;
    let answer = match state.lfs.batch(repo, parsed, &links).await {
        Ok(answer) => answer,
        Err(BatchError::Invalid(message)) => {
            return Err(lfs_status(StatusCode::UNPROCESSABLE_ENTITY, message));
        }
        Err(e @ BatchError::TooMany { .. }) => {
            return Err(lfs_status(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()));
        }
        Err(BatchError::Store(e)) => return Err(LfsFailure(Failure::internal(&e))),
    };
    let body = serde_json::to_string(&answer).map_err(|e| LfsFailure(Failure::internal(&e)))?;
    Ok(for_caller(
        json_reply(StatusCode::OK, body),
        &allowed.caller,
    ))
}

fn parse_oid(text: &str) -> Result<Oid, LfsFailure> {
    Oid::parse(text).ok_or_else(|| {
        lfs_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid oid: an oid is 64 lowercase hex digits",
        )
    })
}

async fn upload(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    oid: &str,
    request: Request,
) -> Result<Response, LfsFailure> {
    let allowed = authorize_upload(state, peer, request.headers(), repo).await?;
    let oid = parse_oid(oid)?;
    // An upload through the server holds buffers and store requests while it runs.
    let _place = admit(state, repo).await?;
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = body_stream(request, &state.options.connections);
    let stored = state
        .lfs
        .receive(repo, oid, length, body)
        .await
        .map_err(lfs_error)?;
    if stored {
        tracing::info!(repo = %repo, %oid, "LFS object stored");
    }
    Ok(for_caller(StatusCode::OK.into_response(), &allowed.caller))
}

#[derive(Debug, Deserialize)]
struct VerifyBody {
    oid: String,
    size: i64,
}

async fn verify(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    request: Request,
) -> Result<Response, LfsFailure> {
    let allowed = auth::authorize(state, peer, request.headers(), repo, Need::Write).await?;
    if !is_json(request.headers()) {
        return Err(lfs_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a verify request is {LFS_JSON}"),
        ));
    }
    let body = read_limited(request, MAX_VERIFY_BODY, &state.options.connections).await?;
    let parsed: VerifyBody = serde_json::from_slice(&body).map_err(|e| {
        lfs_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid verify request: {e}"),
        )
    })?;
    let oid = parse_oid(&parsed.oid)?;
    let size = u64::try_from(parsed.size).map_err(|_| {
        lfs_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid size: a size is not negative",
        )
    })?;
    state.lfs.verify(repo, oid, size).await.map_err(lfs_error)?;
    Ok(for_caller(
        json_reply(StatusCode::OK, "{}".into()),
        &allowed.caller,
    ))
}

/// A resumable upload (tus 1.0.0 core, as git-lfs's `tus` adapter speaks it).
async fn tus(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    oid: &str,
    request: Request,
) -> Result<Response, LfsFailure> {
    use crate::lfs::tus::{Appended, TUS_VERSION};
    let tus_reply = |status: StatusCode, offset: Option<u64>, size: Option<u64>| {
        let mut response = status.into_response();
        let headers = response.headers_mut();
        headers.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(offset) = offset {
            headers.insert("upload-offset", HeaderValue::from(offset));
        }
        if let Some(size) = size {
            headers.insert("upload-length", HeaderValue::from(size));
        }
        response
    };
    let allowed = authorize_upload(state, peer, request.headers(), repo).await?;
    if request.method() == Method::OPTIONS {
        let mut response = tus_reply(StatusCode::NO_CONTENT, None, None);
        response
            .headers_mut()
            .insert("tus-version", HeaderValue::from_static(TUS_VERSION));
        response.headers_mut().insert(
            "tus-max-size",
            HeaderValue::from(state.lfs.config.max_object_bytes),
        );
        return Ok(for_caller(response, &allowed.caller));
    }
    let oid = parse_oid(oid)?;
    let query = request.uri().query().unwrap_or("").to_owned();
    let size = query_value(&query, "size")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| lfs_status(StatusCode::BAD_REQUEST, "the upload URL names no size"))?;
    let response = match *request.method() {
        Method::HEAD => {
            let offset = state
                .lfs
                .tus_offset(repo, &oid, size)
                .await
                .map_err(lfs_error)?;
            tus_reply(StatusCode::OK, Some(offset), Some(size))
        }
        Method::PATCH => {
            let content_type = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !content_type.eq_ignore_ascii_case("application/offset+octet-stream") {
                return Err(lfs_status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "a tus PATCH is application/offset+octet-stream",
                ));
            }
            let offset = request
                .headers()
                .get("upload-offset")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| lfs_status(StatusCode::BAD_REQUEST, "Upload-Offset is needed"))?;
            let place = admit(state, repo).await?;
            let body = body_stream(request, &state.options.connections);
            // In a task of its own: a client that goes away must not cancel the storing
            // of a part it sent whole (the body then ends with an error, and the upload
            // stops at its last stored part). It holds its admission place to the end.
            let (lfs, owned) = (state.lfs.clone(), repo.clone());
            let appended = tokio::spawn(async move {
                let _place = place;
                lfs.tus_append(&owned, oid, size, offset, body).await
            })
            .await
            .map_err(|e| LfsFailure(Failure::internal(&e)))?;
            match appended.map_err(lfs_error)? {
                Appended::Complete => {
                    tracing::info!(repo = %repo, %oid, "LFS object stored (resumable upload)");
                    tus_reply(StatusCode::NO_CONTENT, Some(size), None)
                }
                // git-lfs takes any 204 for a whole upload: a body that ended short
                // (cleanly) is an error it reports, and a push resumes from here.
                Appended::Partial(stored) => {
                    let mut response = LfsFailure(Failure::status(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "the upload of {oid} ended at byte {stored} of {size}; send the \
                             rest from there"
                        ),
                    ))
                    .into_response();
                    response
                        .headers_mut()
                        .insert("upload-offset", HeaderValue::from(stored));
                    response
                        .headers_mut()
                        .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
                    response
                }
            }
        }
        _ => {
            return Err(lfs_status(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
            ));
        }
    };
    Ok(for_caller(response, &allowed.caller))
}

/// Largest lock request body.
const MAX_LOCK_BODY: usize = 16 << 10;

/// Most locks one page lists.
const MAX_LOCK_PAGE: usize = 1000;

fn lock_owner(allowed: &Allowed) -> String {
    owner_of(&allowed.caller)
}

fn lock_error(e: LockError) -> LfsFailure {
    match e {
        LockError::Invalid(message) => lfs_status(StatusCode::UNPROCESSABLE_ENTITY, message),
        LockError::NotFound(_) => lfs_status(StatusCode::NOT_FOUND, e.to_string()),
        LockError::NoRepository(repo) => LfsFailure(Failure::NotFound(repo)),
        LockError::NotOwner(message) => lfs_status(StatusCode::FORBIDDEN, message),
        LockError::Exists(_) => lfs_status(StatusCode::CONFLICT, e.to_string()),
        LockError::Lfs(e) => lfs_error(e),
    }
}

/// A JSON request body of at most `limit` bytes, in `T`'s shape.
async fn json_body<T: for<'de> Deserialize<'de>>(
    state: &AppState,
    request: Request,
    limit: usize,
) -> Result<T, LfsFailure> {
    if !is_json(request.headers()) {
        return Err(lfs_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a request body is {LFS_JSON}"),
        ));
    }
    let body = read_limited(request, limit, &state.options.connections).await?;
    serde_json::from_slice(&body).map_err(|e| {
        lfs_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid request: {e}"),
        )
    })
}

#[derive(Debug, Deserialize)]
struct LockBody {
    path: String,
}

async fn create_lock(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    request: Request,
) -> Result<Response, LfsFailure> {
    let allowed = auth::authorize(state, peer, request.headers(), repo, Need::Write).await?;
    let body: LockBody = json_body(state, request, MAX_LOCK_BODY).await?;
    let owner = lock_owner(&allowed);
    let response = match state
        .lfs
        .create_lock(&state.repos, repo, &body.path, &owner)
        .await
    {
        Ok(lock) => json_reply(
            StatusCode::CREATED,
            serde_json::json!({ "lock": lock }).to_string(),
        ),
        Err(LockError::Exists(held)) => {
            let message = format!("{} is already locked by {}", held.path, held.owner.name);
            json_reply(
                StatusCode::CONFLICT,
                serde_json::json!({ "lock": held, "message": message }).to_string(),
            )
        }
        Err(e) => return Err(lock_error(e)),
    };
    Ok(for_caller(response, &allowed.caller))
}

/// The value of `name` in a query string, percent-decoded (`+` is a space).
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn page_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).clamp(1, MAX_LOCK_PAGE)
}

async fn list_locks(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    request: Request,
) -> Result<Response, LfsFailure> {
    let allowed = auth::authorize(state, peer, request.headers(), repo, Need::Write).await?;
    let query = request.uri().query().unwrap_or("").to_owned();
    let path = query_value(&query, "path");
    let id = query_value(&query, "id");
    let cursor = query_value(&query, "cursor").filter(|c| !c.is_empty());
    let limit = query_value(&query, "limit")
        .map(|l| {
            l.parse::<usize>().map_err(|_| {
                lfs_status(StatusCode::UNPROCESSABLE_ENTITY, "limit is a whole number")
            })
        })
        .transpose()?;
    let mut locks = state.lfs.locks(repo).await.map_err(lock_error)?;
    locks.retain(|l| {
        path.as_ref().is_none_or(|p| l.path == *p) && id.as_ref().is_none_or(|i| l.id == *i)
    });
    let (locks, next) = page(locks, cursor.as_deref(), page_limit(limit));
    let body = serde_json::json!({ "locks": locks });
    Ok(for_caller(page_reply(body, next), &allowed.caller))
}

/// A page of a lock listing, with the cursor of the next page, if any.
fn page_reply(mut body: serde_json::Value, next: Option<String>) -> Response {
    if let Some(next) = next {
        body["next_cursor"] = next.into();
    }
    json_reply(StatusCode::OK, body.to_string())
}

#[derive(Debug, Default, Deserialize)]
struct VerifyLocksBody {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn verify_locks(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    request: Request,
) -> Result<Response, LfsFailure> {
    let allowed = auth::authorize(state, peer, request.headers(), repo, Need::Write).await?;
    let body: VerifyLocksBody = json_body(state, request, MAX_LOCK_BODY).await?;
    let owner = lock_owner(&allowed);
    let locks = state.lfs.locks(repo).await.map_err(lock_error)?;
    let cursor = body.cursor.filter(|c| !c.is_empty());
    let (locks, next) = page(locks, cursor.as_deref(), page_limit(body.limit));
    let (ours, theirs): (Vec<_>, Vec<_>) = locks.into_iter().partition(|l| l.owner.name == owner);
    let answer = serde_json::json!({ "ours": ours, "theirs": theirs });
    Ok(for_caller(page_reply(answer, next), &allowed.caller))
}

#[derive(Debug, Default, Deserialize)]
struct UnlockBody {
    #[serde(default)]
    force: bool,
}

async fn unlock(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    id: &str,
    request: Request,
) -> Result<Response, LfsFailure> {
    let allowed = auth::authorize(state, peer, request.headers(), repo, Need::Write).await?;
    let body: UnlockBody = json_body(state, request, MAX_LOCK_BODY).await?;
    let owner = lock_owner(&allowed);
    let may_force = allowed.role >= Role::Admin || allowed.caller.server_admin;
    let lock = state
        .lfs
        .unlock(repo, id, &owner, body.force, may_force)
        .await
        .map_err(lock_error)?;
    Ok(for_caller(
        json_reply(
            StatusCode::OK,
            serde_json::json!({ "lock": lock }).to_string(),
        ),
        &allowed.caller,
    ))
}

async fn download(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    oid: &str,
    request: Request,
) -> Result<Response, LfsFailure> {
    let allowed = auth::authorize(state, peer, request.headers(), repo, Need::Read).await?;
    let oid = parse_oid(oid)?;
    let size = state.lfs.size(repo, &oid).await.map_err(lfs_error)?;
    let etag = format!("\"{oid}\"");
    let response = match wanted_range(request.headers(), size, &etag) {
        Wanted::Unsatisfiable => range_not_satisfiable(size),
        wanted => {
            let body = if request.method() == Method::HEAD {
                Body::empty()
            } else {
                Body::from_stream(
                    state
                        .lfs
                        .read(repo, &oid, wanted.bytes(size))
                        .await
                        .map_err(lfs_error)?,
                )
            };
            content_response(body, &wanted, size, &etag, "application/octet-stream")
        }
    };
    Ok(for_caller(response, &allowed.caller))
}

/// What a request's `Range` header asks of a body of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Wanted {
    Whole,
    Part(Range<u64>),
    Unsatisfiable,
}

impl Wanted {
    /// The bytes to send of a body of `size` bytes.
    pub(super) fn bytes(&self, size: u64) -> Range<u64> {
        match self {
            Wanted::Part(range) => range.clone(),
            _ => 0..size,
        }
    }
}

/// Reads a single-range `Range: bytes=...` header (`a-b`, `a-`, `-n`); anything else,
/// or a range whose `If-Range` names another version, gets the whole body, as RFC 9110
/// allows.
pub(super) fn wanted_range(headers: &HeaderMap, size: u64, etag: &str) -> Wanted {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Wanted::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok())
        && if_range.trim() != etag
    {
        return Wanted::Whole;
    }
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let Ok(suffix) = last.parse::<u64>() else {
            return Wanted::Whole;
        };
        if suffix == 0 {
            return Wanted::Unsatisfiable;
        }
        size.saturating_sub(suffix)..size
    } else {
        let Ok(start) = first.parse::<u64>() else {
            return Wanted::Whole;
        };
        let end = if last.is_empty() {
            size
        } else {
            match last.parse::<u64>() {
                Ok(last) if last >= start => last.saturating_add(1).min(size),
                _ => return Wanted::Whole,
            }
        };
        start..end
    };
    if range.start >= size || range.is_empty() {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part(range)
}

pub(super) fn range_not_satisfiable(size: u64) -> Response {
    let mut response = (
        StatusCode::RANGE_NOT_SATISFIABLE,
        format!("the range asked for is not within the {size} bytes of this content\n"),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

/// A `200` or `206` answer with `body`, the part `range` of `size` bytes.
pub(super) fn content_response(
    body: Body,
    wanted: &Wanted,
    size: u64,
    etag: &str,
    content_type: &'static str,
) -> Response {
    let range = wanted.bytes(size);
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    if matches!(wanted, Wanted::Part(_)) {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = format!(
            "bytes {}-{}/{size}",
            range.start,
            range.end.saturating_sub(1)
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_range(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(value).expect("value"));
        h
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let etag = "\"x\"";
        let ask = |v: &str| wanted_range(&with_range(v), 100, etag);
        assert_eq!(wanted_range(&HeaderMap::new(), 100, etag), Wanted::Whole);
        assert_eq!(ask("bytes=0-9"), Wanted::Part(0..10));
        assert_eq!(ask("bytes=90-"), Wanted::Part(90..100));
        assert_eq!(ask("bytes=90-1000"), Wanted::Part(90..100));
        assert_eq!(ask("bytes=-10"), Wanted::Part(90..100));
        assert_eq!(ask("bytes=-1000"), Wanted::Part(0..100));
        assert_eq!(ask("bytes=100-"), Wanted::Unsatisfiable);
        assert_eq!(ask("bytes=-0"), Wanted::Unsatisfiable);
        assert_eq!(ask("bytes=5-2"), Wanted::Whole);
        assert_eq!(ask("bytes=0-1,5-6"), Wanted::Whole);
        assert_eq!(ask("items=0-1"), Wanted::Whole);
        let mut stale = with_range("bytes=0-9");
        stale.insert(header::IF_RANGE, HeaderValue::from_static("\"y\""));
        assert_eq!(wanted_range(&stale, 100, etag), Wanted::Whole);
    }
}
