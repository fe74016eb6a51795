//! Keeping repositories fast and small: geometric compaction of packs, garbage
//! collection of packs no manifest lists, and a consistency check.
//!
//! Every push adds a pack. Compaction merges the small ones the way
//! `git repack --geometric=2` does, so that the number of live packs stays logarithmic
//! in the number of pushes. The merged pack holds every object of the packs it
//! replaces (never fewer: pushes rely on the live packs being closed under
//! reachability), it is written and indexed like a received pack, stored with
//! `Create`, and enters the manifest by compare-and-swap exactly as a push does: a
//! push that lands meanwhile is kept, and a compaction that finds its packs already
//! replaced gives up.
//!
//! Pruning is the one way objects leave a repository: once its packs may hold objects
//! no ref reaches (a ref was deleted or rewound) for longer than the grace period, or
//! at once with `stowage gc --prune-now`, every pack is rewritten into one holding
//! only what the refs reach. The prune gives up if a ref or the packs changed
//! meanwhile, and counts itself in the manifest, so that a push checked against the
//! packs before it checks again.
//!
//! A pack that leaves the manifest is not deleted at once: requests that read the
//! previous manifest may still be streaming it. Garbage collection deletes pack files
//! that no manifest lists only once they are older than a grace period (an hour by
//! default). A push that writes a pack whose file already exists unlisted (the same
//! bytes pushed again) rewrites it, which makes it young again, as git freshens
//! objects it writes twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use gix_hash::ObjectId;
use gix_object::Kind;
use stowage_store::{Error as StoreError, Key, PutMode};

use super::indexer::{Limits, index_pack};
use super::manifest::{Manifest, PackEntry, Retired};
use super::odb::{ObjectSource, Odb, OdbError, pack_keys};
use super::packgen::{PackChunks, PackEvent, Stored, stream_stored_packs};
use super::push::{check_ref_name, ensure_pack_stored, store_pack, transaction_id};
use super::walk::{parse_commit, peel, tag_target, tree_children};
use super::{RepoError, RepoName, Repos};

/// Default grace period before an unlisted pack may be deleted.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// How many times a compaction re-reads the manifest after losing a compare-and-swap.
const MAX_ATTEMPTS: u32 = 32;

/// Which packs a compaction merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The small packs that break a geometric progression of factor 2 by object
    /// count (as `git repack --geometric=2`).
    Geometric,
    /// Every live pack, into one.
    All,
}

/// The packs to merge under a geometric progression of `factor`: sorted by object
/// count, the largest packs that already form the progression (each at least `factor`
/// times the one before) stay; the rest are merged, along with any larger pack the
/// merged one would come within `factor` of. Empty when fewer than two would merge.
pub fn geometric_selection(packs: &[PackEntry], factor: u64) -> Vec<ObjectId> {
    let mut sorted: Vec<&PackEntry> = packs.iter().collect();
    sorted.sort_by_key(|p| (p.objects, p.hash));
    let weight = |p: &PackEntry| u64::from(p.objects.max(1));
    // The highest break in the progression, scanning down from the largest pack.
    let mut split = 0;
    for i in (1..sorted.len()).rev() {
        if weight(sorted[i]) < weight(sorted[i - 1]).saturating_mul(factor) {
            split = i + 1;
            break;
        }
    }
    let mut total: u64 = sorted[..split].iter().map(|p| weight(p)).sum();
    while split < sorted.len() && weight(sorted[split]) < total.saturating_mul(factor) {
        total += weight(sorted[split]);
        split += 1;
    }
    if split < 2 {
        return Vec::new();
    }
    sorted[..split].iter().map(|p| p.hash).collect()
}

/// What a compaction did.
#[derive(Debug, Clone)]
pub struct Compaction {
    /// The packs it replaced.
    pub merged: Vec<ObjectId>,
    /// The pack that replaced them.
    pub pack: PackEntry,
}

/// Runs one maintenance task, counted and timed in the metrics: `done` says whether it
/// did anything (`ok`) or found nothing to do (`nothing`).
async fn metered<T>(
    task: &'static str,
    run: impl Future<Output = Result<T, RepoError>>,
    done: impl FnOnce(&T) -> bool,
) -> Result<T, RepoError> {
    let started = std::time::Instant::now();
    let result = run.await;
    let outcome = match &result {
        Ok(value) if done(value) => "ok",
        Ok(_) => "nothing",
        Err(_) => "error",
    };
    crate::metrics::record(|m| m.maintenance(task, outcome, started.elapsed()));
    result
}

/// Merges packs of `repo` as `plan` says. `Ok(None)` when there is nothing to merge, or
/// when a concurrent compaction replaced the same packs first.
pub async fn compact(
    repos: &Repos,
    repo: &RepoName,
    plan: Plan,
) -> Result<Option<Compaction>, RepoError> {
    let compacted = metered(
        "compact",
        compact_unmetered(repos, repo, plan),
        Option::is_some,
    )
    .await;
    if let Ok(Some(done)) = &compacted {
        crate::metrics::record(|m| m.packs_merged.inc_by(done.merged.len() as u64));
    }
    compacted
}

async fn compact_unmetered(
    repos: &Repos,
    repo: &RepoName,
    plan: Plan,
) -> Result<Option<Compaction>, RepoError> {
    let snapshot = repos
        .snapshot(repo)
        .await?
        .ok_or_else(|| RepoError::NotFound(repo.clone()))?;
    let selected: Vec<ObjectId> = match plan {
        Plan::Geometric => geometric_selection(&snapshot.manifest.packs, 2),
        Plan::All if snapshot.manifest.packs.len() >= 2 => {
            snapshot.manifest.packs.iter().map(|p| p.hash).collect()
        }
        Plan::All => Vec::new(),
    };
    if selected.is_empty() {
        return Ok(None);
    }
    let chosen: HashSet<ObjectId> = selected.iter().copied().collect();
    let mut subset = snapshot.manifest.clone();
    subset.packs.retain(|p| chosen.contains(&p.hash));
    let odb = Arc::new(repos.odb(repo, &subset).await?);
    let expected: HashSet<ObjectId> = odb
        .packs()
        .iter()
        .flat_map(|p| p.index.iter().map(|e| e.oid))
        .collect();

    let tmp = super::scratch::Scratch::new(&repos.config.tmp_dir, "compact")
        .map_err(|e| RepoError::Store(StoreError::from_io("temporary directory", e)))?;
    let format = odb.format();
    let chunks = stream_stored_packs(odb.clone(), Stored::All);
    let dir = tmp.path().to_owned();
    let written =
        tokio::task::spawn_blocking(move || index_merged(chunks, format, &dir, &expected))
            .await
            .expect("indexing does not panic")?;
    let (mut pack, index_path, data_path) = written;
    // A pack of everything, large enough, is also stored as a bundle for clones.
    let bundle_path = if repos
        .config
        .bundle_min_bytes
        .is_some_and(|min| pack.size >= min && selected.len() == snapshot.manifest.packs.len())
    {
        Some(
            store_bundle(
                repos,
                repo,
                &snapshot.manifest,
                &pack,
                &data_path,
                tmp.path(),
            )
            .await?,
        )
    } else {
        None
    };
    pack.bundle = bundle_path.is_some();
    // Already stored unlisted (an earlier compaction that lost its race), it is written
    // again so that garbage collection sees it young; listed again after retirement,
    // checked once listed.
    let existed = store_pack(repos, repo, &pack.hash, &index_path, &data_path).await?;
    let (pack, selected, index_path, data_path) = (&pack, &selected, &index_path, &data_path);
    let bundle_path = &bundle_path;
    let listed = |relisted: bool| async move {
        if existed || relisted {
            ensure_pack_stored(repos, repo, &pack.hash, index_path, data_path).await?;
            // The bundle too: garbage collection may have taken it with the pack.
            if let Some(path) = bundle_path {
                let key = super::odb::bundle_key(repo, &pack.hash);
                match repos.store.head(&key).await {
                    Ok(_) => {}
                    Err(StoreError::NotFound { .. }) => {
                        repos.store.put_file(&key, path, PutMode::Overwrite).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok::<_, RepoError>(Some(Compaction {
            merged: selected.clone(),
            pack: pack.clone(),
        }))
    };

    let key = repo.key("manifest");
    let txn = transaction_id();
    let mut snapshot = snapshot;
    for attempt in 0..MAX_ATTEMPTS {
        let current = &snapshot.manifest;
        if !selected
            .iter()
            .all(|hash| current.packs.iter().any(|p| p.hash == *hash))
        {
            tracing::info!(repo = %repo, "compaction superseded: its packs were replaced meanwhile");
            return Ok(None);
        }
        let mut next = current.clone();
        let first = next
            .packs
            .iter()
            .position(|p| chosen.contains(&p.hash))
            .expect("every selected pack is listed");
        next.packs.retain(|p| !chosen.contains(&p.hash));
        let now = unix_now();
        next.retired.retain(|r| !chosen.contains(&r.hash));
        next.retired
            .extend(selected.iter().map(|&hash| Retired { hash, at: now }));
        let relisted = next.add_pack(pack.clone(), first);
        next.txns.record(&txn);
        match repos
            .store
            .put(
                &key,
                Bytes::from(next.to_bytes()),
                PutMode::Update(snapshot.etag.clone()),
            )
            .await
        {
            Ok(_) => return listed(relisted).await,
            Err(StoreError::Precondition { .. }) => {
                crate::metrics::record(|m| m.manifest_conflicts.inc())
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e.into()),
        }
        snapshot = repos
            .snapshot(repo)
            .await?
            .ok_or_else(|| RepoError::NotFound(repo.clone()))?;
        if snapshot.manifest.txns.has(&txn) {
            return listed(relisted).await;
        }
        let backoff = 2u64.pow(attempt.min(6)) + u64::from(attempt) * 3;
        tokio::time::sleep(Duration::from_millis(backoff)).await;
    }
    tracing::warn!(repo = %repo, "compaction gave up: too much contention on the manifest");
    Ok(None)
}

/// Stores the git bundle of `pack` (at `data_path`), which holds every object of
/// `manifest`: a header naming the refs, then the pack as it is. Written once, like the
/// pack; returns where its local copy is (in `dir`).
async fn store_bundle(
    repos: &Repos,
    repo: &RepoName,
    manifest: &Manifest,
    pack: &PackEntry,
    data_path: &std::path::Path,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, RepoError> {
    let mut header = match manifest.object_hash() {
        gix_hash::Kind::Sha1 => "# v2 git bundle\n".to_owned(),
        _ => format!(
            "# v3 git bundle\n@object-format={}\n",
            manifest.object_format
        ),
    };
    for (name, value) in &manifest.refs {
        header.push_str(&format!("{} {name}\n", value.id));
    }
    header.push('\n');
    let path = dir.join("bundle");
    let (data, written) = (data_path.to_owned(), path.clone());
    let io = |e| StoreError::from_io("bundle", e);
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&written)?);
        std::io::Write::write_all(&mut out, header.as_bytes())?;
        std::io::copy(&mut std::fs::File::open(&data)?, &mut out)?;
        std::io::Write::flush(&mut out)?;
        out.get_ref().sync_all()
    })
    .await
    .expect("writing a bundle does not panic")
    .map_err(io)?;
    let key = super::odb::bundle_key(repo, &pack.hash);
    match repos.store.put_file(&key, &path, PutMode::Create).await {
        Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(path)
}

/// One round of background maintenance: a prune when one is due, else a geometric
/// compaction when the packs need one. Whether it changed anything.
pub async fn maintain(repos: &Repos, repo: &RepoName) -> Result<bool, RepoError> {
    let Some(snapshot) = repos.snapshot(repo).await? else {
        return Ok(false);
    };
    // A prune superseded by a push falls through to compaction, so that packs do not
    // pile up while a busy repository waits for a quiet moment to prune.
    if prune_due(&snapshot.manifest, repos.config.gc_grace)
        && let Some(done) = prune(repos, repo).await?
    {
        tracing::info!(
            repo = %repo,
            replaced = done.replaced.len(),
            dropped = done.before.saturating_sub(done.kept),
            "pruned objects no ref reaches"
        );
        return Ok(true);
    }
    let compacted = compact(repos, repo, Plan::Geometric).await?;
    if let Some(done) = &compacted {
        tracing::info!(
            repo = %repo,
            merged = done.merged.len(),
            objects = done.pack.objects,
            "compacted"
        );
    }
    Ok(compacted.is_some())
}

/// What a prune did.
#[derive(Debug, Clone)]
pub struct Pruned {
    /// The packs it replaced.
    pub replaced: Vec<ObjectId>,
    /// The pack of what the refs reach (`None` when no ref is left).
    pub pack: Option<PackEntry>,
    /// Objects in the packs before (counting copies), and kept.
    pub before: u64,
    pub kept: u64,
    /// When it retired the packs it replaced (seconds since the Unix epoch).
    pub at: u64,
}

/// Whether `manifest`'s packs have held objects no ref reaches for longer than
/// `grace`, so that a prune is due.
pub fn prune_due(manifest: &Manifest, grace: Duration) -> bool {
    manifest
        .unreachable_since
        .is_some_and(|since| unix_now().saturating_sub(since) >= grace.as_secs())
}

/// Rewrites every pack of `repo` into one that holds only the objects its refs reach.
/// `Ok(None)` when a ref or the packs changed meanwhile (a later run does it).
pub async fn prune(repos: &Repos, repo: &RepoName) -> Result<Option<Pruned>, RepoError> {
    metered("prune", prune_unmetered(repos, repo), Option::is_some).await
}

async fn prune_unmetered(repos: &Repos, repo: &RepoName) -> Result<Option<Pruned>, RepoError> {
    let snapshot = repos
        .snapshot(repo)
        .await?
        .ok_or_else(|| RepoError::NotFound(repo.clone()))?;
    let manifest = &snapshot.manifest;
    let before: u64 = manifest.packs.iter().map(|p| u64::from(p.objects)).sum();
    let tips: Vec<ObjectId> = manifest.refs.values().map(|r| r.id).collect();
    let tmp = super::scratch::Scratch::new(&repos.config.tmp_dir, "prune")
        .map_err(|e| RepoError::Store(StoreError::from_io("temporary directory", e)))?;
    let written = if tips.is_empty() {
        None
    } else {
        let odb = Arc::new(repos.odb(repo, manifest).await?);
        let format = odb.format();
        let chunks = super::fetch::pack_of_reachable(odb, tips.clone());
        let dir = tmp.path().to_owned();
        let written =
            tokio::task::spawn_blocking(move || index_reachable(chunks, format, &dir, &tips))
                .await
                .expect("indexing does not panic")?;
        let (pack, index_path, data_path) = &written;
        let existed = store_pack(repos, repo, &pack.hash, index_path, data_path).await?;
        Some((written, existed))
    };
    let new_pack = written.as_ref().map(|((pack, _, _), _)| pack.clone());
    let key = repo.key("manifest");
    let txn = transaction_id();
    let same_packs = |m: &Manifest| {
        let set = |m: &Manifest| m.packs.iter().map(|p| p.hash).collect::<HashSet<_>>();
        set(m) == set(manifest)
    };
    let mut current = snapshot.clone();
    for attempt in 0..MAX_ATTEMPTS {
        if current.manifest.refs != manifest.refs || !same_packs(&current.manifest) {
            tracing::info!(repo = %repo, "prune superseded: refs or packs changed meanwhile");
            return Ok(None);
        }
        let mut next = current.manifest.clone();
        let now = unix_now();
        let keep = new_pack.as_ref().map(|p| p.hash);
        // Listed again after it was retired: check its files once listed.
        let relisted = keep.is_some_and(|k| next.retired.iter().any(|r| r.hash == k))
            || written.as_ref().is_some_and(|(_, existed)| *existed);
        let replaced: Vec<ObjectId> = next
            .packs
            .iter()
            .map(|p| p.hash)
            .filter(|h| Some(*h) != keep)
            .collect();
        next.retired.retain(|r| !replaced.contains(&r.hash));
        next.retired
            .extend(replaced.iter().map(|&hash| Retired { hash, at: now }));
        next.packs = new_pack.iter().cloned().collect();
        next.unreachable_since = None;
        next.prunes += 1;
        next.txns.record(&txn);
        let done = || async {
            if let (true, Some(((pack, index_path, data_path), _))) = (relisted, &written) {
                ensure_pack_stored(repos, repo, &pack.hash, index_path, data_path).await?;
            }
            Ok::<_, RepoError>(Some(Pruned {
                replaced: replaced.clone(),
                pack: new_pack.clone(),
                before,
                kept: new_pack.as_ref().map_or(0, |p| u64::from(p.objects)),
                at: now,
            }))
        };
        match repos
            .store
            .put(
                &key,
                Bytes::from(next.to_bytes()),
                PutMode::Update(current.etag.clone()),
            )
            .await
        {
            Ok(_) => return done().await,
            Err(StoreError::Precondition { .. }) => {
                crate::metrics::record(|m| m.manifest_conflicts.inc())
            }
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e.into()),
        }
        current = repos
            .snapshot(repo)
            .await?
            .ok_or_else(|| RepoError::NotFound(repo.clone()))?;
        if current.manifest.txns.has(&txn) {
            return done().await;
        }
        let backoff = 2u64.pow(attempt.min(6)) + u64::from(attempt) * 3;
        tokio::time::sleep(Duration::from_millis(backoff)).await;
    }
    tracing::warn!(repo = %repo, "prune gave up: too much contention on the manifest");
    Ok(None)
}

/// Prunes `repo` now (trying again a few times if pushes keep changing its refs), then
/// deletes the packs it replaced and those retired before it, whenever they were
/// written, and every other pack file no manifest lists that was written before the
/// pack the prune made (those of pushes that began before it, which are refused: see
/// [`prune`]). Packs of pushes checked after the prune are left; a retired pack pushed
/// again meanwhile is stored again by its push. Requests reading deleted packs at that
/// moment fail.
pub async fn prune_now(
    repos: &Repos,
    repo: &RepoName,
) -> Result<Option<(Pruned, Collected)>, RepoError> {
    for _ in 0..5 {
        let Some(pruned) = prune(repos, repo).await? else {
            continue;
        };
        // The store's own clock says when the pruned pack was written, just before the
        // prune landed (with no pack, the manifest says).
        let marker = match &pruned.pack {
            Some(pack) => pack_keys(repo, &pack.hash).1,
            None => repo.key("manifest"),
        };
        let landed = repos
            .store
            .head(&marker)
            .await?
            .modified
            .unwrap_or_else(SystemTime::now);
        // The prune's retired packs and older ones; not those a compaction retired since.
        let retired: HashSet<ObjectId> = match repos.snapshot(repo).await? {
            Some(s) => s
                .manifest
                .retired
                .iter()
                .filter(|r| r.at <= pruned.at)
                .map(|r| r.hash)
                .collect(),
            None => HashSet::new(),
        };
        let mut doomed: HashSet<ObjectId> = pruned.replaced.iter().copied().collect();
        doomed.extend(retired);
        let collected = collect_garbage_before(repos, repo, landed, &doomed).await?;
        return Ok(Some((pruned, collected)));
    }
    Ok(None)
}

/// A fault in a pack this process wrote (`what` names it).
fn corrupt(what: &str, message: String) -> RepoError {
    RepoError::Odb(OdbError::Corrupt {
        pack: what.into(),
        message,
    })
}

/// Indexes the pack arriving on `chunks` in `dir`, resolving every delta and hashing
/// every object, so that a fault in the copy cannot go unnoticed (the objects were
/// checked when they were pushed).
fn index_chunks(
    chunks: PackChunks,
    format: gix_hash::Kind,
    dir: &std::path::Path,
    what: &str,
) -> Result<super::indexer::Indexed, RepoError> {
    let mut reader = ChunkReader::new(chunks);
    index_pack(&mut reader, format, dir, None, Limits::default(), None).map_err(|e| {
        match reader.failure.take() {
            Some(e) => RepoError::Odb(e),
            None => corrupt(what, e.to_string()),
        }
    })
}

/// Indexes the pack of reachable objects arriving on `chunks` in `dir`, and checks it
/// on its own: closed under reachability, and holding every ref's object.
fn index_reachable(
    chunks: PackChunks,
    format: gix_hash::Kind,
    dir: &std::path::Path,
    tips: &[ObjectId],
) -> Result<(PackEntry, std::path::PathBuf, std::path::PathBuf), RepoError> {
    let corrupt = |message: String| corrupt("pruned pack", message);
    let indexed = index_chunks(chunks, format, dir, "pruned pack")?;
    let local = super::odb::LocalPack::open(&indexed.index_path, format)?;
    if let Err(fault) = super::walk::check_pack_closed(&local, &super::odb::NoObjects, u32::MAX)? {
        return Err(corrupt(fault.to_string()));
    }
    if let Some(tip) = tips.iter().find(|t| !local.contains(t)) {
        return Err(corrupt(format!("{tip} is missing")));
    }
    Ok((
        PackEntry {
            hash: indexed.hash,
            size: indexed.size,
            objects: local.num_objects(),
            bundle: false,
        },
        indexed.index_path,
        indexed.data_path,
    ))
}

/// Indexes the merged pack arriving on `chunks` in `dir`, and checks that it holds
/// exactly the `expected` objects.
fn index_merged(
    chunks: PackChunks,
    format: gix_hash::Kind,
    dir: &std::path::Path,
    expected: &HashSet<ObjectId>,
) -> Result<(PackEntry, std::path::PathBuf, std::path::PathBuf), RepoError> {
    let corrupt = |message: String| corrupt("merged pack", message);
    let indexed = index_chunks(chunks, format, dir, "merged pack")?;
    let index = gix_pack::index::File::at(&indexed.index_path, format)
        .map_err(|e| corrupt(e.to_string()))?;
    let count = index.num_objects();
    if count as usize != expected.len() || index.iter().any(|e| !expected.contains(&e.oid)) {
        return Err(corrupt(format!(
            "the merged pack holds {count} objects, the packs it replaces {}",
            expected.len()
        )));
    }
    Ok((
        PackEntry {
            hash: indexed.hash,
            size: indexed.size,
            objects: count,
            bundle: false,
        },
        indexed.index_path,
        indexed.data_path,
    ))
}

/// The pack data of [`PackChunks`] as a blocking reader; progress is dropped and the
/// first error is kept for the caller.
struct ChunkReader {
    chunks: PackChunks,
    current: Bytes,
    failure: Option<OdbError>,
}

impl ChunkReader {
    fn new(chunks: PackChunks) -> Self {
        ChunkReader {
            chunks,
            current: Bytes::new(),
            failure: None,
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                None => return Ok(0),
                Some(Ok(PackEvent::Data(bytes))) => self.current = bytes,
                Some(Ok(PackEvent::Progress(_))) => {}
                Some(Err(e)) => {
                    let message = e.to_string();
                    self.failure = Some(e);
                    return Err(std::io::Error::other(message));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// What garbage collection did.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// Keys deleted.
    pub deleted: Vec<Key>,
    /// Their bytes.
    pub bytes: u64,
    /// Unlisted pack files kept because they are younger than the grace period.
    pub young: usize,
}

fn packs_prefix(repo: &RepoName) -> String {
    format!("{}packs/", repo.prefix())
}

/// The pack hash in a key `<repo>.git/packs/pack-<hex>.<ext>`.
fn pack_hash_of(repo: &RepoName, key: &Key) -> Option<ObjectId> {
    let name = key.as_str().strip_prefix(&packs_prefix(repo))?;
    let hex = name.strip_prefix("pack-")?;
    let (hex, ext) = hex.split_once('.')?;
    if !matches!(ext, "pack" | "idx" | "bundle") {
        return None;
    }
    ObjectId::from_hex(hex.as_bytes()).ok()
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Deletes the pack files of `repo` that its manifest does not list and that have
/// been out of it for longer than `grace`. A pack's two files go together, and their
/// age counts from the latest of: when a compaction retired the pack, when either file
/// was last written (the index is written last, after the pack's upload finished; a
/// pack pushed again is written again). Files the store gives no time for, and files
/// that are not pack files, are left alone.
///
/// Each file is looked at once more right before it is deleted: one written again
/// since the listing (by a writer that is about to list it) is kept. A grace period
/// shorter than the longest request can delete a pack that a request still reads or a
/// push has stored but not yet listed; `0` is only for repositories nobody uses.
pub async fn collect_garbage(
    repos: &Repos,
    repo: &RepoName,
    grace: Duration,
) -> Result<Collected, RepoError> {
    let cutoff = SystemTime::now()
        .checked_sub(grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let collected = metered(
        "gc",
        collect_garbage_before(repos, repo, cutoff, &HashSet::new()),
        |c| !c.deleted.is_empty(),
    )
    .await;
    if let Ok(done) = &collected {
        crate::metrics::record(|m| m.bytes_deleted.inc_by(done.bytes));
    }
    collected
}

/// [`collect_garbage`] of the unlisted packs last touched before `cutoff`, and of the
/// unlisted packs `doomed` names whenever they were touched.
pub async fn collect_garbage_before(
    repos: &Repos,
    repo: &RepoName,
    cutoff: SystemTime,
    doomed: &HashSet<ObjectId>,
) -> Result<Collected, RepoError> {
    let forced = doomed;
    let listed = |m: &Manifest| -> HashSet<ObjectId> { m.packs.iter().map(|p| p.hash).collect() };
    let snapshot = repos
        .snapshot(repo)
        .await?
        .ok_or_else(|| RepoError::NotFound(repo.clone()))?;
    let live = listed(&snapshot.manifest);
    let metas: Vec<_> = repos.store.list(&packs_prefix(repo)).try_collect().await?;
    let older = |time: SystemTime| time < cutoff;
    // Every unlisted pack's files, and when the pack was last touched (`None`: unknown).
    let mut unlisted: std::collections::BTreeMap<ObjectId, (Vec<Key>, Option<SystemTime>)> =
        std::collections::BTreeMap::new();
    for meta in metas {
        let Some(hash) = pack_hash_of(repo, &meta.key) else {
            continue;
        };
        if live.contains(&hash) {
            continue;
        }
        let (keys, touched) = unlisted.entry(hash).or_insert_with(|| {
            let retired = snapshot
                .manifest
                .retired
                .iter()
                .find(|r| r.hash == hash)
                .map(|r| SystemTime::UNIX_EPOCH + Duration::from_secs(r.at));
            (Vec::new(), Some(retired.unwrap_or(SystemTime::UNIX_EPOCH)))
        });
        keys.push(meta.key);
        *touched = match (*touched, meta.modified) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    // Retired packs whose files are all gone need no record any more.
    let mut gone: HashSet<ObjectId> = snapshot
        .manifest
        .retired
        .iter()
        .map(|r| r.hash)
        .filter(|hash| !unlisted.contains_key(hash) && !live.contains(hash))
        .collect();
    let mut collected = Collected::default();
    let mut doomed = Vec::new();
    for (hash, (keys, touched)) in unlisted {
        if forced.contains(&hash) || touched.is_some_and(older) {
            doomed.push((hash, keys));
        } else {
            collected.young += keys.len();
        }
    }
    if doomed.is_empty() && gone.is_empty() {
        return Ok(collected);
    }
    // A manifest written since the listing may list one of them again (a pack pushed
    // twice): read it once more, right before deleting.
    let latest = repos
        .snapshot(repo)
        .await?
        .ok_or_else(|| RepoError::NotFound(repo.clone()))?;
    let live = listed(&latest.manifest);
    'packs: for (hash, keys) in doomed {
        if live.contains(&hash) {
            continue;
        }
        let mut bytes = 0;
        for key in &keys {
            match repos.store.head(key).await {
                Ok(meta) if forced.contains(&hash) || meta.modified.is_some_and(older) => {
                    bytes += meta.size;
                }
                Ok(_) => continue 'packs, // written again meanwhile: a writer wants it
                Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for key in keys {
            repos.store.delete(&key).await?;
            collected.deleted.push(key);
        }
        collected.bytes += bytes;
        gone.insert(hash);
    }
    forget_retired(repos, repo, latest, &gone).await?;
    Ok(collected)
}

/// Takes deleted packs off the manifest's retired list (best effort: a lost race
/// leaves them for the next collection).
async fn forget_retired(
    repos: &Repos,
    repo: &RepoName,
    snapshot: super::Snapshot,
    gone: &HashSet<ObjectId>,
) -> Result<(), RepoError> {
    repos
        .edit_manifest(repo, Some(snapshot), 4, |m| {
            let before = m.retired.len();
            m.retired.retain(|r| !gone.contains(&r.hash));
            m.retired.len() != before
        })
        .await?;
    Ok(())
}

/// What `fsck` found.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    pub packs: usize,
    pub objects: u64,
    pub refs: usize,
    /// Every fault found, one sentence each; empty when the repository is sound.
    pub problems: Vec<String>,
}

/// Checks `repo`: the manifest, every listed pack (files present, sizes, counts and
/// checksums as the manifest says, every object hashing to its id), closure (every
/// object an object refers to is in the live packs) and the refs (present, branches
/// pointing to commits, peeled values right).
pub async fn fsck(repos: &Repos, repo: &RepoName) -> Result<FsckReport, RepoError> {
    let snapshot = repos
        .snapshot(repo)
        .await?
        .ok_or_else(|| RepoError::NotFound(repo.clone()))?;
    let manifest = snapshot.manifest;
    let mut report = FsckReport {
        packs: manifest.packs.len(),
        refs: manifest.refs.len(),
        ..FsckReport::default()
    };
    if manifest.object_format.parse::<gix_hash::Kind>().is_err() {
        report.problems.push(format!(
            "manifest: object format {:?} is neither sha1 nor sha256",
            manifest.object_format
        ));
    }
    if let Err(why) = check_ref_name(&manifest.head) {
        report
            .problems
            .push(format!("manifest: HEAD {:?}: {why}", manifest.head));
    }
    for name in manifest.refs.keys() {
        if let Err(why) = check_ref_name(name) {
            report.problems.push(format!("ref {name:?}: {why}"));
        }
    }
    let mut seen = HashSet::new();
    for entry in &manifest.packs {
        if !seen.insert(entry.hash) {
            report
                .problems
                .push(format!("manifest lists pack {} twice", entry.hash));
        }
    }
    let mut sound = Vec::new();
    for entry in &manifest.packs {
        match check_pack_files(repos, repo, entry).await? {
            Ok(()) => sound.push(entry.clone()),
            Err(problem) => report.problems.push(problem),
        }
    }
    if sound.len() != manifest.packs.len() {
        // Objects cannot be checked over packs that are missing or damaged.
        return Ok(report);
    }
    let odb = Arc::new(repos.odb(repo, &manifest).await?);
    let manifest = Arc::new(manifest);
    let (objects, problems) = {
        let odb = odb.clone();
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || check_objects(&odb, &manifest))
            .await
            .expect("the object check does not panic")?
    };
    report.objects = objects;
    report.problems.extend(problems);
    Ok(report)
}

/// Checks that a pack's two files exist and agree with each other and the manifest.
async fn check_pack_files(
    repos: &Repos,
    repo: &RepoName,
    entry: &PackEntry,
) -> Result<Result<(), String>, RepoError> {
    let (pack_key, index_key) = pack_keys(repo, &entry.hash);
    let fetch = |key: Key| async move {
        match repos.store.get(&key).await {
            Ok(found) => Ok(Ok(found.bytes)),
            Err(StoreError::NotFound { .. }) => Ok(Err(format!("{key} is missing"))),
            Err(e) => Err(RepoError::from(e)),
        }
    };
    let pack = match fetch(pack_key.clone()).await? {
        Ok(bytes) => bytes,
        Err(problem) => return Ok(Err(problem)),
    };
    let index = match fetch(index_key.clone()).await? {
        Ok(bytes) => bytes,
        Err(problem) => return Ok(Err(problem)),
    };
    let entry = entry.clone();
    Ok(tokio::task::spawn_blocking(move || {
        let hash = entry.hash;
        if pack.len() < 32 || &pack[..4] != b"PACK" {
            return Err(format!("{pack_key} is not a pack file"));
        }
        if pack.len() as u64 != entry.size {
            return Err(format!(
                "{pack_key} has {} bytes, the manifest says {}",
                pack.len(),
                entry.size
            ));
        }
        let (body, trailer) = pack.split_at(pack.len() - hash.kind().len_in_bytes());
        if trailer != hash.as_bytes() {
            return Err(format!("{pack_key}: its trailer is not its name"));
        }
        let mut sum = super::hash::Hasher::new(hash.kind());
        sum.update(body);
        if sum.finalize().as_slice() != trailer {
            return Err(format!(
                "{pack_key}: checksum mismatch (the file is damaged)"
            ));
        }
        let index = gix_pack::index::File::from_data(
            index,
            std::path::PathBuf::from(index_key.as_str()),
            hash.kind(),
        )
        .map_err(|e| format!("{index_key} is not a pack index: {e}"))?;
        if index.pack_checksum() != hash {
            return Err(format!("{index_key} indexes another pack"));
        }
        let objects = u32::from_be_bytes(pack[8..12].try_into().expect("4 bytes"));
        if index.num_objects() != objects || objects != entry.objects {
            return Err(format!(
                "{pack_key}: the pack holds {objects} objects, its index lists {}, the \
                 manifest says {}",
                index.num_objects(),
                entry.objects
            ));
        }
        Ok(())
    })
    .await
    .expect("the pack check does not panic"))
}

/// Reads every object of every pack: it must hash to its id, and every object it
/// refers to must be in the repository. Then checks the refs.
fn check_objects(odb: &Odb, manifest: &Manifest) -> Result<(u64, Vec<String>), RepoError> {
    let mut problems = Vec::new();
    let mut buf = Vec::new();
    let mut distinct: HashSet<ObjectId> = HashSet::new();
    for entry in &manifest.packs {
        let pack = odb
            .packs()
            .iter()
            .find(|p| p.entry.hash == entry.hash)
            .expect("the odb opened every listed pack");
        // Every copy of an object, in every pack, is decoded from its own entry.
        for index in 0..pack.index.num_objects() {
            let id = pack.index.oid_at_index(index).to_owned();
            distinct.insert(id);
            let kind = match odb.read_at(pack, index, &mut buf) {
                Ok(kind) => kind,
                Err(e) => {
                    problems.push(format!("object {id} in pack {}: {e}", entry.hash));
                    continue;
                }
            };
            let actual = gix_object::compute_hash(odb.format(), kind, &buf).map_err(|e| {
                RepoError::Odb(OdbError::Corrupt {
                    pack: entry.hash.to_string(),
                    message: e.to_string(),
                })
            })?;
            if actual != id {
                problems.push(format!("{kind} {id} hashes to {actual} (damaged)"));
                continue;
            }
            let refers: Result<Vec<ObjectId>, OdbError> = match kind {
                Kind::Commit => parse_commit(id, &buf)
                    .map(|info| std::iter::once(info.tree).chain(info.parents).collect()),
                Kind::Tree => tree_children(id, &buf)
                    .map(|children| children.into_iter().map(|(c, _)| c).collect()),
                Kind::Tag => tag_target(id, &buf).map(|(target, _)| vec![target]),
                Kind::Blob => Ok(Vec::new()),
            };
            match refers {
                Ok(refers) => {
                    for missing in refers.iter().filter(|r| !odb.contains(r)) {
                        problems.push(format!(
                            "{kind} {id} refers to {missing}, which is in no live pack"
                        ));
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    for (name, value) in &manifest.refs {
        if !odb.contains(&value.id) {
            problems.push(format!(
                "ref {name} points to {}, which is missing",
                value.id
            ));
            continue;
        }
        match peel(odb, value.id) {
            Ok((target, kind)) => {
                if name.starts_with("refs/heads/") && kind != Kind::Commit {
                    problems.push(format!("branch {name} points to a {kind}, not a commit"));
                }
                let expected = (target != value.id).then_some(target);
                if value.peeled != expected {
                    problems.push(format!(
                        "ref {name}: the manifest's peeled value {:?} should be {:?}",
                        value.peeled.map(|p| p.to_string()),
                        expected.map(|p| p.to_string())
                    ));
                }
            }
            Err(e) => problems.push(format!("ref {name}: {e}")),
        }
    }
    Ok((distinct.len() as u64, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u8, objects: u32) -> PackEntry {
        PackEntry {
            hash: ObjectId::from_bytes_or_panic(&[n; 20]),
            size: u64::from(objects) * 100,
            objects,
            bundle: false,
        }
    }

    fn selected(packs: &[PackEntry]) -> Vec<u32> {
        let chosen = geometric_selection(packs, 2);
        let mut sizes: Vec<u32> = packs
            .iter()
            .filter(|p| chosen.contains(&p.hash))
            .map(|p| p.objects)
            .collect();
        sizes.sort();
        sizes
    }

    #[test]
    fn geometric_progressions_stay_and_small_packs_merge() {
        // Already a progression: nothing to do.
        assert!(selected(&[pack(1, 100), pack(2, 10), pack(3, 1)]).is_empty());
        assert!(selected(&[pack(1, 5)]).is_empty());
        assert!(selected(&[]).is_empty());
        // Two equal small packs merge; the big one stays.
        assert_eq!(selected(&[pack(1, 1000), pack(2, 3), pack(3, 3)]), [3, 3]);
        // The merged total (3+3+5=11) comes within a factor 2 of 20: it joins too.
        assert_eq!(
            selected(&[
                pack(1, 1000),
                pack(2, 20),
                pack(3, 5),
                pack(4, 3),
                pack(5, 3)
            ]),
            [3, 3, 5, 20]
        );
    }

    #[test]
    fn a_thousand_pushes_leave_a_logarithmic_number_of_packs() {
        let mut packs: Vec<PackEntry> = Vec::new();
        let mut next = 0u32;
        let mut fresh = |objects: u32| {
            next += 1;
            let mut bytes = [0u8; 20];
            bytes[..4].copy_from_slice(&next.to_be_bytes());
            PackEntry {
                hash: ObjectId::from_bytes_or_panic(&bytes),
                size: 0,
                objects,
                bundle: false,
            }
        };
        let mut most = 0;
        for _ in 0..1000 {
            packs.push(fresh(3));
            let chosen = geometric_selection(&packs, 2);
            if !chosen.is_empty() {
                let total = packs
                    .iter()
                    .filter(|p| chosen.contains(&p.hash))
                    .map(|p| p.objects)
                    .sum();
                packs.retain(|p| !chosen.contains(&p.hash));
                packs.push(fresh(total));
            }
            most = most.max(packs.len());
        }
        assert_eq!(packs.iter().map(|p| p.objects).sum::<u32>(), 3000);
        assert!(most <= 12, "{most} live packs at some point");
    }

    #[test]
    fn pack_keys_name_their_pack() {
        let repo = RepoName::new("org/r").expect("name");
        let hash = ObjectId::from_bytes_or_panic(&[7; 20]);
        let (pack_key, index_key) = pack_keys(&repo, &hash);
        assert_eq!(pack_hash_of(&repo, &pack_key), Some(hash));
        assert_eq!(pack_hash_of(&repo, &index_key), Some(hash));
        assert_eq!(pack_hash_of(&repo, &repo.key("manifest")), None);
        assert_eq!(pack_hash_of(&repo, &repo.key("packs/notes.txt")), None);
    }
}
