//! Fuzz target: the serving request reader (`http::reader`, the one every connection uses) over
//! bytes in any split across reads -> requests or an error, never a panic, never a body over
//! its limit. The first byte picks the piece size.
#![no_main]

use fiddler_crab::http::parse::HeadLimits;
use fiddler_crab::http::reader::{read_stream, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first).max(1);
    let limits = HeadLimits {
        request_line: 512,
        header_block: 1024,
    };
    for parsed in read_stream(rest.chunks(piece), &limits, 4096) {
        if let Parsed::Request(_, body) = parsed {
            assert!(body.len() <= 4096);
        }
    }
});
