//! The access state: users and their token hashes, grants, and each repository's
//! visibility and protected refs, as one JSON document in the store.
//!
//! Everything here is a pure function of the document; reading and writing it (by
//! compare-and-swap only) is [`super::Access`]'s job. Invariants kept by the mutations:
//! every grant names an existing user; token ids are unique across all users; the last
//! server admin cannot be removed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::refs::Protection;
use super::token::{self, Secret, TokenHash};
use super::{AccessError, Role};
use crate::repo::RepoName;
use crate::repo::manifest::RecentTxns;

/// The newest format this server reads and writes; a reader refuses newer ones. Format
/// 2 adds [`RepoSettings::webhooks`]: a document is written in the format its fields
/// need, so that a server too old to keep them refuses it instead of dropping them.
pub const FORMAT: u32 = 2;

/// The whole access state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// One more with every write: of two copies, the one with the higher serial is the
    /// newer, whatever the clocks of the processes that read them say.
    #[serde(default)]
    pub serial: u64,
    /// Every user, by name.
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// Roles by target (a repository name, or a prefix ending in `/`), then by user.
    #[serde(default)]
    pub grants: BTreeMap<String, BTreeMap<String, Role>>,
    /// Settings of repositories that have any: absent means private, unprotected.
    #[serde(default)]
    pub repos: BTreeMap<String, RepoSettings>,
    /// The last writes: a writer whose compare-and-swap answer was lost recognises its
    /// own write, and does not apply its change twice.
    #[serde(default)]
    pub txns: RecentTxns,
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// A server admin may do everything, on every repository.
    #[serde(default)]
    pub admin: bool,
    /// When the user was added, in seconds since the Unix epoch.
    pub created: u64,
    #[serde(default)]
    pub tokens: Vec<TokenRecord>,
}

/// What is kept of a token: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The first 12 hex digits of its hash; names it in lists and revocations.
    pub id: String,
    /// SHA-256 of the whole token, hex.
    pub hash: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// When it stops working, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// A read-only token reads what its user may read, and writes nothing.
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// A repository's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoSettings {
    /// Anyone may read a public repository, without credentials.
    #[serde(default)]
    pub public: bool,
    /// Protected ref patterns, in the order they were added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protections: Vec<Protection>,
    /// Where push events are sent, in the order the hooks were added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
}

/// A webhook: a URL that gets a POST for each event it wants.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// 8 hex digits, unique in the repository.
    pub id: String,
    pub url: String,
    /// The key of the `X-Hub-Signature-256` HMAC, if the hook has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The events it gets (`push`).
    pub events: Vec<String>,
    /// When it was added, in seconds since the Unix epoch.
    pub created: u64,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "…"))
            .field("events", &self.events)
            .finish()
    }
}

/// The events a webhook may ask for.
pub const WEBHOOK_EVENTS: &[&str] = &["push"];

/// The longest webhook URL accepted.
const MAX_URL: usize = 2048;

/// Checks a webhook's URL (http or https, a host, no credentials in it) and events.
pub fn check_webhook(url: &str, events: &[String]) -> Result<(), AccessError> {
    let invalid = |why: String| Err(AccessError::Invalid(why));
    if url.len() > MAX_URL {
        return invalid(format!("the URL is longer than {MAX_URL} bytes"));
    }
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(e) => return invalid(format!("invalid URL {url:?}: {e}")),
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return invalid(format!("invalid URL {url:?}: use http or https"));
    }
    if parsed.host().is_none() {
        return invalid(format!("invalid URL {url:?}: it names no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return invalid(
            "the URL holds credentials: give a --secret instead, which signs each delivery"
                .to_owned(),
        );
    }
    if events.is_empty() {
        return invalid("a webhook needs an event".to_owned());
    }
    if let Some(unknown) = events
        .iter()
        .find(|e| !WEBHOOK_EVENTS.contains(&e.as_str()))
    {
        return invalid(format!(
            "unknown event {unknown:?} (known: {})",
            WEBHOOK_EVENTS.join(", ")
        ));
    }
    Ok(())
}

/// What a new token may do.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub read_only: bool,
    pub expires_days: Option<u64>,
    pub note: String,
}

/// Checks a user name: 1 to 64 of ASCII letters, digits, `-`, `_`, `.`, starting with a
/// letter or digit.
pub fn check_user_name(name: &str) -> Result<(), AccessError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(AccessError::Invalid(format!(
            "invalid user name {name:?}: use 1 to 64 letters, digits, `-`, `_` or `.`, \
             starting with a letter or digit"
        )))
    }
}

/// A grant target: a repository name, or a prefix of names ending in `/` (`org/` covers
/// `org/a` and `org/team/b`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target(String);

impl Target {
    pub fn parse(text: &str) -> Result<Self, AccessError> {
        let invalid = |e: crate::repo::name::InvalidName| AccessError::Invalid(e.to_string());
        match text.strip_suffix('/') {
            Some(prefix) => {
                let name = RepoName::new(prefix).map_err(invalid)?;
                if prefix.ends_with(".git") {
                    return Err(AccessError::Invalid(format!(
                        "invalid prefix {text:?}: a prefix names folders, not repositories"
                    )));
                }
                Ok(Target(format!("{name}/")))
            }
            None => Ok(Target(RepoName::new(text).map_err(invalid)?.to_string())),
        }
    }

    pub fn repo(name: &RepoName) -> Self {
        Target(name.to_string())
    }

    pub fn is_prefix(&self) -> bool {
        self.0.ends_with('/')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This target and every prefix that covers it, longest last: `org/`, `org/team/`,
    /// then `org/team/x`.
    pub fn covering(&self) -> impl Iterator<Item = &str> {
        let s = self.0.as_str();
        s.match_indices('/')
            .map(move |(i, _)| &s[..=i])
            .filter(move |p| p.len() < s.len())
            .chain(std::iter::once(s))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl State {
    pub fn new() -> Self {
        State {
            format: FORMAT,
            ..State::default()
        }
    }

    /// The role `user` holds on `target` through grants on it or on a prefix covering
    /// it (the highest of them).
    pub fn granted(&self, user: &str, target: &Target) -> Option<Role> {
        target
            .covering()
            .filter_map(|t| self.grants.get(t).and_then(|g| g.get(user)).copied())
            .max()
    }

    /// A repository's settings (the defaults when it has none).
    pub fn settings(&self, repo: &RepoName) -> RepoSettings {
        self.repos.get(repo.as_str()).cloned().unwrap_or_default()
    }

    pub fn is_public(&self, repo: &RepoName) -> bool {
        self.repos.get(repo.as_str()).is_some_and(|s| s.public)
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User, AccessError> {
        self.users
            .get_mut(name)
            .ok_or_else(|| AccessError::NoUser(name.to_owned()))
    }

    pub fn user(&self, name: &str) -> Result<&User, AccessError> {
        self.users
            .get(name)
            .ok_or_else(|| AccessError::NoUser(name.to_owned()))
    }

    pub fn add_user(&mut self, name: &str, admin: bool, now: u64) -> Result<(), AccessError> {
        check_user_name(name)?;
        if self.users.contains_key(name) {
            return Err(AccessError::Exists(format!("user {name:?} already exists")));
        }
        self.users.insert(
            name.to_owned(),
            User {
                admin,
                created: now,
                tokens: Vec::new(),
            },
        );
        Ok(())
    }

    /// Removes a user with their tokens and grants. The last server admin stays.
    pub fn remove_user(&mut self, name: &str) -> Result<(), AccessError> {
        let user = self.user(name)?;
        if user.admin && self.users.values().filter(|u| u.admin).count() == 1 {
            return Err(AccessError::Invalid(format!(
                "{name:?} is the last server admin: make another user an admin first"
            )));
        }
        self.users.remove(name);
        for grants in self.grants.values_mut() {
            grants.remove(name);
        }
        self.grants.retain(|_, g| !g.is_empty());
        Ok(())
    }

    /// Records `token` (made by [`token::generate`]) for `user`; returns its record.
    pub fn add_token(
        &mut self,
        user: &str,
        token: &Secret,
        spec: &TokenSpec,
        now: u64,
    ) -> Result<TokenRecord, AccessError> {
        let hash = TokenHash::of(token);
        let id = hash.id();
        if self
            .users
            .values()
            .flat_map(|u| &u.tokens)
            .any(|t| t.id == id)
        {
            // 48 bits of a random hash collide about never; the caller draws again.
            return Err(AccessError::Exists(format!("token id {id} is taken")));
        }
        if spec.note.len() > 200 || spec.note.chars().any(char::is_control) {
            return Err(AccessError::Invalid(
                "a token note is at most 200 bytes, without control characters".into(),
            ));
        }
        let expires = match spec.expires_days {
            Some(days @ 1..=36_500) => Some(now + days * 86_400),
            Some(_) => {
                return Err(AccessError::Invalid(
                    "a token expires after 1 to 36500 days".into(),
                ));
            }
            None => None,
        };
        let record = TokenRecord {
            id,
            hash: hash.to_hex(),
            created: now,
            expires,
            read_only: spec.read_only,
            note: spec.note.clone(),
        };
        self.user_mut(user)?.tokens.push(record.clone());
        Ok(record)
    }

    pub fn revoke_token(&mut self, user: &str, id: &str) -> Result<(), AccessError> {
        let tokens = &mut self.user_mut(user)?.tokens;
        let before = tokens.len();
        tokens.retain(|t| t.id != id);
        if tokens.len() == before {
            return Err(AccessError::NotFound(format!(
                "user {user:?} has no token {id:?}"
            )));
        }
        Ok(())
    }

    pub fn grant(&mut self, target: &Target, user: &str, role: Role) -> Result<(), AccessError> {
        self.user(user)?;
        self.grants
            .entry(target.as_str().to_owned())
            .or_default()
            .insert(user.to_owned(), role);
        Ok(())
    }

    pub fn ungrant(&mut self, target: &Target, user: &str) -> Result<(), AccessError> {
        let removed = self
            .grants
            .get_mut(target.as_str())
            .and_then(|g| g.remove(user));
        self.grants.retain(|_, g| !g.is_empty());
        match removed {
            Some(_) => Ok(()),
            None => Err(AccessError::NotFound(format!(
                "{user:?} has no grant on {target}"
            ))),
        }
    }

    fn settings_mut(&mut self, repo: &RepoName) -> &mut RepoSettings {
        self.repos.entry(repo.to_string()).or_default()
    }

    pub fn set_public(&mut self, repo: &RepoName, public: bool) {
        self.settings_mut(repo).public = public;
        self.tidy(repo);
    }

    /// Adds `protection`, or replaces the one with the same pattern.
    pub fn protect(&mut self, repo: &RepoName, protection: Protection) {
        let list = &mut self.settings_mut(repo).protections;
        match list.iter_mut().find(|p| p.pattern == protection.pattern) {
            Some(existing) => *existing = protection,
            None => list.push(protection),
        }
    }

    pub fn unprotect(&mut self, repo: &RepoName, pattern: &str) -> Result<(), AccessError> {
        let missing = || format!("{repo} has no protection {pattern:?}");
        self.remove_setting(repo, missing, |s| {
            let before = s.protections.len();
            s.protections.retain(|p| p.pattern != pattern);
            s.protections.len() != before
        })
    }

    /// Applies `remove` to a repository's settings; `Err(NotFound)` with `missing`'s
    /// words when it removed nothing.
    fn remove_setting(
        &mut self,
        repo: &RepoName,
        missing: impl FnOnce() -> String,
        remove: impl FnOnce(&mut RepoSettings) -> bool,
    ) -> Result<(), AccessError> {
        let removed = remove(self.settings_mut(repo));
        self.tidy(repo);
        if removed {
            Ok(())
        } else {
            Err(AccessError::NotFound(missing()))
        }
    }

    /// A repository was just created, by `creator` if a user did: they become its admin.
    /// Whatever was recorded for the name before (left by a change that raced with its
    /// deletion) is dropped.
    pub fn created(&mut self, repo: &RepoName, creator: Option<&str>, public: bool) {
        self.forget(repo);
        if let Some(user) = creator.filter(|u| self.users.contains_key(*u)) {
            self.grants
                .entry(repo.to_string())
                .or_default()
                .insert(user.to_owned(), Role::Admin);
        }
        if public {
            self.set_public(repo, true);
        }
    }

    /// Adds a webhook to a repository.
    pub fn add_webhook(&mut self, repo: &RepoName, hook: Webhook) -> Result<(), AccessError> {
        check_webhook(&hook.url, &hook.events)?;
        let list = &mut self.settings_mut(repo).webhooks;
        if list.iter().any(|h| h.id == hook.id) {
            return Err(AccessError::Exists(format!(
                "{repo} has a webhook {} already",
                hook.id
            )));
        }
        list.push(hook);
        Ok(())
    }

    pub fn remove_webhook(&mut self, repo: &RepoName, id: &str) -> Result<(), AccessError> {
        let missing = || format!("{repo} has no webhook {id:?}");
        self.remove_setting(repo, missing, |s| {
            let before = s.webhooks.len();
            s.webhooks.retain(|h| h.id != id);
            s.webhooks.len() != before
        })
    }

    /// Webhook `id` of `repo`.
    pub fn webhook(&self, repo: &RepoName, id: &str) -> Option<&Webhook> {
        self.repos
            .get(repo.as_str())?
            .webhooks
            .iter()
            .find(|h| h.id == id)
    }

    /// The webhooks of `repo` that want `event`.
    pub fn webhooks_for<'a>(
        &'a self,
        repo: &RepoName,
        event: &'a str,
    ) -> impl Iterator<Item = &'a Webhook> + 'a {
        self.repos
            .get(repo.as_str())
            .into_iter()
            .flat_map(|s| s.webhooks.iter())
            .filter(move |h| h.events.iter().any(|e| e == event))
    }

    /// Whether any repository has a webhook.
    pub fn has_webhooks(&self) -> bool {
        self.repos.values().any(|s| !s.webhooks.is_empty())
    }

    /// The oldest format that holds every field this state uses.
    pub fn needed_format(&self) -> u32 {
        if self.has_webhooks() { 2 } else { 1 }
    }

    /// Forgets everything about a repository that is being deleted.
    pub fn forget(&mut self, repo: &RepoName) {
        self.repos.remove(repo.as_str());
        self.grants.remove(repo.as_str());
    }

    /// Drops settings that say nothing beyond the defaults.
    fn tidy(&mut self, repo: &RepoName) {
        if self
            .repos
            .get(repo.as_str())
            .is_some_and(|s| *s == RepoSettings::default())
        {
            self.repos.remove(repo.as_str());
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Makes a token for `user` and records it, drawing again in the (astronomically
/// unlikely) case its id is taken.
pub fn new_token(
    state: &mut State,
    user: &str,
    spec: &TokenSpec,
    now: u64,
) -> Result<(Secret, TokenRecord), AccessError> {
    loop {
        let secret = token::generate().map_err(|e| AccessError::Invalid(e.to_string()))?;
        match state.add_token(user, &secret, spec, now) {
            Ok(record) => return Ok((secret, record)),
            Err(AccessError::Exists(_)) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> RepoName {
        RepoName::new(name).expect("valid")
    }

    #[test]
    fn prefixes_cover_nested_names() {
        let t = Target::parse("org/team/x").expect("valid");
        assert_eq!(
            t.covering().collect::<Vec<_>>(),
            ["org/", "org/team/", "org/team/x"]
        );
        let p = Target::parse("org/").expect("valid");
        assert!(p.is_prefix());
        assert_eq!(p.covering().collect::<Vec<_>>(), ["org/"]);
        for bad in ["", "/", "org//", "../x/", ".a/", "a b", "x.git/"] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Target::parse("org/x.git").expect("valid").as_str(), "org/x");
    }

    #[test]
    fn grants_give_the_highest_covering_role() {
        let mut s = State::new();
        s.add_user("root", true, 0).expect("add");
        s.add_user("bob", false, 0).expect("add");
        s.grant(&Target::parse("org/").expect("t"), "bob", Role::Read)
            .expect("grant");
        s.grant(&Target::parse("org/team/x").expect("t"), "bob", Role::Write)
            .expect("grant");
        let x = Target::repo(&repo("org/team/x"));
        assert_eq!(s.granted("bob", &x), Some(Role::Write));
        assert_eq!(
            s.granted("bob", &Target::repo(&repo("org/other"))),
            Some(Role::Read)
        );
        assert_eq!(s.granted("bob", &Target::repo(&repo("orgx/a"))), None);
        assert_eq!(s.granted("root", &x), None, "admins hold no grants");
        // Removing the user removes the grants.
        s.remove_user("bob").expect("remove");
        assert!(s.grants.is_empty());
        assert!(s.grant(&x, "bob", Role::Read).is_err(), "no such user");
    }

    #[test]
    fn the_last_admin_stays() {
        let mut s = State::new();
        s.add_user("root", true, 0).expect("add");
        assert!(s.add_user("root", true, 0).is_err(), "exists");
        assert!(s.remove_user("root").is_err());
        s.add_user("second", true, 0).expect("add");
        s.remove_user("root").expect("now it may go");
        for bad in ["", "-x", "a/b", "a b", "ü", &"x".repeat(65)] {
            assert!(s.add_user(bad, false, 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_stored_as_hashes_and_revoked_by_id() {
        let mut s = State::new();
        s.add_user("root", true, 0).expect("add");
        let spec = TokenSpec {
            read_only: true,
            expires_days: Some(2),
            note: "ci".into(),
        };
        let (secret, record) = new_token(&mut s, "root", &spec, 100).expect("token");
        let stored = serde_json::to_string(&s).expect("json");
        assert!(!stored.contains(secret.expose()), "the token is not stored");
        assert_eq!(record.expires, Some(100 + 2 * 86_400));
        assert!(record.read_only);
        assert!(s.revoke_token("root", "000000000000").is_err());
        s.revoke_token("root", &record.id).expect("revoke");
        assert!(s.user("root").expect("user").tokens.is_empty());
        assert!(new_token(&mut s, "nobody", &spec, 0).is_err());
    }

    #[test]
    fn settings_default_to_private_and_tidy_up() {
        let mut s = State::new();
        let r = repo("a/b");
        assert!(!s.is_public(&r));
        s.set_public(&r, true);
        assert!(s.is_public(&r));
        s.set_public(&r, false);
        assert!(s.repos.is_empty());
        s.protect(&r, Protection::new("main").expect("pattern"));
        assert!(s.unprotect(&r, "dev").is_err());
        s.unprotect(&r, "main").expect("unprotect");
        assert!(s.repos.is_empty());
    }
}
