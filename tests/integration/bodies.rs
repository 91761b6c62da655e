//! Big bodies as sealed memory files: a body of 256 KiB or more reaches the plugin as a
//! mapping of a file the worker filled (never copied through the executor's socket), comes
//! back byte for byte when the plugin answers with it (the same file) or with bytes it wrote
//! into it (a copy: the file is never changed), cannot be written or cut short by the plugin
//! (the seals, sandbox or not), ends where its length says (a pipelined request behind it is
//! read as one), and is freed when its client leaves mid-upload; an executor
//! that forges body files of its own is ended, at the cost of its request only.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::support::{plugin_library, read_response, wait_until, Scheme, Server, IO_DEADLINE};

/// Above the size from which bodies go as files (`bodies::BY_FILE_FROM`, 256 KiB).
const BIG: usize = 1 << 20;

/// Bytes that differ page to page, so an answer from the wrong place shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn with_hostile(plugins: &Path) {
    fs::copy(plugin_library("hostile"), plugins.join("libhostile.so")).expect("copy");
}

/// The body files the process `pid` holds open.
fn body_files(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| {
                    fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().contains("memfd:fiddler-body"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The worker: the supervisor's child.
fn worker_pid(server: &Server) -> u32 {
    let pid = server.pid();
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("the supervisor's children");
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a worker")
}

fn a_big_body_reaches_the_plugin_as_a_mapped_file_and_comes_back_byte_for_byte(scheme: Scheme) {
    let server = Server::start_with(scheme, &["echo"], &[], with_hostile);
    let body = pattern(BIG + 12_345);
    let echoed = server.post("/echo", &body);
    assert_eq!(echoed.status, 200);
    assert!(echoed.body == body, "the echo of a big body differs");

    // Past what the sockets' buffers hold, so the answer's sending blocks and resumes (from
    // its file's offset, over plain TCP).
    let large = pattern(12 << 20);
    let echoed = server.post("/echo", &large);
    assert_eq!(echoed.status, 200);
    assert!(echoed.body == large, "the echo of a 12 MiB body differs");

    let seen = server.post("/hostile?try=body_file", &body).text();
    assert!(seen.starts_with("body_file mapped;"), "{seen}");
    let small = server.post("/hostile?try=body_file", b"small").text();
    assert!(small.contains("on the heap"), "{small}");

    // Chunked, so its size is known only at its end: it moves to a file on the way.
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(100_000) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let chunked = server.send(&raw);
    assert_eq!(chunked.status, 200);
    assert!(
        chunked.body == body,
        "the echo of a big chunked body differs"
    );

    // A big body with the next request right behind it, in one write: the body's bytes go
    // to its file (spliced over plain TCP), and not one byte past its end.
    let mut client = server.connect();
    let mut pipelined = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    pipelined.extend_from_slice(&body);
    pipelined
        .extend_from_slice(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nnext!");
    client.write_all(&pipelined).expect("both requests");
    let first = read_response(&mut client).expect("the big echo");
    assert!(first.body == body, "the pipelined big echo differs");
    let second = read_response(&mut client).expect("the next request's answer");
    assert_eq!(second.text(), "next!");
}

fn an_answer_the_plugin_wrote_into_its_body_is_sent_as_written(scheme: Scheme) {
    let server = Server::start_with(scheme, &[], &[], with_hostile);
    let body = pattern(BIG);
    let answer = server.post("/hostile?try=scribble", &body);
    assert_eq!(answer.status, 200);
    let mut expected = body.clone();
    expected.iter_mut().take(4096).for_each(|b| *b ^= 0xff);
    assert!(
        answer.body == expected,
        "the answer is not the bytes the plugin wrote (the file's instead?)"
    );
    // The file behind it was never changed: the same body again gets the same answer.
    assert!(server.post("/hostile?try=scribble", &body).body == expected);
}

crate::over_both_schemes!(
    a_big_body_reaches_the_plugin_as_a_mapped_file_and_comes_back_byte_for_byte,
    an_answer_the_plugin_wrote_into_its_body_is_sent_as_written,
);

/// The seals, not the sandbox, keep the file as the worker wrote it: refused with
/// `--sandbox off` too.
#[test]
fn a_plugin_can_neither_write_into_nor_cut_its_body_file() {
    for args in [&[][..], &["--sandbox", "off"][..]] {
        let server = Server::start_with(Scheme::Http, &[], args, with_hostile);
        let line = server.post("/hostile?try=body_file", &pattern(BIG)).text();
        assert!(
            line.contains("write refused EPERM") && line.contains("truncate refused EPERM"),
            "{args:?}: {line}"
        );
    }
}

/// Regression: a chunked body's limit once counted only the bytes not yet moved to its file,
/// so a big chunked body grew past `--max-body` (and the budget) without end.
#[test]
fn a_big_chunked_body_past_the_limit_is_refused() {
    let server = Server::start_over(Scheme::Http, &["echo"], &["--max-body", "600K"]);
    let mut client = server.connect();
    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("head");
    let chunk = pattern(100_000);
    // Past the limit by the eighth chunk; the server answers then, so later writes may fail.
    for _ in 0..10 {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if client.write_all(&framed).is_err() {
            break;
        }
    }
    let answer = read_response(&mut client).expect("an answer");
    assert_eq!(answer.status, 413, "{}", answer.text());
}

/// An executor that forges body files (one it can still change and cut, which the worker
/// would fault on if it mapped it; files with no frame to take them, which would pile up in
/// the worker) is ended: its request gets 502, the worker and everyone else go on.
#[test]
fn forged_body_files_cost_only_the_forging_executor_its_request() {
    let mut server = Server::start_with(Scheme::Http, &["echo"], &[], with_hostile);
    let worker = worker_pid(&server);
    let ways = [
        (
            "unsealed",
            "bad body file: not a sealed memory file of its length",
        ),
        ("flood", "bad body file: more files than frames"),
    ];
    for (how, logged) in ways {
        let answer = server.get(&format!("/hostile?try=forge_file&how={how}"));
        assert_eq!(answer.status, 502, "{how}: {}", answer.text());
        server.wait_for_log(logged, IO_DEADLINE);
        let echoed = server.post("/echo", b"still here");
        assert_eq!(echoed.text(), "still here");
        assert_eq!(worker_pid(&server), worker, "the same worker");
    }
}

/// A client that sends half a big body and leaves takes its file with it.
#[test]
fn a_client_that_leaves_mid_upload_frees_its_body_file() {
    let server = Server::start_over(Scheme::Http, &["echo"], &[]);
    let worker = worker_pid(&server);
    let mut client = server.connect();
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        4 * BIG
    );
    client.write_all(head.as_bytes()).expect("head");
    client
        .write_all(&pattern(BIG))
        .expect("a quarter of the body");
    wait_until("the body to be in a file", IO_DEADLINE, || {
        (body_files(worker) == 1).then_some(())
    });
    drop(client);
    wait_until("the file to be freed", IO_DEADLINE, || {
        (body_files(worker) == 0).then_some(())
    });
    // And one that finishes is answered, its file freed once the answer is sent.
    let mut client = server.connect();
    let body = pattern(2 * BIG);
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).expect("head");
    client.write_all(&body).expect("body");
    let answer = read_response(&mut client).expect("an answer");
    assert!(answer.body == body);
    wait_until("the files to be freed", IO_DEADLINE, || {
        (body_files(worker) == 0).then_some(())
    });
}
