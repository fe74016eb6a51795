//! Receiving a push: index the pack, check it, store it, then move the refs by
//! compare-and-swap of the manifest.
//!
//! Order matters for safety: the pack is streamed to a temporary directory and indexed
//! there (thin-pack bases are resolved from the repository and written into the stored
//! pack, so every stored pack is complete); every command is checked (ref name, object
//! present, connectivity of the new tip, fast-forward if required) before anything is
//! stored; pack and index are stored with `Create`; only then is the manifest swapped.
//! When the swap loses a race, the manifest is read again and every command's old id is
//! checked against the new state: a command whose old id no longer matches is refused,
//! never applied over someone else's update.
//!
//! Rules about who may move which ref (protected branches, and later LFS locks and
//! hooks) come from above as a [`RefPolicy`], asked about each command inside the
//! compare-and-swap loop, so that it judges the old value the command replaces. The
//! default branch (HEAD's target) is never deleted, as in git.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;
use tracing::Instrument;

use bytes::Bytes;
use gix_hash::ObjectId;
use gix_object::Kind;
use stowage_store::{Error as StoreError, PutMode};
use tokio::io::AsyncRead;

use super::indexer::{IndexError, Limits, index_pack as index_stream};
use super::manifest::{Manifest, PackEntry, RefValue};
use super::object_check::{Finding, ObjectChecker};
use super::odb::read_required;
use super::odb::{Layered, LocalPack, NoObjects, ObjectSource, Odb, OdbError, pack_keys};
use super::walk::{check_pack_closed, is_ancestor, parse_commit, peel, tag_target, tree_children};
use super::{RepoError, RepoName, Repos, Snapshot};

/// One ref update a client asked for. A null `old` means "create", a null `new` means
/// "delete".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub old: ObjectId,
    pub new: ObjectId,
    pub name: String,
}

/// What happened to a push, in the terms of git's report-status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `Err(reason)` when the pack could not be read or indexed.
    pub unpack: Result<(), String>,
    /// Lines for the client to show before the report (`remote: ...`), such as what
    /// the object checks found.
    pub messages: Vec<String>,
    /// Per command, in request order: `Ok` or the reason it was refused.
    pub refs: Vec<(String, Result<(), String>)>,
    /// Whether this push created the repository.
    pub created: bool,
    /// The push event recorded with the refs it moved (see [`super::event`]).
    pub event: Option<String>,
}

/// One ref command as a [`RefPolicy`] sees it, inside the compare-and-swap loop.
#[derive(Debug, Clone)]
pub struct RefChange<'a> {
    /// The full ref name.
    pub name: &'a str,
    /// The value it replaces (`None`: the ref is created).
    pub old: Option<ObjectId>,
    /// The value it gets (`None`: the ref is deleted).
    pub new: Option<ObjectId>,
    /// For an update: whether the new value descends from the old one.
    pub fast_forward: Option<bool>,
}

/// A file a push may not change, and who holds it (a Git LFS lock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedFile {
    pub path: String,
    pub owner: String,
}

/// Rules a push must follow, given by the layer above (access control, locks, hooks).
#[async_trait::async_trait]
pub trait RefPolicy: Send + Sync {
    /// Whether the push may create the repository when it does not exist.
    fn may_create(&self) -> bool;

    /// Brings the rules up to date once the pack is received and stored, right before
    /// the refs move: a long push is judged by the rules as they are when it lands, not
    /// as they were when it began. `Err` refuses every command with that reason.
    async fn refresh(&self) -> Result<(), String>;
    /// `Ok`, or the reason the command is refused (git shows it after `ng <ref>`).
    fn check(&self, change: &RefChange<'_>) -> Result<(), String>;

    /// Files the commits of this push may not change (locked by someone else), asked
    /// once the pack is in, and only of repositories that have had locks. `Err`
    /// refuses every command with that reason.
    async fn locked_files(&self) -> Result<Vec<LockedFile>, String> {
        Ok(Vec::new())
    }
}

/// The policy that allows every command.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

#[async_trait::async_trait]
impl RefPolicy for AllowAll {
    fn may_create(&self) -> bool {
        true
    }

    async fn refresh(&self) -> Result<(), String> {
        Ok(())
    }
    fn check(&self, _: &RefChange<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// How many times a push re-reads the manifest after losing a compare-and-swap.
const MAX_ATTEMPTS: u32 = 64;

/// Checks a ref name by the rules of `git check-ref-format`, and that it is under
/// `refs/`.
pub fn check_ref_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid ref name: {why}"));
    if !name.starts_with("refs/") {
        return bad("it is not under refs/");
    }
    if name.ends_with('/') || name.ends_with('.') {
        return bad("it ends with `/` or `.`");
    }
    if name.contains("..") || name.contains("@{") || name.contains("//") {
        return bad("it contains `..`, `@{` or `//`");
    }
    if name
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b))
    {
        return bad("it contains a control character, a space or one of ~^:?*[\\");
    }
    if name
        .split('/')
        .any(|c| c.starts_with('.') || c.ends_with(".lock"))
    {
        return bad("a component starts with `.` or ends with `.lock`");
    }
    Ok(())
}

/// A command that passed the checks, with what the manifest needs to record.
#[derive(Debug, Clone)]
struct Checked {
    peeled: Option<ObjectId>,
    /// Whether the update is a fast-forward, when that was asked.
    fast_forward: Option<bool>,
}

/// Runs a push of `commands` with the pack read from `pack` (`None` when the client
/// sent no pack: deletes only), each command also judged by `policy`.
pub async fn receive(
    repos: &Repos,
    repo: &RepoName,
    commands: Vec<Command>,
    pack: Option<Box<dyn AsyncRead + Send + Unpin>>,
    atomic: bool,
    policy: &dyn RefPolicy,
    pusher: &Pusher,
) -> Result<Report, RepoError> {
    let snapshot = repos.snapshot(repo).await?;
    // A push creates a missing repository only if it may, and if it sets a ref.
    if snapshot.is_none()
        && (!repos.config.auto_create
            || !policy.may_create()
            || commands.iter().all(|c| c.new.is_null()))
    {
        return Err(RepoError::NotFound(repo.clone()));
    }
    if let Some(s) = &snapshot
        && s.manifest.object_hash() != pusher.object_format
    {
        return Err(RepoError::Refused(format!(
            "unsupported object format '{}': the repository's is {}",
            pusher.object_format, s.manifest.object_format
        )));
    }
    let base = snapshot
        .as_ref()
        .map(|s| s.manifest.clone())
        .unwrap_or_else(|| Manifest::new("refs/heads/main", pusher.object_format));
    let odb = Arc::new(repos.odb(repo, &base).await?);

    let mut results: Vec<Result<Checked, String>> = commands
        .iter()
        .map(|c| {
            if c.name.len() > repos.config.max_ref_name_bytes {
                return Err(format!(
                    "invalid ref name: longer than this server accepts ({} bytes)",
                    repos.config.max_ref_name_bytes
                ));
            }
            check_ref_name(&c.name).map(|()| Checked {
                peeled: None,
                fast_forward: None,
            })
        })
        .collect();

    let tmp = super::scratch::Scratch::new(&repos.config.tmp_dir, "push")
        .map_err(|e| RepoError::Store(StoreError::from_io("temporary directory", e)))?;

    // Receive and index the pack.
    let needs_pack = commands.iter().any(|c| !c.new.is_null());
    let mut received: Option<(LocalPack, ObjectId, std::path::PathBuf, std::path::PathBuf)> = None;
    if let (true, Some(pack)) = (needs_pack, pack) {
        match index_pack(repos, odb.clone(), pack, tmp.path())
            .instrument(tracing::info_span!("receive"))
            .await
        {
            Ok(Some(r)) => received = Some(r),
            Ok(None) => {}
            Err(Unpacking { reason, messages }) => {
                return Ok(Report {
                    unpack: Err(reason),
                    messages,
                    refs: commands
                        .iter()
                        .map(|c| (c.name.clone(), Err("unpacker error".to_owned())))
                        .collect(),
                    created: false,
                    event: None,
                });
            }
        }
    }

    // Check every command against the objects (blocking work).
    let checks = {
        let odb = odb.clone();
        let commands = commands.clone();
        let local_index = received.as_ref().map(|r| r.2.clone());
        let max_tree_depth = repos.config.max_tree_depth;
        let mut results = std::mem::take(&mut results);
        tokio::task::spawn_blocking(move || -> Result<_, OdbError> {
            let local = match &local_index {
                Some(path) => Some(LocalPack::open(path, odb.format())?),
                None => None,
            };
            // A pack joins the live packs only if it is closed over them.
            let gap = match &local {
                Some(local) => check_pack_closed(local, odb.as_ref(), max_tree_depth)?.err(),
                None => None,
            };
            for (command, result) in commands.iter().zip(results.iter_mut()) {
                if result.is_err() || command.new.is_null() {
                    continue;
                }
                *result = match (&gap, &local) {
                    (Some(fault), _) => Err(fault.to_string()),
                    (None, Some(local)) => check_command(local, &odb, command)?,
                    (None, None) => check_command(&NoObjects, &odb, command)?,
                };
            }
            // Objects of the pack that no new ref value reaches, and that the
            // repository does not have already: the pack brings unreachable objects.
            let extras = match (&gap, &local) {
                (None, Some(local)) => {
                    let tips: Vec<ObjectId> = commands
                        .iter()
                        .zip(&results)
                        .filter(|(c, r)| r.is_ok() && !c.new.is_null())
                        .map(|(c, _)| c.new)
                        .collect();
                    brings_unreachable(local, odb.as_ref(), &tips)?
                }
                _ => false,
            };
            Ok((results, extras))
        })
        .instrument(tracing::info_span!("check"))
        .await
        .expect("the check task does not panic")?
    };
    let (checks, brings_extras) = checks;
    results = checks;

    // The pre-receive hook, before anything of the push is stored: a refusal leaves
    // nothing behind.
    let mut messages = Vec::new();
    if let Some(hook) = &repos.config.pre_receive
        && results.iter().any(Result::is_ok)
    {
        let accepted = commands
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(c, _)| (c.name.clone(), c.old, c.new))
            .collect();
        let verdict = pre_receive(
            hook,
            repo,
            &odb,
            accepted,
            received.as_ref(),
            tmp.path(),
            pusher,
        )
        .instrument(tracing::info_span!("hook"))
        .await?;
        if pusher.notes.is_none() {
            messages = verdict.output;
        }
        if let Some(reason) = verdict.refusal {
            tracing::info!(repo = %repo, %reason, "the pre-receive hook refused a push");
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(reason.clone());
            }
        }
    }

    // Store the pack if a command that sets a value will use it.
    let mut new_pack = None;
    let mut existed = false;
    let sets_values = commands
        .iter()
        .zip(&results)
        .any(|(c, r)| r.is_ok() && !c.new.is_null());
    if let Some((local, hash, index_path, data_path)) = &received
        && local.num_objects() > 0
        && sets_values
    {
        let size = std::fs::metadata(data_path)
            .map_err(|e| RepoError::Store(StoreError::from_io("received pack", e)))?
            .len();
        existed = store_pack(repos, repo, hash, index_path, data_path)
            .instrument(tracing::info_span!("store"))
            .await?;
        new_pack = Some(PackEntry {
            hash: *hash,
            size,
            objects: local.num_objects(),
            bundle: false,
        });
    }

    // The push event (when the repository has webhooks), stored once the pack is (a
    // queued event that no manifest lists for long is taken for one whose push did not
    // land), and listed by the swap.
    let event = match pusher.record_event && results.iter().any(Result::is_ok) {
        true => Some(
            record_event(
                repos,
                repo,
                &odb,
                &commands,
                &results,
                received.as_ref(),
                pusher,
            )
            .instrument(tracing::info_span!("event"))
            .await?,
        ),
        false => None,
    };

    // The rules as they stand now that the pack is in; updates they newly need to know
    // about are walked now.
    if let Err(reason) = policy.refresh().await {
        for result in results.iter_mut().filter(|r| r.is_ok()) {
            *result = Err(reason.clone());
        }
    }
    if snapshot.is_none() && !policy.may_create() {
        return Err(RepoError::NotFound(repo.clone()));
    }
    if base.lfs_locks {
        check_locks(
            repos,
            repo,
            snapshot.as_ref(),
            policy,
            &odb,
            &commands,
            &mut results,
            received.as_ref().map(|r| r.2.clone()),
        )
        .await?;
    }
    // A server draining for its exit lets this part finish.
    let committing = repos.committing();
    let (refs, written, created, relisted) = swap_manifest(
        repos,
        repo,
        snapshot,
        &commands,
        results,
        Landing {
            pack: new_pack,
            brings_unreachable: brings_extras,
            event: event.clone(),
            format: pusher.object_format,
        },
        atomic,
        policy,
    )
    .instrument(tracing::info_span!("swap"))
    .await?;
    // A swap that wrote the manifest listed the event (another instance may have
    // taken it off again already, after making its deliveries).
    let recorded = event.clone().filter(|_| written.is_some());
    if let Some(written) = written {
        if let (true, Some((_, hash, index_path, data_path))) = (existed || relisted, &received) {
            ensure_pack_stored(repos, repo, hash, index_path, data_path).await?;
        }
        repos.maintain_in_background(repo, &written);
    }
    drop(committing);
    if let (Some(id), None) = (&event, &recorded) {
        // Nothing of the push landed: its event is not one.
        if let Err(e) = repos.store.delete(&super::event::queue_key(id)).await {
            tracing::warn!(repo = %repo, error = %e, "dropping the event of a push that did not land failed");
        }
    }
    Ok(Report {
        unpack: Ok(()),
        messages,
        refs,
        created,
        event: recorded,
    })
}

/// Refuses each command whose new commits change a file `policy` says is locked.
/// The new commits are those the new value reaches that no ref of the repository
/// reaches: the received pack's (at `local_index`), and any stored earlier that no ref
/// took (sent with another command, say); the walk stops at commits a ref reaches. A
/// commit changes a path when its entry there differs from the entry in every parent
/// (a merge that takes one side's version changes nothing itself).
#[allow(clippy::too_many_arguments)]
async fn check_locks(
    repos: &Repos,
    repo: &RepoName,
    snapshot: Option<&Snapshot>,
    policy: &dyn RefPolicy,
    odb: &Arc<Odb>,
    commands: &[Command],
    results: &mut [Result<Checked, String>],
    local_index: Option<std::path::PathBuf>,
) -> Result<(), RepoError> {
    let Some(snapshot) = snapshot else {
        // A repository this push creates has no locks.
        return Ok(());
    };
    let locked = match policy.locked_files().await {
        Ok(locked) => locked,
        Err(reason) => {
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(reason.clone());
            }
            return Ok(());
        }
    };
    if locked.is_empty() {
        return Ok(());
    }
    let tips: Vec<(usize, ObjectId)> = commands
        .iter()
        .enumerate()
        .filter(|(i, c)| results[*i].is_ok() && !c.new.is_null())
        .map(|(i, c)| (i, c.new))
        .collect();
    let odb = odb.clone();
    let caches = repos.caches.clone();
    let key = (repo.to_string(), snapshot.etag.as_str().to_owned());
    let manifest = snapshot.manifest.clone();
    let found =
        tokio::task::spawn_blocking(move || -> Result<Vec<(usize, LockedFile)>, OdbError> {
            let local = local_index
                .map(|path| LocalPack::open(&path, odb.format()))
                .transpose()?;
            let ref_tips = super::fetch::ref_tips(&manifest);
            let mut reachable: Option<Arc<HashSet<ObjectId>>> = None;
            let mut is_new = |id: &ObjectId| -> Result<bool, OdbError> {
                if local.as_ref().is_some_and(|l| l.contains(id)) {
                    return Ok(true);
                }
                if ref_tips.contains(id) {
                    return Ok(false);
                }
                // Only a commit neither received nor a ref's needs every reachable
                // object (one walk per manifest, shared with the fetches that ask).
                if reachable.is_none() {
                    let set = caches
                        .reachable_or(key.clone(), || {
                            super::fetch::reachable(&odb, &manifest).map(Arc::new)
                        })
                        .map_err(|e| OdbError::Corrupt {
                            pack: "reachable objects".into(),
                            message: e.to_string(),
                        })?;
                    reachable = Some(set);
                }
                Ok(!reachable.as_ref().is_some_and(|set| set.contains(id)))
            };
            let mut found = Vec::new();
            for (i, tip) in tips {
                let file = match &local {
                    Some(local) => {
                        let source = Layered {
                            first: local,
                            then: odb.as_ref(),
                        };
                        super::walk::changes_locked(&source, &mut is_new, tip, &locked)?
                    }
                    None => super::walk::changes_locked(odb.as_ref(), &mut is_new, tip, &locked)?,
                };
                if let Some(file) = file {
                    found.push((i, file));
                }
            }
            Ok(found)
        })
        .await
        .expect("the lock check does not panic")?;
    for (i, file) in found {
        results[i] = Err(format!("{} is locked by {}", file.path, file.owner));
    }
    Ok(())
}

/// Who pushes, the push options they sent (for the pre-receive hook), and where lines
/// for them go while the push runs.
#[derive(Debug, Clone, Default)]
pub struct Pusher {
    pub user: Option<String>,
    pub push_options: Vec<String>,
    /// When set, the hook's output goes here as it is written, not into
    /// [`Report::messages`].
    pub notes: Option<super::hook::Notes>,
    /// Whether the push records a push event (the repository has webhooks).
    pub record_event: bool,
    /// The URL the pusher reached the server by, for the event.
    pub origin: Option<String>,
    /// The object format the client's repository uses (its `object-format=`): a push
    /// that creates the repository fixes it; another must match the repository's.
    pub object_format: gix_hash::Kind,
}

/// Describes the push's accepted commands as a push event and stores it (with
/// `Create`) in the queue; returns its id, which the manifest swap lists.
async fn record_event(
    repos: &Repos,
    repo: &RepoName,
    odb: &Arc<Odb>,
    commands: &[Command],
    results: &[Result<Checked, String>],
    received: Option<&(LocalPack, ObjectId, std::path::PathBuf, std::path::PathBuf)>,
    pusher: &Pusher,
) -> Result<String, RepoError> {
    use super::event::{MAX_COMMITS, MAX_COUNTED, MAX_DESCRIBED_REFS, PushEvent, RefEvent};
    let accepted: Vec<(Command, bool)> = commands
        .iter()
        .zip(results)
        .filter_map(|(c, r)| {
            let checked = r.as_ref().ok()?;
            Some((c.clone(), checked.fast_forward == Some(false)))
        })
        .collect();
    let refs = {
        let odb = odb.clone();
        let index = received.map(|r| r.2.clone());
        tokio::task::spawn_blocking(move || -> Result<Vec<RefEvent>, OdbError> {
            let local = index
                .as_deref()
                .map(|path| LocalPack::open(path, odb.format()))
                .transpose()?;
            let none = NoObjects;
            let local: &dyn ObjectSource = match &local {
                Some(local) => local,
                None => &none,
            };
            let first = super::odb::DynSource(local);
            let all = Layered {
                first: &first,
                then: odb.as_ref(),
            };
            accepted
                .into_iter()
                .enumerate()
                .map(|(n, (c, forced))| {
                    // A push of very many refs describes the first ones.
                    let found = match n < MAX_DESCRIBED_REFS {
                        true => super::describe::new_commits(
                            local,
                            &all,
                            c.new,
                            MAX_COMMITS,
                            MAX_COUNTED,
                        )?,
                        false => super::describe::NewCommits::default(),
                    };
                    let head_commit = match found.commits.first() {
                        None if !c.new.is_null() && n < MAX_DESCRIBED_REFS => {
                            super::describe::new_commits(&all, &all, c.new, 1, 1)?
                                .commits
                                .pop()
                        }
                        _ => None,
                    };
                    Ok(RefEvent {
                        head_commit,
                        name: c.name,
                        before: c.old.to_string(),
                        after: c.new.to_string(),
                        forced,
                        commits: found.commits,
                        total_commits: found.total,
                    })
                })
                .collect()
        })
        .await
        .expect("describing a push does not panic")?
    };
    let event = PushEvent {
        id: transaction_id(),
        repo: repo.to_string(),
        at: super::maintenance::unix_now(),
        pusher: pusher.user.clone(),
        origin: pusher.origin.clone(),
        refs,
    };
    let body = Bytes::from(serde_json::to_vec(&event).expect("an event serializes"));
    repos
        .store
        .put(&super::event::queue_key(&event.id), body, PutMode::Create)
        .await?;
    Ok(event.id)
}

/// Runs the pre-receive hook on the `accepted` commands (ref, old, new), with the
/// received pack, in the push's scratch directory `dir`.
async fn pre_receive(
    hook: &super::hook::PreReceive,
    repo: &RepoName,
    odb: &Arc<Odb>,
    accepted: Vec<(String, ObjectId, ObjectId)>,
    received: Option<&(LocalPack, ObjectId, std::path::PathBuf, std::path::PathBuf)>,
    dir: &std::path::Path,
    pusher: &Pusher,
) -> Result<super::hook::Verdict, RepoError> {
    let prepared = {
        let odb = odb.clone();
        let index = received.map(|r| r.2.clone());
        let (hash, data) = (received.map(|r| r.1), received.map(|r| r.3.clone()));
        let (dir, accepted, name, user) = (
            dir.join("hook"),
            accepted.clone(),
            repo.to_string(),
            pusher.user.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let local = match &index {
                Some(path) => Some(LocalPack::open(path, odb.format())?),
                None => None,
            };
            let received = match (&local, &hash, &index, &data) {
                (Some(local), Some(hash), Some(index), Some(data)) => {
                    Some((local, hash, index.as_path(), data.as_path()))
                }
                _ => None,
            };
            super::hook::prepare(
                &dir,
                received,
                odb.as_ref(),
                &accepted,
                &name,
                user.as_deref(),
            )
        })
        .await
        .expect("preparing the hook's directory does not panic")?
    };
    let (git_dir, push_json) = prepared;
    let lines = accepted
        .iter()
        .map(|(name, old, new)| format!("{old} {new} {name}"))
        .collect();
    let name = repo.to_string();
    Ok(hook
        .run(super::hook::HookInput {
            lines,
            push_options: &pusher.push_options,
            repo: &name,
            user: pusher.user.as_deref(),
            git_dir: &git_dir,
            push_json: &push_json,
            live: pusher.notes.as_ref(),
        })
        .await)
}

/// Why a received pack was refused: the reason after `unpack`, and lines to show.
#[derive(Debug)]
struct Unpacking {
    reason: String,
    messages: Vec<String>,
}

impl From<String> for Unpacking {
    fn from(reason: String) -> Self {
        Unpacking {
            reason,
            messages: Vec::new(),
        }
    }
}

impl Unpacking {
    /// Objects that failed their checks, told as git's `index-pack --strict` tells it.
    fn fsck(findings: &[Finding]) -> Self {
        let mut messages: Vec<String> = findings.iter().map(|f| format!("error: {f}")).collect();
        messages.push("fatal: fsck error in packed object".into());
        Unpacking {
            reason: "index-pack abnormal exit".into(),
            messages,
        }
    }
}

/// Streams the pack into `dir` and indexes it. `Ok(None)` for an empty body; `Err` with
/// the reason git shows after `unpack` for a corrupt or truncated pack.
async fn index_pack(
    repos: &Repos,
    odb: Arc<Odb>,
    pack: Box<dyn AsyncRead + Send + Unpin>,
    dir: &Path,
) -> Result<Option<(LocalPack, ObjectId, std::path::PathBuf, std::path::PathBuf)>, Unpacking> {
    let limit = repos.config.max_pack_bytes;
    let fsck_objects = repos.config.fsck_objects;
    let fsck_ignore = repos.config.fsck_ignore.clone();
    let max_delta_depth = repos.config.max_delta_depth;
    let bridge = tokio_util::io::SyncIoBridge::new(pack);
    let dir = dir.to_owned();
    let max_object = repos.config.max_object_bytes;
    let too_large = format!("the pack is larger than this server accepts ({limit} bytes)");
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut bridge = bridge;
        // The header says how many objects follow: a push that only points refs at
        // objects the repository has sends an empty pack (or none at all).
        let mut header = [0u8; 12];
        let mut got = 0;
        while got < header.len() {
            match bridge.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err("the pack ended inside its header".to_owned().into()),
                Ok(n) => got += n,
                Err(e) => return Err(format!("reading the pack failed: {e}").into()),
            }
        }
        if &header[..4] == b"PACK" && header[8..12] == [0, 0, 0, 0] {
            // Read the trailer too: a request body left unread makes the connection
            // close with a reset, which can cut off the report the client is reading.
            let mut rest = Vec::new();
            (&mut bridge)
                .take(64)
                .read_to_end(&mut rest)
                .map_err(|e| format!("reading the pack failed: {e}"))?;
            let mut sum = super::hash::Hasher::new(odb.format());
            sum.update(&header);
            if rest[..] != *sum.finalize().as_slice() {
                return Err("pack checksum mismatch: the pack is corrupt"
                    .to_owned()
                    .into());
            }
            return Ok(None);
        }
        let mut limited = Limited {
            inner: std::io::Cursor::new(header).chain(bridge),
            left: limit,
            exceeded: false,
        };
        let limits = Limits {
            max_object_bytes: max_object as u64,
            max_delta_depth,
        };
        let mut checker =
            fsck_objects.then(|| ObjectChecker::ignoring(fsck_ignore.iter().map(String::as_str)));
        let indexed = index_stream(
            &mut limited,
            odb.format(),
            &dir,
            Some(odb.as_ref()),
            limits,
            checker.as_mut(),
        )
        .map_err(|e| match e {
            _ if limited.exceeded => Unpacking::from(too_large.clone()),
            IndexError::Fsck(findings) => Unpacking::fsck(&findings),
            other => other.to_string().into(),
        })?;
        let local =
            LocalPack::open(&indexed.index_path, odb.format()).map_err(|e| e.to_string())?;
        // The `.gitmodules` the pack's trees name, once every object is in.
        if let Some(checker) = &checker {
            let mut data = Vec::new();
            for id in checker.gitmodules() {
                let Some(kind) = local.read(id, &mut data).map_err(|e| e.to_string())? else {
                    continue; // the repository's own, checked when it arrived
                };
                checker
                    .check_gitmodules(*id, kind, &data)
                    .map_err(|f| Unpacking::fsck(&f))?;
            }
        }
        Ok(Some((
            local,
            indexed.hash,
            indexed.index_path,
            indexed.data_path,
        )))
    })
    .await
    .map_err(|e| Unpacking::from(format!("indexing failed: {e}")))?
}

/// A reader that fails once more than `left` bytes were asked of it.
struct Limited<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: std::io::Read> std::io::Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.exceeded = true;
                Err(std::io::Error::other("pack too large"))
            }
        }
    }
}

/// Checks one command that sets a ref: its object is there, a branch gets a commit; and
/// says whether an update is a fast-forward.
fn check_command(
    local: &dyn ObjectSource,
    odb: &Odb,
    command: &Command,
) -> Result<Result<Checked, String>, OdbError> {
    let all = Layered {
        first: &super::odb::DynSource(local),
        then: odb,
    };
    if !all.contains(&command.new) {
        return Ok(Err(format!(
            "missing necessary objects: {} is not in the pack nor in the repository",
            command.new
        )));
    }
    let (peeled, kind) = peel(&all, command.new)?;
    if command.name.starts_with("refs/heads/") && kind != Kind::Commit {
        return Ok(Err(format!(
            "{} is a {kind}, not a commit: a branch must point to a commit",
            command.new
        )));
    }
    // An old value the repository lacks is not its ref's value: the swap refuses the
    // command ("fetch first") before any policy sees it.
    let fast_forward = if !command.old.is_null() {
        Some(all.contains(&command.old) && is_ancestor(&all, command.old, command.new)?)
    } else {
        None
    };
    Ok(Ok(Checked {
        peeled: (peeled != command.new).then_some(peeled),
        fast_forward,
    }))
}

/// Whether `pack` holds objects that none of `tips` reaches through the pack and that
/// `existing` does not have: objects nothing will reach once the push lands.
fn brings_unreachable(
    pack: &LocalPack,
    existing: &dyn ObjectSource,
    tips: &[ObjectId],
) -> Result<bool, OdbError> {
    let mut reached: HashSet<ObjectId> = HashSet::new();
    let mut stack: Vec<ObjectId> = tips.iter().filter(|t| pack.contains(t)).copied().collect();
    let mut buf = Vec::new();
    while let Some(id) = stack.pop() {
        if !reached.insert(id) {
            continue;
        }
        let children: Vec<ObjectId> = match pack.kind_of(&id)? {
            Some(Kind::Commit) => {
                read_required(pack, &id, &mut buf)?;
                let info = parse_commit(id, &buf)?;
                std::iter::once(info.tree).chain(info.parents).collect()
            }
            Some(Kind::Tree) => {
                read_required(pack, &id, &mut buf)?;
                tree_children(id, &buf)?
                    .into_iter()
                    .map(|(c, _)| c)
                    .collect()
            }
            Some(Kind::Tag) => {
                read_required(pack, &id, &mut buf)?;
                vec![tag_target(id, &buf)?.0]
            }
            _ => Vec::new(),
        };
        stack.extend(
            children
                .into_iter()
                .filter(|c| pack.contains(c) && !reached.contains(c)),
        );
    }
    if reached.len() == pack.num_objects() as usize {
        return Ok(false);
    }
    Ok(pack
        .ids()
        .any(|id| !reached.contains(&id) && !existing.contains(&id)))
}

/// Stores a pack's two files with `Create`: the pack, then its index (so the index's
/// time says when the pack was complete). A file that is already there is the same
/// pack (names are checksums), unlisted garbage perhaps, about to be collected: it is
/// written again, which makes it young for garbage collection (the retry layer does
/// the same when a retried `Create` finds it). Returns whether a file was already
/// there, in which case the caller checks with [`ensure_pack_stored`] once the pack is
/// listed.
pub(super) async fn store_pack(
    repos: &Repos,
    repo: &RepoName,
    hash: &ObjectId,
    index_path: &Path,
    data_path: &Path,
) -> Result<bool, RepoError> {
    let (pack_key, index_key) = pack_keys(repo, hash);
    let mut existed = false;
    let mut mode = PutMode::Create;
    loop {
        match repos
            .store
            .put_file(&pack_key, data_path, mode.clone())
            .await
        {
            Ok(_) => break,
            Err(StoreError::AlreadyExists { .. }) if mode == PutMode::Create => {
                existed = true;
                mode = PutMode::Overwrite;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let bytes = Bytes::from(
        tokio::fs::read(index_path)
            .await
            .map_err(|e| StoreError::from_io(index_key.as_str(), e))?,
    );
    match repos
        .store
        .put(&index_key, bytes.clone(), PutMode::Create)
        .await
    {
        Ok(_) => {}
        Err(StoreError::AlreadyExists { .. }) => {
            existed = true;
            repos
                .store
                .put(&index_key, bytes, PutMode::Overwrite)
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(existed)
}

/// After listing a pack whose files were already stored, or that was retired (the
/// same pack stored again): garbage collection may have deleted its files between its
/// last look and the listing (`stowage gc --prune-now` deletes retired packs whatever
/// their age); whatever is missing is stored again.
pub(super) async fn ensure_pack_stored(
    repos: &Repos,
    repo: &RepoName,
    hash: &ObjectId,
    index_path: &Path,
    data_path: &Path,
) -> Result<(), RepoError> {
    let (pack_key, index_key) = pack_keys(repo, hash);
    for key in [&pack_key, &index_key] {
        match repos.store.head(key).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                tracing::warn!(key = %key, "a listed pack file was collected; storing it again");
                store_pack(repos, repo, hash, index_path, data_path).await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A unique id for one write, recorded in what it writes (manifests, the access state)
/// so that a writer whose answer was lost recognises its own write.
pub fn transaction_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A ref that stops `name` from being created: one that is a directory of it
/// (`refs/heads/a` for `refs/heads/a/b`) or lies inside it (`refs/heads/a/b` for
/// `refs/heads/a`). Git cannot hold both.
fn ref_conflict(manifest: &Manifest, name: &str) -> Option<String> {
    let mut prefix = String::new();
    for part in name.split('/') {
        if !prefix.is_empty() {
            if manifest.refs.contains_key(&prefix) {
                return Some(prefix);
            }
            prefix.push('/');
        }
        prefix.push_str(part);
    }
    let inside = format!("{name}/");
    manifest
        .refs
        .range(inside.clone()..)
        .next()
        .filter(|(r, _)| r.starts_with(&inside))
        .map(|(r, _)| r.clone())
}

/// HEAD of a repository created by this push: `main` if pushed, else the one branch
/// pushed, else `main`.
fn initial_head(commands: &[Command]) -> String {
    let branches: Vec<&str> = commands
        .iter()
        .filter(|c| !c.new.is_null() && c.name.starts_with("refs/heads/"))
        .map(|c| c.name.as_str())
        .collect();
    if branches.len() == 1 && !branches.contains(&"refs/heads/main") {
        branches[0].to_owned()
    } else {
        "refs/heads/main".to_owned()
    }
}

/// Applies the checked commands to the manifest by compare-and-swap, re-reading and
/// re-checking (old values, the default branch, `policy`) after every lost race.
/// Returns the outcome per command, the manifest as written when it wrote one, and
/// whether its write created the repository.
#[allow(clippy::too_many_arguments)]
async fn swap_manifest(
    repos: &Repos,
    repo: &RepoName,
    mut snapshot: Option<Snapshot>,
    commands: &[Command],
    checked: Vec<Result<Checked, String>>,
    landing: Landing,
    atomic: bool,
    policy: &dyn RefPolicy,
) -> Result<Swapped, RepoError> {
    let deny_nff = repos.config.deny_non_fast_forwards;
    let key = repo.key("manifest");
    let txn = transaction_id();
    // The objects were checked against the packs of this manifest: after a prune, some
    // of them may be gone.
    let checked_against = snapshot.as_ref().map_or(0, |s| s.manifest.prunes);
    let mut last_results = Vec::new();
    for attempt in 0..MAX_ATTEMPTS {
        let mut next = match &snapshot {
            // A push that raced to create the repository in another format loses.
            Some(s) if s.manifest.object_hash() != landing.format => {
                return Err(RepoError::Refused(format!(
                    "unsupported object format '{}': the repository's is {}",
                    landing.format, s.manifest.object_format
                )));
            }
            Some(s) => s.manifest.clone(),
            None => Manifest::new(&initial_head(commands), landing.format),
        };
        // After a prune, what the checks relied on may be gone: commands that set a
        // value are refused (deletions rely on nothing).
        let pruned_meanwhile = next.prunes != checked_against;
        // Whether an applied command leaves objects unreachable: a deletion, or an
        // update that is not a fast-forward.
        let mut orphans = landing.brings_unreachable;
        let mut results: Vec<Result<(), String>> = Vec::with_capacity(commands.len());
        for (command, check) in commands.iter().zip(&checked) {
            let result = match check {
                Err(reason) => Err(reason.clone()),
                Ok(_) if pruned_meanwhile && !command.new.is_null() => Err(
                    "the repository was pruned while this push was checked; push again".to_owned(),
                ),
                Ok(checked) => {
                    let current = next.refs.get(&command.name).map(|r| r.id);
                    let expected = (!command.old.is_null()).then_some(command.old);
                    if current != expected {
                        Err(match (current, expected) {
                            (None, Some(_)) => "ref does not exist (fetch first)".to_owned(),
                            _ => "fetch first".to_owned(),
                        })
                    } else if let Some(conflict) = (current.is_none() && !command.new.is_null())
                        .then(|| ref_conflict(&next, &command.name))
                        .flatten()
                    {
                        Err(format!("cannot create it: ref {conflict} exists"))
                    } else if command.new.is_null() && command.name == next.head {
                        Err("deletion of the current branch prohibited".to_owned())
                    } else if deny_nff && checked.fast_forward == Some(false) {
                        Err("non-fast-forward".to_owned())
                    } else if let Err(reason) = policy.check(&RefChange {
                        name: &command.name,
                        old: current,
                        new: (!command.new.is_null()).then_some(command.new),
                        fast_forward: checked.fast_forward,
                    }) {
                        Err(reason)
                    } else {
                        orphans |= current.is_some()
                            && (command.new.is_null() || checked.fast_forward != Some(true));
                        if command.new.is_null() {
                            next.refs.remove(&command.name);
                        } else {
                            next.refs.insert(
                                command.name.clone(),
                                RefValue {
                                    id: command.new,
                                    peeled: checked.peeled,
                                },
                            );
                        }
                        Ok(())
                    }
                }
            };
            results.push(result);
        }
        if atomic && results.iter().any(Result::is_err) {
            results = results
                .into_iter()
                .map(|r| r.and(Err("atomic transaction failed".to_owned())))
                .collect();
        }
        let report: Vec<_> = commands
            .iter()
            .map(|c| c.name.clone())
            .zip(results.iter().cloned())
            .collect();
        if results.iter().all(Result::is_err) {
            return Ok((report, None, false, false));
        }
        let mut relisted = false;
        let sets_values = commands
            .iter()
            .zip(&results)
            .any(|(c, r)| r.is_ok() && !c.new.is_null());
        if let (Some(pack), true) = (&landing.pack, sets_values) {
            relisted = next.add_pack(pack.clone(), usize::MAX);
            // Objects the pack brought for a command refused here reach nothing.
            orphans |= commands
                .iter()
                .zip(checked.iter().zip(&results))
                .any(|(c, (before, now))| before.is_ok() && now.is_err() && !c.new.is_null());
        }
        if let Some(id) = &landing.event {
            let moved: Vec<String> = commands
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|(c, _)| c.name.clone())
                .collect();
            next.events.push(super::event::PendingEvent {
                id: id.clone(),
                refs: moved,
            });
        }
        if orphans && next.unreachable_since.is_none() {
            next.unreachable_since = Some(super::maintenance::unix_now());
        }
        next.txns.record(&txn);
        last_results = report.clone();
        let mode = match &snapshot {
            Some(s) => PutMode::Update(s.etag.clone()),
            None => PutMode::Create,
        };
        let creating = mode == PutMode::Create;
        match repos
            .store
            .put(&key, Bytes::from(next.to_bytes()), mode)
            .await
        {
            Ok(_) => return Ok((report, Some(next), creating, relisted)),
            Err(StoreError::Precondition { .. } | StoreError::AlreadyExists { .. }) => {
                crate::metrics::record(|m| m.manifest_conflicts.inc())
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e.into()),
        }
        // Lost the race (or the answer): read the winner's manifest and try again.
        let existed = snapshot.is_some();
        snapshot = repos.snapshot(repo).await?;
        match &snapshot {
            Some(s) if s.manifest.txns.has(&txn) => {
                // Our write landed; only its answer was lost.
                return Ok((report, Some(s.manifest.clone()), !existed, relisted));
            }
            None if existed => {
                // Deleted meanwhile: recreating it would list a pack whose history
                // went with the repository.
                return Err(RepoError::NotFound(repo.clone()));
            }
            _ => {}
        }
        let backoff = 2u64.pow(attempt.min(6)) + u64::from(attempt) * 3;
        tokio::time::sleep(Duration::from_millis(backoff)).await;
    }
    let refused = last_results
        .into_iter()
        .map(|(name, _)| {
            (
                name,
                Err("too much contention on the repository, try again".to_owned()),
            )
        })
        .collect();
    Ok((refused, None, false, false))
}

/// What a push adds beside its ref updates.
#[derive(Debug)]
struct Landing {
    /// The pack it stored.
    pack: Option<PackEntry>,
    /// Whether the pack holds objects no new ref value reaches.
    brings_unreachable: bool,
    /// The push event to list with the refs that move.
    event: Option<String>,
    /// The object format of its objects.
    format: gix_hash::Kind,
}

/// What [`swap_manifest`] did: per command, the manifest written, whether it created
/// the repository, and whether it listed a retired pack again.
type Swapped = (
    Vec<(String, Result<(), String>)>,
    Option<Manifest>,
    bool,
    bool,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_follow_check_ref_format() {
        for good in [
            "refs/heads/main",
            "refs/tags/v1.0",
            "refs/heads/feature/x-y_z",
            "refs/notes/commits",
        ] {
            assert!(check_ref_name(good).is_ok(), "{good}");
        }
        for bad in [
            "HEAD",
            "main",
            "refs/heads/",
            "refs/heads/a..b",
            "refs/heads/.hidden",
            "refs/heads/x.lock",
            "refs/heads/a b",
            "refs/heads/a~1",
            "refs/heads/a^",
            "refs/heads/a:b",
            "refs/heads/a?",
            "refs/heads/a*",
            "refs/heads/a[",
            "refs/heads/a\\b",
            "refs/heads/a@{1}",
            "refs//heads",
            "refs/heads/x.",
            "refs/heads/\u{1}",
        ] {
            assert!(check_ref_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refs_cannot_be_both_file_and_directory() {
        let id = ObjectId::from_hex(b"67463eab6b939e3de1ed116192ded6d6788017e3").expect("hex");
        let mut m = Manifest::empty("refs/heads/main");
        m.refs
            .insert("refs/heads/main".into(), RefValue { id, peeled: None });
        m.refs
            .insert("refs/heads/team/x".into(), RefValue { id, peeled: None });
        assert_eq!(
            ref_conflict(&m, "refs/heads/main/sub").as_deref(),
            Some("refs/heads/main")
        );
        assert_eq!(
            ref_conflict(&m, "refs/heads/team").as_deref(),
            Some("refs/heads/team/x")
        );
        assert_eq!(ref_conflict(&m, "refs/heads/team2"), None);
        assert_eq!(ref_conflict(&m, "refs/heads/te"), None);
        assert_eq!(ref_conflict(&m, "refs/heads/feature"), None);
    }

    #[test]
    fn head_of_a_new_repository() {
        let z = ObjectId::null(gix_hash::Kind::Sha1);
        let id = ObjectId::from_hex(b"67463eab6b939e3de1ed116192ded6d6788017e3").expect("hex");
        let cmd = |name: &str| Command {
            old: z,
            new: id,
            name: name.into(),
        };
        assert_eq!(
            initial_head(&[cmd("refs/heads/main"), cmd("refs/heads/dev")]),
            "refs/heads/main"
        );
        assert_eq!(
            initial_head(&[cmd("refs/heads/trunk"), cmd("refs/tags/v1")]),
            "refs/heads/trunk"
        );
        assert_eq!(
            initial_head(&[cmd("refs/heads/a"), cmd("refs/heads/b")]),
            "refs/heads/main"
        );
    }
}

#[cfg(test)]
mod creation_tests {
    #![allow(clippy::unwrap_used)]

    use std::process::{Command as Process, Stdio};
    use std::sync::atomic::AtomicBool;

    use async_trait::async_trait;
    use futures::stream::BoxStream;
    use stowage_store::{
        ByteRange, ByteStream, ETag, GetResult, Key, MemoryStore, ObjectMeta, ObjectStore,
        Result as StoreResult,
    };

    use super::*;
    use crate::repo::{Caches, RepoConfig};

    /// A store where another writer creates the first manifest just before this
    /// process's own `Create` of it arrives.
    #[derive(Debug, Default)]
    struct Preempted {
        inner: MemoryStore,
        done: AtomicBool,
    }

    #[async_trait]
    impl ObjectStore for Preempted {
        async fn get(&self, key: &Key) -> StoreResult<GetResult> {
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &Key, range: ByteRange) -> StoreResult<Bytes> {
            self.inner.get_range(key, range).await
        }
        async fn head(&self, key: &Key) -> StoreResult<ObjectMeta> {
            self.inner.head(key).await
        }
        async fn put(&self, key: &Key, body: Bytes, mode: PutMode) -> StoreResult<ETag> {
            if key.as_str().ends_with("/manifest")
                && mode == PutMode::Create
                && !self.done.swap(true, Ordering::SeqCst)
            {
                let other = Manifest::empty("refs/heads/main");
                self.inner
                    .put(key, Bytes::from(other.to_bytes()), PutMode::Create)
                    .await?;
            }
            self.inner.put(key, body, mode).await
        }
        async fn put_stream(
            &self,
            key: &Key,
            body: ByteStream,
            mode: PutMode,
        ) -> StoreResult<ETag> {
            self.inner.put_stream(key, body, mode).await
        }
        async fn delete(&self, key: &Key) -> StoreResult<()> {
            self.inner.delete(key).await
        }
        fn list(&self, prefix: &str) -> BoxStream<'_, StoreResult<ObjectMeta>> {
            self.inner.list(prefix)
        }
    }

    /// A one-commit repository's pack and its commit id.
    fn one_commit_pack() -> (Vec<u8>, ObjectId) {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = Process::new("git")
                .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
                .args(args)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}");
            out.stdout
        };
        git(&["init", "-q", "-b", "main"]);
        git(&["commit", "-q", "--allow-empty", "-m", "one"]);
        let head = String::from_utf8(git(&["rev-parse", "HEAD"])).unwrap();
        let mut child = Process::new("git")
            .args(["pack-objects", "--stdout", "--revs", "-q"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"HEAD\n").unwrap();
        let pack = child.wait_with_output().unwrap().stdout;
        (pack, ObjectId::from_hex(head.trim().as_bytes()).unwrap())
    }

    async fn push_new(store: Arc<dyn ObjectStore>) -> Report {
        let repos = Repos::new(
            store,
            Caches::new(1 << 20, 1 << 20, 1 << 20),
            RepoConfig {
                compact_after_push: false,
                ..RepoConfig::default()
            },
        );
        let (pack, id) = one_commit_pack();
        let command = Command {
            old: ObjectId::null(gix_hash::Kind::Sha1),
            new: id,
            name: "refs/heads/main".into(),
        };
        let body: Box<dyn AsyncRead + Send + Unpin> = Box::new(std::io::Cursor::new(pack));
        let repo = RepoName::new("new").unwrap();
        receive(
            &repos,
            &repo,
            vec![command],
            Some(body),
            false,
            &AllowAll,
            &Pusher::default(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_push_that_creates_says_so() {
        let report = push_new(Arc::new(MemoryStore::new())).await;
        assert_eq!(report.refs[0].1, Ok(()));
        assert!(report.created);
    }

    #[tokio::test]
    async fn a_push_that_lost_the_race_to_create_did_not_create() {
        let report = push_new(Arc::new(Preempted::default())).await;
        assert_eq!(
            report.refs[0].1,
            Ok(()),
            "applied on top of the other creation"
        );
        assert!(!report.created, "another writer created the repository");
    }
}
