//! The plugin author's commands against real files: `check` on good and bad libraries, and
//! `new` -> build -> drop into a running server -> answer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{plugin_library, wait_until, Scheme, Server, TempDir};

fn fiddler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fiddler-crab"))
        .args(args)
        .output()
        .expect("run fiddler-crab")
}

fn check(file: &Path) -> (Option<i32>, String) {
    let output = fiddler(&["check", &file.to_string_lossy()]);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn check_says_what_the_server_would_do_with_each_kind_of_file() {
    let (code, text) = check(&plugin_library("echo"));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("route: /echo") && text.contains("crate: echo 0.1.0"),
        "{text}"
    );
    assert!(text.contains("verdict: loads"), "{text}");

    let table: &[(&str, &str)] = &[
        ("incompatible", "built against an incompatible plugin-api"),
        ("norootmodule", "no plugin root module"),
        ("initpanic", "init panicked: the model file is missing"),
        (
            "crashinit",
            "killed its executor process (signal: 11 (SIGSEGV))",
        ),
    ];
    for (fixture, why) in table {
        let (code, text) = check(&plugin_library(fixture));
        assert_eq!(code, Some(1), "{fixture}: {text}");
        assert!(
            text.contains("verdict: refused") && text.contains(why),
            "{fixture}: {text}"
        );
        assert!(
            text.len() < 600,
            "{fixture}: a verdict is a few lines, not a layout dump"
        );
    }

    let dir = TempDir::new("check");
    let junk = dir.0.join("junk.so");
    std::fs::write(&junk, b"not a library").expect("write junk");
    let (code, text) = check(&junk);
    assert_eq!(code, Some(1));
    assert!(text.contains("not a loadable library"), "{text}");

    let verbose = fiddler(&[
        "check",
        &plugin_library("incompatible").to_string_lossy(),
        "--verbose",
    ]);
    assert!(
        String::from_utf8_lossy(&verbose.stdout).len() > 1000,
        "--verbose shows the full report"
    );
}

/// Runs cargo on the generated crate; `--offline` first (everything it needs was fetched for
/// this workspace), online if that cannot resolve.
fn cargo(args: &[&str], dir: &Path, target: &Path) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let run = |offline: bool| {
        let mut command = Command::new(&cargo);
        command
            .args(args)
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", target);
        if offline {
            command.arg("--offline");
        }
        command.output().expect("run cargo")
    };
    let output = run(true);
    if output.status.success() {
        output
    } else {
        run(false)
    }
}

#[test]
fn new_writes_a_crate_that_tests_builds_and_serves() {
    let work = TempDir::new("new-plugin");
    let created = fiddler(&["new", "greeter", "--dir", &work.0.to_string_lossy()]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let crate_dir = work.0.join("greeter");
    // A target folder inside this workspace's, kept between runs so later runs are quick.
    let target: PathBuf = PathBuf::from(env!("CARGO_BIN_EXE_fiddler-crab"))
        .parent()
        .and_then(Path::parent)
        .expect("the target folder")
        .join("new-plugin-test");
    let tested = cargo(&["test", "-q"], &crate_dir, &target);
    assert!(
        tested.status.success(),
        "{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    let built = cargo(&["build", "--release", "-q"], &crate_dir, &target);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let library = target.join("release/libgreeter.so");
    assert_eq!(check(&library).0, Some(0));

    let server = Server::start_over(Scheme::Http, &[], &[]);
    std::fs::copy(&library, server.plugins_dir.join("libgreeter.so")).expect("drop it in");
    wait_until("the new plugin to answer", Duration::from_secs(10), || {
        (server.post("/greeter", b"crab").text() == r#"{"greeting":"Hello, crab!","length":4}"#)
            .then_some(())
    });
    // The template's `?` path: a binary body is its 400.
    assert_eq!(server.post("/greeter", &[0xff, 0xfe]).status, 400);

    let refused = fiddler(&["new", "Bad-Name", "--dir", &work.0.to_string_lossy()]);
    assert!(!refused.status.success());
}
