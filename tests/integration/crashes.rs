//! The supervisor and crash containment: a plugin that segfaults, aborts, overflows its stack,
//! exits or hangs costs the request in flight; the listening sockets, and the supervisor's
//! process, stay.

use std::io::Write;
use std::time::Duration;

use crate::support::{read_response, Scheme, Server, IO_DEADLINE};

/// Triggers `/crash/<how>`, then checks that the very next request is served without a
/// retry (it waits in the backlog while the worker restarts) and that the supervisor stayed.
fn crash_costs_one_request(how: &str, signal_or_code: &str) {
    let mut server = Server::start_over(Scheme::Http, &["crash", "echo"], &[]);
    let supervisor = server.pid();
    let mut victim = server.connect_tcp();
    victim
        .write_all(format!("GET /crash/{how} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .expect("send the crashing request");
    if let Some(response) = read_response(&mut victim) {
        assert!(
            response.status >= 500,
            "{how}: answered {}",
            response.status
        );
    }
    // Straight away, one attempt: the port must not refuse, the new worker must answer.
    assert_eq!(
        server.post("/echo", b"after").text(),
        "after",
        "after {how}"
    );
    let died = server.wait_for_log("died (", IO_DEADLINE);
    assert!(died.contains(signal_or_code), "{how}: {died}");
    assert!(server.is_running(), "the supervisor survived {how}");
    assert_eq!(server.pid(), supervisor);
}

#[test]
fn a_segfault_costs_one_request() {
    crash_costs_one_request("segfault", "SIGSEGV");
}

#[test]
fn an_abort_costs_one_request() {
    crash_costs_one_request("abort", "SIGABRT");
}

#[test]
fn a_stack_overflow_costs_one_request() {
    crash_costs_one_request("stackoverflow", "SIG");
}

#[test]
fn an_exit_costs_one_request() {
    crash_costs_one_request("exit", "exit code 3");
}

#[test]
fn a_hung_call_gets_504_and_its_plugin_is_quarantined() {
    let mut server = Server::start_over(Scheme::Http, &["crash", "echo"], &[]);
    assert_eq!(server.get("/crash/hang").status, 504);
    server.wait_for_log("passed its 1000 ms deadline", IO_DEADLINE);
    assert_eq!(
        server.get("/crash/other").status,
        503,
        "quarantined until the call returns"
    );
    assert_eq!(server.post("/echo", b"fine").text(), "fine");
}

#[test]
fn a_plugin_that_crashes_while_loading_is_skipped_after_one_restart() {
    let mut server = Server::start_with(Scheme::Http, &["crashinit", "echo"], &[], |_| {});
    let skipped = server.wait_for_log("the worker died while loading it", IO_DEADLINE);
    assert!(skipped.contains("libcrashinit.so"), "{skipped}");
    server.wait_for_log("] ready", IO_DEADLINE);
    assert_eq!(server.post("/echo", b"served").text(), "served");
    assert_eq!(server.post("/crashinit", b"").status, 404);
}

/// Sends `GET /sleep?ms=MS` and waits until the plugin runs it; returns its connection.
fn start_long_call(server: &Server, ms: u32) -> std::net::TcpStream {
    let mut running = server.connect_tcp();
    running
        .write_all(format!("GET /sleep?ms={ms} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .expect("send");
    crate::support::wait_until("the call to start", IO_DEADLINE, || {
        server
            .get("/-/plugins")
            .text()
            .contains("\"calls\":1")
            .then_some(())
    });
    running
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_cleanly() {
    let mut server = Server::start_over(Scheme::Http, &["sleep"], &[]);
    let mut running = start_long_call(&server, 600);
    server.signal(libc::SIGTERM);
    let response = read_response(&mut running).expect("the call in flight is answered");
    assert_eq!(
        (response.status, response.header("connection")),
        (200, Some("close"))
    );
    let status = server.wait_exit(IO_DEADLINE);
    assert_eq!(status.code(), Some(0), "{:#?}", server.log);
    server.wait_for_log("drained", IO_DEADLINE);
}

#[test]
fn a_planned_restart_loses_no_request() {
    let mut server = Server::start_over(Scheme::Http, &["sleep", "echo"], &[]);
    let mut running = start_long_call(&server, 500);
    server.signal(libc::SIGHUP);
    assert_eq!(read_response(&mut running).map(|r| r.status), Some(200));
    server.wait_for_log("takes over", IO_DEADLINE + Duration::from_secs(10));
    for i in 0..20 {
        let body = format!("request {i}");
        assert_eq!(server.post("/echo", body.as_bytes()).text(), body);
    }
    assert!(server.is_running());
}
