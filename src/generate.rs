//! Hidden `lbx generate`: shell completions and man pages, rendered from the clap definition in
//! `cli.rs` so they cannot drift from it (the committed copies are checked by `tests/generated.rs`).

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Command, CommandFactory};
use clap_complete::{Generator, Shell};

use crate::cli::{Cli, GenerateArgs, GenerateWhat};

/// The binary name completions are written for.
const BIN: &str = "lbx";

/// The shells completions are written for, in a fixed order.
pub const SHELLS: [Shell; 5] = [
    Shell::Bash,
    Shell::Zsh,
    Shell::Fish,
    Shell::Elvish,
    Shell::PowerShell,
];

/// Writes completions or man pages into a directory, creating it if missing.
pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let files = match args.what {
        GenerateWhat::Completions => completions(),
        GenerateWhat::Man => man_pages()?,
    };
    let dir = &args.dir;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, bytes) in &files {
        write(&dir.join(name), bytes)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One completion script per shell, as (file name, contents).
pub fn completions() -> Vec<(String, Vec<u8>)> {
    SHELLS
        .iter()
        .map(|&shell| {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut completion_command(), BIN, &mut buf);
            (shell.file_name(BIN), buf)
        })
        .collect()
}

/// The command line as completions should offer it: `Cli` without its hidden subcommands.
/// clap_complete walks hidden subcommands too (unlike clap_mangen), and `Command` cannot drop a
/// subcommand, so the root is re-assembled from `Cli`'s own arguments and visible subcommands.
fn completion_command() -> Command {
    let full = Cli::command();
    let visible = full.get_subcommands().filter(|s| !s.is_hide_set()).cloned();
    let mut root = Command::new(BIN)
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(full.is_propagate_version_set())
        .args(full.get_arguments().cloned())
        .subcommands(visible);
    if let Some(about) = full.get_about() {
        root = root.about(about.clone());
    }
    if let Some(long) = full.get_long_about() {
        root = root.long_about(long.clone());
    }
    root
}

/// `lbx.1` plus one page per visible subcommand, as (file name, contents). Hidden subcommands
/// (such as `generate` itself) get no page. No date is rendered, so output depends on the
/// clap definition and the crate version only.
pub fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut top = Cli::command().disable_help_subcommand(true);
    // Building fills in the subcommands' display names (`lbx-serve`), which name their pages.
    top.build();
    let source = format!("{BIN} {}", top.get_version().unwrap_or_default());
    let mut pages = vec![top.clone()];
    pages.extend(top.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    pages
        .into_iter()
        .map(|cmd| {
            // Every page's footer names the package, not the subcommand ("lbx 0.1.0").
            let man = clap_mangen::Man::new(cmd).source(&source);
            let mut buf = Vec::new();
            man.render(&mut buf)
                .with_context(|| format!("cannot render {}", man.get_filename()))?;
            Ok((man.get_filename(), buf))
        })
        .collect()
}

/// Writes one file, naming it in any error.
fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_files_have_the_conventional_names() {
        let names: Vec<String> = completions().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["lbx.bash", "_lbx", "lbx.fish", "lbx.elv", "_lbx.ps1"]
        );
    }

    #[test]
    fn completions_see_everything_but_hidden_subcommands() {
        let (full, shown) = (Cli::command(), completion_command());
        assert_eq!(shown.get_name(), full.get_name());
        assert_eq!(shown.get_version(), full.get_version());
        let ids = |c: &Command| {
            c.get_arguments()
                .map(|a| a.get_id().clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&shown), ids(&full));
        let subs = |c: &Command| {
            c.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| s.get_name().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(subs(&shown), subs(&full));
        assert!(shown.find_subcommand("generate").is_none());
        shown.debug_assert();
    }

    #[test]
    fn man_pages_cover_visible_subcommands_only() {
        let names: Vec<String> = man_pages().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "lbx.1",
                "lbx-serve.1",
                "lbx-balance.1",
                "lbx-check.1",
                "lbx-bench.1",
                "lbx-demo.1"
            ]
        );
    }

    #[test]
    fn output_is_deterministic() {
        assert_eq!(completions(), completions());
        assert_eq!(man_pages().unwrap(), man_pages().unwrap());
    }
}
