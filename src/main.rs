//! The `whitelist-audit` binary: parses the command line and runs it.

use std::process::ExitCode;

use clap::Parser;
use whitelist_audit::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // --help and --version are not errors; every bad flag is bad input.
            return if err.use_stderr() {
                ExitCode::from(cli::EXIT_BAD_INPUT)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    cli::run(cli).await
}
