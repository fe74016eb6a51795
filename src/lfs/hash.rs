//! SHA-256 that can stop and go on elsewhere: its state after a whole number of
//! 64-byte blocks is saved with an upload (see [`super::tus`]), so that any instance
//! resumes hashing where the last one stopped, without reading back what was stored.
//! The compression function is sha2's; only the state and the final padding are kept
//! here.

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

/// SHA-256's initial state.
const INITIAL: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A SHA-256 in progress.
#[derive(Debug, Clone)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed so far, including `pending`.
    len: u64,
    /// The start of an unfinished block (fewer than 64 bytes).
    pending: Vec<u8>,
}

/// The state after a whole number of blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedSha256 {
    pub state: [u32; 8],
    pub len: u64,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        ResumableSha256 {
            state: INITIAL,
            len: 0,
            pending: Vec::with_capacity(64),
        }
    }
}

fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    debug_assert_eq!(blocks.len() % 64, 0);
    let blocks: Vec<GenericArray<u8, _>> = blocks
        .chunks_exact(64)
        .map(GenericArray::clone_from_slice)
        .collect();
    sha2::compress256(state, &blocks);
}

impl ResumableSha256 {
    pub fn resume(saved: &SavedSha256) -> Self {
        ResumableSha256 {
            state: saved.state,
            len: saved.len,
            pending: Vec::with_capacity(64),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < 64 {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            compress(&mut self.state, &block);
            self.pending = block;
            self.pending.clear();
        }
        let whole = data.len() / 64 * 64;
        // In steps, so that the block list stays small.
        for chunk in data[..whole].chunks(1 << 20) {
            compress(&mut self.state, chunk);
        }
        self.pending.extend_from_slice(&data[whole..]);
    }

    /// The state to resume from, if a whole number of blocks was hashed.
    pub fn save(&self) -> Option<SavedSha256> {
        self.pending.is_empty().then_some(SavedSha256 {
            state: self.state,
            len: self.len,
        })
    }

    pub fn finish(self) -> [u8; 32] {
        let mut state = self.state;
        let mut tail = self.pending;
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        compress(&mut state, &tail);
        let mut out = [0u8; 32];
        for (word, bytes) in state.iter().zip(out.chunks_exact_mut(4)) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn equals_sha256_however_it_is_split_and_resumed() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 128, 1000, 5000] {
            let expected: [u8; 32] = Sha256::digest(&data[..len]).into();
            let mut whole = ResumableSha256::default();
            whole.update(&data[..len]);
            assert_eq!(whole.finish(), expected, "len {len}");
            for split in [0, 3, 64, 100, len / 2] {
                let split = split.min(len);
                let mut first = ResumableSha256::default();
                first.update(&data[..split]);
                let mut second = first.clone();
                second.update(&data[split..len]);
                assert_eq!(second.finish(), expected, "len {len} split {split}");
            }
        }
        // Saved after whole blocks, resumed in a fresh hasher.
        let mut first = ResumableSha256::default();
        first.update(&data[..4096]);
        let saved = first.save().expect("whole blocks");
        let mut again = ResumableSha256::resume(&saved);
        again.update(&data[4096..]);
        assert_eq!(again.finish(), <[u8; 32]>::from(Sha256::digest(&data)));
        let mut odd = ResumableSha256::default();
        odd.update(&data[..10]);
        assert!(odd.save().is_none());
    }
}
