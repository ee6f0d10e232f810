//! README.md stays true to the code: its flag tables are rendered from the clap definition, and
//! its test command is the one `.ci/run` runs. `LBX_BLESS=1 cargo test --test readme` rewrites
//! the tables in place after a flag changes.

use std::fs;
use std::path::PathBuf;

use clap::{Arg, ArgAction, Command, CommandFactory};
use lbx::cli::Cli;

/// The test command the README tells newcomers to run, and CI runs.
const TEST_COMMAND: &str = "cargo test --all-targets";

const REFRESH: &str = "run `LBX_BLESS=1 cargo test --test readme` and commit README.md";

fn readme_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")
}

/// How a user writes the argument: `-b, --backend <ADDR>` or `<ADDR>...`.
fn synopsis(arg: &Arg) -> String {
    let values: Vec<String> = match arg.get_value_names() {
        Some(names) => names.iter().map(|n| format!("<{n}>")).collect(),
        None => vec![format!("<{}>", arg.get_id().as_str().to_uppercase())],
    };
    let takes_value = arg.get_action().takes_values();
    if arg.is_positional() {
        let many = matches!(arg.get_action(), ArgAction::Append);
        return format!("{}{}", values.join(" "), if many { "..." } else { "" });
    }
    let mut names = Vec::new();
    if let Some(s) = arg.get_short() {
        names.push(format!("-{s}"));
    }
    if let Some(l) = arg.get_long() {
        names.push(format!("--{l}"));
    }
    let mut out = names.join(", ");
    if takes_value {
        out.push(' ');
        out.push_str(&values.join(" "));
    }
    out
}

/// One Markdown row per visible argument of `cmd`, in definition order.
fn flag_table(cmd: &Command) -> String {
    let cell = |s: String| s.replace('|', "\\|");
    let mut out = String::from("| Flag | Default | Meaning |\n| --- | --- | --- |\n");
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = if !default.is_empty() {
            format!("`{}`", default.join(","))
        } else if arg.is_required_set() {
            "required".to_owned()
        } else {
            String::new()
        };
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            cell(synopsis(arg)),
            default,
            cell(help)
        ));
    }
    out
}

/// Replaces what lies between `<!-- flags:NAME -->` and the next `<!-- /flags -->`.
fn splice(readme: &str, name: &str, table: &str) -> Result<String, String> {
    let start = format!("<!-- flags:{name} -->\n");
    let end = "<!-- /flags -->";
    let from = readme
        .find(&start)
        .ok_or_else(|| format!("README.md has no `{}` marker", start.trim()))?
        + start.len();
    let to = from
        + readme[from..]
            .find(end)
            .ok_or_else(|| format!("README.md: `{}` is not closed by `{end}`", start.trim()))?;
    Ok(format!("{}{}{}", &readme[..from], table, &readme[to..]))
}

#[test]
fn flag_tables_match_the_cli() {
    let path = readme_path();
    let readme = fs::read_to_string(&path).expect("read README.md");
    let cli = Cli::command();
    let mut fresh = readme.clone();
    let mut stale = Vec::new();
    for sub in cli.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        let updated = splice(&fresh, name, &flag_table(sub)).unwrap_or_else(|e| panic!("{e}"));
        if updated != fresh {
            stale.push(name.to_owned());
        }
        fresh = updated;
    }
    if stale.is_empty() {
        return;
    }
    if std::env::var_os("LBX_BLESS").is_some() {
        fs::write(&path, fresh).expect("write README.md");
        return;
    }
    panic!(
        "README.md flag tables differ from src/cli.rs for: {}\n{REFRESH}",
        stale.join(", ")
    );
}

#[test]
fn readme_and_ci_run_the_same_tests() {
    let readme = fs::read_to_string(readme_path()).expect("read README.md");
    let ci = fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/run"))
        .expect("read .ci/run");
    let has_line = |text: &str| text.lines().any(|l| l.trim() == TEST_COMMAND);
    assert!(has_line(&readme), "README.md should show `{TEST_COMMAND}`");
    assert!(has_line(&ci), ".ci/run should run `{TEST_COMMAND}`");
}

#[test]
fn synopsis_reads_like_help() {
    let cli = Cli::command();
    let arg = |sub: &str, id: &str| {
        let sub = cli.find_subcommand(sub).expect("subcommand");
        synopsis(
            sub.get_arguments()
                .find(|a| a.get_id() == id)
                .expect("argument"),
        )
    };
    assert_eq!(arg("balance", "backends"), "-b, --backend <ADDR>");
    assert_eq!(arg("check", "targets"), "<ADDR>...");
    assert_eq!(arg("check", "json"), "--json");
}
