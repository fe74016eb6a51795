//! Access control: users and their tokens, per-repository roles, public and private
//! repositories, protected refs.
//!
//! The whole access state is one JSON document at [`STATE_KEY`], under a prefix no
//! repository name can take (names never start with `.`). It is written only by
//! compare-and-swap (or created with `Create`), so concurrent changes from any number
//! of processes lose nothing, and every instance on the store enforces the same rules.
//!
//! Each process caches the document it read ([`View`]): a request is checked against
//! the cache without a store request. A cached view younger than [`AccessConfig::fresh_for`]
//! is used as it is; an older one is used while a background read replaces it; one
//! older than [`AccessConfig::max_age`] is never used, so a revoked token or a removed
//! grant is in force on every instance within `max_age`. A request with credentials
//! that the cache would refuse is decided again on a fresh read (one read for
//! concurrent requests), so a token, user or grant made on another instance works
//! everywhere at once; failed credentials are throttled per address, and a throttled
//! address causes no reads. Changes made through this process are in its cache at
//! once; of two copies, the one with the higher [`State::serial`] wins.
//!
//! - [`token`]: the token format, hashing and constant-time comparison;
//! - [`state`]: the document and its pure mutations;
//! - [`refs`]: protected ref patterns, as the push policy;
//! - [`limiter`]: slowing down failed credentials per address;
//! - [`manage`]: the management operations the CLI and the JSON API share.
//!
//! This layer knows the store and the repository model, not HTTP.

pub mod limiter;
pub mod manage;
pub mod refs;
pub mod state;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use stowage_store::{ETag, Error as StoreError, Key, ObjectStore, ObjectStoreExt, PutMode};

use crate::repo::RepoName;
use limiter::{Limiter, LimiterConfig};
use refs::Protections;
use state::{RepoSettings, State, Target};
use token::{Secret, TokenHash};

/// Where the access state lives in the store.
pub const STATE_KEY: &str = ".access/state.json";

/// How many times a change re-reads the document after losing a compare-and-swap.
const MAX_ATTEMPTS: u32 = 64;

/// What a user may do with a repository: each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Clone and fetch.
    Read,
    /// Push, and create repositories under a prefix.
    Write,
    /// Manage the repository's grants, visibility and protections; delete it.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Result<Self, AccessError> {
        match text {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            _ => Err(AccessError::Invalid(format!(
                "invalid role {text:?}: use read, write or admin"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// Why an access operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no user {0:?}")]
    NoUser(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the access state in the store is not valid: {0}")]
    Corrupt(String),
    #[error("too many concurrent changes to the access state; try again")]
    Contention,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] crate::repo::RepoError),
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user, or `None` for an anonymous request.
    pub user: Option<String>,
    pub server_admin: bool,
    /// Authenticated by a read-only token: never more than read.
    pub read_only: bool,
}

impl Caller {
    pub fn anonymous() -> Self {
        Caller {
            user: None,
            server_admin: false,
            read_only: false,
        }
    }

    /// Everyone, when access control is off.
    pub fn unrestricted() -> Self {
        Caller {
            user: None,
            server_admin: true,
            read_only: false,
        }
    }

    /// The user's name, for logs and hooks (`-` when anonymous).
    pub fn name(&self) -> &str {
        self.user.as_deref().unwrap_or("-")
    }
}

/// Credentials a request carried.
#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    /// A token, from HTTP Basic (password, or user name with an empty password) or
    /// Bearer.
    Token(Secret),
    /// A user name set by a trusted, authenticating reverse proxy.
    ProxyUser(String),
}

/// What a request needs of a repository; it follows from its route and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials where some are needed (git asks its helper and retries).
    Unauthenticated,
    /// Wrong, expired or revoked credentials (git tells its helper to forget them).
    BadCredentials,
    /// Too many failed credentials from this address; try again after this long.
    Throttled(Duration),
    /// The caller (this user) may not know the repository exists: answered as a
    /// missing one.
    Hidden { user: String },
    /// The caller may read, but not do this; the reason is shown to them.
    Forbidden { user: String, reason: String },
}

/// A request that may go ahead.
#[derive(Debug, Clone)]
pub struct Allowed {
    pub caller: Caller,
    pub role: Role,
    /// Whether the caller may create the repository if it does not exist: write on a
    /// prefix covering its name, or server admin.
    pub may_create: bool,
    /// The repository's settings as the check saw them.
    pub settings: RepoSettings,
}

impl Allowed {
    /// The protections a push by this caller must respect.
    pub fn protections(&self) -> Protections {
        Protections::new(self.settings.protections.clone(), self.role >= Role::Admin)
    }
}

/// Settings of the access layer.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// Off (`--no-auth`): every request may read and write; protections still hold.
    pub enabled: bool,
    /// A cached view this young is used without reading the store.
    pub fresh_for: Duration,
    /// A cached view older than this is never used.
    pub max_age: Duration,
    /// A refusal of a request with credentials is decided again on a fresh read when
    /// the cache is older than this.
    pub recheck_after: Duration,
    pub limiter: LimiterConfig,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            enabled: true,
            fresh_for: Duration::from_secs(2),
            max_age: Duration::from_secs(4),
            recheck_after: Duration::ZERO,
            limiter: LimiterConfig::default(),
        }
    }
}

/// The access state as one process read it, indexed for checks.
#[derive(Debug)]
pub struct View {
    pub state: State,
    etag: Option<ETag>,
    /// Token id → (user, position in the user's tokens).
    tokens: HashMap<String, (String, usize)>,
    /// When the read that produced this view began.
    read_at: Instant,
}

impl View {
    fn new(state: State, etag: Option<ETag>, read_at: Instant) -> Self {
        let mut tokens = HashMap::new();
        for (name, user) in &state.users {
            for (i, t) in user.tokens.iter().enumerate() {
                tokens.insert(t.id.clone(), (name.clone(), i));
            }
        }
        View {
            state,
            etag,
            tokens,
            read_at,
        }
    }

    fn age(&self) -> Duration {
        self.read_at.elapsed()
    }

    /// Who `credentials` name, or why they name no one.
    pub fn authenticate(&self, credentials: &Credentials, now: u64) -> Result<Caller, Denied> {
        match credentials {
            Credentials::None => Ok(Caller::anonymous()),
            Credentials::Token(secret) => self.authenticate_token(secret, now),
            Credentials::ProxyUser(name) => match self.state.users.get(name) {
                Some(user) => Ok(Caller {
                    user: Some(name.clone()),
                    server_admin: user.admin,
                    read_only: false,
                }),
                None => Err(Denied::Forbidden {
                    user: name.clone(),
                    reason: format!("user {name:?} is not a user of this server"),
                }),
            },
        }
    }

    fn authenticate_token(&self, secret: &Secret, now: u64) -> Result<Caller, Denied> {
        if !token::well_formed(secret) {
            return Err(Denied::BadCredentials);
        }
        let hash = TokenHash::of(secret);
        let found = self.tokens.get(&hash.id()).and_then(|(name, i)| {
            let user = self.state.users.get(name)?;
            Some((name, user, user.tokens.get(*i)?))
        });
        // Compare whether or not the id is known, so both take the same time.
        let stored = found
            .and_then(|(_, _, t)| TokenHash::from_hex(&t.hash))
            .unwrap_or(TokenHash([0; 32]));
        let matches = hash.matches(&stored);
        match found {
            Some((name, user, t)) if matches && t.expires.is_none_or(|e| now < e) => Ok(Caller {
                user: Some(name.clone()),
                server_admin: user.admin,
                read_only: t.read_only,
            }),
            _ => Err(Denied::BadCredentials),
        }
    }

    /// The role `caller` holds on `repo`: from being a server admin, from grants, and
    /// read on public repositories; at most read for a read-only token.
    pub fn role(&self, caller: &Caller, repo: &RepoName) -> Option<Role> {
        let mut role = self.role_on(caller, &Target::repo(repo));
        if self.state.is_public(repo) {
            role = role.max(Some(Role::Read));
        }
        role
    }

    /// Whether `caller` may create `repo`: a server admin, or write on a prefix covering
    /// the name (a grant on the name itself is for a repository that exists).
    pub fn may_create(&self, caller: &Caller, repo: &RepoName) -> bool {
        if caller.read_only {
            return false;
        }
        if caller.server_admin {
            return true;
        }
        let Some(user) = caller.user.as_deref() else {
            return false;
        };
        Target::repo(repo)
            .covering()
            .filter(|t| t.ends_with('/'))
            .filter_map(|t| self.state.grants.get(t).and_then(|g| g.get(user)))
            .any(|role| *role >= Role::Write)
    }

    /// The role `caller` holds on a repository or prefix through being a server admin
    /// or through grants (not visibility).
    pub fn role_on(&self, caller: &Caller, target: &Target) -> Option<Role> {
        let role = if caller.server_admin {
            Some(Role::Admin)
        } else {
            caller
                .user
                .as_deref()
                .and_then(|u| self.state.granted(u, target))
        };
        if caller.read_only {
            role.map(|r| r.min(Role::Read))
        } else {
            role
        }
    }

    fn decide(
        &self,
        credentials: &Credentials,
        repo: &RepoName,
        need: Need,
    ) -> Result<Allowed, Denied> {
        let caller = self.authenticate(credentials, state::now())?;
        let role = self.role(&caller, repo);
        let allowed = |role| Allowed {
            caller: caller.clone(),
            role,
            may_create: need == Need::Write && self.may_create(&caller, repo),
            settings: self.state.settings(repo),
        };
        match (role, need) {
            (Some(role), Need::Read) => Ok(allowed(role)),
            (Some(role), Need::Write) if role >= Role::Write => Ok(allowed(role)),
            (_, _) if caller.user.is_none() => Err(Denied::Unauthenticated),
            (None, _) => Err(Denied::Hidden {
                user: caller.name().to_owned(),
            }),
            (Some(_), Need::Write) if caller.read_only => Err(Denied::Forbidden {
                user: caller.name().to_owned(),
                reason: format!("this token is read-only: it cannot push to {repo}"),
            }),
            (Some(_), Need::Write) => Err(Denied::Forbidden {
                user: caller.name().to_owned(),
                reason: format!(
                    "{} may read {repo} but not push to it; an admin of the repository can \
                     grant write access",
                    caller.name()
                ),
            }),
        }
    }
}

/// The access state of one store, cached. Cheap to clone: clones share the cache.
#[derive(Debug, Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ObjectStore>,
    key: Key,
    config: AccessConfig,
    current: RwLock<Option<Arc<View>>>,
    /// Held while reading the document, so that concurrent refreshes read it once.
    reading: tokio::sync::Mutex<()>,
    /// Whether a background refresh is running.
    refreshing: AtomicBool,
    limiter: Limiter,
}

/// What the first start of a server on a store did about users.
#[derive(Debug)]
pub enum Bootstrap {
    /// There were no users: the server admin `admin` was created with this token.
    Created(Secret),
    /// There are users already.
    Existing { users: usize, admins: usize },
}

/// The name of the server admin the first start creates.
pub const FIRST_ADMIN: &str = "admin";

impl Access {
    pub fn new(store: Arc<dyn ObjectStore>, config: AccessConfig) -> Self {
        Access {
            inner: Arc::new(Inner {
                store,
                key: Key::new(STATE_KEY).expect("a valid key"),
                limiter: Limiter::new(config.limiter),
                config,
                current: RwLock::new(None),
                reading: tokio::sync::Mutex::new(()),
                refreshing: AtomicBool::new(false),
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.config.enabled
    }

    fn current(&self) -> Option<Arc<View>> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `view` the cached one, unless the cache holds a newer state (a higher
    /// serial, or the same one read later) that is still fresh enough to use.
    fn install(&self, view: View) -> Arc<View> {
        let view = Arc::new(view);
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some(kept)
                if kept.age() < self.inner.config.max_age
                    && (kept.state.serial, kept.read_at) > (view.state.serial, view.read_at) =>
            {
                kept.clone()
            }
            _ => {
                *current = Some(view.clone());
                view
            }
        }
    }

    /// Reads the document from the store (a missing one is the empty state).
    async fn read(&self) -> Result<View, AccessError> {
        let read_at = Instant::now();
        match self.inner.store.get_opt(&self.inner.key).await? {
            None => Ok(View::new(State::new(), None, read_at)),
            Some(found) => {
                let state: State = serde_json::from_slice(&found.bytes)
                    .map_err(|e| AccessError::Corrupt(e.to_string()))?;
                if state.format > state::FORMAT {
                    return Err(AccessError::Corrupt(format!(
                        "format {} is newer than this server understands",
                        state.format
                    )));
                }
                Ok(View::new(state, Some(found.meta.etag), read_at))
            }
        }
    }

    /// A view read after this call began (one read for concurrent callers).
    pub async fn reload(&self) -> Result<Arc<View>, AccessError> {
        let asked = Instant::now();
        let _reading = self.inner.reading.lock().await;
        if let Some(view) = self.current()
            && view.read_at >= asked
        {
            return Ok(view);
        }
        let view = self.read().await?;
        Ok(self.install(view))
    }

    /// The cached view, refreshed as the module documentation describes.
    pub async fn view(&self) -> Result<Arc<View>, AccessError> {
        if let Some(view) = self.current() {
            let age = view.age();
            if age < self.inner.config.fresh_for {
                return Ok(view);
            }
            if age < self.inner.config.max_age {
                self.refresh_in_background();
                return Ok(view);
            }
        }
        self.reload().await
    }

    fn refresh_in_background(&self) {
        if self.inner.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.reload().await {
                tracing::warn!(error = %e, "reading the access state failed");
            }
            this.inner.refreshing.store(false, Ordering::Release);
        });
    }

    /// Changes the state by compare-and-swap: `change` is applied to the latest state
    /// (again after every lost race) and the result written only if nothing else was
    /// written meanwhile. Returns what `change` returned for the state that was stored.
    pub async fn update<T>(
        &self,
        mut change: impl FnMut(&mut State) -> Result<T, AccessError>,
    ) -> Result<T, AccessError> {
        let txn = crate::repo::push::transaction_id();
        let mut view = self.reload().await?;
        // Each attempt's result, under its own transaction id: a write whose answer was
        // lost (or refused by a retry of a request that had landed) is found in the
        // state read next, and its result is the one to return.
        let mut attempts: Vec<(String, Option<T>)> = Vec::new();
        for attempt in 0..MAX_ATTEMPTS {
            if let Some((_, result)) = attempts.iter_mut().find(|(id, _)| view.state.txns.has(id)) {
                return Ok(result.take().expect("an attempt's result is taken once"));
            }
            let mut next = view.state.clone();
            next.format = next.needed_format();
            next.serial = view.state.serial + 1;
            let result = change(&mut next)?;
            let id = format!("{txn}.{attempt}");
            next.txns.record(&id);
            let body = Bytes::from(serde_json::to_vec_pretty(&next).expect("state serializes"));
            let mode = match &view.etag {
                Some(etag) => PutMode::Update(etag.clone()),
                None => PutMode::Create,
            };
            let written_from = Instant::now();
            match self.inner.store.put(&self.inner.key, body, mode).await {
                Ok(etag) => {
                    self.install(View::new(next, Some(etag), written_from));
                    return Ok(result);
                }
                Err(StoreError::Precondition { .. } | StoreError::AlreadyExists { .. }) => {}
                Err(e) if e.is_retryable() => {}
                Err(e) => return Err(e.into()),
            }
            attempts.push((id, Some(result)));
            let backoff = 2u64.pow(attempt.min(6)) + u64::from(attempt) * 3;
            tokio::time::sleep(Duration::from_millis(backoff)).await;
            view = self.reload().await?;
        }
        Err(AccessError::Contention)
    }

    /// On a store without users: creates the server admin [`FIRST_ADMIN`] with a token.
    pub async fn bootstrap(&self) -> Result<Bootstrap, AccessError> {
        let view = self.reload().await?;
        if !view.state.users.is_empty() {
            return Ok(existing(&view.state));
        }
        self.update(|state| {
            if !state.users.is_empty() {
                return Ok(existing(state));
            }
            state.add_user(FIRST_ADMIN, true, state::now())?;
            let spec = state::TokenSpec {
                note: "created by the first start of the server".into(),
                ..Default::default()
            };
            let (secret, _) = state::new_token(state, FIRST_ADMIN, &spec, state::now())?;
            Ok(Bootstrap::Created(secret))
        })
        .await
    }

    /// Decides whether a request with `credentials`, from `addr`, may do what `need`
    /// says with `repo`.
    pub async fn authorize(
        &self,
        credentials: &Credentials,
        addr: IpAddr,
        repo: &RepoName,
        need: Need,
    ) -> Result<Result<Allowed, Denied>, AccessError> {
        if !self.enabled() {
            // Everyone may read and write; protections still hold, admins-only ones
            // for everyone.
            let view = self.view().await?;
            return Ok(Ok(Allowed {
                caller: Caller::unrestricted(),
                role: Role::Write,
                may_create: true,
                settings: view.state.settings(repo),
            }));
        }
        self.checked(credentials, addr, |view| {
            view.decide(credentials, repo, need)
        })
        .await
    }

    /// Who `credentials` name (for routes that are not about one repository), with the
    /// view that said so.
    pub async fn authenticate(
        &self,
        credentials: &Credentials,
        addr: IpAddr,
    ) -> Result<Result<(Caller, Arc<View>), Denied>, AccessError> {
        if !self.enabled() {
            return Ok(Ok((Caller::unrestricted(), self.view().await?)));
        }
        let mut seen = None;
        let caller = self
            .checked(credentials, addr, |view| {
                seen = Some(view.clone());
                view.authenticate(credentials, state::now())
            })
            .await?;
        Ok(caller.map(|c| (c, seen.expect("the check saw a view"))))
    }

    /// Runs `decide` on the cached view. A refusal of a request with credentials is
    /// decided again on a fresh view if the cached one is older than `recheck_after`,
    /// unless the credentials cannot be a token or their address is out of budget for
    /// failures (then a failure is answered as throttled). Credentials that the cache
    /// accepts always pass, so nobody at a throttled address is locked out; only failed
    /// tokens count against an address.
    async fn checked<T>(
        &self,
        credentials: &Credentials,
        addr: IpAddr,
        mut decide: impl FnMut(&Arc<View>) -> Result<T, Denied>,
    ) -> Result<Result<T, Denied>, AccessError> {
        let mut view = self.view().await?;
        let mut decision = decide(&view);
        if decision.is_ok() {
            return Ok(decision);
        }
        let recheck = match credentials {
            Credentials::None => false,
            Credentials::ProxyUser(_) => true,
            Credentials::Token(secret) => {
                if let Err(wait) = self.inner.limiter.check(addr) {
                    return Ok(match decision {
                        Err(Denied::BadCredentials) => Err(Denied::Throttled(wait)),
                        other => other,
                    });
                }
                token::well_formed(secret)
            }
        };
        if recheck && view.age() > self.inner.config.recheck_after {
            view = self.reload().await?;
            decision = decide(&view);
        }
        if let (Err(Denied::BadCredentials), Credentials::Token(_)) = (&decision, credentials) {
            self.inner.limiter.failed(addr);
        }
        Ok(decision)
    }
}

fn existing(state: &State) -> Bootstrap {
    Bootstrap::Existing {
        users: state.users.len(),
        admins: state.users.values().filter(|u| u.admin).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_store::MemoryStore;

    fn repo(name: &str) -> RepoName {
        RepoName::new(name).expect("valid")
    }

    fn access(store: &Arc<MemoryStore>) -> Access {
        Access::new(store.clone(), AccessConfig::default())
    }

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn the_first_start_creates_one_admin() {
        let store = Arc::new(MemoryStore::new());
        let a = access(&store);
        let Bootstrap::Created(token) = a.bootstrap().await.expect("bootstrap") else {
            panic!("no admin created");
        };
        assert!(matches!(
            access(&store).bootstrap().await.expect("again"),
            Bootstrap::Existing {
                users: 1,
                admins: 1
            }
        ));
        let creds = Credentials::Token(token);
        let allowed = a
            .authorize(&creds, HERE, &repo("any/thing"), Need::Write)
            .await
            .expect("checked")
            .expect("admin may write");
        assert_eq!(allowed.role, Role::Admin);
        assert_eq!(allowed.caller.user.as_deref(), Some(FIRST_ADMIN));
    }

    #[tokio::test]
    async fn roles_visibility_and_scopes_decide() {
        let store = Arc::new(MemoryStore::new());
        let a = access(&store);
        let (reader, read_only) = a
            .update(|s| {
                s.add_user("root", true, 0)?;
                s.add_user("bob", false, 0)?;
                s.grant(&Target::parse("org/")?, "bob", Role::Write)?;
                s.set_public(&repo("pub"), true);
                let (t, _) = state::new_token(s, "bob", &Default::default(), state::now())?;
                let spec = state::TokenSpec {
                    read_only: true,
                    ..Default::default()
                };
                let (r, _) = state::new_token(s, "bob", &spec, state::now())?;
                Ok((t, r))
            })
            .await
            .expect("setup");
        let check = |creds: Credentials, name: &str, need| {
            let a = a.clone();
            let name = repo(name);
            async move { a.authorize(&creds, HERE, &name, need).await.expect("ok") }
        };
        let bob = Credentials::Token(reader);
        let bob_ro = Credentials::Token(read_only);
        assert!(check(bob.clone(), "org/team/x", Need::Write).await.is_ok());
        assert_eq!(
            check(bob.clone(), "other", Need::Read).await.err(),
            Some(Denied::Hidden { user: "bob".into() })
        );
        assert!(check(bob_ro.clone(), "org/x", Need::Read).await.is_ok());
        assert!(matches!(
            check(bob_ro, "org/x", Need::Write).await,
                        Err(Denied::Forbidden { reason, .. }) if reason.contains("read-only")
        ));
        assert!(check(Credentials::None, "pub", Need::Read).await.is_ok());
        assert_eq!(
            check(Credentials::None, "pub", Need::Write).await.err(),
            Some(Denied::Unauthenticated)
        );
        assert_eq!(
            check(Credentials::None, "org/x", Need::Read).await.err(),
            Some(Denied::Unauthenticated)
        );
        assert!(matches!(
            check(bob, "pub", Need::Write).await,
            Err(Denied::Forbidden { .. })
        ));
        let junk = Credentials::Token(Secret::new("not-a-token"));
        assert_eq!(
            check(junk, "pub", Need::Read).await.err(),
            Some(Denied::BadCredentials)
        );
    }

    #[tokio::test]
    async fn expired_and_revoked_tokens_fail() {
        let store = Arc::new(MemoryStore::new());
        let a = access(&store);
        let (token, id) = a
            .update(|s| {
                s.add_user("root", true, 0)?;
                let (t, r) = state::new_token(s, "root", &Default::default(), state::now())?;
                Ok((t, r.id))
            })
            .await
            .expect("setup");
        let creds = Credentials::Token(token.clone());
        let view = a.view().await.expect("view");
        assert!(view.authenticate(&creds, state::now()).is_ok());
        let expiring = state::TokenSpec {
            expires_days: Some(1),
            ..Default::default()
        };
        let (soon, _) = a
            .update(|s| state::new_token(s, "root", &expiring, state::now()))
            .await
            .expect("token");
        let view = a.view().await.expect("view");
        let later = state::now() + 86_400 + 1;
        assert!(view.authenticate(&Credentials::Token(soon), later).is_err());
        a.update(|s| s.revoke_token("root", &id))
            .await
            .expect("revoke");
        let view = a.view().await.expect("view");
        assert_eq!(
            view.authenticate(&creds, state::now()),
            Err(Denied::BadCredentials)
        );
    }

    #[tokio::test]
    async fn concurrent_changes_through_separate_caches_lose_nothing() {
        let store = Arc::new(MemoryStore::new());
        access(&store)
            .update(|s| s.add_user("root", true, 0))
            .await
            .expect("setup");
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let a = access(&store);
                tokio::spawn(async move {
                    a.update(|s| s.add_user(&format!("u{i}"), false, 0))
                        .await
                        .expect("add")
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let view = access(&store).reload().await.expect("view");
        assert_eq!(view.state.users.len(), 9);
    }

    #[tokio::test]
    async fn a_change_elsewhere_is_seen_within_max_age() {
        let store = Arc::new(MemoryStore::new());
        let config = AccessConfig {
            fresh_for: Duration::from_millis(50),
            max_age: Duration::from_millis(100),
            ..AccessConfig::default()
        };
        let here = Access::new(store.clone(), config.clone());
        let there = Access::new(store.clone(), config);
        let token = here
            .update(|s| {
                s.add_user("root", true, 0)?;
                state::new_token(s, "root", &Default::default(), 0).map(|(t, r)| (t, r.id))
            })
            .await
            .expect("setup");
        let creds = Credentials::Token(token.0);
        let name = repo("x");
        assert!(
            there
                .authorize(&creds, HERE, &name, Need::Read)
                .await
                .expect("ok")
                .is_ok()
        );
        here.update(|s| s.revoke_token("root", &token.1))
            .await
            .expect("revoke");
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            there
                .authorize(&creds, HERE, &name, Need::Read)
                .await
                .expect("ok")
                .err(),
            Some(Denied::BadCredentials)
        );
    }

    /// A store whose first write of the access state lands, but answers as a lost
    /// race (as an S3 client's retry of a conditional write that had landed does).
    #[derive(Debug, Default)]
    struct LandsThenRefuses {
        inner: MemoryStore,
        done: AtomicBool,
    }

    #[async_trait::async_trait]
    impl ObjectStore for LandsThenRefuses {
        async fn get(&self, key: &Key) -> stowage_store::Result<stowage_store::GetResult> {
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &Key,
            range: stowage_store::ByteRange,
        ) -> stowage_store::Result<Bytes> {
            self.inner.get_range(key, range).await
        }
        async fn head(&self, key: &Key) -> stowage_store::Result<stowage_store::ObjectMeta> {
            self.inner.head(key).await
        }
        async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> stowage_store::Result<ETag> {
            let etag = self.inner.put(key, body, mode).await?;
            if !self.done.swap(true, Ordering::SeqCst) {
                return Err(StoreError::Precondition {
                    key: key.to_string(),
                });
            }
            Ok(etag)
        }
        async fn put_stream(
            &self,
            key: &Key,
            body: stowage_store::ByteStream,
            mode: PutMode,
        ) -> stowage_store::Result<ETag> {
            self.inner.put_stream(key, body, mode).await
        }
        async fn delete(&self, key: &Key) -> stowage_store::Result<()> {
            self.inner.delete(key).await
        }
        fn list(
            &self,
            prefix: &str,
        ) -> futures::stream::BoxStream<'_, stowage_store::Result<stowage_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }
    }

    #[tokio::test]
    async fn a_change_whose_answer_was_lost_is_applied_once() {
        let store = Arc::new(LandsThenRefuses::default());
        let a = Access::new(store.clone(), AccessConfig::default());
        let Bootstrap::Created(token) = a.bootstrap().await.expect("bootstrap") else {
            panic!("the first admin's token was lost");
        };
        let view = a.reload().await.expect("view");
        assert_eq!(view.state.users.len(), 1);
        assert_eq!(view.state.users[FIRST_ADMIN].tokens.len(), 1);
        assert!(
            view.authenticate(&Credentials::Token(token), state::now())
                .is_ok(),
            "the token returned is the one stored"
        );
    }

    #[tokio::test]
    async fn failed_credentials_are_throttled_per_address() {
        let store = Arc::new(MemoryStore::new());
        let a = Access::new(
            store.clone(),
            AccessConfig {
                limiter: LimiterConfig {
                    burst: 2,
                    refill: Duration::from_secs(60),
                },
                ..AccessConfig::default()
            },
        );
        let token = a
            .update(|s| {
                s.add_user("root", true, 0)?;
                state::new_token(s, "root", &Default::default(), 0).map(|(t, _)| t)
            })
            .await
            .expect("setup");
        let bad = Credentials::Token(Secret::new("stw_wrong"));
        let name = repo("x");
        for _ in 0..2 {
            let d = a
                .authorize(&bad, HERE, &name, Need::Read)
                .await
                .expect("ok");
            assert_eq!(d.err(), Some(Denied::BadCredentials));
        }
        let d = a
            .authorize(&bad, HERE, &name, Need::Read)
            .await
            .expect("ok");
        assert!(matches!(d, Err(Denied::Throttled(_))), "{d:?}");
        let other: IpAddr = "192.0.2.9".parse().expect("ip");
        let good = Credentials::Token(token);
        assert!(
            a.authorize(&good, other, &name, Need::Read)
                .await
                .expect("ok")
                .is_ok(),
            "the real user elsewhere is not locked out"
        );
        assert!(
            a.authorize(&good, HERE, &name, Need::Read)
                .await
                .expect("ok")
                .is_ok(),
            "nor at the throttled address"
        );
    }
}
