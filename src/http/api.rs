//! `/-/api/v1/`: the management API, JSON in and out, for server admins (and for
//! repository admins, on their repositories). Every operation is the one the CLI runs
//! ([`crate::access::manage`]).
//!
//! A repository name or prefix is one path segment, percent-encoded (`org%2Fteam%2Fx`,
//! `org%2F`), as is a ref pattern. Requests with a body must say
//! `Content-Type: application/json` (so that no browser form can send one).
//!
//! ```text
//! GET    users                          POST users {"name","admin"}
//! DELETE users/{user}
//! GET    users/{user}/tokens            POST users/{user}/tokens {"read_only","expires_days","note"}
//! DELETE users/{user}/tokens/{id}
//! GET    repos                          POST repos {"name","public"}
//! GET    repos/{repo}                   DELETE repos/{repo}
//! PUT    repos/{repo}/visibility {"visibility": "public"|"private"}
//! PUT    repos/{target}/grants/{user} {"role": "read"|"write"|"admin"}
//! DELETE repos/{target}/grants/{user}
//! POST   repos/{repo}/protections {"pattern","allow_force_push","allow_delete","admins_only"}
//! DELETE repos/{repo}/protections/{pattern}
//! GET    repos/{repo}/hooks             POST repos/{repo}/hooks {"url","secret","events"}
//! DELETE repos/{repo}/hooks/{id}
//! GET    repos/{repo}/hooks/{id}/deliveries
//! GET    repos/{repo}/hooks/{id}/deliveries/{delivery}
//! POST   repos/{repo}/hooks/{id}/deliveries/{delivery}/attempts   (redeliver)
//! ```

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, Failure, auth, for_caller, read_limited};
use crate::access::manage::{self, format_time};
use crate::access::refs::Protection;
use crate::access::state::{Target, TokenRecord, TokenSpec};
use crate::access::{AccessError, Caller, Role, View};
use crate::repo::RepoName;

/// Largest request body accepted.
const MAX_BODY: usize = 64 << 10;

/// A refused management request: its status and a message, sent as
/// `{"error": "..."}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
    ApiError {
        status,
        message: message.to_string(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "error": self.message }).to_string(),
        )
            .into_response()
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn from_access(e: AccessError) -> ApiError {
    let status = match &e {
        AccessError::NoUser(_) | AccessError::NotFound(_) => StatusCode::NOT_FOUND,
        AccessError::Exists(_) => StatusCode::CONFLICT,
        AccessError::Invalid(_) => StatusCode::BAD_REQUEST,
        AccessError::Contention => StatusCode::SERVICE_UNAVAILABLE,
        AccessError::Corrupt(_) | AccessError::Store(_) | AccessError::Repo(_) => {
            tracing::error!(error = %e, "management request failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the server log",
            );
        }
    };
    error(status, e)
}

fn decode(segment: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| error(StatusCode::BAD_REQUEST, "a path segment is not UTF-8"))
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn token_json(t: &TokenRecord) -> Value {
    json!({
        "id": t.id,
        "created": format_time(t.created),
        "expires": t.expires.map(format_time),
        "read_only": t.read_only,
        "note": t.note,
    })
}

fn repo_name(text: &str) -> Result<RepoName, ApiError> {
    RepoName::new(text).map_err(|e| error(StatusCode::BAD_REQUEST, e))
}

fn target(text: &str) -> Result<Target, ApiError> {
    Target::parse(text).map_err(from_access)
}

/// Admins of `target` may manage it; anyone else who cannot read it learns nothing of
/// it (a repository that might exist is answered as missing).
fn administer(view: &View, caller: &Caller, target: &Target) -> Result<(), ApiError> {
    if manage::may_administer(view, caller, target) {
        return Ok(());
    }
    if !target.is_prefix() {
        let name = RepoName::new(target.as_str()).expect("a valid target");
        if view.role(caller, &name).is_none() {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("repository {name} not found"),
            ));
        }
    }
    if caller.read_only {
        return Err(error(StatusCode::FORBIDDEN, "this token is read-only"));
    }
    Err(error(
        StatusCode::FORBIDDEN,
        format!("{} is not an admin of {target}", caller.name()),
    ))
}

fn users_admin(caller: &Caller) -> Result<(), ApiError> {
    if manage::may_manage_users(caller) {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "only server admins may manage users and their tokens",
        ))
    }
}

fn settings_json(view: &View, name: &RepoName) -> Value {
    let settings = view.state.settings(name);
    let grants = view
        .state
        .grants
        .get(name.as_str())
        .cloned()
        .unwrap_or_default();
    json!({
        "name": name.as_str(),
        "visibility": if settings.public { "public" } else { "private" },
        "grants": grants,
        "protections": settings.protections,
    })
}

pub(super) async fn handle(
    state: &AppState,
    peer: SocketAddr,
    rest: &str,
    request: Request,
) -> Result<Response, Failure> {
    Ok(match checked(state, peer, rest, request).await {
        Ok(response) => response,
        Err(failure) => failure.into_json(),
    })
}

async fn checked(
    state: &AppState,
    peer: SocketAddr,
    rest: &str,
    request: Request,
) -> Result<Response, Failure> {
    if !state.access.enabled() {
        return Err(Failure::status(
            StatusCode::FORBIDDEN,
            "the management API is off while access control is (--no-auth); use the stowage \
             commands",
        ));
    }
    // Refused on the cache first (no store request for a stranger), then decided on
    // the state read afresh: an admin sees what other instances and the CLI changed a
    // moment ago, and a revoked token is refused at once.
    auth::authenticate(state, peer, request.headers()).await?;
    state
        .access
        .reload()
        .await
        .map_err(|e| Failure::internal(&e))?;
    let (caller, view) = auth::authenticate(state, peer, request.headers()).await?;
    let method = request.method().clone();
    let has_body = matches!(method, Method::POST | Method::PUT);
    if has_body {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Ok(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as Content-Type: application/json",
            )
            .into_response());
        }
    }
    let body = if has_body {
        read_limited(request, MAX_BODY, &state.options.connections).await?
    } else {
        Vec::new()
    };
    let response = match operation(state, &caller, &view, &method, rest, &body).await {
        Ok(response) => response,
        Err(refused) => refused.into_response(),
    };
    Ok(for_caller(response, &caller))
}

async fn operation(
    state: &AppState,
    caller: &Caller,
    view: &View,
    method: &Method,
    rest: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let segments = rest
        .trim_end_matches('/')
        .split('/')
        .map(decode)
        .collect::<Result<Vec<_>, _>>()?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let access = &state.access;
    let repos = state.repos.as_ref();

    let done = |()| StatusCode::NO_CONTENT.into_response();
    if let ["repos", name, "hooks", rest @ ..] = segments.as_slice() {
        return hooks(state, caller, view, method, &repo_name(name)?, rest, body).await;
    }
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["users"]) => {
            users_admin(caller)?;
            let users: Vec<Value> = view
                .state
                .users
                .iter()
                .map(|(name, u)| {
                    json!({
                        "name": name,
                        "admin": u.admin,
                        "created": format_time(u.created),
                        "tokens": u.tokens.len(),
                    })
                })
                .collect();
            Ok(reply(StatusCode::OK, Value::Array(users)))
        }
        (Method::POST, ["users"]) => {
            users_admin(caller)?;
            #[derive(Deserialize)]
            struct NewUser {
                name: String,
                #[serde(default)]
                admin: bool,
            }
            let new: NewUser = parse(body)?;
            manage::add_user(access, &new.name, new.admin)
                .await
                .map_err(from_access)?;
            Ok(reply(
                StatusCode::CREATED,
                json!({ "name": new.name, "admin": new.admin }),
            ))
        }
        (Method::DELETE, ["users", user]) => {
            users_admin(caller)?;
            manage::remove_user(access, user)
                .await
                .map(done)
                .map_err(from_access)
        }
        (Method::GET, ["users", user, "tokens"]) => {
            if caller.user.as_deref() != Some(*user) && !caller.server_admin {
                users_admin(caller)?;
            }
            let found = view.state.user(user).map_err(from_access)?;
            let tokens: Vec<Value> = found.tokens.iter().map(token_json).collect();
            Ok(reply(StatusCode::OK, Value::Array(tokens)))
        }
        (Method::POST, ["users", user, "tokens"]) => {
            users_admin(caller)?;
            #[derive(Deserialize)]
            struct NewToken {
                #[serde(default)]
                read_only: bool,
                expires_days: Option<u64>,
                #[serde(default)]
                note: String,
            }
            let new: NewToken = parse(body)?;
            let spec = TokenSpec {
                read_only: new.read_only,
                expires_days: new.expires_days,
                note: new.note,
            };
            let (secret, record) = manage::create_token(access, user, &spec)
                .await
                .map_err(from_access)?;
            let mut answer = token_json(&record);
            answer["token"] = secret.expose().into();
            answer["user"] = (*user).into();
            Ok(reply(StatusCode::CREATED, answer))
        }
        (Method::DELETE, ["users", user, "tokens", id]) => {
            if caller.user.as_deref() != Some(*user) || caller.read_only {
                users_admin(caller)?;
            }
            manage::revoke_token(access, user, id)
                .await
                .map(done)
                .map_err(from_access)
        }
        (Method::GET, ["repos"]) => {
            let names = repos
                .list()
                .await
                .map_err(|e| from_access(AccessError::Repo(e)))?;
            let visible: Vec<Value> = names
                .iter()
                .filter_map(|name| {
                    let role = view.role(caller, name)?;
                    Some(json!({
                        "name": name.as_str(),
                        "visibility": if view.state.is_public(name) { "public" } else { "private" },
                        "role": role.as_str(),
                    }))
                })
                .collect();
            Ok(reply(StatusCode::OK, Value::Array(visible)))
        }
        (Method::POST, ["repos"]) => {
            #[derive(Deserialize)]
            struct NewRepo {
                name: String,
                #[serde(default)]
                public: bool,
                #[serde(default)]
                object_format: Option<String>,
            }
            let new: NewRepo = parse(body)?;
            let name = repo_name(&new.name)?;
            let format = match new.object_format.as_deref() {
                None => gix_hash::Kind::Sha1,
                Some(named) => named.parse::<gix_hash::Kind>().map_err(|_| {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("object_format {named:?} is neither sha1 nor sha256"),
                    )
                })?,
            };
            if view.role(caller, &name) < Some(Role::Write) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    format!("{} may not create {name}", caller.name()),
                ));
            }
            manage::create_repo(
                access,
                repos,
                &name,
                format,
                new.public,
                caller.user.as_deref(),
            )
            .await
            .map_err(from_access)?;
            let view = access.view().await.map_err(from_access)?;
            Ok(reply(StatusCode::CREATED, settings_json(&view, &name)))
        }
        (Method::GET, ["repos", name]) => {
            let name = repo_name(name)?;
            let t = Target::repo(&name);
            if !manage::may_inspect(view, caller, &t) {
                administer(view, caller, &t)?;
            }
            if repos
                .snapshot(&name)
                .await
                .map_err(|e| from_access(e.into()))?
                .is_none()
            {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    format!("repository {name} not found"),
                ));
            }
            Ok(reply(StatusCode::OK, settings_json(view, &name)))
        }
        (Method::DELETE, ["repos", name]) => {
            let name = repo_name(name)?;
            administer(view, caller, &Target::repo(&name))?;
            manage::delete_repo(access, repos, &name)
                .await
                .map(done)
                .map_err(from_access)
        }
        (Method::PUT, ["repos", name, "visibility"]) => {
            let name = repo_name(name)?;
            administer(view, caller, &Target::repo(&name))?;
            #[derive(Deserialize)]
            struct Visibility {
                visibility: String,
            }
            let public = match parse::<Visibility>(body)?.visibility.as_str() {
                "public" => true,
                "private" => false,
                other => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        format!("invalid visibility {other:?}: use public or private"),
                    ));
                }
            };
            manage::set_visibility(access, repos, &name, public)
                .await
                .map_err(from_access)?;
            let view = access.view().await.map_err(from_access)?;
            Ok(reply(StatusCode::OK, settings_json(&view, &name)))
        }
        (Method::PUT, ["repos", t, "grants", user]) => {
            let t = target(t)?;
            administer(view, caller, &t)?;
            #[derive(Deserialize)]
            struct Grant {
                role: String,
            }
            let role = Role::parse(&parse::<Grant>(body)?.role).map_err(from_access)?;
            manage::grant(access, repos, &t, user, role)
                .await
                .map_err(from_access)?;
            Ok(reply(
                StatusCode::OK,
                json!({ "target": t.as_str(), "user": user, "role": role.as_str() }),
            ))
        }
        (Method::DELETE, ["repos", t, "grants", user]) => {
            let t = target(t)?;
            administer(view, caller, &t)?;
            manage::ungrant(access, &t, user)
                .await
                .map(done)
                .map_err(from_access)
        }
        (Method::POST, ["repos", name, "protections"]) => {
            let name = repo_name(name)?;
            administer(view, caller, &Target::repo(&name))?;
            #[derive(Deserialize)]
            struct NewProtection {
                pattern: String,
                #[serde(default)]
                allow_force_push: bool,
                #[serde(default)]
                allow_delete: bool,
                #[serde(default)]
                admins_only: bool,
            }
            let new: NewProtection = parse(body)?;
            let mut protection = Protection::new(&new.pattern).map_err(from_access)?;
            protection.allow_force_push = new.allow_force_push;
            protection.allow_delete = new.allow_delete;
            protection.admins_only = new.admins_only;
            manage::protect(access, repos, &name, protection)
                .await
                .map_err(from_access)?;
            let view = access.view().await.map_err(from_access)?;
            Ok(reply(StatusCode::CREATED, settings_json(&view, &name)))
        }
        (Method::DELETE, ["repos", name, "protections", pattern]) => {
            let name = repo_name(name)?;
            administer(view, caller, &Target::repo(&name))?;
            manage::unprotect(access, &name, pattern)
                .await
                .map(done)
                .map_err(from_access)
        }
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "no such API route; see README for the routes",
        )),
    }
}

/// A webhook as the API shows it: never its secret.
fn hook_json(hook: &crate::access::state::Webhook) -> Value {
    json!({
        "id": hook.id,
        "url": hook.url,
        "events": hook.events,
        "signed": hook.secret.is_some(),
        "created": format_time(hook.created),
    })
}

/// A delivery as the API lists it (`full`: with its attempts and body).
fn delivery_json(d: &crate::hooks::outbox::Delivery, full: bool) -> Value {
    let mut shown = json!({
        "id": d.id,
        "hook": d.hook,
        "event": d.kind,
        "ref": d.ref_name,
        "status": d.status.as_str(),
        "created": format_time(d.created / 1000),
        "tries": d.tries,
        "reason": d.reason,
        "last_attempt": d.attempts.last(),
    });
    if full {
        shown["attempts"] = json!(d.attempts);
        shown["body"] = serde_json::from_str(&d.body).unwrap_or(Value::Null);
    }
    shown
}

/// `repos/{repo}/hooks/...`: for the repository's admins.
async fn hooks(
    state: &AppState,
    caller: &Caller,
    view: &View,
    method: &Method,
    name: &RepoName,
    rest: &[&str],
    body: &[u8],
) -> Result<Response, ApiError> {
    use crate::hooks::outbox;
    let t = Target::repo(name);
    if !(*method == Method::GET && manage::may_inspect(view, caller, &t)) {
        administer(view, caller, &t)?;
    }
    let store = state.repos.store.as_ref();
    let internal = |e: crate::hooks::HookError| {
        tracing::error!(error = %e, "a webhook request failed");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    };
    let hook_of = |id: &str| {
        view.state.webhook(name, id).ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("{name} has no webhook {id:?}"),
            )
        })
    };
    let delivery_of = |hook: &str, id: &str| {
        outbox::check_id(id).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
        if !id.contains(&format!(".{hook}.")) {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("webhook {hook} has no delivery {id:?}"),
            ));
        }
        Ok(outbox::key(name, id))
    };
    match (method.clone(), rest) {
        (Method::GET, []) => {
            let hooks: Vec<Value> = view
                .state
                .settings(name)
                .webhooks
                .iter()
                .map(hook_json)
                .collect();
            Ok(reply(StatusCode::OK, Value::Array(hooks)))
        }
        (Method::POST, []) => {
            #[derive(Deserialize)]
            struct NewHook {
                url: String,
                secret: Option<String>,
                #[serde(default = "push_only")]
                events: Vec<String>,
            }
            fn push_only() -> Vec<String> {
                vec!["push".into()]
            }
            let new: NewHook = parse(body)?;
            crate::hooks::send::check_destination(&new.url, state.webhooks.config().allow_private)
                .await
                .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
            let hook = manage::add_webhook(
                &state.access,
                &state.repos,
                name,
                &new.url,
                new.secret,
                new.events,
            )
            .await
            .map_err(from_access)?;
            Ok(reply(StatusCode::CREATED, hook_json(&hook)))
        }
        (Method::DELETE, [id]) => {
            manage::remove_webhook(&state.access, name, id)
                .await
                .map_err(from_access)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::GET, [id, "deliveries"]) => {
            hook_of(id)?;
            let found = outbox::list(store, name, None, Some(id), Some(100))
                .await
                .map_err(internal)?;
            let shown: Vec<Value> = found
                .iter()
                .map(|r| delivery_json(&r.delivery, false))
                .collect();
            Ok(reply(StatusCode::OK, Value::Array(shown)))
        }
        (Method::GET, [id, "deliveries", delivery]) => {
            let key = delivery_of(id, delivery)?;
            match outbox::read(store, &key).await.map_err(internal)? {
                Some(found) => Ok(reply(StatusCode::OK, delivery_json(&found.delivery, true))),
                None => Err(error(
                    StatusCode::NOT_FOUND,
                    format!("no delivery {delivery:?}"),
                )),
            }
        }
        (Method::POST, [id, "deliveries", delivery, "attempts"]) => {
            hook_of(id)?;
            delivery_of(id, delivery)?;
            let retry_for = state.webhooks.config().retry_for.as_millis() as u64;
            match outbox::redeliver(store, name, delivery, crate::hooks::now_ms(), retry_for)
                .await
                .map_err(internal)?
            {
                Some(found) => {
                    state.webhooks.after_redeliver();
                    Ok(reply(StatusCode::ACCEPTED, delivery_json(&found, false)))
                }
                None => Err(error(
                    StatusCode::NOT_FOUND,
                    format!("no delivery {delivery:?}"),
                )),
            }
        }
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "no such API route; see README for the routes",
        )),
    }
}
