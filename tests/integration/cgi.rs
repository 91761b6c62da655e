//! External programs as handlers (CGI/1.1): real scripts written into the plugins folder.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{wait_until, Scheme, Server, IO_DEADLINE};

/// Writes an executable script, the way a user drops one in (temporary file, then rename).
fn script(dir: &Path, name: &str, body: &str) {
    let temporary = dir.join(format!(".{name}.tmp"));
    fs::write(&temporary, body).expect("write the script");
    fs::set_permissions(&temporary, fs::Permissions::from_mode(0o755)).expect("chmod +x");
    fs::rename(&temporary, dir.join(name)).expect("rename into place");
}

fn start_with_scripts(args: &[&str], scripts: &[(&str, &str)]) -> Server {
    Server::start_with(Scheme::Http, &[], args, |dir| {
        for (name, body) in scripts {
            script(dir, name, body);
        }
    })
}

#[test]
fn a_script_round_trips_the_body_and_sets_status_and_headers() {
    let server = start_with_scripts(
        &[],
        &[
            ("cat.sh", "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\nexec cat\n"),
            ("made.sh", "#!/bin/sh\nprintf 'Status: 201 Created\\nX-Made-By: sh\\nContent-Type: text/plain\\n\\nmade'\n"),
        ],
    );
    let body: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let response = server.post("/cat", &body);
    assert_eq!(response.status, 200);
    assert!(response.body == body, "the body differs");
    let made = server.post("/made", b"");
    assert_eq!((made.status, made.text().as_str()), (201, "made"));
    assert_eq!(made.header("x-made-by"), Some("sh"));
}

#[test]
fn the_meta_variables_are_set_and_nothing_else_leaks() {
    let server = start_with_scripts(
        &[],
        &[(
            "env.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nexec env\n",
        )],
    );
    let response = server.send(
        b"POST /env/extra/path?x=1&y=two HTTP/1.1\r\nHost: example.org:8080\r\nContent-Type: text/plain\r\nX-Custom: yes\r\nProxy: evil:1\r\nContent-Length: 5\r\n\r\nhello",
    );
    let env = response.text();
    for expected in [
        "GATEWAY_INTERFACE=CGI/1.1",
        "SERVER_PROTOCOL=HTTP/1.1",
        "REQUEST_METHOD=POST",
        "SCRIPT_NAME=/env",
        "PATH_INFO=/extra/path",
        "QUERY_STRING=x=1&y=two",
        "CONTENT_TYPE=text/plain",
        "CONTENT_LENGTH=5",
        "REMOTE_ADDR=127.0.0.1",
        "SERVER_NAME=example.org",
        "SERVER_PORT=8080",
        "HTTP_X_CUSTOM=yes",
        "SERVER_SOFTWARE=fiddler-crab/",
    ] {
        assert!(
            env.lines().any(|l| l.starts_with(expected)),
            "{expected} missing in:\n{env}"
        );
    }
    assert!(!env.contains("HTTP_PROXY"), "httpoxy: {env}");
    // The server's own environment (the test harness's variables) does not leak.
    assert!(!env.contains("CARGO"), "{env}");
    assert!(!env.lines().any(|l| l.starts_with("HTTPS=")), "{env}");
}

#[test]
fn a_script_that_ignores_a_large_body_or_writes_a_lot_still_answers() {
    let server = start_with_scripts(
        &[],
        &[
            ("deaf.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nignored'\n"),
            ("loud.sh", "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\n\\n'\nexec head -c 20971520 /dev/zero\n"),
        ],
    );
    let big = vec![b'b'; 10 << 20];
    assert_eq!(server.post("/deaf", &big).text(), "ignored");
    let loud = server.post("/loud", b"");
    assert_eq!((loud.status, loud.body.len()), (200, 20 << 20));
}

#[test]
fn a_hanging_script_gets_504_and_leaves_no_process() {
    let mut server = start_with_scripts(
        &["--deadline", "500"],
        &[("hang.sh", "#!/bin/sh\nsleep 3601.25 &\nsleep 3601.25\n")],
    );
    assert_eq!(server.post("/hang", b"").status, 504);
    server.wait_for_log("process group was terminated", IO_DEADLINE);
    wait_until("the script's processes to be gone", IO_DEADLINE, || {
        let found = Command::new("pgrep")
            .args(["-f", "sleep 3601.25"])
            .output()
            .ok()?;
        found.stdout.is_empty().then_some(())
    });
}

#[test]
fn failing_or_malformed_scripts_get_502() {
    let mut server = start_with_scripts(
        &[],
        &[
            ("fail.sh", "#!/bin/sh\necho 'it went wrong' >&2\nexit 3\n"),
            ("garbled.sh", "#!/bin/sh\necho 'no headers at all'\n"),
        ],
    );
    assert_eq!(server.post("/fail", b"").status, 502);
    server.wait_for_log("it went wrong", IO_DEADLINE);
    assert_eq!(server.post("/garbled", b"").status, 502);
    server.wait_for_log("malformed CGI response", IO_DEADLINE);
}

#[test]
fn a_non_executable_file_is_ignored_and_a_replaced_script_serves_its_new_answer() {
    let mut server = Server::start_with(Scheme::Http, &[], &[], |dir| {
        fs::write(dir.join("notes.py"), "print('never run')\n").expect("write");
        script(
            dir,
            "version.sh",
            "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\none'\n",
        );
    });
    let ignored = server.wait_for_log("notes.py", IO_DEADLINE);
    assert!(ignored.contains("ignored"), "{ignored}");
    assert_eq!(server.post("/notes", b"").status, 404);
    assert_eq!(server.post("/version", b"").text(), "one");
    script(
        &server.plugins_dir,
        "version.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\ntwo'\n",
    );
    wait_until("the new script to answer", Duration::from_secs(5), || {
        (server.post("/version", b"").text() == "two").then_some(())
    });
}

#[test]
fn the_shipped_example_scripts_work_from_a_relative_plugins_folder() {
    // Regression: with `--plugins plugins` (what ./serve uses) programs were run by their
    // relative path from inside the plugins folder, and were not found.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let server = Server::start_relative(&[], |dir| {
        for name in ["wordstats.py", "upper.sh"] {
            fs::copy(examples.join(name), dir.join(name)).expect("copy an example script");
        }
    });
    let stats = server
        .post("/wordstats?top=1", b"The crab. A fiddler crab!")
        .text();
    assert!(stats.contains("\"words\": 5"), "{stats}");
    assert!(stats.contains("[[\"crab\", 2]]"), "{stats}");
    assert_eq!(server.post("/upper", b"quiet").text(), "QUIET");
}
