//! Protected refs: patterns that refuse force-pushes and deletions unless allowed, and
//! may keep everyone but repository admins from pushing at all.
//!
//! A pattern that starts with `refs/` is matched against the full ref name; any other is
//! a branch pattern (`main` is `refs/heads/main`). `*` matches within one path component,
//! `**` across components: `release/*` covers `release/1.0` but not `release/1.0/fix`.
//! The rules bind every user and credential, admins included: to do what a protection
//! forbids, an admin first changes the protection.

use std::net::IpAddr;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::{Access, AccessError, Allowed, Credentials, Denied, Need};
use crate::repo::RepoName;
use crate::repo::push::{RefChange, RefPolicy, check_ref_name};

/// Longest pattern accepted, in bytes.
const MAX_PATTERN: usize = 256;

/// One protected pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    /// As given: `main`, `release/*`, `refs/tags/v*`.
    pub pattern: String,
    /// Updates that are not fast-forwards are accepted.
    #[serde(default)]
    pub allow_force_push: bool,
    /// Deletions are accepted.
    #[serde(default)]
    pub allow_delete: bool,
    /// Only the repository's admins (and server admins) may push to matching refs.
    #[serde(default)]
    pub admins_only: bool,
}

impl Protection {
    /// A protection of `pattern` that refuses force-pushes and deletions.
    pub fn new(pattern: &str) -> Result<Self, AccessError> {
        let full = full_pattern(pattern);
        let as_ref = full.replace('*', "x");
        if pattern.is_empty()
            || pattern.len() > MAX_PATTERN
            || pattern.contains("***")
            || check_ref_name(&as_ref).is_err()
        {
            return Err(AccessError::Invalid(format!(
                "invalid ref pattern {pattern:?}: use a branch name (`main`), a glob \
                 (`release/*`) or a full ref pattern (`refs/tags/v*`)"
            )));
        }
        Ok(Protection {
            pattern: pattern.to_owned(),
            allow_force_push: false,
            allow_delete: false,
            admins_only: false,
        })
    }

    /// Whether the ref `name` (full, `refs/...`) is protected by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        glob_match(full_pattern(&self.pattern).as_bytes(), name.as_bytes())
    }
}

fn full_pattern(pattern: &str) -> String {
    if pattern.starts_with("refs/") {
        pattern.to_owned()
    } else {
        format!("refs/heads/{pattern}")
    }
}

/// `*` matches any bytes but `/`, `**` any bytes at all; everything else itself. Runs in
/// time proportional to pattern times name, whatever the pattern.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    // reach[j]: the pattern read so far can match name[..j].
    let mut reach = vec![false; name.len() + 1];
    reach[0] = true;
    let mut i = 0;
    while i < pattern.len() {
        let mut next = vec![false; name.len() + 1];
        if pattern[i] == b'*' {
            let across = pattern.get(i + 1) == Some(&b'*');
            for j in 0..=name.len() {
                // A star matches nothing, or extends a match by one byte.
                next[j] = reach[j] || (j > 0 && next[j - 1] && (across || name[j - 1] != b'/'));
            }
            i += if across { 2 } else { 1 };
        } else {
            for j in 1..=name.len() {
                next[j] = reach[j - 1] && name[j - 1] == pattern[i];
            }
            i += 1;
        }
        reach = next;
    }
    reach[name.len()]
}

/// The protections of one repository, as they bind one pusher.
#[derive(Debug, Clone)]
pub struct Protections {
    list: Vec<Protection>,
    /// Whether the pusher is an admin of the repository (or a server admin).
    repo_admin: bool,
}

impl Protections {
    pub fn new(list: Vec<Protection>, repo_admin: bool) -> Self {
        Protections { list, repo_admin }
    }

    fn matching<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Protection> + 'a {
        self.list.iter().filter(move |p| p.matches(name))
    }
}

impl Protections {
    /// `Ok`, or why the protections refuse `change`.
    pub fn check(&self, change: &RefChange<'_>) -> Result<(), String> {
        let what = if change.name.starts_with("refs/heads/") {
            "protected branch"
        } else if change.name.starts_with("refs/tags/") {
            "protected tag"
        } else {
            "protected ref"
        };
        for p in self.matching(change.name) {
            if p.admins_only && !self.repo_admin {
                return Err(format!("{what}: only repository admins may push to it"));
            }
            match (change.old, change.new) {
                (Some(_), None) if !p.allow_delete => {
                    return Err(format!("{what}: deletion not allowed"));
                }
                (Some(_), Some(_)) if change.fast_forward == Some(false) && !p.allow_force_push => {
                    return Err(format!("{what}: force-push not allowed"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The rules one push follows: whether its pusher may create the repository, and the
/// protections that bind them; read again (from the cache, at most its maximum age
/// old) once the pack is in, so that a token revoked, a grant removed or a protection
/// added while a long push was uploading is in force when its refs would move.
#[derive(Debug)]
pub struct PushPolicy {
    access: Access,
    credentials: Credentials,
    addr: IpAddr,
    repo: RepoName,
    /// May create, and the protections, as last checked.
    current: RwLock<(bool, Protections)>,
}

impl PushPolicy {
    /// The policy of a push that `allowed` let in.
    pub fn new(
        access: Access,
        credentials: Credentials,
        addr: IpAddr,
        repo: RepoName,
        allowed: &Allowed,
    ) -> Self {
        PushPolicy {
            access,
            credentials,
            addr,
            repo,
            current: RwLock::new((allowed.may_create, allowed.protections())),
        }
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, (bool, Protections)> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl RefPolicy for PushPolicy {
    fn may_create(&self) -> bool {
        self.current().0
    }

    async fn refresh(&self) -> Result<(), String> {
        let decision = self
            .access
            .authorize(&self.credentials, self.addr, &self.repo, Need::Write)
            .await;
        match decision {
            Ok(Ok(allowed)) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    (allowed.may_create, allowed.protections());
                Ok(())
            }
            Ok(Err(Denied::Forbidden { reason, .. })) => Err(reason),
            Ok(Err(Denied::Hidden { .. })) => Err(format!("no access to {} any more", self.repo)),
            Ok(Err(_)) => Err("the credentials of this push are no longer valid".into()),
            Err(e) => {
                tracing::error!(error = %e, "checking access failed");
                Err("access control is unavailable; try again".into())
            }
        }
    }

    fn check(&self, change: &RefChange<'_>) -> Result<(), String> {
        self.current().1.check(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{AccessConfig, state};
    use gix_hash::ObjectId;
    use std::sync::Arc;
    use stowage_store::MemoryStore;

    #[tokio::test]
    async fn a_push_is_judged_by_the_rules_when_it_lands() {
        let access = Access::new(Arc::new(MemoryStore::new()), AccessConfig::default());
        let repo = RepoName::new("demo").expect("valid");
        let (token, id) = access
            .update(|s| {
                s.add_user("root", true, 0)?;
                s.add_user("bob", false, 0)?;
                s.grant(
                    &state::Target::repo(&repo),
                    "bob",
                    super::super::Role::Write,
                )?;
                state::new_token(s, "bob", &Default::default(), 0).map(|(t, r)| (t, r.id))
            })
            .await
            .expect("setup");
        let credentials = Credentials::Token(token);
        let here = IpAddr::from([127, 0, 0, 1]);
        let allowed = access
            .authorize(&credentials, here, &repo, Need::Write)
            .await
            .expect("checked")
            .expect("bob may push");
        let policy = PushPolicy::new(access.clone(), credentials, here, repo.clone(), &allowed);
        assert!(!policy.may_create(), "a grant on the name creates nothing");
        let forced = RefChange {
            name: "refs/heads/main",
            old: Some(ObjectId::null(gix_hash::Kind::Sha1)),
            new: Some(ObjectId::null(gix_hash::Kind::Sha1)),
            fast_forward: Some(false),
        };
        assert!(policy.check(&forced).is_ok());

        // A protection added while the pack uploads binds the push.
        access
            .update(|s| {
                s.protect(&repo, Protection::new("main")?);
                Ok(())
            })
            .await
            .expect("protect");
        policy.refresh().await.expect("still allowed");
        assert!(policy.check(&forced).is_err(), "the new protection binds");

        // A token revoked meanwhile refuses it.
        access
            .update(|s| s.revoke_token("bob", &id))
            .await
            .expect("revoke");
        assert!(policy.refresh().await.is_err());
    }

    fn p(pattern: &str) -> Protection {
        Protection::new(pattern).expect("valid pattern")
    }

    #[test]
    fn patterns_match_branches_and_full_refs() {
        assert!(p("main").matches("refs/heads/main"));
        assert!(!p("main").matches("refs/heads/main2"));
        assert!(!p("main").matches("refs/tags/main"));
        assert!(p("release/*").matches("refs/heads/release/1.0"));
        assert!(!p("release/*").matches("refs/heads/release/1.0/fix"));
        assert!(p("release/**").matches("refs/heads/release/1.0/fix"));
        assert!(p("refs/tags/v*").matches("refs/tags/v1.2.3"));
        assert!(!p("refs/tags/v*").matches("refs/heads/v1"));
        assert!(p("*").matches("refs/heads/anything"));
        assert!(!p("*").matches("refs/heads/a/b"));
        assert!(p("refs/**").matches("refs/notes/commits"));
        // Many stars against a long name stay quick.
        let name = format!("refs/heads/{}", "a".repeat(1000));
        assert!(!p("*a*a*a*a*a*a*a*a*b").matches(&name));
        for bad in ["", "a b", "refs/heads/..", "x:y", "***", "a\\b"] {
            assert!(Protection::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn protections_refuse_force_pushes_deletions_and_non_admins() {
        let id = ObjectId::from_hex(b"67463eab6b939e3de1ed116192ded6d6788017e3").expect("hex");
        let change = |old: Option<ObjectId>, new: Option<ObjectId>, ff: Option<bool>| RefChange {
            name: "refs/heads/main",
            old,
            new,
            fast_forward: ff,
        };
        let main = Protections::new(vec![p("main")], false);
        assert!(main.check(&change(Some(id), Some(id), Some(true))).is_ok());
        assert!(main.check(&change(None, Some(id), None)).is_ok());
        assert_eq!(
            main.check(&change(Some(id), Some(id), Some(false))),
            Err("protected branch: force-push not allowed".into())
        );
        assert_eq!(
            main.check(&change(Some(id), None, None)),
            Err("protected branch: deletion not allowed".into())
        );
        let mut lenient = p("main");
        lenient.allow_delete = true;
        lenient.allow_force_push = true;
        let lenient = Protections::new(vec![lenient], false);
        assert!(lenient.check(&change(Some(id), None, None)).is_ok());
        assert!(
            lenient
                .check(&change(Some(id), Some(id), Some(false)))
                .is_ok()
        );

        let mut only = p("main");
        only.admins_only = true;
        let writer = Protections::new(vec![only.clone()], false);
        assert_eq!(
            writer.check(&change(Some(id), Some(id), Some(true))),
            Err("protected branch: only repository admins may push to it".into())
        );
        let admin = Protections::new(vec![only], true);
        assert!(admin.check(&change(Some(id), Some(id), Some(true))).is_ok());
        assert!(
            admin.check(&change(Some(id), None, None)).is_err(),
            "admins are bound too"
        );
    }
}
