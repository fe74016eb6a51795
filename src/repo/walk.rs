//! Graph walks over objects: what a fetch must send, whether a push is connected,
//! ancestry and tag peeling.
//!
//! All of these read objects, so they are blocking (see [`super::odb`]).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use gix_hash::ObjectId;
use gix_object::Kind;

use super::odb::{LocalPack, ObjectSource, OdbError, read_required};
use super::sparse::Patterns;

/// The parts of a commit a walk needs.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub tree: ObjectId,
    pub parents: Vec<ObjectId>,
    /// Committer time, seconds since the epoch.
    pub time: i64,
}

fn bad(id: ObjectId, kind: Kind, e: impl std::fmt::Display) -> OdbError {
    OdbError::BadObject {
        id,
        kind,
        message: e.to_string(),
    }
}

pub fn parse_commit(id: ObjectId, data: &[u8]) -> Result<CommitInfo, OdbError> {
    let commit =
        gix_object::CommitRef::from_bytes(data, id.kind()).map_err(|e| bad(id, Kind::Commit, e))?;
    // "Name <email> 1700000000 +0100": the time is the second field from the end.
    let time = commit
        .committer
        .rsplitn(3, |b| *b == b' ')
        .nth(1)
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    Ok(CommitInfo {
        tree: commit.tree(),
        parents: commit.parents().collect(),
        time,
    })
}

/// The ids a tree refers to that a pack must carry: subtrees and blobs, not the
/// commits of submodules.
pub fn tree_children(id: ObjectId, data: &[u8]) -> Result<Vec<(ObjectId, bool)>, OdbError> {
    carried_entries(id, data, |e| (e.oid.to_owned(), e.mode.is_tree()))
}

/// `each` of the entries of tree `id` that a pack must carry (not submodule commits).
fn carried_entries<T>(
    id: ObjectId,
    data: &[u8],
    each: impl Fn(&gix_object::tree::EntryRef<'_>) -> T,
) -> Result<Vec<T>, OdbError> {
    let tree =
        gix_object::TreeRef::from_bytes(data, id.kind()).map_err(|e| bad(id, Kind::Tree, e))?;
    Ok(tree
        .entries
        .iter()
        .filter(|e| !e.mode.is_commit())
        .map(each)
        .collect())
}

pub fn tag_target(id: ObjectId, data: &[u8]) -> Result<(ObjectId, Kind), OdbError> {
    let tag = gix_object::TagRef::from_bytes(data, id.kind()).map_err(|e| bad(id, Kind::Tag, e))?;
    Ok((tag.target(), tag.target_kind))
}

/// Follows annotated tags from `id` to the first object that is not a tag.
pub fn peel(source: &dyn ObjectSource, id: ObjectId) -> Result<(ObjectId, Kind), OdbError> {
    let mut buf = Vec::new();
    let mut current = id;
    for _ in 0..64 {
        match read_required(source, &current, &mut buf)? {
            Kind::Tag => current = tag_target(current, &buf)?.0,
            kind => return Ok((current, kind)),
        }
    }
    Err(bad(id, Kind::Tag, "tag chain longer than 64"))
}

#[derive(PartialEq, Eq)]
struct Queued {
    time: i64,
    id: ObjectId,
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time
            .cmp(&other.time)
            .then_with(|| self.id.cmp(&other.id))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// How a `deepen <depth>` fetch changes the client's shallow boundary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShallowUpdate {
    /// Commits the client is to record as shallow (`shallow <id>`).
    pub shallow: Vec<ObjectId>,
    /// Client shallow commits whose history it now receives (`unshallow <id>`).
    pub unshallow: Vec<ObjectId>,
    /// Every commit at the boundary: sent without its parents.
    pub boundary: HashSet<ObjectId>,
}

impl ShallowUpdate {
    /// Fills in what to tell the client, as git's `send_shallow` and `send_unshallow`
    /// do: boundary commits it does not already have as shallow, and its shallow
    /// commits that are now `within` the history it gets.
    fn report(
        mut self,
        client_shallow: &HashSet<ObjectId>,
        within: impl Fn(&ObjectId) -> bool,
    ) -> Self {
        self.shallow = self
            .boundary
            .iter()
            .filter(|id| !client_shallow.contains(*id))
            .copied()
            .collect();
        self.shallow.sort();
        self.unshallow = client_shallow
            .iter()
            .filter(|id| within(id))
            .copied()
            .collect();
        self.unshallow.sort();
        self
    }
}

/// The shallow boundary `depth` commits deep from `wants`, as git's
/// `get_shallow_commits` draws it: a wanted commit is at depth 1, and commits at depth
/// `depth` are sent without their parents.
pub fn deepen(
    source: &dyn ObjectSource,
    wants: &[ObjectId],
    depth: u32,
    client_shallow: &HashSet<ObjectId>,
) -> Result<ShallowUpdate, OdbError> {
    let mut buf = Vec::new();
    let mut queue = std::collections::VecDeque::new();
    let mut visited: HashSet<ObjectId> = HashSet::new();
    for want in wants {
        if let (id, Kind::Commit) = peel(source, *want)? {
            queue.push_back((id, 1u32));
        }
    }
    let mut update = ShallowUpdate::default();
    let mut within: HashSet<ObjectId> = HashSet::new();
    // Breadth first, so each commit is first met at its smallest depth.
    while let Some((id, d)) = queue.pop_front() {
        if !visited.insert(id) {
            continue;
        }
        if d >= depth {
            update.boundary.insert(id);
            continue;
        }
        within.insert(id);
        read_required(source, &id, &mut buf)?;
        for parent in parse_commit(id, &buf)?.parents {
            queue.push_back((parent, d + 1));
        }
    }
    Ok(update.report(client_shallow, |id| within.contains(id)))
}

/// The shallow boundary of a `deepen-since`/`deepen-not` fetch, as git's
/// `get_shallow_commits_by_rev_list` draws it: the commits `rev-list <wants>
/// --max-age=<since> --not <not>` lists are sent, and those of them with a parent
/// outside the list are the new boundary.
pub fn deepen_by_rev_list(
    source: &dyn ObjectSource,
    wants: &[ObjectId],
    since: Option<i64>,
    not: &[ObjectId],
    client_shallow: &HashSet<ObjectId>,
) -> Result<ShallowUpdate, OdbError> {
    let mut buf = Vec::new();
    let commit_of = |id: ObjectId| -> Result<Option<ObjectId>, OdbError> {
        Ok(match peel(source, id)? {
            (id, Kind::Commit) => Some(id),
            _ => None,
        })
    };
    // Everything reachable from the excluded refs.
    let mut excluded: HashSet<ObjectId> = HashSet::new();
    let mut stack: Vec<ObjectId> = Vec::new();
    for id in not {
        stack.extend(commit_of(*id)?);
    }
    while let Some(id) = stack.pop() {
        if excluded.insert(id) {
            read_required(source, &id, &mut buf)?;
            stack.extend(parse_commit(id, &buf)?.parents);
        }
    }
    // The listed commits: reachable from the wants, not excluded, and (with `since`)
    // not older than it; a walk does not go past a commit it leaves out for its age.
    let mut included: HashMap<ObjectId, Vec<ObjectId>> = HashMap::new();
    let mut stack: Vec<ObjectId> = Vec::new();
    for id in wants {
        stack.extend(commit_of(*id)?);
    }
    let mut seen = HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) || excluded.contains(&id) {
            continue;
        }
        read_required(source, &id, &mut buf)?;
        let info = parse_commit(id, &buf)?;
        if since.is_some_and(|since| info.time < since) {
            continue;
        }
        stack.extend(info.parents.iter().copied());
        included.insert(id, info.parents);
    }
    if included.is_empty() {
        return Err(OdbError::NothingSelected);
    }
    let mut update = ShallowUpdate::default();
    for (id, parents) in &included {
        if parents.iter().any(|p| !included.contains_key(p)) {
            update.boundary.insert(*id);
        }
    }
    let boundary = update.boundary.clone();
    Ok(update.report(client_shallow, |id| {
        included.contains_key(id) && !boundary.contains(id)
    }))
}

/// Where a shallow fetch draws its new boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boundary {
    /// `depth` commits from the wants.
    Depth(u32),
    /// `depth` commits below the client's current shallow commits.
    RelativeDepth(u32),
    /// By date and excluded refs.
    RevList {
        since: Option<i64>,
        not: Vec<ObjectId>,
    },
}

/// The shallow update `boundary` asks for.
pub fn shallow_update(
    source: &dyn ObjectSource,
    wants: &[ObjectId],
    boundary: &Boundary,
    client_shallow: &HashSet<ObjectId>,
) -> Result<ShallowUpdate, OdbError> {
    match boundary {
        Boundary::Depth(depth) => deepen(source, wants, *depth, client_shallow),
        Boundary::RelativeDepth(depth) => {
            let mut heads: Vec<ObjectId> = client_shallow.iter().copied().collect();
            heads.sort();
            deepen(source, &heads, depth.saturating_add(1), client_shallow)
        }
        Boundary::RevList { since, not } => {
            deepen_by_rev_list(source, wants, *since, not, client_shallow)
        }
    }
}

/// What limits a fetch's object walk beyond the client's haves.
#[derive(Debug, Clone, Default)]
pub struct WalkLimits {
    /// Commits sent without their parents: the new shallow boundary.
    pub shallow: HashSet<ObjectId>,
    /// The client's shallow commits: its history stops there, so the client's side of
    /// the walk does not go past them.
    pub client_shallow: HashSet<ObjectId>,
    /// Which blobs to leave out.
    pub filter: Filter,
}

/// An object filter of a partial clone ([rev-list `--filter`]), as far as supported.
/// Objects the client wants by name are sent whatever the filter says.
///
/// [rev-list `--filter`]: https://git-scm.com/docs/git-rev-list#Documentation/git-rev-list.txt---filterltfilter-specgt
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Filter {
    #[default]
    None,
    /// `blob:none`: no blobs.
    BlobNone,
    /// `blob:limit=<n>`: no blobs of `n` bytes or more.
    BlobLimit(u64),
    /// `tree:<depth>`: no trees or blobs `depth` or more levels below a root tree.
    TreeDepth(u64),
    /// `object:type=<type>`: only objects of this type.
    ObjectType(Kind),
    /// `sparse:oid=<blob-ish>`: only blobs at paths the sparse-checkout patterns of the
    /// named blob select (every tree is sent).
    Sparse(Sparse),
    /// `combine:<a>+<b>...`: only what every filter keeps.
    Combine(Vec<Filter>),
}

/// A `sparse:oid=` filter: the blob it names, and once read, its patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sparse {
    /// The blob-ish as the client wrote it: an object id or `<rev>:<path>`.
    pub name: String,
    /// The blob `name` resolved to.
    pub blob: Option<ObjectId>,
    pub patterns: Arc<Patterns>,
}

impl Filter {
    /// Parses a filter spec; `Err` names what is not supported.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let invalid = || format!("invalid filter {spec:?}");
        if let Some(parts) = spec.strip_prefix("combine:") {
            // One level, a bounded number of parts: a filter spec must not be able to
            // make the server recurse or work without bound.
            let parts: Vec<&str> = parts.split('+').collect();
            if parts.len() > MAX_COMBINED {
                return Err(format!("more than {MAX_COMBINED} filters in combine:"));
            }
            let filters = parts
                .into_iter()
                .map(|part| {
                    let part = percent_decode(part).ok_or_else(invalid)?;
                    if part.starts_with("combine:") {
                        return Err("combine: inside combine: is not supported".to_owned());
                    }
                    Filter::parse(&part)
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Filter::Combine(filters));
        }
        if spec == "blob:none" {
            return Ok(Filter::BlobNone);
        }
        if let Some(limit) = spec.strip_prefix("blob:limit=") {
            let (digits, unit) = match limit.char_indices().last() {
                Some((i, c)) if c.is_ascii_alphabetic() => (&limit[..i], c.to_ascii_lowercase()),
                _ => (limit, ' '),
            };
            let scale: u64 = match unit {
                ' ' => 1,
                'k' => 1 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => return Err(invalid()),
            };
            let n: u64 = digits.parse().map_err(|_| invalid())?;
            return Ok(Filter::BlobLimit(n.saturating_mul(scale)));
        }
        if let Some(depth) = spec.strip_prefix("tree:") {
            return depth.parse().map(Filter::TreeDepth).map_err(|_| invalid());
        }
        if let Some(name) = spec.strip_prefix("sparse:oid=") {
            if name.is_empty() {
                return Err(invalid());
            }
            return Ok(Filter::Sparse(Sparse {
                name: name.to_owned(),
                blob: None,
                patterns: Arc::new(Patterns::parse(b"")),
            }));
        }
        if let Some(kind) = spec.strip_prefix("object:type=") {
            return Kind::from_bytes(kind.as_bytes())
                .map(Filter::ObjectType)
                .map_err(|_| invalid());
        }
        Err(format!(
            "the filter {spec:?} is not supported by this server (blob:none, blob:limit, \
             tree, object:type, sparse:oid and combine are)"
        ))
    }

    /// The `sparse:oid=` filters of this filter, in order.
    pub fn sparse_mut(&mut self) -> Vec<&mut Sparse> {
        match self {
            Filter::Sparse(sparse) => vec![sparse],
            Filter::Combine(all) => all.iter_mut().flat_map(Filter::sparse_mut).collect(),
            _ => Vec::new(),
        }
    }

    /// The `sparse:oid=` filters of this filter, in order.
    pub fn sparse(&self) -> Vec<&Sparse> {
        match self {
            Filter::Sparse(sparse) => vec![sparse],
            Filter::Combine(all) => all.iter().flat_map(Filter::sparse).collect(),
            _ => Vec::new(),
        }
    }

    /// Whether a commit or tag is sent.
    fn keeps(&self, kind: Kind) -> bool {
        match self {
            Filter::ObjectType(t) => *t == kind,
            Filter::Combine(all) => all.iter().all(|f| f.keeps(kind)),
            _ => true,
        }
    }

    /// Whether a tree `depth` levels below a root tree is sent (a root tree is at 0).
    fn keeps_tree(&self, depth: u64) -> bool {
        match self {
            Filter::TreeDepth(n) => depth < *n,
            Filter::Combine(all) => all.iter().all(|f| f.keeps_tree(depth)),
            other => other.keeps(Kind::Tree),
        }
    }

    /// Whether anything `depth` levels below a root tree can be sent, so that trees
    /// above it must be read.
    fn reaches(&self, depth: u64) -> bool {
        match self {
            Filter::TreeDepth(n) => depth < *n,
            Filter::ObjectType(t) => matches!(t, Kind::Tree | Kind::Blob),
            Filter::Combine(all) => all.iter().all(|f| f.reaches(depth)),
            _ => true,
        }
    }

    /// Whether a blob `depth` levels below a root tree is sent; `size` reads it,
    /// `selects` says whether some patterns select its path.
    fn keeps_blob(
        &self,
        depth: u64,
        size: &mut dyn FnMut() -> Result<u64, OdbError>,
        selects: &dyn Fn(&Patterns) -> bool,
    ) -> Result<bool, OdbError> {
        Ok(match self {
            Filter::None => true,
            Filter::BlobNone => false,
            Filter::BlobLimit(limit) => size()? < *limit,
            Filter::TreeDepth(n) => depth < *n,
            Filter::ObjectType(t) => *t == Kind::Blob,
            Filter::Sparse(sparse) => selects(&sparse.patterns),
            Filter::Combine(all) => {
                for f in all {
                    if !f.keeps_blob(depth, size, selects)? {
                        return Ok(false);
                    }
                }
                true
            }
        })
    }
}

/// Most filters one `combine:` may hold.
const MAX_COMBINED: usize = 16;

/// `%XX` decoding, as `combine:` filter parts are encoded.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The objects a client that has `haves` needs to complete `wants`: every object
/// reachable from `wants` and not from `haves`, where "not reachable from haves" is
/// judged as git does it: commits by a full walk, trees and blobs by excluding those of
/// the uninteresting commits at the edge of the walk.
///
/// `haves` must be objects the source has. Returned order: commits newest first, then
/// tags, trees and blobs.
pub fn objects_to_send(
    source: &dyn ObjectSource,
    wants: &[ObjectId],
    haves: &[ObjectId],
    limits: &WalkLimits,
) -> Result<Vec<ObjectId>, OdbError> {
    Ok(objects_to_send_and_edge(source, wants, haves, limits)?.0)
}

/// [`objects_to_send`], and the trees and blobs of the client's commits at the edge
/// of what is sent: objects the client has, which a thin pack may use as delta bases.
pub fn objects_to_send_and_edge(
    source: &dyn ObjectSource,
    wants: &[ObjectId],
    haves: &[ObjectId],
    limits: &WalkLimits,
) -> Result<(Vec<ObjectId>, HashSet<ObjectId>), OdbError> {
    let mut buf = Vec::new();
    let mut out: Vec<ObjectId> = Vec::new();
    let mut sent: HashSet<ObjectId> = HashSet::new();
    let mut roots: Vec<(ObjectId, bool)> = Vec::new(); // trees and blobs wanted directly
    let mut commits: HashMap<ObjectId, (CommitInfo, bool)> = HashMap::new(); // id -> (info, uninteresting)
    let mut queue = BinaryHeap::new();
    let mut interesting_queued = 0usize;

    let load = |id: ObjectId, buf: &mut Vec<u8>| -> Result<CommitInfo, OdbError> {
        match read_required(source, &id, buf)? {
            Kind::Commit => parse_commit(id, buf),
            kind => Err(bad(id, kind, "expected a commit")),
        }
    };

    let popped: HashSet<ObjectId> = HashSet::new();
    // Objects wanted by name, and what wanted tags point to: sent whatever the filter.
    let mut provided: HashSet<ObjectId> = HashSet::new();
    // Seed: peel wants (sending the tags on the way) and haves.
    for (ids, uninteresting) in [(wants, false), (haves, true)] {
        for &start in ids {
            let mut id = start;
            loop {
                if !uninteresting {
                    provided.insert(id);
                }
                let kind = read_required(source, &id, &mut buf)?;
                match kind {
                    Kind::Tag => {
                        if !uninteresting && sent.insert(id) {
                            out.push(id);
                        }
                        id = tag_target(id, &buf)?.0;
                    }
                    Kind::Commit => {
                        let info = parse_commit(id, &buf)?;
                        match commits.get_mut(&id) {
                            Some(known) => {
                                if uninteresting && !known.1 {
                                    mark_uninteresting(
                                        id,
                                        &mut commits,
                                        &popped,
                                        &mut interesting_queued,
                                        &limits.client_shallow,
                                    );
                                }
                            }
                            None => {
                                if !uninteresting {
                                    interesting_queued += 1;
                                }
                                queue.push(Queued {
                                    time: info.time,
                                    id,
                                });
                                commits.insert(id, (info, uninteresting));
                            }
                        }
                        break;
                    }
                    Kind::Tree => {
                        if !uninteresting {
                            roots.push((id, true));
                        }
                        break;
                    }
                    Kind::Blob => {
                        if !uninteresting {
                            roots.push((id, false));
                        }
                        break;
                    }
                }
            }
        }
    }

    let mut popped = popped;
    // Commit walk, newest first, until only uninteresting commits are queued.
    let mut result_commits = Vec::new();
    while let Some(Queued { id, .. }) = queue.pop() {
        let (info, uninteresting) = commits[&id].clone();
        if !popped.insert(id) {
            continue;
        }
        if !uninteresting {
            interesting_queued = interesting_queued.saturating_sub(1);
        }
        if uninteresting && interesting_queued == 0 {
            // Nothing interesting is left to walk. What remains queued is the client's;
            // its marks still reach the commits the walk already knows (a have whose
            // date sorts it late can cover commits popped as interesting).
            let rest = std::iter::once(id).chain(queue.drain().map(|q| q.id));
            let rest: Vec<ObjectId> = rest.collect();
            for id in rest {
                if limits.client_shallow.contains(&id) {
                    continue;
                }
                let parents = commits[&id].0.parents.clone();
                for parent in parents {
                    mark_uninteresting(
                        parent,
                        &mut commits,
                        &popped,
                        &mut interesting_queued,
                        &limits.client_shallow,
                    );
                }
            }
            break;
        }
        let stop = if uninteresting {
            limits.client_shallow.contains(&id)
        } else {
            limits.shallow.contains(&id)
        };
        let parents: &[ObjectId] = if stop { &[] } else { &info.parents };
        for parent in parents {
            match commits.get_mut(parent) {
                Some(known) => {
                    if uninteresting && !known.1 {
                        mark_uninteresting(
                            *parent,
                            &mut commits,
                            &popped,
                            &mut interesting_queued,
                            &limits.client_shallow,
                        );
                    }
                }
                None => {
                    let parent_info = load(*parent, &mut buf)?;
                    if !uninteresting {
                        interesting_queued += 1;
                    }
                    queue.push(Queued {
                        time: parent_info.time,
                        id: *parent,
                    });
                    commits.insert(*parent, (parent_info, uninteresting));
                }
            }
        }
        if !uninteresting {
            result_commits.push(id);
        }
    }
    result_commits.retain(|id| !commits[id].1);

    // Trees and blobs of the uninteresting edge commits are on the client already.
    let mut excluded: HashSet<ObjectId> = HashSet::new();
    let edges: HashSet<ObjectId> = result_commits
        .iter()
        .flat_map(|id| commits[id].0.parents.iter().copied())
        .chain(haves.iter().copied())
        .filter(|id| commits.get(id).is_some_and(|c| c.1))
        .collect();
    for edge in edges {
        let tree = commits[&edge].0.tree;
        mark_tree(source, tree, &mut excluded, &mut buf)?;
    }

    // Objects wanted by name are sent whatever the filter says.
    let filter = &limits.filter;
    for id in &result_commits {
        if (provided.contains(id) || filter.keeps(Kind::Commit)) && sent.insert(*id) {
            out.push(*id);
        }
    }
    // Trees and blobs breadth first, so each is first met at its smallest depth below
    // a root tree (which `tree:<depth>` filters by). Under `sparse:oid=` filters what
    // is sent depends on paths: a tree is walked at every path it is met at (as git
    // walks it), and each entry carries its directory's decisions, a bit a pattern set.
    let sparse: Vec<&Patterns> = filter.sparse().iter().map(|s| &*s.patterns).collect();
    let mut queue: std::collections::VecDeque<Met> = roots
        .into_iter()
        .map(|(id, is_tree)| Met::root(id, is_tree))
        .collect();
    queue.extend(
        result_commits
            .iter()
            .map(|id| Met::root(commits[id].0.tree, true)),
    );
    // What was walked: by id, or under a sparse filter a tree by id and path.
    let mut visited: HashSet<ObjectId> = HashSet::new();
    let mut visited_at: HashSet<(ObjectId, Vec<u8>)> = HashSet::new();
    let (mut walked, mut distinct) = (0usize, HashSet::new());
    while let Some(met) = queue.pop_front() {
        let Met {
            id,
            is_tree,
            depth,
            path,
            selected,
        } = met;
        if excluded.contains(&id) || (sent.contains(&id) && (!is_tree || sparse.is_empty())) {
            continue;
        }
        let first = if sparse.is_empty() {
            visited.insert(id)
        } else {
            !is_tree || visited_at.insert((id, path.clone()))
        };
        if !first {
            continue;
        }
        let selected = decide(&sparse, &path, is_tree, selected);
        let selects = |patterns: &Patterns| {
            sparse
                .iter()
                .position(|p| std::ptr::eq(*p, patterns))
                .is_some_and(|i| selected >> i & 1 == 1)
        };
        let keep = provided.contains(&id)
            || if is_tree {
                filter.keeps_tree(depth)
            } else {
                filter.keeps_blob(
                    depth,
                    &mut || source.size(&id)?.ok_or(OdbError::Missing(id)),
                    &selects,
                )?
            };
        if keep && sent.insert(id) {
            out.push(id);
        }
        if is_tree && filter.reaches(depth + 1) {
            if !sparse.is_empty() {
                walked += 1;
                distinct.insert(id);
                if walked > MAX_PATH_WALKS + 16 * distinct.len() {
                    return Err(OdbError::Refused(format!(
                        "the sparse filter meets the same trees at too many paths \
                         ({walked} walks of {} trees)",
                        distinct.len()
                    )));
                }
            }
            read_required(source, &id, &mut buf)?;
            for (child, is_tree, name) in tree_entries(id, &buf)? {
                let path = if sparse.is_empty() {
                    Vec::new()
                } else if path.is_empty() {
                    name
                } else {
                    [&path[..], b"/", &name].concat()
                };
                queue.push_back(Met {
                    id: child,
                    is_tree,
                    depth: depth + 1,
                    path,
                    selected,
                });
            }
        }
    }
    Ok((out, excluded))
}

/// A tree or blob met by the walk of [`objects_to_send`].
struct Met {
    id: ObjectId,
    is_tree: bool,
    /// Levels below a root tree (a root tree is at 0).
    depth: u64,
    /// Its path from the root tree, when a `sparse:oid=` filter needs it.
    path: Vec<u8>,
    /// Its directory's decision for each pattern set of the filter, a bit each.
    selected: u32,
}

impl Met {
    fn root(id: ObjectId, is_tree: bool) -> Self {
        Met {
            id,
            is_tree,
            depth: 0,
            path: Vec::new(),
            selected: 0,
        }
    }
}

/// How many trees the walk of a `sparse:oid=` filter may read beyond 16 times the
/// distinct ones: one tree met at many paths (crafted to double them at each level)
/// would otherwise make a fetch walk without bound.
const MAX_PATH_WALKS: usize = 1 << 20;

/// The decisions at `path` of each pattern set (a bit each), where no pattern decides
/// taking the decision of the directory, `inherited`.
fn decide(sparse: &[&Patterns], path: &[u8], is_dir: bool, inherited: u32) -> u32 {
    sparse.iter().enumerate().fold(0, |bits, (i, patterns)| {
        let selected = patterns
            .decide(path, is_dir)
            .unwrap_or(inherited >> i & 1 == 1);
        bits | (u32::from(selected) << i)
    })
}

/// Like [`tree_children`], with each entry's name.
fn tree_entries(id: ObjectId, data: &[u8]) -> Result<Vec<(ObjectId, bool, Vec<u8>)>, OdbError> {
    carried_entries(id, data, |e| {
        (e.oid.to_owned(), e.mode.is_tree(), e.filename.to_vec())
    })
}

/// Marks `id` and every ancestor already known to the walk uninteresting, keeping the
/// count of interesting commits still queued right (as git's
/// `mark_parents_uninteresting` does), so a have found late still stops the walk.
fn mark_uninteresting(
    id: ObjectId,
    commits: &mut HashMap<ObjectId, (CommitInfo, bool)>,
    popped: &HashSet<ObjectId>,
    interesting_queued: &mut usize,
    client_shallow: &HashSet<ObjectId>,
) {
    let mut stack = vec![id];
    while let Some(id) = stack.pop() {
        let Some(entry) = commits.get_mut(&id) else {
            continue;
        };
        if entry.1 {
            continue;
        }
        entry.1 = true;
        if !popped.contains(&id) {
            *interesting_queued = interesting_queued.saturating_sub(1);
        }
        if !client_shallow.contains(&id) {
            stack.extend(entry.0.parents.iter().copied());
        }
    }
}

/// Adds `tree` and everything under it to `set`.
fn mark_tree(
    source: &dyn ObjectSource,
    tree: ObjectId,
    set: &mut HashSet<ObjectId>,
    buf: &mut Vec<u8>,
) -> Result<(), OdbError> {
    let mut stack = vec![tree];
    while let Some(id) = stack.pop() {
        if !set.insert(id) {
            continue;
        }
        read_required(source, &id, buf)?;
        for (child, is_tree) in tree_children(id, buf)? {
            if is_tree {
                stack.push(child);
            } else {
                set.insert(child);
            }
        }
    }
    Ok(())
}

/// An object a push refers to but does not carry, and the repository does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("missing object {missing} (referenced by {referenced_by})")]
pub struct NotConnected {
    pub missing: ObjectId,
    pub referenced_by: String,
}

/// Why a received pack may not join the live packs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackFault {
    #[error("missing necessary objects: {0}")]
    NotConnected(NotConnected),
    /// A tree nested deeper than the limit through trees of the pack.
    #[error(
        "tree {tree} is nested more than {max} levels deep, deeper than this server accepts \
         (git's core.maxTreeDepth)"
    )]
    TooDeep { tree: ObjectId, max: u32 },
}

/// Checks that every object `pack` refers to is in `pack` or in `existing`, so that
/// the pack may join the live packs without breaking their closure under reachability,
/// and that no tree of the pack nests trees of the pack more than `max_tree_depth`
/// deep (trees the repository has end a path, as git's walk of new objects stops at
/// them). Only commits, trees and tags are read; blobs are recognised from entry
/// headers.
pub fn check_pack_closed(
    pack: &LocalPack,
    existing: &dyn ObjectSource,
    max_tree_depth: u32,
) -> Result<Result<(), PackFault>, OdbError> {
    let mut buf = Vec::new();
    let present = |id: &ObjectId| pack.contains(id) || existing.contains(id);
    // The trees of the pack, with the trees of the pack each holds.
    let mut subtrees: HashMap<ObjectId, Vec<ObjectId>> = HashMap::new();
    for id in pack.ids() {
        let kind = match pack.kind_of(&id)? {
            Some(Kind::Blob) | None => continue,
            Some(kind) => kind,
        };
        read_required(pack, &id, &mut buf)?;
        let refs: Vec<ObjectId> = match kind {
            Kind::Commit => {
                let info = parse_commit(id, &buf)?;
                std::iter::once(info.tree).chain(info.parents).collect()
            }
            Kind::Tree => {
                let children = tree_children(id, &buf)?;
                subtrees.insert(
                    id,
                    children
                        .iter()
                        .filter(|(c, is_tree)| *is_tree && pack.contains(c))
                        .map(|(c, _)| *c)
                        .collect(),
                );
                children.into_iter().map(|(c, _)| c).collect()
            }
            Kind::Tag => vec![tag_target(id, &buf)?.0],
            Kind::Blob => Vec::new(),
        };
        if let Some(missing) = refs.into_iter().find(|r| !present(r)) {
            return Ok(Err(PackFault::NotConnected(NotConnected {
                missing,
                referenced_by: format!("{kind} {id}"),
            })));
        }
    }
    if let Some(tree) = too_deep(&subtrees, max_tree_depth) {
        return Ok(Err(PackFault::TooDeep {
            tree,
            max: max_tree_depth,
        }));
    }
    Ok(Ok(()))
}

/// A tree more than `max` levels of `subtrees` deep, if there is one: heights are
/// worked out from the leaves, without recursion, each tree once.
fn too_deep(subtrees: &HashMap<ObjectId, Vec<ObjectId>>, max: u32) -> Option<ObjectId> {
    let mut height: HashMap<ObjectId, u32> = HashMap::with_capacity(subtrees.len());
    for root in subtrees.keys() {
        let mut stack = vec![(*root, false)];
        while let Some((tree, expanded)) = stack.pop() {
            if height.contains_key(&tree) {
                continue;
            }
            let children = subtrees.get(&tree).map_or(&[][..], Vec::as_slice);
            if expanded {
                let h = children
                    .iter()
                    .map(|c| height.get(c).map_or(0, |h| h + 1))
                    .max()
                    .unwrap_or(0);
                if h > max {
                    return Some(tree);
                }
                height.insert(tree, h);
            } else {
                stack.push((tree, true));
                stack.extend(
                    children
                        .iter()
                        .filter(|c| !height.contains_key(*c))
                        .map(|c| (*c, false)),
                );
            }
        }
    }
    None
}

/// The entry at `path` (`/`-separated) under `tree`: its mode and id.
pub fn entry_at(
    source: &dyn ObjectSource,
    tree: ObjectId,
    path: &str,
) -> Result<Option<(gix_object::tree::EntryMode, ObjectId)>, OdbError> {
    let mut buf = Vec::new();
    let mut current = tree;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if read_required(source, &current, &mut buf)? != Kind::Tree {
            return Ok(None);
        }
        let parsed = gix_object::TreeRef::from_bytes(&buf, current.kind())
            .map_err(|e| bad(current, Kind::Tree, e))?;
        let Some(entry) = parsed
            .entries
            .iter()
            .find(|e| e.filename == part.as_bytes())
        else {
            return Ok(None);
        };
        if i + 1 == parts.len() {
            return Ok(Some((entry.mode, entry.oid.to_owned())));
        }
        if !entry.mode.is_tree() {
            return Ok(None);
        }
        current = entry.oid.to_owned();
    }
    Ok(None)
}

/// The first of `locked` that a commit `tip` reaches among the commits `is_new` says
/// are new changes, if any (the walk goes no further than the first commit that is
/// not). A commit changes a path when its entry there differs from the entry in every
/// parent (or, for a root commit, exists).
pub fn changes_locked(
    source: &dyn ObjectSource,
    is_new: &mut dyn FnMut(&ObjectId) -> Result<bool, OdbError>,
    tip: ObjectId,
    locked: &[super::push::LockedFile],
) -> Result<Option<super::push::LockedFile>, OdbError> {
    let (tip, kind) = peel(source, tip)?;
    if kind != Kind::Commit {
        return Ok(None);
    }
    let mut buf = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![tip];
    while let Some(commit) = stack.pop() {
        if !seen.insert(commit) || !is_new(&commit)? {
            continue;
        }
        read_required(source, &commit, &mut buf)?;
        let info = parse_commit(commit, &buf)?;
        let mut parent_trees = Vec::with_capacity(info.parents.len());
        for parent in &info.parents {
            read_required(source, parent, &mut buf)?;
            parent_trees.push(parse_commit(*parent, &buf)?.tree);
        }
        for file in locked {
            let here = entry_at(source, info.tree, &file.path)?;
            let mut changed = true;
            for parent_tree in &parent_trees {
                if entry_at(source, *parent_tree, &file.path)? == here {
                    changed = false;
                    break;
                }
            }
            if parent_trees.is_empty() {
                changed = here.is_some();
            }
            if changed {
                return Ok(Some(file.clone()));
            }
        }
        stack.extend(info.parents);
    }
    Ok(None)
}

/// Whether `ancestor` is reachable from `descendant` (both commits).
pub fn is_ancestor(
    source: &dyn ObjectSource,
    ancestor: ObjectId,
    descendant: ObjectId,
) -> Result<bool, OdbError> {
    let mut buf = Vec::new();
    if ancestor == descendant {
        return Ok(true);
    }
    let target_time = match read_required(source, &ancestor, &mut buf)? {
        Kind::Commit => parse_commit(ancestor, &buf)?.time,
        _ => return Ok(false),
    };
    let mut seen = HashSet::new();
    let mut queue = BinaryHeap::new();
    if read_required(source, &descendant, &mut buf)? != Kind::Commit {
        return Ok(false);
    }
    let info = parse_commit(descendant, &buf)?;
    queue.push(Queued {
        time: info.time,
        id: descendant,
    });
    // A day of slack for clocks that went backwards.
    const SLACK: i64 = 86_400;
    while let Some(Queued { id, time }) = queue.pop() {
        if id == ancestor {
            return Ok(true);
        }
        if time.saturating_add(SLACK) < target_time || !seen.insert(id) {
            continue;
        }
        read_required(source, &id, &mut buf)?;
        for parent in parse_commit(id, &buf)?.parents {
            read_required(source, &parent, &mut buf)?;
            let time = parse_commit(parent, &buf)?.time;
            queue.push(Queued { time, id: parent });
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Objects in a map; ids are made up, contents are real object bodies.
    #[derive(Default)]
    struct Objects(HashMap<ObjectId, (Kind, Vec<u8>)>);

    impl ObjectSource for Objects {
        fn read(&self, id: &gix_hash::oid, out: &mut Vec<u8>) -> Result<Option<Kind>, OdbError> {
            Ok(self.0.get(id).map(|(kind, data)| {
                out.clear();
                out.extend_from_slice(data);
                *kind
            }))
        }
        fn contains(&self, id: &gix_hash::oid) -> bool {
            self.0.contains_key(id)
        }
    }

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[n; 20])
    }

    const TREE: u8 = 200;

    impl Objects {
        fn commit(&mut self, n: u8, time: i64, parents: &[u8]) {
            let mut body = format!("tree {}\n", id(TREE));
            for p in parents {
                body.push_str(&format!("parent {}\n", id(*p)));
            }
            body.push_str(&format!(
                "author A <a@b> {time} +0000\ncommitter A <a@b> {time} +0000\n\nc{n}\n"
            ));
            self.0.insert(id(n), (Kind::Commit, body.into_bytes()));
        }
    }

    #[test]
    fn a_have_found_late_still_stops_the_walk() {
        // W (600) and H (100) share parent A (500), whose history R (400) <- R0 (300)
        // the client has through H, though H's date sorts it last.
        let mut objects = Objects::default();
        objects.0.insert(id(TREE), (Kind::Tree, Vec::new()));
        objects.commit(1, 300, &[]); // R0
        objects.commit(2, 400, &[1]); // R
        objects.commit(3, 500, &[2]); // A
        objects.commit(4, 600, &[3]); // W
        objects.commit(5, 100, &[3]); // H
        let sent =
            objects_to_send(&objects, &[id(4)], &[id(5)], &WalkLimits::default()).expect("walk");
        assert_eq!(
            sent,
            [id(4)],
            "only W: its tree is A's, which the client has"
        );
    }

    /// A tree body of `(name, is_tree, id)` entries.
    fn tree(entries: &[(&str, bool, ObjectId)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, is_tree, id) in entries {
            let mode = if *is_tree { "40000" } else { "100644" };
            body.extend_from_slice(format!("{mode} {name}\0").as_bytes());
            body.extend_from_slice(id.as_bytes());
        }
        body
    }

    fn sparse(patterns: &str) -> WalkLimits {
        WalkLimits {
            filter: Filter::Sparse(Sparse {
                name: "patterns".into(),
                blob: None,
                patterns: Arc::new(Patterns::parse(patterns.as_bytes())),
            }),
            ..WalkLimits::default()
        }
    }

    #[test]
    fn a_sparse_filter_decides_a_tree_at_each_of_its_paths() {
        // The tree `lib` (blobs 10, 11) sits at `lib` and at `vendor/lib`; only the
        // second path is selected, and a blob at the root is not.
        let mut objects = Objects::default();
        let (lib, vendor) = (id(20), id(21));
        objects.0.insert(id(10), (Kind::Blob, b"a".to_vec()));
        objects.0.insert(id(11), (Kind::Blob, b"b".to_vec()));
        objects.0.insert(id(12), (Kind::Blob, b"c".to_vec()));
        objects.0.insert(
            lib,
            (
                Kind::Tree,
                tree(&[("a", false, id(10)), ("b", false, id(11))]),
            ),
        );
        objects
            .0
            .insert(vendor, (Kind::Tree, tree(&[("lib", true, lib)])));
        let root = tree(&[
            ("lib", true, lib),
            ("top", false, id(12)),
            ("vendor", true, vendor),
        ]);
        objects.0.insert(id(TREE), (Kind::Tree, root));
        objects.commit(1, 300, &[]);
        let sent = |patterns| {
            let mut ids =
                objects_to_send(&objects, &[id(1)], &[], &sparse(patterns)).expect("walk");
            ids.sort();
            ids
        };
        let trees = [id(1), lib, vendor, id(TREE)];
        let with = |blobs: &[u8]| {
            let mut ids: Vec<_> = trees
                .iter()
                .copied()
                .chain(blobs.iter().map(|&n| id(n)))
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(
            sent("/vendor/\n"),
            with(&[10, 11]),
            "every tree, the selected blobs"
        );
        assert_eq!(sent("/vendor/\n!b\n"), with(&[10]));
        assert_eq!(sent("/*\n!/*/\n"), with(&[12]), "cone: only root files");
        assert_eq!(sent(""), with(&[]));
    }

    #[test]
    fn a_tree_met_at_too_many_paths_is_refused() {
        // Each level holds the one below twice: 2^24 paths to walk for 25 trees.
        let mut objects = Objects::default();
        objects.0.insert(id(0), (Kind::Blob, b"x".to_vec()));
        let mut below = (id(0), false);
        for level in 0..24u8 {
            let body = tree(&[("a", below.1, below.0), ("b", below.1, below.0)]);
            let tree_id = ObjectId::from_bytes_or_panic(&[
                level, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
            ]);
            objects.0.insert(tree_id, (Kind::Tree, body));
            below = (tree_id, true);
        }
        objects
            .0
            .insert(id(TREE), (Kind::Tree, tree(&[("top", true, below.0)])));
        objects.commit(1, 300, &[]);
        match objects_to_send(&objects, &[id(1)], &[], &sparse("*.txt\n")) {
            Err(OdbError::Refused(message)) => {
                assert!(message.contains("too many paths"), "{message}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Without a sparse filter each tree is walked once.
        assert_eq!(
            objects_to_send(&objects, &[id(1)], &[], &WalkLimits::default())
                .expect("walk")
                .len(),
            27
        );
    }

    #[test]
    fn parses_filter_specs() {
        assert_eq!(Filter::parse("blob:none"), Ok(Filter::BlobNone));
        assert_eq!(Filter::parse("blob:limit=2k"), Ok(Filter::BlobLimit(2048)));
        assert_eq!(Filter::parse("blob:limit=3"), Ok(Filter::BlobLimit(3)));
        assert_eq!(Filter::parse("tree:0"), Ok(Filter::TreeDepth(0)));
        assert_eq!(
            Filter::parse("object:type=tree"),
            Ok(Filter::ObjectType(Kind::Tree))
        );
        assert_eq!(
            Filter::parse("combine:blob%3Alimit%3D1m+tree:3"),
            Ok(Filter::Combine(vec![
                Filter::BlobLimit(1 << 20),
                Filter::TreeDepth(3)
            ]))
        );
        for bad in [
            "blob:limit=x",
            "tree:-1",
            "object:type=file",
            "sparse:oid=",
            "combine:%zz",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_fresh_want_sends_its_whole_history() {
        let mut objects = Objects::default();
        objects.0.insert(id(TREE), (Kind::Tree, Vec::new()));
        objects.commit(1, 300, &[]);
        objects.commit(2, 400, &[1]);
        let mut sent =
            objects_to_send(&objects, &[id(2)], &[], &WalkLimits::default()).expect("walk");
        sent.sort();
        assert_eq!(sent, [id(1), id(2), id(TREE)]);
    }
}
