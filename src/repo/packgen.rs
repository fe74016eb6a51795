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

use std::io::Write;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use gix_hash::ObjectId;
use gix_object::Kind;
use sha1::{Digest, Sha1};
use stowage_store::ObjectStore;
use tokio::sync::mpsc;

use super::odb::{ObjectSource, Odb, OdbError, read_required};

/// Pack bytes as they are produced; an error ends the stream.
pub type PackChunks = mpsc::Receiver<Result<Bytes, OdbError>>;

/// Bytes read from the store per request when copying a stored pack.
const COPY_CHUNK: u64 = 4 * 1024 * 1024;
/// Size of the chunks [`write_objects`] sends.
const OUT_CHUNK: usize = 256 * 1024;

fn header(count: u32) -> Bytes {
    let mut h = BytesMut::with_capacity(12);
    h.put_slice(b"PACK");
    h.put_u32(2);
    h.put_u32(count);
    h.freeze()
}

/// Streams every object of the live packs as one pack.
pub fn stream_stored_packs(store: Arc<dyn ObjectStore>, odb: &Odb) -> PackChunks {
    let (tx, rx) = mpsc::channel(4);
    let packs: Vec<_> = odb
        .packs()
        .iter()
        .map(|p| (p.pack_key().clone(), p.entry.size))
        .collect();
    let count: u32 = odb.packs().iter().map(|p| p.entry.objects).sum();
    tokio::spawn(async move {
        let mut hasher = Sha1::new();
        let head = header(count);
        hasher.update(&head);
        if tx.send(Ok(head)).await.is_err() {
            return;
        }
        for (key, size) in packs {
            // Entries sit between the 12-byte header and the 20-byte trailer.
            let (mut at, end) = (12u64, size.saturating_sub(20));
            while at < end {
                let upto = (at + COPY_CHUNK).min(end);
                match store.get_range(&key, (at..upto).into()).await {
                    Ok(chunk) => {
                        hasher.update(&chunk);
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
                at = upto;
            }
        }
        let _ = tx
            .send(Ok(Bytes::copy_from_slice(&hasher.finalize())))
            .await;
    });
    rx
}

/// The pack entry header: type and size in git's variable-length encoding.
fn entry_header(kind: Kind, size: usize, out: &mut Vec<u8>) {
    let type_bits: u8 = match kind {
        Kind::Commit => 1,
        Kind::Tree => 2,
        Kind::Blob => 3,
        Kind::Tag => 4,
    };
    let mut size = size as u64;
    let mut byte = (type_bits << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size != 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
}

/// Writes `ids` (which `source` must have) as a pack, whole objects, zlib level 1.
/// Blocking: run it on a `spawn_blocking` thread; chunks go to `tx` as they fill.
pub fn write_objects(
    source: &dyn ObjectSource,
    ids: &[ObjectId],
    tx: &mpsc::Sender<Result<Bytes, OdbError>>,
) -> Result<(), OdbError> {
    let mut hasher = Sha1::new();
    let mut out = Vec::with_capacity(OUT_CHUNK * 2);
    let emit = |out: &mut Vec<u8>, hasher: &mut Sha1| -> bool {
        hasher.update(&out[..]);
        let chunk = Bytes::from(std::mem::take(out));
        tx.blocking_send(Ok(chunk)).is_ok()
    };
    out.extend_from_slice(&header(ids.len() as u32));
    let mut buf = Vec::new();
    for id in ids {
        let kind = read_required(source, id, &mut buf)?;
        entry_header(kind, buf.len(), &mut out);
        let mut z = flate2::write::ZlibEncoder::new(&mut out, flate2::Compression::fast());
        z.write_all(&buf).expect("writing to a Vec cannot fail");
        z.finish().expect("writing to a Vec cannot fail");
        if out.len() >= OUT_CHUNK && !emit(&mut out, &mut hasher) {
            return Ok(()); // the client went away
        }
    }
    hasher.update(&out[..]);
    let digest = hasher.clone().finalize();
    out.extend_from_slice(&digest);
    let _ = tx.blocking_send(Ok(Bytes::from(out)));
    Ok(())
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
    }
}
