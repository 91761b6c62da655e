//! What every integration test needs: a real `fiddler-crab` process on port 0 with a temporary
//! plugins folder, its log, and a small HTTP client over real sockets. Waits are on conditions
//! with deadlines, never bare sleeps.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// How long a server may take to start, and a response to arrive, on a busy 2-core machine.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
pub const IO_DEADLINE: Duration = Duration::from_secs(20);

/// A temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("fiddler-test-{label}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create a temporary folder");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The folder cargo builds into (where the binary and the plugin libraries are).
fn build_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_fiddler-crab"));
    bin.parent().expect("the binary has a folder").to_path_buf()
}

/// The built library of a workspace plugin crate (`echo` -> `.../libecho.so`).
pub fn plugin_library(crate_name: &str) -> PathBuf {
    let dir = build_dir();
    let candidates = [
        dir.join(format!("lib{crate_name}.so")),
        dir.join("deps").join(format!("lib{crate_name}.so")),
    ];
    candidates
        .iter()
        .filter_map(|p| fs::metadata(p).and_then(|m| m.modified()).ok().map(|t| (t, p)))
        .max()
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| {
            panic!("lib{crate_name}.so is not built: run `cargo test --workspace` (or `cargo build --workspace`)")
        })
}

/// The `legacy` fixture plugin: built against the previous plugin-api (0.1.0, frozen under
/// tests/fixtures/legacy), in a workspace of its own, so it is built here (once per test run,
/// offline, into target/legacy-plugin) rather than by `cargo test --workspace`.
pub fn legacy_plugin_library() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = root.join("target").join("legacy-plugin");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--offline", "--quiet", "--manifest-path"])
            .arg(root.join("tests/fixtures/legacy/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        Ok(target.join("debug").join("liblegacy.so"))
    });
    match built {
        Ok(path) => path.clone(),
        Err(why) => panic!("building the legacy fixture failed:\n{why}"),
    }
}

/// Which listener a test talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Https,
}

/// Whether the server under test was built with HTTPS (the `tls` feature): without it, the
/// HTTPS variants of the tests are not generated and servers start without an HTTPS listener.
pub const HTTPS: bool = cfg!(feature = "tls");

/// Generates `http::NAME` and `https::NAME` tests from `fn NAME(scheme: Scheme)`, so one test
/// body covers both transports (`https::` only in a build with TLS).
#[macro_export]
macro_rules! over_both_schemes {
    ($($name:ident),* $(,)?) => {
        mod http {
            $( #[test] fn $name() { super::$name($crate::support::Scheme::Http) } )*
        }
        #[cfg(feature = "tls")]
        mod https {
            $( #[test] fn $name() { super::$name($crate::support::Scheme::Https) } )*
        }
    };
}

/// Makes a test-only CA and a localhost certificate in `dir` with the project's script.
pub fn make_certificate(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/make-dev-cert");
    let status = Command::new("bash")
        .arg(script)
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .expect("run certs/make-dev-cert (needs bash and openssl)");
    assert!(status.success(), "certs/make-dev-cert failed");
}

/// A client configuration trusting the test CA in `dir`.
pub fn tls_client_config(dir: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(dir.join("dev-ca.pem")).expect("read the test CA") {
        roots
            .add(cert.expect("parse the test CA"))
            .expect("trust the test CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A client connection, plain or TLS.
pub enum Client {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Client {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Client::Plain(s) => s,
            Client::Tls(s) => &s.sock,
        }
    }
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Client::Plain(s) => s.read(buf),
            Client::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Client::Plain(s) => s.write(buf),
            Client::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Client::Plain(s) => s.flush(),
            Client::Tls(s) => s.flush(),
        }
    }
}

/// What a few tests add to a server's start: variables, another user.
#[derive(Default)]
struct Extras {
    env: Vec<(String, String)>,
    /// Run as this uid and gid (the test runs as root).
    user: Option<u32>,
}

/// A running server process (HTTP and HTTPS on ports the kernel picks); killed on drop.
pub struct Server {
    /// The listener `connect` uses.
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    pub scheme: Scheme,
    /// The plugins folder the server watches.
    pub plugins_dir: PathBuf,
    /// The certificate folder (cert.pem, key.pem, dev-ca.pem).
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub certs_dir: PathBuf,
    /// What `connect` trusts for HTTPS (the test CA the server started with).
    pub tls: Arc<rustls::ClientConfig>,
    child: Child,
    log_lines: Receiver<String>,
    pub log: Vec<String>,
    /// Holds both folders; removed when the server is dropped (after the process is killed).
    _root: TempDir,
}

impl Server {
    /// Starts a server with these workspace plugins copied into a fresh plugins folder, with
    /// `connect` talking `scheme`.
    pub fn start_over(scheme: Scheme, plugins: &[&str], args: &[&str]) -> Server {
        Server::start_with(scheme, plugins, args, |_| {})
    }

    /// Like `start_over`, letting `prepare` add files to the plugins folder first.
    pub fn start_with(
        scheme: Scheme,
        plugins: &[&str],
        args: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Server {
        Server::launch(
            scheme,
            plugins,
            args,
            prepare,
            None,
            true,
            &Extras::default(),
        )
    }

    /// Like `start_with` over HTTP, with these variables in the server's environment, run by
    /// this process's user or, given `user` (the test runs as root), by `setpriv` as that uid
    /// and gid, its temporary root handed to it.
    pub fn start_with_env(
        plugins: &[&str],
        args: &[&str],
        env: &[(&str, &str)],
        user: Option<u32>,
        prepare: impl FnOnce(&Path),
    ) -> Server {
        let extras = Extras {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            user,
        };
        Server::launch(Scheme::Http, plugins, args, prepare, None, true, &extras)
    }

    /// Like `start_with`, but returns as soon as the server listens, without waiting for its
    /// plugins to be ready or refused (the "] ready" line).
    pub fn start_unsettled(
        scheme: Scheme,
        plugins: &[&str],
        args: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Server {
        Server::launch(
            scheme,
            plugins,
            args,
            prepare,
            None,
            false,
            &Extras::default(),
        )
    }

    /// Like `start_with`, but the server runs in the temporary root and is given the plugins
    /// folder as the relative path `plugins` (as `./serve` does).
    pub fn start_relative(plugins: &[&str], prepare: impl FnOnce(&Path)) -> Server {
        Server::launch(
            Scheme::Http,
            plugins,
            &["--plugins", "plugins"],
            prepare,
            None,
            true,
            &Extras::default(),
        )
    }

    /// Like `start_over`, with the process limited to `fds` open file descriptors.
    pub fn start_with_fd_limit(
        scheme: Scheme,
        plugins: &[&str],
        args: &[&str],
        fds: u32,
    ) -> Server {
        Server::launch(
            scheme,
            plugins,
            args,
            |_| {},
            Some(fds),
            true,
            &Extras::default(),
        )
    }

    fn launch(
        scheme: Scheme,
        plugins: &[&str],
        args: &[&str],
        prepare: impl FnOnce(&Path),
        fd_limit: Option<u32>,
        settled: bool,
        extras: &Extras,
    ) -> Server {
        let root = TempDir::new("server");
        let plugins_dir = root.0.join("plugins");
        let certs_dir = root.0.join("certs");
        fs::create_dir_all(&plugins_dir).expect("create the plugins folder");
        make_certificate(&certs_dir);
        for name in plugins {
            fs::copy(
                plugin_library(name),
                plugins_dir.join(format!("lib{name}.so")),
            )
            .expect("copy a plugin library");
        }
        prepare(&plugins_dir);
        let binary = env!("CARGO_BIN_EXE_fiddler-crab");
        let mut command = match (fd_limit, extras.user) {
            (None, Some(uid)) => {
                let owner = format!("{uid}:{uid}");
                let handed = Command::new("chown")
                    .args(["-R", &owner])
                    .arg(&root.0)
                    .status()
                    .expect("run chown");
                assert!(handed.success(), "chown the server's root to {owner}");
                let mut setpriv = Command::new("setpriv");
                setpriv.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".to_owned(),
                    "--".to_owned(),
                ]);
                setpriv.arg(binary);
                setpriv
            }
            (None, None) => Command::new(binary),
            (Some(fds), _) => {
                let mut shell = Command::new("sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {fds} && exec \"$0\" \"$@\""))
                    .arg(binary);
                shell
            }
        };
        let mut child = command
            .current_dir(&root.0)
            .args([
                "--http",
                "127.0.0.1:0",
                "--https",
                if HTTPS { "127.0.0.1:0" } else { "off" },
                "--plugins",
            ])
            .arg(&plugins_dir)
            .arg("--cert")
            .arg(certs_dir.join("cert.pem"))
            .arg("--key")
            .arg(certs_dir.join("key.pem"))
            .args(args)
            .envs(extras.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fiddler-crab");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, log_lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut server = Server {
            addr: unbound,
            http_addr: unbound,
            https_addr: unbound,
            scheme,
            tls: tls_client_config(&certs_dir),
            plugins_dir,
            certs_dir,
            child,
            log_lines,
            log: Vec::new(),
            _root: root,
        };
        server.http_addr = server.listening_on("http");
        if HTTPS {
            server.https_addr = server.listening_on("https");
        }
        if settled {
            // The listeners answer at once; "ready" says every plugin found at start is
            // ready or refused.
            server.wait_for_log("] ready", START_DEADLINE);
        }
        server.addr = match scheme {
            Scheme::Http => server.http_addr,
            Scheme::Https => server.https_addr,
        };
        server
    }

    fn listening_on(&mut self, scheme: &str) -> SocketAddr {
        let prefix = format!("listening on {scheme}://");
        let line = self.wait_for_log(&prefix, START_DEADLINE);
        // Human lines end with the address; JSON lines close the object after it.
        line.rsplit(&prefix)
            .next()
            .and_then(|a| a.trim().trim_end_matches("\"}").parse().ok())
            .unwrap_or_else(|| panic!("unparsable listening line: {line}"))
    }

    /// Waits until a log line contains `needle`; returns it. Panics with the log at the deadline.
    pub fn wait_for_log(&mut self, needle: &str, deadline: Duration) -> String {
        if let Some(line) = self.log.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.log_lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?} within {deadline:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Whether a log line so far contains `needle` (takes what has arrived, without waiting).
    pub fn try_log(&mut self, needle: &str) -> bool {
        while let Ok(line) = self.log_lines.try_recv() {
            self.log.push(line);
        }
        self.log.iter().any(|l| l.contains(needle))
    }

    /// The supervisor's process id (the process the test started).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the supervisor.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// Whether the supervisor still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the supervisor to exit; panics at the deadline.
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        wait_until("the server to exit", deadline, || {
            self.child.try_wait().ok().flatten()
        })
    }

    /// Opens a TCP connection to the listener of this server's scheme.
    pub fn connect_tcp(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to the server");
        stream
            .set_read_timeout(Some(IO_DEADLINE))
            .expect("set a read timeout");
        stream
            .set_write_timeout(Some(IO_DEADLINE))
            .expect("set a write timeout");
        stream
    }

    /// Opens a client connection over this server's scheme (TLS: trusting the test CA).
    pub fn connect(&self) -> Client {
        let tcp = self.connect_tcp();
        match self.scheme {
            Scheme::Http => Client::Plain(tcp),
            Scheme::Https => {
                let name = ServerName::try_from("localhost").expect("a server name");
                let tls = rustls::ClientConnection::new(Arc::clone(&self.tls), name)
                    .expect("a TLS client");
                Client::Tls(Box::new(rustls::StreamOwned::new(tls, tcp)))
            }
        }
    }

    /// Sends one request on a new connection and reads its response.
    pub fn send(&self, raw: &[u8]) -> Response {
        let mut stream = self.connect();
        stream.write_all(raw).expect("write the request");
        read_response(&mut stream).expect("a response")
    }

    /// `POST /path` with this body.
    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        let mut raw = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        self.send(&raw)
    }

    /// `GET /path`.
    pub fn get(&self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
    }

    /// The admin address of a server started with `--admin 127.0.0.1:0`, from its log.
    pub fn admin_addr(&mut self) -> SocketAddr {
        let line = self.wait_for_log("admin routes on http://", IO_DEADLINE);
        line.rsplit("http://")
            .next()
            .and_then(|a| a.trim_end_matches("/-/").parse().ok())
            .unwrap_or_else(|| panic!("unparsable: {line}"))
    }

    /// A gate beside the plugins folder: a crash-fixture call given `?{gate.query()}` waits
    /// until the test opens it.
    pub fn gate(&self) -> Gate {
        Gate(self.plugins_dir.with_file_name("gate"))
    }

    /// Sends `GET path` on a new connection and leaves the answer unread (a call the test
    /// holds running, or reads later).
    pub fn start_get(&self, path: &str) -> Client {
        let mut stream = self.connect();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .expect("send the request");
        stream
    }

    /// Holds the lane: sends `GET path?gate=...` (a gated call of the crash fixture, or of a
    /// program's `/wait`), waits until its executor runs it, and returns the gate that releases
    /// it and the connection its answer comes on.
    pub fn hold_lane(&self, path: &str) -> (Gate, Client) {
        let gate = self.gate();
        let held = self.start_get(&format!("{path}?{}", gate.query()));
        self.wait_busy(1);
        (gate, held)
    }

    /// Makes the crash fixture's route measure slow: three calls of `WRITE_AHEAD_WORK` each,
    /// so its busy executor is written one call ahead, whatever the machine's load (a route
    /// measured fast is written up to 16 ahead, and how fast a first call measures depends on
    /// the load).
    pub fn make_crash_route_slow(&self) {
        let ms = fiddler_crab::exec::pool::WRITE_AHEAD_WORK.as_millis();
        for _ in 0..3 {
            assert_eq!(self.get(&format!("/crash/slow?ms={ms}")).status, 200);
        }
    }

    /// Waits until `/-/ready` counts `queued` requests waiting.
    pub fn wait_queued(&self, queued: usize) {
        let expected = format!("ready: {queued} of ");
        wait_until(&format!("{queued} queued"), IO_DEADLINE, || {
            self.get("/-/ready")
                .text()
                .starts_with(&expected)
                .then_some(())
        });
    }

    /// Waits until `/-/plugins` shows `busy` executors running a call.
    pub fn wait_busy(&self, busy: usize) {
        wait_until(&format!("{busy} busy executor(s)"), IO_DEADLINE, || {
            let plugins = self.get("/-/plugins").text();
            (plugins.matches("\"state\":\"busy\"").count() == busy).then_some(())
        });
    }

    /// The value of one sample of `/-/metrics`, e.g. `fiddler_dropped_total{reason="expired"}`.
    pub fn metric(&self, sample: &str) -> u64 {
        let text = self.get("/-/metrics").text();
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response framed by Content-Length (what this server always sends). `None` when
/// the connection closed before a status line.
pub fn read_response(stream: &mut impl Read) -> Option<Response> {
    read_response_to(stream, false)
}

/// Reads the response to a HEAD request: the headers only.
pub fn read_head_response(stream: &mut impl Read) -> Option<Response> {
    read_response_to(stream, true)
}

fn read_response_to(stream: &mut impl Read, head_only: bool) -> Option<Response> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) if head.is_empty() => return None,
            Ok(_) => panic!("connection closed inside a response head: {head:?}"),
            Err(e)
                if head.is_empty()
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                    ) =>
            {
                return None
            }
            Err(e) => panic!("reading a response head: {e}"),
        }
    }
    let text = String::from_utf8(head).expect("a UTF-8 response head");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if status == 100 {
        return read_response_to(stream, head_only);
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked && !head_only {
        response.body = read_chunked(stream);
        return Some(response);
    }
    let length: usize = response
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if !head_only {
        response.body.resize(length, 0);
        stream
            .read_exact(&mut response.body)
            .expect("read the response body");
    }
    Some(response)
}

/// Reads one line ending in CRLF (without it).
pub fn read_line(stream: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            other => panic!("the connection ended inside a line ({other:?}): {line:?}"),
        }
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).expect("a UTF-8 line")
}

/// Reads one chunk of a chunked body: its data, empty for the last chunk (whose trailer
/// section, empty, is read too).
pub fn read_chunk(stream: &mut impl Read) -> Vec<u8> {
    let size_line = read_line(stream);
    let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
        .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
    let mut data = vec![0u8; size];
    stream.read_exact(&mut data).expect("read a chunk");
    assert_eq!(read_line(stream), "", "chunk data ends with CRLF");
    data
}

/// Reads a chunked body to its last chunk.
pub fn read_chunked(stream: &mut impl Read) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let chunk = read_chunk(stream);
        if chunk.is_empty() {
            return body;
        }
        body.extend_from_slice(&chunk);
    }
}

/// Reads until the server closes the connection; returns what arrived (an error counts as
/// closed). Panics if it stays open past the deadline.
pub fn read_until_closed(stream: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server kept the connection open past {IO_DEADLINE:?}")
            }
            Err(_) => return all,
        }
    }
}

/// Polls `check` until it returns `Some`, or panics at the deadline.
pub fn wait_until<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The executor pids `/-/plugins` lists for `route`.
pub fn executor_pids(server: &Server, route: &str) -> Vec<u32> {
    let json = server.get("/-/plugins").text();
    let start = format!("{{\"route\":\"{route}\"");
    let Some(at) = json.find(&start) else {
        return Vec::new();
    };
    let entry = &json[at..];
    let entry = &entry[..entry.find("]}").map_or(entry.len(), |end| end + 2)];
    entry
        .split("\"pid\":")
        .skip(1)
        .filter_map(|rest| rest.split(',').next()?.parse().ok())
        .collect()
}

/// Whether process `pid` is gone (or only a zombie nobody has reaped yet).
pub fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// A file whose existence releases the calls held on it (see `Server::gate`).
pub struct Gate(PathBuf);

impl Gate {
    /// The gate of the server whose plugins folder is `plugins` (for a fixture written before
    /// the server starts).
    pub fn beside(plugins: &Path) -> Gate {
        Gate(plugins.with_file_name("gate"))
    }

    /// The file whose existence opens it.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The query parameter that holds a crash-fixture call on this gate.
    pub fn query(&self) -> String {
        format!("gate={}", self.0.display())
    }

    /// Releases every call held on it.
    pub fn open(&self) {
        fs::write(&self.0, b"open").expect("open the gate");
    }
}
