//! Who may call what: a route's keys (`keys=` in its folder's settings, `--keys` for every
//! route without one, `keys=none` to opt out), the 401 before the body, a key file that cannot
//! be read closing its route, a rotated key, keys kept out of the log and crash files, and the
//! internals of `/-/` hidden from clients that are not on this machine. Native plugin folders,
//! a dropped-in `.so` and a program folder are covered (one rule for every kind).

use std::fs;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::over_both_schemes;
use crate::support::{
    plugin_library, read_response, read_until_closed, wait_until, Response, Scheme, Server,
    TempDir, IO_DEADLINE,
};

const FIRST: &str = "first-key-0123456789abcdef";
const SECOND: &str = "second-key-fedcba9876543210";
const WRONG: &str = "a-guess-that-is-long-enough";

/// A native plugin folder `plugins/<route>/` holding `crate_name`'s library and a `settings`.
fn plugin_folder(plugins: &Path, route: &str, crate_name: &str, settings: &str) {
    let dir = plugins.join(route);
    fs::create_dir_all(&dir).expect("create a plugin folder");
    fs::copy(
        plugin_library(crate_name),
        dir.join(format!("lib{crate_name}.so")),
    )
    .expect("copy a plugin library");
    if !settings.is_empty() {
        fs::write(dir.join("settings"), settings).expect("write settings");
    }
}

/// `METHOD path` with an optional `Authorization: Bearer KEY` and a small body.
fn call(server: &Server, method: &str, path: &str, key: Option<&str>) -> Response {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 4\r\n\r\ncrab");
    server.send(raw.as_bytes())
}

fn a_route_with_keys_answers_401_without_one_and_200_with_either(scheme: Scheme) {
    let server = Server::start_with(scheme, &[], &[], |plugins| {
        plugin_folder(plugins, "echo", "echo", "keys=keys.txt\n");
        fs::write(
            plugins.join("echo/keys.txt"),
            format!("# two keys for /echo\n{FIRST}\n\n{SECOND}\n"),
        )
        .expect("write the keys");
    });
    let none = call(&server, "POST", "/echo", None);
    assert_eq!(none.status, 401, "{}", none.text());
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"echo\"")
    );
    let wrong = call(&server, "POST", "/echo", Some(WRONG));
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.header("www-authenticate"),
        Some("Bearer realm=\"echo\", error=\"invalid_token\"")
    );
    let basic = server.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nAuthorization: Basic dXNlcjpwYXNz\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(basic.status, 401, "another scheme carries no key");
    for key in [FIRST, SECOND] {
        let ok = call(&server, "POST", "/echo/x", Some(key));
        assert_eq!((ok.status, ok.text().as_str()), (200, "crab"));
    }
    // Without a body, a 401 keeps the connection: the next request on it is served.
    let mut stream = server.connect();
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    assert_eq!(read_response(&mut stream).expect("an answer").status, 401);
    let again = format!("GET /echo HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {FIRST}\r\n\r\n");
    stream.write_all(again.as_bytes()).expect("send");
    assert_eq!(read_response(&mut stream).expect("an answer").status, 200);
    // Shown as required in the admin routes, the keys never.
    let plugins = server.get("/-/plugins").text();
    assert!(plugins.contains("\"keys\":\"required\""), "{plugins}");
    assert!(!plugins.contains(FIRST) && !plugins.contains(SECOND));
    assert!(server
        .get("/-/status")
        .text()
        .contains("\"keys\":\"required\""));
    assert_eq!(
        server.metric("fiddler_unauthorized_total{plugin=\"echo\"}"),
        4
    );
}

over_both_schemes!(a_route_with_keys_answers_401_without_one_and_200_with_either);

#[test]
fn the_401_comes_before_the_body_is_read_and_the_connection_closes() {
    // Limits that would take the body: only the gate stands before it.
    let limits = ["--max-body", "2147483648", "--queue-bytes", "2147483648"];
    let server = Server::start_with(Scheme::Http, &[], &limits, |plugins| {
        plugin_folder(plugins, "echo", "echo", "keys=keys\nmax_body=2G\n");
        fs::write(plugins.join("echo/keys"), format!("{FIRST}\n")).expect("write the keys");
    });
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.http_addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    // 1 GiB announced, not a byte of it sent.
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1073741824\r\n\r\n")
        .expect("send the head");
    let answer = read_response(&mut stream).expect("an answer before the body");
    assert_eq!(answer.status, 401, "{}", answer.text());
    assert!(answer.header("www-authenticate").is_some());
    assert_eq!(answer.header("connection"), Some("close"));
    read_until_closed(&mut stream);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Chunked too: nothing of it is read.
    let mut stream = TcpStream::connect(server.http_addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    stream
        .write_all(b"PUT /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("send the head");
    assert_eq!(read_response(&mut stream).expect("an answer").status, 401);
}

#[test]
fn server_wide_keys_cover_folders_and_dropped_in_files_unless_a_route_opts_out() {
    let keys = TempDir::new("server-keys");
    let file = keys.0.join("keys");
    fs::write(&file, format!("{FIRST}\n")).expect("write the keys");
    let file_arg = file.to_string_lossy().into_owned();
    let server = Server::start_with(Scheme::Http, &["echo"], &["--keys", &file_arg], |plugins| {
        plugin_folder(plugins, "hello", "hello", "");
        plugin_folder(plugins, "open", "hello", "keys=none\n");
    });
    for route in ["/echo", "/hello"] {
        assert_eq!(call(&server, "POST", route, None).status, 401, "{route}");
        assert_eq!(
            call(&server, "POST", route, Some(FIRST)).status,
            200,
            "{route}"
        );
    }
    assert_eq!(
        call(&server, "GET", "/nope", None).status,
        401,
        "a route that does not exist is not guessed open"
    );
    assert_eq!(call(&server, "GET", "/nope", Some(FIRST)).status, 404);
    // The key checked is the server's: the handler does not see it.
    let hello = call(&server, "GET", "/hello", Some(FIRST)).text();
    assert!(
        !hello.to_ascii_lowercase().contains("authorization"),
        "{hello}"
    );
    // An explicit opt-out is open, and its Authorization is its own.
    let open = call(&server, "GET", "/open", Some("the-route's-own-token")).text();
    assert!(open.contains("the-route's-own-token"), "{open}");
    let plugins = server.get("/-/plugins").text();
    for (route, keys) in [
        ("echo", "required"),
        ("hello", "required"),
        ("open", "none"),
    ] {
        let entry = plugins
            .split(&format!("{{\"route\":\"{route}\""))
            .nth(1)
            .unwrap_or_default();
        assert!(
            entry.contains(&format!("\"keys\":\"{keys}\"")),
            "{route}: {plugins}"
        );
    }
    // The probes need no key.
    assert_eq!(server.get("/-/health").status, 200);
    assert_eq!(server.get("/-/ready").status, 200);
}

#[test]
fn a_key_file_that_cannot_be_read_closes_its_route_until_it_can() {
    let keys = TempDir::new("missing-keys");
    let file = keys.0.join("keys");
    let mut server = Server::start_with(Scheme::Http, &[], &[], |plugins| {
        plugin_folder(
            plugins,
            "echo",
            "echo",
            &format!("keys={}\n", file.display()),
        );
        plugin_folder(plugins, "short", "echo", "keys=keys\n");
        fs::write(plugins.join("short/keys"), "tooshort\n").expect("write the keys");
    });
    server.wait_for_log("keys for /echo", IO_DEADLINE);
    server.wait_for_log("too short", IO_DEADLINE);
    for route in ["/echo", "/short"] {
        for key in [None, Some(FIRST), Some("tooshort")] {
            assert_eq!(
                call(&server, "POST", route, key).status,
                503,
                "{route} {key:?}"
            );
        }
    }
    assert!(server
        .get("/-/plugins")
        .text()
        .contains("\"keys\":\"refused\""));
    // The file appears (written aside, moved in whole): the route opens, to its key only.
    let aside = keys.0.join(".keys.new");
    fs::write(&aside, format!("{FIRST}\n")).expect("write the keys");
    fs::rename(&aside, &file).expect("move the keys in");
    wait_until("the route to open", IO_DEADLINE, || {
        (call(&server, "POST", "/echo", Some(FIRST)).status == 200).then_some(())
    });
    assert_eq!(call(&server, "POST", "/echo", None).status, 401);
    let _ = server.try_log("a line no server writes");
    let said = server
        .log
        .iter()
        .filter(|l| l.contains("keys for /echo") && l.contains("cannot read it"))
        .count();
    assert_eq!(
        said, 1,
        "one log line while it stayed missing: {:?}",
        server.log
    );
}

#[test]
fn a_rotated_key_takes_effect_within_a_poll_without_a_new_version() {
    let keys = TempDir::new("rotated-keys");
    let file = keys.0.join("keys");
    fs::write(&file, format!("{FIRST}\n")).expect("write the keys");
    let setting = format!("keys={}\n", file.display());
    let server = Server::start_with(Scheme::Http, &[], &[], |plugins| {
        plugin_folder(plugins, "echo", "echo", &setting);
    });
    assert_eq!(call(&server, "POST", "/echo", Some(FIRST)).status, 200);
    let before = crate::support::executor_pids(&server, "echo");
    let aside = keys.0.join(".keys.new");
    fs::write(&aside, format!("{SECOND}\n")).expect("write the keys");
    fs::rename(&aside, &file).expect("rotate");
    wait_until("the new key to work", IO_DEADLINE, || {
        (call(&server, "POST", "/echo", Some(SECOND)).status == 200).then_some(())
    });
    assert_eq!(call(&server, "POST", "/echo", Some(FIRST)).status, 401);
    assert_eq!(
        crate::support::executor_pids(&server, "echo"),
        before,
        "the same executor serves: no new version"
    );
    assert!(server
        .get("/-/plugins")
        .text()
        .contains("\"generation\":1,"));
}

#[test]
fn keys_never_reach_the_log_nor_a_crash_file() {
    let keys = TempDir::new("crash-keys");
    let file = keys.0.join("keys");
    fs::write(&file, format!("{FIRST}\n")).expect("write the keys");
    let crashes = keys.0.join("crashes");
    let (file_arg, crash_arg) = (
        file.to_string_lossy().into_owned(),
        crashes.to_string_lossy().into_owned(),
    );
    // Even with --crash-keep-secrets: a checked key never reaches the plugin's request.
    let mut server = Server::start_over(
        Scheme::Http,
        &["crash"],
        &[
            "--keys",
            &file_arg,
            "--crash-dir",
            &crash_arg,
            "--crash-keep-secrets",
            "--access-log",
        ],
    );
    assert_eq!(call(&server, "POST", "/crash/x", Some(WRONG)).status, 401);
    assert_eq!(
        call(&server, "POST", "/crash/segfault", Some(FIRST)).status,
        502
    );
    server.wait_for_log("wrote the request that crashed /crash", IO_DEADLINE);
    let files: Vec<_> = fs::read_dir(&crashes)
        .expect("the crash folder")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let saved = fs::read(&files[0]).expect("read the crash file");
    let saved = String::from_utf8_lossy(&saved);
    assert!(
        saved.contains("POST") && saved.contains("/segfault"),
        "{saved}"
    );
    assert!(!saved.contains(FIRST), "the key is not in the crash file");
    // The access log is on: its line for the crash is in (the log is written apart from the
    // answer, so it is waited for).
    server.wait_for_log("/crash 502", IO_DEADLINE);
    let _ = server.try_log("a line no server writes");
    let log = server.log.join("\n");
    for secret in [FIRST, WRONG] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

/// An IPv4 address of this machine that is not loopback, if it has one.
fn non_loopback_address() -> Option<IpAddr> {
    let mut found = None;
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut at = list;
    while !at.is_null() && found.is_none() {
        // SAFETY: `at` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*at };
        if !entry.ifa_addr.is_null()
            // SAFETY: a non-null ifa_addr points to a sockaddr whose family says its type.
            && i32::from(unsafe { (*entry.ifa_addr).sa_family }) == libc::AF_INET
        {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let v4 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            if !ip.is_loopback() && !ip.is_unspecified() {
                found = Some(IpAddr::V4(ip));
            }
        }
        at = entry.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once; nothing points into it any more.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[test]
fn the_internals_are_hidden_from_clients_not_on_this_machine() {
    let Some(outside) = non_loopback_address() else {
        // The decision itself is unit-tested (access::internals).
        eprintln!("no non-loopback address here: only the loopback side is checked");
        return;
    };
    let server = Server::start_over(Scheme::Http, &["echo"], &["--http", "0.0.0.0:0"]);
    let port = server.http_addr.port();
    let ask = |addr: SocketAddr, path: &str| {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(IO_DEADLINE))
            .expect("a read timeout");
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .expect("send");
        read_response(&mut stream).expect("an answer")
    };
    let from_outside = SocketAddr::new(outside, port);
    let from_here = SocketAddr::from(([127, 0, 0, 1], port));
    for path in [
        "/-/",
        "/-/status",
        "/-/plugins",
        "/-/status.js",
        "/-/status.css",
    ] {
        let hidden = ask(from_outside, path);
        assert_eq!(hidden.status, 404, "{path} from {outside}");
        assert!(!hidden.text().contains("echo"), "{}", hidden.text());
        assert_eq!(ask(from_here, path).status, 200, "{path} from loopback");
    }
    for path in ["/-/health", "/-/ready", "/-/metrics"] {
        assert_eq!(ask(from_outside, path).status, 200, "{path} from {outside}");
    }
    let echoed = server.post("/echo", b"crab");
    assert_eq!(echoed.status, 200, "plugins are served to everyone");
}

#[test]
fn a_program_folder_takes_keys_from_its_settings_too() {
    let server = Server::start_with(Scheme::Http, &[], &[], |plugins| {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/programs/stdlib");
        let to = plugins.join("std");
        fs::create_dir_all(&to).expect("make the program folder");
        for entry in fs::read_dir(&from).expect("read the fixture").flatten() {
            fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a fixture file");
        }
        fs::write(to.join("settings"), "keys=keys.txt\n").expect("write settings");
        fs::write(to.join("keys.txt"), format!("{FIRST}\n")).expect("write the keys");
    });
    assert_eq!(call(&server, "GET", "/std/pid", None).status, 401);
    let echoed = call(&server, "POST", "/std/echo", Some(FIRST));
    assert_eq!(echoed.status, 200, "{}", echoed.text());
    assert!(server
        .get("/-/plugins")
        .text()
        .contains("\"keys\":\"required\""));
}
