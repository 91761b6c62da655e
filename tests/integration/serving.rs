//! Requests that reach plugins: what each example answers, and that failures cost one request.

use crate::support::{read_head_response, read_response, Scheme, Server, IO_DEADLINE};
use std::io::Write;

fn echo_returns_bodies_byte_for_byte(scheme: Scheme) {
    let server = Server::start_over(scheme, &["echo"], &[]);
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    // Below the size from which bodies go as files (256 KiB), above what an executor's socket
    // holds at once (about 208 KiB): its write to the executor, and the answer's back, stop
    // and resume when there is room.
    let inline_past_the_socket: Vec<u8> = (0..=250u8).cycle().take(250_000).collect();
    let ten_mib: Vec<u8> = (0..10 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for body in [&b""[..], &binary, &inline_past_the_socket, &ten_mib] {
        let response = server.post("/echo", body);
        assert_eq!(response.status, 200);
        assert_eq!(response.body.len(), body.len());
        assert!(response.body == body, "the echoed body differs");
    }
}

fn echo_decodes_chunked_bodies(scheme: Scheme) {
    let server = Server::start_over(scheme, &["echo"], &[]);
    let response = server.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "hello world");
}

fn hello_shows_query_headers_and_path(scheme: Scheme) {
    let server = Server::start_over(scheme, &["hello"], &[]);
    let response = server
        .send(b"GET /hello/some/where?name=crab&x=1 HTTP/1.1\r\nHost: t\r\nX-Probe: yes\r\n\r\n");
    assert_eq!(response.status, 200);
    let text = response.text();
    assert!(text.starts_with("Hello, crab!\n"), "{text}");
    assert!(text.contains("path: /some/where\n"), "{text}");
    assert!(text.contains("query x: 1\n"), "{text}");
    assert!(text.contains("header X-Probe: yes\n"), "{text}");
    assert!(text.contains("client: 127.0.0.1:"), "{text}");
}

fn wordcount_keeps_state_between_calls(scheme: Scheme) {
    let server = Server::start_over(scheme, &["wordcount"], &[]);
    let first = server.post("/wordcount?top=1", b"crab crab fiddler");
    assert_eq!(
        first.text(),
        r#"{"words":3,"distinct":2,"top":[["crab",2]],"seen_by_this_version":3}"#
    );
    let second = server.post("/wordcount?top=0", b"one more");
    assert!(
        second.text().ends_with(r#""seen_by_this_version":5}"#),
        "{}",
        second.text()
    );
}

fn unknown_routes_are_404(scheme: Scheme) {
    let server = Server::start_over(scheme, &["echo"], &[]);
    for path in ["/nope", "/", "/Echo", "/-/nope"] {
        assert_eq!(server.post(path, b"x").status, 404, "{path}");
    }
}

fn a_panic_costs_only_its_request(scheme: Scheme) {
    let mut server = Server::start_over(scheme, &["panic", "echo"], &[]);
    let response = server.post("/panic", b"");
    assert_eq!(response.status, 500);
    assert!(response.text().contains("panic"), "{}", response.text());
    server.wait_for_log("plugin panic (generation", IO_DEADLINE);
    assert_eq!(server.post("/echo", b"still here").text(), "still here");
    assert_eq!(server.post("/panic", b"").status, 500);
    assert_eq!(server.post("/echo", b"and again").text(), "and again");
}

fn a_call_past_its_deadline_is_504_and_the_server_keeps_serving(scheme: Scheme) {
    // The sleep fixture's own deadline is 1000 ms.
    let mut server = Server::start_over(scheme, &["sleep", "echo"], &[]);
    assert_eq!(server.get("/sleep?ms=1").status, 200);
    let response = server.get("/sleep?ms=3000");
    assert_eq!(response.status, 504);
    server.wait_for_log("passed its 1000 ms deadline", IO_DEADLINE);
    assert_eq!(server.post("/echo", b"alive").text(), "alive");
    // Its executor was killed; a fresh one answers the next call.
    let next = server.get("/sleep?ms=1");
    assert_eq!((next.status, next.text()), (200, "slept 1\n".to_owned()));
}

fn the_server_wide_deadline_applies_to_plugins_without_their_own(scheme: Scheme) {
    // burn sets no deadline of its own, so --deadline applies to it.
    let server = Server::start_over(scheme, &["echo", "burn"], &["--deadline", "300"]);
    let started = std::time::Instant::now();
    assert_eq!(server.get("/burn?ms=10000").status, 504);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(server.post("/echo", b"quick").status, 200);
    assert_eq!(server.get("/burn?ms=1").status, 200);
}

fn requests_run_one_at_a_time_in_arrival_order(scheme: Scheme) {
    let server = Server::start_over(scheme, &["crash", "wordcount"], &[]);
    // One call measures wordcount (until then it is expected to take its whole deadline, and
    // five of those behind the blocker would be more than --queue-wait admits).
    assert_eq!(server.post("/wordcount", b"warm").status, 200);
    assert_eq!(server.get("/crash/x").status, 200);
    // Hold the lane on a gate, then queue five requests one after another, each seen queued
    // before the next is sent, so their arrival order is known.
    let (gate, mut blocker) = server.hold_lane("/crash/x");
    let mut waiting = Vec::new();
    for i in 1..=5 {
        let mut stream = server.connect();
        stream
            .write_all(b"POST /wordcount HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nword")
            .expect("send a queued request");
        waiting.push(stream);
        server.wait_queued(i);
    }
    gate.open();
    assert_eq!(read_response(&mut blocker).map(|r| r.status), Some(200));
    // wordcount's running total tells the order the lane ran them in.
    for (i, stream) in waiting.iter_mut().enumerate() {
        let response = read_response(stream).expect("a queued request is answered");
        // The warm-up call was the first this version saw.
        let expected = format!("\"seen_by_this_version\":{}}}", i + 2);
        assert!(
            response.text().ends_with(&expected),
            "request {}: {}",
            i + 1,
            response.text()
        );
    }
}

fn keep_alive_and_pipelined_requests_are_answered_in_order(scheme: Scheme) {
    let server = Server::start_over(scheme, &["echo"], &[]);
    let mut stream = server.connect();
    let mut raw = Vec::new();
    for word in ["one", "two", "three"] {
        raw.extend_from_slice(
            format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{word}",
                word.len()
            )
            .as_bytes(),
        );
    }
    stream
        .write_all(&raw)
        .expect("send three pipelined requests");
    for word in ["one", "two", "three"] {
        let response = read_response(&mut stream).expect("a pipelined response");
        assert_eq!(response.text(), word);
        assert_eq!(response.header("connection"), None);
    }
    // The same connection serves one more, then honours Connection: close.
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 4\r\n\r\nlast",
        )
        .expect("send the last request");
    let last = read_response(&mut stream).expect("the last response");
    assert_eq!(
        (last.text().as_str(), last.header("connection")),
        ("last", Some("close"))
    );
    assert!(
        read_response(&mut stream).is_none(),
        "the connection is closed"
    );
}

fn head_gets_the_headers_of_get_without_a_body(scheme: Scheme) {
    let server = Server::start_over(scheme, &["sleep"], &[]);
    let get = server.get("/sleep?ms=0");
    assert_eq!(get.text(), "slept 0\n");
    let mut stream = server.connect();
    stream
        .write_all(b"HEAD /sleep?ms=0 HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send HEAD");
    let head = read_head_response(&mut stream).expect("a HEAD response");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), get.header("content-length"));
    // The next response on the connection starts right after the head: no body was sent.
    stream
        .write_all(b"GET /-/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send a second request");
    assert_eq!(
        read_response(&mut stream).map(|r| r.text()),
        Some("ok\n".to_owned())
    );
}

fn http10_closes_unless_asked_to_keep_alive(scheme: Scheme) {
    let server = Server::start_over(scheme, &["echo"], &[]);
    let mut stream = server.connect();
    stream
        .write_all(b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi")
        .expect("send");
    let response = read_response(&mut stream).expect("a response");
    assert_eq!(response.header("connection"), Some("keep-alive"));
    stream
        .write_all(b"POST /echo HTTP/1.0\r\nContent-Length: 2\r\n\r\nho")
        .expect("send");
    let response = read_response(&mut stream).expect("a response");
    assert_eq!(
        (response.text().as_str(), response.header("connection")),
        ("ho", Some("close"))
    );
    assert!(read_response(&mut stream).is_none());
}

fn expect_continue_gets_100_before_the_body(scheme: Scheme) {
    let server = Server::start_over(scheme, &["echo"], &[]);
    let mut stream = server.connect();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .expect("send the head");
    let mut interim = [0u8; 25];
    std::io::Read::read_exact(&mut stream, &mut interim).expect("read 100 Continue");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"body").expect("send the body");
    assert_eq!(
        read_response(&mut stream).map(|r| r.text()),
        Some("body".to_owned())
    );
}

fn admin_routes_answer_while_the_lane_is_busy(scheme: Scheme) {
    let server = Server::start_over(scheme, &["crash"], &[]);
    let (gate, mut busy) = server.hold_lane("/crash/x");
    assert_eq!(server.get("/-/health").text(), "ok\n");
    let plugins = server.get("/-/plugins").text();
    assert!(plugins.contains("\"route\":\"crash\""), "{plugins}");
    // Answered before the lane finished: the busy request has no answer yet.
    busy.tcp().set_nonblocking(true).expect("non-blocking");
    let mut byte = [0u8; 1];
    // A read, not a peek: over TLS the socket also carries session tickets.
    let pending = std::io::Read::read(&mut busy, &mut byte);
    assert!(
        matches!(&pending, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the admin answers waited for the lane: {pending:?}"
    );
    busy.tcp().set_nonblocking(false).expect("blocking");
    gate.open();
    assert_eq!(read_response(&mut busy).map(|r| r.status), Some(200));
}

crate::over_both_schemes!(
    echo_returns_bodies_byte_for_byte,
    echo_decodes_chunked_bodies,
    hello_shows_query_headers_and_path,
    wordcount_keeps_state_between_calls,
    unknown_routes_are_404,
    a_panic_costs_only_its_request,
    a_call_past_its_deadline_is_504_and_the_server_keeps_serving,
    the_server_wide_deadline_applies_to_plugins_without_their_own,
    requests_run_one_at_a_time_in_arrival_order,
    keep_alive_and_pipelined_requests_are_answered_in_order,
    head_gets_the_headers_of_get_without_a_body,
    http10_closes_unless_asked_to_keep_alive,
    expect_continue_gets_100_before_the_body,
    admin_routes_answer_while_the_lane_is_busy,
);

#[test]
fn with_two_lanes_two_calls_to_one_route_run_at_once_on_two_executors() {
    let server = Server::start_over(Scheme::Http, &["crash"], &["--lanes", "2"]);
    let gate = server.gate();
    let mut calls: Vec<_> = (0..2)
        .map(|_| server.start_get(&format!("/crash/x?{}", gate.query())))
        .collect();
    // The second call does not wait for the first: a second executor of the same version
    // starts for it, and both are busy at once.
    server.wait_busy(2);
    let pids = crate::support::executor_pids(&server, "crash");
    assert_eq!(pids.len(), 2, "{pids:?}");
    gate.open();
    for stream in &mut calls {
        assert_eq!(
            read_response(stream).map(|r| r.text()),
            Some("alive\n".to_owned())
        );
    }
}
