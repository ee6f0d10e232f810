//! Entry point: parse the command line, run it, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = lbx::cli::Cli::parse();
    match lbx::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("lbx: {err:#}");
            if err.downcast_ref::<lbx::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
