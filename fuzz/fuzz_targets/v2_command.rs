//! Protocol v2 command requests: the request, then `fetch` arguments and `ls-refs`
//! against an empty repository.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::protocol::v2::{CommandRequest, Fetch, ls_refs, object_info_request};
use stowage::repo::Manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = CommandRequest::parse(data) else {
        return;
    };
    match request.command.as_str() {
        "fetch" => {
            let _ = Fetch::parse(&request.args);
        }
        "ls-refs" => {
            let _ = ls_refs(&Manifest::empty("refs/heads/main"), &request.args);
        }
        "object-info" => {
            let _ = object_info_request(&request.args);
        }
        _ => {}
    }
});
