//! Example plugin `sortlines`: sorts the posted lines by running `sort` with
//! `plugin_api::Program`.
//!
//! Shows the safe way for a native plugin to call another program (the way to wrap `llama-cli`
//! or a Python model): arguments without a shell, the body on stdin, a deadline that kills the
//! program's whole process group, a cap on its output, stderr kept for the error answer.
//! `?reverse` sorts in reverse, `?numeric` by number. Corners cut: the locale is fixed to `C`.

use std::time::Duration;

use plugin_api::{export_plugin, Plugin, Program, Request, Response, RunError};

/// No state.
pub struct SortLines;

impl Plugin for SortLines {
    const DESCRIPTION: &'static str = "sorts the posted lines with sort(1); ?reverse ?numeric";
    // Each call runs its own sort(1).
    const MAX_LANES: usize = 64;
    const DEADLINE_MS: Option<u64> = Some(10_000);

    fn init() -> Result<Self, String> {
        Ok(SortLines)
    }

    fn handle(&self, request: Request) -> Response {
        let mut program = Program::new("sort")
            .env_clear()
            .env("LC_ALL", "C")
            .deadline(Duration::from_secs(5))
            .max_stdout(16 << 20);
        if request.query_param("reverse").is_some() {
            program = program.arg("-r");
        }
        if request.query_param("numeric").is_some() {
            program = program.arg("-n");
        }
        match program.stdin(request.body.into_vec()).run() {
            Ok(output) if output.status.success() => Response::text(
                String::from_utf8(output.stdout)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
            Ok(output) => Response::internal_error(format!(
                "sort failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )),
            Err(RunError::TimedOut { .. }) => {
                Response::internal_error("sort took too long\n").with_status(504)
            }
            Err(e) => Response::internal_error(format!("{e}\n")),
        }
    }
}

export_plugin!(SortLines);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_lines_and_honours_the_options() {
        let plugin = SortLines::init().expect("init");
        let sorted = plugin.handle(Request::new("POST", "/").with_body("b\nc\na\n"));
        assert_eq!(sorted.body_str(), Some("a\nb\nc\n"));
        let numeric =
            plugin.handle(Request::new("POST", "/?numeric&reverse").with_body("2\n10\n1\n"));
        assert_eq!(numeric.body_str(), Some("10\n2\n1\n"));
    }
}
