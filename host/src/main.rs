//! The `fiddler-crab` binary: flags in, [`fiddler_crab::run`], exit code out.

use std::process::ExitCode;

use fiddler_crab::config::{self, Command};

fn main() -> ExitCode {
    let command = config::parse(std::env::args().skip(1), |name| std::env::var(name).ok());
    match command {
        Ok(Command::Help) => {
            print!("{}", config::help());
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(config)) => match fiddler_crab::run(*config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fiddler-crab: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("fiddler-crab: {e}");
            ExitCode::from(2)
        }
    }
}
