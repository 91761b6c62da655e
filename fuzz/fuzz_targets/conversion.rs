//! Fuzz target for the plugin-api conversion layer: a parsed head becomes a plugin `Request`
//! through the serving conversion, `http::convert::plugin_request` (accessors must not
//! panic), and a `Response` with arbitrary header bytes becomes a response head that never
//! carries a line break the plugin smuggled in.
#![no_main]

use fiddler_crab::http::convert::plugin_request;
use fiddler_crab::http::parse::{parse_head, HeadLimits};
use fiddler_crab::http::response::{write_head, BodyLength, Persistence};
use libfuzzer_sys::fuzz_target;
use plugin_api::{Header, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, _))) = parse_head(data, &HeadLimits::default()) {
        // The serving conversion itself (intake calls the same function).
        let path = head.path.clone();
        let request = plugin_request(head, path, data.to_vec(), "127.0.0.1:1".into(), false);
        let _ = request.query_pairs().count();
        let _ = request.header("host");
        let _ = request.query_param("a");
        let _ = request.body_str();
    }
    // Arbitrary bytes as a plugin's header name and value.
    let split = data.len() / 2;
    let name = String::from_utf8_lossy(&data[..split]).into_owned();
    let response = Response::status(200).with_header(&name, "v");
    let mut response = response.with_body(data.to_vec());
    response.headers.push(Header {
        name: "X-Raw".into(),
        value: data[split..].to_vec().into(),
    });
    let length = BodyLength::Known(response.body.len() as u64);
    let (head, _) = write_head(response.status, &response.headers, length, Persistence::Close);
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").expect("the head ends");
    assert_eq!(end + 4, head.len(), "one blank line, at the end");
    // Every line up to the blank one ends in CRLF, with no CR or LF inside.
    for line in head[..end + 2].split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r\n").expect("every line ends in CRLF");
        assert!(!line.contains(&b'\n'), "no bare LF inside a line");
        assert!(!line.contains(&b'\r'), "no bare CR inside a line");
    }
});
