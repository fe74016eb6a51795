//! Writing packs for clients ([gitformat-pack]).
//!
//! Two ways, both streamed in chunks through a channel so a pack is never whole in
//! memory:
//! - [`stream_stored_packs`]: for a client that has nothing, the live packs' entries
//!   verbatim, behind one header and before one trailer. Nothing is decompressed; an
//!   OFS_DELTA's offset is relative to its own position, so it stays valid inside a
//!   copied pack.
//! - [`write_objects`]: a chosen set of objects, each written whole (no deltas).
//!
//! [gitformat-pack]: https://git-scm.com/docs/gitformat-pack

use std::collections::HashSet;
use std::sync::Arc;

use super::hash::Hasher;
use bytes::{BufMut, Bytes, BytesMut};
use gix_hash::ObjectId;
use gix_object::Kind;
use tokio::sync::mpsc;

use super::odb::{Layout, Odb, OdbError, Pack, read_required};

/// What producing a pack yields, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackEvent {
    /// Pack bytes.
    Data(Bytes),
    /// A line for the user (sent on side-band 2 when the client wants progress).
    Progress(String),
}

/// Pack bytes and progress as they are produced; an error ends the stream.
pub type PackChunks = mpsc::Receiver<Result<PackEvent, OdbError>>;
/// The sending side of [`PackChunks`].
pub type PackSender = mpsc::Sender<Result<PackEvent, OdbError>>;

/// Size of the chunks [`write_objects`] sends.
const OUT_CHUNK: usize = 256 * 1024;

fn header(count: u32) -> Bytes {
    let mut h = BytesMut::with_capacity(12);
    h.put_slice(b"PACK");
    h.put_u32(2);
    h.put_u32(count);
    h.freeze()
}

/// Which stored entries [`stream_stored_packs`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Every object.
    All,
    /// Every commit, tree and tag: no blob (a `blob:none` clone).
    WithoutBlobs,
}

/// Streams the objects of the live packs that `select` names, as one pack.
///
/// Packs may share objects (a completed thin pack carries copies of its bases), and
/// git refuses a pack that holds an object twice. A single pack sent whole goes out
/// byte for byte, its own header and trailer included (nothing is hashed). Otherwise
/// the copies are left out (and blobs, for [`Stored::WithoutBlobs`]), and the headers
/// of OFS_DELTA entries are rewritten: a delta whose base was left out as a copy
/// becomes a REF_DELTA naming the base (sent earlier in the stream), and the others
/// get the distance to their base as it is in the output. A delta has the kind of its
/// base (git never deltas across kinds), so no blob is ever the base of a sent entry.
/// Entry data is never decompressed.
pub fn stream_stored_packs(odb: Arc<Odb>, select: Stored) -> PackChunks {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = copy_stored(&odb, select, &tx) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// [`stream_stored_packs`] on the calling thread (blocking); a client that went away
/// is not an error.
pub fn copy_stored(odb: &Odb, select: Stored, tx: &PackSender) -> Result<(), OdbError> {
    match copy_packs(odb, select, tx) {
        Err(OdbError::Cancelled) => Ok(()),
        other => other,
    }
}

/// What to leave out of each pack.
struct CopyPlan {
    count: u32,
    /// Per pack (in `odb.packs()` order), per entry in pack order
    /// ([`Pack::entries_by_offset`](super::odb::Pack::entries_by_offset)): whether it is
    /// left out. `None` when the whole pack is sent.
    dropped: Vec<Option<Vec<bool>>>,
}

fn plan_copy(odb: &Odb, select: Stored) -> Result<CopyPlan, OdbError> {
    let packs = odb.packs();
    let mut dropped = vec![None; packs.len()];
    let several = packs.len() > 1;
    if !several && select == Stored::All {
        let count = packs.iter().map(|p| p.entry.objects).sum();
        return Ok(CopyPlan { count, dropped });
    }
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut count = 0u32;
    // Oldest first: the copies left out are the ones in newer packs.
    for (i, pack) in packs.iter().enumerate().rev() {
        let entries = pack.entries_by_offset();
        let mut drop = match select {
            Stored::All => vec![false; entries.len()],
            Stored::WithoutBlobs => blob_mask(odb, pack)?,
        };
        for (j, (_, id)) in entries.iter().enumerate() {
            if drop[j] {
                continue;
            }
            if several && !seen.insert(*id) {
                drop[j] = true;
            } else {
                count += 1;
            }
        }
        if drop.contains(&true) {
            dropped[i] = Some(drop);
        }
    }
    Ok(CopyPlan { count, dropped })
}

/// Which of a pack's entries (in pack order) hold blobs.
fn blob_mask(odb: &Odb, pack: &Pack) -> Result<Vec<bool>, OdbError> {
    let layout = pack.layout(|| layout(odb, pack))?;
    Ok(layout.kinds.iter().map(|kind| *kind == 3).collect())
}

/// Works out a pack's [`Layout`] from its entry headers alone (a delta's kind is its
/// base's): no entry is decompressed, except the rare REF_DELTA whose base is in
/// another pack.
fn layout(odb: &Odb, pack: &Pack) -> Result<Layout, OdbError> {
    let bytes = odb.data(pack)?.bytes.clone();
    let corrupt = |message: &str| OdbError::Corrupt {
        pack: pack.pack_key().to_string(),
        message: message.to_owned(),
    };
    let entries = pack.entries_by_offset();
    let position = |offset: u64| entries.binary_search_by_key(&offset, |e| e.0).ok();
    // Kind 0 while unknown: an OFS_DELTA's base comes before it, a REF_DELTA's may not.
    let mut kinds = vec![0u8; entries.len()];
    let mut ofs_base = vec![u32::MAX; entries.len()];
    let mut later: Vec<(usize, ObjectId)> = Vec::new();
    for (j, &(offset, _)) in entries.iter().enumerate() {
        let entry = bytes
            .get(offset as usize..)
            .ok_or_else(|| corrupt("entry outside the pack"))?;
        let (kind, _, header_len) =
            parse_entry_header(entry).ok_or_else(|| corrupt("bad entry header"))?;
        kinds[j] = match kind {
            1..=4 => kind,
            OFS_DELTA => {
                let (distance, _) =
                    parse_ofs(&entry[header_len..]).ok_or_else(|| corrupt("bad delta offset"))?;
                let base = offset
                    .checked_sub(distance)
                    .and_then(position)
                    .ok_or_else(|| corrupt("delta base is not an entry"))?;
                ofs_base[j] = base as u32;
                kinds[base]
            }
            REF_DELTA => {
                let base = entry
                    .get(header_len..header_len + trailer_len(odb) as usize)
                    .map(ObjectId::from_bytes_or_panic)
                    .ok_or_else(|| corrupt("truncated delta base"))?;
                later.push((j, base));
                0
            }
            _ => return Err(corrupt("unknown entry type")),
        };
    }
    // REF_DELTAs (rare in stored packs: a merged pack's deltas on dropped copies):
    // their base may come later in the pack, or be in another pack. Whatever still
    // has no kind after that is decoded.
    let mut buf = Vec::new();
    for (j, base) in later {
        let in_pack = pack
            .index
            .lookup(base)
            .and_then(|i| position(pack.index.pack_offset_at_index(i)))
            .map(|k| kinds[k])
            .filter(|kind| *kind != 0);
        kinds[j] = match in_pack {
            Some(kind) => kind,
            None => kind_bits(super::odb::read_required(odb, &base, &mut buf)?),
        };
    }
    for (j, kind) in kinds.iter_mut().enumerate() {
        if *kind == 0 {
            *kind = kind_bits(super::odb::read_required(odb, &entries[j].1, &mut buf)?);
        }
    }
    Ok(Layout { kinds, ofs_base })
}

/// The length of a pack's trailer, and of an object id, in the repository's format.
fn trailer_len(odb: &Odb) -> u64 {
    odb.format().len_in_bytes() as u64
}

fn kind_bits(kind: Kind) -> u8 {
    match kind {
        Kind::Commit => 1,
        Kind::Tree => 2,
        Kind::Blob => 3,
        Kind::Tag => 4,
    }
}

fn copy_packs(odb: &Odb, select: Stored, tx: &PackSender) -> Result<(), OdbError> {
    let plan = plan_copy(odb, select)?;
    let mut out = Output {
        tx,
        hasher: Hasher::new(odb.format()),
        written: 0,
    };
    out.progress(format!("Enumerating objects: {}, done.\n", plan.count))?;
    if let ([pack], [None]) = (odb.packs(), plan.dropped.as_slice()) {
        // The stored file is the answer, trailer and all.
        odb.for_each_pack_chunk(pack, 0..pack.entry.size, OUT_CHUNK, |chunk| {
            out.send_unhashed(chunk)
        })?;
        out.progress(format!("Total {} (all as stored)\n", plan.count))?;
        return Ok(());
    }
    out.send(header(plan.count))?;
    // Oldest first, so copies (in newer packs) are the entries left out.
    for (i, pack) in odb.packs().iter().enumerate().rev() {
        let end = pack.entry.size.saturating_sub(trailer_len(odb));
        match &plan.dropped[i] {
            // Entries sit between the 12-byte header and the trailer.
            None => odb.for_each_pack_chunk(pack, 12..end, OUT_CHUNK, |chunk| out.send(chunk))?,
            Some(drop) => copy_filtered(odb, pack, drop, &mut out)?,
        }
    }
    let digest = Bytes::copy_from_slice(out.hasher.clone().finalize().as_slice());
    out.send(digest)?;
    out.progress(format!("Total {} (all as stored)\n", plan.count))?;
    Ok(())
}

/// The pack being written: hashes and counts what it sends.
struct Output<'a> {
    tx: &'a PackSender,
    hasher: Hasher,
    written: u64,
}

impl Output<'_> {
    fn send(&mut self, chunk: Bytes) -> Result<(), OdbError> {
        self.hasher.update(&chunk);
        self.written += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(PackEvent::Data(chunk)))
            .map_err(|_| OdbError::Cancelled)
    }

    /// Sends bytes whose checksum is already part of them (a whole stored pack).
    fn send_unhashed(&mut self, chunk: Bytes) -> Result<(), OdbError> {
        self.written += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(PackEvent::Data(chunk)))
            .map_err(|_| OdbError::Cancelled)
    }

    fn progress(&self, line: String) -> Result<(), OdbError> {
        self.tx
            .blocking_send(Ok(PackEvent::Progress(line)))
            .map_err(|_| OdbError::Cancelled)
    }
}

fn copy_filtered(
    odb: &Odb,
    pack: &Pack,
    dropped: &[bool],
    out: &mut Output<'_>,
) -> Result<(), OdbError> {
    let corrupt = |message: &str| OdbError::Corrupt {
        pack: pack.pack_key().to_string(),
        message: message.to_owned(),
    };
    let end = pack.entry.size.saturating_sub(trailer_len(odb));
    let bytes = odb.data(pack)?.bytes.clone();
    let entries = pack.entries_by_offset();
    let layout = pack.layout(|| layout(odb, pack))?;
    // Where each kept entry starts in the output.
    let mut moved = vec![u64::MAX; entries.len()];
    let mut buf = Vec::with_capacity(OUT_CHUNK * 2);
    for (j, &(offset, _)) in entries.iter().enumerate() {
        if dropped[j] {
            continue;
        }
        let next = entries.get(j + 1).map_or(end, |e| e.0);
        let entry = bytes
            .get(offset as usize..next as usize)
            .ok_or_else(|| corrupt("entry outside the pack"))?;
        let here = out.written + buf.len() as u64;
        moved[j] = here;
        let (kind, size, header_len) =
            parse_entry_header(entry).ok_or_else(|| corrupt("bad entry header"))?;
        if kind == OFS_DELTA {
            let (distance, used) =
                parse_ofs(&entry[header_len..]).ok_or_else(|| corrupt("bad delta offset"))?;
            let base = layout.ofs_base[j] as usize;
            if offset.checked_sub(distance) != entries.get(base).map(|e| e.0) {
                return Err(corrupt("delta base is not an entry"));
            }
            let payload = &entry[header_len + used..];
            if dropped[base] {
                write_type_and_size(REF_DELTA, size, &mut buf);
                buf.extend_from_slice(entries[base].1.as_slice());
            } else {
                write_type_and_size(OFS_DELTA, size, &mut buf);
                write_ofs(here - moved[base], &mut buf);
            }
            buf.extend_from_slice(payload);
        } else {
            buf.extend_from_slice(entry);
        }
        if buf.len() >= OUT_CHUNK {
            out.send(Bytes::from(std::mem::take(&mut buf)))?;
        }
    }
    if !buf.is_empty() {
        out.send(Bytes::from(buf))?;
    }
    Ok(())
}

const OFS_DELTA: u8 = 6;
const REF_DELTA: u8 = 7;

/// Type, size and length of a pack entry header.
fn parse_entry_header(entry: &[u8]) -> Option<(u8, u64, usize)> {
    let mut c = *entry.first()?;
    let kind = (c >> 4) & 7;
    let mut size = u64::from(c & 0x0f);
    let mut shift = 4;
    let mut used = 1;
    while c & 0x80 != 0 {
        c = *entry.get(used)?;
        used += 1;
        if shift > 57 {
            return None;
        }
        size |= u64::from(c & 0x7f) << shift;
        shift += 7;
    }
    Some((kind, size, used))
}

/// The OFS_DELTA base distance, in git's offset encoding (each continuation adds one).
fn parse_ofs(data: &[u8]) -> Option<(u64, usize)> {
    let mut c = *data.first()?;
    let mut value = u64::from(c & 0x7f);
    let mut used = 1;
    while c & 0x80 != 0 {
        c = *data.get(used)?;
        used += 1;
        value = value.checked_add(1)?.checked_mul(128)? | u64::from(c & 0x7f);
    }
    Some((value, used))
}

fn write_ofs(mut value: u64, out: &mut Vec<u8>) {
    let mut bytes = [0u8; 10];
    let mut i = bytes.len() - 1;
    bytes[i] = (value & 0x7f) as u8;
    value >>= 7;
    while value != 0 {
        value -= 1;
        i -= 1;
        bytes[i] = 0x80 | (value & 0x7f) as u8;
        value >>= 7;
    }
    out.extend_from_slice(&bytes[i..]);
}

fn write_type_and_size(kind: u8, mut size: u64, out: &mut Vec<u8>) {
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size != 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
}

/// The pack entry header of a whole object: type and size.
fn entry_header(kind: Kind, size: usize, out: &mut Vec<u8>) {
    let type_bits: u8 = match kind {
        Kind::Commit => 1,
        Kind::Tree => 2,
        Kind::Blob => 3,
        Kind::Tag => 4,
    };
    write_type_and_size(type_bits, size as u64, out);
}

/// Writes `ids` (which `odb` must have) as a pack. Stored entries are copied as they
/// are, compressed, whenever the client can use them: whole objects always, deltas when
/// their base is in the same pack or in `client_has` (a thin pack), sent as REF_DELTA
/// naming it, which git resolves in any order. Other deltas are resolved and written
/// whole, zlib level 1.
/// Blocking: run it on a `spawn_blocking` thread; chunks go to `tx` as they fill.
pub fn write_objects(
    odb: &Odb,
    ids: &[ObjectId],
    client_has: &HashSet<ObjectId>,
    tx: &PackSender,
) -> Result<(), OdbError> {
    let sending: HashSet<ObjectId> = ids.iter().copied().collect();
    let mut out = Output {
        tx,
        hasher: Hasher::new(odb.format()),
        written: 0,
    };
    out.progress(format!("Enumerating objects: {}, done.\n", ids.len()))?;
    let mut buf = Vec::with_capacity(OUT_CHUNK * 2);
    buf.extend_from_slice(&header(ids.len() as u32));
    let mut object = Vec::new();
    let mut reused = 0usize;
    // One compressor for every object, reset in between (setting one up is costly).
    let mut compress = flate2::Compress::new(flate2::Compression::fast(), true);
    for id in ids {
        if copy_entry(odb, id, &sending, client_has, &mut buf)? {
            reused += 1;
        } else {
            let kind = read_required(odb, id, &mut object)?;
            entry_header(kind, object.len(), &mut buf);
            deflate(&mut compress, &object, &mut buf);
        }
        if buf.len() >= OUT_CHUNK {
            out.send(Bytes::from(std::mem::take(&mut buf)))?;
        }
    }
    if !buf.is_empty() {
        out.send(Bytes::from(buf))?;
    }
    let digest = Bytes::copy_from_slice(out.hasher.clone().finalize().as_slice());
    out.send(digest)?;
    out.progress(format!("Total {} (reused {reused} as stored)\n", ids.len()))?;
    Ok(())
}

/// Appends `data` to `out` as one zlib stream.
fn deflate(compress: &mut flate2::Compress, data: &[u8], out: &mut Vec<u8>) {
    compress.reset();
    let mut input = data;
    loop {
        // Room for the whole stream in the worst case (stored blocks).
        out.reserve(input.len() + input.len() / 1000 + 64);
        let before = compress.total_in();
        let status = compress
            .compress_vec(input, out, flate2::FlushCompress::Finish)
            .expect("deflating into memory cannot fail");
        input = &input[(compress.total_in() - before) as usize..];
        if status == flate2::Status::StreamEnd {
            return;
        }
    }
}

/// Appends the stored entry of `id` to `out` if the client can use it as it is;
/// `false` if the object must be written whole instead.
fn copy_entry(
    odb: &Odb,
    id: &ObjectId,
    sending: &HashSet<ObjectId>,
    client_has: &HashSet<ObjectId>,
    out: &mut Vec<u8>,
) -> Result<bool, OdbError> {
    let usable = |base: &ObjectId| sending.contains(base) || client_has.contains(base);
    let Some((pack, index)) = odb.locate(id) else {
        return Ok(false);
    };
    let loaded = odb.data(pack)?;
    let offset = pack.index.pack_offset_at_index(index);
    let end = pack.entry_end(offset);
    let corrupt = |message: &str| OdbError::Corrupt {
        pack: pack.pack_key().to_string(),
        message: message.to_owned(),
    };
    let raw = loaded
        .bytes
        .get(offset as usize..end as usize)
        .ok_or_else(|| corrupt("entry outside the pack"))?;
    let (kind, size, header_len) =
        parse_entry_header(raw).ok_or_else(|| corrupt("bad entry header"))?;
    match kind {
        1..=4 => out.extend_from_slice(raw),
        OFS_DELTA => {
            let (distance, used) =
                parse_ofs(&raw[header_len..]).ok_or_else(|| corrupt("bad delta offset"))?;
            let base = offset
                .checked_sub(distance)
                .and_then(|o| pack.id_at(o))
                .ok_or_else(|| corrupt("delta base is not an entry"))?;
            if !usable(&base) {
                return Ok(false);
            }
            write_type_and_size(REF_DELTA, size, out);
            out.extend_from_slice(base.as_slice());
            out.extend_from_slice(&raw[header_len + used..]);
        }
        REF_DELTA => {
            let base = raw
                .get(header_len..header_len + trailer_len(odb) as usize)
                .map(ObjectId::from_bytes_or_panic)
                .ok_or_else(|| corrupt("truncated delta base"))?;
            if !usable(&base) {
                return Ok(false);
            }
            out.extend_from_slice(raw);
        }
        _ => return Err(corrupt("unknown entry type")),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_headers_use_git_varints() {
        let mut out = Vec::new();
        entry_header(Kind::Blob, 5, &mut out);
        assert_eq!(out, [0x35]);
        out.clear();
        entry_header(Kind::Commit, 300, &mut out);
        // 300 = 0b1_0010_1100: low 4 bits 1100, then 0b10010 = 18.
        assert_eq!(out, [0x80 | 0x10 | 0x0c, 18]);
        assert_eq!(parse_entry_header(&out), Some((1, 300, 2)));
    }

    #[test]
    fn ofs_offsets_round_trip() {
        for value in [
            0u64,
            1,
            127,
            128,
            129,
            16_511,
            16_512,
            1 << 20,
            (1 << 35) + 17,
        ] {
            let mut out = Vec::new();
            write_ofs(value, &mut out);
            assert_eq!(parse_ofs(&out), Some((value, out.len())), "{value}");
        }
        // Git's own encoding of 128: one continuation byte then zero.
        let mut out = Vec::new();
        write_ofs(128, &mut out);
        assert_eq!(out, [0x80, 0x00]);
    }
}
