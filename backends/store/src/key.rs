//! Store keys.
//!
//! Invariant: a [`Key`] is a relative, `/`-separated path with no empty, `.` or `..`
//! segment, no NUL or backslash, and at most [`Key::MAX_LEN`] bytes. Every backend can
//! therefore map it to its own namespace without escaping it: the filesystem backend
//! joins it under its root and cannot be led outside of it.

use std::fmt;

use crate::error::{Error, Result};

/// A validated object key, such as `org/name.git/packs/abc.pack`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// S3's limit on key length, in bytes.
    pub const MAX_LEN: usize = 1024;

    /// Validates `key`; see the module documentation for the rules.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        match Self::problem(&key) {
            None => Ok(Key(key)),
            Some(reason) => Err(Error::InvalidKey { key, reason }),
        }
    }

    fn problem(key: &str) -> Option<&'static str> {
        if key.is_empty() {
            return Some("empty key");
        }
        if key.len() > Self::MAX_LEN {
            return Some("key longer than 1024 bytes");
        }
        if key.contains('\0') {
            return Some("NUL in key");
        }
        if key.contains('\\') {
            return Some("backslash in key");
        }
        if key.starts_with('/') {
            return Some("absolute key");
        }
        for segment in key.split('/') {
            match segment {
                "" => return Some("empty path segment"),
                "." | ".." => return Some("`.` or `..` path segment"),
                _ => {}
            }
        }
        None
    }

    /// This key followed by `/` and `rest`, validated.
    pub fn join(&self, rest: &str) -> Result<Key> {
        Key::new(format!("{}/{}", self.0, rest))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated segments of the key.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_keys() {
        for key in [
            "a",
            "org/name.git/manifest",
            "x/packs/pack-1.idx",
            ".hidden/file",
            "a..b",
        ] {
            assert!(Key::new(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn refuses_hostile_keys() {
        let long = "a".repeat(1025);
        for key in [
            "",
            "/etc/passwd",
            "a//b",
            "a/",
            "../x",
            "a/../../x",
            "a/./b",
            "..",
            "a\0b",
            "a\\..\\b",
            &long,
        ] {
            assert!(
                matches!(Key::new(key), Err(Error::InvalidKey { .. })),
                "{key:?} was accepted"
            );
        }
    }

    #[test]
    fn join_validates_the_result() {
        let base = Key::new("repo").expect("valid");
        assert_eq!(
            base.join("packs/a.pack").expect("valid").as_str(),
            "repo/packs/a.pack"
        );
        assert!(base.join("../escape").is_err());
        assert!(base.join("").is_err());
    }
}
