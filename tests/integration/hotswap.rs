//! Plugins come and go while the server runs: dropped in, replaced, removed, refused.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::support::{
    executor_pids, is_gone, plugin_library, read_response, wait_until, Scheme, Server, IO_DEADLINE,
};

/// How long a dropped file may take to serve (the bound; the watcher polls every
/// 250 ms and waits one poll for the file to settle).
const SWAP_DEADLINE: Duration = Duration::from_secs(5);

/// Puts `crate_name`'s library at `plugins/<file>` the way `mv` does: write a hidden temporary
/// file, then rename it into place.
fn drop_in(server: &Server, crate_name: &str, file: &str) {
    let temporary = server.plugins_dir.join(format!(".{file}.partial"));
    fs::copy(plugin_library(crate_name), &temporary).expect("copy the library");
    fs::rename(&temporary, server.plugins_dir.join(file)).expect("rename it into place");
}

/// Overwrites `plugins/<file>` in place, the way `cp` does.
fn overwrite(dir: &Path, file: &str, bytes: &[u8]) {
    fs::write(dir.join(file), bytes).expect("overwrite in place");
}

fn wait_for_answer(server: &Server, path: &str, what: &str, check: impl Fn(u16, &str) -> bool) {
    wait_until(what, SWAP_DEADLINE, || {
        let response = server.post(path, b"ping");
        check(response.status, &response.text()).then_some(())
    });
}

#[test]
fn a_plugin_is_dropped_in_replaced_and_removed_live() {
    let mut server = Server::start_over(Scheme::Http, &[], &[]);
    assert_eq!(server.post("/swap", b"ping").status, 404);

    drop_in(&server, "echo", "libswap.so");
    wait_for_answer(&server, "/swap", "echo to serve /swap", |s, t| {
        s == 200 && t == "ping"
    });

    let first = executor_pids(&server, "swap");
    assert_eq!(first.len(), 1, "one executor serves /swap");
    // A different build under the same name: the next calls reach the new code.
    fs::copy(
        plugin_library("hello"),
        server.plugins_dir.join("libswap.so"),
    )
    .expect("cp over it");
    wait_for_answer(&server, "/swap", "hello to replace echo", |s, t| {
        s == 200 && t.starts_with("Hello, world!")
    });
    server.wait_for_log("replacing generation", IO_DEADLINE);
    // The old version really goes away: its executor exits, its library with it.
    wait_until("the old executor to exit", IO_DEADLINE, || {
        is_gone(first[0]).then_some(())
    });
    let second = executor_pids(&server, "swap");
    assert!(second.len() == 1 && second != first, "{second:?}");

    fs::remove_file(server.plugins_dir.join("libswap.so")).expect("remove the plugin");
    wait_for_answer(&server, "/swap", "/swap to be 404", |s, _| s == 404);
    server.wait_for_log("is no longer served", IO_DEADLINE);
    wait_until(
        "the removed version's executor to exit",
        IO_DEADLINE,
        || is_gone(second[0]).then_some(()),
    );
}

#[test]
fn broken_and_incompatible_replacements_leave_the_old_version_serving() {
    let mut server = Server::start_over(Scheme::Http, &["echo"], &[]);
    overwrite(&server.plugins_dir, "libecho.so", b"\x7fELF but not really");
    let garbage = server.wait_for_log("refused", IO_DEADLINE);
    assert!(garbage.contains("keeps serving /echo"), "{garbage}");
    assert_eq!(server.post("/echo", b"old").text(), "old");

    let incompatible = fs::read(plugin_library("incompatible")).expect("read the fixture");
    overwrite(&server.plugins_dir, "libecho.so", &incompatible);
    let refusal = server.wait_for_log("incompatible plugin-api", IO_DEADLINE);
    assert!(refusal.contains("keeps serving /echo"), "{refusal}");
    assert_eq!(server.post("/echo", b"still old").text(), "still old");

    // The same broken bytes again are not retried: one refusal line each.
    overwrite(&server.plugins_dir, "libecho.so", &incompatible);
    drop_in(&server, "hello", "libmarker.so");
    wait_for_answer(&server, "/marker", "the marker plugin", |s, _| s == 200);
    let refusals = server
        .log
        .iter()
        .filter(|l| l.contains("incompatible plugin-api"))
        .count();
    assert_eq!(refusals, 1, "{:#?}", server.log);
}

#[test]
fn the_same_bytes_are_loaded_once() {
    let mut server = Server::start_over(Scheme::Http, &["echo"], &[]);
    // Same content, new inode and mtime.
    drop_in(&server, "echo", "libecho.so");
    drop_in(&server, "hello", "libmarker.so");
    wait_for_answer(&server, "/marker", "the marker plugin", |s, _| s == 200);
    server.wait_for_log("as /marker", IO_DEADLINE);
    let loads = server.log.iter().filter(|l| l.contains("as /echo")).count();
    assert_eq!(loads, 1, "{:#?}", server.log);
}

#[test]
fn a_running_call_finishes_on_the_version_it_started_with() {
    let mut server = Server::start_over(Scheme::Http, &[], &[]);
    drop_in(&server, "sleep", "libslow.so");
    wait_for_answer(&server, "/slow", "sleep to serve /slow", |s, _| s == 200);

    // 900 ms is within the sleep fixture's own 1000 ms deadline.
    let mut running = server.connect();
    running
        .write_all(b"POST /slow?ms=900 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nold")
        .expect("start the long call");
    wait_until("the long call to start", IO_DEADLINE, || {
        server
            .get("/-/plugins")
            .text()
            .contains("\"calls\":2")
            .then_some(())
    });
    drop_in(&server, "echo", "libslow.so");
    server.wait_for_log("replacing generation", IO_DEADLINE);
    let finished = read_response(&mut running).expect("the long call's answer");
    assert_eq!(
        finished.text(),
        "slept 900\nold",
        "answered by the old version"
    );
    assert_eq!(
        server.post("/slow", b"new").text(),
        "new",
        "answered by the new version"
    );
}

#[test]
fn regression_a_quick_roll_back_wins_over_the_version_still_starting() {
    // A version still in its init used to go live after its file was rolled back to the bytes
    // already serving (the roll-back was ignored as "the same bytes").
    let mut server = Server::start_over(Scheme::Http, &["echo"], &[]);
    let echo = fs::read(plugin_library("echo")).expect("read echo");
    overwrite(
        &server.plugins_dir,
        "libecho.so",
        &fs::read(plugin_library("slowinit")).expect("read slowinit"),
    );
    wait_until("the slow version to be starting", SWAP_DEADLINE, || {
        server
            .get("/-/plugins")
            .text()
            .contains("\"state\":\"idle\"")
            .then(|| server.metric("fiddler_executor_starts_total"))
            .filter(|starts| *starts == 2)
    });
    overwrite(&server.plugins_dir, "libecho.so", &echo);
    wait_until("the starting version to be retired", SWAP_DEADLINE, || {
        (server.metric("fiddler_executor_deaths_total{cause=\"retired\"}") == 1).then_some(())
    });
    assert_eq!(server.post("/echo", b"still echo").text(), "still echo");
    assert!(!server.try_log("as /echo: slowinit"), "{:#?}", server.log);
}

/// A watch interval no test outlives: what serves in these tests was taken on the kernel's
/// change events, not on a poll.
const NO_POLL: &str = "600000";

#[test]
fn a_file_written_or_moved_in_serves_on_the_change_event_not_a_poll() {
    let server = Server::start_over(Scheme::Http, &[], &["--watch-interval", NO_POLL]);
    // Written in place and closed (what `cp` does).
    fs::copy(
        plugin_library("echo"),
        server.plugins_dir.join("libcopied.so"),
    )
    .expect("cp");
    wait_for_answer(&server, "/copied", "a copied file to serve", |s, t| {
        s == 200 && t == "ping"
    });
    // Renamed into place (what `mv` does).
    drop_in(&server, "echo", "libmoved.so");
    wait_for_answer(&server, "/moved", "a moved file to serve", |s, t| {
        s == 200 && t == "ping"
    });
    // Removed: the route goes as soon.
    fs::remove_file(server.plugins_dir.join("libcopied.so")).expect("rm");
    wait_for_answer(
        &server,
        "/copied",
        "a removed file to stop serving",
        |s, _| s == 404,
    );
}

#[test]
fn a_file_still_open_for_writing_is_not_taken_before_its_writer_closes_it() {
    let mut server = Server::start_over(Scheme::Http, &[], &["--watch-interval", NO_POLL]);
    let library = fs::read(plugin_library("echo")).expect("read the library");
    let mut file = fs::File::create(server.plugins_dir.join("libslow.so")).expect("create");
    file.write_all(&library[..library.len() / 2])
        .expect("write half");
    file.flush().expect("flush");
    // A marker written after the half: once it serves, the watcher has seen the half too.
    fs::copy(
        plugin_library("echo"),
        server.plugins_dir.join("libmarker.so"),
    )
    .expect("cp");
    wait_for_answer(&server, "/marker", "the marker to serve", |s, _| s == 200);
    assert_eq!(
        server.post("/slow", b"ping").status,
        404,
        "half a file was taken"
    );
    assert!(
        !server.try_log("libslow.so"),
        "half a file was looked at: {:?}",
        server.log
    );
    file.write_all(&library[library.len() / 2..])
        .expect("write the rest");
    drop(file);
    wait_for_answer(&server, "/slow", "the whole file to serve", |s, t| {
        s == 200 && t == "ping"
    });
}
