//! The integration suite: the real `fiddler-crab` binary on port 0, real sockets, temporary
//! plugins folders, deadlines on every wait.
//!
//! Most tests take a `Scheme` and run over both HTTP and HTTPS (`over_both_schemes!`).
//!
//! Modules:
//! - `support`: starting a server, its log, a small HTTP client.
//! - `serving`: every example plugin, body round trips, panics, deadlines, FIFO order, keep-alive.
//! - `bodies`: big bodies as sealed memory files: mapped in the plugin, echoed as the same
//!   file, written into as a copy, never changed by the plugin, freed when the client leaves;
//!   forged files refused.
//! - `limits`: each limit and deadline of DESIGN.md's table answers with its status or closes.
//! - `loading`: files that are not plugins, or are built against another interface, are refused
//!   with a log line while the rest serve.
//! - `operability`: metrics, readiness, the admin address, JSON and access logs, systemd socket
//!   activation.
//! - `agent`: the load-balancer agent's line (`--agent`) as the queue fills and empties.
//! - `overload`: the connection budget, the per-IP cap, `--busy 503`, dropped queued requests,
//!   minimum rates, slow readers, running out of descriptors.
//! - `authoring`: `fiddler-crab check` on good and bad files; `new` -> build -> serve.
//! - `cgi`: executables in the plugins folder served as CGI programs.
//! - `programs`: folders with a `serve` that stays up (standard-library Python, uvicorn): calls,
//!   streaming, a killed program, a hung call, a swap under load, a program that never listens.
//! - `streaming`: native plugins answering in pieces (before they finish; cut when stalled
//!   past the deadline or failing midway), `?` in handlers, a call's time left.
//! - `jellyfish`: `--mode jellyfish` with a pinned light: one-lane handlers stay alone while
//!   others run on replicas, batches under a burst, red not ready.
//! - `minilm`: a real model's plugin as a folder (a tiny random BERT made at test time): OpenAI
//!   embeddings checked against a numpy reference, batches, truncation, limits, swaps.
//! - `conformance`: RFC 9110/9112 rules as a table of raw inputs, statuses and closes.
//! - `crashes`: segfault, abort, stack overflow, exit and hang cost one request; crash at load;
//!   SIGTERM drains; SIGHUP restarts without losing a request.
//! - `keys`: routes that need a key (`keys=` in a folder's settings, `--keys`, `keys=none`):
//!   401 before the body, a key file that cannot be read closing its route, a rotated key,
//!   keys kept out of the log and crash files; the internals of `/-/` hidden off loopback.
//! - `statuspage`: the status page `/-/` in headless Chromium.
//! - `hotswap`: plugins dropped in, replaced, removed and refused while the server runs.
//! - `sandbox`: a hostile plugin's attempts on the server, refused under the sandbox and
//!   working with `--sandbox off`; what a folder's settings open.
//! - `tls`: bad input on the TLS port, certificate renewal without a restart (only in a build
//!   with the `tls` feature, like every `https::` variant).

mod agent;
mod authoring;
mod bodies;
mod cgi;
mod conformance;
mod crashes;
mod hotswap;
mod jellyfish;
mod keys;
mod limits;
mod loading;
mod minilm;
mod operability;
mod overload;
mod programs;
mod sandbox;
mod serving;
mod statuspage;
mod streaming;
mod support;
#[cfg(feature = "tls")]
mod tls;
