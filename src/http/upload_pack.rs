//! `POST /<repo>/git-upload-pack`: clone, fetch and (v2) ls-refs; needs read.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::response::Response;

use super::{
    AppState, Failure, auth, for_caller, git_response, holding, protocol_version, read_limited,
};
use crate::access::Need;
use crate::protocol::serve;
use crate::repo::RepoName;

pub(super) async fn handle(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    request: Request,
) -> Result<Response, Failure> {
    let allowed = auth::authorize(state, peer, request.headers(), repo, Need::Read).await?;
    let v2 = protocol_version(request.headers()) == crate::protocol::Version::V2;
    let options = &state.options;
    let body = read_limited(request, options.max_negotiation_bytes, &options.connections).await?;
    let permit = state.admission.admit(repo.as_str()).await?;
    let answer = serve::upload_pack(
        &state.repos,
        &options.features,
        &options.limits,
        repo,
        &body,
        v2,
    )
    .await?;
    Ok(for_caller(
        holding(git_response(answer), permit),
        &allowed.caller,
    ))
}
