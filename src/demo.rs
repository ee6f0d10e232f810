//! `lbx demo`: the showcase.

use std::process::ExitCode;

use crate::cli::DemoArgs;

/// Runs the demo.
pub fn run(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("demo: not yet implemented")
}
