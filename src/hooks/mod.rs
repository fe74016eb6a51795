//! Webhooks: push events delivered at least once, by whichever instance is alive.
//!
//! A push to a repository with webhooks records its event as part of the push
//! ([`crate::repo::event`]): a queue object, and the event listed in the manifest the
//! push swaps in. After the push, its instance turns the event into deliveries (one per
//! hook and ref, [`outbox`]), takes it off the manifest, and sends them. Every instance
//! also sweeps the queue (`--webhook-sweep-secs`), so an event whose instance died after
//! the swap, or a delivery whose instance died while sending, is taken over. An
//! instance claims a delivery by compare-and-swap before each attempt; failed
//! attempts are retried with exponential backoff (1 s doubling, at most an hour apart)
//! until `--webhook-retry-hours` have passed. A queue object goes once every delivery
//! of its event has ended; ended deliveries are kept for `--webhook-keep-days`.
//!
//! Hook URLs are reached through [`send`], which refuses non-public destinations.

pub mod outbox;
pub mod payload;
pub mod send;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stowage_store::{Error as StoreError, Key, ObjectStoreExt};

use crate::access::{Access, AccessError};
use crate::repo::event::{PushEvent, queue_key};
use crate::repo::{RepoError, RepoName, Repos};
use outbox::{Attempt, Delivery, Lease, QueueEntry, Status};

/// Why webhook work failed (it is tried again on the next sweep).
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("{0}")]
    Corrupt(String),
    #[error("too many concurrent changes to {0}")]
    Contention(String),
}

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Whether hooks may reach loopback, private and other non-public addresses
    /// (`--webhook-allow-private`).
    pub allow_private: bool,
    /// The time limit of one attempt (`--webhook-timeout-secs`).
    pub timeout: Duration,
    /// How long a delivery is retried (`--webhook-retry-hours`).
    pub retry_for: Duration,
    /// How often the queue is swept for work other instances left (`--webhook-sweep-secs`).
    pub sweep_every: Duration,
    /// The wait before the first retry; it doubles with each one, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long ended deliveries are kept (`--webhook-keep-days`).
    pub keep_for: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_private: false,
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(24 * 3600),
            sweep_every: Duration::from_secs(10),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
            keep_for: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A queue object younger than this whose event is not listed may belong to a push
/// still landing; older, it is a push that did not land.
const QUEUE_GRACE: Duration = Duration::from_secs(600);

/// How long past an attempt's time limit a claim holds.
const LEASE_MARGIN: Duration = Duration::from_secs(20);

/// The webhook deliverer of one instance. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    repos: Arc<Repos>,
    access: Access,
    config: WebhookConfig,
    sender: send::Sender,
    /// Names this instance in leases and attempts.
    instance: String,
    /// The queue objects this instance is working through.
    driving: Mutex<HashSet<String>>,
}

/// What [`Webhooks::expand`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expansion {
    /// The manifest does not list the event: its deliveries were made already, or its
    /// push did not land (or has not yet).
    NotListed,
    /// The deliveries are made and the event is off the manifest.
    Made,
    /// The deliveries are made, but taking the event off the manifest lost every race.
    StillListed,
}

/// A queue object an instance is working through, forgotten when dropped.
struct Driving(Webhooks, String);

impl Drop for Driving {
    fn drop(&mut self) {
        let mut driving = self
            .0
            .inner
            .driving
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        driving.remove(&self.1);
    }
}

/// How many deliveries of one event are attempted at once.
const PARALLEL_ATTEMPTS: usize = 8;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Webhooks {
    pub fn new(repos: Arc<Repos>, access: Access, config: WebhookConfig) -> Self {
        let mut id = [0u8; 4];
        getrandom::fill(&mut id).expect("the system has randomness");
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        let instance = match host.is_empty() {
            true => format!("{}-{}", std::process::id(), hex::encode(id)),
            false => format!("{host}-{}-{}", std::process::id(), hex::encode(id)),
        };
        Webhooks {
            inner: Arc::new(Inner {
                repos,
                access,
                sender: send::Sender::new(config.allow_private, config.timeout),
                config,
                instance,
                driving: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.inner.config
    }

    /// After a push that recorded `event`: its deliveries are made and sent in the
    /// background.
    pub fn after_push(&self, event: &str) {
        self.drive(queue_key(event));
    }

    /// After a redelivery was asked for: sends whatever the queue holds for it now.
    pub fn after_redeliver(&self) {
        let this = self.clone();
        tokio::spawn(async move { this.sweep().await });
    }

    /// Sweeps the queue every [`WebhookConfig::sweep_every`], forever (the first
    /// sweep one interval from now).
    pub async fn sweep_forever(self) {
        loop {
            tokio::time::sleep(self.inner.config.sweep_every).await;
            self.sweep().await;
        }
    }

    /// Starts work on every queue object this instance is not already working on. A
    /// store none of whose repositories has a webhook is not looked at (no request):
    /// only a push to a repository with one, or a redelivery, queues work.
    pub async fn sweep(&self) {
        match self.inner.access.view().await {
            Ok(view) if !view.state.has_webhooks() => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the access state failed");
                return;
            }
        }
        match outbox::queued(self.inner.repos.store.as_ref()).await {
            Ok(found) => {
                for meta in found {
                    self.drive(meta.key);
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing the webhook queue failed"),
        }
    }

    /// Works through the queue object at `key` in a task of its own, until its
    /// deliveries have ended (sleeping while none is due).
    fn drive(&self, key: Key) {
        {
            let mut driving = self.inner.driving.lock().unwrap_or_else(|e| e.into_inner());
            if !driving.insert(key.as_str().to_owned()) {
                return;
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            // Forgotten however the task ends (a panic included): a later sweep starts
            // over.
            let _driving = Driving(this.clone(), key.as_str().to_owned());
            loop {
                match this.work(&key).await {
                    Ok(Some(due)) => {
                        let wait = due.saturating_sub(now_ms()).max(50);
                        let wait = Duration::from_millis(wait).min(this.inner.config.max_backoff);
                        tokio::time::sleep(wait).await;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // The next sweep tries again.
                        tracing::warn!(queued = %key, error = %e, "webhook work failed");
                        break;
                    }
                }
            }
        });
    }

    /// One pass over a queue object: make the deliveries of a listed event, attempt
    /// those due, and drop the object once all have ended. Returns when to look again
    /// (`None`: nothing is left).
    async fn work(&self, key: &Key) -> Result<Option<u64>, HookError> {
        let store = self.inner.repos.store.as_ref();
        let Some(found) = store.get_opt(key).await? else {
            return Ok(None);
        };
        let entry = QueueEntry::parse(&found.bytes)
            .map_err(|e| HookError::Corrupt(format!("{key} is not a queued event: {e}")))?;
        let repo = RepoName::new(&entry.repo).map_err(|e| HookError::Corrupt(e.to_string()))?;
        let expansion = match &entry.push {
            Some(push) => self.expand(&repo, push).await?,
            None => Expansion::NotListed,
        };
        let deliveries = outbox::list(store, &repo, Some(&entry.event), None, None).await?;
        let pending: Vec<&outbox::Read> = deliveries
            .iter()
            .filter(|r| r.delivery.status == Status::Pending)
            .collect();
        if pending.is_empty() {
            let young = found
                .meta
                .modified
                .and_then(|m| m.elapsed().ok())
                .is_none_or(|age| age < QUEUE_GRACE);
            let landing = expansion == Expansion::NotListed
                && deliveries.is_empty()
                && entry.push.is_some()
                && young;
            if expansion == Expansion::StillListed || landing {
                // A push may still be landing (or its event could not be taken off the
                // manifest yet): look again later.
                return Ok(Some(
                    now_ms() + self.inner.config.sweep_every.as_millis() as u64,
                ));
            }
            store.delete(key).await?;
            // An event ended: deliveries past their keeping time go.
            let before = now_ms().saturating_sub(self.inner.config.keep_for.as_millis() as u64);
            match outbox::prune(store, &repo, before).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(repo = %repo, deliveries = n, "old webhook deliveries pruned")
                }
                Err(e) => {
                    tracing::warn!(repo = %repo, error = %e, "pruning webhook deliveries failed")
                }
            }
            return Ok(None);
        }
        let places = tokio::sync::Semaphore::new(PARALLEL_ATTEMPTS);
        let attempts = pending.iter().map(|read| async {
            let _place = places.acquire().await;
            self.attempt(&repo, (*read).clone()).await
        });
        let mut due: Option<u64> = None;
        for next in futures::future::join_all(attempts).await {
            match next {
                Ok(Some(at)) => due = Some(due.map_or(at, |d| d.min(at))),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        // Ended deliveries: one more pass drops the queue object.
        Ok(Some(due.unwrap_or_else(now_ms)))
    }

    /// Makes the deliveries of `push` if the manifest lists it (its push landed), then
    /// takes it off the manifest.
    async fn expand(&self, repo: &RepoName, push: &PushEvent) -> Result<Expansion, HookError> {
        let repos = &self.inner.repos;
        let Some(snapshot) = repos.snapshot(repo).await? else {
            return Ok(Expansion::NotListed);
        };
        let Some(listed) = snapshot.manifest.events.iter().find(|e| e.id == push.id) else {
            return Ok(Expansion::NotListed);
        };
        let moved = listed.refs.clone();
        let view = self.inner.access.view().await?;
        let info = payload::RepoInfo {
            name: repo.to_string(),
            origin: push.origin.clone(),
            default_branch: snapshot
                .manifest
                .head
                .strip_prefix("refs/heads/")
                .unwrap_or(&snapshot.manifest.head)
                .to_owned(),
            private: !view.state.is_public(repo),
        };
        let now = now_ms();
        let retry_for = self.inner.config.retry_for.as_millis() as u64;
        for hook in view.state.webhooks_for(repo, "push") {
            for (n, update) in push.refs.iter().enumerate() {
                if !moved.contains(&update.name) {
                    continue;
                }
                let delivery = Delivery {
                    id: outbox::delivery_id(&push.id, &hook.id, n),
                    event: push.id.clone(),
                    repo: repo.to_string(),
                    hook: hook.id.clone(),
                    ref_name: update.name.clone(),
                    kind: "push".into(),
                    created: now,
                    give_up_at: now + retry_for,
                    status: Status::Pending,
                    next_at: now,
                    lease: None,
                    attempts: Vec::new(),
                    tries: 0,
                    since: 0,
                    reason: None,
                    body: payload::push(push, update, &info).to_string(),
                };
                outbox::create(repos.store.as_ref(), &delivery).await?;
            }
        }
        Ok(match self.unlist(repo, &push.id, snapshot).await? {
            true => Expansion::Made,
            false => Expansion::StillListed,
        })
    }

    /// Takes event `id` off the repository's manifest (as read in `snapshot`, then
    /// afresh), by compare-and-swap. Returns whether it is off.
    async fn unlist(
        &self,
        repo: &RepoName,
        id: &str,
        snapshot: crate::repo::Snapshot,
    ) -> Result<bool, HookError> {
        let edited = self
            .inner
            .repos
            .edit_manifest(repo, Some(snapshot), crate::repo::MAX_EDITS, |m| {
                let before = m.events.len();
                m.events.retain(|e| e.id != id);
                m.events.len() != before
            })
            .await?;
        Ok(edited != crate::repo::Edited::Contended)
    }

    /// One attempt at a delivery (as `read` when listed), if it is due and no other
    /// instance holds it. Returns when it is due next if it is still pending.
    async fn attempt(&self, repo: &RepoName, read: outbox::Read) -> Result<Option<u64>, HookError> {
        let store = self.inner.repos.store.as_ref();
        let key = outbox::key(repo, &read.delivery.id);
        let me = self.inner.instance.clone();
        let config = &self.inner.config;
        // The hook (its URL and secret) before the claim, so that the claim's time is
        // the attempt's; a hook this instance's view lacks is looked for afresh (it may
        // be newer than the view) before the delivery is given up.
        let find =
            |view: &crate::access::View| view.state.webhook(repo, &read.delivery.hook).cloned();
        let hook = match find(&*self.inner.access.view().await?) {
            Some(hook) => Some(hook),
            None => find(&*self.inner.access.reload().await?),
        };
        let Some(hook) = hook else {
            outbox::update(store, &key, Some(read), |d| {
                if d.status != Status::Pending {
                    return false;
                }
                d.status = Status::Failed;
                d.lease = None;
                d.reason = Some("the webhook was removed".into());
                true
            })
            .await?;
            return Ok(None);
        };
        let started = now_ms();
        let lease_for = (config.timeout + LEASE_MARGIN).as_millis() as u64;
        let mut later = None;
        let claimed = outbox::update(store, &key, Some(read), |d| {
            later = None;
            if d.status != Status::Pending {
                return false;
            }
            if d.next_at > started {
                later = Some(d.next_at);
                return false;
            }
            if let Some(lease) = &d.lease
                && lease.until > started
            {
                later = Some(lease.until);
                return false;
            }
            if started >= d.give_up_at {
                d.status = Status::Failed;
                d.lease = None;
                d.reason = Some(format!("gave up after {} attempts", d.tries));
                return true;
            }
            d.lease = Some(Lease {
                owner: me.clone(),
                until: started + lease_for,
            });
            true
        })
        .await?;
        let delivery = match claimed {
            Some((d, true)) if d.lease.as_ref().is_some_and(|l| l.owner == me) => d,
            _ => return Ok(later),
        };
        let mut headers = vec![
            ("x-stowage-event", delivery.kind.clone()),
            ("x-github-event", delivery.kind.clone()),
            ("x-stowage-delivery", delivery.id.clone()),
            ("x-github-delivery", delivery.id.clone()),
        ];
        if let Some(secret) = &hook.secret {
            headers.push((
                "x-hub-signature-256",
                payload::signature(secret, delivery.body.as_bytes()),
            ));
        }
        let outcome = self
            .inner
            .sender
            .post(send::Request {
                url: &hook.url,
                body: delivery.body.as_bytes(),
                headers,
            })
            .await;
        tracing::info!(
            repo = %repo,
            delivery = %delivery.id,
            hook = %hook.id,
            status = outcome.status,
            ms = outcome.duration.as_millis() as u64,
            error = outcome.error.as_deref(),
            "webhook delivery attempt"
        );
        crate::metrics::record(|m| m.webhook_attempt(outcome.delivered()));
        let attempt = Attempt {
            at: started,
            instance: me.clone(),
            status: outcome.status,
            duration_ms: outcome.duration.as_millis() as u64,
            response: outcome.response.clone(),
            error: outcome.error.clone(),
        };
        let ended = now_ms();
        let (first, max) = (config.first_backoff, config.max_backoff);
        let finished = outbox::update(store, &key, None, |d| {
            if d.attempts
                .iter()
                .any(|a| a.at == attempt.at && a.instance == me)
            {
                return false;
            }
            d.record(attempt.clone());
            if d.lease.as_ref().is_some_and(|l| l.owner == me) {
                d.lease = None;
            }
            if d.status != Status::Pending {
                return true;
            }
            let backoff = first
                .saturating_mul(2u32.saturating_pow(d.since.saturating_sub(1).min(20)))
                .min(max);
            let next = ended + backoff.as_millis() as u64;
            if outcome.delivered() {
                d.status = Status::Delivered;
            } else if outcome.refused() {
                d.status = Status::Failed;
                d.reason = Some("the destination is not a public address".into());
            } else if next >= d.give_up_at {
                d.status = Status::Failed;
                d.reason = Some(format!("gave up after {} attempts", d.tries));
            } else {
                d.next_at = next;
            }
            true
        })
        .await?;
        Ok(finished
            .filter(|(d, _)| d.status == Status::Pending)
            .map(|(d, _)| d.next_at))
    }
}
