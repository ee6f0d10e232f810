//! `lbx check`: probe targets from the command line.

use std::process::ExitCode;

use crate::cli::CheckArgs;

/// Probes every target at once and prints one line each.
pub fn run(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check: not yet implemented")
}
