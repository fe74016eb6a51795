//! The Smart HTTP routes (axum), kept thin: parse the URL and headers, hand the body to
//! the protocol layer, map errors to statuses and git `ERR` lines.
//!
//! Routes, for a repository name that may be nested (`org/name`) and may end in `.git`:
//! - `GET  /<repo>/info/refs?service=git-upload-pack|git-receive-pack`
//! - `POST /<repo>/git-upload-pack`
//! - `POST /<repo>/git-receive-pack`
//!
//! - `GET  /-/stats`: store requests by kind, cache sizes, hits and misses (JSON)
//!
//! Request bodies may be gzip-encoded and chunked. Paths are not percent-decoded: a
//! `%` is not allowed in a repository name, so encoded traversal cannot slip through.

use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use bytes::Bytes;
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::net::TcpListener;

use crate::protocol::pktline::{PktWriter, err_line};
use crate::protocol::{
    self, BadRequest, Features, Framing, Service, advertise, receive_pack, upload_pack, v2,
};
use crate::repo::fetch::{self, FetchRequest};
use crate::repo::odb::ObjectSource;
use crate::repo::walk::{Boundary, Filter, ShallowUpdate, WalkLimits};
use crate::repo::{RepoError, RepoName, Repos, Snapshot, push};
use std::collections::HashSet;

/// What the HTTP layer accepts and offers.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest upload-pack (negotiation) request body, after decompression.
    pub max_negotiation_bytes: usize,
    /// Optional protocol features.
    pub features: Features,
    /// The local pack cache in front of the store, if any (for `/-/stats`).
    pub disk_cache: Option<crate::disk_cache::DiskCacheStore>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_negotiation_bytes: 64 << 20,
            features: Features::default(),
            disk_cache: None,
        }
    }
}

#[derive(Debug, Clone)]
struct AppState {
    repos: Arc<Repos>,
    options: Arc<Options>,
}

/// The application: every route of the server.
pub fn router(repos: Repos, options: Options) -> Router {
    Router::new().fallback(handle).with_state(AppState {
        repos: Arc::new(repos),
        options: Arc::new(options),
    })
}

/// Serves on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    repos: Repos,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // Responses go out in many small writes (pkt-lines, side-band frames): without
    // TCP_NODELAY the last of them can wait for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {e}");
        }
    });
    axum::serve(listener, router(repos, options))
        .with_graceful_shutdown(shutdown)
        .await
}

/// An answer that is not a protocol success.
#[derive(Debug)]
enum Failure {
    Status(StatusCode, String),
    /// A protocol-level refusal, sent as an `ERR` pkt-line with status 200 so that git
    /// shows the message to its user.
    Git(String),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Status(status, message) => (status, format!("{message}\n")).into_response(),
            Failure::Git(message) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-git-upload-pack-result")],
                err_line(&message),
            )
                .into_response(),
        }
    }
}

impl From<BadRequest> for Failure {
    fn from(e: BadRequest) -> Self {
        Failure::Git(e.0)
    }
}

impl From<RepoError> for Failure {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::NotFound(name) => Failure::Status(
                StatusCode::NOT_FOUND,
                format!("repository {name} not found"),
            ),
            other => {
                tracing::error!(error = %other, "request failed");
                Failure::Status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the server log".into(),
                )
            }
        }
    }
}

async fn handle(State(state): State<AppState>, request: Request) -> Response {
    match route(state, request).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    }
}

async fn route(state: AppState, request: Request) -> Result<Response, Failure> {
    let path = request.uri().path().to_owned();
    let not_found = || Failure::Status(StatusCode::NOT_FOUND, "not found".into());
    let path = path.strip_prefix('/').ok_or_else(not_found)?;
    if path == "-/stats" && request.method() == Method::GET {
        return Ok(stats(&state));
    }
    let (repo, action) = if let Some(repo) = path.strip_suffix("/info/refs") {
        (repo, "info/refs")
    } else if let Some(repo) = path.strip_suffix("/git-upload-pack") {
        (repo, "git-upload-pack")
    } else if let Some(repo) = path.strip_suffix("/git-receive-pack") {
        (repo, "git-receive-pack")
    } else {
        return Err(not_found());
    };
    let repo =
        RepoName::new(repo).map_err(|e| Failure::Status(StatusCode::BAD_REQUEST, e.to_string()))?;
    let method = request.method().clone();
    let v2 = wants_v2(request.headers());
    match (method, action) {
        (Method::GET, "info/refs") => {
            let service = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("service=")))
                .and_then(Service::parse)
                .ok_or_else(|| {
                    Failure::Status(
                        StatusCode::FORBIDDEN,
                        "only the smart HTTP protocol is served: use git 1.6.6 or newer".into(),
                    )
                })?;
            info_refs(&state, &repo, service, v2).await
        }
        (Method::POST, "git-upload-pack") => {
            let body = read_limited(request, state.options.max_negotiation_bytes).await?;
            if v2 {
                upload_pack_v2(&state, &repo, &body).await
            } else {
                upload_pack_v0(&state, &repo, &body).await
            }
        }
        (Method::POST, "git-receive-pack") => receive(&state, &repo, request).await,
        _ => Err(Failure::Status(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".into(),
        )),
    }
}

/// `GET /-/stats`: store requests by kind and cache sizes, as JSON.
fn stats(state: &AppState) -> Response {
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
    if let Some(disk) = &state.options.disk_cache {
        let (hits, misses) = disk.hits_and_misses();
        body["disk_cache_bytes"] = disk.held_bytes().into();
        body["disk_cache_hits"] = hits.into();
        body["disk_cache_misses"] = misses.into();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Logs the session id a client sent (`session-id=...`), so that its trace and the
/// server's log can be matched.
fn log_client_session<'a>(repo: &RepoName, caps: impl IntoIterator<Item = &'a String>) {
    if let Some(sid) = caps.into_iter().find_map(|c| c.strip_prefix("session-id=")) {
        tracing::info!(repo = %repo, client_session_id = sid, "client session");
    }
}

fn wants_v2(headers: &HeaderMap) -> bool {
    headers
        .get_all("git-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(':'))
        .any(|p| p.trim() == "version=2")
}

fn git_response(content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, max-age=0, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::EXPIRES,
        HeaderValue::from_static("Fri, 01 Jan 1980 00:00:00 GMT"),
    );
    response
}

async fn existing(state: &AppState, repo: &RepoName) -> Result<Snapshot, Failure> {
    state
        .repos
        .snapshot(repo)
        .await?
        .ok_or_else(|| RepoError::NotFound(repo.clone()).into())
}

async fn info_refs(
    state: &AppState,
    repo: &RepoName,
    service: Service,
    v2: bool,
) -> Result<Response, Failure> {
    let features = &state.options.features;
    if service == Service::UploadPack && v2 {
        // The v2 capabilities name no ref, so the manifest is not read: the client's
        // next request (ls-refs or fetch) reads it, and answers a missing repository.
        return Ok(git_response(
            "application/x-git-upload-pack-advertisement",
            Body::from(advertise::v2_capabilities(features)),
        ));
    }
    let snapshot = state.repos.snapshot(repo).await?;
    if snapshot.is_none() && (service == Service::UploadPack || !state.repos.config.auto_create) {
        return Err(RepoError::NotFound(repo.clone()).into());
    }
    let manifest = snapshot.as_ref().map(|s| &s.manifest);
    let body = match (service, v2) {
        (Service::UploadPack, true) => advertise::v2_capabilities(features),
        // git http-backend leaves out the preamble when a v2 client asks receive-pack.
        (Service::ReceivePack, true) => advertise::v0(service, manifest, false, features),
        (_, false) => advertise::v0(service, manifest, true, features),
    };
    let content_type = match service {
        Service::UploadPack => "application/x-git-upload-pack-advertisement",
        Service::ReceivePack => "application/x-git-receive-pack-advertisement",
    };
    Ok(git_response(content_type, Body::from(body)))
}

/// The request body as a reader, gunzipped if the client compressed it.
fn body_reader(request: Request) -> Box<dyn AsyncRead + Send + Unpin> {
    let gzip = request
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip"));
    let stream = request
        .into_body()
        .into_data_stream()
        .map_err(io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    if gzip {
        Box::new(async_compression::tokio::bufread::GzipDecoder::new(
            BufReader::new(reader),
        ))
    } else {
        Box::new(reader)
    }
}

async fn read_limited(request: Request, limit: usize) -> Result<Vec<u8>, Failure> {
    let mut reader = body_reader(request).take(limit as u64 + 1);
    let mut body = Vec::new();
    reader.read_to_end(&mut body).await.map_err(|e| {
        Failure::Status(
            StatusCode::BAD_REQUEST,
            format!("reading the request failed: {e}"),
        )
    })?;
    if body.len() > limit {
        return Err(Failure::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request larger than {limit} bytes"),
        ));
    }
    Ok(body)
}

/// The shallow update (for a `deepen...` request) and the walk limits of a fetch.
async fn limits(
    odb: &Arc<crate::repo::Odb>,
    manifest: &crate::repo::Manifest,
    wants: &[gix_hash::ObjectId],
    shallows: &[gix_hash::ObjectId],
    deepen: &upload_pack::Deepen,
    filter: Option<&str>,
) -> Result<(ShallowUpdate, WalkLimits), Failure> {
    let filter = match filter {
        Some(spec) => Filter::parse(spec).map_err(Failure::Git)?,
        None => Filter::None,
    };
    // The client may name shallow commits this repository does not have (made from
    // another remote); only known ones matter.
    let client_shallow: HashSet<_> = shallows
        .iter()
        .filter(|id| odb.contains(id))
        .copied()
        .collect();
    let boundary = match (deepen.depth, deepen.relative) {
        (Some(depth), false) => Some(Boundary::Depth(depth)),
        (Some(depth), true) => Some(Boundary::RelativeDepth(depth)),
        (None, _) if deepen.requested() => {
            let not = deepen
                .not
                .iter()
                .map(|name| {
                    fetch::resolve_ref(manifest, name).ok_or_else(|| {
                        Failure::Git(format!("upload-pack: deepen-not: no such ref {name:?}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(Boundary::RevList {
                since: deepen.since,
                not,
            })
        }
        (None, _) => None,
    };
    let update = match boundary {
        Some(boundary) => {
            match fetch::deepen(
                odb.clone(),
                wants.to_vec(),
                boundary,
                client_shallow.clone(),
            )
            .await
            {
                Ok(update) => update,
                Err(e @ crate::repo::OdbError::NothingSelected) => {
                    return Err(Failure::Git(format!("upload-pack: {e}")));
                }
                Err(e) => return Err(RepoError::from(e).into()),
            }
        }
        None => ShallowUpdate::default(),
    };
    // Sent commits stop at the new boundary and at the client's shallow commits that
    // stay shallow: the history below those is not the client's to get.
    let mut shallow = update.boundary.clone();
    shallow.extend(
        client_shallow
            .iter()
            .filter(|id| !update.unshallow.contains(id))
            .copied(),
    );
    let limits = WalkLimits {
        shallow,
        client_shallow,
        filter,
    };
    Ok((update, limits))
}

/// Whether every want reaches a common commit (blocking walk, off the runtime).
async fn can_give_up(
    odb: &Arc<crate::repo::Odb>,
    wants: &[gix_hash::ObjectId],
    common: &[gix_hash::ObjectId],
) -> Result<bool, Failure> {
    if common.is_empty() {
        return Ok(false);
    }
    let (odb, wants, common) = (odb.clone(), wants.to_vec(), common.to_vec());
    tokio::task::spawn_blocking(move || fetch::wants_reach_common(odb.as_ref(), &wants, &common))
        .await
        .map_err(|e| Failure::Status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| RepoError::from(e).into())
}

const UPLOAD_RESULT: &str = "application/x-git-upload-pack-result";

/// What a fetch request asks for, whichever protocol version carried it.
struct Wanted<'a> {
    wants: &'a [gix_hash::ObjectId],
    haves: &'a [gix_hash::ObjectId],
    shallows: &'a [gix_hash::ObjectId],
    deepen: &'a upload_pack::Deepen,
    filter: Option<&'a str>,
    done: bool,
}

/// The server's side of one negotiation round.
struct Negotiation {
    odb: Arc<crate::repo::Odb>,
    update: ShallowUpdate,
    limits: WalkLimits,
    /// The client's haves this repository has.
    common: Vec<gix_hash::ObjectId>,
    /// Whether every want reaches a common commit, so `ready` may be said.
    can_give_up: bool,
}

/// Checks the wants and works out the shallow update, the walk limits and what is in
/// common: the same for protocol v0/v1 and v2.
async fn negotiation(
    state: &AppState,
    repo: &RepoName,
    snapshot: &Snapshot,
    wanted: Wanted<'_>,
) -> Result<Negotiation, Failure> {
    let odb = Arc::new(state.repos.odb(repo, &snapshot.manifest).await?);
    if let Some(id) = fetch::unknown_wants(&odb, wanted.wants).first() {
        return Err(Failure::Git(format!("upload-pack: not our ref {id}")));
    }
    let (update, limits) = limits(
        &odb,
        &snapshot.manifest,
        wanted.wants,
        wanted.shallows,
        wanted.deepen,
        wanted.filter,
    )
    .await?;
    let common = fetch::common_haves(&odb, wanted.haves);
    let can_give_up = !wanted.done && can_give_up(&odb, wanted.wants, &common).await?;
    Ok(Negotiation {
        odb,
        update,
        limits,
        common,
        can_give_up,
    })
}

async fn upload_pack_v0(
    state: &AppState,
    repo: &RepoName,
    body: &[u8],
) -> Result<Response, Failure> {
    let request = upload_pack::Request::parse(body)?;
    log_client_session(repo, &request.caps);
    let snapshot = existing(state, repo).await?;
    let Negotiation {
        odb,
        update,
        limits,
        common,
        can_give_up,
    } = negotiation(
        state,
        repo,
        &snapshot,
        Wanted {
            wants: &request.wants,
            haves: &request.haves,
            shallows: &request.shallows,
            deepen: &request.deepen,
            filter: request.filter.as_deref(),
            done: request.done,
        },
    )
    .await?;
    let answer = upload_pack::negotiate(&request, &common, can_give_up);
    // A client that asked to deepen hears about its new boundary first, every round
    // (git sends the section only then; a shallow client that does not deepen reads
    // none).
    let lines = if request.deepen.requested() {
        let mut w = PktWriter::new();
        upload_pack::shallow_lines(&mut w, &update.shallow, &update.unshallow);
        w.flush();
        w.raw(&answer.lines);
        w.finish()
    } else {
        answer.lines
    };
    if !answer.send_pack {
        return Ok(git_response(UPLOAD_RESULT, Body::from(lines)));
    }
    let framing = request.framing();
    let chunks = fetch::pack(
        odb,
        &snapshot.manifest,
        FetchRequest {
            wants: request.wants.clone(),
            common,
            include_tag: request.has("include-tag"),
            limits,
            unshallow: update.unshallow,
            thin_pack: request.has("thin-pack"),
        },
    );
    let suffix = match framing {
        Framing::Raw => Bytes::new(),
        Framing::Sideband(_) => Bytes::from_static(b"0000"),
    };
    let progress = !request.has("no-progress");
    let body = protocol::pack_response(lines, chunks, framing, progress, suffix);
    Ok(git_response(UPLOAD_RESULT, Body::from_stream(body)))
}

async fn upload_pack_v2(
    state: &AppState,
    repo: &RepoName,
    body: &[u8],
) -> Result<Response, Failure> {
    let request = v2::CommandRequest::parse(body)?;
    log_client_session(repo, &request.caps);
    // The v2 capability advertisement did not look for the repository (it names no
    // ref), so a missing one is reported here, in words git shows its user.
    let snapshot = state
        .repos
        .snapshot(repo)
        .await?
        .ok_or_else(|| Failure::Git(format!("repository '{repo}' not found")))?;
    match request.command.as_str() {
        "ls-refs" => {
            let lines = v2::ls_refs(&snapshot.manifest, &request.args)?;
            Ok(git_response(UPLOAD_RESULT, Body::from(lines)))
        }
        "fetch" => {
            let mut fetch = v2::Fetch::parse(&request.args)?;
            if let Some(name) = fetch.want_refs.first()
                && !state.options.features.ref_in_want
            {
                return Err(Failure::Git(format!(
                    "upload-pack: unexpected line: 'want-ref {name}'"
                )));
            }
            let wanted_refs = v2::resolve_want_refs(&snapshot.manifest, &fetch.want_refs)?;
            fetch.wants.extend(wanted_refs.iter().map(|(id, _)| *id));
            let Negotiation {
                odb,
                update,
                limits,
                common,
                can_give_up,
            } = negotiation(
                state,
                repo,
                &snapshot,
                Wanted {
                    wants: &fetch.wants,
                    haves: &fetch.haves,
                    shallows: &fetch.shallows,
                    deepen: &fetch.deepen,
                    filter: fetch.filter.as_deref(),
                    done: fetch.done,
                },
            )
            .await?;
            let acked = {
                let (odb, common) = (odb.clone(), common.clone());
                tokio::task::spawn_blocking(move || fetch::v2_acknowledged(&odb, &common))
                    .await
                    .map_err(|e| Failure::Status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                    .map_err(RepoError::from)?
            };
            let (acks, send_pack) = v2::acknowledgments(&fetch, &acked, can_give_up);
            if !send_pack {
                return Ok(git_response(UPLOAD_RESULT, Body::from(acks)));
            }
            let mut lines = acks.to_vec();
            lines.extend_from_slice(&v2::before_pack(
                &fetch,
                &update.shallow,
                &update.unshallow,
                &wanted_refs,
            ));
            let chunks = fetch::pack(
                odb,
                &snapshot.manifest,
                FetchRequest {
                    wants: fetch.wants.clone(),
                    common,
                    include_tag: fetch.include_tag,
                    limits,
                    unshallow: update.unshallow,
                    thin_pack: fetch.thin_pack,
                },
            );
            let framing = Framing::from_caps(true, false);
            let body = protocol::pack_response(
                Bytes::from(lines),
                chunks,
                framing,
                !fetch.no_progress,
                Bytes::from_static(b"0000"),
            );
            Ok(git_response(UPLOAD_RESULT, Body::from_stream(body)))
        }
        "object-info" => {
            let ids = v2::object_info_request(&request.args)?;
            let odb = Arc::new(state.repos.odb(repo, &snapshot.manifest).await?);
            let sizes = tokio::task::spawn_blocking(move || {
                ids.into_iter()
                    .map(|id| Ok((id, odb.size(&id)?)))
                    .collect::<Result<Vec<_>, crate::repo::OdbError>>()
            })
            .await
            .map_err(|e| Failure::Status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(RepoError::from)?;
            Ok(git_response(
                UPLOAD_RESULT,
                Body::from(v2::object_info(&sizes)),
            ))
        }
        other => Err(Failure::Git(format!(
            "the v2 command {other:?} is not supported by this server"
        ))),
    }
}

const RECEIVE_RESULT: &str = "application/x-git-receive-pack-result";

async fn receive(state: &AppState, repo: &RepoName, request: Request) -> Result<Response, Failure> {
    let mut reader = body_reader(request);
    let parsed = match receive_pack::read_request(&mut reader).await {
        Ok(parsed) => parsed,
        Err((e, framing)) => {
            let body = receive_pack::fatal(&e.0, framing);
            return Ok(git_response(RECEIVE_RESULT, Body::from(body)));
        }
    };
    log_client_session(repo, &parsed.caps);
    if parsed.commands.is_empty() {
        return Ok(git_response(RECEIVE_RESULT, Body::empty()));
    }
    let framing = parsed.framing();
    let atomic = parsed.has("atomic");
    let outcome = push::receive(&state.repos, repo, parsed.commands, Some(reader), atomic).await;
    let body = match outcome {
        Ok(report) => {
            for (name, result) in &report.refs {
                if let Err(reason) = result {
                    tracing::info!(repo = %repo, r#ref = %name, %reason, "ref update refused");
                }
            }
            receive_pack::report(&report, framing)
        }
        Err(RepoError::NotFound(name)) => {
            return Err(RepoError::NotFound(name).into());
        }
        Err(e) => {
            tracing::error!(repo = %repo, error = %e, "push failed");
            receive_pack::fatal(&format!("push failed: {e}"), framing)
        }
    };
    Ok(git_response(RECEIVE_RESULT, Body::from(body)))
}
