//! `lbx balance`: the load balancer.

use std::process::ExitCode;

use crate::cli::BalanceArgs;

/// Runs the balancer until SIGINT/SIGTERM.
pub fn run(_args: BalanceArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("balance: not yet implemented")
}
