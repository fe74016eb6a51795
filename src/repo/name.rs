//! Repository names, as they appear in URLs and in the store.
//!
//! Invariant: a [`RepoName`] is one or more `/`-separated segments of ASCII letters,
//! digits, `-`, `_` and `.`, none empty, none starting with `.`, none ending in `.git`
//! or `.lock`, and the first not `-` (the server's own routes live under `/-/`); so a
//! name can never leave its place in the store, reach another repository's objects or
//! the access state (under `.access/`), or shadow a route. The repository `org/name` lives under `org/name.git/` in the
//! store; a `.git` suffix in the URL is optional.

use std::fmt;

use stowage_store::Key;

/// A validated repository name, without the `.git` suffix.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoName(String);

/// Why a repository name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository name {name:?}: {reason}")]
pub struct InvalidName {
    pub name: String,
    pub reason: &'static str,
}

impl RepoName {
    /// Longest accepted name, in bytes.
    pub const MAX_LEN: usize = 512;

    /// Validates `name`, with or without a trailing `.git`.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        let invalid = |reason| InvalidName {
            name: name.to_owned(),
            reason,
        };
        let bare = name.strip_suffix(".git").unwrap_or(name);
        if bare.is_empty() {
            return Err(invalid("empty name"));
        }
        if bare.len() > Self::MAX_LEN {
            return Err(invalid("name too long"));
        }
        if bare == "-" || bare.starts_with("-/") {
            return Err(invalid("`-` is reserved for the server's own routes"));
        }
        for segment in bare.split('/') {
            if segment.is_empty() {
                return Err(invalid("empty path segment"));
            }
            if segment.starts_with('.') {
                return Err(invalid("a path segment starts with `.`"));
            }
            if segment.ends_with(".git") || segment.ends_with(".lock") {
                return Err(invalid("a path segment ends in `.git` or `.lock`"));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                return Err(invalid(
                    "only letters, digits, `-`, `_`, `.` and `/` are allowed",
                ));
            }
        }
        Ok(RepoName(bare.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The store key of `rest` inside this repository (`org/name.git/<rest>`).
    pub fn key(&self, rest: &str) -> Key {
        Key::new(format!("{}.git/{rest}", self.0))
            .expect("a valid name and a valid suffix make a valid key")
    }

    /// The store prefix of everything in this repository.
    pub fn prefix(&self) -> String {
        format!("{}.git/", self.0)
    }

    /// The repository whose manifest is stored at `key`, if `key` is a manifest key.
    pub fn from_manifest_key(key: &str) -> Option<RepoName> {
        let dir = key.strip_suffix(".git/manifest")?;
        RepoName::new(dir).ok()
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_nested_names() {
        assert_eq!(RepoName::new("demo").expect("ok").as_str(), "demo");
        assert_eq!(RepoName::new("demo.git").expect("ok").as_str(), "demo");
        assert_eq!(
            RepoName::new("org/team/v1.2_x-y").expect("ok").as_str(),
            "org/team/v1.2_x-y"
        );
        assert_eq!(
            RepoName::new("org/name")
                .expect("ok")
                .key("manifest")
                .as_str(),
            "org/name.git/manifest"
        );
        let name = RepoName::from_manifest_key("org/name.git/manifest").expect("manifest key");
        assert_eq!(name.as_str(), "org/name");
        assert!(RepoName::from_manifest_key("org/name.git/packs/x.pack").is_none());
    }

    #[test]
    fn refuses_hostile_names() {
        for bad in [
            "",
            ".git",
            "..",
            "../etc",
            "a/../b",
            "/abs",
            "a//b",
            "a/",
            ".hidden",
            "a/.git/x",
            "a.git/b",
            "a\0b",
            "a b",
            "a%2e%2e",
            "x.lock",
            "a\\b",
            "ü",
            "-",
            "-/api/v1/x",
        ] {
            assert!(RepoName::new(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
