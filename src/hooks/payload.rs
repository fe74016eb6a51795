//! The body of a push delivery, in the shape of GitHub's `push` event (so receivers
//! written for GitHub read it), and its signature.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::repo::describe::CommitInfo;
use crate::repo::event::{PushEvent, RefEvent};

/// What a payload says about the repository.
#[derive(Debug, Clone)]
pub struct RepoInfo {
    /// The full name (`org/app`).
    pub name: String,
    /// The URL the pusher reached the server by (`https://git.example.com`), if known.
    pub origin: Option<String>,
    pub default_branch: String,
    pub private: bool,
}

const NULL_ID: &str = "0000000000000000000000000000000000000000";

/// The JSON body for one ref of a push event.
pub fn push(event: &PushEvent, update: &RefEvent, repo: &RepoInfo) -> Value {
    let created = update.before == NULL_ID;
    let deleted = update.after == NULL_ID;
    let url = repo.origin.as_ref().map(|o| format!("{o}/{}", repo.name));
    // Oldest first, as GitHub lists them.
    let commits: Vec<Value> = update
        .commits
        .iter()
        .rev()
        .map(|c| commit(c, url.as_deref()))
        .collect();
    let head = update
        .commits
        .first()
        .filter(|c| c.id == update.after)
        .or(update.head_commit.as_ref())
        .map(|c| commit(c, url.as_deref()));
    let short = repo.name.rsplit('/').next().unwrap_or(&repo.name);
    let owner = repo.name.split_once('/').map(|(o, _)| o);
    let pusher = event.pusher.as_deref().unwrap_or("anonymous");
    json!({
        "ref": update.name,
        "before": update.before,
        "after": update.after,
        "created": created,
        "deleted": deleted,
        "forced": update.forced,
        "base_ref": null,
        "compare": url.as_ref().map(|u| format!("{u}/compare/{}...{}", short_id(&update.before), short_id(&update.after))),
        "commits": commits,
        "total_commits_count": update.total_commits,
        "head_commit": head,
        "repository": {
            "name": short,
            "full_name": repo.name,
            "owner": owner.map(|o| json!({ "name": o, "login": o })),
            "private": repo.private,
            "default_branch": repo.default_branch,
            "url": url,
            "html_url": url,
            "clone_url": url.as_ref().map(|u| format!("{u}.git")),
            "pushed_at": event.at,
        },
        "pusher": { "name": pusher, "email": null },
        "sender": { "login": pusher },
    })
}

fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A commit as GitHub's payload has it.
fn commit(c: &CommitInfo, url: Option<&str>) -> Value {
    let paths = |list: &[crate::repo::describe::PathChange]| -> Vec<String> {
        list.iter().map(|p| p.path.clone()).collect()
    };
    json!({
        "id": c.id,
        "tree_id": c.tree,
        "distinct": true,
        "message": c.message,
        "timestamp": timestamp(&c.committer.time),
        "url": url.map(|u| format!("{u}/commit/{}", c.id)),
        "author": { "name": c.author.name, "email": c.author.email },
        "committer": { "name": c.committer.name, "email": c.committer.email },
        "added": paths(&c.added),
        "removed": paths(&c.removed),
        "modified": paths(&c.modified),
    })
}

/// A git time (`1700000000 +0100`) as ISO 8601 with its offset
/// (`2023-11-14T23:13:20+01:00`); `None` if it is not one.
pub fn timestamp(git: &str) -> Option<String> {
    let (secs, offset) = git.split_once(' ')?;
    let secs: i64 = secs.parse().ok()?;
    let (sign, digits) = offset.split_at_checked(1)?;
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits[..2].parse().ok()?;
    let minutes: i64 = digits[2..].parse().ok()?;
    let shift = (hours * 60 + minutes) * 60;
    let local = match sign {
        "+" => secs.checked_add(shift)?,
        "-" => secs.checked_sub(shift)?,
        _ => return None,
    };
    // RFC 3339 has four-digit years: 9999-12-31T23:59:59 is the last time it can say.
    let local = u64::try_from(local)
        .ok()
        .filter(|s| *s <= 253_402_300_799)?;
    let utc = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(local),
    )
    .to_string();
    Some(format!(
        "{}{sign}{}:{}",
        utc.trim_end_matches('Z'),
        &digits[..2],
        &digits[2..]
    ))
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` keyed with `secret`, as GitHub's
/// `X-Hub-Signature-256` header.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published example ("Validating webhook deliveries"): the secret
    /// "It's a Secret to Everybody" and the payload "Hello, World!".
    #[test]
    fn signatures_match_github_s_test_vector() {
        assert_eq!(
            signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn git_times_become_iso_8601_with_their_offset() {
        assert_eq!(
            timestamp("1700000000 +0100").as_deref(),
            Some("2023-11-14T23:13:20+01:00")
        );
        assert_eq!(
            timestamp("1700000000 -0530").as_deref(),
            Some("2023-11-14T16:43:20-05:30")
        );
        assert_eq!(timestamp("garbage"), None);
        assert_eq!(timestamp("300000000000 +0000"), None, "past the year 9999");
        assert_eq!(timestamp("9223372036854775807 +1400"), None);
        assert_eq!(timestamp("-5 +0000"), None);
        assert_eq!(timestamp("1700000000 +01"), None);
    }

    #[test]
    fn a_payload_says_created_deleted_and_forced() {
        let update = RefEvent {
            name: "refs/heads/topic".into(),
            before: NULL_ID.into(),
            after: "1".repeat(40),
            forced: false,
            commits: Vec::new(),
            total_commits: 0,
            head_commit: None,
        };
        let event = PushEvent {
            id: "e".into(),
            repo: "org/app".into(),
            at: 1,
            pusher: Some("alice".into()),
            origin: None,
            refs: vec![update.clone()],
        };
        let repo = RepoInfo {
            name: "org/app".into(),
            origin: Some("https://git.example.com".into()),
            default_branch: "main".into(),
            private: true,
        };
        let body = push(&event, &update, &repo);
        assert_eq!(body["created"], true);
        assert_eq!(body["deleted"], false);
        assert_eq!(body["repository"]["name"], "app");
        assert_eq!(body["repository"]["full_name"], "org/app");
        assert_eq!(
            body["repository"]["clone_url"],
            "https://git.example.com/org/app.git"
        );
        assert_eq!(body["pusher"]["name"], "alice");
    }
}
