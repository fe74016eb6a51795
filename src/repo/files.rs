//! Files by path at a ref or commit, without git: how data and model repositories are
//! read by jobs that want one file (`GET <repo>.git/raw/<ref-or-commit>/<path>`).

use std::sync::Arc;

use gix_hash::ObjectId;
use gix_object::Kind;

use super::odb::{ObjectSource, read_required};
use super::walk::{entry_at, parse_commit, peel};
use super::{RepoError, RepoName, Repos};

/// A file found at a path.
#[derive(Debug, Clone)]
pub struct File {
    /// The commit the ref or id resolved to.
    pub commit: ObjectId,
    pub blob: ObjectId,
    pub content: Vec<u8>,
}

/// Why no file was found.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}: no branch, tag or commit of that name")]
    NoRevision(String),
    #[error("{path} not found at {revision}")]
    NoPath { revision: String, path: String },
    #[error("{path} at {revision} is a directory")]
    Directory { revision: String, path: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Splits `spec` (`<ref-or-commit>/<path>`, the ref possibly holding `/`) by the
/// refs of `refs`: the longest leading part that names a branch (`refs/heads/`), then a
/// tag (`refs/tags/`), wins; else a leading full commit id. Returns the ref or id and
/// the path.
pub fn split_revision(refs: impl Fn(&str) -> bool, spec: &str) -> Option<(String, &str)> {
    let cuts: Vec<usize> = spec.match_indices('/').map(|(i, _)| i).collect();
    for &cut in cuts.iter().rev() {
        let (name, path) = (&spec[..cut], &spec[cut + 1..]);
        for full in [format!("refs/heads/{name}"), format!("refs/tags/{name}")] {
            if refs(&full) {
                return Some((full, path));
            }
        }
    }
    let (first, path) = spec.split_once('/')?;
    (first.len() == 40 && first.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (first.to_ascii_lowercase(), path))
}

impl Repos {
    /// The file at `spec` (`<ref-or-commit>/<path>`) of `repo`. A commit named by its
    /// id must be one a ref reaches (while the repository may hold unreachable objects,
    /// that is checked).
    pub async fn file(&self, repo: &RepoName, spec: &str) -> Result<File, FileError> {
        let Some(snapshot) = self.snapshot(repo).await? else {
            return Err(RepoError::NotFound(repo.clone()).into());
        };
        let manifest = &snapshot.manifest;
        let (revision, path) = split_revision(|r| manifest.refs.contains_key(r), spec)
            .ok_or_else(|| FileError::NoRevision(spec.split('/').next().unwrap_or("").into()))?;
        let start = match manifest.refs.get(&revision) {
            Some(value) => value.id,
            None => ObjectId::from_hex(revision.as_bytes())
                .map_err(|_| FileError::NoRevision(revision.clone()))?,
        };
        let odb = Arc::new(self.odb(repo, manifest).await?);
        if !manifest.refs.contains_key(&revision)
            && !self
                .unserved_wants(repo, &snapshot, &odb, &[start])
                .await?
                .is_empty()
        {
            return Err(FileError::NoRevision(revision));
        }
        let shown = revision
            .strip_prefix("refs/heads/")
            .or_else(|| revision.strip_prefix("refs/tags/"))
            .unwrap_or(&revision)
            .to_owned();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || find(odb.as_ref(), start, &shown, &path))
            .await
            .expect("the lookup does not panic")
    }
}

fn find(
    source: &dyn ObjectSource,
    start: ObjectId,
    revision: &str,
    path: &str,
) -> Result<File, FileError> {
    let odb_error = |e| FileError::Repo(RepoError::Odb(e));
    let (commit, kind) = peel(source, start).map_err(odb_error)?;
    if kind != Kind::Commit {
        return Err(FileError::NoRevision(revision.to_owned()));
    }
    let mut buf = Vec::new();
    read_required(source, &commit, &mut buf).map_err(odb_error)?;
    let tree = parse_commit(commit, &buf).map_err(odb_error)?.tree;
    let no_path = || FileError::NoPath {
        revision: revision.to_owned(),
        path: path.to_owned(),
    };
    let (mode, blob) = entry_at(source, tree, path)
        .map_err(odb_error)?
        .ok_or_else(no_path)?;
    if mode.is_tree() {
        return Err(FileError::Directory {
            revision: revision.to_owned(),
            path: path.to_owned(),
        });
    }
    if mode.is_commit() {
        return Err(no_path());
    }
    let mut content = Vec::new();
    if read_required(source, &blob, &mut content).map_err(odb_error)? != Kind::Blob {
        return Err(no_path());
    }
    Ok(File {
        commit,
        blob,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_ref_wins_then_a_commit_id() {
        let refs = [
            "refs/heads/main",
            "refs/heads/feature/x",
            "refs/heads/feature",
            "refs/tags/v1",
        ];
        let has = |r: &str| refs.contains(&r);
        assert_eq!(
            split_revision(has, "feature/x/data/a.bin"),
            Some(("refs/heads/feature/x".into(), "data/a.bin"))
        );
        assert_eq!(
            split_revision(has, "feature/y/a.bin"),
            Some(("refs/heads/feature".into(), "y/a.bin"))
        );
        assert_eq!(
            split_revision(has, "v1/a"),
            Some(("refs/tags/v1".into(), "a"))
        );
        let id = "67463eab6b939e3de1ed116192ded6d6788017e3";
        assert_eq!(
            split_revision(has, &format!("{id}/a")),
            Some((id.into(), "a"))
        );
        assert_eq!(split_revision(has, "nope/a"), None);
        assert_eq!(split_revision(has, "67463eab/a"), None, "no short ids");
    }
}
