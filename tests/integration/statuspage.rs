//! The status page in a real browser: headless Chromium loads `/-/`, runs its script against
//! `/-/status`, and the test reads the rendered page (the DOM after the script ran) and
//! Chromium's console log.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{wait_until, Scheme, Server, TempDir, IO_DEADLINE};

/// The rendered DOM of `url` after its scripts ran for a (virtual) 3 s, and what Chromium
/// logged, console messages included.
fn render(url: &str, profile: &Path) -> (String, String) {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium (Debian's chromium package; .ci/run installs it)");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The number in the routes table's `column` (0-based) for `route`.
fn cell(dom: &str, route: &str, column: usize) -> Option<String> {
    let row_start = dom.find(&format!("<td>/{route}</td>"))?;
    let row = &dom[row_start..dom[row_start..].find("</tr>")? + row_start];
    row.split("<td")
        .nth(column + 1)
        .and_then(|c| c.split_once('>'))
        .and_then(|(_, rest)| rest.split_once("</td>"))
        .map(|(value, _)| value.to_owned())
}

#[test]
fn the_status_page_renders_its_routes_without_console_errors_and_its_numbers_move() {
    let server = Server::start_over(Scheme::Http, &["echo", "hello"], &[]);
    assert_eq!(server.post("/echo", b"one").status, 200);
    let profile = TempDir::new("chromium");
    let url = format!("http://{}/-/", server.http_addr);
    let (dom, log) = render(&url, &profile.0);
    assert!(
        dom.contains("<td>/echo</td>"),
        "the routes are listed:\n{dom}"
    );
    assert!(dom.contains("<td>/hello</td>"), "{dom}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(
        !log.contains("Content Security Policy"),
        "CSP violations:\n{log}"
    );
    let before: u64 = cell(&dom, "echo", 6)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("a calls cell:\n{dom}"));
    for _ in 0..5 {
        assert_eq!(server.post("/echo", b"more").status, 200);
    }
    let after = wait_until("the page to show more calls", IO_DEADLINE, || {
        let (dom, _) = render(&url, &profile.0);
        cell(&dom, "echo", 6)
            .and_then(|c| c.parse::<u64>().ok())
            .filter(|calls| *calls >= before + 5)
    });
    assert!(after >= before + 5);
    let (dom, _) = render(&url, &profile.0);
    assert!(
        cell(&dom, "echo", 8).is_some_and(|p50| p50.ends_with("ms")),
        "a p50 for echo:\n{dom}"
    );
}
