//! Management operations, shared by the `stowage user|token|repo` commands and the JSON
//! API: each is one compare-and-swap of the access state (and, for creating and
//! deleting repositories, of the manifest). Who may call them over HTTP is decided by
//! [`may_manage_users`] and [`may_administer`]; the CLI is the operator's and may do
//! everything.

use super::refs::Protection;
use super::state::{self, Target, TokenRecord, TokenSpec};
use super::token::Secret;
use super::{Access, AccessError, Caller, Role, View};
use crate::repo::{RepoError, RepoName, Repos};

/// Whether `caller` may add and remove users and manage anyone's tokens.
pub fn may_manage_users(caller: &Caller) -> bool {
    caller.server_admin && !caller.read_only
}

/// Whether `caller` may change the grants, visibility and protections of `target` (a
/// repository or a prefix) and delete it: server admins, and admins of it or of a
/// prefix covering it.
pub fn may_administer(view: &View, caller: &Caller, target: &Target) -> bool {
    !caller.read_only && view.role_on(caller, target) == Some(Role::Admin)
}

/// Whether `caller` may see the settings of `target` (admins, also with a read-only
/// token).
pub fn may_inspect(view: &View, caller: &Caller, target: &Target) -> bool {
    let full = Caller {
        read_only: false,
        ..caller.clone()
    };
    view.role_on(&full, target) == Some(Role::Admin)
}

pub async fn add_user(access: &Access, name: &str, admin: bool) -> Result<(), AccessError> {
    access
        .update(|s| s.add_user(name, admin, state::now()))
        .await
}

pub async fn remove_user(access: &Access, name: &str) -> Result<(), AccessError> {
    access.update(|s| s.remove_user(name)).await
}

pub async fn create_token(
    access: &Access,
    user: &str,
    spec: &TokenSpec,
) -> Result<(Secret, TokenRecord), AccessError> {
    access
        .update(|s| state::new_token(s, user, spec, state::now()))
        .await
}

pub async fn revoke_token(access: &Access, user: &str, id: &str) -> Result<(), AccessError> {
    access.update(|s| s.revoke_token(user, id)).await
}

async fn must_exist(repos: &Repos, name: &RepoName) -> Result<(), AccessError> {
    match repos.snapshot(name).await? {
        Some(_) => Ok(()),
        None => Err(AccessError::NotFound(format!(
            "repository {name} not found"
        ))),
    }
}

/// Creates an empty repository of objects in `format`; `creator` (when a user asked)
/// becomes its admin.
pub async fn create_repo(
    access: &Access,
    repos: &Repos,
    name: &RepoName,
    format: gix_hash::Kind,
    public: bool,
    creator: Option<&str>,
) -> Result<(), AccessError> {
    match repos.create(name, format).await {
        Ok(()) => {}
        Err(RepoError::AlreadyExists(_)) => {
            return Err(AccessError::Exists(format!(
                "repository {name} already exists"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    repo_created(access, name, public, creator).await
}

/// Records who created a repository (a push that created it, or [`create_repo`]).
pub async fn repo_created(
    access: &Access,
    name: &RepoName,
    public: bool,
    creator: Option<&str>,
) -> Result<(), AccessError> {
    access
        .update(|s| {
            s.created(name, creator, public);
            Ok(())
        })
        .await
}

/// Deletes a repository with everything in it. Its settings go first, so that while
/// it is being deleted it is only more private, never less; and again after, in case a
/// change landed meanwhile.
pub async fn delete_repo(
    access: &Access,
    repos: &Repos,
    name: &RepoName,
) -> Result<(), AccessError> {
    must_exist(repos, name).await?;
    let forget = || async {
        access
            .update(|s| {
                s.forget(name);
                Ok(())
            })
            .await
    };
    forget().await?;
    repos.delete(name).await?;
    forget().await
}

pub async fn set_visibility(
    access: &Access,
    repos: &Repos,
    name: &RepoName,
    public: bool,
) -> Result<(), AccessError> {
    must_exist(repos, name).await?;
    access
        .update(|s| {
            s.set_public(name, public);
            Ok(())
        })
        .await
}

/// Grants `role` on a repository (which must exist) or a prefix.
pub async fn grant(
    access: &Access,
    repos: &Repos,
    target: &Target,
    user: &str,
    role: Role,
) -> Result<(), AccessError> {
    if !target.is_prefix() {
        must_exist(
            repos,
            &RepoName::new(target.as_str()).expect("a valid target"),
        )
        .await?;
    }
    access.update(|s| s.grant(target, user, role)).await
}

pub async fn ungrant(access: &Access, target: &Target, user: &str) -> Result<(), AccessError> {
    access.update(|s| s.ungrant(target, user)).await
}

pub async fn protect(
    access: &Access,
    repos: &Repos,
    name: &RepoName,
    protection: Protection,
) -> Result<(), AccessError> {
    must_exist(repos, name).await?;
    access
        .update(|s| {
            s.protect(name, protection.clone());
            Ok(())
        })
        .await
}

pub async fn unprotect(access: &Access, name: &RepoName, pattern: &str) -> Result<(), AccessError> {
    access.update(|s| s.unprotect(name, pattern)).await
}

/// Adds a webhook to a repository (which must exist); returns it.
pub async fn add_webhook(
    access: &Access,
    repos: &Repos,
    name: &RepoName,
    url: &str,
    secret: Option<String>,
    events: Vec<String>,
) -> Result<state::Webhook, AccessError> {
    state::check_webhook(url, &events)?;
    if secret
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.len() > 256)
    {
        return Err(AccessError::Invalid(
            "a webhook secret is 1 to 256 bytes".into(),
        ));
    }
    must_exist(repos, name).await?;
    let mut id = [0u8; 4];
    getrandom::fill(&mut id).expect("the system has randomness");
    let hook = state::Webhook {
        id: hex::encode(id),
        url: url.to_owned(),
        secret,
        events,
        created: state::now(),
    };
    access.update(|s| s.add_webhook(name, hook.clone())).await?;
    Ok(hook)
}

pub async fn remove_webhook(access: &Access, name: &RepoName, id: &str) -> Result<(), AccessError> {
    access.update(|s| s.remove_webhook(name, id)).await
}

/// A time in seconds since the Unix epoch, as RFC 3339 (UTC).
pub fn format_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}
