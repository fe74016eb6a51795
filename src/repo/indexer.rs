//! Indexing a pack as it arrives: what `git index-pack --stdin --fix-thin` does, in
//! memory bounded by delta chains rather than by the pack or by its largest object.
//!
//! 1. The stream is written to a file once, entry by entry; each whole object is
//!    hashed while it is inflated, in pieces, so a 2 GB blob never sits in memory.
//! 2. Deltas are resolved from the file, depth first from each whole object: a base
//!    is held only while deltas on it are pending.
//! 3. Bases of a thin pack (ref-deltas on objects the repository has) are appended as
//!    whole objects, and the pack gets its new object count and checksum.
//! 4. The index (version 2) is written, and both files are named after the pack.
//!
//! Errors are the reasons `git push` shows its user after `unpack`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::hash::Hasher;
use flate2::{Decompress, FlushDecompress, Status};
use gix_hash::ObjectId;
use gix_object::Kind;

use super::object_check::{Finding, ObjectChecker};
use super::odb::ObjectSource;

/// A pack and its index, written and named `pack-<hash>.{pack,idx}`.
#[derive(Debug)]
pub struct Indexed {
    /// The pack's checksum, its name.
    pub hash: ObjectId,
    pub data_path: PathBuf,
    pub index_path: PathBuf,
    pub num_objects: u32,
    /// Size of the pack file in bytes.
    pub size: u64,
}

/// Limits on what a pack may ask of the indexer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest object (or delta) accepted, inflated.
    pub max_object_bytes: u64,
    /// The longest chain of deltas accepted (git writes at most 50 by default, and
    /// never more than 4095).
    pub max_delta_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_bytes: u64::MAX,
            max_delta_depth: 4095,
        }
    }
}

/// Why a pack was refused, as git shows it to its user.
#[derive(Debug)]
pub enum IndexError {
    /// The pack is malformed, truncated or does not resolve.
    Invalid(String),
    /// Reading the input or writing the files failed.
    Io(std::io::Error),
    /// Reading a base from the repository failed.
    Source(super::OdbError),
    /// An object failed the checks of [`ObjectChecker`].
    Fsck(Vec<Finding>),
}

impl std::fmt::Display for IndexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexError::Invalid(reason) => f.write_str(reason),
            IndexError::Io(e) => write!(f, "reading the pack failed: {e}"),
            IndexError::Source(e) => write!(f, "reading a delta base failed: {e}"),
            IndexError::Fsck(findings) => {
                let text: Vec<String> = findings.iter().map(Finding::to_string).collect();
                f.write_str(&text.join("; "))
            }
        }
    }
}

impl std::error::Error for IndexError {}

impl From<std::io::Error> for IndexError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return IndexError::Invalid("the pack ends too early (truncated)".into());
        }
        IndexError::Io(e)
    }
}

fn invalid(reason: impl Into<String>) -> IndexError {
    IndexError::Invalid(reason.into())
}

/// What an entry holds.
#[derive(Debug, Clone, Copy)]
enum What {
    Whole(Kind),
    /// A delta on the entry at this index (an ofs-delta; entries are in pack order).
    OnEntry(u32),
    /// A delta on the object with this id (a ref-delta).
    OnId(ObjectId),
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    /// Where the compressed data starts and ends.
    data: (u64, u64),
    /// Inflated size: the object's, or the delta's.
    size: u64,
    crc32: u32,
    what: What,
    id: Option<ObjectId>,
}

/// Indexes the pack read from `input` into `dir`. `bases` supplies the bases of a thin
/// pack; `None` accepts only self-contained packs. With a `checker`, every commit, tree
/// and tag of the pack is checked as it is resolved (the bases taken from the
/// repository were checked when they arrived).
pub fn index_pack(
    input: impl Read,
    format: gix_hash::Kind,
    dir: &Path,
    bases: Option<&dyn ObjectSource>,
    limits: Limits,
    mut checker: Option<&mut ObjectChecker>,
) -> Result<Indexed, IndexError> {
    let incoming = dir.join("incoming.pack");
    let mut writer = Writer {
        file: BufWriter::with_capacity(
            1 << 16,
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&incoming)?,
        ),
        sha: Hasher::new(format),
        crc: crc32fast::Hasher::new(),
        offset: 0,
    };
    let (mut entries, trailer) = read_entries(input, format, &mut writer, limits, &mut checker)?;
    let mut file = writer.file.into_inner().map_err(|e| e.into_error())?;

    let mut resolver = Resolver::new(&entries, limits);
    let mut reader = File::open(&incoming)?;
    resolver.resolve_in_pack(&mut entries, &mut reader, &mut checker)?;

    // Thin bases, appended after the last entry.
    let mut appended = 0u32;
    let mut end = entries.last().map_or(12, |e| e.data.1);
    loop {
        let wanted = resolver.missing_bases(&entries);
        if wanted.is_empty() {
            break;
        }
        let mut progress = false;
        let mut buf = Vec::new();
        for id in wanted {
            if resolver.known.contains(&id) {
                continue;
            }
            let Some(source) = bases else { break };
            let Some(kind) = source.read(&id, &mut buf).map_err(IndexError::Source)? else {
                continue;
            };
            let (entry, len) = append_whole(&mut file, end, kind, &buf)?;
            end += len;
            appended += 1;
            entries.push(Entry {
                id: Some(id),
                ..entry
            });
            let index = (entries.len() - 1) as u32;
            resolver.known.insert(id);
            let base = Arc::new(std::mem::take(&mut buf));
            resolver.resolve_from(&mut entries, &mut reader, index, base, kind, &mut checker)?;
            progress = true;
        }
        if !progress {
            break;
        }
    }
    let unresolved = entries.iter().filter(|e| e.id.is_none()).count();
    if unresolved > 0 {
        let example = resolver.missing_bases(&entries).into_iter().next();
        return Err(invalid(match example {
            Some(id) => format!(
                "pack has {unresolved} unresolved deltas: base {id} is neither in the pack nor in the repository"
            ),
            None => format!("pack has {unresolved} unresolved deltas"),
        }));
    }
    if entries.len() > u32::MAX as usize {
        return Err(invalid("the pack has too many objects"));
    }

    // The trailer: the sender's, or a new one over the new count and the bases.
    let hash = if appended == 0 {
        file.seek(SeekFrom::Start(end))?;
        file.write_all(trailer.as_slice())?;
        trailer
    } else {
        file.seek(SeekFrom::Start(8))?;
        file.write_all(&(entries.len() as u32).to_be_bytes())?;
        file.seek(SeekFrom::Start(0))?;
        let mut sha = Hasher::new(format);
        std::io::copy(&mut BufReader::with_capacity(1 << 16, &mut file), &mut sha)?;
        let hash = sha.finalize();
        file.seek(SeekFrom::Start(end))?;
        file.write_all(hash.as_slice())?;
        hash
    };
    file.sync_all()?;
    drop(file);

    let data_path = dir.join(format!("pack-{hash}.pack"));
    let index_path = dir.join(format!("pack-{hash}.idx"));
    std::fs::rename(&incoming, &data_path)?;
    let mut index = BufWriter::new(File::create(&index_path)?);
    write_index(&entries, &hash, &mut index)?;
    index.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(Indexed {
        hash,
        data_path,
        index_path,
        num_objects: entries.len() as u32,
        size: end + format.len_in_bytes() as u64,
    })
}

/// Copies what it consumes to the file, hashing it for the trailer and the entry's
/// CRC-32.
struct Writer {
    file: BufWriter<File>,
    sha: Hasher,
    crc: crc32fast::Hasher,
    offset: u64,
}

impl Writer {
    fn take(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.sha.update(bytes);
        self.crc.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

/// Pass one: every entry of the stream, written to the file; whole objects hashed.
/// Returns the entries and the sender's trailer (checked, not yet written).
fn read_entries(
    input: impl Read,
    format: gix_hash::Kind,
    out: &mut Writer,
    limits: Limits,
    checker: &mut Option<&mut ObjectChecker>,
) -> Result<(Vec<Entry>, ObjectId), IndexError> {
    let mut input = std::io::BufReader::with_capacity(1 << 16, input);
    let mut header = [0u8; 12];
    input.read_exact(&mut header)?;
    if &header[..4] != b"PACK" {
        return Err(invalid("the data sent is not a pack (no PACK signature)"));
    }
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if version != 2 && version != 3 {
        return Err(invalid(format!("pack version {version} is not supported")));
    }
    let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    out.take(&header)?;

    let mut entries: Vec<Entry> = Vec::with_capacity((count as usize).min(1 << 16));
    let mut inflate = Decompress::new(true);
    let mut chunk = vec![0u8; 1 << 16];
    for _ in 0..count {
        let offset = out.offset;
        out.crc = crc32fast::Hasher::new();
        let mut byte = [0u8; 1];
        let mut next = |input: &mut BufReader<_>, out: &mut Writer| -> Result<u8, IndexError> {
            input.read_exact(&mut byte)?;
            out.take(&byte)?;
            Ok(byte[0])
        };
        let mut b = next(&mut input, out)?;
        let type_bits = (b >> 4) & 7;
        let mut size = u64::from(b & 15);
        let mut shift = 4;
        while b & 0x80 != 0 {
            b = next(&mut input, out)?;
            if shift > 57 {
                return Err(invalid(format!("bad object header at offset {offset}")));
            }
            size |= u64::from(b & 0x7f) << shift;
            shift += 7;
        }
        let what = match type_bits {
            1 => What::Whole(Kind::Commit),
            2 => What::Whole(Kind::Tree),
            3 => What::Whole(Kind::Blob),
            4 => What::Whole(Kind::Tag),
            6 => {
                b = next(&mut input, out)?;
                let mut distance = u64::from(b & 0x7f);
                while b & 0x80 != 0 {
                    b = next(&mut input, out)?;
                    distance = distance
                        .checked_add(1)
                        .and_then(|d| d.checked_mul(128))
                        .map(|d| d | u64::from(b & 0x7f))
                        .filter(|d| *d <= offset)
                        .ok_or_else(|| invalid(format!("bad delta base offset at {offset}")))?;
                }
                let base = offset
                    .checked_sub(distance)
                    .filter(|_| distance > 0)
                    .ok_or_else(|| invalid(format!("bad delta base offset at {offset}")))?;
                let index = entries
                    .binary_search_by_key(&base, |e| e.offset)
                    .map_err(|_| {
                        invalid(format!(
                            "the delta at offset {offset} names a base at {base}, where no object starts"
                        ))
                    })?;
                What::OnEntry(index as u32)
            }
            7 => {
                let mut id = vec![0u8; format.len_in_bytes()];
                input.read_exact(&mut id)?;
                out.take(&id)?;
                What::OnId(ObjectId::from_bytes_or_panic(&id))
            }
            other => {
                return Err(invalid(format!(
                    "unknown object type {other} at offset {offset}"
                )));
            }
        };
        if size > limits.max_object_bytes {
            return Err(invalid(format!(
                "the object at offset {offset} is {size} bytes, larger than this server accepts ({} bytes)",
                limits.max_object_bytes
            )));
        }
        let data_start = out.offset;

        // Inflate in pieces; hash a whole object as it comes (and keep commits, trees
        // and tags whole, to check them).
        let mut sha = match what {
            What::Whole(kind) => Some(Hasher::object(format, kind, size)),
            _ => None,
        };
        let mut whole = match what {
            What::Whole(kind) if kind != Kind::Blob && checker.is_some() => {
                Some(Vec::with_capacity(size.min(1 << 20) as usize))
            }
            _ => None,
        };
        inflate.reset(true);
        loop {
            let available = input.fill_buf()?;
            if available.is_empty() {
                return Err(invalid("the pack ends too early (truncated)"));
            }
            let (in0, out0) = (inflate.total_in(), inflate.total_out());
            let status = inflate
                .decompress(available, &mut chunk, FlushDecompress::None)
                .map_err(|e| {
                    invalid(format!(
                        "corrupt data in the object at offset {offset}: {e}"
                    ))
                })?;
            let used = (inflate.total_in() - in0) as usize;
            let made = (inflate.total_out() - out0) as usize;
            if inflate.total_out() > size {
                return Err(invalid(format!(
                    "the object at offset {offset} inflates to more than its {size} bytes"
                )));
            }
            if let Some(sha) = sha.as_mut() {
                sha.update(&chunk[..made]);
            }
            if let Some(whole) = whole.as_mut() {
                whole.extend_from_slice(&chunk[..made]);
            }
            out.take(&available[..used])?;
            input.consume(used);
            if status == Status::StreamEnd {
                break;
            }
            if used == 0 && made == 0 {
                return Err(invalid(format!(
                    "corrupt data in the object at offset {offset}"
                )));
            }
        }
        if inflate.total_out() != size {
            return Err(invalid(format!(
                "the object at offset {offset} inflates to {} bytes, its header says {size}",
                inflate.total_out()
            )));
        }
        let id = sha.map(Hasher::finalize);
        if let (Some(checker), Some(whole), Some(id), What::Whole(kind)) =
            (checker.as_deref_mut(), &whole, id, what)
        {
            checker.check(id, kind, whole).map_err(IndexError::Fsck)?;
        }
        entries.push(Entry {
            offset,
            data: (data_start, out.offset),
            size,
            crc32: out.crc.clone().finalize(),
            what,
            id,
        });
    }
    out.file.flush()?;
    let computed = out.sha.clone().finalize();
    let mut trailer = vec![0u8; format.len_in_bytes()];
    input.read_exact(&mut trailer)?;
    let trailer = ObjectId::from_bytes_or_panic(&trailer);
    if trailer != computed {
        return Err(invalid("pack checksum mismatch: the pack is corrupt"));
    }
    if !input.fill_buf()?.is_empty() {
        return Err(invalid("the pack is followed by unexpected data"));
    }
    Ok((entries, trailer))
}

/// Pass two: object ids of the deltas.
struct Resolver {
    /// (base entry, delta entry), sorted.
    on_entry: Vec<(u32, u32)>,
    /// (base id, delta entry), sorted.
    on_id: Vec<(ObjectId, u32)>,
    /// Every id resolved so far.
    known: HashSet<ObjectId>,
    limits: Limits,
}

impl Resolver {
    fn new(entries: &[Entry], limits: Limits) -> Self {
        let mut on_entry = Vec::new();
        let mut on_id = Vec::new();
        let mut known = HashSet::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            match e.what {
                What::Whole(_) => {
                    known.insert(e.id.expect("whole objects are hashed when read"));
                }
                What::OnEntry(base) => on_entry.push((base, i as u32)),
                What::OnId(id) => on_id.push((id, i as u32)),
            }
        }
        on_entry.sort_unstable();
        on_id.sort_unstable();
        Resolver {
            on_entry,
            on_id,
            known,
            limits,
        }
    }

    fn has_deltas(&self, entry: u32, id: &ObjectId) -> bool {
        self.deltas_on(entry, id).next().is_some()
    }

    /// The deltas on `entry` (whose id is `id`).
    fn deltas_on(&self, entry: u32, id: &ObjectId) -> impl Iterator<Item = u32> + '_ {
        let start = self.on_entry.partition_point(|(b, _)| *b < entry);
        let by_entry = self.on_entry[start..]
            .iter()
            .take_while(move |(b, _)| *b == entry)
            .map(|(_, d)| *d);
        let start = self.on_id.partition_point(|(b, _)| b < id);
        let id = *id;
        let by_id = self.on_id[start..]
            .iter()
            .take_while(move |(b, _)| *b == id)
            .map(|(_, d)| *d);
        by_entry.chain(by_id)
    }

    /// Resolves every delta whose chain starts at a whole object of the pack.
    fn resolve_in_pack(
        &mut self,
        entries: &mut [Entry],
        file: &mut File,
        checker: &mut Option<&mut ObjectChecker>,
    ) -> Result<(), IndexError> {
        for i in 0..entries.len() {
            let (What::Whole(kind), Some(id)) = (entries[i].what, entries[i].id) else {
                continue;
            };
            if !self.has_deltas(i as u32, &id) {
                continue;
            }
            let data = inflate_entry(file, &entries[i])?;
            self.resolve_from(entries, file, i as u32, Arc::new(data), kind, checker)?;
        }
        Ok(())
    }

    /// Resolves the deltas on entry `root` (inflated to `data`), and theirs, depth first.
    fn resolve_from(
        &mut self,
        entries: &mut [Entry],
        file: &mut File,
        root: u32,
        data: Arc<Vec<u8>>,
        kind: Kind,
        checker: &mut Option<&mut ObjectChecker>,
    ) -> Result<(), IndexError> {
        let root_id = entries[root as usize].id.expect("a base is resolved");
        let mut pending: Vec<(u32, Arc<Vec<u8>>, u32)> = self
            .deltas_on(root, &root_id)
            .map(|d| (d, data.clone(), 1))
            .collect();
        drop(data);
        while let Some((delta, base, depth)) = pending.pop() {
            let entry = &entries[delta as usize];
            if entry.id.is_some() {
                continue;
            }
            if depth > self.limits.max_delta_depth {
                return Err(invalid(format!(
                    "the delta at offset {} ends a chain of more than {} deltas, longer than \
                     this server accepts",
                    entry.offset, self.limits.max_delta_depth
                )));
            }
            let instructions = inflate_entry(file, entry)?;
            let result = apply_delta(&base, &instructions, self.limits)
                .map_err(|why| invalid(format!("bad delta at offset {}: {why}", entry.offset)))?;
            drop(base);
            let id = super::hash::object_id(root_id.kind(), kind, &result);
            if let Some(checker) = checker.as_deref_mut()
                && kind != Kind::Blob
            {
                checker.check(id, kind, &result).map_err(IndexError::Fsck)?;
            }
            entries[delta as usize].id = Some(id);
            self.known.insert(id);
            if self.has_deltas(delta, &id) {
                let result = Arc::new(result);
                pending.extend(
                    self.deltas_on(delta, &id)
                        .map(|d| (d, result.clone(), depth + 1)),
                );
            }
        }
        Ok(())
    }

    /// Bases named by unresolved ref-deltas that no resolved object has, sorted.
    fn missing_bases(&self, entries: &[Entry]) -> Vec<ObjectId> {
        let mut ids: Vec<ObjectId> = self
            .on_id
            .iter()
            .filter(|(base, delta)| {
                entries[*delta as usize].id.is_none() && !self.known.contains(base)
            })
            .map(|(base, _)| *base)
            .collect();
        ids.dedup();
        ids
    }
}

/// The inflated data of an entry, read back from the pack file.
fn inflate_entry(file: &mut File, entry: &Entry) -> Result<Vec<u8>, IndexError> {
    file.seek(SeekFrom::Start(entry.data.0))?;
    let len = entry.data.1 - entry.data.0;
    let compressed =
        BufReader::with_capacity(len.clamp(64, 1 << 16) as usize, &mut *file).take(len);
    let mut out = Vec::with_capacity(entry.size as usize);
    flate2::bufread::ZlibDecoder::new(compressed).read_to_end(&mut out)?;
    if out.len() as u64 != entry.size {
        return Err(invalid(format!(
            "the object at offset {} changed on disk",
            entry.offset
        )));
    }
    Ok(out)
}

/// Reads one size of a delta's header.
fn delta_size(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Applies the delta `delta` to `base` (git's delta format: the base's size, the
/// result's, then copy and insert instructions).
fn apply_delta(base: &[u8], delta: &[u8], limits: Limits) -> Result<Vec<u8>, String> {
    let mut at = 0;
    let base_size = delta_size(delta, &mut at).ok_or("truncated header")?;
    let result_size = delta_size(delta, &mut at).ok_or("truncated header")?;
    if base_size != base.len() as u64 {
        return Err(format!(
            "its base is {} bytes, it expects {base_size}",
            base.len()
        ));
    }
    if result_size > limits.max_object_bytes {
        return Err(format!(
            "its result is {result_size} bytes, larger than this server accepts ({} bytes)",
            limits.max_object_bytes
        ));
    }
    let mut out = Vec::with_capacity(result_size as usize);
    while let Some(&op) = delta.get(at) {
        at += 1;
        if op & 0x80 != 0 {
            let mut field = |bits: u8, shift: u32| -> Result<usize, String> {
                if op & bits == 0 {
                    return Ok(0);
                }
                let b = *delta.get(at).ok_or("truncated copy instruction")?;
                at += 1;
                Ok(usize::from(b) << shift)
            };
            let offset = field(0x01, 0)? | field(0x02, 8)? | field(0x04, 16)? | field(0x08, 24)?;
            let mut len = field(0x10, 0)? | field(0x20, 8)? | field(0x40, 16)?;
            if len == 0 {
                len = 0x10000;
            }
            let copy = offset
                .checked_add(len)
                .and_then(|end| base.get(offset..end))
                .ok_or("copy outside its base")?;
            out.extend_from_slice(copy);
        } else if op != 0 {
            let insert = delta
                .get(at..at + usize::from(op))
                .ok_or("truncated insert instruction")?;
            at += usize::from(op);
            out.extend_from_slice(insert);
        } else {
            return Err("reserved instruction 0".into());
        }
        if out.len() as u64 > result_size {
            return Err("result longer than its header says".into());
        }
    }
    if out.len() as u64 != result_size {
        return Err("result shorter than its header says".into());
    }
    Ok(out)
}

/// Writes a whole object at `offset` of `file`. Returns its entry (without id) and
/// length.
fn append_whole(
    file: &mut File,
    offset: u64,
    kind: Kind,
    data: &[u8],
) -> Result<(Entry, u64), IndexError> {
    let type_bits: u8 = match kind {
        Kind::Commit => 1,
        Kind::Tree => 2,
        Kind::Blob => 3,
        Kind::Tag => 4,
    };
    let mut bytes = Vec::with_capacity(data.len() / 2 + 32);
    let mut size = data.len() as u64;
    let mut b = (type_bits << 4) | (size & 15) as u8;
    size >>= 4;
    while size > 0 {
        bytes.push(b | 0x80);
        b = (size & 0x7f) as u8;
        size >>= 7;
    }
    bytes.push(b);
    let header_len = bytes.len() as u64;
    let mut encoder = flate2::write::ZlibEncoder::new(bytes, flate2::Compression::fast());
    encoder.write_all(data)?;
    let bytes = encoder.finish()?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&bytes)?;
    let len = bytes.len() as u64;
    let entry = Entry {
        offset,
        data: (offset + header_len, offset + len),
        size: data.len() as u64,
        crc32: crc32fast::hash(&bytes),
        what: What::Whole(kind),
        id: None,
    };
    Ok((entry, len))
}

/// Writes a version 2 index of `entries` (every one resolved) for the pack `hash`.
fn write_index(entries: &[Entry], hash: &ObjectId, out: &mut impl Write) -> std::io::Result<()> {
    let mut sorted: Vec<(ObjectId, u64, u32)> = entries
        .iter()
        .map(|e| (e.id.expect("every entry is resolved"), e.offset, e.crc32))
        .collect();
    sorted.sort_unstable();
    write_index_v2(&sorted, hash, out)
}

/// The index file of a pack holding `sorted` (id, offset, CRC-32), sorted by id.
pub(crate) fn write_index_v2(
    sorted: &[(ObjectId, u64, u32)],
    hash: &ObjectId,
    out: &mut impl Write,
) -> std::io::Result<()> {
    struct Hashing<'a, W> {
        out: &'a mut W,
        sha: Hasher,
    }
    impl<W: Write> Hashing<'_, W> {
        fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.sha.update(bytes);
            self.out.write_all(bytes)
        }
    }
    let mut w = Hashing {
        out,
        sha: Hasher::new(hash.kind()),
    };
    w.put(b"\xfftOc")?;
    w.put(&2u32.to_be_bytes())?;
    let mut fanout = [0u32; 256];
    for (id, _, _) in sorted {
        fanout[usize::from(id.as_slice()[0])] += 1;
    }
    let mut total = 0u32;
    for count in fanout {
        total += count;
        w.put(&total.to_be_bytes())?;
    }
    for (id, _, _) in sorted {
        w.put(id.as_slice())?;
    }
    for (_, _, crc) in sorted {
        w.put(&crc.to_be_bytes())?;
    }
    let mut large = Vec::new();
    for (_, offset, _) in sorted {
        let small = if *offset < 0x8000_0000 {
            *offset as u32
        } else {
            large.push(*offset);
            0x8000_0000 | (large.len() as u32 - 1)
        };
        w.put(&small.to_be_bytes())?;
    }
    for offset in large {
        w.put(&offset.to_be_bytes())?;
    }
    w.put(hash.as_slice())?;
    let checksum = w.sha.finalize();
    w.out.write_all(checksum.as_slice())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::process::{Command, Stdio};

    use super::*;
    use crate::repo::odb::LocalPack;

    const LIMITS: Limits = Limits {
        max_object_bytes: 1 << 30,
        max_delta_depth: 4095,
    };

    fn git(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        let mut child = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?} failed");
        out.stdout
    }

    /// A repository with `commits` commits editing a few files (so packs hold deltas).
    fn repository(commits: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q", "-b", "main"], None);
        git(d, &["config", "user.name", "T"], None);
        git(d, &["config", "user.email", "t@example.com"], None);
        for i in 0..commits {
            for f in 0..3 {
                let mut text = String::new();
                for line in 0..200 {
                    text.push_str(&format!(
                        "file {f} line {line} {}\n",
                        if line % 37 == i % 37 { i } else { 0 }
                    ));
                }
                std::fs::write(d.join(format!("f{f}.txt")), text).unwrap();
            }
            git(d, &["add", "."], None);
            git(d, &["commit", "-q", "-m", &format!("c{i}")], None);
        }
        dir
    }

    fn pack_of(repo: &Path, revs: &str, thin: bool) -> Vec<u8> {
        let mut args = vec!["pack-objects", "--stdout", "--revs", "-q"];
        if thin {
            args.push("--thin");
        }
        git(repo, &args, Some(revs.as_bytes()))
    }

    fn ids_in(index_path: &Path) -> Vec<ObjectId> {
        let index = gix_pack::index::File::at(index_path, gix_hash::Kind::Sha1).unwrap();
        let mut ids: Vec<_> = index.iter().map(|e| e.oid).collect();
        ids.sort();
        ids
    }

    #[test]
    fn writes_the_index_git_writes() {
        let repo = repository(30);
        let pack = pack_of(repo.path(), "main\n", false);
        let out = tempfile::tempdir().unwrap();
        let indexed = index_pack(
            &pack[..],
            gix_hash::Kind::Sha1,
            out.path(),
            None,
            LIMITS,
            None,
        )
        .unwrap();
        assert_eq!(std::fs::read(&indexed.data_path).unwrap(), pack);

        std::fs::write(out.path().join("theirs.pack"), &pack).unwrap();
        git(out.path(), &["index-pack", "theirs.pack"], None);
        let theirs = std::fs::read(out.path().join("theirs.idx")).unwrap();
        assert_eq!(std::fs::read(&indexed.index_path).unwrap(), theirs);
        assert_eq!(indexed.num_objects, 30 * 5);
        assert_eq!(
            indexed.data_path.file_name().unwrap().to_str().unwrap(),
            format!("pack-{}.pack", indexed.hash)
        );
    }

    #[test]
    fn completes_a_thin_pack_from_the_repository() {
        let repo = repository(12);
        let full = pack_of(repo.path(), "main~4\n", false);
        let thin = pack_of(repo.path(), "main\n^main~4\n", true);
        let base_dir = tempfile::tempdir().unwrap();
        let base = index_pack(
            &full[..],
            gix_hash::Kind::Sha1,
            base_dir.path(),
            None,
            LIMITS,
            None,
        )
        .unwrap();
        let existing = LocalPack::open(&base.index_path, gix_hash::Kind::Sha1).unwrap();

        let out = tempfile::tempdir().unwrap();
        let Err(IndexError::Invalid(reason)) = index_pack(
            &thin[..],
            gix_hash::Kind::Sha1,
            out.path(),
            None,
            LIMITS,
            None,
        ) else {
            panic!("a thin pack without its bases is refused");
        };
        assert!(reason.contains("unresolved deltas"), "{reason}");

        let out = tempfile::tempdir().unwrap();
        let indexed = index_pack(
            &thin[..],
            gix_hash::Kind::Sha1,
            out.path(),
            Some(&existing),
            LIMITS,
            None,
        )
        .unwrap();
        std::fs::write(out.path().join("thin.pack"), &thin).unwrap();
        // git's own completion of the same pack, in the repository that has the bases.
        let theirs = git(
            repo.path(),
            &["index-pack", "--stdin", "--fix-thin", "--keep"],
            Some(&thin),
        );
        let name = String::from_utf8(theirs).unwrap();
        let name = name.split_whitespace().last().unwrap();
        let their_index = repo
            .path()
            .join(format!(".git/objects/pack/pack-{name}.idx"));
        assert_eq!(ids_in(&indexed.index_path), ids_in(&their_index));
        assert!(indexed.num_objects as usize > 4 * 5 - 1);

        // The completed pack is whole: every object reads back and hashes to its id.
        let local = LocalPack::open(&indexed.index_path, gix_hash::Kind::Sha1).unwrap();
        let mut buf = Vec::new();
        for id in local.ids() {
            let kind = local.read(&id, &mut buf).unwrap().unwrap();
            assert_eq!(
                super::super::hash::object_id(gix_hash::Kind::Sha1, kind, &buf),
                id
            );
        }
        git(
            out.path(),
            &["verify-pack", indexed.index_path.to_str().unwrap()],
            None,
        );
    }

    #[test]
    fn refuses_damaged_packs_with_a_reason() {
        let repo = repository(5);
        let pack = pack_of(repo.path(), "main\n", false);
        let reason = |bytes: &[u8]| {
            let out = tempfile::tempdir().unwrap();
            match index_pack(bytes, gix_hash::Kind::Sha1, out.path(), None, LIMITS, None) {
                Err(IndexError::Invalid(reason)) => reason,
                other => panic!("expected a refusal, got {other:?}"),
            }
        };
        assert!(reason(&pack[..pack.len() / 2]).contains("truncated"));
        assert!(reason(&pack[..pack.len() - 1]).contains("truncated"));
        let mut flipped = pack.clone();
        flipped[pack.len() - 30] ^= 0x55;
        let text = reason(&flipped);
        assert!(
            text.contains("corrupt") || text.contains("checksum"),
            "{text}"
        );
        assert!(reason(b"NOPE\0\0\0\x02\0\0\0\x01").contains("not a pack"));
        let mut junk = pack.clone();
        junk.extend_from_slice(b"junk");
        assert!(reason(&junk).contains("unexpected data"));
        let small = Limits {
            max_object_bytes: 100,
            ..LIMITS
        };
        let out = tempfile::tempdir().unwrap();
        let Err(IndexError::Invalid(text)) = index_pack(
            &pack[..],
            gix_hash::Kind::Sha1,
            out.path(),
            None,
            small,
            None,
        ) else {
            panic!("an object over the limit is refused");
        };
        assert!(text.contains("larger than this server accepts"), "{text}");
    }

    #[test]
    fn index_offsets_past_two_gigabytes_use_the_large_table() {
        let ids: Vec<ObjectId> = (0u8..4)
            .map(|i| ObjectId::from_bytes_or_panic(&[i * 60; 20]))
            .collect();
        let sorted = vec![
            (ids[0], 12, 1),
            (ids[1], 0x7fff_ffff, 2),
            (ids[2], 0x8000_0000, 3),
            (ids[3], 5 << 32, 4),
        ];
        let hash = ObjectId::from_bytes_or_panic(&[9; 20]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pack-x.idx");
        let mut bytes = Vec::new();
        write_index_v2(&sorted, &hash, &mut bytes).unwrap();
        let (body, checksum) = bytes.split_at(bytes.len() - 20);
        assert_eq!(&<sha1::Sha1 as sha1::Digest>::digest(body)[..], checksum);
        std::fs::write(&path, &bytes).unwrap();
        let index = gix_pack::index::File::at(&path, gix_hash::Kind::Sha1).unwrap();
        assert_eq!(index.num_objects(), 4);
        for (id, offset, crc) in &sorted {
            let i = index.lookup(id).unwrap();
            assert_eq!(index.pack_offset_at_index(i), *offset);
            assert_eq!(index.crc32_at_index(i), Some(*crc));
        }
        assert_eq!(index.pack_checksum(), hash.as_ref());
    }
}
