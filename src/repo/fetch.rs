//! What a fetch sends: shared by protocol v0/v1 and v2.
//!
//! A client with nothing in common gets the stored packs streamed verbatim (no
//! decompression, no delta search). Otherwise the objects it lacks are computed by a
//! walk from its wants, stopping at its haves, and written as a new pack.

use std::collections::HashSet;
use std::sync::Arc;

use gix_hash::ObjectId;
use tokio::sync::mpsc;

use super::manifest::Manifest;
use super::odb::{ObjectSource, Odb};
use super::packgen::{self, PackChunks, Stored};
use super::walk::{Boundary, Filter, ShallowUpdate, WalkLimits, objects_to_send_and_edge};

/// What the client asked for, after negotiation.
#[derive(Debug, Clone, Default)]
pub struct FetchRequest {
    pub wants: Vec<ObjectId>,
    /// The client's haves that this repository has (the common ones).
    pub common: Vec<ObjectId>,
    /// Send annotated tags that point into what is sent (`include-tag`).
    pub include_tag: bool,
    /// Shallow boundaries and the partial-clone filter.
    pub limits: WalkLimits,
    /// Client shallow commits whose history is now sent (`unshallow`).
    pub unshallow: Vec<ObjectId>,
    /// The client takes a thin pack: deltas on objects it has (`thin-pack`).
    pub thin_pack: bool,
}

/// Computes the shallow update of a shallow fetch (blocking work, run off the runtime).
pub async fn deepen(
    odb: Arc<Odb>,
    wants: Vec<ObjectId>,
    boundary: Boundary,
    client_shallow: HashSet<ObjectId>,
) -> Result<ShallowUpdate, super::OdbError> {
    tokio::task::spawn_blocking(move || {
        super::walk::shallow_update(odb.as_ref(), &wants, &boundary, &client_shallow)
    })
    .await
    .expect("the deepen walk does not panic")
}

/// The commit a `deepen-not` argument names, resolved as git does (`expand_ref`):
/// the full name, then under `refs/`, `refs/tags/`, `refs/heads/`, `refs/remotes/`.
pub fn resolve_ref(manifest: &Manifest, name: &str) -> Option<ObjectId> {
    [
        name.to_owned(),
        format!("refs/{name}"),
        format!("refs/tags/{name}"),
        format!("refs/heads/{name}"),
        format!("refs/remotes/{name}"),
        format!("refs/remotes/{name}/HEAD"),
    ]
    .iter()
    .find_map(|full| manifest.refs.get(full).map(|r| r.id))
}

/// Reads the patterns of each `sparse:oid=` filter of `filter` from the blob it names:
/// an object id, or `<rev>:<path>` with `<rev>` a ref (as `deepen-not` names one) or a
/// commit id. `Err` is the refusal git shows its user.
pub fn read_sparse_patterns(
    odb: &Odb,
    manifest: &Manifest,
    filter: &mut Filter,
) -> Result<(), String> {
    let mut buf = Vec::new();
    for sparse in filter.sparse_mut() {
        let unable = || format!("unable to access sparse blob in '{}'", sparse.name);
        let blob = sparse_blob(odb, manifest, &sparse.name)
            .map_err(|e| format!("{}: {e}", unable()))?
            .ok_or_else(unable)?;
        let unparsable = || format!("unable to parse sparse filter data in {blob}");
        match odb.size(&blob).map_err(|e| e.to_string())? {
            Some(size) if size <= super::sparse::MAX_BYTES as u64 => {}
            Some(_) => {
                return Err(format!(
                    "{}: larger than {} bytes",
                    unparsable(),
                    super::sparse::MAX_BYTES
                ));
            }
            None => return Err(unable()),
        }
        match odb.read(&blob, &mut buf).map_err(|e| e.to_string())? {
            Some(gix_object::Kind::Blob) => {}
            _ => return Err(unparsable()),
        }
        sparse.blob = Some(blob);
        sparse.patterns = Arc::new(super::sparse::Patterns::parse(&buf));
    }
    Ok(())
}

/// The object a `sparse:oid=` blob-ish names, if the repository has it.
fn sparse_blob(
    odb: &Odb,
    manifest: &Manifest,
    name: &str,
) -> Result<Option<ObjectId>, super::OdbError> {
    let Some((rev, path)) = name.split_once(':') else {
        return Ok(ObjectId::from_hex(name.as_bytes())
            .ok()
            .filter(|id| odb.contains(id)));
    };
    let tip = match resolve_ref(manifest, rev) {
        Some(id) => id,
        None => match ObjectId::from_hex(rev.as_bytes()) {
            Ok(id) if odb.contains(&id) => id,
            _ => return Ok(None),
        },
    };
    let mut buf = Vec::new();
    let tree = match super::walk::peel(odb, tip)? {
        (commit, gix_object::Kind::Commit) => {
            super::odb::read_required(odb, &commit, &mut buf)?;
            super::walk::parse_commit(commit, &buf)?.tree
        }
        (tree, gix_object::Kind::Tree) => tree,
        _ => return Ok(None),
    };
    Ok(super::walk::entry_at(odb, tree, path)?.map(|(_, id)| id))
}

/// The wants the repository does not have, which a request must refuse.
pub fn unknown_wants(odb: &Odb, wants: &[ObjectId]) -> Vec<ObjectId> {
    wants.iter().filter(|w| !odb.contains(w)).copied().collect()
}

/// Every ref value of `manifest`, and the objects annotated tags peel to.
pub fn ref_tips(manifest: &Manifest) -> HashSet<ObjectId> {
    manifest
        .refs
        .values()
        .flat_map(|r| std::iter::once(r.id).chain(r.peeled))
        .collect()
}

/// Every object the refs of `manifest` reach (blocking work: a walk of everything).
pub fn reachable(odb: &Odb, manifest: &Manifest) -> Result<HashSet<ObjectId>, super::OdbError> {
    let tips: Vec<ObjectId> = manifest.refs.values().map(|r| r.id).collect();
    let ids = super::walk::objects_to_send(odb, &tips, &[], &WalkLimits::default())?;
    Ok(ids.into_iter().collect())
}

/// The haves the repository has, in the order given.
pub fn common_haves(odb: &Odb, haves: &[ObjectId]) -> Vec<ObjectId> {
    haves.iter().filter(|h| odb.contains(h)).copied().collect()
}

/// Whether every want (peeled to a commit) has one of `common` among its ancestors:
/// git's `ok_to_give_up`, the condition for saying `ready`. Walks newest first and gives
/// up on a want once past the oldest common commit (with a day of slack for clocks).
pub fn wants_reach_common(
    odb: &Odb,
    wants: &[ObjectId],
    common: &[ObjectId],
) -> Result<bool, super::OdbError> {
    use std::collections::BinaryHeap;
    let mut buf = Vec::new();
    let mut common_commits = HashSet::new();
    let mut oldest = i64::MAX;
    for id in common {
        if let (id, gix_object::Kind::Commit) = super::walk::peel(odb, *id)? {
            super::odb::read_required(odb, &id, &mut buf)?;
            oldest = oldest.min(super::walk::parse_commit(id, &buf)?.time);
            common_commits.insert(id);
        }
    }
    const SLACK: i64 = 86_400;
    // Commits known to reach a common commit, shared across wants.
    let mut reaching: HashSet<ObjectId> = common_commits.clone();
    for want in wants {
        let (start, kind) = super::walk::peel(odb, *want)?;
        if kind != gix_object::Kind::Commit {
            continue;
        }
        let mut seen = HashSet::new();
        let mut queue = BinaryHeap::new();
        queue.push((i64::MAX, start));
        let mut found = false;
        while let Some((time, id)) = queue.pop() {
            if reaching.contains(&id) {
                found = true;
                break;
            }
            if time.saturating_add(SLACK) < oldest || !seen.insert(id) {
                continue;
            }
            super::odb::read_required(odb, &id, &mut buf)?;
            for parent in super::walk::parse_commit(id, &buf)?.parents {
                super::odb::read_required(odb, &parent, &mut buf)?;
                let time = super::walk::parse_commit(parent, &buf)?.time;
                queue.push((time, parent));
            }
        }
        if !found {
            return Ok(false);
        }
        reaching.insert(start);
    }
    Ok(true)
}

/// The haves git's upload-pack acknowledges in a protocol v2 round: every common
/// have, in order, except a commit that an earlier have of the same request already
/// implies (git marks each have commit and its parents as known to the client, and
/// acknowledges only haves not yet marked).
pub fn v2_acknowledged(odb: &Odb, common: &[ObjectId]) -> Result<Vec<ObjectId>, super::OdbError> {
    let mut known: HashSet<ObjectId> = HashSet::new();
    let mut acks = Vec::new();
    let mut buf = Vec::new();
    for id in common {
        match odb.read(id, &mut buf)? {
            Some(gix_object::Kind::Commit) => {
                let implied = !known.insert(*id);
                known.extend(super::walk::parse_commit(*id, &buf)?.parents);
                if !implied {
                    acks.push(*id);
                }
            }
            Some(_) => acks.push(*id),
            None => {}
        }
    }
    Ok(acks)
}

/// Whether `request` gets every stored object (before its filter): a client with
/// nothing that wants every ref, while the packs hold no object that no ref reaches.
pub fn gets_everything(manifest: &Manifest, request: &FetchRequest) -> bool {
    let wants: HashSet<&ObjectId> = request.wants.iter().collect();
    let wants_every_ref = manifest.refs.values().all(|r| wants.contains(&r.id));
    let shallow = !request.limits.shallow.is_empty() || !request.limits.client_shallow.is_empty();
    request.common.is_empty() && !shallow && wants_every_ref && manifest.unreachable_since.is_none()
}

/// Starts producing the pack for `request`.
pub fn pack(odb: Arc<Odb>, manifest: &Manifest, request: FetchRequest) -> PackChunks {
    // Everything stored is what [`gets_everything`] says, sent as it is stored; with
    // `blob:none`, every stored commit, tree and tag, when every want leads to a commit
    // (a wanted blob or tree is sent whatever the filter). Otherwise, and for a client
    // that wants some refs only (`--single-branch`, `--no-tags`), what the wants reach
    // is walked and sent.
    let everything = gets_everything(manifest, &request);
    let shallow = !request.limits.shallow.is_empty() || !request.limits.client_shallow.is_empty();
    if everything && request.limits.filter == Filter::None {
        return packgen::stream_stored_packs(odb, Stored::All);
    }
    let without_blobs = everything && request.limits.filter == Filter::BlobNone;
    let tags: Vec<(ObjectId, ObjectId)> = if request.include_tag {
        let mut tags: Vec<_> = manifest
            .refs
            .values()
            .filter_map(|r| r.peeled.map(|p| (r.id, p)))
            .collect();
        tags.sort();
        tags.dedup();
        tags
    } else {
        Vec::new()
    };
    let (tx, rx) = mpsc::channel(4);
    let request_span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _in = request_span.enter();
        if without_blobs && leads_to_commits(odb.as_ref(), &request.wants) {
            if let Err(e) = packgen::copy_stored(odb.as_ref(), Stored::WithoutBlobs, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
            return;
        }
        // An unshallowed commit is on the client, its parents are not.
        let mut wants = request.wants.clone();
        let mut buf = Vec::new();
        for id in &request.unshallow {
            match super::odb::read_required(odb.as_ref(), id, &mut buf)
                .and_then(|_| super::walk::parse_commit(*id, &buf))
            {
                Ok(info) => wants.extend(info.parents),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        // The client has its unshallowed commits (not their parents).
        let mut haves = request.common.clone();
        haves.extend(request.unshallow.iter().copied());
        // Deltas on objects the client has are sent as they are stored when it takes a
        // thin pack, unless it is shallow or filtered (it may lack such a base).
        let thin = request.thin_pack && !shallow && request.limits.filter == Filter::None;
        let walk = tracing::info_span!("walk").entered();
        let walked = objects_to_send_and_edge(odb.as_ref(), &wants, &haves, &request.limits);
        drop(walk);
        let _pack = tracing::info_span!("pack").entered();
        let result = walked.and_then(|(mut ids, edge)| {
            let client_has = if thin { edge } else { HashSet::new() };
            let mut sent: HashSet<ObjectId> = ids.iter().copied().collect();
            for (tag, target) in tags {
                if sent.contains(&target) {
                    add_tag_chain(odb.as_ref(), tag, &mut sent, &mut ids)?;
                }
            }
            packgen::write_objects(odb.as_ref(), &ids, &client_has, &tx)
        });
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// A pack of every object `tips` reach, walked and written (never stored entries as
/// they are): what pruning keeps.
pub fn pack_of_reachable(odb: Arc<Odb>, tips: Vec<ObjectId>) -> PackChunks {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let result = super::walk::objects_to_send(odb.as_ref(), &tips, &[], &WalkLimits::default())
            .and_then(|ids| packgen::write_objects(odb.as_ref(), &ids, &HashSet::new(), &tx));
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// Whether every want is a commit or a tag of one: then a filter that drops blobs
/// drops no object the client named.
fn leads_to_commits(odb: &Odb, wants: &[ObjectId]) -> bool {
    wants.iter().all(|id| {
        matches!(
            super::walk::peel(odb, *id),
            Ok((_, gix_object::Kind::Commit))
        )
    })
}

/// Adds `tag` and the tags it points to (a tag of a tag) to what is sent.
fn add_tag_chain(
    odb: &Odb,
    tag: ObjectId,
    sent: &mut HashSet<ObjectId>,
    ids: &mut Vec<ObjectId>,
) -> Result<(), super::OdbError> {
    let mut buf = Vec::new();
    let mut current = tag;
    while sent.insert(current) {
        ids.push(current);
        match odb.read(&current, &mut buf)? {
            Some(gix_object::Kind::Tag) => current = super::walk::tag_target(current, &buf)?.0,
            _ => break,
        }
    }
    Ok(())
}
