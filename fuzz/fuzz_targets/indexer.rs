//! The pack indexer on received packs (seeded with real packs, mutated): indexed, or
//! refused with a reason; every object of an indexed pack checked as fsck does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::repo::indexer::{Limits, index_pack};
use stowage::repo::object_check::ObjectChecker;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = Limits {
        max_object_bytes: 1 << 20,
        max_delta_depth: 64,
    };
    let mut checker = ObjectChecker::new();
    let _ = index_pack(
        data,
        gix_hash::Kind::Sha1,
        dir.path(),
        None,
        limits,
        Some(&mut checker),
    );
});
