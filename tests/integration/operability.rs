//! Running it in production: metrics, readiness, the admin address, JSON and access logs, and
//! systemd socket activation.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    plugin_library, read_response, wait_until, Scheme, Server, TempDir, IO_DEADLINE,
};

/// Every sample line is `name{labels} value` with a number for the value.
fn assert_prometheus_text(text: &str) {
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
        let bare = name.split('{').next().unwrap_or_default();
        assert!(
            !bare.is_empty() && bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name: {line}"
        );
        if let Some(labels) = name.strip_prefix(bare) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
    }
}

#[test]
fn metrics_parse_and_move_with_requests_panics_timeouts_and_drops() {
    let server = Server::start_over(Scheme::Http, &["echo", "panic", "sleep"], &[]);
    let before = server.get("/-/metrics").text();
    assert_prometheus_text(&before);
    assert_eq!(server.post("/echo", b"x").status, 200);
    assert_eq!(server.get("/panic").status, 500);
    assert_eq!(server.get("/sleep?ms=1500").status, 504);
    assert_eq!(
        server
            .send(b"BREW /echo HTTP/1.1\r\nHost: t\r\n\r\n")
            .status,
        501
    );
    let after = server.get("/-/metrics").text();
    assert_prometheus_text(&after);
    for sample in [
        "fiddler_plugin_calls_total{plugin=\"echo\"} 1",
        "fiddler_plugin_panics_total{plugin=\"panic\"} 1",
        "fiddler_plugin_timeouts_total{plugin=\"sleep\"} 1",
        "fiddler_plugin_responses_total{plugin=\"echo\",class=\"2xx\"} 1",
        "fiddler_refused_total{status=\"501\"} 1",
        "fiddler_worker_restarts_total 0",
    ] {
        assert!(
            after.lines().any(|l| l == sample),
            "{sample} missing in:\n{after}"
        );
    }
    let count = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("fiddler_request_duration_seconds_count "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        count(&after) >= count(&before) + 3,
        "the latency histogram counts answers"
    );
}

#[test]
fn ready_turns_503_at_the_queue_high_water_mark_and_back() {
    let server = Server::start_over(Scheme::Http, &["sleep"], &["--queue", "4"]);
    assert_eq!(server.get("/-/ready").status, 200);
    let mut waiting = Vec::new();
    for ms in [700, 10, 10, 10] {
        let mut stream = server.connect_tcp();
        stream
            .write_all(format!("GET /sleep?ms={ms} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .expect("send");
        waiting.push(stream);
    }
    wait_until("not ready at 3 of 4 queued", IO_DEADLINE, || {
        (server.get("/-/ready").status == 503).then_some(())
    });
    for stream in &mut waiting {
        assert_eq!(read_response(stream).map(|r| r.status), Some(200));
    }
    assert_eq!(server.get("/-/ready").status, 200);
}

#[test]
fn the_admin_routes_can_live_on_their_own_address() {
    let mut server = Server::start_over(Scheme::Http, &["echo"], &["--admin", "127.0.0.1:0"]);
    let admin = server.admin_addr();
    let ask = |addr: SocketAddr, raw: &[u8]| {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_DEADLINE)).expect("timeout");
        stream.write_all(raw).expect("send");
        read_response(&mut stream).expect("an answer")
    };
    assert_eq!(
        ask(admin, b"GET /-/health HTTP/1.1\r\nHost: t\r\n\r\n").text(),
        "ok\n"
    );
    assert_eq!(
        ask(
            admin,
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx"
        )
        .status,
        404
    );
    assert_eq!(
        server.get("/-/health").status,
        404,
        "not on the public listener"
    );
    assert_eq!(server.post("/echo", b"public").text(), "public");
}

#[test]
fn json_logs_are_one_object_per_line_and_the_access_log_is_opt_in() {
    let mut server = Server::start_over(
        Scheme::Http,
        &["echo"],
        &["--log-format", "json", "--access-log"],
    );
    assert_eq!(server.post("/echo", b"logged").text(), "logged");
    let access = server.wait_for_log("access 127.0.0.1:", IO_DEADLINE);
    assert!(access.contains("/echo 200 6 bytes"), "{access}");
    for line in &server.log {
        assert!(
            line.starts_with("{\"ts\":") && line.ends_with("\"}"),
            "not a JSON log line: {line}"
        );
        let level = line
            .split("\"level\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next());
        assert!(matches!(level, Some("info" | "warn")), "{line}");
        let msg = line.split("\"msg\":\"").nth(1).unwrap_or_default();
        let msg = &msg[..msg.len() - 2];
        let mut chars = msg.chars();
        while let Some(c) = chars.next() {
            assert!(
                c != '"' && (c as u32) >= 0x20,
                "unescaped character in {line}"
            );
            if c == '\\' {
                assert!(
                    matches!(chars.next(), Some('"' | '\\' | 'u')),
                    "bad escape in {line}"
                );
            }
        }
    }
}

#[test]
fn the_binary_serves_under_systemd_socket_activation() {
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        panic!("systemd-socket-activate is missing (apt-get install systemd)");
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let plugins = TempDir::new("socket-activation");
    std::fs::copy(plugin_library("echo"), plugins.0.join("libecho.so")).expect("copy echo");
    let mut child = Command::new("systemd-socket-activate")
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg("--fdname=http")
        .arg(env!("CARGO_BIN_EXE_fiddler-crab"))
        .args(["--https", "off", "--plugins"])
        .arg(&plugins.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start systemd-socket-activate");
    // With socket activation the server starts on the first connection.
    let answer = wait_until("the activated server to answer", IO_DEADLINE, || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nactivated")
            .ok()?;
        read_response(&mut stream)
    });
    let _ = child.kill();
    let _ = child.wait();
    let log: Vec<String> = child
        .stderr
        .take()
        .map(|e| BufReader::new(e).lines().map_while(Result::ok).collect())
        .unwrap_or_default();
    assert_eq!(answer.text(), "activated", "{log:#?}");
    assert!(log.iter().any(|l| l.contains("ready")), "{log:#?}");
}

#[test]
fn the_worker_runs_two_threads_under_load_and_maps_no_plugin() {
    let mut server = Server::start_over(Scheme::Http, &["echo", "burn"], &[]);
    let ready = server.wait_for_log("] ready", IO_DEADLINE);
    let worker: u32 = ready
        .split("worker [")
        .nth(1)
        .and_then(|rest| rest.split(']').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no worker pid in {ready}"));
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let addr = server.addr;
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream.set_read_timeout(Some(IO_DEADLINE)).expect("timeout");
                let mut served = 0;
                while !stop.load(Ordering::Relaxed) && served < 2000 {
                    let path = if i % 2 == 0 { "/echo" } else { "/burn?ms=1" };
                    let raw =
                        format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
                    stream.write_all(raw.as_bytes()).expect("send");
                    assert_eq!(read_response(&mut stream).map(|r| r.status), Some(200));
                    served += 1;
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                served
            })
        })
        .collect();
    // Sample the worker's threads for as long as it serves the first 600 answers.
    let mut most_threads = 0;
    let until = std::time::Instant::now() + IO_DEADLINE;
    while answered.load(Ordering::Relaxed) < 600 && std::time::Instant::now() < until {
        let threads = std::fs::read_dir(format!("/proc/{worker}/task"))
            .map(|tasks| tasks.count())
            .expect("the worker's tasks");
        most_threads = most_threads.max(threads);
    }
    let maps = std::fs::read_to_string(format!("/proc/{worker}/maps")).expect("the worker's maps");
    stop.store(true, Ordering::Relaxed);
    let served: usize = clients
        .into_iter()
        .map(|c| c.join().expect("a client"))
        .sum();
    assert!(served >= 600, "{served} answered");
    assert_eq!(most_threads, 2, "the loop and the watcher");
    assert!(
        !maps.contains("echo-") && !maps.contains("burn-") && !maps.contains("libecho"),
        "the worker maps no plugin library"
    );
}

#[cfg(not(feature = "tls"))]
#[test]
fn a_build_without_tls_says_so_when_asked_for_https() {
    let dir = TempDir::new("notls");
    let output = Command::new(env!("CARGO_BIN_EXE_fiddler-crab"))
        .args([
            "--http",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--plugins",
        ])
        .arg(&dir.0)
        .stdin(Stdio::null())
        .output()
        .expect("run fiddler-crab");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("this build has no TLS"), "{stderr}");
}

/// Every metric the Grafana dashboard in `deploy/grafana/` queries is one `/-/metrics` has.
#[test]
fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/grafana/fiddler-crab.json"),
    )
    .expect("read the dashboard");
    let server = Server::start_over(Scheme::Http, &["echo"], &[]);
    assert_eq!(server.post("/echo", b"x").status, 200);
    let metrics = server.get("/-/metrics").text();
    let families: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut queried = Vec::new();
    for expr in dashboard.split("\"expr\": \"").skip(1) {
        let expr = expr.split("\",").next().unwrap_or_default();
        let mut rest = expr;
        while let Some(at) = rest.find("fiddler_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| families.contains(base))
                .unwrap_or(&name)
                .to_owned();
            queried.push(family);
        }
    }
    assert!(
        queried.len() >= 10,
        "the dashboard queries metrics: {queried:?}"
    );
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !families.contains(&name.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in /-/metrics: {missing:?}");
}
