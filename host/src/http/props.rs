//! Property tests on stable: many generated streams, checked against the invariants the fuzz
//! target checks (see `fuzz/`): any split of a stream parses the same; arbitrary bytes never
//! panic and never make a buffer or a body grow past its limit.

use super::parse::HeadLimits;
use super::reader::{read_stream, Parsed};

/// A small deterministic generator (xorshift64*), so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A stream of valid requests: methods, paths, headers, and bodies framed by length or chunks.
fn valid_stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let method = ["GET", "POST", "PUT", "DELETE"][rng.below(4)];
        let path = ["/echo", "/echo/a/b?x=1", "/wordcount?top=3", "/-/health"][rng.below(4)];
        out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: h\r\n").as_bytes());
        for i in 0..rng.below(5) {
            out.extend_from_slice(format!("X-H{i}: v{}\r\n", rng.next() % 1000).as_bytes());
        }
        let body: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        if body.is_empty() {
            out.extend_from_slice(b"\r\n");
        } else if rng.below(2) == 0 {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(&body);
        } else {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &body[..];
            while !rest.is_empty() {
                let take = 1 + rng.below(rest.len());
                out.extend_from_slice(format!("{take:x}\r\n").as_bytes());
                out.extend_from_slice(&rest[..take]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[take..];
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    out
}

/// Cuts `bytes` into random pieces.
fn split<'a>(rng: &mut Rng, bytes: &'a [u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let take = 1 + rng.below((bytes.len() - at).min(64));
        pieces.push(&bytes[at..at + take]);
        at += take;
    }
    pieces
}

#[test]
fn any_split_of_a_valid_stream_parses_the_same() {
    let limits = HeadLimits::default();
    let mut rng = Rng(0x5eed_f1dd_1e5c_4ab5);
    for case in 0..500 {
        let stream = valid_stream(&mut rng);
        let whole = read_stream([&stream[..]], &limits, 1 << 20);
        assert!(
            whole.iter().all(|p| matches!(p, Parsed::Request(..))),
            "case {case}: a valid stream was refused: {whole:?}"
        );
        let pieces = split(&mut rng, &stream);
        assert_eq!(read_stream(pieces, &limits, 1 << 20), whole, "case {case}");
    }
}

#[test]
fn arbitrary_bytes_never_panic_or_exceed_the_limits() {
    let limits = HeadLimits {
        request_line: 256,
        header_block: 512,
    };
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..2000 {
        // Mostly-valid streams with random corruption, and pure noise.
        let mut bytes = if rng.below(2) == 0 {
            valid_stream(&mut rng)
        } else {
            (0..rng.below(2000)).map(|_| rng.next() as u8).collect()
        };
        for _ in 0..rng.below(4) {
            if !bytes.is_empty() {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
        }
        let pieces = split(&mut rng, &bytes);
        for parsed in read_stream(pieces, &limits, 1000) {
            if let Parsed::Request(_, body) = parsed {
                assert!(body.len() <= 1000, "a body passed its limit");
            }
        }
    }
}
