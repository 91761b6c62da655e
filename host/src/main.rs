//! The `fiddler-crab` binary: flags in, the supervisor (or, in a worker, [`fiddler_crab::run`]),
//! exit code out.

use std::process::ExitCode;

use fiddler_crab::config::{self, Command};

fn main() -> ExitCode {
    let command = config::parse(std::env::args().skip(1), |name| std::env::var(name).ok());
    match command {
        Ok(Command::Help) => {
            print!("{}", config::help());
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(config)) => {
            // A worker is started with its listeners in LISTEN_FDS; otherwise this process is
            // the supervisor, unless told to run alone.
            let worker = config.no_supervisor || std::env::var_os("LISTEN_FDS").is_some();
            let result = match worker {
                true => fiddler_crab::run(*config).map(|()| 0),
                false => fiddler_crab::supervisor::supervise(&config),
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
