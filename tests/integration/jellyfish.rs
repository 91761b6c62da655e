//! The jellyfish (`--mode jellyfish`): a handler that says one lane never runs twice at once
//! while others run in parallel on replicas (green), a plugin that takes batches gets them
//! under a burst and answers each request in its connection's order (yellow), and red says
//! not ready. The light is pinned with `--light` here: the machine's own light is the
//! benchmark's business (bench/jellyfish), a test cannot choose the machine's pressure.

use std::io::Write;

use crate::support::{read_response, Client, Scheme, Server, TempDir};

fn jellyfish(light: &str, plugins: &[&str], more: &[&str]) -> Server {
    let mut args = vec!["--mode", "jellyfish", "--light", light, "--lanes-max", "4"];
    args.extend_from_slice(more);
    Server::start_over(Scheme::Http, plugins, &args)
}

/// Reads the held call's answer (alone in its batch), then the burst's (bodies `{prefix}0`,
/// `{prefix}1`, ..., each its own): their batch sizes, in order.
fn held_then_burst_batch_sizes(
    first: &mut Client,
    burst: &mut [Client],
    prefix: &str,
) -> Vec<usize> {
    assert_eq!(
        read_response(first).map(|r| r.text()),
        Some("first batch=1".to_owned())
    );
    let mut sizes = Vec::new();
    for (i, call) in burst.iter_mut().enumerate() {
        let text = read_response(call).expect("an answer").text();
        let (body, size) = text.split_once(" batch=").expect("a batch size");
        assert_eq!(
            body,
            format!("{prefix}{i}"),
            "each request gets its own answer"
        );
        sizes.push(size.parse::<usize>().expect("a number"));
    }
    sizes
}

/// Sends `POST path` with `body` on a new connection, leaving the answer unread.
fn start_post(server: &Server, path: &str, body: &str) -> Client {
    let mut client = server.connect();
    client
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .expect("send the request");
    client
}

#[test]
fn a_handler_that_says_one_lane_never_runs_twice_while_others_run_in_parallel() {
    let server = jellyfish("green", &["batcher", "crash"], &[]);
    let dir = TempDir::new("one-lane");
    let path = format!("/batcher?dir={}&ms=30", dir.0.display());
    let mut calls: Vec<Client> = (0..8)
        .map(|i| start_post(&server, &path, &format!("c{i}")))
        .collect();
    for (i, call) in calls.iter_mut().enumerate() {
        let answer = read_response(call).expect("an answer");
        assert_eq!(answer.status, 200);
        assert!(
            answer.text().starts_with(&format!("c{i} batch=")),
            "{}",
            answer.text()
        );
    }
    assert!(
        !dir.0.join("overlap").exists(),
        "two calls of a MAX_LANES = 1 plugin at once"
    );
    assert_eq!(crate::support::executor_pids(&server, "batcher").len(), 1);
    assert!(server.get("/-/plugins").text().contains("\"max_lanes\":1"));

    // The crash fixture says 4: three held calls run at once, on three executors.
    let gate = server.gate();
    let mut held: Vec<Client> = (0..3)
        .map(|_| server.start_get(&format!("/crash/x?{}", gate.query())))
        .collect();
    server.wait_busy(3);
    assert_eq!(crate::support::executor_pids(&server, "crash").len(), 3);
    gate.open();
    for call in &mut held {
        assert_eq!(
            read_response(call).map(|r| r.text()),
            Some("alive\n".to_owned())
        );
    }
}

#[test]
fn a_batch_plugin_gets_batches_under_a_burst_and_answers_each_in_order() {
    // A long --queue-wait: the held call's cost is unknown, and admission by predicted wait
    // would otherwise turn the burst away (it expects each call to take the deadline).
    let more = ["--batch-max", "8", "--queue-wait", "3600000"];
    let server = jellyfish("yellow", &["batcher"], &more);
    let gate = server.gate();
    // Hold the route's one lane, so the burst queues behind it.
    let mut first = start_post(&server, &format!("/batcher?{}", gate.query()), "first");
    server.wait_busy(1);
    let mut burst: Vec<Client> = (0..10)
        .map(|i| start_post(&server, "/batcher", &format!("b{i}")))
        .collect();
    // And one connection with three requests pipelined in one write (intake queues one
    // request per connection at a time, so they come in order by construction; this checks
    // that each still gets its own answer).
    let mut pipelined = server.connect();
    let three: String = ["p1", "p2", "p3"]
        .iter()
        .map(|b| format!("POST /batcher HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{b}"))
        .collect();
    pipelined
        .write_all(three.as_bytes())
        .expect("send three requests");
    server.wait_queued(11);
    gate.open();
    let sizes = held_then_burst_batch_sizes(&mut first, &mut burst, "b");
    assert!(sizes.iter().any(|n| *n > 1), "no batch formed: {sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 8), "--batch-max is 8: {sizes:?}");
    for expected in ["p1", "p2", "p3"] {
        let text = read_response(&mut pipelined).expect("an answer").text();
        assert!(text.starts_with(&format!("{expected} batch=")), "{text}");
    }
    assert!(server.metric("fiddler_plugin_batches_total{plugin=\"batcher\"}") >= 1);
    let plugins = server.get("/-/plugins").text();
    assert!(plugins.contains("\"light\":\"yellow\""), "{plugins}");
}

/// Green gives parallel replicas, but a route at its own lane cap (here `MAX_LANES = 1`) can
/// have none: its queue is served in batches all the same. (A model that takes every core
/// alone keeps the CPU pressure low, so the light stays green while its queue builds: before,
/// it ran one request at a time there, slower than the yellow light it never reached.)
#[test]
fn under_green_a_route_at_its_lane_cap_gets_batches_all_the_same() {
    let server = jellyfish("green", &["batcher"], &["--queue-wait", "3600000"]);
    let gate = server.gate();
    let mut first = start_post(&server, &format!("/batcher?{}", gate.query()), "first");
    server.wait_busy(1);
    let mut burst: Vec<Client> = (0..6)
        .map(|i| start_post(&server, "/batcher", &format!("g{i}")))
        .collect();
    server.wait_queued(6);
    gate.open();
    let sizes = held_then_burst_batch_sizes(&mut first, &mut burst, "g");
    assert!(
        sizes.iter().any(|n| *n > 1),
        "no batch under green: {sizes:?}"
    );
    let plugins = server.get("/-/plugins").text();
    assert!(plugins.contains("\"light\":\"green\""), "{plugins}");
}

#[test]
fn red_is_not_ready_and_runs_one_call_at_a_time() {
    let server = jellyfish("red", &["echo", "crash"], &[]);
    let ready = server.get("/-/ready");
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("light is red"), "{}", ready.text());
    assert_eq!(server.post("/echo", b"still served").text(), "still served");
    assert_eq!(server.metric("fiddler_light{light=\"red\"}"), 1);
    // The crash fixture may take 4 lanes, but red allows one: a second held call waits.
    let gate = server.gate();
    let mut first = server.start_get(&format!("/crash/x?{}", gate.query()));
    server.wait_busy(1);
    let mut second = server.start_get(&format!("/crash/x?{}", gate.query()));
    crate::support::wait_until(
        "the second call queued",
        crate::support::IO_DEADLINE,
        || {
            server
                .get("/-/ready")
                .text()
                .contains(" 1 of ")
                .then_some(())
        },
    );
    let plugins = server.get("/-/plugins").text();
    assert_eq!(
        plugins.matches("\"state\":\"busy\"").count(),
        1,
        "{plugins}"
    );
    gate.open();
    for call in [&mut first, &mut second] {
        assert_eq!(
            read_response(call).map(|r| r.text()),
            Some("alive\n".to_owned())
        );
    }
}

#[test]
fn a_batch_that_crashes_answers_each_of_its_requests_once() {
    let more = ["--batch-max", "8", "--queue-wait", "3600000"];
    let server = jellyfish("yellow", &["batcher"], &more);
    let gate = server.gate();
    let mut first = start_post(&server, &format!("/batcher?{}", gate.query()), "first");
    server.wait_busy(1);
    let mut burst: Vec<Client> = ["/batcher", "/batcher?crash", "/batcher"]
        .iter()
        .map(|path| start_post(&server, path, "b"))
        .collect();
    server.wait_queued(3);
    gate.open();
    assert_eq!(read_response(&mut first).map(|r| r.status), Some(200));
    // All three ran in the batch that died: each gets the 502, none is run again.
    for call in &mut burst {
        assert_eq!(read_response(call).map(|r| r.status), Some(502));
    }
    assert_eq!(server.post("/batcher", b"after").text(), "after batch=1");
}
