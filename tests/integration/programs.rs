//! Programs that stay up: folders with an executable `serve`, started once per version and
//! called over HTTP (a standard-library Python server on `$PORT`, uvicorn on
//! `$FIDDLER_SOCKET`), killed, hung, streamed, swapped and refused while the server runs.

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::support::{
    is_gone, read_chunk, read_chunked, read_head_response, read_response, wait_until, Client,
    Scheme, Server, IO_DEADLINE,
};

/// How long a changed folder may take to be served (a settled poll, then the program's start).
const SWAP_DEADLINE: Duration = Duration::from_secs(15);

/// Copies the fixture program `fixture` (under `tests/fixtures/programs/`) to
/// `plugins/<route>/`, with extra files.
fn install(plugins: &Path, fixture: &str, route: &str, extra: &[(&str, &str)]) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/programs")
        .join(fixture);
    let to = plugins.join(route);
    fs::create_dir_all(&to).expect("make the program folder");
    for entry in fs::read_dir(&from).expect("read the fixture").flatten() {
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a fixture file");
    }
    for (name, text) in extra {
        fs::write(to.join(name), text).expect("write an extra file");
    }
}

/// A server with one program, `fixture` installed at `/<route>` with `extra` files.
fn start(scheme: Scheme, fixture: &str, route: &str, extra: &[(&str, &str)]) -> Server {
    Server::start_with(scheme, &[], &[], |dir| install(dir, fixture, route, extra))
}

fn pid_of(server: &Server, route: &str) -> u32 {
    let response = server.get(&format!("/{route}/pid"));
    assert_eq!(response.status, 200, "{}", response.text());
    response.text().parse().expect("a pid")
}

fn a_program_answers_with_its_settings_env_and_forwarding(scheme: Scheme) {
    let extra = [
        ("env", "MODEL=/models/tiny.gguf\n"),
        ("settings", "max_body=1K\n"),
    ];
    let server = start(scheme, "stdlib", "std", &extra);
    let response = server.send(
        b"POST /std/echo?x=1 HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\nX-Forwarded-For: 10.9.8.7\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text();
    let proto = match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    for expected in [
        "\"method\": \"POST\"".to_owned(),
        "\"path\": \"/echo\"".to_owned(),
        "\"query\": \"x=1\"".to_owned(),
        "\"body_len\": 5".to_owned(),
        "\"xff\": \"10.9.8.7, 127.0.0.1\"".to_owned(),
        format!("\"proto\": \"{proto}\""),
        "\"connection\": null".to_owned(),
        "\"route\": \"std\"".to_owned(),
        "\"model\": \"/models/tiny.gguf\"".to_owned(),
    ] {
        assert!(text.contains(&expected), "{expected} not in {text}");
    }
    assert_eq!(server.post("/std/echo", &[b'x'; 2000]).status, 413);
    let plugins = server.get("/-/plugins").text();
    assert!(plugins.contains("\"kind\":\"program\""), "{plugins}");
}

fn a_streamed_answer_reaches_the_client_before_the_program_has_finished(scheme: Scheme) {
    let server = start(scheme, "stdlib", "std", &[]);
    let gate = server.gate();
    let mut client = server.start_get(&format!("/std/stream?{}", gate.query()));
    let head = read_head_response(&mut client).expect("a response head");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    // The program is still blocked on the gate: this piece came while it had not finished.
    assert_eq!(read_chunk(&mut client), b"data: token0\n\n");
    gate.open();
    let rest = read_chunked(&mut client);
    assert_eq!(rest, b"data: token1\n\ndata: token2\n\ndata: token3\n\n");
    // The connection is kept and serves the next request.
    client
        .write_all(b"GET /std/echo HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send a second request");
    assert_eq!(read_response(&mut client).expect("an answer").status, 200);
}

#[test]
fn a_client_that_leaves_a_programs_stream_gets_it_stopped() {
    let mut server = start(Scheme::Http, "stdlib", "std", &[]);
    let mut client = server.start_get("/std/slow");
    let head = read_head_response(&mut client).expect("a response head");
    assert_eq!(head.status, 200);
    assert_eq!(read_chunk(&mut client), b"data: tick0\n\n");
    drop(client);
    // The executor drops its connection to the program, whose next writes fail.
    let gone = server.wait_for_log("slow stream: client gone", IO_DEADLINE);
    assert!(gone.contains("/std"), "{gone}");
    // And the route serves the next call.
    assert_eq!(server.get("/std/echo").status, 200);
}

crate::over_both_schemes!(
    a_program_answers_with_its_settings_env_and_forwarding,
    a_streamed_answer_reaches_the_client_before_the_program_has_finished,
);

#[test]
fn a_program_killed_mid_call_costs_that_call_and_the_queued_ones_are_answered_after() {
    let mut server = start(Scheme::Http, "stdlib", "std", &[]);
    let before = pid_of(&server, "std");
    let (_gate, mut held) = server.hold_lane("/std/wait");
    let queued_before = server.metric("fiddler_requests_queued_total");
    let mut queued: Vec<Client> = (0..3).map(|_| server.start_get("/std/echo")).collect();
    wait_until("three more queued", IO_DEADLINE, || {
        (server.metric("fiddler_requests_queued_total") >= queued_before + 3).then_some(())
    });
    // SAFETY: a signal to the fixture program's pid, which this test just read from it.
    assert_eq!(unsafe { libc::kill(before as i32, libc::SIGKILL) }, 0);
    let cost = read_response(&mut held).expect("an answer for the call in flight");
    assert_eq!(cost.status, 502, "{}", cost.text());
    for client in queued.iter_mut() {
        let response = read_response(client).expect("an answer after the restart");
        assert_eq!(response.status, 200, "{}", response.text());
    }
    let after = pid_of(&server, "std");
    assert_ne!(before, after, "a fresh program serves");
    server.wait_for_log("died", IO_DEADLINE);
}

#[test]
fn a_hung_call_gets_504_and_the_program_is_restarted() {
    let mut server = start(
        Scheme::Http,
        "stdlib",
        "slow",
        &[("settings", "deadline=1500\n")],
    );
    let before = pid_of(&server, "slow");
    let response = server.get("/slow/hang");
    assert_eq!(response.status, 504, "{}", response.text());
    wait_until("the hung program to be killed", IO_DEADLINE, || {
        is_gone(before).then_some(())
    });
    assert_ne!(pid_of(&server, "slow"), before);
    server.wait_for_log("passed its 1500 ms deadline", IO_DEADLINE);
}

#[test]
fn a_changed_folder_is_swapped_in_with_no_failed_request_under_load() {
    let server = start(Scheme::Http, "stdlib", "std", &[("VERSION", "v1\n")]);
    assert_eq!(server.get("/std/version").text(), "v1");
    let old = pid_of(&server, "std");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (addr, stop, sent) = (server.addr, Arc::clone(&stop), Arc::clone(&sent));
        thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) && answers.len() < 20_000 {
                sent.fetch_add(1, Ordering::SeqCst);
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream
                    .set_read_timeout(Some(IO_DEADLINE))
                    .expect("a read timeout");
                stream
                    .write_all(b"GET /std/version HTTP/1.1\r\nHost: t\r\n\r\n")
                    .expect("send");
                let response = read_response(&mut stream).expect("an answer");
                answers.push((response.status, response.text()));
            }
            answers
        })
    };
    wait_until("the load to run", IO_DEADLINE, || {
        (sent.load(Ordering::SeqCst) > 10).then_some(())
    });
    // A new serve (and the "model" file it loads at start) dropped in while requests run.
    let serve = server.plugins_dir.join("std/serve");
    let mut code = fs::read_to_string(&serve).expect("read serve");
    code.push_str("\n# version 2\n");
    fs::write(server.plugins_dir.join("std/VERSION"), "v2\n").expect("change a file");
    fs::write(&serve, code).expect("change serve");
    wait_until("the new version to answer", SWAP_DEADLINE, || {
        (server.get("/std/version").text() == "v2").then_some(())
    });
    wait_until("the old program to be stopped", IO_DEADLINE, || {
        is_gone(old).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let answers = load.join().expect("the load thread");
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert!(failed.is_empty(), "failed during the swap: {failed:?}");
    assert!(
        answers.iter().any(|(_, v)| v == "v1"),
        "load ran before the swap"
    );
    assert_eq!(answers.last().map(|(_, v)| v.as_str()), Some("v2"));
}

/// Puts `script` in place as `plugins/<route>/serve` (written aside, then renamed, so the
/// watcher never sees half of it), with `settings`.
fn install_script(server: &Server, route: &str, script: &str, settings: &str) {
    let dir = server.plugins_dir.join(route);
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("settings"), settings).expect("settings");
    let serve = dir.join(".serve.tmp");
    fs::write(&serve, script).expect("write serve");
    fs::set_permissions(&serve, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    fs::rename(&serve, dir.join("serve")).expect("rename into place");
}

#[test]
fn a_program_that_never_listens_is_refused_with_its_stderr() {
    let mut server = start(Scheme::Http, "stdlib", "std", &[]);
    install_script(
        &server,
        "mute",
        "#!/bin/sh\necho 'cannot load weights.bin' >&2\nexec sleep 60\n",
        "start_timeout=1500\n",
    );
    let line = server.wait_for_log("refused", SWAP_DEADLINE);
    assert!(line.contains("did not listen"), "{line}");
    assert!(line.contains("cannot load weights.bin"), "{line}");
    assert_eq!(server.get("/mute").status, 404);
    assert_eq!(
        server.get("/std/echo").status,
        200,
        "the others still serve"
    );
}

/// Issue 26: the smallest real program, a `BaseHTTPRequestHandler` with only `do_POST`,
/// answers its `GET /health` with 501; it was refused after its whole start timeout ("its GET
/// /health still answered 501"). Any answer but a 503 means it is up.
#[test]
fn a_program_whose_health_answers_501_is_served() {
    let mut server = start(Scheme::Http, "stdlib", "std", &[]);
    let script = r#"#!/usr/bin/env python3
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer = b"posted: " + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;
    install_script(&server, "postonly", script, "start_timeout=3000\n");
    wait_until("/postonly to be served or refused", SWAP_DEADLINE, || {
        (server.try_log("as /postonly") || server.try_log("refused")).then_some(())
    });
    assert!(
        !server.try_log("refused"),
        "refused:\n{}",
        server.log.join("\n")
    );
    let response = server.post("/postonly", b"hi");
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "posted: hi")
    );
}

/// Kills the process whose pid is in a file when dropped (one the test left outside the
/// server's reach on purpose).
struct KillOnDrop(std::path::PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// A `serve` that never listens itself: an HTTP server in a session of its own, never its
/// descendant while it listens, answers on its $PORT, as a process that took the port first
/// would (or a container runtime listening for it). It waits until the middle process is gone,
/// then writes its pid to `pid_file` and binds; it ends itself in 60 s.
fn stranger_on_the_port(pid_file: &Path) -> String {
    format!(
        r#"#!/usr/bin/env python3
import http.server, os, signal, sys, time
first = os.fork()
if first == 0:
    os.setsid()
    middle = os.getpid()
    if os.fork() == 0:
        signal.alarm(60)
        while os.getppid() == middle:
            time.sleep(0.01)
        with open("{pid}", "w") as f:
            f.write(str(os.getpid()))
        address = ("127.0.0.1", int(os.environ["PORT"]))
        http.server.HTTPServer(address, http.server.SimpleHTTPRequestHandler).serve_forever()
    os._exit(0)
os.waitpid(first, 0)
os.execvp("sleep", ["sleep", "60"])
"#,
        pid = pid_file.display()
    )
}

#[test]
fn a_port_another_process_listens_on_is_never_taken_for_the_programs() {
    // The stranger is played by the program's own child in a session of its own, writing
    // its pid beside the plugins folder: both are what the sandbox refuses (tests/integration/
    // sandbox.rs), so this port test runs without it.
    let mut server = Server::start_with(Scheme::Http, &[], &["--sandbox", "off"], |dir| {
        install(dir, "stdlib", "std", &[])
    });
    let pid_file = server.plugins_dir.with_file_name("stranger.pid");
    let _stranger = KillOnDrop(pid_file.clone());
    let script = stranger_on_the_port(&pid_file);
    install_script(&server, "squatted", &script, "start_timeout=6000\n");
    let line = server.wait_for_log("refused", SWAP_DEADLINE);
    assert!(line.contains("was taken by another process"), "{line}");
    assert_eq!(
        server.get("/squatted/").status,
        404,
        "nothing is served there"
    );
}

#[test]
fn with_port_owner_any_a_listener_outside_the_program_is_taken_for_its() {
    // The stranger is played by the program's own child in a session of its own, writing
    // its pid beside the plugins folder: both are what the sandbox refuses (tests/integration/
    // sandbox.rs), so this port test runs without it.
    let mut server = Server::start_with(Scheme::Http, &[], &["--sandbox", "off"], |dir| {
        install(dir, "stdlib", "std", &[])
    });
    let pid_file = server.plugins_dir.with_file_name("runtime.pid");
    let _runtime = KillOnDrop(pid_file.clone());
    let script = stranger_on_the_port(&pid_file);
    install_script(
        &server,
        "contained",
        &script,
        "port_owner=any\nstart_timeout=6000\n",
    );
    server.wait_for_log("as /contained", SWAP_DEADLINE);
    assert_eq!(
        server.get("/contained/").status,
        200,
        "the listener answers"
    );
}

#[test]
fn a_program_whose_port_was_taken_first_is_started_again_on_another() {
    // The stranger is played by the program's own child in a session of its own, writing
    // its pid beside the plugins folder: both are what the sandbox refuses (tests/integration/
    // sandbox.rs), so this port test runs without it.
    let mut server = Server::start_with(Scheme::Http, &[], &["--sandbox", "off"], |dir| {
        install(dir, "stdlib", "std", &[])
    });
    let pid_file = server.plugins_dir.with_file_name("squatter.pid");
    let _squatter = KillOnDrop(pid_file.clone());
    let leftover_file = server.plugins_dir.with_file_name("leftover.pid");
    let _leftover = KillOnDrop(leftover_file.clone());
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/programs/stdlib/serve");
    // The first start leaves a child behind in its group, binds its own $PORT, hands the
    // listener to a process in a session of its own (which never accepts) and exits, as a
    // program whose port another process took first would; the next start is the
    // standard-library fixture.
    let script = format!(
        r#"#!/usr/bin/env python3
import os, socket, subprocess, sys
if os.path.exists("{pid}"):
    os.execv(sys.executable, [sys.executable, "{fixture}"])
leftover = subprocess.Popen(["sleep", "60"])
with open("{leftover}", "w") as f:
    f.write(str(leftover.pid))
listener = socket.socket()
listener.bind(("127.0.0.1", int(os.environ["PORT"])))
listener.listen()
squatter = subprocess.Popen(["sleep", "60"], pass_fds=[listener.fileno()], start_new_session=True)
with open("{pid}", "w") as f:
    f.write(str(squatter.pid))
sys.exit("address already in use")
"#,
        pid = pid_file.display(),
        leftover = leftover_file.display(),
        fixture = fixture.display()
    );
    install_script(&server, "retried", &script, "start_timeout=10000\n");
    let again = server.wait_for_log("starting it again on another", SWAP_DEADLINE);
    assert!(again.contains("/retried"), "{again}");
    server.wait_for_log("as /retried", SWAP_DEADLINE);
    assert_eq!(server.get("/retried/echo").status, 200);
    let leftover: u32 = fs::read_to_string(&leftover_file)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .expect("the first start's leftover pid");
    wait_until("the failed start's leftover is killed", IO_DEADLINE, || {
        is_gone(leftover).then_some(())
    });
}

#[test]
fn a_uvicorn_app_on_the_unix_socket_answers_and_streams() {
    let found = Command::new("python3")
        .args(["-c", "import uvicorn"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "this test needs uvicorn (pip install uvicorn; .ci/run installs it)"
    );
    let server = start(Scheme::Http, "asgi", "uv", &[]);
    let plugins = server.get("/-/plugins").text();
    assert!(
        plugins.contains("on unix:"),
        "it listens on the socket: {plugins}"
    );
    let response = server.post("/uv/echo", b"hi");
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, "uvicorn uv: hi")
    );
    let mut client = server.start_get("/uv/stream");
    let head = read_head_response(&mut client).expect("a head");
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    let events = read_chunked(&mut client);
    assert_eq!(events, b"data: 0\n\ndata: 1\n\ndata: 2\n\n");
}

/// Review finding: a call on a kept connection that the program closed without answering was
/// retried on a new one whatever its method, so a `POST` the program had acted on ran twice.
#[test]
fn a_post_the_program_took_and_dropped_is_not_run_again() {
    let server = start(Scheme::Http, "stdlib", "std", &[]);
    assert_eq!(server.get("/std/dropnext").text(), "armed");
    let dropped = server.post("/std/count", b"once");
    assert_eq!(dropped.status, 502, "{}", dropped.text());
    // The program counted that POST once; this GET is its second /count call.
    assert_eq!(server.get("/std/count").text(), "2");
}

/// Installs at `/<route>` a program that stands in for a model loading for minutes: its
/// `serve` listens only once `gate` is open (then it is the stdlib fixture).
fn install_slow_starter(plugins: &Path, route: &str, gate: &crate::support::Gate) {
    install(
        plugins,
        "stdlib",
        route,
        &[("settings", "start_timeout=120000\n")],
    );
    let dir = plugins.join(route);
    fs::rename(dir.join("serve"), dir.join("stdlib.py")).expect("move the fixture aside");
    let script = format!(
        "#!/bin/sh\nwhile [ ! -e '{}' ]; do sleep 0.01; done\nexec python3 ./stdlib.py\n",
        gate.path().display()
    );
    fs::write(dir.join("serve"), script).expect("write serve");
    fs::set_permissions(
        dir.join("serve"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
}

/// Issue 26, item 1: a program slow to listen (a model loading) darkened the whole server at
/// start: nothing was accepted, `/-/health` included, until every first version was ready, so
/// a liveness probe would kill the pod before a large model ever loaded. The listeners answer
/// at once now; `/-/ready` says 503 naming the route still starting; a ready route serves; a
/// request for the starting route waits for it in the queue.
#[test]
fn a_slow_program_does_not_darken_the_server_at_start() {
    let mut server = Server::start_unsettled(Scheme::Http, &["echo"], &[], |dir| {
        install_slow_starter(dir, "model", &crate::support::Gate::beside(dir))
    });
    let gate = server.gate();
    let health = server.get("/-/health");
    assert_eq!((health.status, health.text()), (200, "ok\n".to_owned()));
    let ready = server.get("/-/ready");
    assert_eq!(ready.status, 503, "{}", ready.text());
    let reason = ready.text();
    assert!(
        reason.starts_with("starting: ") && reason.contains("/model "),
        "{reason}"
    );
    assert_eq!(server.post("/echo", b"at once").text(), "at once");
    let mut waiting = server.start_get("/model/echo");
    wait_until("the request for /model to be queued", IO_DEADLINE, || {
        (server.metric("fiddler_queue_depth") == 1).then_some(())
    });
    assert!(!server.try_log("] ready"), "{:#?}", server.log);
    gate.open();
    let answer = read_response(&mut waiting).expect("the queued request is answered");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        answer.text().contains("\"route\": \"model\""),
        "{}",
        answer.text()
    );
    server.wait_for_log("] ready", IO_DEADLINE);
    assert_eq!(server.get("/-/ready").status, 200);
}

/// Issue 26, item 1, under `--busy 503`: a request for a route still starting is answered 503
/// with `Retry-After` at once (busy mode does not queue what would wait), while a ready route
/// serves.
#[test]
fn a_route_still_starting_answers_503_under_busy_503() {
    let server = Server::start_unsettled(Scheme::Http, &["echo"], &["--busy", "503"], |dir| {
        install_slow_starter(dir, "model", &crate::support::Gate::beside(dir))
    });
    let busy = server.get("/model/echo");
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert!(busy.header("retry-after").is_some(), "{}", busy.text());
    assert!(
        busy.text().contains("/model is starting"),
        "{}",
        busy.text()
    );
    wait_until("/echo to be ready", IO_DEADLINE, || {
        let plugins = server.get("/-/plugins").text();
        plugins.contains("\"route\":\"echo\"").then_some(())
    });
    assert_eq!(server.post("/echo", b"served").text(), "served");
    server.gate().open();
    wait_until("/model to serve", SWAP_DEADLINE, || {
        (server.get("/model/echo").status == 200).then_some(())
    });
}
