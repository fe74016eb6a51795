//! Protocol v0/v1 upload-pack requests: parsed or refused, and a parsed one answers a
//! negotiation round.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::protocol::upload_pack::{Request, negotiate};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::parse(data) {
        let common: Vec<_> = request.haves.iter().take(8).copied().collect();
        let _ = negotiate(&request, &common, !common.is_empty());
        let _ = request.framing();
    }
});
