//! receive-pack command lists: read up to the pack, or refused; the report of a
//! parsed one is well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::protocol::RequestLimits;
use stowage::protocol::receive_pack::{read_request, report};
use stowage::repo::push::Report;

fuzz_target!(|data: &[u8]| {
    let mut reader = data;
    let limits = RequestLimits::default();
    if let Ok(request) = futures::executor::block_on(read_request(&mut reader, &limits)) {
        let answer = Report {
            unpack: Ok(()),
            messages: vec!["fuzzed".into()],
            refs: request
                .commands
                .iter()
                .map(|c| (c.name.clone(), Err("refused".into())))
                .collect(),
            created: false,
            event: None,
        };
        let _ = report(&answer, request.framing());
    }
});
