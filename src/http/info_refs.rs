//! `GET /<repo>/info/refs?service=git-upload-pack|git-receive-pack`: the ref
//! advertisement (or v2 capabilities). Asking for receive-pack needs write, as the
//! push that follows does.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;

use super::{AppState, Failure, auth, for_caller, git_response, protocol_version};
use crate::access::Need;
use crate::protocol::{Service, serve};
use crate::repo::RepoName;

pub(super) async fn handle(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    request: Request,
) -> Result<Response, Failure> {
    let service = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("service=")))
        .and_then(Service::parse);
    let need = match service {
        Some(Service::ReceivePack) => Need::Write,
        Some(Service::UploadPack) | None => Need::Read,
    };
    let allowed = auth::authorize(state, peer, request.headers(), repo, need).await?;
    let Some(service) = service else {
        return Err(Failure::status(
            StatusCode::FORBIDDEN,
            "only the smart HTTP protocol is served: use git 1.6.6 or newer",
        ));
    };
    // A repository or server too busy for the pack request that follows says so here,
    // where git shows the reason to its user.
    state.admission.check(repo.as_str())?;
    let version = protocol_version(request.headers());
    let answer = serve::info_refs(
        &state.repos,
        &state.options.features,
        repo,
        service,
        version,
    )
    .await?;
    Ok(for_caller(git_response(answer), &allowed.caller))
}
