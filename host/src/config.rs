//! Command-line flags, their environment-variable twins, defaults and validation.
//!
//! Every setting is a flag (`--queue 256` or `--queue=256`) with a `FIDDLER_*` twin
//! (`FIDDLER_QUEUE=256`); a flag wins over its variable, which wins over the default. Invalid
//! values are refused here, before anything starts.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::intake::admission::BusyMode;

/// What the server runs with. Built by [`parse`]; tests may also build one directly.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the plain-HTTP listener binds (port 0 picks a free port); `None` is off.
    pub http: Option<SocketAddr>,
    /// Where the HTTPS listener binds; `None` is off.
    pub https: Option<SocketAddr>,
    /// Where the admin routes (`/-/...`) are served instead of on the HTTP listener; `None`
    /// keeps them on the HTTP listener.
    pub admin: Option<SocketAddr>,
    /// Where the load-balancer agent answers (HAProxy's `agent-check`); `None` is off.
    pub agent: Option<SocketAddr>,
    /// How log lines are written.
    pub log_format: crate::observe::log::Format,
    /// The most verbose level logged.
    pub log_level: crate::observe::log::Level,
    /// One line per answered request.
    pub access_log: bool,
    /// The PEM certificate chain for HTTPS.
    pub cert: PathBuf,
    /// The PEM private key for HTTPS.
    pub key: PathBuf,
    /// The folder read for `*.so` plugins.
    pub plugins: PathBuf,
    /// The API keys every route needs unless its folder's settings say otherwise (`keys=`);
    /// `None`: routes without `keys=` are open.
    pub keys: Option<PathBuf>,
    /// The most requests waiting in the queue (not counting the ones running).
    pub queue: usize,
    /// The most request-body bytes held at once, queued or being read.
    pub queue_bytes: usize,
    /// The largest request body accepted.
    pub max_body: usize,
    /// How many calls may run at once (each executor runs one at a time), in crab mode.
    pub lanes: usize,
    /// Crab (serial, `lanes`) or jellyfish (the light decides).
    pub mode: crate::jellyfish::Mode,
    /// The jellyfish's lanes, batches, light thresholds and interval.
    pub jellyfish: crate::jellyfish::JellyfishSettings,
    /// How long a plugin call may run unless the plugin sets its own deadline.
    pub deadline: Duration,
    /// How long a request may wait in the queue before it is dropped unrun.
    pub queue_wait: Duration,
    /// From accept (or the end of the previous response) to a complete request head.
    pub header_timeout: Duration,
    /// The longest pause while reading a body or writing a response.
    pub idle_timeout: Duration,
    /// The most open client connections.
    pub max_conns: usize,
    /// The kernel's accept backlog for each listener: what waits beyond `max_conns`.
    pub backlog: u32,
    /// The most open connections from one client address (`None`: no cap).
    pub max_conns_per_ip: Option<u32>,
    /// What happens to connections beyond the budget.
    pub busy: BusyMode,
    /// The slowest a body may arrive or a response be taken, bytes per second (0: off).
    pub min_rate: usize,
    /// What header and idle deadlines shrink to above the connection high-water mark.
    pub pressure_timeout: Duration,
    /// How long a stopping worker may take to finish what it admitted.
    pub drain_timeout: Duration,
    /// Run the worker in this process, without a supervisor (debugging).
    pub no_supervisor: bool,
    /// Load plugins from a folder or files other users can write (off by default).
    pub insecure_plugins_dir: bool,
    /// How often the plugins folder is looked at.
    pub watch_interval: Duration,
    /// How long an executor may take to load its handler and run `init`.
    pub init_timeout: Duration,
    /// The pause after each call before its lane takes the next (a route's `pace` setting
    /// wins).
    pub pace: Duration,
    /// The address space an executor may use (`None`: no limit).
    pub executor_memory: Option<u64>,
    /// How much sandbox executors get (`--sandbox`).
    pub sandbox: crate::exec::sandbox::Mode,
    /// Where the request that killed an executor is written (`None`: nowhere).
    pub crash_dir: Option<PathBuf>,
    /// How many crash files are kept (the oldest go).
    pub crash_keep: usize,
    /// Keep `Authorization` and `Cookie` values in crash files (redacted by default).
    pub crash_secrets: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            // A build without TLS serves plain HTTP only unless asked (then it says why not).
            https: cfg!(feature = "tls").then(|| SocketAddr::from(([127, 0, 0, 1], 8443))),
            admin: None,
            agent: None,
            log_format: crate::observe::log::Format::Human,
            log_level: crate::observe::log::Level::Info,
            access_log: false,
            cert: PathBuf::from("certs/cert.pem"),
            key: PathBuf::from("certs/key.pem"),
            plugins: PathBuf::from("plugins"),
            keys: None,
            queue: 256,
            queue_bytes: 64 << 20,
            max_body: 16 << 20,
            lanes: 1,
            mode: crate::jellyfish::Mode::Crab,
            jellyfish: crate::jellyfish::JellyfishSettings {
                lanes_max: std::thread::available_parallelism().map_or(1, usize::from),
                batch_max: 32,
                thresholds: crate::jellyfish::light::Thresholds::default(),
                interval: Duration::from_millis(500),
                pinned: None,
            },
            deadline: Duration::from_secs(30),
            queue_wait: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            max_conns: 512,
            backlog: 64,
            max_conns_per_ip: None,
            busy: BusyMode::Silent,
            min_rate: 1024,
            pressure_timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            no_supervisor: false,
            insecure_plugins_dir: false,
            watch_interval: Duration::from_millis(250),
            init_timeout: Duration::from_secs(60),
            pace: Duration::ZERO,
            executor_memory: None,
            sandbox: crate::exec::sandbox::Mode::On,
            crash_dir: None,
            crash_keep: 20,
            crash_secrets: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the server with this configuration.
    Serve(Box<Config>),
    /// Print the help text and exit.
    Help,
}

/// Why the command line was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A flag that does not exist.
    UnknownFlag(String),
    /// A flag given last, with no value after it.
    MissingValue(String),
    /// A value that does not parse or is out of range; `source` is the flag or variable name.
    Invalid {
        /// `--flag` or `FIDDLER_VARIABLE`.
        source: String,
        /// The value given.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownFlag(flag) => write!(f, "unknown flag {flag} (see --help)"),
            ConfigError::MissingValue(flag) => write!(f, "{flag} needs a value"),
            ConfigError::Invalid {
                source,
                value,
                expected,
            } => write!(f, "{source}={value:?} is invalid: expected {expected}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The value name of an on/off flag: given bare it means `yes` (`--no-supervisor`).
const SWITCH: &str = "[=yes|no]";

/// One setting: its flag, its variable, the help line, and how to store a value.
struct Setting {
    flag: &'static str,
    env: &'static str,
    value_name: &'static str,
    help: &'static str,
    set: fn(&mut Config, &str) -> Result<(), &'static str>,
    show_default: fn(&Config) -> String,
}

const SETTINGS: &[Setting] = &[
    Setting {
        flag: "--http",
        env: "FIDDLER_HTTP",
        value_name: "ADDR",
        help: "plain-HTTP listen address (port 0 picks a free port), or off",
        set: |c, v| {
            c.http = listen_addr(v)?;
            Ok(())
        },
        show_default: |c| show_addr(c.http),
    },
    Setting {
        flag: "--https",
        env: "FIDDLER_HTTPS",
        value_name: "ADDR",
        help: "HTTPS listen address (port 0 picks a free port), or off",
        set: |c, v| {
            c.https = listen_addr(v)?;
            Ok(())
        },
        show_default: |c| show_addr(c.https),
    },
    Setting {
        flag: "--admin",
        env: "FIDDLER_ADMIN",
        value_name: "ADDR",
        help: "serve the admin routes /-/... here only (plain HTTP), not on --http; or off",
        set: |c, v| {
            c.admin = listen_addr(v)?;
            Ok(())
        },
        show_default: |c| show_addr(c.admin),
    },
    Setting {
        flag: "--agent",
        env: "FIDDLER_AGENT",
        value_name: "ADDR",
        help: "answer HAProxy's agent-check here (plain TCP, one line: \"up 60%\" as the \
               predicted wait grows, \"up 0%\" where /-/ready is 503); or off",
        set: |c, v| {
            c.agent = listen_addr(v)?;
            Ok(())
        },
        show_default: |c| show_addr(c.agent),
    },
    Setting {
        flag: "--log-format",
        env: "FIDDLER_LOG_FORMAT",
        value_name: "human|json",
        help: "log lines for people, or one JSON object per line for collectors",
        set: |c, v| {
            c.log_format = match v {
                "human" => crate::observe::log::Format::Human,
                "json" => crate::observe::log::Format::Json,
                _ => return Err("human or json"),
            };
            Ok(())
        },
        show_default: |c| match c.log_format {
            crate::observe::log::Format::Human => "human".to_owned(),
            crate::observe::log::Format::Json => "json".to_owned(),
        },
    },
    Setting {
        flag: "--log-level",
        env: "FIDDLER_LOG_LEVEL",
        value_name: "info|warn",
        help: "info logs lifecycle events too; warn only what needs attention",
        set: |c, v| {
            c.log_level = match v {
                "info" => crate::observe::log::Level::Info,
                "warn" => crate::observe::log::Level::Warn,
                _ => return Err("info or warn"),
            };
            Ok(())
        },
        show_default: |c| match c.log_level {
            crate::observe::log::Level::Info => "info".to_owned(),
            crate::observe::log::Level::Warn => "warn".to_owned(),
        },
    },
    Setting {
        flag: "--access-log",
        env: "FIDDLER_ACCESS_LOG",
        value_name: SWITCH,
        help: "log one line per answered request (never for shed ones)",
        set: |c, v| {
            c.access_log = switch(v)?;
            Ok(())
        },
        show_default: |c| if c.access_log { "yes" } else { "no" }.to_owned(),
    },
    Setting {
        flag: "--cert",
        env: "FIDDLER_CERT",
        value_name: "FILE",
        help: "PEM certificate chain for HTTPS (re-read when it changes)",
        set: |c, v| {
            c.cert = PathBuf::from(v);
            Ok(())
        },
        show_default: |c| c.cert.display().to_string(),
    },
    Setting {
        flag: "--key",
        env: "FIDDLER_KEY",
        value_name: "FILE",
        help: "PEM private key for HTTPS (re-read when it changes)",
        set: |c, v| {
            c.key = PathBuf::from(v);
            Ok(())
        },
        show_default: |c| c.key.display().to_string(),
    },
    Setting {
        flag: "--plugins",
        env: "FIDDLER_PLUGINS",
        value_name: "DIR",
        help: "folder read for *.so plugins",
        set: |c, v| {
            c.plugins = PathBuf::from(v);
            Ok(())
        },
        show_default: |c| c.plugins.display().to_string(),
    },
    Setting {
        flag: "--keys",
        env: "FIDDLER_KEYS",
        value_name: "FILE",
        help: "API keys (one a line) every route needs as Authorization: Bearer KEY, unless \
               its folder's settings say keys=FILE or keys=none; re-read when it changes; or off",
        set: |c, v| {
            c.keys = match v {
                "" => return Err("a file, or off"),
                "off" => None,
                path => Some(PathBuf::from(path)),
            };
            Ok(())
        },
        show_default: |c| {
            c.keys
                .as_ref()
                .map_or("off".to_owned(), |k| k.display().to_string())
        },
    },
    Setting {
        flag: "--queue",
        env: "FIDDLER_QUEUE",
        value_name: "N",
        help: "most requests waiting to run",
        set: |c, v| {
            c.queue = count(v, 1, 1 << 20)?;
            Ok(())
        },
        show_default: |c| c.queue.to_string(),
    },
    Setting {
        flag: "--queue-bytes",
        env: "FIDDLER_QUEUE_BYTES",
        value_name: "BYTES",
        help: "most request-body bytes held at once (queued or being read)",
        set: |c, v| {
            c.queue_bytes = bytes_in(v, 1, 1 << 40)?;
            Ok(())
        },
        show_default: |c| c.queue_bytes.to_string(),
    },
    Setting {
        flag: "--max-body",
        env: "FIDDLER_MAX_BODY",
        value_name: "BYTES",
        help: "largest request body (413 beyond it)",
        set: |c, v| {
            c.max_body = bytes_in(v, 0, 1 << 40)?;
            Ok(())
        },
        show_default: |c| c.max_body.to_string(),
    },
    Setting {
        flag: "--lanes",
        env: "FIDDLER_LANES",
        value_name: "N",
        help: "calls running at once, each in an executor process of its own",
        set: |c, v| {
            c.lanes = count(v, 1, 64)?;
            Ok(())
        },
        show_default: |c| c.lanes.to_string(),
    },
    Setting {
        flag: "--mode",
        env: "FIDDLER_MODE",
        value_name: "crab|jellyfish",
        help: "crab: --lanes calls at once, in order; jellyfish: a light on CPU and memory \
               pressure picks parallel lanes, batches or one lane",
        set: |c, v| {
            c.mode = match v {
                "crab" => crate::jellyfish::Mode::Crab,
                "jellyfish" => crate::jellyfish::Mode::Jellyfish,
                _ => return Err("crab or jellyfish"),
            };
            Ok(())
        },
        show_default: |c| match c.mode {
            crate::jellyfish::Mode::Crab => "crab".to_owned(),
            crate::jellyfish::Mode::Jellyfish => "jellyfish".to_owned(),
        },
    },
    Setting {
        flag: "--lanes-max",
        env: "FIDDLER_LANES_MAX",
        value_name: "N",
        help: "jellyfish: calls at once on green (half on yellow, one on red); a handler's \
               own max_lanes caps its route",
        set: |c, v| {
            c.jellyfish.lanes_max = count(v, 1, 64)?;
            Ok(())
        },
        show_default: |c| format!("{} (the CPUs)", c.jellyfish.lanes_max),
    },
    Setting {
        flag: "--batch-max",
        env: "FIDDLER_BATCH_MAX",
        value_name: "N",
        help: "jellyfish: queued requests handed in one call, on yellow, to a plugin that takes \
               batches (its MAX_BATCH caps it)",
        set: |c, v| {
            c.jellyfish.batch_max = count(v, 1, 1024)?;
            Ok(())
        },
        show_default: |c| c.jellyfish.batch_max.to_string(),
    },
    Setting {
        flag: "--light",
        env: "FIDDLER_LIGHT",
        value_name: "auto|green|yellow|red",
        help: "jellyfish: pin the light instead of reading the machine (auto)",
        set: |c, v| {
            c.jellyfish.pinned = match v {
                "auto" => None,
                _ => Some(
                    crate::jellyfish::light::Color::parse(v).ok_or("auto, green, yellow or red")?,
                ),
            };
            Ok(())
        },
        show_default: |c| c.jellyfish.pinned.map_or("auto", |l| l.name()).to_owned(),
    },
    Setting {
        flag: "--light-interval",
        env: "FIDDLER_LIGHT_INTERVAL",
        value_name: "MS",
        help: "jellyfish: how often the light is recomputed",
        set: |c, v| {
            c.jellyfish.interval = millis(v, 50)?;
            Ok(())
        },
        show_default: |c| c.jellyfish.interval.as_millis().to_string(),
    },
    Setting {
        flag: "--cpu-pressure",
        env: "FIDDLER_CPU_PRESSURE",
        value_name: "YELLOW,RED",
        help: "jellyfish: CPU pressure (% of a window some task waited for a CPU) for yellow \
               (with a queue building) and red",
        set: |c, v| {
            let (yellow, red) = percent_pair(v)?;
            c.jellyfish.thresholds.cpu_yellow = yellow;
            c.jellyfish.thresholds.cpu_red = red;
            Ok(())
        },
        show_default: |c| {
            show_pair(
                c.jellyfish.thresholds.cpu_yellow,
                c.jellyfish.thresholds.cpu_red,
            )
        },
    },
    Setting {
        flag: "--memory-pressure",
        env: "FIDDLER_MEMORY_PRESSURE",
        value_name: "YELLOW,RED",
        help: "jellyfish: memory pressure (% of a window some task waited for memory) for \
               yellow (with a queue building) and red",
        set: |c, v| {
            let (yellow, red) = percent_pair(v)?;
            c.jellyfish.thresholds.memory_yellow = yellow;
            c.jellyfish.thresholds.memory_red = red;
            Ok(())
        },
        show_default: |c| {
            show_pair(
                c.jellyfish.thresholds.memory_yellow,
                c.jellyfish.thresholds.memory_red,
            )
        },
    },
    Setting {
        flag: "--headroom",
        env: "FIDDLER_HEADROOM",
        value_name: "YELLOW,RED",
        help: "jellyfish: memory still available (% of the cgroup limit, else of MemTotal) \
               below which it turns yellow (with a queue building) and red",
        set: |c, v| {
            let (yellow, red) = shares(v)?;
            if red > yellow {
                return Err("two percentages, the red one not above the yellow one");
            }
            c.jellyfish.thresholds.headroom_yellow = yellow;
            c.jellyfish.thresholds.headroom_red = red;
            Ok(())
        },
        show_default: |c| {
            show_pair(
                c.jellyfish.thresholds.headroom_yellow,
                c.jellyfish.thresholds.headroom_red,
            )
        },
    },
    Setting {
        flag: "--deadline",
        env: "FIDDLER_DEADLINE",
        value_name: "MS",
        help: "plugin call deadline unless the plugin sets one (504 beyond it)",
        set: |c, v| {
            c.deadline = millis(v, 1)?;
            Ok(())
        },
        show_default: |c| c.deadline.as_millis().to_string(),
    },
    Setting {
        flag: "--queue-wait",
        env: "FIDDLER_QUEUE_WAIT",
        value_name: "MS",
        help: "longest wait in the queue; older requests are dropped unrun",
        set: |c, v| {
            c.queue_wait = millis(v, 1)?;
            Ok(())
        },
        show_default: |c| c.queue_wait.as_millis().to_string(),
    },
    Setting {
        flag: "--header-timeout",
        env: "FIDDLER_HEADER_TIMEOUT",
        value_name: "MS",
        help: "from accept (or the previous response) to a whole request head",
        set: |c, v| {
            c.header_timeout = millis(v, 1)?;
            Ok(())
        },
        show_default: |c| c.header_timeout.as_millis().to_string(),
    },
    Setting {
        flag: "--idle-timeout",
        env: "FIDDLER_IDLE_TIMEOUT",
        value_name: "MS",
        help: "longest pause while reading a body or sending a response",
        set: |c, v| {
            c.idle_timeout = millis(v, 1)?;
            Ok(())
        },
        show_default: |c| c.idle_timeout.as_millis().to_string(),
    },
    Setting {
        flag: "--max-conns",
        env: "FIDDLER_MAX_CONNS",
        value_name: "N",
        help: "most open client connections; beyond it nothing is accepted",
        set: |c, v| {
            c.max_conns = count(v, 1, 1 << 20)?;
            Ok(())
        },
        show_default: |c| c.max_conns.to_string(),
    },
    Setting {
        flag: "--backlog",
        env: "FIDDLER_BACKLOG",
        value_name: "N",
        help: "kernel accept backlog of each listener",
        set: |c, v| {
            c.backlog = count(v, 1, 65535)? as u32;
            Ok(())
        },
        show_default: |c| c.backlog.to_string(),
    },
    Setting {
        flag: "--max-conns-per-ip",
        env: "FIDDLER_MAX_CONNS_PER_IP",
        value_name: "N",
        help: "most open connections from one address, or off (behind a proxy, all share one)",
        set: |c, v| {
            c.max_conns_per_ip = match v {
                "off" => None,
                v => Some(count(v, 1, 1 << 20)? as u32),
            };
            Ok(())
        },
        show_default: |c| {
            c.max_conns_per_ip
                .map_or("off".to_owned(), |n| n.to_string())
        },
    },
    Setting {
        flag: "--busy",
        env: "FIDDLER_BUSY",
        value_name: "MODE",
        help: "beyond capacity: silent (not accepted) or 503 (answered, for load balancers)",
        set: |c, v| {
            c.busy = match v {
                "silent" => BusyMode::Silent,
                "503" => BusyMode::Answer503,
                _ => return Err("silent or 503"),
            };
            Ok(())
        },
        show_default: |c| match c.busy {
            BusyMode::Silent => "silent".to_owned(),
            BusyMode::Answer503 => "503".to_owned(),
        },
    },
    Setting {
        flag: "--min-rate",
        env: "FIDDLER_MIN_RATE",
        value_name: "BYTES/S",
        help: "slowest a body may arrive or a response be read, after 1 s (0: off)",
        set: |c, v| {
            c.min_rate = count(v, 0, 1 << 40)?;
            Ok(())
        },
        show_default: |c| c.min_rate.to_string(),
    },
    Setting {
        flag: "--pressure-timeout",
        env: "FIDDLER_PRESSURE_TIMEOUT",
        value_name: "MS",
        help: "header and idle deadlines when connections pass 3/4 of --max-conns",
        set: |c, v| {
            c.pressure_timeout = millis(v, 1)?;
            Ok(())
        },
        show_default: |c| c.pressure_timeout.as_millis().to_string(),
    },
    Setting {
        flag: "--drain-timeout",
        env: "FIDDLER_DRAIN_TIMEOUT",
        value_name: "MS",
        help: "on SIGTERM or a planned restart, time to finish admitted work before exiting",
        set: |c, v| {
            c.drain_timeout = millis(v, 0)?;
            Ok(())
        },
        show_default: |c| c.drain_timeout.as_millis().to_string(),
    },
    Setting {
        flag: "--no-supervisor",
        env: "FIDDLER_NO_SUPERVISOR",
        value_name: SWITCH,
        help: "run without the supervisor process (a crashing plugin then ends the server)",
        set: |c, v| {
            c.no_supervisor = switch(v)?;
            Ok(())
        },
        show_default: |c| if c.no_supervisor { "yes" } else { "no" }.to_owned(),
    },
    Setting {
        flag: "--insecure-plugins-dir",
        env: "FIDDLER_INSECURE_PLUGINS_DIR",
        value_name: SWITCH,
        help: "load plugins even from a folder or files other users can write (risky)",
        set: |c, v| {
            c.insecure_plugins_dir = switch(v)?;
            Ok(())
        },
        show_default: |c| if c.insecure_plugins_dir { "yes" } else { "no" }.to_owned(),
    },
    Setting {
        flag: "--watch-interval",
        env: "FIDDLER_WATCH_INTERVAL",
        value_name: "MS",
        help: "how often the plugins folder is looked at for new, changed and removed files",
        set: |c, v| {
            c.watch_interval = millis(v, 10)?;
            Ok(())
        },
        show_default: |c| c.watch_interval.as_millis().to_string(),
    },
    Setting {
        flag: "--init-timeout",
        env: "FIDDLER_INIT_TIMEOUT",
        value_name: "MS",
        help: "how long a new version's executor may take to load and init (refused beyond it)",
        set: |c, v| {
            c.init_timeout = millis(v, 1)?;
            Ok(())
        },
        show_default: |c| c.init_timeout.as_millis().to_string(),
    },
    Setting {
        flag: "--pace",
        env: "FIDDLER_PACE",
        value_name: "MS",
        help: "pause after each call before its lane takes the next (a route's pace setting \
               wins; 0: none)",
        set: |c, v| {
            c.pace = millis(v, 0)?;
            Ok(())
        },
        show_default: |c| c.pace.as_millis().to_string(),
    },
    Setting {
        flag: "--executor-memory",
        env: "FIDDLER_EXECUTOR_MEMORY",
        value_name: "BYTES",
        help: "address space each executor may use (e.g. 256M, 2G; 0 = no limit); past it \
               the plugin's allocation fails in its own process",
        set: |c, v| {
            c.executor_memory = Some(size(v)?).filter(|n| *n > 0);
            Ok(())
        },
        show_default: |c| c.executor_memory.map_or("0".to_owned(), |n| n.to_string()),
    },
    Setting {
        flag: "--sandbox",
        env: "FIDDLER_SANDBOX",
        value_name: "on|strict|off",
        help: "executors' sandbox: on (all this kernel can do, what it cannot is said once), \
               strict (refuse a plugin that cannot be fully sandboxed), off (for debugging)",
        set: |c, v| {
            c.sandbox = crate::exec::sandbox::Mode::parse(v).ok_or("on, strict or off")?;
            Ok(())
        },
        show_default: |c| c.sandbox.as_str().to_owned(),
    },
    Setting {
        flag: "--crash-dir",
        env: "FIDDLER_CRASH_DIR",
        value_name: "DIR",
        help: "write the request that killed a plugin's executor there, for `fiddler-crab \
               replay` (off: keep none)",
        set: |c, v| {
            c.crash_dir = (v != "off").then(|| PathBuf::from(v));
            Ok(())
        },
        show_default: |c| {
            c.crash_dir
                .as_ref()
                .map_or("off".to_owned(), |d| d.display().to_string())
        },
    },
    Setting {
        flag: "--crash-keep",
        env: "FIDDLER_CRASH_KEEP",
        value_name: "N",
        help: "crash files kept in --crash-dir; the oldest are removed",
        set: |c, v| {
            c.crash_keep = count(v, 1, 100_000)?;
            Ok(())
        },
        show_default: |c| c.crash_keep.to_string(),
    },
    Setting {
        flag: "--crash-keep-secrets",
        env: "FIDDLER_CRASH_KEEP_SECRETS",
        value_name: SWITCH,
        help: "keep Authorization and Cookie values in crash files (redacted by default)",
        set: |c, v| {
            c.crash_secrets = switch(v)?;
            Ok(())
        },
        show_default: |c| if c.crash_secrets { "yes" } else { "no" }.to_owned(),
    },
];

/// A byte count with an optional K, M or G suffix (powers of 1024).
pub(crate) fn size(value: &str) -> Result<u64, &'static str> {
    let (digits, unit) = match value.as_bytes().last() {
        Some(b'K' | b'k') => (&value[..value.len() - 1], 1u64 << 10),
        Some(b'M' | b'm') => (&value[..value.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&value[..value.len() - 1], 1 << 30),
        _ => (value, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or("a byte count, optionally with K, M or G")
}

/// `YELLOW,RED` pressure percentages (`25,90`) as shares: above 0 (a pressure of 0 is always
/// reached), red not below yellow.
fn percent_pair(value: &str) -> Result<(f64, f64), &'static str> {
    let (yellow, red) = shares(value)?;
    if yellow <= 0.0 || red < yellow {
        return Err("two percentages above 0, the red one not below the yellow one, like 25,90");
    }
    Ok((yellow, red))
}

/// `YELLOW,RED` percentages from 0 to 100 as shares.
fn shares(value: &str) -> Result<(f64, f64), &'static str> {
    const WHAT: &str = "two percentages from 0 to 100, like 25,90";
    let (yellow, red) = value.split_once(',').ok_or(WHAT)?;
    let share = |p: &str| match p.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p / 100.0),
        _ => Err(WHAT),
    };
    Ok((share(yellow)?, share(red)?))
}

fn show_pair(yellow: f64, red: f64) -> String {
    format!("{},{}", yellow * 100.0, red * 100.0)
}

fn switch(value: &str) -> Result<bool, &'static str> {
    match value {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err("yes or no"),
    }
}

fn listen_addr(value: &str) -> Result<Option<SocketAddr>, &'static str> {
    if value == "off" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| "an address like 127.0.0.1:8080, or off")
}

fn show_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_owned(), |a| a.to_string())
}

/// A byte count (with K, M or G, as `size` reads it) within `min..=max`.
fn bytes_in(value: &str, min: usize, max: usize) -> Result<usize, &'static str> {
    match size(value).map(usize::try_from) {
        Ok(Ok(n)) if (min..=max).contains(&n) => Ok(n),
        _ => Err("a byte count in range, optionally with K, M or G"),
    }
}

fn count(value: &str, min: usize, max: usize) -> Result<usize, &'static str> {
    match value.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err("a whole number in range"),
    }
}

fn millis(value: &str, min: u64) -> Result<Duration, &'static str> {
    match value.parse::<u64>() {
        Ok(ms) if ms >= min => Ok(Duration::from_millis(ms)),
        _ => Err("a whole number of milliseconds"),
    }
}

/// Parses the arguments (without the program name), reading variables through `env`.
pub fn parse<I, E>(args: I, env: E) -> Result<Command, ConfigError>
where
    I: IntoIterator<Item = String>,
    E: Fn(&str) -> Option<String>,
{
    let mut config = Config::default();
    for setting in SETTINGS {
        if let Some(value) = env(setting.env) {
            apply(&mut config, setting, setting.env, &value)?;
        }
    }
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        let setting = SETTINGS
            .iter()
            .find(|s| s.flag == flag)
            .ok_or_else(|| ConfigError::UnknownFlag(arg.clone()))?;
        let value = match inline {
            Some(value) => value,
            None if setting.value_name == SWITCH => "yes".to_owned(),
            None => args
                .next()
                .ok_or_else(|| ConfigError::MissingValue(flag.clone()))?,
        };
        apply(&mut config, setting, &flag, &value)?;
    }
    if config.http.is_none() && config.https.is_none() {
        return Err(ConfigError::Invalid {
            source: "--http and --https".to_owned(),
            value: "off".to_owned(),
            expected: "at least one listener",
        });
    }
    Ok(Command::Serve(Box::new(config)))
}

fn apply(
    config: &mut Config,
    setting: &Setting,
    source: &str,
    value: &str,
) -> Result<(), ConfigError> {
    (setting.set)(config, value).map_err(|expected| ConfigError::Invalid {
        source: source.to_owned(),
        value: value.to_owned(),
        expected,
    })
}

/// The `--help` text: every flag with its variable and default.
pub fn help() -> String {
    let defaults = Config::default();
    let mut text = String::from(
        "fiddler-crab: a slim, load-impervious HTTP server for handler plugins.\n\n\
         Usage: fiddler-crab [FLAGS]\n       \
         fiddler-crab new NAME [--dir DIR] [--api PATH]   write a ready plugin crate\n       \
         fiddler-crab check FILE.so [--verbose]          what the server would do with it\n\n\
         Each .so in the plugins folder serves POST /<name> (libecho.so and echo.so serve /echo).\n\
         Every flag has an environment variable twin; the flag wins.\n\nFlags:\n",
    );
    for s in SETTINGS {
        let left = format!("  {} {}", s.flag, s.value_name);
        text.push_str(&format!(
            "{left:<28} {} [{}; default {}]\n",
            s.help,
            s.env,
            (s.show_default)(&defaults)
        ));
    }
    text.push_str("  -h, --help                   print this help\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Command, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(args.iter().map(|a| a.to_string()), move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn serve(args: &[&str], env: &[(&str, &str)]) -> Config {
        match parse_with(args, env) {
            Ok(Command::Serve(config)) => *config,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[test]
    fn flags_win_over_variables_which_win_over_defaults() {
        let config = serve(
            &["--queue", "7", "--executor-memory=256M"],
            &[("FIDDLER_QUEUE", "9"), ("FIDDLER_LANES", "2")],
        );
        assert_eq!(config.queue, 7);
        assert_eq!(config.lanes, 2);
        assert_eq!(config.executor_memory, Some(256 << 20));
        let sized = serve(&["--max-body", "300M"], &[("FIDDLER_QUEUE_BYTES", "1G")]);
        assert_eq!((sized.max_body, sized.queue_bytes), (300 << 20, 1 << 30));
        assert_eq!(
            serve(&["--executor-memory", "0"], &[]).executor_memory,
            None
        );
        assert_eq!(config.max_body, 16 << 20);
        assert_eq!(serve(&[], &[]).pace, Duration::ZERO);
        assert_eq!(
            serve(&["--pace", "300"], &[("FIDDLER_PACE", "9")]).pace,
            Duration::from_millis(300)
        );
        assert_eq!(
            serve(&[], &[("FIDDLER_PACE", "9")]).pace,
            Duration::from_millis(9)
        );
        assert_eq!(serve(&[], &[]).keys, None);
        assert_eq!(
            serve(&[], &[("FIDDLER_KEYS", "/etc/keys")]).keys,
            Some(PathBuf::from("/etc/keys"))
        );
        assert_eq!(
            serve(&["--keys=off"], &[("FIDDLER_KEYS", "/etc/keys")]).keys,
            None
        );
        assert!(serve(&["--no-supervisor"], &[]).no_supervisor);
        assert!(!serve(&["--no-supervisor=no"], &[("FIDDLER_NO_SUPERVISOR", "yes")]).no_supervisor);
        let config = serve(&["--https", "off"], &[("FIDDLER_HTTP", "127.0.0.1:0")]);
        assert_eq!(
            (config.http.map(|a| a.port()), config.https),
            (Some(0), None)
        );
    }

    #[test]
    fn bad_values_are_refused_with_their_source() {
        type Row<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
        let table: &[Row] = &[
            (&["--lanes", "0"], &[], "--lanes"),
            (&["--http", "nowhere"], &[], "--http"),
            (&["--http", "off", "--https=off"], &[], "--http and --https"),
            (&[], &[("FIDDLER_MAX_BODY", "-1")], "FIDDLER_MAX_BODY"),
            (&["--executor-memory", "lots"], &[], "--executor-memory"),
            (&["--keys="], &[], "--keys"),
        ];
        for (args, env, source) in table {
            match parse_with(args, env) {
                Err(ConfigError::Invalid { source: got, .. }) => assert_eq!(&got, source),
                other => panic!("{args:?}: expected Invalid, got {other:?}"),
            }
        }
        assert_eq!(
            parse_with(&["--queue"], &[]).err(),
            Some(ConfigError::MissingValue("--queue".into()))
        );
        assert!(matches!(
            parse_with(&["--nope"], &[]),
            Err(ConfigError::UnknownFlag(_))
        ));
    }

    #[test]
    fn help_lists_every_flag_and_variable() {
        let text = help();
        for s in SETTINGS {
            assert!(text.contains(s.flag) && text.contains(s.env), "{}", s.flag);
        }
        assert!(matches!(parse_with(&["--help"], &[]), Ok(Command::Help)));
    }
}
