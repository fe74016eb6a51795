//! `POST /<repo>/git-receive-pack`: a push; needs write (creating a repository needs
//! write on a prefix covering its name, and makes the pusher its admin). The
//! repository's protected refs bind the push, and so do its Git LFS locks: a ref may
//! not move to commits that change a file someone else has locked.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::response::Response;

use super::{AppState, Failure, auth, body_reader, for_caller, git_response, holding, origin};
use crate::access::refs::PushPolicy;
use crate::access::{Need, manage};
use crate::lfs::locks::{LockAware, owner_of};
use crate::protocol::serve;
use crate::repo::RepoName;
use crate::repo::push::Pusher;

pub(super) async fn handle(
    state: &AppState,
    peer: SocketAddr,
    repo: &RepoName,
    request: Request,
) -> Result<Response, Failure> {
    let (allowed, credentials) =
        auth::authorize_with(state, peer, request.headers(), repo, Need::Write).await?;
    let policy = Box::new(LockAware {
        inner: PushPolicy::new(
            state.access.clone(),
            credentials,
            peer.ip(),
            repo.clone(),
            &allowed,
        ),
        lfs: state.lfs.clone(),
        repo: repo.clone(),
        pusher: owner_of(&allowed.caller),
    });
    let (access, name, user) = (
        state.access.clone(),
        repo.clone(),
        allowed.caller.user.clone(),
    );
    // The push's event is delivered once its answer has been sent.
    let (answered, sent) = tokio::sync::oneshot::channel::<()>();
    let webhooks = state.webhooks.clone();
    let after: serve::AfterPush = Box::new(move |report| {
        let created = report.created;
        if let Some(event) = report.event.clone() {
            tokio::spawn(async move {
                let _ = sent.await;
                webhooks.after_push(&event);
            });
        }
        Box::pin(async move {
            if !created {
                return;
            }
            if let Err(e) = manage::repo_created(&access, &name, false, user.as_deref()).await {
                // The pusher could create it, so they can reach it without the admin
                // grant.
                tracing::error!(repo = %name, error = %e, "recording the creator of a repository failed");
            }
        })
    });
    let permit = state.admission.admit(repo.as_str()).await?;
    let limits = &state.options.limits;
    let record_event = match state.access.view().await {
        Ok(view) => view.state.webhooks_for(repo, "push").next().is_some(),
        Err(e) => return Err(auth::access_failure(e)),
    };
    let pusher = Pusher {
        user: allowed.caller.user.clone(),
        record_event,
        origin: origin(state, request.headers()),
        ..Pusher::default()
    };
    let body = body_reader(request, &state.options.connections);
    let answer = serve::receive_pack(
        state.repos.clone(),
        limits,
        repo,
        body,
        policy,
        pusher,
        after,
    )
    .await?;
    Ok(for_caller(
        holding(git_response(answer), (permit, answered)),
        &allowed.caller,
    ))
}
