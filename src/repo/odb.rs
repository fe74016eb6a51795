//! Object lookup over a repository's live packs.
//!
//! Pack indexes are fetched once and kept, parsed, in a byte-bounded LRU ([`Caches`]):
//! packs are immutable, so a cached index is never stale and lookups (negotiation,
//! connectivity checks, object reads) run from memory, not from the store. Pack data is
//! fetched whole on first use and kept in a second bounded LRU.
//!
//! Reading objects is blocking work (zlib, delta resolution, and a store fetch on a
//! cache miss through the runtime handle): call [`ObjectSource`] methods only from
//! `spawn_blocking` threads, never from async tasks.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use gix_hash::{ObjectId, oid};
use gix_object::Kind;
use gix_pack::data::decode::entry::ResolvedBase;
use stowage_store::{Key, ObjectStore};

use super::RepoName;
use super::manifest::{Manifest, PackEntry};

/// A parsed pack index, held in memory.
pub type PackIndex = gix_pack::index::File<Bytes>;
/// A pack's data, held in memory.
pub type PackData = gix_pack::data::File<Bytes>;

/// Why an object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OdbError {
    #[error("store: {0}")]
    Store(#[from] stowage_store::Error),
    #[error("pack {pack} is corrupt: {message}")]
    Corrupt { pack: String, message: String },
    #[error("object {0} is not in the repository")]
    Missing(ObjectId),
    /// A `deepen-since`/`deepen-not` request that selects no commit at all.
    #[error("no commits selected for shallow requests")]
    NothingSelected,
    /// The client stopped reading; the work was abandoned.
    #[error("the client went away")]
    Cancelled,
    /// A request that asks for more work than the server does for one.
    #[error("{0}")]
    Refused(String),
    #[error("object {id} is not a valid {kind}: {message}")]
    BadObject {
        id: ObjectId,
        kind: Kind,
        message: String,
    },
}

/// The process-wide caches of pack indexes, pack data and decoded trees and commits,
/// bounded by bytes.
#[derive(Clone)]
pub struct Caches {
    indexes: moka::sync::Cache<Key, Arc<CachedIndex>>,
    packs: moka::sync::Cache<Key, Bytes>,
    /// Trees and commits by id, shared by all repositories (an id names one content);
    /// looked up only once the repository is known to hold the object. Walks read the
    /// same recent trees for every shallow clone and fetch.
    objects: moka::sync::Cache<ObjectId, (Kind, Bytes)>,
    /// Every object the refs of a manifest reach, by repository and manifest tag:
    /// asked only while the packs may hold unreachable objects.
    reachable: moka::sync::Cache<(String, String), Arc<HashSet<ObjectId>>>,
    counters: Arc<CacheCounters>,
}

/// Hits and misses of the caches since the process started.
#[derive(Debug, Default)]
struct CacheCounters {
    index_hits: AtomicU64,
    index_misses: AtomicU64,
    pack_hits: AtomicU64,
    pack_misses: AtomicU64,
    object_hits: AtomicU64,
    object_misses: AtomicU64,
}

/// A snapshot of the cache counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub index_hits: u64,
    pub index_misses: u64,
    pub pack_hits: u64,
    pub pack_misses: u64,
    pub object_hits: u64,
    pub object_misses: u64,
}

/// Memory for sets of reachable objects (asked only while a repository's packs may
/// hold unreachable objects, until its prune).
const REACHABLE_BYTES: u64 = 256 << 20;

impl Caches {
    /// Caches holding at most `index_bytes` of pack indexes, `pack_bytes` of pack
    /// data and `object_bytes` of decoded trees and commits.
    pub fn new(index_bytes: u64, pack_bytes: u64, object_bytes: u64) -> Self {
        Caches {
            indexes: moka::sync::Cache::builder()
                .max_capacity(index_bytes)
                // A v2 index: header and fan-out, then id, CRC and offset per object.
                // A v2 index (header and fan-out, then id, CRC and offset per
                // object), and the entries in pack order with their kinds and bases.
                .weigher(|_, cached: &Arc<CachedIndex>| {
                    weight(1072 + 64 * cached.index.num_objects() as usize)
                })
                .build(),
            packs: moka::sync::Cache::builder()
                .max_capacity(pack_bytes)
                .weigher(|_, data: &Bytes| weight(data.len()))
                .build(),
            objects: moka::sync::Cache::builder()
                .max_capacity(object_bytes)
                .weigher(|_, (_, data): &(Kind, Bytes)| weight(64 + data.len()))
                .build(),
            reachable: moka::sync::Cache::builder()
                .max_capacity(REACHABLE_BYTES)
                .weigher(|_, set: &Arc<HashSet<ObjectId>>| weight(64 + 48 * set.len()))
                .build(),
            counters: Arc::default(),
        }
    }

    fn index(&self, key: &Key) -> Option<Arc<CachedIndex>> {
        let found = self.indexes.get(key);
        let counter = match found {
            Some(_) => &self.counters.index_hits,
            None => &self.counters.index_misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn pack(&self, key: &Key) -> Option<Bytes> {
        let found = self.packs.get(key);
        let counter = match found {
            Some(_) => &self.counters.pack_hits,
            None => &self.counters.pack_misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The set of objects reachable from a manifest's refs (by repository and manifest
    /// tag), made by `walk` once for any number of concurrent callers.
    pub(crate) fn reachable_or(
        &self,
        key: (String, String),
        walk: impl FnOnce() -> Result<Arc<HashSet<ObjectId>>, OdbError>,
    ) -> Result<Arc<HashSet<ObjectId>>, Arc<OdbError>> {
        self.reachable.try_get_with(key, walk)
    }

    fn object(&self, id: &ObjectId) -> Option<(Kind, Bytes)> {
        let found = self.objects.get(id);
        if found.is_some() {
            self.counters.object_hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Keeps a decoded tree or commit; a miss is counted here, as only these are
    /// cached.
    fn keep_object(&self, id: ObjectId, kind: Kind, data: &[u8]) {
        self.counters.object_misses.fetch_add(1, Ordering::Relaxed);
        if data.len() <= CACHED_OBJECT_MAX {
            self.objects
                .insert(id, (kind, Bytes::copy_from_slice(data)));
        }
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            index_hits: c.index_hits.load(Ordering::Relaxed),
            index_misses: c.index_misses.load(Ordering::Relaxed),
            pack_hits: c.pack_hits.load(Ordering::Relaxed),
            pack_misses: c.pack_misses.load(Ordering::Relaxed),
            object_hits: c.object_hits.load(Ordering::Relaxed),
            object_misses: c.object_misses.load(Ordering::Relaxed),
        }
    }
}

impl Caches {
    /// Bytes held by the index cache, the pack cache and the object cache.
    pub fn weighted_sizes(&self) -> (u64, u64, u64) {
        (
            self.indexes.weighted_size(),
            self.packs.weighted_size(),
            self.objects.weighted_size(),
        )
    }
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("index_bytes", &self.indexes.weighted_size())
            .field("pack_bytes", &self.packs.weighted_size())
            .field("object_bytes", &self.objects.weighted_size())
            .finish()
    }
}

fn weight(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Reads objects by id.
pub trait ObjectSource: Sync {
    /// Writes the object's content into `out` and returns its kind, or `None` if the
    /// source does not have it.
    fn read(&self, id: &oid, out: &mut Vec<u8>) -> Result<Option<Kind>, OdbError>;

    /// Whether the source has the object, without reading it.
    fn contains(&self, id: &oid) -> bool;

    /// The object's size in bytes, or `None` if the source does not have it. Sources
    /// that can tell without reading the whole object do so.
    fn size(&self, id: &oid) -> Result<Option<u64>, OdbError> {
        let mut buf = Vec::new();
        Ok(self.read(id, &mut buf)?.map(|_| buf.len() as u64))
    }
}

/// A parsed pack index, with what is derived from it and the pack once and then kept
/// as long as the index is cached: packs never change.
pub struct CachedIndex {
    pub index: Arc<PackIndex>,
    /// Entries in pack order: (offset, id).
    by_offset: OnceLock<Vec<(u64, ObjectId)>>,
    /// Per entry in pack order, from the entry headers: its kind and, for an
    /// OFS_DELTA, the position of its base.
    layout: OnceLock<Arc<Layout>>,
}

impl std::fmt::Debug for CachedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedIndex")
            .field("objects", &self.index.num_objects())
            .finish()
    }
}

/// The kinds and delta bases of a pack's entries, in pack order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Kind of each entry (git's type number 1 to 4: commit, tree, blob, tag); a delta
    /// has its base's kind.
    pub kinds: Vec<u8>,
    /// Position of each OFS_DELTA's base (`u32::MAX` for other entries).
    pub ofs_base: Vec<u32>,
}

/// One live pack of a repository.
pub struct Pack {
    pub entry: PackEntry,
    pub index: Arc<PackIndex>,
    cached: Arc<CachedIndex>,
    pack_key: Key,
    data: OnceLock<Arc<LoadedPack>>,
}

impl std::fmt::Debug for Pack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pack")
            .field("entry", &self.entry)
            .field("loaded", &self.data.get().is_some())
            .finish()
    }
}

/// A pack's bytes, and the same parsed.
pub struct LoadedPack {
    pub data: PackData,
    pub bytes: Bytes,
}

impl std::fmt::Debug for LoadedPack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPack")
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl Pack {
    /// Entries in pack order: (offset, id).
    pub fn entries_by_offset(&self) -> &[(u64, ObjectId)] {
        self.cached.by_offset.get_or_init(|| {
            let mut entries: Vec<(u64, ObjectId)> =
                self.index.iter().map(|e| (e.pack_offset, e.oid)).collect();
            entries.sort_unstable();
            entries
        })
    }

    /// Where the entry at `offset` ends: the next entry, or the trailer.
    pub fn entry_end(&self, offset: u64) -> u64 {
        let entries = self.entries_by_offset();
        let next = entries.partition_point(|(o, _)| *o <= offset);
        entries.get(next).map_or(
            self.entry
                .size
                .saturating_sub(self.entry.hash.kind().len_in_bytes() as u64),
            |(o, _)| *o,
        )
    }

    /// The object whose entry starts at `offset`.
    pub fn id_at(&self, offset: u64) -> Option<ObjectId> {
        let entries = self.entries_by_offset();
        entries
            .binary_search_by_key(&offset, |(o, _)| *o)
            .ok()
            .map(|i| entries[i].1)
    }

    pub fn pack_key(&self) -> &Key {
        &self.pack_key
    }

    /// The pack's [`Layout`], worked out by `compute` on first use and then kept with
    /// its cached index.
    pub fn layout<E>(&self, compute: impl FnOnce() -> Result<Layout, E>) -> Result<Arc<Layout>, E> {
        if let Some(layout) = self.cached.layout.get() {
            return Ok(layout.clone());
        }
        let layout = Arc::new(compute()?);
        Ok(self.cached.layout.get_or_init(|| layout).clone())
    }
}

/// The objects of one repository as of one manifest.
pub struct Odb {
    store: Arc<dyn ObjectStore>,
    caches: Caches,
    runtime: tokio::runtime::Handle,
    /// Newest first: recent objects are the likeliest to be asked for.
    packs: Vec<Pack>,
    /// Recently resolved delta bases, so that walking many trees whose entries form
    /// delta chains does not decode each chain from its start again.
    delta_cache: std::sync::Mutex<gix_pack::cache::lru::MemoryCappedHashmap>,
    /// The repository's object format.
    format: gix_hash::Kind,
}

impl std::fmt::Debug for Odb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Odb").field("packs", &self.packs).finish()
    }
}

/// Memory for resolved delta bases, per open [`Odb`].
const DELTA_CACHE_BYTES: usize = 32 << 20;

/// The store key of the git bundle of a pack ([`super::manifest::PackEntry::bundle`]).
pub fn bundle_key(repo: &RepoName, hash: &ObjectId) -> Key {
    repo.key(&format!("packs/pack-{}.bundle", hash.to_hex()))
}

/// Store keys of a pack's files.
pub fn pack_keys(repo: &RepoName, hash: &ObjectId) -> (Key, Key) {
    let hex = hash.to_hex().to_string();
    (
        repo.key(&format!("packs/pack-{hex}.pack")),
        repo.key(&format!("packs/pack-{hex}.idx")),
    )
}

impl Odb {
    /// Opens the packs `manifest` lists, fetching the indexes not yet cached.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        caches: &Caches,
        repo: &RepoName,
        manifest: &Manifest,
    ) -> Result<Self, OdbError> {
        let format = manifest.object_hash();
        let loads = manifest.packs.iter().rev().map(|entry| {
            let store = store.clone();
            let caches = caches.clone();
            let (pack_key, index_key) = pack_keys(repo, &entry.hash);
            async move {
                let cached = match caches.index(&index_key) {
                    Some(cached) => cached,
                    None => {
                        let bytes = store.get(&index_key).await?.bytes;
                        let path = PathBuf::from(index_key.as_str());
                        let index = PackIndex::from_data(bytes, path, format).map_err(|e| {
                            OdbError::Corrupt {
                                pack: index_key.to_string(),
                                message: e.to_string(),
                            }
                        })?;
                        let cached = Arc::new(CachedIndex {
                            index: Arc::new(index),
                            by_offset: OnceLock::new(),
                            layout: OnceLock::new(),
                        });
                        caches.indexes.insert(index_key, cached.clone());
                        cached
                    }
                };
                Ok::<_, OdbError>(Pack {
                    entry: entry.clone(),
                    index: cached.index.clone(),
                    cached,
                    pack_key,
                    data: OnceLock::new(),
                })
            }
        });
        let packs = futures::future::try_join_all(loads).await?;
        Ok(Odb {
            store,
            caches: caches.clone(),
            runtime: tokio::runtime::Handle::current(),
            packs,
            delta_cache: std::sync::Mutex::new(gix_pack::cache::lru::MemoryCappedHashmap::new(
                DELTA_CACHE_BYTES,
            )),
            format,
        })
    }

    pub fn packs(&self) -> &[Pack] {
        &self.packs
    }

    /// The repository's object format.
    pub fn format(&self) -> gix_hash::Kind {
        self.format
    }

    /// Which pack holds `id`, and at which entry of its index.
    pub fn locate(&self, id: &oid) -> Option<(&Pack, u32)> {
        self.packs
            .iter()
            .find_map(|pack| pack.index.lookup(id).map(|i| (pack, i)))
    }

    /// Hands bytes `range` of the pack's file to `each`, in chunks of about `chunk`
    /// bytes: from memory if the pack is cached, else streamed from the store with one
    /// request (blocking), never holding the range whole.
    pub fn for_each_pack_chunk(
        &self,
        pack: &Pack,
        range: std::ops::Range<u64>,
        chunk: usize,
        mut each: impl FnMut(Bytes) -> Result<(), OdbError>,
    ) -> Result<(), OdbError> {
        if let Some(bytes) = self.caches.pack(&pack.pack_key) {
            let all = bytes.slice(range.start as usize..range.end as usize);
            for start in (0..all.len()).step_by(chunk.max(1)) {
                each(all.slice(start..(start + chunk).min(all.len())))?;
            }
            return Ok(());
        }
        if range.start >= range.end {
            return Ok(());
        }
        use futures::StreamExt;
        let mut stream = self
            .runtime
            .block_on(self.store.get_range_stream(&pack.pack_key, range.into()))?;
        let mut buf = bytes::BytesMut::new();
        while let Some(part) = self.runtime.block_on(stream.next()) {
            let part =
                part.map_err(|e| stowage_store::Error::from_io(pack.pack_key.as_str(), e))?;
            // Parts of a useful size go on as they are; small ones are gathered.
            if buf.is_empty() && part.len() >= chunk / 2 {
                each(part)?;
                continue;
            }
            buf.extend_from_slice(&part);
            if buf.len() >= chunk {
                each(buf.split().freeze())?;
            }
        }
        if !buf.is_empty() {
            each(buf.freeze())?;
        }
        Ok(())
    }

    /// The pack's data, fetched (blocking) on first use.
    pub fn data(&self, pack: &Pack) -> Result<Arc<LoadedPack>, OdbError> {
        if let Some(data) = pack.data.get() {
            return Ok(data.clone());
        }
        let bytes = match self.caches.pack(&pack.pack_key) {
            Some(bytes) => bytes,
            None => {
                let bytes = self.runtime.block_on(self.store.get(&pack.pack_key))?.bytes;
                self.caches
                    .packs
                    .insert(pack.pack_key.clone(), bytes.clone());
                bytes
            }
        };
        let path = PathBuf::from(pack.pack_key.as_str());
        let data = PackData::from_data(bytes.clone(), path, self.format).map_err(|e| {
            OdbError::Corrupt {
                pack: pack.pack_key.to_string(),
                message: e.to_string(),
            }
        })?;
        Ok(pack
            .data
            .get_or_init(|| Arc::new(LoadedPack { data, bytes }))
            .clone())
    }
}

impl Odb {
    /// Decodes the entry at position `index` of `pack`'s index (whichever other pack
    /// may hold the same object) into `out`.
    pub fn read_at(&self, pack: &Pack, index: u32, out: &mut Vec<u8>) -> Result<Kind, OdbError> {
        let loaded = self.data(pack)?;
        let data = &loaded.data;
        let offset = pack.index.pack_offset_at_index(index);
        let corrupt = |e: &dyn std::fmt::Display| OdbError::Corrupt {
            pack: pack.pack_key.to_string(),
            message: e.to_string(),
        };
        let entry = data.entry(offset).map_err(|e| corrupt(&e))?;
        let mut inflate = gix_zlib::Inflate::default();
        let resolve = |base: &oid, buf: &mut Vec<u8>| -> gix_error::Result<Option<ResolvedBase>> {
            if let Some(i) = pack.index.lookup(base) {
                return data
                    .entry(pack.index.pack_offset_at_index(i))
                    .map(|e| Some(ResolvedBase::InPack(e)));
            }
            // A base in another pack; stored packs are complete, so this only happens
            // for packs written by other tools.
            match self.read(base, buf) {
                Ok(Some(kind)) => Ok(Some(ResolvedBase::OutOfPack {
                    kind,
                    end: buf.len(),
                })),
                _ => Ok(None),
            }
        };
        // A base outside this pack is read through this same method: the cache is
        // then taken, and that read goes without it.
        let mut guard = self.delta_cache.try_lock();
        let mut never = gix_pack::cache::Never;
        let cache: &mut dyn gix_pack::cache::DecodeEntry = match guard.as_mut() {
            Ok(cache) => &mut **cache,
            Err(_) => &mut never,
        };
        let outcome = data
            .decode_entry(entry, out, &mut inflate, &resolve, cache)
            .map_err(|e| corrupt(&e))?;
        Ok(outcome.kind)
    }
}

/// Trees and commits up to this size go to the object cache.
const CACHED_OBJECT_MAX: usize = 1 << 20;

impl ObjectSource for Odb {
    fn read(&self, id: &oid, out: &mut Vec<u8>) -> Result<Option<Kind>, OdbError> {
        let Some((pack, index)) = self.locate(id) else {
            return Ok(None);
        };
        let id = id.to_owned();
        if let Some((kind, data)) = self.caches.object(&id) {
            out.clear();
            out.extend_from_slice(&data);
            return Ok(Some(kind));
        }
        let kind = self.read_at(pack, index, out)?;
        if matches!(kind, Kind::Tree | Kind::Commit) {
            self.caches.keep_object(id, kind, out);
        }
        Ok(Some(kind))
    }

    fn contains(&self, id: &oid) -> bool {
        self.locate(id).is_some()
    }

    /// From the entry header for a whole object; for a delta, from the start of its
    /// data (the delta names the size of its result first, after its base's), which
    /// is all that gets inflated.
    fn size(&self, id: &oid) -> Result<Option<u64>, OdbError> {
        let Some((pack, index)) = self.locate(id) else {
            return Ok(None);
        };
        let loaded = self.data(pack)?;
        let offset = pack.index.pack_offset_at_index(index);
        let corrupt = |e: &dyn std::fmt::Display| OdbError::Corrupt {
            pack: pack.pack_key.to_string(),
            message: e.to_string(),
        };
        let entry = loaded.data.entry(offset).map_err(|e| corrupt(&e))?;
        if !entry.header.is_delta() {
            return Ok(Some(entry.decompressed_size));
        }
        let data = loaded
            .bytes
            .get(entry.data_offset as usize..pack.entry_end(offset) as usize)
            .ok_or_else(|| corrupt(&"entry outside the pack"))?;
        // Two varints of at most 10 bytes each.
        let mut head = [0u8; 20];
        let mut inflate = gix_zlib::Inflate::default();
        let (_, _, written) = inflate.once(data, &mut head).map_err(|e| corrupt(&e))?;
        let varint = |bytes: &[u8]| -> Option<(u64, usize)> {
            let mut value = 0u64;
            for (i, b) in bytes.iter().enumerate().take(10) {
                value |= u64::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    return Some((value, i + 1));
                }
            }
            None
        };
        let head = &head[..written];
        let (_, base_len) = varint(head).ok_or_else(|| corrupt(&"bad delta header"))?;
        let (size, _) = varint(&head[base_len..]).ok_or_else(|| corrupt(&"bad delta header"))?;
        Ok(Some(size))
    }
}

/// A pack just received and indexed in a temporary directory, before it is stored.
pub struct LocalPack {
    bundle: gix_pack::Bundle,
}

impl std::fmt::Debug for LocalPack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPack")
            .field("objects", &self.num_objects())
            .finish()
    }
}

impl LocalPack {
    pub fn open(index_path: &std::path::Path, format: gix_hash::Kind) -> Result<Self, OdbError> {
        let bundle = gix_pack::Bundle::at(index_path, format).map_err(|e| OdbError::Corrupt {
            pack: index_path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(LocalPack { bundle })
    }

    pub fn num_objects(&self) -> u32 {
        self.bundle.index.num_objects()
    }

    /// Every object id in the pack.
    pub fn ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.bundle.index.iter().map(|e| e.oid)
    }

    /// The kind of an object in the pack, from entry headers alone (following delta
    /// bases), without decompressing anything.
    pub fn kind_of(&self, id: &oid) -> Result<Option<Kind>, OdbError> {
        use gix_pack::data::entry::Header;
        let corrupt = |e: &dyn std::fmt::Display| OdbError::Corrupt {
            pack: "received pack".into(),
            message: e.to_string(),
        };
        let Some(index) = self.bundle.index.lookup(id) else {
            return Ok(None);
        };
        let mut offset = self.bundle.index.pack_offset_at_index(index);
        // A delta chain cannot be longer than the pack has entries.
        for _ in 0..=self.num_objects() {
            let entry = self.bundle.pack.entry(offset).map_err(|e| corrupt(&e))?;
            offset = match entry.header {
                Header::Commit => return Ok(Some(Kind::Commit)),
                Header::Tree => return Ok(Some(Kind::Tree)),
                Header::Blob => return Ok(Some(Kind::Blob)),
                Header::Tag => return Ok(Some(Kind::Tag)),
                Header::OfsDelta { base_distance } => entry
                    .pack_offset()
                    .checked_sub(base_distance)
                    .ok_or_else(|| corrupt(&"delta base before the pack"))?,
                Header::RefDelta { base_id } => match self.bundle.index.lookup(base_id) {
                    Some(i) => self.bundle.index.pack_offset_at_index(i),
                    None => return Err(corrupt(&"delta base outside the pack")),
                },
            };
        }
        Err(corrupt(&"delta chain loops"))
    }
}

impl ObjectSource for LocalPack {
    fn read(&self, id: &oid, out: &mut Vec<u8>) -> Result<Option<Kind>, OdbError> {
        let mut inflate = gix_zlib::Inflate::default();
        match self
            .bundle
            .find(id, out, &mut inflate, &mut gix_pack::cache::Never)
        {
            Ok(Some((data, _))) => Ok(Some(data.kind)),
            Ok(None) => Ok(None),
            Err(e) => Err(OdbError::Corrupt {
                pack: "received pack".into(),
                message: e.to_string(),
            }),
        }
    }

    fn contains(&self, id: &oid) -> bool {
        self.bundle.index.lookup(id).is_some()
    }
}

/// Looks in `first`, then in `then`.
#[derive(Debug)]
pub struct Layered<'a, A, B> {
    pub first: &'a A,
    pub then: &'a B,
}

impl<A: ObjectSource, B: ObjectSource> ObjectSource for Layered<'_, A, B> {
    fn read(&self, id: &oid, out: &mut Vec<u8>) -> Result<Option<Kind>, OdbError> {
        match self.first.read(id, out)? {
            Some(kind) => Ok(Some(kind)),
            None => self.then.read(id, out),
        }
    }

    fn contains(&self, id: &oid) -> bool {
        self.first.contains(id) || self.then.contains(id)
    }
}

/// `&dyn ObjectSource` as a sized source (for [`Layered`]).
pub struct DynSource<'a>(pub &'a dyn ObjectSource);

impl std::fmt::Debug for DynSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynSource")
    }
}

impl ObjectSource for DynSource<'_> {
    fn read(&self, id: &oid, out: &mut Vec<u8>) -> Result<Option<Kind>, OdbError> {
        self.0.read(id, out)
    }
    fn contains(&self, id: &oid) -> bool {
        self.0.contains(id)
    }
}

/// An empty object source (a push that carries no pack, a pack checked on its own).
#[derive(Debug, Clone, Copy)]
pub struct NoObjects;

impl ObjectSource for NoObjects {
    fn read(&self, _: &oid, _: &mut Vec<u8>) -> Result<Option<Kind>, OdbError> {
        Ok(None)
    }
    fn contains(&self, _: &oid) -> bool {
        false
    }
}

/// Reads an object that must exist.
pub fn read_required(
    source: &dyn ObjectSource,
    id: &oid,
    out: &mut Vec<u8>,
) -> Result<Kind, OdbError> {
    source
        .read(id, out)?
        .ok_or_else(|| OdbError::Missing(id.to_owned()))
}
