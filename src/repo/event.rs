//! Push events: what a push tells webhooks, recorded durably as part of the push.
//!
//! A push to a repository with webhooks writes its event with `Create` under
//! [`QUEUE_PREFIX`] before its manifest swap, and the swap lists the event in the
//! manifest ([`super::manifest::Manifest::events`]) with the refs that moved. So the
//! event exists exactly when the push landed: a push that lost its race, or was
//! refused, lists nothing, and its queued event is dropped; one that landed cannot lose
//! its event to a crash right after the swap. The webhook deliverer (`crate::hooks`)
//! turns a listed event into deliveries and takes it off the manifest.

use serde::{Deserialize, Serialize};
use stowage_store::Key;

use super::describe::CommitInfo;

/// Where queued events live, one object each: from their push until every delivery of
/// them has ended. Every instance looks here for work.
pub const QUEUE_PREFIX: &str = ".webhooks/queue/";

/// The most commits an event describes per ref (the newest ones); `total_commits`
/// says how many there were.
pub const MAX_COMMITS: usize = 20;

/// Beyond this many new commits of a ref, `total_commits` stops counting.
pub const MAX_COUNTED: usize = 10_000;

/// Of a push of more refs than this, the later ones are not described (no commits).
pub const MAX_DESCRIBED_REFS: usize = 1000;

/// The key of the queued event `id`.
pub fn queue_key(id: &str) -> Key {
    Key::new(format!("{QUEUE_PREFIX}{id}.json")).expect("event ids make valid keys")
}

/// The event id named by a queue key.
pub fn id_of(key: &Key) -> Option<&str> {
    key.as_str()
        .strip_prefix(QUEUE_PREFIX)?
        .strip_suffix(".json")
}

/// One push, as webhooks are told of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// Unique: also names the deliveries made of it.
    pub id: String,
    pub repo: String,
    /// When it was pushed, in seconds since the Unix epoch.
    pub at: u64,
    /// The user who pushed, when access control knows them.
    pub pusher: Option<String>,
    /// The URL the pusher reached the server by (`https://git.example.com`), for the
    /// links of the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Every command the push was to apply; the manifest says which of them did.
    pub refs: Vec<RefEvent>,
}

/// One ref update of a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefEvent {
    pub name: String,
    /// Hex ids; all zeros for a created (`before`) or deleted (`after`) ref.
    pub before: String,
    pub after: String,
    /// An update that is not a fast-forward.
    pub forced: bool,
    /// The newest [`MAX_COMMITS`] new commits, newest first.
    pub commits: Vec<CommitInfo>,
    pub total_commits: usize,
    /// The new value's commit when it is not among `commits` (a ref set to a commit the
    /// repository had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_commit: Option<CommitInfo>,
}

/// A recorded event in the manifest: its id and the refs its push moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    pub id: String,
    pub refs: Vec<String>,
}
