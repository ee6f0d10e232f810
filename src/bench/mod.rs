//! `lbx bench`: the load generator.

use std::process::ExitCode;

use crate::cli::BenchArgs;

/// Runs a benchmark and prints its report.
pub fn run(_args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("bench: not yet implemented")
}
