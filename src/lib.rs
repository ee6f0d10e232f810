//! lbx: one binary that balances (`balance`), serves demo backends (`serve`), probes (`check`)
//! and generates load (`bench`), all over one shared core.

pub mod balance;
pub mod bench;
pub mod check;
pub mod cli;
pub mod core;
pub mod demo;
pub mod generate;
pub mod logging;
pub mod register;
pub mod serve;
pub mod term;

use std::process::ExitCode;

use cli::{Cli, Command};

/// Runs a parsed command line; the returned code is the process exit status.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `balance` sets up logging itself, once its config file has been read.
    if !matches!(cli.command, Command::Balance(_)) {
        logging::init(None);
    }
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Balance(a) => balance::run(*a),
        Command::Check(a) => check::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Generate(a) => generate::run(a),
    }
}

/// An error that is the user's: reported like clap's usage errors, exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for returning a [`UsageError`].
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}
