//! The HTTP layer (axum), kept thin: it finds the route, authenticates the request once
//! ([`auth`]), hands the body to the protocol or access layer, and maps results to
//! statuses. No git logic lives here.
//!
//! Routes, one file per family; a repository name may be nested (`org/name`) and may
//! end in `.git`:
//! - [`info_refs`]: `GET /<repo>/info/refs?service=git-upload-pack|git-receive-pack`
//! - [`upload_pack`]: `POST /<repo>/git-upload-pack` (clone, fetch, ls-refs)
//! - [`receive_pack`]: `POST /<repo>/git-receive-pack` (push)
//! - [`lfs`]: `/<repo>.git/info/lfs/...`, Git LFS (batch API, objects, verify, locks)
//! - [`raw`]: `GET /<repo>.git/raw/<ref-or-commit>/<path>`, one file (LFS resolved)
//! - [`api`]: `/-/api/v1/...`, the management API (JSON)
//! - [`stats`]: `GET /-/stats`, store requests and caches (JSON, server admins), and
//!   `GET /metrics`, the Prometheus metrics
//! - [`health`]: `GET /-/health` and `GET /-/ready`, the probes (anyone)
//!
//! Below the routes, the connection: [`serve`] accepts, runs the TLS handshake when
//! [`tls`] is on, bounds every connection's time ([`ConnectionLimits`]) and drains on
//! shutdown.
//!
//! What a request needs (read or write of a repository) follows from its route and
//! method alone; `info/refs?service=git-receive-pack` and the receive-pack POST both
//! need write. Request bodies may be gzip-encoded and chunked. Repository paths are not
//! percent-decoded: a `%` is not allowed in a repository name, so encoded traversal
//! cannot slip through.

mod api;
mod auth;
mod health;
mod idle;
mod info_refs;
mod lfs;
mod observe;
mod raw;
mod receive_pack;
mod stats;
#[cfg(feature = "tls")]
pub mod tls;
mod upload_pack;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::net::TcpListener;

use crate::access::{Access, Caller};
use crate::protocol::Features;
use crate::protocol::pktline::err_line;
use crate::protocol::serve::{Answer, Refusal, Reply};
use crate::repo::{RepoError, RepoName, Repos};

/// What the HTTP layer accepts and offers.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest upload-pack (negotiation) request body, after decompression.
    pub max_negotiation_bytes: usize,
    /// What one request may ask.
    pub limits: crate::protocol::RequestLimits,
    /// Optional protocol features.
    pub features: Features,
    /// The local pack cache in front of the store, if any (for `/-/stats`).
    pub disk_cache: Option<crate::disk_cache::DiskCacheStore>,
    /// A header set by an authenticating reverse proxy that names the user (as git
    /// http-backend takes `REMOTE_USER`); `None` unless configured.
    pub trust_proxy_user: Option<HeaderName>,
    /// The addresses the proxy's header is accepted from.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The store's retry counts (for `/-/stats`).
    pub retries: stowage_store::retry::RetryStats,
    /// What a connection may take of the server's time and memory.
    pub connections: ConnectionLimits,
    /// The URL clients reach this server by (`--public-url`), for links in LFS
    /// answers; by default the request's `Host`, over HTTPS when [`Options::tls`] is
    /// on and plain HTTP otherwise.
    pub public_url: Option<String>,
    /// Git LFS settings.
    pub lfs: crate::lfs::LfsConfig,
    /// Transfers of LFS objects straight to and from the store, where it offers them.
    pub lfs_direct: Option<crate::lfs::Direct>,
    /// How long open requests may run on after the signal to stop (`--drain-secs`).
    pub drain: Duration,
    /// Where `/metrics` and the probes are served apart from git (`--metrics-listen`),
    /// if anywhere: without authentication there, and `/metrics` not on the main
    /// listener then.
    pub metrics_listen: Option<SocketAddr>,
    /// How many pack requests run at once, per repository and in all.
    pub admission: crate::admission::Limits,
    /// How webhooks are delivered.
    pub webhooks: crate::hooks::WebhookConfig,
    /// HTTPS: the certificate served and the files it is reloaded from (`--tls-cert`,
    /// `--tls-key`); `None`: plain HTTP.
    #[cfg(feature = "tls")]
    pub tls: Option<tls::Tls>,
}

impl Options {
    /// The scheme clients reach this server by, when no public URL says otherwise.
    fn scheme(&self) -> &'static str {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            return "https";
        }
        "http"
    }
}

/// Limits on each connection and request body, against clients that are slow, idle,
/// or send too much before the request even starts.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A request's headers must arrive within this time (an idle kept-alive connection
    /// is closed after it too). `--header-timeout-secs`.
    pub header_timeout: Duration,
    /// The largest request head, start line and headers (`--max-header-kb`); a bigger
    /// one gets `431`.
    pub max_header_bytes: usize,
    /// The most headers in a request.
    pub max_headers: usize,
    /// A request body must bring at least this many bytes per second
    /// (`--min-request-rate`; 0: no minimum), measured over each `rate_window`
    /// (`--request-rate-window-secs`): a client that sends a byte a second is cut off.
    pub min_request_rate: u64,
    pub rate_window: Duration,
    /// A connection whose response writes make no progress for this long (the client
    /// reads nothing) is closed (`--idle-timeout-secs`; `None`: never). A slow reader
    /// that keeps reading is not cut.
    pub idle_timeout: Option<Duration>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_secs(30),
            max_header_bytes: 64 << 10,
            max_headers: 100,
            min_request_rate: 1024,
            rate_window: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(60)),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_negotiation_bytes: 64 << 20,
            limits: Default::default(),
            features: Features::default(),
            disk_cache: None,
            trust_proxy_user: None,
            trusted_proxies: vec![
                ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
                ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            retries: Default::default(),
            connections: ConnectionLimits::default(),
            public_url: None,
            lfs: Default::default(),
            lfs_direct: None,
            drain: Duration::from_secs(30),
            metrics_listen: None,
            admission: Default::default(),
            webhooks: Default::default(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

#[derive(Debug, Clone)]
struct AppState {
    repos: Arc<Repos>,
    access: Access,
    webhooks: crate::hooks::Webhooks,
    lfs: crate::lfs::Lfs,
    options: Arc<Options>,
    health: Arc<health::Health>,
    metrics: crate::metrics::State,
    admission: crate::admission::Admission,
    /// Whether this is the `--metrics-listen` listener's application.
    metrics_listener: bool,
}

/// The application: every route of the server.
pub fn router(repos: Repos, access: Access, options: Options) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(app_state(repos, access, options, Arc::default()))
}

fn app_state(
    repos: Repos,
    access: Access,
    options: Options,
    health: Arc<health::Health>,
) -> AppState {
    let lfs = crate::lfs::Lfs::new(repos.store.clone(), options.lfs.clone())
        .with_direct(options.lfs_direct.clone());
    let repos = Arc::new(repos);
    let metrics = crate::metrics::State {
        repos: repos.clone(),
        retries: options.retries.clone(),
        lfs: lfs.counters.clone(),
        disk_cache: options.disk_cache.clone(),
    };
    let admission = crate::admission::Admission::new(options.admission.clone());
    let webhooks =
        crate::hooks::Webhooks::new(repos.clone(), access.clone(), options.webhooks.clone());
    AppState {
        repos,
        access,
        webhooks,
        lfs,
        options: Arc::new(options),
        health,
        metrics,
        admission,
        metrics_listener: false,
    }
}

/// The `--metrics-listen` application: `/metrics` and the probes, for anyone.
async fn metrics_app(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let path = request.uri().path();
    let answer = match path {
        "/metrics" => stats::metrics(&state, peer, request).await,
        "/-/health" => Ok(health::health().await),
        "/-/ready" => Ok(health::ready(&state).await),
        _ => Err(Failure::status(StatusCode::NOT_FOUND, "not found")),
    };
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// Serves on `listener` until `shutdown` completes, then drains: `/-/ready` answers
/// 503, no connection is accepted any more, open requests run on for
/// [`Options::drain`], and pushes that are storing their pack and swapping the manifest
/// finish whatever that time.
///
/// Connections are served by hyper's HTTP/1 with a timer, so that the header timeout
/// of [`ConnectionLimits`] holds (axum's own `serve` runs hyper without one, which
/// leaves a client that sends a byte a second connected forever).
///
/// `metrics_listener` (`--metrics-listen`) serves `/metrics` and the probes until the
/// process ends, so that a prober sees `/-/ready` answer 503 while the server drains.
/// leaves a client that sends a byte a second connected forever). With
/// [`Options::tls`], each connection's task runs the TLS handshake first, within the
/// header timeout, and the certificate files are watched for renewals while serving.
pub async fn serve(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    repos: Repos,
    access: Access,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = options.connections.clone();
    let drain = options.drain;
    #[cfg(feature = "tls")]
    let tls = options.tls.clone();
    #[cfg(feature = "tls")]
    let _reloads = tls.as_ref().map(tls::Tls::watch);
    let health = Arc::new(health::Health::default());
    let pushes = repos.clone();
    let state = app_state(repos, access, options, health.clone());
    if let Some(listener) = metrics_listener {
        let app = Router::new().fallback(metrics_app).with_state(AppState {
            metrics_listener: true,
            ..state.clone()
        });
        tokio::spawn(
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .into_future(),
        );
    }
    // Work another instance left (a crash after a push, say) is taken up before the
    // first request is; then every sweep interval.
    state.webhooks.sweep().await;
    tokio::spawn(state.webhooks.clone().sweep_forever());
    let app = Router::new().fallback(handle).with_state(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192).max(64 << 10))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let http = Arc::new(http);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses go out in many small writes (pkt-lines, side-band frames): without
        // TCP_NODELAY the last of them can wait for the client's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {e}");
        }
        let io = idle::WriteTimeout::new(tcp, limits.idle_timeout);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                tower::ServiceExt::oneshot(app.clone(), request.map(Body::new))
            });
        // Held from here, so that a drain also waits for a handshake under way.
        let watcher = graceful.watcher();
        let http = http.clone();
        #[cfg(feature = "tls")]
        let handshake = tls.clone().map(|tls| (tls, limits.header_timeout));
        tokio::spawn(async move {
            #[cfg(feature = "tls")]
            if let Some((tls, within)) = handshake {
                if let Some(stream) = tls.handshake(io, within, peer).await {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    ended(
                        peer,
                        watcher.watch(http.serve_connection(io, service)).await,
                    );
                }
                return;
            }
            let io = hyper_util::rt::TokioIo::new(io);
            ended(
                peer,
                watcher.watch(http.serve_connection(io, service)).await,
            );
        });
    }
    health.start_draining();
    drop(listener);
    tracing::info!(secs = drain.as_secs(), "draining open requests");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            secs = drain.as_secs(),
            "drain time is up: open requests are cut"
        );
    }
    // A push between storing its pack and swapping the manifest is never cut: its
    // store requests have their own time limits.
    if !pushes.commits_done(Duration::from_secs(300)).await {
        tracing::warn!("a push is still swapping its manifest; stopping anyway");
    }
    Ok(())
}

fn ended(peer: SocketAddr, served: Result<(), hyper::Error>) {
    if let Err(e) = served {
        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}

/// An answer that is not a success.
#[derive(Debug)]
enum Failure {
    /// A status with a plain-text reason (git shows a 403's as `remote:` lines).
    Status(StatusCode, String),
    /// A repository that does not exist, or that the caller may not know of: the two
    /// answers are the same.
    NotFound(RepoName),
    /// Credentials needed, or the ones given are wrong: `401` with a Basic challenge.
    Unauthorized,
    /// Too many failed credentials from this address.
    Throttled(Duration),
    /// A protocol-level refusal, sent as an `ERR` pkt-line with status 200 so that git
    /// shows the message to its user.
    Git(String),
    /// A refusal of a known user (named in the request log).
    Of(String, Box<Failure>),
    /// Admission control refused the request: `429` for a busy repository, `503` for
    /// a busy server, with `Retry-After`.
    Busy(crate::admission::Refused),
}

impl From<crate::admission::Refused> for Failure {
    fn from(refused: crate::admission::Refused) -> Self {
        Failure::Busy(refused)
    }
}

impl Failure {
    fn status(status: StatusCode, message: impl Into<String>) -> Self {
        Failure::Status(status, message.into())
    }

    fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "request failed");
        Failure::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    }

    /// Status, headers and message of every failure but [`Failure::Git`] and
    /// [`Failure::Of`].
    fn parts(self) -> (StatusCode, Option<(header::HeaderName, String)>, String) {
        match self {
            Failure::Status(status, message) => (status, None, message),
            Failure::NotFound(repo) => (
                StatusCode::NOT_FOUND,
                None,
                format!("repository {repo} not found"),
            ),
            Failure::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                Some((
                    header::WWW_AUTHENTICATE,
                    r#"Basic realm="stowage""#.to_owned(),
                )),
                "authentication required: use a stowage access token as the password".into(),
            ),
            Failure::Throttled(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                Some((
                    header::RETRY_AFTER,
                    wait.as_secs_f64().ceil().max(1.0).to_string(),
                )),
                "too many failed attempts to authenticate from this address; try again later"
                    .into(),
            ),
            Failure::Busy(refused) => (
                match refused {
                    crate::admission::Refused::Repository => StatusCode::TOO_MANY_REQUESTS,
                    crate::admission::Refused::Process => StatusCode::SERVICE_UNAVAILABLE,
                },
                Some((
                    header::RETRY_AFTER,
                    refused.retry_after().as_secs().to_string(),
                )),
                refused.to_string(),
            ),
            Failure::Git(message) => (StatusCode::BAD_REQUEST, None, message),
            Failure::Of(_, inner) => inner.parts(),
        }
    }

    /// The failure as JSON (`{"error": "..."}`), for the management API.
    fn into_json(self) -> Response {
        let user = self.user();
        let (status, extra, message) = self.parts();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "error": message }).to_string(),
        )
            .into_response();
        add_header(&mut response, extra);
        tag_user(response, user)
    }

    fn user(&self) -> Option<String> {
        match self {
            Failure::Of(user, _) => Some(user.clone()),
            _ => None,
        }
    }

    /// The failure inside any [`Failure::Of`].
    fn innermost(&self) -> &Failure {
        match self {
            Failure::Of(_, inner) => inner.innermost(),
            other => other,
        }
    }
}

fn add_header(response: &mut Response, header: Option<(header::HeaderName, String)>) {
    if let Some((name, value)) = header
        && let Ok(value) = HeaderValue::from_str(&value)
    {
        response.headers_mut().insert(name, value);
    }
}

fn tag_user(mut response: Response, user: Option<String>) -> Response {
    if let Some(user) = user {
        response.extensions_mut().insert(LoggedUser(user));
    }
    response
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        if let Failure::Git(message) = self {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-git-upload-pack-result")],
                err_line(&message),
            )
                .into_response();
        }
        let user = self.user();
        let (status, extra, message) = self.parts();
        let mut response = (status, format!("{message}\n")).into_response();
        add_header(&mut response, extra);
        tag_user(response, user)
    }
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotFound(repo) | Refusal::Repo(RepoError::NotFound(repo)) => {
                Failure::NotFound(repo)
            }
            Refusal::Git(message) => Failure::Git(message),
            Refusal::Repo(e) => Failure::internal(&e),
            Refusal::Internal(e) => Failure::internal(&e),
        }
    }
}

/// Who a response was for, kept in its extensions for the request log.
#[derive(Debug, Clone)]
struct LoggedUser(String);

/// Marks `response` as made for `caller`.
fn for_caller(response: Response, caller: &Caller) -> Response {
    tag_user(response, Some(caller.name().to_owned()))
}

async fn handle(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    use tracing::Instrument;
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!(
        crate::telemetry::REQUEST,
        service = tracing::field::Empty,
        protocol = tracing::field::Empty,
        repo = tracing::field::Empty,
        user = tracing::field::Empty,
        session = tracing::field::Empty,
    );
    let observation = observe::Observation::start(
        method,
        path,
        request.headers(),
        state.access.enabled(),
        span.clone(),
    );
    span.record("service", observation.service);
    span.record("protocol", observation.version);
    let request = request.map(|body| observation.request_body(body));
    let response = match route(&state, peer, request).instrument(span.clone()).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    };
    let user = response
        .extensions()
        .get::<LoggedUser>()
        .map_or("-", |u| u.0.as_str())
        .to_owned();
    span.record("user", user.as_str());
    observation.response(response, user)
}

/// The repository routes, by the path's last part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RepoRoute {
    InfoRefs,
    UploadPack,
    ReceivePack,
}

async fn route(state: &AppState, peer: SocketAddr, request: Request) -> Result<Response, Failure> {
    let path = request.uri().path().to_owned();
    let not_found = || Failure::status(StatusCode::NOT_FOUND, "not found");
    let path = path.strip_prefix('/').ok_or_else(not_found)?;
    if path == "-/stats" {
        return stats::handle(state, peer, request).await;
    }
    if path == "metrics" {
        return stats::metrics(state, peer, request).await;
    }
    if path == "-/health" || path == "-/ready" {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return Err(Failure::status(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
            ));
        }
        return Ok(if path == "-/health" {
            health::health().await
        } else {
            health::ready(state).await
        });
    }
    if let Some(rest) = path.strip_prefix("-/api/v1/") {
        return api::handle(state, peer, rest, request).await;
    }
    // No segment of a repository name ends in `.git`: the first `.git/` ends the name.
    if let Some((repo, rest)) = path.split_once(".git/") {
        let name = |repo| {
            let name = RepoName::new(repo)
                .map_err(|e| Failure::status(StatusCode::BAD_REQUEST, e.to_string()))?;
            tracing::Span::current().record("repo", name.as_str());
            Ok::<_, Failure>(name)
        };
        if let Some(lfs_path) = rest.strip_prefix("info/lfs/") {
            return Ok(lfs::handle(state, peer, &name(repo)?, lfs_path, request).await);
        }
        if let Some(spec) = rest.strip_prefix("raw/") {
            return raw::handle(state, peer, &name(repo)?, spec, request).await;
        }
    }
    let (repo, route) = if let Some(repo) = path.strip_suffix("/info/refs") {
        (repo, RepoRoute::InfoRefs)
    } else if let Some(repo) = path.strip_suffix("/git-upload-pack") {
        (repo, RepoRoute::UploadPack)
    } else if let Some(repo) = path.strip_suffix("/git-receive-pack") {
        (repo, RepoRoute::ReceivePack)
    } else {
        return Err(not_found());
    };
    let repo =
        RepoName::new(repo).map_err(|e| Failure::status(StatusCode::BAD_REQUEST, e.to_string()))?;
    tracing::Span::current().record("repo", repo.as_str());
    let method = request.method().clone();
    match (method, route) {
        (Method::GET, RepoRoute::InfoRefs) => info_refs::handle(state, peer, &repo, request).await,
        (Method::POST, RepoRoute::UploadPack) => {
            upload_pack::handle(state, peer, &repo, request).await
        }
        (Method::POST, RepoRoute::ReceivePack) => {
            receive_pack::handle(state, peer, &repo, request).await
        }
        _ => Err(Failure::status(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        )),
    }
}

/// The protocol version the request asks for (`Git-Protocol`).
fn protocol_version(headers: &HeaderMap) -> crate::protocol::Version {
    crate::protocol::Version::requested(
        headers
            .get_all("git-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

/// A protocol answer as an HTTP response, never cached by anyone on the way.
fn git_response(answer: Answer) -> Response {
    let body = match answer.body {
        Reply::Whole(bytes) => Body::from(bytes),
        Reply::Stream(stream) => Body::from_stream(stream),
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
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

/// `response`, whose body holds `permit` until it ends.
fn holding<T: Send + Unpin + 'static>(response: Response, held: T) -> Response {
    response.map(|body| Body::new(Holding { body, _held: held }))
}

/// A body and what its request holds until the body ends (admission places, a signal
/// for work that waits on the answer).
struct Holding<T> {
    body: Body,
    _held: T,
}

impl<T: Send + Unpin + 'static> http_body::Body for Holding<T> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The URL the client reached this server by (`--public-url`, else the scheme and the
/// request's `Host`), for links in answers; `None` without a valid `Host`.
fn origin(state: &AppState, headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(url) = &state.options.public_url {
        return Some(url.trim_end_matches('/').to_owned());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        })?;
    Some(format!("{}://{host}", state.options.scheme()))
}

/// The request body as a reader, gunzipped if the client compressed it, and cut off
/// if it arrives slower than the limits allow.
fn body_reader(request: Request, limits: &ConnectionLimits) -> Box<dyn AsyncRead + Send + Unpin> {
    let gzip = request
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip"));
    let stream = request
        .into_body()
        .into_data_stream()
        .map_err(io::Error::other);
    let stream = MinRate::new(stream, limits.min_request_rate, limits.rate_window);
    let reader = tokio_util::io::StreamReader::new(stream);
    if gzip {
        Box::new(async_compression::tokio::bufread::GzipDecoder::new(
            BufReader::new(reader),
        ))
    } else {
        Box::new(reader)
    }
}

/// A body stream that fails when the client is too slow: for every `window` of time
/// spent waiting on the client (the consumer asked for data and none was there), the
/// client must have brought `per_window` bytes. Time the server spends on other work
/// between reads does not count against the client.
struct MinRate<S> {
    inner: S,
    /// Bytes each window must bring (0: no minimum).
    per_window: u64,
    window: Duration,
    /// Bytes and waiting time of the current window.
    got: u64,
    waited: Duration,
    /// Since when the consumer has been waiting for data, if it is.
    waiting_since: Option<tokio::time::Instant>,
    /// Wakes the consumer when the window's waiting time would be used up.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<S> MinRate<S> {
    fn new(inner: S, rate: u64, window: Duration) -> Self {
        MinRate {
            inner,
            per_window: rate.saturating_mul(window.as_secs().max(1)),
            window,
            got: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: Box::pin(tokio::time::sleep(window)),
        }
    }

    /// Ends a window whose waiting time is used up: an error if too little came.
    fn judge(&mut self, waited: Duration) -> Result<(), io::Error> {
        if waited < self.window {
            return Ok(());
        }
        if self.got < self.per_window {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the request body arrived slower than this server accepts (at least {} \
                     bytes in {:?})",
                    self.per_window, self.window
                ),
            ));
        }
        self.got = 0;
        self.waited = Duration::ZERO;
        Ok(())
    }
}

impl<S> futures::Stream for MinRate<S>
where
    S: futures::Stream<Item = io::Result<bytes::Bytes>> + Unpin,
{
    type Item = io::Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        let item = std::pin::Pin::new(&mut this.inner).poll_next(cx);
        if this.per_window == 0 {
            return item;
        }
        let now = tokio::time::Instant::now();
        match item {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += now - since;
                }
                this.got += chunk.len() as u64;
                let waited = this.waited;
                if let Err(e) = this.judge(waited) {
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Pending => loop {
                let since = *this.waiting_since.get_or_insert(now);
                let waited = this.waited + (now - since);
                if waited >= this.window {
                    if let Err(e) = this.judge(waited) {
                        return Poll::Ready(Some(Err(e)));
                    }
                    this.waiting_since = Some(now);
                    continue;
                }
                this.timer.as_mut().reset(now + (this.window - waited));
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            },
            other => other,
        }
    }
}

/// The request body as a stream of chunks (not decompressed: for bodies that are
/// content, not protocol), cut off if it arrives slower than the limits allow.
fn body_stream(request: Request, limits: &ConnectionLimits) -> stowage_store::ByteStream {
    use futures::StreamExt;
    let stream = request
        .into_body()
        .into_data_stream()
        .map_err(io::Error::other);
    MinRate::new(stream, limits.min_request_rate, limits.rate_window).boxed()
}

/// The whole request body, refused past `limit` bytes (after decompression).
async fn read_limited(
    request: Request,
    limit: usize,
    limits: &ConnectionLimits,
) -> Result<Vec<u8>, Failure> {
    let mut reader = body_reader(request, limits).take(limit as u64 + 1);
    let mut body = Vec::new();
    reader.read_to_end(&mut body).await.map_err(|e| {
        Failure::status(
            StatusCode::BAD_REQUEST,
            format!("reading the request failed: {e}"),
        )
    })?;
    if body.len() > limit {
        // Read on, a bounded amount for a short time, so that a client still sending
        // reads the refusal rather than a connection reset under it.
        let mut rest = reader.into_inner().take(DRAIN_BYTES);
        let mut sink = tokio::io::sink();
        let drain = tokio::io::copy(&mut rest, &mut sink);
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        return Err(Failure::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request larger than {limit} bytes"),
        ));
    }
    Ok(body)
}

/// How much of a refused request body is read before the refusal, and for how long.
const DRAIN_BYTES: u64 = 8 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// A body sending `chunk` bytes every `every`, `count` times.
    fn trickle(
        chunk: usize,
        every: Duration,
        count: usize,
    ) -> impl futures::Stream<Item = io::Result<bytes::Bytes>> + Unpin {
        Box::pin(futures::stream::unfold(0, move |n| async move {
            if n == count {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((Ok(bytes::Bytes::from(vec![b'x'; chunk])), n + 1))
        }))
    }

    async fn drain(
        stream: impl futures::Stream<Item = io::Result<bytes::Bytes>> + Unpin,
    ) -> io::Result<usize> {
        let mut stream = stream;
        let mut total = 0;
        while let Some(chunk) = stream.next().await {
            total += chunk?.len();
        }
        Ok(total)
    }

    #[tokio::test(start_paused = true)]
    async fn a_byte_a_second_is_cut_off() {
        let body = MinRate::new(
            trickle(1, Duration::from_secs(1), 100),
            100,
            Duration::from_secs(10),
        );
        let started = tokio::time::Instant::now();
        let e = drain(body).await.expect_err("too slow");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() <= Duration::from_secs(11),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_cut_off_too() {
        let body = MinRate::new(
            Box::pin(futures::stream::pending::<io::Result<bytes::Bytes>>()),
            100,
            Duration::from_secs(5),
        );
        assert!(drain(body).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_client_and_a_busy_server_pass() {
        let fast = MinRate::new(
            trickle(4096, Duration::from_millis(100), 100),
            1024,
            Duration::from_secs(2),
        );
        assert_eq!(drain(fast).await.expect("fast enough"), 4096 * 100);
        // The server reads a chunk, then works for a minute before it reads again:
        // that minute is not the client's.
        let mut busy = MinRate::new(
            trickle(100, Duration::from_millis(10), 5),
            1024,
            Duration::from_secs(2),
        );
        while let Some(chunk) = busy.next().await {
            chunk.expect("not the client's fault");
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }
}
