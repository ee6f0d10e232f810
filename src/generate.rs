//! Hidden `lbx generate`: completions and man pages from the clap definition.

use std::process::ExitCode;

use crate::cli::GenerateArgs;

/// Writes completions or man pages into a directory.
pub fn run(_args: GenerateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("generate: not yet implemented")
}
