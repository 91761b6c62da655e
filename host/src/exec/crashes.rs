//! The requests that killed executors, kept for `fiddler-crab replay`: one file per crash in
//! `--crash-dir`, holding what is known of the plugin and its death and the request as the
//! executor received it (a `Request` frame; `Authorization`, `Proxy-Authorization` and
//! `Cookie` values redacted unless `--crash-keep-secrets`; the body cut at [`BODY_CAP`]).
//! Files are written on a thread of their own, so the loop never waits on the disk, and at
//! most `--crash-keep` are kept (the oldest go).
//!
//! A file is a few `key: value` text lines, a blank line, then the frame:
//!
//! ```text
//! fiddler-crab crash 1
//! time: 2026-12-01T19:30:00.000Z
//! route: crash
//! ...
//!
//! <Request frame: head, metadata, body>
//! ```

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use plugin_api::{Header, Request};

use crate::exec::frame::{self, FrameReader, Message};
use crate::observe::log::rfc3339_utc;
use crate::{info, warn};

/// The first line of every crash file (its format's version).
const MAGIC: &str = "fiddler-crab crash 1";
/// The most body bytes kept.
pub const BODY_CAP: usize = 1 << 20;
/// Crashes waiting to be written; more are dropped (and said so) rather than held.
const PENDING: usize = 8;
/// Fields whose values are credentials.
const SECRETS: &[&str] = &["authorization", "proxy-authorization", "cookie"];
/// What a redacted value becomes.
const REDACTED: &[u8] = b"REDACTED";
/// Crash files this process wrote (their names stay unique within a millisecond).
static WRITTEN: AtomicU64 = AtomicU64::new(0);
/// The longest header section read back.
const MAX_HEADER: usize = 16 * 1024;

/// One crash to write.
pub struct CrashRecord {
    /// The route.
    pub route: String,
    /// The plugin crate and version, as it reported them.
    pub crate_name: String,
    /// Its version.
    pub version: String,
    /// Its file's content hash.
    pub hash: String,
    /// Which version of the route.
    pub generation: u64,
    /// How the executor died, in words.
    pub death: String,
    /// The request it was running.
    pub request: Request,
    /// That call's deadline.
    pub deadline_ms: u64,
}

/// Where the pool sends crashes.
pub struct CrashSink {
    records: SyncSender<CrashRecord>,
}

impl CrashSink {
    /// Starts the writer thread for `dir`, keeping `keep` files.
    pub fn start(dir: PathBuf, keep: usize, keep_secrets: bool) -> io::Result<CrashSink> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let (records, incoming) = sync_channel(PENDING);
        thread::Builder::new()
            .name("crashes".to_owned())
            .spawn(move || write_all(&dir, keep, keep_secrets, incoming))?;
        Ok(CrashSink { records })
    }

    /// Hands a crash to the writer; never waits (a full queue drops it, with a log line).
    pub fn record(&self, record: CrashRecord) {
        match self.records.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(record)) => warn!(
                "crash of /{} not written: {PENDING} crash files are already waiting",
                record.route
            ),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn write_all(dir: &Path, keep: usize, keep_secrets: bool, incoming: Receiver<CrashRecord>) {
    for record in incoming {
        let route = record.route.clone();
        match write(dir, record, keep_secrets) {
            Ok(path) => {
                prune(dir, keep);
                info!(
                    "wrote the request that crashed /{route} to {} (replay it: fiddler-crab \
                     replay {} PLUGIN.so)",
                    path.display(),
                    path.display()
                );
            }
            Err(e) => warn!(
                "cannot write the crash of /{route} to {}: {e}",
                dir.display()
            ),
        }
    }
}

/// Writes one crash file; returns its path.
fn write(dir: &Path, record: CrashRecord, keep_secrets: bool) -> io::Result<PathBuf> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut request = record.request;
    let mut redacted = Vec::new();
    if !keep_secrets {
        for header in request.headers.iter_mut() {
            let name = header.name.to_ascii_lowercase();
            if SECRETS.contains(&name.as_str()) {
                header.value = REDACTED.to_vec().into();
                if !redacted.contains(&name) {
                    redacted.push(name);
                }
            }
        }
    }
    let whole = request.body.len();
    if whole > BODY_CAP {
        request.body.truncate(BODY_CAP);
    }
    let mut text = format!(
        "{MAGIC}\ntime: {}\nroute: {}\ncrate: {}\nversion: {}\nhash: {}\ngeneration: {}\n\
         death: {}\nredacted: {}\nbody: {} of {whole} bytes\n\n",
        rfc3339_utc(now.as_secs(), now.subsec_millis()),
        record.route,
        record.crate_name,
        record.version,
        record.hash,
        record.generation,
        record.death,
        if redacted.is_empty() {
            "none".to_owned()
        } else {
            redacted.join(", ")
        },
        request.body.len(),
    )
    .into_bytes();
    text.extend_from_slice(&frame::request(&request, record.deadline_ms));
    text.extend_from_slice(&request.body);
    let serial = WRITTEN.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(
        "crash-{}-{}{:03}-{serial}.req",
        record.route,
        now.as_secs(),
        now.subsec_millis()
    ));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(&text)?;
    Ok(path)
}

/// Removes the oldest crash files beyond `keep`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("crash-") && name.ends_with(".req")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= keep {
        return;
    }
    files.sort();
    for (_, path) in &files[..files.len() - keep] {
        let _ = fs::remove_file(path);
    }
}

/// A crash file read back: its header lines and the request.
pub struct Crash {
    /// The `key: value` lines, in order.
    pub fields: Vec<(String, String)>,
    /// The request.
    pub request: Request,
    /// Its call's deadline.
    pub deadline_ms: u64,
}

impl Crash {
    /// The value of a header line.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a crash file.
pub fn read(path: &Path) -> Result<Crash, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let end = bytes
        .windows(2)
        .take(MAX_HEADER)
        .position(|w| w == b"\n\n")
        .ok_or("not a crash file: no blank line after its header")?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "its header is not UTF-8")?;
    let mut lines = head.lines();
    if lines.next() != Some(MAGIC) {
        return Err(format!(
            "not a crash file (it does not start with {MAGIC:?})"
        ));
    }
    let fields = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut reader = FrameReader::default();
    let mut messages = Vec::new();
    reader
        .feed_all(&bytes[end + 2..], &mut messages)
        .map_err(|e| format!("its request frame is broken: {e}"))?;
    match messages.into_iter().next() {
        Some(Message::Request(request, deadline_ms)) => Ok(Crash {
            fields,
            request,
            deadline_ms,
        }),
        _ => Err("it holds no whole request frame".to_owned()),
    }
}

/// A header value, for printing (binary values lossily).
pub fn header_text(header: &Header) -> String {
    String::from_utf8_lossy(&header.value).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_file_round_trips_with_secrets_redacted_and_the_oldest_pruned() {
        let dir = std::env::temp_dir().join(format!("fiddler-crashes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        let request = Request::new("POST", "/segfault?x=1")
            .with_header("Authorization", "Bearer secret")
            .with_header("Cookie", "id=42")
            .with_header("X-Kept", "yes")
            .with_body(vec![7u8; BODY_CAP + 10]);
        let record = |request: Request| CrashRecord {
            route: "crash".into(),
            crate_name: "fixture".into(),
            version: "0.1.0".into(),
            hash: "00ff".into(),
            generation: 3,
            death: "SIGSEGV (signal 11)".into(),
            request,
            deadline_ms: 1500,
        };
        let path = write(&dir, record(request.clone()), false).expect("write");
        let crash = read(&path).expect("read back");
        assert_eq!(crash.field("route"), Some("crash"));
        assert_eq!(crash.field("death"), Some("SIGSEGV (signal 11)"));
        assert_eq!(crash.field("redacted"), Some("authorization, cookie"));
        assert_eq!(crash.request.header("authorization"), Some("REDACTED"));
        assert_eq!(crash.request.header("x-kept"), Some("yes"));
        assert_eq!(crash.request.body.len(), BODY_CAP);
        assert_eq!(crash.deadline_ms, 1500);
        let kept = write(&dir, record(request), true).expect("write");
        let crash = read(&kept).expect("read back");
        assert_eq!(crash.request.header("cookie"), Some("id=42"));
        prune(&dir, 1);
        assert_eq!(fs::read_dir(&dir).expect("list").count(), 1);
        let _ = fs::remove_dir_all(&dir);
    }
}
