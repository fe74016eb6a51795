//! Manifests as read from the store: parsed or refused; a parsed one writes and reads
//! back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::repo::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::parse(data) {
        let again = Manifest::parse(&manifest.to_bytes()).expect("a written manifest parses");
        assert_eq!(again, manifest);
    }
});
