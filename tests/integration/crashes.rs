//! Crash containment: a plugin that segfaults, aborts, overflows its stack, exits, runs out of
//! memory, hangs or is killed costs the request in flight (502 or 504) and nothing else; the
//! worker, its connections and its queue stay. Init failures refuse the version. SIGTERM drains;
//! SIGHUP restarts the worker without losing a request.

use std::io::Write;
use std::time::Duration;

use crate::support::{
    executor_pids, is_gone, plugin_library, read_response, wait_until, Scheme, Server, TempDir,
    IO_DEADLINE,
};

/// Triggers `/crash/<how>`, then checks that the very next request to the same plugin is
/// served (by a fresh executor), that the log names the cause and the route, and that neither
/// the supervisor nor the worker was replaced.
fn crash_costs_one_request(how: &str, signal_or_code: &str) {
    let mut server = Server::start_over(Scheme::Http, &["crash", "echo"], &[]);
    let supervisor = server.pid();
    let response = server.get(&format!("/crash/{how}"));
    assert_eq!(response.status, 502, "{how}: {}", response.text());
    assert_eq!(
        server.post("/echo", b"after").text(),
        "after",
        "after {how}"
    );
    assert_eq!(server.get("/crash/fine").text(), "alive\n", "after {how}");
    let died = server.wait_for_log("died (", IO_DEADLINE);
    assert!(
        died.contains(signal_or_code) && died.contains("/crash") && died.contains("during a call"),
        "{how}: {died}"
    );
    assert!(server.is_running(), "the supervisor survived {how}");
    assert_eq!(server.pid(), supervisor);
    assert_eq!(workers_started(&server), 1, "the worker survived {how}");
}

/// How many workers the supervisor started (1 while the first one lives).
fn workers_started(server: &Server) -> usize {
    server
        .log
        .iter()
        .filter(|l| l.contains("started worker"))
        .count()
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
fn fifty_requests_behind_a_segfault_lose_only_the_one_that_crashed() {
    let server = Server::start_over(Scheme::Http, &["crash", "echo"], &[]);
    // Measured once each, so 49 of them are expected to fit in --queue-wait.
    assert_eq!(server.get("/crash/warm").status, 200);
    assert_eq!(server.post("/echo", b"warm").status, 200);
    let (gate, mut victim) = server.hold_lane("/crash/segfault");
    // 49 more, each seen waiting before the next is sent: the first ten go to the crashing
    // plugin itself (some are written ahead to its doomed executor and must come back), the
    // rest to another plugin.
    let mut waiting = Vec::new();
    for i in 0..49u64 {
        let mut stream = server.connect_tcp();
        let raw = match i < 10 {
            true => format!("GET /crash/fine{i} HTTP/1.1\r\nHost: t\r\n\r\n"),
            false => format!(
                "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\nrequest {i}",
                format!("request {i}").len()
            ),
        };
        stream.write_all(raw.as_bytes()).expect("send a request");
        waiting.push((i, stream));
        wait_until("the request to wait", IO_DEADLINE, || {
            (server.metric("fiddler_queue_depth") == i + 1).then_some(())
        });
    }
    gate.open();
    let crashed = read_response(&mut victim).expect("the crashing call is answered");
    assert_eq!(crashed.status, 502);
    for (i, stream) in &mut waiting {
        let response = read_response(stream).unwrap_or_else(|| panic!("request {i} was reset"));
        assert_eq!(response.status, 200, "request {i}: {}", response.text());
        let expected = match *i < 10 {
            true => "alive\n".to_owned(),
            false => format!("request {i}"),
        };
        assert_eq!(response.text(), expected);
    }
    assert_eq!(server.metric("fiddler_responses_total{class=\"5xx\"}"), 1);
}

#[test]
fn a_cpu_burning_call_past_its_deadline_is_504_and_its_executor_is_gone_at_once() {
    let server = Server::start_over(Scheme::Http, &["burn"], &["--deadline", "1000"]);
    let [pid] = executor_pids(&server, "burn")[..] else {
        panic!(
            "one executor for /burn: {}",
            server.get("/-/plugins").text()
        );
    };
    let response = server.get("/burn?ms=20000");
    assert_eq!(response.status, 504, "{}", response.text());
    let answered = std::time::Instant::now();
    wait_until(
        "the burning executor to be gone",
        Duration::from_millis(200),
        || is_gone(pid).then_some(()),
    );
    let gone_after = answered.elapsed();
    assert!(gone_after < Duration::from_millis(200), "{gone_after:?}");
    assert_eq!(server.get("/burn?ms=1").text(), "burned 1\n");
    assert!(!executor_pids(&server, "burn").contains(&pid));
}

#[test]
fn an_allocation_without_bound_fails_its_request_and_nothing_else() {
    let mut server = Server::start_over(
        Scheme::Http,
        &["crash", "echo"],
        &["--executor-memory", "256M"],
    );
    let ready = server.wait_for_log("] ready", IO_DEADLINE);
    let response = server.get("/crash/oom");
    assert_eq!(response.status, 502, "{}", response.text());
    let died = server.wait_for_log("died (", IO_DEADLINE);
    assert!(died.contains("/crash"), "{died}");
    assert_eq!(server.post("/echo", b"fine").text(), "fine");
    assert_eq!(server.get("/crash/fine").text(), "alive\n");
    assert_eq!(
        workers_started(&server),
        1,
        "the worker kept its pid: {ready}"
    );
}

#[test]
fn an_executor_killed_from_outside_mid_call_costs_that_call() {
    let mut server = Server::start_over(Scheme::Http, &["crash", "echo"], &[]);
    let gate = server.gate();
    let [pid] = executor_pids(&server, "crash")[..] else {
        panic!("one executor for /crash");
    };
    let mut running = server.start_get(&format!("/crash/x?{}", gate.query()));
    server.wait_busy(1);
    // SAFETY: kill on a pid the server just listed as its executor.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    assert_eq!(read_response(&mut running).map(|r| r.status), Some(502));
    let died = server.wait_for_log("died (SIGKILL)", IO_DEADLINE);
    assert!(died.contains("/crash"), "{died}");
    assert_eq!(server.get("/crash/fine").text(), "alive\n");
    assert_eq!(server.post("/echo", b"fine").text(), "fine");
}

#[test]
fn an_executor_that_keeps_dying_young_is_restarted_with_a_growing_backoff() {
    let root = TempDir::new("crash-loop");
    let marker = root.0.join("crash-at-init");
    let env = format!("CRASH_AT_INIT_IF={}\n", marker.display());
    let mut server = Server::start_with(Scheme::Http, &["echo"], &[], |plugins| {
        let dir = plugins.join("crash");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::copy(plugin_library("crash"), dir.join("libcrash.so")).expect("copy");
        std::fs::write(dir.join("env"), &env).expect("env");
    });
    std::fs::write(&marker, b"").expect("make every restart crash");
    assert_eq!(server.get("/crash/segfault").status, 502);
    let mut waiting = server.connect_tcp();
    waiting
        .write_all(b"GET /crash/fine HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    server.wait_for_log(
        "a fresh one starts in 100 ms (it keeps dying young)",
        IO_DEADLINE,
    );
    server.wait_for_log(
        "a fresh one starts in 200 ms (it keeps dying young)",
        IO_DEADLINE,
    );
    assert_eq!(server.post("/echo", b"others").text(), "others");
    std::fs::remove_file(&marker).expect("end the crash loop");
    let answer = read_response(&mut waiting).expect("the waiting request is served");
    assert_eq!((answer.status, answer.text()), (200, "alive\n".to_owned()));
    assert_eq!(workers_started(&server), 1);
}

#[test]
fn a_plugin_whose_init_crashes_is_refused_and_the_worker_stays() {
    let mut server = Server::start_with(Scheme::Http, &["crashinit", "echo"], &[], |_| {});
    let refused = server.wait_for_log("refused", IO_DEADLINE);
    assert!(
        refused.contains("libcrashinit.so") && refused.contains("died while loading it (SIGSEGV)"),
        "{refused}"
    );
    assert_eq!(server.post("/echo", b"served").text(), "served");
    assert_eq!(server.post("/crashinit", b"").status, 404);
    assert_eq!(workers_started(&server), 1);
}

#[test]
fn an_init_past_the_init_timeout_is_refused() {
    let mut server = Server::start_over(
        Scheme::Http,
        &["slowinit", "echo"],
        &["--init-timeout", "300"],
    );
    let refused = server.wait_for_log("refused", IO_DEADLINE);
    assert!(
        refused.contains("libslowinit.so") && refused.contains("did not finish within 0.3 s"),
        "{refused}"
    );
    assert_eq!(server.post("/echo", b"served").text(), "served");
    assert_eq!(server.get("/slowinit").status, 404);
}

#[test]
fn a_helper_program_a_plugin_started_goes_with_its_executor() {
    // The helper once inherited the executor's socket and held it open, so the worker never
    // saw the executor die.
    let mut server = Server::start_over(Scheme::Http, &["crash"], &[]);
    let helper: u32 = server
        .get("/crash/helper")
        .text()
        .parse()
        .expect("the helper's pid");
    assert!(!is_gone(helper), "the helper runs");
    assert_eq!(server.get("/crash/exit").status, 502);
    server.wait_for_log("died (exit code 3)", IO_DEADLINE);
    wait_until("the helper to be gone", IO_DEADLINE, || {
        is_gone(helper).then_some(())
    });
    assert_eq!(server.get("/crash/fine").text(), "alive\n");
}

#[test]
fn a_plugin_that_writes_frames_of_its_own_gets_its_executor_killed() {
    let mut server = Server::start_over(Scheme::Http, &["crash", "echo"], &[]);
    let response = server.get("/crash/spam");
    // The first frame it wrote answers its call; the flood after it kills the executor.
    assert!(matches!(response.status, 200 | 502), "{}", response.status);
    server.wait_for_log("sent more frames than it had calls", IO_DEADLINE);
    assert_eq!(server.get("/crash/fine").text(), "alive\n");
    assert_eq!(server.post("/echo", b"fine").text(), "fine");
    assert_eq!(workers_started(&server), 1);
}

/// Review finding: frames that settle nothing (a streamed answer's head, then empty pieces)
/// were read without bound in one turn: the loop was held for the whole flood and the worker
/// grew to gigabytes. Now every such frame counts against the turn's share, and an empty
/// piece kills the executor.
#[test]
fn a_plugin_that_floods_streamed_frames_is_killed_without_holding_the_loop() {
    let mut server = Server::start_over(Scheme::Http, &["crash"], &[]);
    let mut flood = server.start_get("/crash/streamspam");
    server.wait_for_log("out of a streamed answer's order", IO_DEADLINE);
    // The loop was free meanwhile: the flood is cut long before the plugin's 10 s are up.
    assert_eq!(server.get("/-/health").text(), "ok\n");
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut flood, &mut rest);
    assert_eq!(server.get("/crash/fine").text(), "alive\n");
}

#[test]
fn what_a_plugin_prints_is_logged_with_its_route_and_capped() {
    let mut server = Server::start_over(Scheme::Http, &["crash"], &[]);
    assert_eq!(server.get("/crash/print?lines=200").text(), "printed\n");
    let line = server.wait_for_log("stdout line 0", IO_DEADLINE);
    assert!(line.contains("/crash ["), "{line}");
    server.wait_for_log("stderr line 0", IO_DEADLINE);
    // 400 lines in a burst: at most 20 a second are logged, the rest are counted.
    assert_eq!(server.get("/crash/print?lines=1").text(), "printed\n");
    wait_until(
        "the summary of lines not logged",
        IO_DEADLINE + IO_DEADLINE,
        || {
            let _ = server.get("/crash/print?lines=1");
            server
                .try_log("more line(s) of its output were not logged")
                .then_some(())
        },
    );
    assert!(server.log.iter().filter(|l| l.contains(" line ")).count() < 100);
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_cleanly() {
    let mut server = Server::start_over(Scheme::Http, &["crash"], &[]);
    let (gate, mut running) = server.hold_lane("/crash/x");
    server.signal(libc::SIGTERM);
    server.wait_for_log("draining", IO_DEADLINE);
    gate.open();
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
    let mut server = Server::start_over(Scheme::Http, &["crash", "echo"], &[]);
    let (gate, mut running) = server.hold_lane("/crash/x");
    server.signal(libc::SIGHUP);
    server.wait_for_log("takes over", IO_DEADLINE + Duration::from_secs(10));
    gate.open();
    assert_eq!(read_response(&mut running).map(|r| r.status), Some(200));
    for i in 0..20 {
        let body = format!("request {i}");
        assert_eq!(server.post("/echo", body.as_bytes()).text(), body);
    }
    assert!(server.is_running());
}

#[test]
fn a_segfault_writes_one_crash_file_whose_replay_reproduces_it() {
    let crashes = crate::support::TempDir::new("crashes");
    let dir = crashes.0.join("kept");
    let dir_arg = dir.to_string_lossy().into_owned();
    let mut server = Server::start_over(
        Scheme::Http,
        &["crash"],
        &["--crash-dir", &dir_arg, "--crash-keep", "2"],
    );
    let response = server.send(
        b"POST /crash/segfault?x=1 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\nContent-Length: 4\r\n\r\nboom",
    );
    assert_eq!(response.status, 502);
    server.wait_for_log("wrote the request that crashed /crash", IO_DEADLINE);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the crash folder")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "one crash, one file: {files:?}");
    let saved = std::fs::read(&files[0]).expect("read the crash file");
    let saved_text = String::from_utf8_lossy(&saved);
    assert!(!saved_text.contains("s3cret"), "credentials are redacted");
    assert!(saved_text.contains("death: SIGSEGV"), "{saved_text}");
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_fiddler-crab"))
        .arg("replay")
        .arg(&files[0])
        .arg(crate::support::plugin_library("crash"))
        .output()
        .expect("run fiddler-crab replay");
    let report = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(0), "reproduced:\n{report}");
    assert!(report.contains("result: reproduced"), "{report}");
    assert!(report.contains("SIGSEGV"), "{report}");
    assert!(report.contains("POST /segfault?x=1"), "{report}");
    // At most --crash-keep files stay.
    for _ in 0..3 {
        assert_eq!(server.get("/crash/abort").status, 502);
    }
    crate::support::wait_until("four crash files written", IO_DEADLINE, || {
        let _ = server.try_log("a line no server writes");
        let written = server
            .log
            .iter()
            .filter(|l| l.contains("wrote the request that crashed"))
            .count();
        (written == 4).then_some(())
    });
    let count = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 2, "the oldest were removed");
}
