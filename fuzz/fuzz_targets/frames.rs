//! Fuzz target: what an executor sends the worker is untrusted (the plugin shares its process
//! and can write anything to the socket). Bytes in any split, fed to the worker's frame reader
//! the way the pool reads (small pieces through `feed`, a body straight into `direct`), give
//! frames or an error, never a panic or a loop that makes no progress. The first byte picks
//! the piece size.
#![no_main]

use fiddler_crab::exec::frame::FrameReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first).max(1);
    let mut reader = FrameReader::default();
    let mut at = 0;
    while at < rest.len() {
        let end = (at + piece).min(rest.len());
        let used = match reader.direct() {
            Err(_) => return,
            Ok(Some(body)) => {
                let n = body.len().min(end - at);
                body[..n].copy_from_slice(&rest[at..at + n]);
                match reader.filled(n) {
                    Ok(_) => n,
                    Err(_) => return,
                }
            }
            Ok(None) => match reader.feed(&rest[at..end]) {
                Ok((used, _)) => used,
                Err(_) => return,
            },
        };
        assert!(used > 0, "the reader took nothing from {} bytes", end - at);
        at += used;
    }
});
