//! Answers git's requests for one repository: the info/refs advertisement, fetch
//! negotiation and pack streaming (v0/v1 and v2), and pushes. The HTTP layer has
//! checked access before it calls in here, and turns an [`Answer`] or a [`Refusal`]
//! into a response.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use gix_hash::ObjectId;
use tokio::io::AsyncRead;
use tracing::Instrument;

use super::pktline::PktWriter;
use super::{
    BadRequest, Body, Features, Framing, RequestLimits, Service, Version, advertise, receive_pack,
    upload_pack, v2,
};
use crate::metrics::{ReasonLabel, ResultLabel, record};
use crate::repo::fetch::{self, FetchRequest};
use crate::repo::odb::ObjectSource;
use crate::repo::push::{self, RefPolicy};
use crate::repo::walk::{Boundary, Filter, ShallowUpdate, WalkLimits};
use crate::repo::{Manifest, Odb, OdbError, RepoError, RepoName, Repos, Snapshot};

pub const UPLOAD_ADVERTISEMENT: &str = "application/x-git-upload-pack-advertisement";
pub const RECEIVE_ADVERTISEMENT: &str = "application/x-git-receive-pack-advertisement";
pub const UPLOAD_RESULT: &str = "application/x-git-upload-pack-result";
pub const RECEIVE_RESULT: &str = "application/x-git-receive-pack-result";

/// A protocol answer: its content type and its body.
#[derive(Debug)]
pub struct Answer {
    pub content_type: &'static str,
    pub body: Reply,
}

/// An answer's body: whole, or produced as the client reads it.
pub enum Reply {
    Whole(Bytes),
    Stream(Body),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Whole(b) => write!(f, "Whole({} bytes)", b.len()),
            Reply::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl Answer {
    fn whole(content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Answer {
            content_type,
            body: Reply::Whole(body.into()),
        }
    }
}

/// A request that gets no protocol answer.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The repository does not exist (an HTTP 404).
    #[error("repository {0} not found")]
    NotFound(RepoName),
    /// Refused in words git shows its user (an `ERR` pkt-line).
    #[error("{0}")]
    Git(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A task failed unexpectedly.
    #[error("{0}")]
    Internal(String),
}

impl From<BadRequest> for Refusal {
    fn from(e: BadRequest) -> Self {
        Refusal::Git(e.0)
    }
}

impl From<OdbError> for Refusal {
    fn from(e: OdbError) -> Self {
        Refusal::Repo(e.into())
    }
}

fn join_error(e: tokio::task::JoinError) -> Refusal {
    Refusal::Internal(e.to_string())
}

/// Logs the session id a client sent (`session-id=...`), so that its trace and the
/// server's log can be matched.
fn log_client_session<'a>(repo: &RepoName, caps: impl IntoIterator<Item = &'a String>) {
    if let Some(sid) = caps.into_iter().find_map(|c| c.strip_prefix("session-id=")) {
        tracing::Span::current().record("session", sid);
        tracing::info!(repo = %repo, client_session_id = sid, "client session");
    }
}

/// `GET info/refs?service=...`: the ref advertisement (v0/v1) or the capabilities (v2).
pub async fn info_refs(
    repos: &Repos,
    features: &Features,
    repo: &RepoName,
    service: Service,
    version: Version,
) -> Result<Answer, Refusal> {
    let snapshot = repos.snapshot(repo).await?;
    if service == Service::UploadPack && version == Version::V2 {
        // The v2 capabilities name no ref, only the object format: the client's next
        // request (ls-refs or fetch) answers a missing repository.
        let format = snapshot
            .as_ref()
            .map(|s| &s.manifest)
            .map_or("sha1", |m| &m.object_format);
        return Ok(Answer::whole(
            UPLOAD_ADVERTISEMENT,
            advertise::v2_capabilities(features, format),
        ));
    }
    if snapshot.is_none() && (service == Service::UploadPack || !repos.config.auto_create) {
        return Err(Refusal::NotFound(repo.clone()));
    }
    let manifest = snapshot.as_ref().map(|s| &s.manifest);
    let body = match (service, version) {
        // git http-backend leaves out the preamble when a v2 client asks receive-pack
        // (which speaks v0 to it: push has no v2).
        (Service::ReceivePack, Version::V2) => {
            advertise::v0(service, manifest, false, false, features)
        }
        (_, version) => advertise::v0(service, manifest, true, version == Version::V1, features),
    };
    let content_type = match service {
        Service::UploadPack => UPLOAD_ADVERTISEMENT,
        Service::ReceivePack => RECEIVE_ADVERTISEMENT,
    };
    Ok(Answer::whole(content_type, body))
}

/// `POST git-upload-pack`: one round of fetch negotiation, and the pack once it is done.
pub async fn upload_pack(
    repos: &Repos,
    features: &Features,
    limits: &RequestLimits,
    repo: &RepoName,
    body: &[u8],
    v2: bool,
) -> Result<Answer, Refusal> {
    let answered = if v2 {
        upload_pack_v2(repos, features, limits, repo, body).await
    } else {
        upload_pack_v0(repos, limits, repo, body).await
    };
    if let Err(refusal) = &answered {
        let result = match refusal {
            Refusal::Git(_) | Refusal::NotFound(_) => "refused",
            _ => "error",
        };
        record(|m| m.git_operation("upload_pack", result));
    }
    answered
}

/// Counts a fetch that sends a pack: a clone when the client has nothing.
fn count_fetch(haves: &[ObjectId]) {
    let operation = if haves.is_empty() { "clone" } else { "fetch" };
    record(|m| m.git_operation(operation, "ok"));
}

/// The shallow update (for a `deepen...` request) and the walk limits of a fetch.
async fn limits(
    odb: &Arc<Odb>,
    manifest: &Manifest,
    wants: &[ObjectId],
    shallows: &[ObjectId],
    deepen: &upload_pack::Deepen,
    filter: Option<&str>,
) -> Result<(ShallowUpdate, WalkLimits), Refusal> {
    let mut filter = match filter {
        Some(spec) => Filter::parse(spec).map_err(Refusal::Git)?,
        None => Filter::None,
    };
    if !filter.sparse_mut().is_empty() {
        let (odb, manifest) = (odb.clone(), manifest.clone());
        filter = tokio::task::spawn_blocking(move || {
            fetch::read_sparse_patterns(&odb, &manifest, &mut filter).map(|()| filter)
        })
        .await
        .map_err(join_error)?
        .map_err(|e| Refusal::Git(format!("upload-pack: {e}")))?;
    }
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
                        Refusal::Git(format!("upload-pack: deepen-not: no such ref {name:?}"))
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
                Err(e @ OdbError::NothingSelected) => {
                    return Err(Refusal::Git(format!("upload-pack: {e}")));
                }
                Err(e) => return Err(e.into()),
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
    odb: &Arc<Odb>,
    wants: &[ObjectId],
    common: &[ObjectId],
) -> Result<bool, Refusal> {
    if common.is_empty() {
        return Ok(false);
    }
    let (odb, wants, common) = (odb.clone(), wants.to_vec(), common.to_vec());
    Ok(tokio::task::spawn_blocking(move || {
        fetch::wants_reach_common(odb.as_ref(), &wants, &common)
    })
    .await
    .map_err(join_error)??)
}

/// What a fetch request asks for, whichever protocol version carried it.
struct Wanted<'a> {
    wants: &'a [ObjectId],
    haves: &'a [ObjectId],
    shallows: &'a [ObjectId],
    deepen: &'a upload_pack::Deepen,
    filter: Option<&'a str>,
    done: bool,
}

/// The server's side of one negotiation round.
struct Negotiation {
    odb: Arc<Odb>,
    update: ShallowUpdate,
    limits: WalkLimits,
    /// The client's haves this repository has.
    common: Vec<ObjectId>,
    /// Whether every want reaches a common commit, so `ready` may be said.
    can_give_up: bool,
}

/// Checks the wants and works out the shallow update, the walk limits and what is in
/// common: the same for protocol v0/v1 and v2.
async fn negotiation(
    repos: &Repos,
    repo: &RepoName,
    snapshot: &Snapshot,
    wanted: Wanted<'_>,
) -> Result<Negotiation, Refusal> {
    let odb = Arc::new(repos.odb(repo, &snapshot.manifest).await?);
    let unserved = repos
        .unserved_wants(repo, snapshot, &odb, wanted.wants)
        .await?;
    if let Some(id) = unserved.first() {
        return Err(Refusal::Git(format!("upload-pack: not our ref {id}")));
    }
    // Shallow commits a ref does not reach are ignored, as unknown ones are: their
    // history (a deepen-relative or unshallow walks it) is not the client's to get.
    let hidden = repos
        .unserved_wants(repo, snapshot, &odb, wanted.shallows)
        .await?;
    let shallows: Vec<ObjectId> = wanted
        .shallows
        .iter()
        .filter(|id| !hidden.contains(id))
        .copied()
        .collect();
    let (update, limits) = limits(
        &odb,
        &snapshot.manifest,
        wanted.wants,
        &shallows,
        wanted.deepen,
        wanted.filter,
    )
    .await?;
    // A sparse filter's blob is read only where the client may fetch it.
    let patterns: Vec<_> = limits
        .filter
        .sparse()
        .iter()
        .filter_map(|s| s.blob)
        .collect();
    if !patterns.is_empty()
        && let Some(id) = repos
            .unserved_wants(repo, snapshot, &odb, &patterns)
            .await?
            .first()
    {
        return Err(Refusal::Git(format!("upload-pack: not our ref {id}")));
    }
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
    repos: &Repos,
    limits: &RequestLimits,
    repo: &RepoName,
    body: &[u8],
) -> Result<Answer, Refusal> {
    let request = upload_pack::Request::parse_within(body, limits)?;
    log_client_session(repo, &request.caps);
    let snapshot = repos
        .snapshot(repo)
        .await?
        .ok_or_else(|| Refusal::NotFound(repo.clone()))?;
    let Negotiation {
        odb,
        update,
        limits,
        common,
        can_give_up,
    } = negotiation(
        repos,
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
    .instrument(tracing::info_span!("negotiate"))
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
        return Ok(Answer::whole(UPLOAD_RESULT, lines));
    }
    let framing = request.framing();
    count_fetch(&request.haves);
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
    Ok(Answer {
        content_type: UPLOAD_RESULT,
        body: Reply::Stream(super::pack_response(
            lines, chunks, framing, progress, suffix,
        )),
    })
}

async fn upload_pack_v2(
    repos: &Repos,
    features: &Features,
    limits: &RequestLimits,
    repo: &RepoName,
    body: &[u8],
) -> Result<Answer, Refusal> {
    let request = v2::CommandRequest::parse_within(body, limits)?;
    log_client_session(repo, &request.caps);
    // The v2 capability advertisement did not look for the repository (it names no
    // ref), so a missing one is reported here, in words git shows its user.
    let snapshot = repos
        .snapshot(repo)
        .await?
        .ok_or_else(|| Refusal::Git(format!("repository '{repo}' not found")))?;
    if let Some(format) = request
        .caps
        .iter()
        .find_map(|c| c.strip_prefix("object-format="))
        && format != snapshot.manifest.object_format
    {
        return Err(Refusal::Git(format!(
            "mismatched object format: server {}; client {format}",
            snapshot.manifest.object_format
        )));
    }
    match request.command.as_str() {
        "ls-refs" => {
            let lines = v2::ls_refs(&snapshot.manifest, &request.args)?;
            record(|m| m.git_operation("ls_refs", "ok"));
            Ok(Answer::whole(UPLOAD_RESULT, lines))
        }
        "fetch" => v2_fetch(repos, features, limits, repo, &snapshot, &request.args).await,
        "bundle-uri" => match features.offload.as_ref().filter(|o| o.bundle_uri) {
            Some(offload) => bundle_uris(offload, repo, &snapshot).await,
            None => Err(Refusal::Git(
                "the v2 command \"bundle-uri\" is not supported by this server".into(),
            )),
        },
        "object-info" => {
            let ids = v2::object_info_request(&request.args)?;
            let odb = Arc::new(repos.odb(repo, &snapshot.manifest).await?);
            // Objects no ref reaches are answered as unknown ones are (no size).
            let hidden: HashSet<ObjectId> = repos
                .unserved_wants(repo, &snapshot, &odb, &ids)
                .await?
                .into_iter()
                .collect();
            let sizes = tokio::task::spawn_blocking(move || {
                ids.into_iter()
                    .map(|id| match hidden.contains(&id) {
                        true => Ok((id, None)),
                        false => Ok((id, odb.size(&id)?)),
                    })
                    .collect::<Result<Vec<_>, OdbError>>()
            })
            .await
            .map_err(join_error)??;
            Ok(Answer::whole(UPLOAD_RESULT, v2::object_info(&sizes)))
        }
        other => Err(Refusal::Git(format!(
            "the v2 command {other:?} is not supported by this server"
        ))),
    }
}

/// The answer to `bundle-uri`: a signed link to the bundle of each pack that has one.
/// A bundle holds every object of its pack, so none is listed while the packs may hold
/// objects no ref reaches (clones then walk instead of streaming the packs).
async fn bundle_uris(
    offload: &super::Offload,
    repo: &RepoName,
    snapshot: &Snapshot,
) -> Result<Answer, Refusal> {
    let manifest = &snapshot.manifest;
    let listed = manifest.unreachable_since.is_none();
    let mut bundles = Vec::new();
    for pack in manifest.packs.iter().filter(|p| p.bundle && listed) {
        let key = crate::repo::odb::bundle_key(repo, &pack.hash);
        let signed = offload
            .access
            .presign_get(&key, offload.lifetime)
            .await
            .map_err(RepoError::from)?;
        bundles.push((pack.hash, signed.url));
    }
    record(|m| m.offloaded("bundle-uri", bundles.len() as u64));
    Ok(Answer::whole(UPLOAD_RESULT, v2::bundle_list(&bundles)))
}

/// For a fetch that gets every stored object as stored, with `--packfile-uris` and a
/// client that takes them in the store's URL scheme: a signed link to each stored pack
/// of at least `--offload-min-bytes`, and the objects of the other packs (what the
/// answer's own pack then holds).
async fn pack_uris(
    repos: &Repos,
    features: &Features,
    repo: &RepoName,
    snapshot: &Snapshot,
    fetch: &v2::Fetch,
    request: &FetchRequest,
) -> Result<Option<(Vec<(ObjectId, String)>, Odb)>, Refusal> {
    let Some(offload) = features.offload.as_ref().filter(|o| o.packfile_uris) else {
        return Ok(None);
    };
    let manifest = &snapshot.manifest;
    if fetch.packfile_uris.is_empty()
        || request.limits.filter != crate::repo::walk::Filter::None
        || !fetch::gets_everything(manifest, request)
    {
        return Ok(None);
    }
    let mut uris = Vec::new();
    let mut rest = manifest.clone();
    rest.packs.clear();
    for pack in &manifest.packs {
        if pack.size < offload.min_bytes {
            rest.packs.push(pack.clone());
            continue;
        }
        let (key, _) = crate::repo::odb::pack_keys(repo, &pack.hash);
        let signed = offload
            .access
            .presign_get(&key, offload.lifetime)
            .await
            .map_err(RepoError::from)?;
        let scheme = signed.url.split("://").next().unwrap_or_default();
        if !fetch.packfile_uris.iter().any(|s| s == scheme) {
            return Ok(None);
        }
        uris.push((pack.hash, signed.url));
    }
    if uris.is_empty() {
        return Ok(None);
    }
    record(|m| m.offloaded("packfile-uri", uris.len() as u64));
    let odb = repos.odb(repo, &rest).await?;
    Ok(Some((uris, odb)))
}

async fn v2_fetch(
    repos: &Repos,
    features: &Features,
    limits: &RequestLimits,
    repo: &RepoName,
    snapshot: &Snapshot,
    args: &[String],
) -> Result<Answer, Refusal> {
    let mut fetch = v2::Fetch::parse_within(args, limits)?;
    if let Some(name) = fetch.want_refs.first()
        && !features.ref_in_want
    {
        return Err(Refusal::Git(format!(
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
        repos,
        repo,
        snapshot,
        Wanted {
            wants: &fetch.wants,
            haves: &fetch.haves,
            shallows: &fetch.shallows,
            deepen: &fetch.deepen,
            filter: fetch.filter.as_deref(),
            done: fetch.done,
        },
    )
    .instrument(tracing::info_span!("negotiate"))
    .await?;
    let acked = {
        let (odb, common) = (odb.clone(), common.clone());
        tokio::task::spawn_blocking(move || fetch::v2_acknowledged(&odb, &common))
            .await
            .map_err(join_error)??
    };
    let (acks, send_pack) = v2::acknowledgments(&fetch, &acked, can_give_up);
    if !send_pack {
        return Ok(Answer::whole(UPLOAD_RESULT, acks));
    }
    let request = FetchRequest {
        wants: fetch.wants.clone(),
        common,
        include_tag: fetch.include_tag,
        limits,
        unshallow: update.unshallow.clone(),
        thin_pack: fetch.thin_pack,
    };
    // Stored packs the client downloads from the store, and the objects it reads them
    // from otherwise (the rest of the packs).
    let (uris, odb) = match pack_uris(repos, features, repo, snapshot, &fetch, &request).await? {
        Some((uris, rest)) => (uris, Arc::new(rest)),
        None => (Vec::new(), odb),
    };
    let mut lines = acks.to_vec();
    lines.extend_from_slice(&v2::before_pack(
        &fetch,
        &update.shallow,
        &update.unshallow,
        &wanted_refs,
        &uris,
    ));
    count_fetch(&fetch.haves);
    let chunks = fetch::pack(odb, &snapshot.manifest, request);
    let framing = Framing::from_caps(true, false);
    Ok(Answer {
        content_type: UPLOAD_RESULT,
        body: Reply::Stream(super::pack_response(
            Bytes::from(lines),
            chunks,
            framing,
            !fetch.no_progress,
            Bytes::from_static(b"0000"),
        )),
    })
}

/// What is run once a push has ended, given its report (whether it created the
/// repository, the event it recorded).
pub type AfterPush =
    Box<dyn FnOnce(&push::Report) -> futures::future::BoxFuture<'static, ()> + Send>;

/// `POST git-receive-pack`: reads the commands and the pack from `body`, applies what
/// `policy` allows, and reports per ref; `after` runs once the push has ended.
/// `pusher` says who pushes and whether the push records an event; the push options
/// are the request's.
///
/// The push runs in a task of its own, so that a client that hangs up after sending its
/// pack does not cut it. A client with a side-band that still waits for its report
/// [`KEEPALIVE`](super::KEEPALIVE) after its pack was read (a long check, a slow store)
/// gets the answer's head then, and keep-alive packets until the report, as git's
/// receive-pack sends them.
pub async fn receive_pack(
    repos: Arc<Repos>,
    limits: &RequestLimits,
    repo: &RepoName,
    mut body: Box<dyn AsyncRead + Send + Unpin>,
    policy: Box<dyn RefPolicy>,
    pusher: push::Pusher,
    after: AfterPush,
) -> Result<Answer, Refusal> {
    let parsed = match receive_pack::read_request(&mut body, limits).await {
        Ok(parsed) => parsed,
        Err((e, framing)) => {
            return Ok(Answer::whole(
                RECEIVE_RESULT,
                receive_pack::fatal(&e.0, framing),
            ));
        }
    };
    log_client_session(repo, &parsed.caps);
    if parsed.commands.is_empty() {
        // git's probe before a large push, or a push with nothing to do.
        return Ok(Answer::whole(RECEIVE_RESULT, Bytes::new()));
    }
    let framing = parsed.framing();
    // The client says which object format its commands and pack are in (sha1 if not).
    let format = match parsed
        .caps
        .iter()
        .find_map(|c| c.strip_prefix("object-format="))
    {
        None => gix_hash::Kind::Sha1,
        Some(name) => match name.parse::<gix_hash::Kind>() {
            Ok(kind) => kind,
            Err(_) => {
                let why = format!("unsupported object format '{name}'");
                return Ok(Answer::whole(
                    RECEIVE_RESULT,
                    receive_pack::fatal(&why, framing),
                ));
            }
        },
    };
    if let Some(c) = parsed
        .commands
        .iter()
        .find(|c| c.old.kind() != format || c.new.kind() != format)
    {
        let why = format!(
            "the command for {} does not use object format {}",
            c.name, format
        );
        return Ok(Answer::whole(
            RECEIVE_RESULT,
            receive_pack::fatal(&why, framing),
        ));
    }
    let atomic = parsed.has("atomic");
    let (read, pack_read) = tokio::sync::oneshot::channel();
    let body = Box::new(NoticeDrop {
        inner: body,
        _dropped: read,
    });
    let name = repo.clone();
    // Lines for the pusher while the push runs (the pre-receive hook's output), when
    // the client reads a side-band.
    let (notes_to, mut notes) = tokio::sync::mpsc::unbounded_channel();
    let pusher = push::Pusher {
        push_options: parsed.push_options.clone(),
        notes: matches!(framing, Framing::Sideband(_)).then_some(notes_to),
        object_format: format,
        ..pusher
    };
    let mut task = tokio::spawn(
        async move {
            let outcome = push::receive(
                &repos,
                &name,
                parsed.commands,
                Some(body),
                atomic,
                policy.as_ref(),
                &pusher,
            )
            .await;
            count_push(&outcome);
            if let Ok(report) = &outcome {
                after(report).await;
            }
            outcome
        }
        .in_current_span(),
    );
    if let Framing::Sideband(_) = framing {
        let quiet = async {
            let _ = pack_read.await;
            tokio::time::sleep(super::KEEPALIVE).await;
        };
        let mut first = Vec::new();
        tokio::select! {
            biased;
            Some(note) = notes.recv() => first.push(note),
            ended = &mut task => {
                while let Ok(note) = notes.try_recv() {
                    first.push(note);
                }
                return Ok(Answer::whole(
                    RECEIVE_RESULT,
                    push_report(repo, ended, framing, first)?,
                ));
            }
            () = quiet => {}
        }
        // The answer starts now, with the hook's first line or a keep-alive; then a
        // line as the hook writes it, or a keep-alive after each quiet time.
        let keepalive = Bytes::from_static(b"0005\x01");
        let now = match first.is_empty() {
            true => keepalive.clone(),
            false => receive_pack::notes(&first, framing),
        };
        let repo = repo.clone();
        let later = futures::stream::unfold(Some((task, notes)), move |state| {
            let (repo, keepalive) = (repo.clone(), keepalive.clone());
            async move {
                let (mut task, mut notes) = state?;
                tokio::select! {
                    biased;
                    Some(note) = notes.recv() => {
                        let lines = receive_pack::notes(&[note], framing);
                        Some((Ok(lines), Some((task, notes))))
                    }
                    ended = &mut task => {
                        let mut last = Vec::new();
                        while let Ok(note) = notes.try_recv() {
                            last.push(note);
                        }
                        let report = push_report(&repo, ended, framing, last).unwrap_or_else(
                            |refusal| receive_pack::fatal(&refusal.to_string(), framing),
                        );
                        Some((Ok(report), None))
                    }
                    () = tokio::time::sleep(super::KEEPALIVE) => {
                        Some((Ok(keepalive), Some((task, notes))))
                    }
                }
            }
        });
        let now = futures::stream::once(async move { Ok::<_, std::io::Error>(now) });
        let stream = futures::StreamExt::chain(now, later);
        return Ok(Answer {
            content_type: RECEIVE_RESULT,
            body: Reply::Stream(Box::pin(stream)),
        });
    }
    let report = push_report(repo, task.await, framing, Vec::new())?;
    Ok(Answer::whole(RECEIVE_RESULT, report))
}

/// The report of a push that has ended, after the `notes` not yet shown.
fn push_report(
    repo: &RepoName,
    ended: Result<Result<push::Report, RepoError>, tokio::task::JoinError>,
    framing: Framing,
    notes: Vec<String>,
) -> Result<Bytes, Refusal> {
    let mut report = match ended.map_err(join_error)? {
        Ok(report) => report,
        Err(RepoError::NotFound(name)) => return Err(Refusal::NotFound(name)),
        Err(RepoError::Refused(why)) => {
            let mut answer = receive_pack::notes(&notes, framing).to_vec();
            answer.extend_from_slice(&receive_pack::fatal(&why, framing));
            return Ok(Bytes::from(answer));
        }
        Err(e) => {
            tracing::error!(repo = %repo, error = %e, "push failed");
            let mut answer = receive_pack::notes(&notes, framing).to_vec();
            answer.extend_from_slice(&receive_pack::fatal(&format!("push failed: {e}"), framing));
            return Ok(Bytes::from(answer));
        }
    };
    report.messages.splice(0..0, notes);
    for (name, result) in &report.refs {
        if let Err(reason) = result {
            tracing::info!(repo = %repo, r#ref = %name, %reason, "ref update refused");
        }
    }
    Ok(receive_pack::report(&report, framing))
}

/// A request body that closes its channel when it is dropped: when the push is done
/// reading its pack.
struct NoticeDrop {
    inner: Box<dyn AsyncRead + Send + Unpin>,
    _dropped: tokio::sync::oneshot::Sender<()>,
}

impl AsyncRead for NoticeDrop {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Counts a push, its ref updates and the reasons of those refused.
fn count_push(outcome: &Result<push::Report, RepoError>) {
    record(|m| {
        let Ok(report) = outcome else {
            m.git_operation("push", "error");
            return;
        };
        let refused = report.refs.iter().filter(|(_, r)| r.is_err()).count();
        let result = if report.unpack.is_err() || refused > 0 {
            "refused"
        } else {
            "ok"
        };
        m.git_operation("push", result);
        m.ref_updates
            .get_or_create(&ResultLabel { result: "ok" })
            .inc_by((report.refs.len() - refused) as u64);
        m.ref_updates
            .get_or_create(&ResultLabel { result: "refused" })
            .inc_by(refused as u64);
        for (_, result) in &report.refs {
            if let Err(reason) = result {
                let reason = match &report.unpack {
                    Err(_) => "bad_pack",
                    Ok(()) => refusal_reason(reason),
                };
                m.push_refusals.get_or_create(&ReasonLabel { reason }).inc();
            }
        }
    });
}

/// A bounded name for why a ref update was refused, from its reason.
fn refusal_reason(reason: &str) -> &'static str {
    const KINDS: &[(&str, &str)] = &[
        ("protected", "protected"),
        ("is locked by", "lfs_lock"),
        ("non-fast-forward", "non_fast_forward"),
        ("fetch first", "stale"),
        ("invalid ref name", "invalid_ref"),
        ("cannot create it", "ref_conflict"),
        ("atomic", "atomic"),
        ("not allowed", "permission"),
        ("may not", "permission"),
        ("access", "permission"),
    ];
    KINDS
        .iter()
        .find(|(mark, _)| reason.contains(mark))
        .map_or("other", |(_, kind)| kind)
}
