//! What a push brings, described for people and programs: the new commits of a ref
//! update with their authors, messages and changed paths (with blob sizes). The
//! pre-receive hook's `push.json` and the webhook push events are made of these.
//!
//! A commit is new when it came with the push (it is in the received pack): a walk from
//! the new value stops at commits the repository had.

use std::collections::{HashSet, VecDeque};

use gix_hash::ObjectId;
use serde::{Deserialize, Serialize};

use super::OdbError;
use super::odb::{ObjectSource, read_required};

/// A commit's author or committer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub name: String,
    pub email: String,
    /// As in the commit: seconds since the Unix epoch and the offset (`1700000000 +0100`).
    pub time: String,
}

/// A path a commit added or modified (with the size of its blob), or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathChange {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// One new commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub id: String,
    pub tree: String,
    pub parents: Vec<String>,
    pub author: Signature,
    pub committer: Signature,
    pub message: String,
    /// Paths changed against the first parent.
    pub added: Vec<PathChange>,
    pub modified: Vec<PathChange>,
    pub removed: Vec<PathChange>,
}

/// The new commits of one ref update, newest first: at most the `describe` asked for,
/// and how many there are in all (counted up to [`MAX_COUNTED`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewCommits {
    pub commits: Vec<CommitInfo>,
    pub total: usize,
}

/// The most paths a commit's description lists (added, modified and removed together).
pub const MAX_PATHS: usize = 3000;

/// Describes the commits `new` reaches in `received` (the pushed objects), newest first,
/// at most `max` of them, counting up to `max_counted`; trees and blobs are read from
/// `all` (the pushed objects and the repository's).
pub fn new_commits(
    received: &dyn ObjectSource,
    all: &dyn ObjectSource,
    new: ObjectId,
    max: usize,
    max_counted: usize,
) -> Result<NewCommits, OdbError> {
    let mut found = NewCommits::default();
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([new]);
    let mut buf = Vec::new();
    while let Some(id) = queue.pop_front() {
        if id.is_null() || !seen.insert(id) || found.total >= max_counted {
            continue;
        }
        if received.read(&id, &mut buf)? != Some(gix_object::Kind::Commit) {
            continue;
        }
        let commit = gix_object::CommitRef::from_bytes(&buf, id.kind()).map_err(|e| {
            OdbError::BadObject {
                id,
                kind: gix_object::Kind::Commit,
                message: e.to_string(),
            }
        })?;
        let parents: Vec<ObjectId> = commit.parents().collect();
        found.total += 1;
        if found.commits.len() < max {
            let tree = commit.tree();
            let mut info = CommitInfo {
                id: id.to_string(),
                tree: tree.to_string(),
                parents: parents.iter().map(ToString::to_string).collect(),
                author: signature(commit.author),
                committer: signature(commit.committer),
                message: commit.message.to_string(),
                added: Vec::new(),
                modified: Vec::new(),
                removed: Vec::new(),
            };
            let parent_tree = match parents.first() {
                Some(parent) => {
                    let mut pbuf = Vec::new();
                    read_required(all, parent, &mut pbuf)?;
                    Some(super::walk::parse_commit(*parent, &pbuf)?.tree)
                }
                None => None,
            };
            diff_trees(all, parent_tree, Some(tree), "", &mut info)?;
            found.commits.push(info);
        }
        queue.extend(parents);
    }
    Ok(found)
}

/// A commit's author or committer line (`Name <email> 1700000000 +0100`).
fn signature(raw: &[u8]) -> Signature {
    let text = String::from_utf8_lossy(raw);
    let (name, rest) = text.split_once('<').unwrap_or((&text, ""));
    let (email, time) = rest.split_once('>').unwrap_or((rest, ""));
    Signature {
        name: name.trim().to_owned(),
        email: email.trim().to_owned(),
        time: time.trim().to_owned(),
    }
}

type Entries = Vec<(String, gix_object::tree::EntryMode, ObjectId)>;

/// The entries of the tree `id` (none for `None`): name, mode, id.
fn tree_entries(source: &dyn ObjectSource, id: Option<ObjectId>) -> Result<Entries, OdbError> {
    let Some(id) = id else { return Ok(Vec::new()) };
    let mut buf = Vec::new();
    read_required(source, &id, &mut buf)?;
    let tree =
        gix_object::TreeRef::from_bytes(&buf, id.kind()).map_err(|e| OdbError::BadObject {
            id,
            kind: gix_object::Kind::Tree,
            message: e.to_string(),
        })?;
    Ok(tree
        .entries
        .iter()
        .map(|e| (e.filename.to_string(), e.mode, e.oid.to_owned()))
        .collect())
}

/// Adds what differs between trees `old` and `new` under `prefix` to `commit`, up to
/// [`MAX_PATHS`] paths.
fn diff_trees(
    source: &dyn ObjectSource,
    old: Option<ObjectId>,
    new: Option<ObjectId>,
    prefix: &str,
    commit: &mut CommitInfo,
) -> Result<(), OdbError> {
    let listed = |c: &CommitInfo| c.added.len() + c.modified.len() + c.removed.len();
    if old == new || listed(commit) >= MAX_PATHS {
        return Ok(());
    }
    let before = tree_entries(source, old)?;
    let after = tree_entries(source, new)?;
    let index = |list: &Entries| -> std::collections::HashMap<String, (gix_object::tree::EntryMode, ObjectId)> {
        list.iter().map(|(n, m, id)| (n.clone(), (*m, *id))).collect()
    };
    let (before_by_name, after_by_name) = (index(&before), index(&after));
    let find =
        |by_name: &std::collections::HashMap<String, (gix_object::tree::EntryMode, ObjectId)>,
         name: &str| by_name.get(name).copied();
    let change = |path: String, id: Option<&ObjectId>| PathChange {
        path,
        size: id.and_then(|id| source.size(id).ok().flatten()),
    };
    for (name, mode, id) in &after {
        if listed(commit) >= MAX_PATHS {
            return Ok(());
        }
        let path = format!("{prefix}{name}");
        match (find(&before_by_name, name), mode.is_tree()) {
            (Some((old_mode, old_id)), true) => {
                let old_tree = old_mode.is_tree().then_some(old_id);
                diff_trees(source, old_tree, Some(*id), &format!("{path}/"), commit)?;
                if !old_mode.is_tree() {
                    commit.removed.push(change(path, None));
                }
            }
            (None, true) => diff_trees(source, None, Some(*id), &format!("{path}/"), commit)?,
            (Some((old_mode, old_id)), false) if old_mode.is_tree() => {
                diff_trees(source, Some(old_id), None, &format!("{path}/"), commit)?;
                commit.added.push(change(path, Some(id)));
            }
            (Some((_, old_id)), false) if old_id != *id => {
                commit.modified.push(change(path, Some(id)));
            }
            (Some(_), false) => {}
            (None, false) => commit.added.push(change(path, Some(id))),
        }
    }
    for (name, mode, id) in &before {
        if find(&after_by_name, name).is_some() {
            continue;
        }
        if listed(commit) >= MAX_PATHS {
            return Ok(());
        }
        let path = format!("{prefix}{name}");
        if mode.is_tree() {
            diff_trees(source, Some(*id), None, &format!("{path}/"), commit)?;
        } else {
            commit.removed.push(change(path, None));
        }
    }
    Ok(())
}
