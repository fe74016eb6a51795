//! Object checks of received commits, trees, tags and `.gitmodules`: the first byte
//! picks the kind, the rest is the object.
#![no_main]

use gix_hash::ObjectId;
use gix_object::Kind;
use libfuzzer_sys::fuzz_target;
use stowage::repo::object_check::ObjectChecker;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, object)) = data.split_first() else {
        return;
    };
    let id = ObjectId::null(gix_hash::Kind::Sha1);
    let kind = match kind % 4 {
        0 => Kind::Commit,
        1 => Kind::Tree,
        2 => Kind::Tag,
        _ => {
            let _ = ObjectChecker::new().check_gitmodules(id, Kind::Blob, object);
            return;
        }
    };
    let _ = ObjectChecker::new().check(id, kind, object);
});
