//! Webhook deliveries in the store: one object per delivery (one hook, one ref of one
//! push event), under the repository, at `<repo>.git/webhooks/<id>.json`.
//!
//! A delivery is created with `Create` (so making it twice is harmless) and changed only
//! by compare-and-swap: an instance claims it by writing a lease (its name and an
//! expiry) before sending, and writes the attempt's outcome when it is done. While a
//! lease holds, no other instance sends the delivery; once it expires (its instance
//! died), any instance may claim it again. The id stays the same across attempts and
//! redeliveries: it is the `X-Stowage-Delivery` header.

use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use stowage_store::{ETag, Error as StoreError, Key, ObjectStore, ObjectStoreExt, PutMode};

use super::HookError;
use crate::repo::RepoName;
use crate::repo::event::{QUEUE_PREFIX, queue_key};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Not yet delivered, to be tried (again) at `next_at`.
    Pending,
    /// A 2xx answer came.
    Delivered,
    /// Given up: past the retry time, refused before sending, or its hook is gone.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }
}

/// An instance's claim on a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    pub until: u64,
}

/// One try to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it began, in milliseconds since the Unix epoch.
    pub at: u64,
    /// The instance that made it.
    pub instance: String,
    /// The receiver's HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub duration_ms: u64,
    /// The start of the receiver's answer (at most [`EXCERPT`] bytes).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub response: String,
    /// Why no answer came (refused destination, connection, timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How much of a receiver's answer an attempt keeps.
pub const EXCERPT: usize = 512;

/// How many attempts a delivery remembers (the first and the latest ones).
const KEPT_ATTEMPTS: usize = 50;

/// One delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    /// The push event it was made of.
    pub event: String,
    pub repo: String,
    /// The hook's id; its URL and secret are read when sending.
    pub hook: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// The event name (`push`).
    pub kind: String,
    /// Milliseconds since the Unix epoch.
    pub created: u64,
    /// No attempt begins after this time (milliseconds since the Unix epoch).
    pub give_up_at: u64,
    pub status: Status,
    /// When the next attempt is due (milliseconds since the Unix epoch).
    pub next_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// How many attempts were made in all (`attempts` keeps the first and the latest).
    #[serde(default)]
    pub tries: u32,
    /// How many since it was last made pending (the backoff counts these).
    #[serde(default)]
    pub since: u32,
    /// Why it failed, when it did without an attempt's answer saying so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The JSON body sent, the same bytes in every attempt.
    pub body: String,
}

impl Delivery {
    /// Records an attempt, keeping the first ones and the latest ones.
    pub fn record(&mut self, attempt: Attempt) {
        self.tries += 1;
        self.since += 1;
        self.attempts.push(attempt);
        if self.attempts.len() > KEPT_ATTEMPTS {
            self.attempts.remove(KEPT_ATTEMPTS / 2);
        }
    }
}

/// The prefix of a repository's deliveries.
pub fn prefix(repo: &RepoName) -> String {
    format!("{}webhooks/", repo.prefix())
}

/// The key of a delivery.
pub fn key(repo: &RepoName, id: &str) -> Key {
    repo.key(&format!("webhooks/{id}.json"))
}

/// The id of the delivery of `event` to `hook` for the `n`th ref of the event.
pub fn delivery_id(event: &str, hook: &str, n: usize) -> String {
    format!("{event}.{hook}.{n}")
}

/// Checks a delivery id given by a user: the characters ids are made of.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    ok.then_some(())
        .ok_or_else(|| format!("invalid delivery id {id:?}"))
}

/// A delivery and the tag it was read with.
#[derive(Debug, Clone)]
pub struct Read {
    pub delivery: Delivery,
    pub etag: ETag,
}

/// Reads a delivery (`None` if there is none).
pub async fn read(store: &dyn ObjectStore, key: &Key) -> Result<Option<Read>, HookError> {
    let Some(found) = store.get_opt(key).await? else {
        return Ok(None);
    };
    let delivery = serde_json::from_slice(&found.bytes)
        .map_err(|e| HookError::Corrupt(format!("{key} is not a delivery: {e}")))?;
    Ok(Some(Read {
        delivery,
        etag: found.meta.etag,
    }))
}

fn bytes(delivery: &Delivery) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(delivery).expect("a delivery serializes"))
}

/// Creates a delivery unless it exists.
pub async fn create(store: &dyn ObjectStore, delivery: &Delivery) -> Result<(), HookError> {
    let repo = RepoName::new(&delivery.repo).map_err(|e| HookError::Corrupt(e.to_string()))?;
    match store
        .put(&key(&repo, &delivery.id), bytes(delivery), PutMode::Create)
        .await
    {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Changes a delivery by compare-and-swap: `change` is applied to the latest version
/// (`start` if given, read again after each lost race) and returns whether to write.
/// Returns the delivery as it is after the call, and whether this call wrote it.
pub async fn update(
    store: &dyn ObjectStore,
    key: &Key,
    mut start: Option<Read>,
    mut change: impl FnMut(&mut Delivery) -> bool,
) -> Result<Option<(Delivery, bool)>, HookError> {
    for _ in 0..16 {
        let current = match start.take() {
            Some(known) => Some(known),
            None => read(store, key).await?,
        };
        let Some(Read { mut delivery, etag }) = current else {
            return Ok(None);
        };
        if !change(&mut delivery) {
            return Ok(Some((delivery, false)));
        }
        match store
            .put(key, bytes(&delivery), PutMode::Update(etag))
            .await
        {
            Ok(_) => return Ok(Some((delivery, true))),
            Err(StoreError::Precondition { .. }) => continue,
            Err(e) if e.is_retryable() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(HookError::Contention(key.to_string()))
}

/// The deliveries of `repo`, newest first (at most `limit`, read from the newest);
/// those of one event, or of one hook, when given. Ids begin with their event's, which
/// begins with its time: keys sort by age.
pub async fn list(
    store: &dyn ObjectStore,
    repo: &RepoName,
    event: Option<&str>,
    hook: Option<&str>,
    limit: Option<usize>,
) -> Result<Vec<Read>, HookError> {
    let prefix = match event {
        Some(event) => format!("{}{event}.", prefix(repo)),
        None => prefix(repo),
    };
    let mut metas: Vec<_> = store.list(&prefix).try_collect().await?;
    if let Some(hook) = hook {
        let part = format!(".{hook}.");
        metas.retain(|m| m.key.as_str().contains(&part));
    }
    metas.sort_by(|a, b| b.key.as_str().cmp(a.key.as_str()));
    metas.truncate(limit.unwrap_or(usize::MAX));
    let mut found = Vec::with_capacity(metas.len());
    for meta in metas {
        if let Some(read) = read(store, &meta.key).await? {
            found.push(read);
        }
    }
    found.sort_by(|a, b| {
        let (a, b) = (&a.delivery, &b.delivery);
        (b.created, &b.id).cmp(&(a.created, &a.id))
    });
    Ok(found)
}

/// When the event a delivery id names was pushed, in milliseconds since the Unix epoch
/// (event ids begin with the time in hex nanoseconds).
pub fn pushed_at(id: &str) -> Option<u64> {
    let nanos = id.split(['-', '.']).next()?;
    u128::from_str_radix(nanos, 16)
        .ok()
        .map(|n| (n / 1_000_000) as u64)
}

/// Deletes the ended deliveries of `repo` whose events are older than `before`
/// (milliseconds since the Unix epoch); returns how many. Keys sort by age, so only the
/// old ones are read.
pub async fn prune(
    store: &dyn ObjectStore,
    repo: &RepoName,
    before: u64,
) -> Result<usize, HookError> {
    let metas: Vec<_> = store.list(&prefix(repo)).try_collect().await?;
    let mut pruned = 0;
    for meta in metas {
        let Some(id) = meta
            .key
            .as_str()
            .rsplit('/')
            .next()
            .and_then(|name| name.strip_suffix(".json"))
        else {
            continue;
        };
        if pushed_at(id).is_none_or(|at| at >= before) {
            continue;
        }
        match read(store, &meta.key).await? {
            Some(found) if found.delivery.status == Status::Pending => {}
            Some(_) => {
                store.delete(&meta.key).await?;
                pruned += 1;
            }
            None => {}
        }
    }
    Ok(pruned)
}

/// Makes a delivery pending again (due now, with a new retry time), and queues it so
/// that whichever instance looks next sends it. Returns it as it now is.
pub async fn redeliver(
    store: &dyn ObjectStore,
    repo: &RepoName,
    id: &str,
    now: u64,
    retry_for_ms: u64,
) -> Result<Option<Delivery>, HookError> {
    let Some((delivery, _)) = update(store, &key(repo, id), None, |d| {
        d.status = Status::Pending;
        d.next_at = now;
        d.give_up_at = now + retry_for_ms;
        d.reason = None;
        d.since = 0;
        true
    })
    .await?
    else {
        return Ok(None);
    };
    // Its own queue entry: the event's may be being dropped right now.
    let entry = QueueEntry {
        repo: repo.to_string(),
        event: delivery.event.clone(),
        push: None,
    };
    let name = format!("{}.redeliver-{now:x}", delivery.event);
    store
        .put(
            &queue_key(&name),
            Bytes::from(serde_json::to_vec(&entry).expect("an entry serializes")),
            PutMode::Overwrite,
        )
        .await?;
    Ok(Some(delivery))
}

/// What a queue object holds: the push event itself (written by the push), or, for a
/// redelivery, which event's deliveries to look at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueEntry {
    pub repo: String,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<crate::repo::event::PushEvent>,
}

impl QueueEntry {
    /// Reads a queue object: a push event as the push wrote it, or a redelivery entry.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        if let Ok(push) = serde_json::from_slice::<crate::repo::event::PushEvent>(bytes) {
            return Ok(QueueEntry {
                repo: push.repo.clone(),
                event: push.id.clone(),
                push: Some(push),
            });
        }
        serde_json::from_slice(bytes)
    }
}

/// Every queue object: key and when it was written.
pub async fn queued(store: &dyn ObjectStore) -> Result<Vec<stowage_store::ObjectMeta>, StoreError> {
    store.list(QUEUE_PREFIX).try_collect().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_store::MemoryStore;

    fn delivery(repo: &str, pushed_ms: u64, status: Status) -> Delivery {
        let event = format!("{:x}-1-0", u128::from(pushed_ms) * 1_000_000);
        Delivery {
            id: delivery_id(&event, "0a1b2c3d", 0),
            event,
            repo: repo.into(),
            hook: "0a1b2c3d".into(),
            ref_name: "refs/heads/main".into(),
            kind: "push".into(),
            created: pushed_ms,
            give_up_at: pushed_ms + 1,
            status,
            next_at: pushed_ms,
            lease: None,
            attempts: Vec::new(),
            tries: 0,
            since: 0,
            reason: None,
            body: "{}".into(),
        }
    }

    #[tokio::test]
    async fn ended_deliveries_past_their_time_are_pruned_and_no_others() {
        let store = MemoryStore::new();
        let repo = RepoName::new("org/app").expect("name");
        let day = 24 * 3600 * 1000;
        let now = 100 * day;
        let old_done = delivery("org/app", now - 40 * day, Status::Delivered);
        let old_failed = delivery("org/app", now - 31 * day, Status::Failed);
        let old_pending = delivery("org/app", now - 35 * day, Status::Pending);
        let young = delivery("org/app", now - day, Status::Delivered);
        for d in [&old_done, &old_failed, &old_pending, &young] {
            create(&store, d).await.expect("create");
        }
        assert_eq!(pushed_at(&old_done.id), Some(now - 40 * day));
        let pruned = prune(&store, &repo, now - 30 * day).await.expect("prune");
        assert_eq!(pruned, 2);
        let left: Vec<String> = list(&store, &repo, None, None, None)
            .await
            .expect("list")
            .into_iter()
            .map(|r| r.delivery.id)
            .collect();
        assert_eq!(
            left,
            [young.id.clone(), old_pending.id.clone()],
            "newest first"
        );
        let newest = list(&store, &repo, None, None, Some(1))
            .await
            .expect("list");
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].delivery.id, young.id);
    }
}
