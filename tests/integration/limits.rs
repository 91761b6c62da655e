//! Each limit and deadline of DESIGN.md's table: the right status, then a closed connection.

use std::io::Write;
use std::net::Shutdown;

use crate::support::{read_response, read_until_closed, Scheme, Server};

/// Sends `raw` and expects `status`, then the connection closed.
/// Sends `raw`, checks the answer is `status` with `Connection: close` and the connection
/// closes; returns the answer's text.
fn refused(server: &Server, raw: &[u8], status: u16) -> String {
    let mut stream = server.connect();
    // The server may answer and close before it has read everything we send.
    let _ = stream.write_all(raw);
    let response = read_response(&mut stream).unwrap_or_else(|| {
        panic!(
            "no response to {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(80)])
        )
    });
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.header("connection"), Some("close"));
    read_until_closed(&mut stream);
    response.text()
}

fn each_malformed_or_oversized_request_gets_its_status(scheme: Scheme) {
    let server = Server::start_over(scheme, &["echo"], &["--max-body", "1000"]);
    let long_line = format!("GET /echo?{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    let big_header = format!(
        "GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17_000)
    );
    let many_headers: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let many_headers = format!("GET /echo HTTP/1.1\r\nHost: t\r\n{many_headers}\r\n");
    let big_chunked = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n{}\r\n1\r\nx\r\n0\r\n\r\n",
        "c".repeat(1000)
    );
    let table: &[(&[u8], u16)] = &[
        (long_line.as_bytes(), 414),
        (big_header.as_bytes(), 431),
        (many_headers.as_bytes(), 431),
        // Refused on the declared length, before any body byte is sent.
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n", 413),
        (big_chunked.as_bytes(), 413),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"GET /echo HTTP/1.1\r\n\r\n", 400),
        (b"GET /echo HTTP/1.1\r\nHost : t\r\n\r\n", 400),
        (b"BREW /echo HTTP/1.1\r\nHost: t\r\n\r\n", 501),
        (b"GET /echo HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: tea\r\nContent-Length: 1\r\n\r\nx", 417),
    ];
    for (raw, status) in table {
        refused(&server, raw, *status);
    }
    // And the server still serves.
    assert_eq!(server.post("/echo", b"fine").text(), "fine");
}

fn a_plugin_can_lower_the_body_limit(scheme: Scheme) {
    // wordcount accepts at most 4 MiB; the server allows 16 MiB.
    let server = Server::start_over(scheme, &["wordcount"], &[]);
    let raw = format!(
        "POST /wordcount HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        5 << 20
    );
    let why = refused(&server, raw.as_bytes(), 413);
    assert!(
        why.contains("at most 4194304 bytes"),
        "it names the plugin's limit: {why}"
    );
    assert_eq!(server.post("/wordcount", b"small enough").status, 200);
}

fn an_incomplete_head_gets_408_at_the_header_deadline(scheme: Scheme) {
    let server = Server::start_over(scheme, &["echo"], &["--header-timeout", "300"]);
    refused(&server, b"POST /echo HTTP/1.1\r\nHost: t\r\n", 408);
}

fn a_silent_connection_is_closed_at_the_header_deadline_without_a_byte(scheme: Scheme) {
    let server = Server::start_over(scheme, &["echo"], &["--header-timeout", "300"]);
    let mut stream = server.connect();
    assert!(read_until_closed(&mut stream).is_empty());
}

fn a_stalled_body_gets_408_at_the_idle_deadline(scheme: Scheme) {
    let server = Server::start_over(scheme, &["echo"], &["--idle-timeout", "300"]);
    refused(
        &server,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
        408,
    );
}

fn an_idle_keep_alive_connection_is_closed_after_its_deadline(scheme: Scheme) {
    let server = Server::start_over(scheme, &["echo"], &["--header-timeout", "300"]);
    let mut stream = server.connect();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok")
        .expect("send");
    assert_eq!(
        read_response(&mut stream).map(|r| r.text()),
        Some("ok".to_owned())
    );
    assert!(read_until_closed(&mut stream).is_empty());
}

/// Finding: a client that sent part of a head, or of a body, and its end of file at once was
/// held open until a deadline. Bytes and end came in one readiness event; the read that took
/// the bytes came back short, so no read was made to see the end, and edge-triggered polling
/// does not report it again. Now an end seen in an event is always read: the connection closes
/// at once, long before its 60 s deadlines (the client gives up after 20 s).
#[test]
fn a_client_that_sends_part_of_a_request_and_leaves_is_closed_at_once() {
    let server = Server::start_over(
        Scheme::Http,
        &["echo"],
        &[
            "--header-timeout",
            "60000",
            "--idle-timeout",
            "60000",
            "--min-rate",
            "0",
        ],
    );
    let partial_head = &b"POST /echo HTTP/1.1\r\nHo"[..];
    let partial_body = &b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc"[..];
    // A few times each: the end must come in the same event as the bytes to show the finding,
    // which back-to-back calls nearly always give.
    for partial in [partial_head, partial_body].repeat(4) {
        let mut stream = server.connect_tcp();
        stream.write_all(partial).expect("send");
        stream.shutdown(Shutdown::Write).expect("half-close");
        read_until_closed(&mut stream);
    }
}

crate::over_both_schemes!(
    each_malformed_or_oversized_request_gets_its_status,
    a_plugin_can_lower_the_body_limit,
    an_incomplete_head_gets_408_at_the_header_deadline,
    a_silent_connection_is_closed_at_the_header_deadline_without_a_byte,
    a_stalled_body_gets_408_at_the_idle_deadline,
    an_idle_keep_alive_connection_is_closed_after_its_deadline,
);
