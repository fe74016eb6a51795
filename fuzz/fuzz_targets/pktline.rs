//! pkt-line framing: any bytes are read line by line to the end or to an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::protocol::pktline::PktReader;

fuzz_target!(|data: &[u8]| {
    let mut reader = PktReader::new(data);
    let mut lines = 0usize;
    while let Ok(Some(_)) = reader.next_line() {
        lines += 1;
        assert!(lines <= data.len(), "a line consumes input");
    }
});
