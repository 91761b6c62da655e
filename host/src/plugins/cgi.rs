//! External programs as handlers (CGI/1.1, RFC 3875): an executable file in the plugins folder
//! that is not a `.so` serves `/<file stem>`.
//!
//! Each request runs the file directly (no shell) through `plugin_api::Program`: the RFC's
//! meta-variables and `TMPDIR` and nothing else in its environment (no server secrets), the
//! body on stdin, a CGI response on stdout, its working directory its executor's private
//! folder (the plugins folder with the sandbox off). Past the deadline its
//! whole process group is terminated (504); output over the cap or malformed output is 502;
//! stderr is logged, capped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use plugin_api::{Header, Program, Request, Response, RunError};

use crate::http::response::text;
use crate::ids::PluginName;

/// The most stdout a program may print (502 beyond it).
const MAX_OUTPUT: usize = 64 << 20;
/// The most stderr logged per request.
const MAX_STDERR: usize = 4096;
/// Between SIGTERM and SIGKILL for a program past its deadline.
const GRACE: Duration = Duration::from_secs(2);
/// The `PATH` programs get.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Between the program's deadline and the worker's own for a CGI executor: the program runner
/// kills the program at its deadline and the executor answers 504 itself; the worker kills
/// the executor only if that answer does not come.
pub const EXECUTOR_SLACK: Duration = Duration::from_secs(3);

/// An executable serving a route.
#[derive(Debug)]
pub struct CgiProgram {
    /// The route.
    pub name: PluginName,
    /// The file in the plugins folder, run as is (an absolute path).
    pub path: PathBuf,
    /// Where it runs: its executor's private folder when sandboxed (the plugins folder is shut
    /// to it then), its own folder otherwise.
    pub workdir: PathBuf,
    /// Its `TMPDIR`: its executor's private folder.
    pub tmpdir: PathBuf,
}

/// Runs `program` for `request` (inside its executor); every failure is an HTTP answer and,
/// where useful, a line on the executor's stderr, which the worker logs with the route.
pub fn call(program: &CgiProgram, request: Request, deadline: Duration) -> Response {
    let route = program.name.as_str();
    let mut runner = Program::new(&program.path)
        .env_clear()
        .env("TMPDIR", &program.tmpdir)
        .current_dir(&program.workdir)
        .deadline(deadline)
        .grace(GRACE)
        .max_stdout(MAX_OUTPUT)
        .max_stderr(MAX_STDERR);
    for (key, value) in environment(route, &request) {
        runner = runner.env(key, value);
    }
    let runner = runner.stdin(request.body.into_vec());
    let output = match runner.run() {
        Ok(output) => output,
        Err(RunError::TimedOut { stderr }) => {
            log_stderr(route, &stderr);
            eprintln!(
                "program /{route} passed its {} ms deadline; its process group was terminated",
                deadline.as_millis()
            );
            return text(
                504,
                &format!("program {route} did not answer within its deadline\n"),
            );
        }
        Err(RunError::OutputTooLarge) => {
            eprintln!("program /{route} printed more than {MAX_OUTPUT} bytes; killed");
            return text(502, &format!("program {route} printed too much\n"));
        }
        Err(e) => {
            eprintln!("program /{route}: {e}");
            return text(502, &format!("program {route} could not be run\n"));
        }
    };
    log_stderr(route, &output.stderr);
    if output.stdout.is_empty() {
        eprintln!("program /{route} exited ({}) without output", output.status);
        return text(502, &format!("program {route} gave no answer\n"));
    }
    match parse_output(output.stdout) {
        Ok(response) => response,
        Err(why) => {
            eprintln!("program /{route} gave a malformed CGI response: {why}");
            text(502, &format!("program {route} gave a malformed answer\n"))
        }
    }
}

/// The program's stderr, as one line on the executor's stderr (which the worker logs).
fn log_stderr(route: &str, stderr: &[u8]) {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim_end();
    if !text.is_empty() {
        eprintln!("program /{route} stderr: {}", text.replace('\n', " | "));
    }
}

/// The RFC 3875 meta-variables for `request` to `/<route>`, plus `PATH`.
fn environment(route: &str, request: &Request) -> Vec<(String, String)> {
    let mut env = vec![
        ("GATEWAY_INTERFACE".to_owned(), "CGI/1.1".to_owned()),
        ("SERVER_PROTOCOL".to_owned(), "HTTP/1.1".to_owned()),
        (
            "SERVER_SOFTWARE".to_owned(),
            concat!("fiddler-crab/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
        ("REQUEST_METHOD".to_owned(), request.method.to_string()),
        ("SCRIPT_NAME".to_owned(), format!("/{route}")),
        (
            "PATH_INFO".to_owned(),
            match request.path.as_str() {
                "/" => String::new(),
                path => path.to_owned(),
            },
        ),
        ("QUERY_STRING".to_owned(), request.query.to_string()),
        ("CONTENT_LENGTH".to_owned(), request.body.len().to_string()),
        ("PATH".to_owned(), PATH.to_owned()),
    ];
    if let Some(content_type) = request.header("content-type") {
        env.push(("CONTENT_TYPE".to_owned(), content_type.to_owned()));
    }
    if let Ok(client) = request.client.parse::<SocketAddr>() {
        env.push(("REMOTE_ADDR".to_owned(), client.ip().to_string()));
        env.push(("REMOTE_PORT".to_owned(), client.port().to_string()));
    }
    if request.tls {
        env.push(("HTTPS".to_owned(), "on".to_owned()));
    }
    let default_port = if request.tls { "443" } else { "80" };
    let host = request.header("host").unwrap_or("localhost");
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || host.starts_with('[') => (name, port),
        _ => (host, default_port),
    };
    env.push(("SERVER_NAME".to_owned(), name.to_owned()));
    env.push(("SERVER_PORT".to_owned(), port.to_owned()));
    for header in request.headers.iter() {
        let name = header.name.as_str();
        // Content-Type and -Length have their own variables; HTTP_PROXY would let a client
        // set the program's outgoing proxy ("httpoxy").
        if ["content-type", "content-length", "proxy"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            continue;
        }
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        let value = String::from_utf8_lossy(&header.value).into_owned();
        match env.iter_mut().find(|(k, _)| *k == key) {
            Some((_, existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            None => env.push((key, value)),
        }
    }
    env
}

/// Parses a CGI response: header lines (`Status`, `Content-Type`, `Location`, others), a blank
/// line, the body. Lines may end in LF or CRLF.
fn parse_output(stdout: Vec<u8>) -> Result<Response, &'static str> {
    let mut at = 0;
    let mut status = None;
    let mut headers = Vec::new();
    let mut location = false;
    loop {
        let Some(end) = stdout[at..].iter().position(|&b| b == b'\n') else {
            return Err("no blank line after the headers");
        };
        let line = &stdout[at..at + end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at += end + 1;
        if line.is_empty() {
            break;
        }
        let line = std::str::from_utf8(line).map_err(|_| "a header line is not UTF-8")?;
        let (name, value) = line.split_once(':').ok_or("a header line has no colon")?;
        let value = value.trim();
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err("a header name is malformed");
        }
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or_default();
            let code: u16 = code.parse().map_err(|_| "the Status is not a number")?;
            if !(200..=999).contains(&code) {
                return Err("the Status is out of range");
            }
            status = Some(code);
        } else {
            location |= name.eq_ignore_ascii_case("location");
            headers.push(Header::new(name, value));
        }
    }
    if status.is_none() && headers.is_empty() {
        return Err("no CGI header before the blank line");
    }
    let status = status.unwrap_or(if location { 302 } else { 200 });
    let mut body = stdout;
    body.drain(..at);
    let mut response = Response::status(status).with_body(body);
    response.headers = headers.into();
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_responses_parse_or_are_refused() {
        let ok = parse_output(
            b"Status: 201 Created\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nbody".to_vec(),
        )
        .expect("valid");
        assert_eq!((ok.status, ok.body_str()), (201, Some("body")));
        assert_eq!(ok.header("x-a"), Some("1"));
        let lf = parse_output(b"Content-Type: text/plain\n\nline\n".to_vec()).expect("LF endings");
        assert_eq!((lf.status, lf.body_str()), (200, Some("line\n")));
        let moved = parse_output(b"Location: /elsewhere\n\n".to_vec()).expect("a redirect");
        assert_eq!(moved.status, 302);
        let table: &[(&[u8], &str)] = &[
            (b"just text", "no blank line after the headers"),
            (b"\nbody", "no CGI header before the blank line"),
            (b"Content-Type text/plain\n\n", "a header line has no colon"),
            (b"Status: abc\n\n", "the Status is not a number"),
            (b"Status: 99\n\n", "the Status is out of range"),
            (b"Bad Name: x\n\n", "a header name is malformed"),
        ];
        for (raw, why) in table {
            assert_eq!(parse_output(raw.to_vec()).err(), Some(*why), "{raw:?}");
        }
    }

    #[test]
    fn the_environment_has_the_meta_variables_and_no_proxy() {
        let mut request = Request::new("POST", "/extra/path?a=1")
            .with_header("Host", "example.org:8080")
            .with_header("Content-Type", "text/plain")
            .with_header("Proxy", "evil:1")
            .with_header("X-Forwarded-For", "1.2.3.4")
            .with_body("hello");
        request.client = "127.0.0.1:5555".into();
        let env = environment("tool", &request);
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("SCRIPT_NAME"), Some("/tool"));
        assert_eq!(get("PATH_INFO"), Some("/extra/path"));
        assert_eq!(get("QUERY_STRING"), Some("a=1"));
        assert_eq!(get("CONTENT_LENGTH"), Some("5"));
        assert_eq!(get("CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(
            (get("SERVER_NAME"), get("SERVER_PORT")),
            (Some("example.org"), Some("8080"))
        );
        assert_eq!(
            (get("REMOTE_ADDR"), get("REMOTE_PORT")),
            (Some("127.0.0.1"), Some("5555"))
        );
        assert_eq!(get("HTTP_X_FORWARDED_FOR"), Some("1.2.3.4"));
        assert_eq!(get("HTTP_PROXY"), None);
        assert_eq!(get("HTTPS"), None);
    }
}
