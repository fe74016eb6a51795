//! Partial-clone filter specs (`blob:limit=1k`, `combine:...`, percent-encoded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::repo::walk::Filter;

fuzz_target!(|data: &[u8]| {
    if let Ok(spec) = std::str::from_utf8(data) {
        let _ = Filter::parse(spec);
    }
});
