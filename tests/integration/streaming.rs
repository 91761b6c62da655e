//! Native plugins that answer in pieces (plugin-api's `Stream`), fail with `?`, and read their
//! deadline: the pieces reach the client while the plugin runs, a stalled or failed stream is
//! cut (never a whole-looking answer), and the connection or the next call is served after.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::{
    read_chunk, read_chunked, read_head_response, read_response, read_until_closed, Scheme, Server,
    IO_DEADLINE,
};

/// The `stream` fixture's deadline.
const FIXTURE_DEADLINE: Duration = Duration::from_secs(3);

fn a_native_plugin_streams_pieces_before_it_has_finished(scheme: Scheme) {
    let server = Server::start_over(scheme, &["stream"], &[]);
    let gate = server.gate();
    let mut client = server.start_get(&format!("/stream/pieces?{}", gate.query()));
    let head = read_head_response(&mut client).expect("a response head");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(head.header("content-type"), Some("text/plain"));
    // The plugin is still blocked on the gate: this piece came while it had not finished.
    assert_eq!(read_chunk(&mut client), b"first\n");
    gate.open();
    assert_eq!(read_chunked(&mut client), b"second\n");
    // The connection is kept and serves the next request.
    client
        .write_all(b"GET /stream/number?n=4 HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send a second request");
    let next = read_response(&mut client).expect("an answer");
    assert_eq!((next.status, next.text()), (200, "8".to_owned()));
}

crate::over_both_schemes!(a_native_plugin_streams_pieces_before_it_has_finished);

#[test]
fn a_stalled_stream_is_cut_at_its_deadline_and_the_plugin_restarts() {
    let mut server = Server::start_over(Scheme::Http, &["stream"], &[]);
    let started = Instant::now();
    let mut client = server.start_get("/stream/stall");
    let head = read_head_response(&mut client).expect("a response head");
    assert_eq!(head.status, 200);
    assert_eq!(read_chunk(&mut client), b"first\n");
    // No last chunk: the answer ends with the connection, so no client takes it for whole.
    let rest = read_until_closed(&mut client);
    assert!(!rest.ends_with(b"0\r\n\r\n"), "cut, not finished: {rest:?}");
    assert!(
        started.elapsed() >= FIXTURE_DEADLINE,
        "cut at the deadline, not before: {:?}",
        started.elapsed()
    );
    server.wait_for_log("deadline", IO_DEADLINE);
    // The stalled executor was killed; a fresh one answers.
    assert_eq!(server.get("/stream/number?n=1").text(), "2");
}

#[test]
fn a_stream_that_fails_midway_is_cut_and_says_why_in_the_log() {
    let mut server = Server::start_over(Scheme::Http, &["stream"], &[]);
    let mut client = server.start_get("/stream/fail");
    let head = read_head_response(&mut client).expect("a response head");
    assert_eq!(head.status, 200);
    assert_eq!(read_chunk(&mut client), b"first\n");
    let rest = read_until_closed(&mut client);
    assert!(!rest.ends_with(b"0\r\n\r\n"), "cut, not finished: {rest:?}");
    let line = server.wait_for_log("gave up midway", IO_DEADLINE);
    assert!(line.contains("cut"), "{line}");
    // The executor is fine: the failure was the handler's, not a crash.
    assert_eq!(server.get("/stream/number?n=5").text(), "10");
}

#[test]
fn a_client_that_leaves_mid_stream_stops_the_plugin_and_frees_its_lane() {
    let mut server = Server::start_over(Scheme::Http, &["stream"], &[]);
    let mut client = server.start_get("/stream/slow");
    let head = read_head_response(&mut client).expect("a response head");
    assert_eq!(head.status, 200);
    assert_eq!(read_chunk(&mut client), b"piece 0\n");
    drop(client);
    // The worker tells the executor; the plugin's next write is refused and it stops.
    let stopped = server.wait_for_log("stopped after", IO_DEADLINE);
    assert!(stopped.contains("cannot go on"), "{stopped}");
    server.wait_for_log(
        "the client left; its streamed answer was stopped",
        IO_DEADLINE,
    );
    // The one lane is free again (the plugin did not run on to its end).
    assert_eq!(server.get("/stream/number?n=3").text(), "6");
    assert!(
        server
            .log
            .iter()
            .all(|l| !l.contains("within its deadline")),
        "{:?}",
        server.log
    );
}

#[test]
fn a_plugin_using_the_question_mark_answers_the_mapped_status() {
    let server = Server::start_over(Scheme::Http, &["stream"], &[]);
    let doubled = server.get("/stream/number?n=21");
    assert_eq!((doubled.status, doubled.text()), (200, "42".to_owned()));
    let missing = server.get("/stream/number");
    assert_eq!(
        (missing.status, missing.text()),
        (400, "send ?n=\n".to_owned())
    );
    let not_a_number = server.get("/stream/number?n=many");
    assert_eq!(not_a_number.status, 500);
    assert_eq!(not_a_number.text(), "invalid digit found in string\n");
    assert_eq!(server.get("/stream/elsewhere").status, 404);
}

#[test]
fn a_call_knows_how_long_it_has_left() {
    let server = Server::start_over(Scheme::Http, &["stream"], &[]);
    let left: u128 = server
        .get("/stream/deadline")
        .text()
        .parse()
        .expect("milliseconds");
    assert!(
        left > 0 && left <= FIXTURE_DEADLINE.as_millis(),
        "{left} ms of a {FIXTURE_DEADLINE:?} deadline"
    );
}
