//! The `fiddler-crab` binary: flags in, the supervisor (or, in a worker, [`fiddler_crab::run`]),
//! exit code out.

use std::process::ExitCode;

use std::path::{Path, PathBuf};

use fiddler_crab::authoring;
use fiddler_crab::config::{self, Command};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("new") => return new(&args[1..]),
        Some("check") => return check(&args[1..]),
        Some("replay") => return replay(&args[1..]),
        Some(fiddler_crab::exec::spawn::EXECUTOR_COMMAND) => {
            let code = fiddler_crab::exec::child::main(&args[1..]);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        _ => {}
    }
    let command = config::parse(args, |name| std::env::var(name).ok());
    match command {
        Ok(Command::Help) => {
            print!("{}", config::help());
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(config)) => {
            fiddler_crab::observe::log::configure(
                config.log_format,
                config.log_level,
                config.access_log,
            );
            fiddler_crab::process::undumpable();
            // A worker is started with its listeners in LISTEN_FDS; otherwise this process is
            // the supervisor, unless told to run alone.
            let worker = config.no_supervisor || std::env::var_os("LISTEN_FDS").is_some();
            let result = match worker {
                true => fiddler_crab::run(*config).map(|()| 0),
                false => fiddler_crab::process::supervisor::supervise(&config),
            };
            match result {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(e) => {
                    eprintln!("fiddler-crab: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("fiddler-crab: {e}");
            ExitCode::from(2)
        }
    }
}

/// `fiddler-crab new NAME [--dir DIR] [--api PATH]`
fn new(args: &[String]) -> ExitCode {
    let mut name = None;
    let mut dir = PathBuf::from(".");
    let mut api = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = args.next().map(PathBuf::from).unwrap_or(dir),
            "--api" => api = args.next().map(PathBuf::from),
            other if name.is_none() && !other.starts_with('-') => name = Some(other.to_owned()),
            other => {
                eprintln!("fiddler-crab new: unexpected {other:?}; usage: fiddler-crab new NAME [--dir DIR] [--api PATH]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(name) = name else {
        eprintln!("usage: fiddler-crab new NAME [--dir DIR] [--api PATH]");
        return ExitCode::from(2);
    };
    match authoring::new_plugin(&name, &dir, api.as_deref()) {
        Ok(root) => {
            let me = std::env::current_exe()
                .map_or_else(|_| "fiddler-crab".to_owned(), |p| p.display().to_string());
            println!(
                "created {}: cd there, then `cargo test`, `cargo build --release`, \
                 `{me} check target/release/lib{name}.so`, and drop that .so into the server's \
                 plugins folder",
                root.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fiddler-crab new: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `fiddler-crab replay CRASHFILE PLUGIN.so [--in-process]`: exit 0 when the crash is
/// reproduced, 1 when the plugin answered, 2 when the replay could not run.
fn replay(args: &[String]) -> ExitCode {
    let in_process = args.iter().any(|a| a == "--in-process");
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [crash, plugin] = files.as_slice() else {
        eprintln!("usage: fiddler-crab replay CRASHFILE PLUGIN.so [--in-process]");
        return ExitCode::from(2);
    };
    let (report, outcome) =
        fiddler_crab::replay::replay(Path::new(crash), Path::new(plugin), in_process);
    print!("{report}");
    match outcome {
        fiddler_crab::replay::Outcome::Reproduced => ExitCode::SUCCESS,
        fiddler_crab::replay::Outcome::NotReproduced => ExitCode::FAILURE,
        fiddler_crab::replay::Outcome::Failed => ExitCode::from(2),
    }
}

/// `fiddler-crab check FILE [--verbose]`
fn check(args: &[String]) -> ExitCode {
    let verbose = args.iter().any(|a| a == "--verbose");
    let files: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [file] = files.as_slice() else {
        eprintln!("usage: fiddler-crab check FILE.so [--verbose]");
        return ExitCode::from(2);
    };
    let verdict = authoring::check(Path::new(file), verbose);
    print!("{}", verdict.text);
    if verdict.loads {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
