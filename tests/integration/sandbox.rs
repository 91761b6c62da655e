//! The executors' sandbox, tried by a hostile plugin (tests/fixtures/hostile, served from a
//! folder whose `env` makes its `init` signal the worker): under the default settings each
//! attempt is refused with its errno, the server keeps serving, the worker and supervisor are
//! the same processes, and a client that was connected before loses nothing. With
//! `--sandbox off` the same attempts work, so these tests prove the sandbox, not the fixture.

use std::fs;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{is_gone, plugin_library, read_response, wait_until, Server, TempDir};

const LOG_WAIT: Duration = Duration::from_secs(20);
/// A variable of the server's that a plugin must not see.
const SECRET: (&str, &str) = ("FIDDLER_TEST_SECRET", "s3cret-token-for-the-sandbox-test");

/// The hostile plugin as a folder (so its `env` can arm its `init`), beside `echo`.
fn lay_out_hostile(plugins: &Path, init_signal: i32) {
    let dir = plugins.join("hostile");
    fs::create_dir(&dir).expect("mkdir");
    fs::copy(plugin_library("hostile"), dir.join("libhostile.so")).expect("copy");
    let env = format!("HOSTILE_INIT_SIGNAL={init_signal}\n");
    fs::write(dir.join("env"), env).expect("env");
}

fn hostile_server(args: &[&str], init_signal: i32) -> Server {
    Server::start_with_env(&["echo"], args, &[SECRET], None, |plugins: &Path| {
        lay_out_hostile(plugins, init_signal)
    })
}

/// One attempt's answer line.
fn attempt(server: &Server, query: &str) -> String {
    let response = server.get(&format!("/hostile?try={query}"));
    assert_eq!(response.status, 200, "{query}: {}", response.text());
    response.text().trim().to_owned()
}

fn assert_refused(server: &Server, query: &str, errno: &str) {
    let line = attempt(server, query);
    assert!(
        line.contains(&format!("refused {errno}")),
        "{query} should be refused with {errno}: {line}"
    );
}

fn assert_works(server: &Server, query: &str) {
    let line = attempt(server, query);
    assert!(
        line.contains(" ok"),
        "{query} should work without the sandbox: {line}"
    );
}

fn worker_pid(server: &mut Server) -> u32 {
    let line = server.wait_for_log("started worker", LOG_WAIT);
    line.rsplit(' ')
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// A Unix socket listening in a folder of the test's own (as another program's would).
fn unix_listener(label: &str) -> ((TempDir, UnixListener), PathBuf) {
    let dir = TempDir::new(&format!("sandbox-unix-{label}"));
    let path = dir.0.join("sock");
    let listener = UnixListener::bind(&path).expect("bind a Unix socket");
    ((dir, listener), path)
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn every_attempt_of_a_hostile_plugin_is_refused_and_the_server_keeps_serving() {
    every_attempt_is_refused(hostile_server(&[], libc::SIGKILL));
}

/// Run by root, the same attempts with the server run as an unprivileged user (`nobody`), the
/// way a container runs it. Run by another user, the test above is that case already.
#[test]
fn as_an_unprivileged_user_every_attempt_is_refused_too() {
    if !is_root() {
        eprintln!("not run by root: the test above covers an unprivileged server");
        return;
    }
    // The binary must be reachable by that user (a checkout under a 0700 folder is not).
    let reachable = std::process::Command::new("setpriv")
        .args([format!("--reuid={NOBODY}"), format!("--regid={NOBODY}")])
        .args([
            "--clear-groups",
            env!("CARGO_BIN_EXE_fiddler-crab"),
            "--help",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !reachable {
        eprintln!("uid {NOBODY} cannot run the binary from this checkout: not run here");
        return;
    }
    let server =
        Server::start_with_env(&["echo"], &[], &[SECRET], Some(NOBODY), |plugins: &Path| {
            lay_out_hostile(plugins, libc::SIGKILL)
        });
    every_attempt_is_refused(server);
}

/// The uid an unprivileged server runs as here.
const NOBODY: u32 = 65534;

fn every_attempt_is_refused(mut server: Server) {
    let worker = worker_pid(&mut server);
    // "/hostile: sandbox: ..." or, where something is missing, "/hostile: sandbox lacks ...".
    let sandbox = server.wait_for_log("/hostile: sandbox", LOG_WAIT);
    assert!(sandbox.contains("landlock"), "{sandbox}");
    // A client of another route, connected before the attempts, kept alive through them.
    let mut bystander = server.connect();
    let key = server.certs_dir.join("key.pem");
    let shared_tmp = std::env::temp_dir().join(format!("fiddler-hostile-{}", std::process::id()));
    let dropped = server.plugins_dir.join("dropped.so");
    let http = server.http_addr.to_string();

    assert_refused(&server, "init", "EPERM");
    assert_refused(&server, &format!("read&path={}", key.display()), "EACCES");
    assert_refused(&server, "kill_worker&sig=9", "EPERM");
    assert_refused(&server, "kill_supervisor&sig=9", "EPERM");
    assert_refused(
        &server,
        &format!("write&path={}", dropped.display()),
        "EACCES",
    );
    assert!(
        !dropped.exists(),
        "nothing was dropped into the plugins folder"
    );
    let env = attempt(&server, &format!("env&name={}", SECRET.0));
    assert!(env.contains("refused"), "{env}");
    let env = attempt(&server, "env&name=FIDDLER_SUPERVISOR_PID");
    assert!(env.contains("refused"), "{env}");
    assert_refused(&server, "mem", "EACCES");
    assert_refused(&server, "environ", "EACCES");
    assert_refused(&server, "ptrace", "EPERM");
    assert_refused(&server, &format!("connect&addr={http}"), "EACCES");
    assert_refused(&server, "udp", "EACCES");
    assert_refused(&server, "netlink", "EACCES");
    let (_listening, socket) = unix_listener("on");
    assert_refused(
        &server,
        &format!("unix&path={}", socket.display()),
        "EACCES",
    );
    if sandbox.contains("sandbox lacks") && sandbox.contains("process limit (") {
        // Root where no pids cgroup can be made: the kernel has no limit to set, and the
        // server said so instead (once, with the reason).
        eprintln!("the process limit is missing here: {sandbox}");
    } else {
        assert_refused(&server, "processes&n=200", "EAGAIN");
    }
    assert_refused(
        &server,
        &format!("big_file&path={}&mib=1", shared_tmp.display()),
        "EACCES",
    );
    assert_refused(&server, "big_file&mib=100", "EFBIG");
    assert_refused(&server, "setsid", "EPERM");
    assert_eq!(attempt(&server, "fds"), "fds open above 3: 0");
    let cwd = attempt(&server, "cwd");
    assert!(cwd.ends_with("/plugins/hostile"), "{cwd}");

    // Nothing was lost: the same worker and supervisor, the bystander still served.
    assert!(server.is_running(), "the supervisor is still there");
    assert_eq!(worker_pid(&mut server), worker);
    server.try_log("started worker");
    let workers = server
        .log
        .iter()
        .filter(|l| l.contains("started worker"))
        .count();
    assert_eq!(workers, 1, "no second worker was started");
    bystander
        .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        .expect("the bystander writes");
    let answer = read_response(&mut bystander).expect("the bystander is answered");
    assert_eq!((answer.status, answer.text().as_str()), (200, "hello"));
    let line = server.log.iter().find(|l| l.contains(SECRET.1));
    assert!(line.is_none(), "the secret reached the log: {line:?}");
}

#[test]
fn with_the_sandbox_off_the_same_attempts_work() {
    let server = hostile_server(&["--sandbox", "off"], 0);
    let key = server.certs_dir.join("key.pem");
    let shared_tmp =
        std::env::temp_dir().join(format!("fiddler-hostile-off-{}", std::process::id()));
    let dropped = server.plugins_dir.join(".dropped-by-the-test");
    assert_works(&server, "init");
    assert_works(&server, &format!("read&path={}", key.display()));
    assert_works(&server, "kill_worker&sig=0");
    assert_works(&server, "kill_supervisor&sig=0");
    assert_works(&server, &format!("write&path={}", dropped.display()));
    let env = attempt(&server, &format!("env&name={}", SECRET.0));
    assert!(env.contains("ok"), "{env}");
    // The supervisor's pid is not handed down, sandbox or not.
    let env = attempt(&server, "env&name=FIDDLER_SUPERVISOR_PID");
    assert!(env.contains("refused"), "{env}");
    if is_root() {
        // Root's CAP_SYS_PTRACE passes the worker's undumpable flag; as another user it holds.
        assert_works(&server, "environ");
    } else {
        assert_refused(&server, "environ", "EACCES");
    }
    assert_works(&server, &format!("connect&addr={}", server.http_addr));
    assert_works(&server, "udp");
    assert_works(&server, "netlink");
    let (_listening, socket) = unix_listener("off");
    assert_works(&server, &format!("unix&path={}", socket.display()));
    assert_works(&server, "processes&n=200");
    assert_works(
        &server,
        &format!("big_file&path={}&mib=1", shared_tmp.display()),
    );
    assert_works(&server, "setsid");
}

/// A child that made itself a group of its own outlives a kill of its executor's group; it
/// does not outlive its executor's pids cgroup, which the deadline's kill empties too.
#[test]
fn a_child_in_a_group_of_its_own_dies_with_its_executor_past_the_deadline() {
    let mut server = Server::start_with_env(&[], &[], &[], None, |plugins: &Path| {
        lay_out_hostile(plugins, 0);
        fs::write(plugins.join("hostile/settings"), "deadline=500\n").expect("settings");
    });
    let sandbox = server.wait_for_log("/hostile: sandbox", LOG_WAIT);
    if !sandbox.contains("pids cgroup") {
        eprintln!("no pids cgroup here ({sandbox}): a group of its own escapes the kill");
        return;
    }
    let line = attempt(&server, "escape");
    let pid: u32 = line
        .split_whitespace()
        .nth(3)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    assert!(!is_gone(pid), "the child runs");
    assert_eq!(server.get("/hostile?try=hang").status, 504);
    wait_until("the escaped child is killed", LOG_WAIT, || {
        is_gone(pid).then_some(())
    });
}

#[test]
fn a_folder_setting_opens_what_it_names_and_nothing_else() {
    let mut server = Server::start_with_env(&[], &[], &[], None, |plugins: &Path| {
        let dir = plugins.join("hostile");
        fs::create_dir(&dir).expect("mkdir");
        fs::copy(plugin_library("hostile"), dir.join("libhostile.so")).expect("copy");
        fs::write(
            dir.join("settings"),
            "udp=yes\nprocesses=300\nfile_size=128M\n",
        )
        .expect("settings");
    });
    server.wait_for_log("/hostile: sandbox", LOG_WAIT);
    assert_works(&server, "udp");
    assert_works(&server, "processes&n=200");
    assert_works(&server, "big_file&mib=100");
    // What it did not name stays closed.
    assert_refused(
        &server,
        &format!("connect&addr={}", server.http_addr),
        "EACCES",
    );
    assert_refused(&server, "setsid", "EPERM");
}
