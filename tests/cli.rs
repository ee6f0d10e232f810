//! The command line as users meet it, through the real binary: bad flags are usage errors (exit 2)
//! that name what was wrong; help and version exit 0; no arguments prints help and exits 2.

mod common;

use std::process::Output;
use std::time::Duration;

use common::run_lbx;

fn run(args: &[&str]) -> Output {
    run_lbx(args, Duration::from_secs(20))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `lbx ARGS` must exit 2, print nothing on stdout, and mention every `needle` on stderr.
fn assert_usage_error(args: &[&str], needles: &[&str]) {
    let out = run(args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "lbx {args:?} should exit 2; stderr:\n{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "lbx {args:?} printed on stdout: {}",
        stdout(&out)
    );
    for needle in needles {
        assert!(
            err.contains(needle),
            "lbx {args:?}: stderr should mention {needle:?}:\n{err}"
        );
    }
}

#[test]
fn serve_rejects_bad_values() {
    assert_usage_error(&["serve", "-p", "70000"], &["'70000'", "--port"]);
    assert_usage_error(&["serve", "-p", "9003-9001x"], &["'9003-9001x'", "--port"]);
    assert_usage_error(&["serve", "--fail-rate", "2"], &["'2'", "--fail-rate"]);
    assert_usage_error(&["serve", "--host", "nothost"], &["'nothost'", "--host"]);
    assert_usage_error(&["serve", "--delay", "later"], &["'later'", "--delay"]);
    assert_usage_error(&["serve", "--workers", "0"], &["'0'", "--workers"]);
}

#[test]
fn balance_rejects_bad_values() {
    assert_usage_error(&["balance", "-b", ":abc"], &["':abc'", "--backend"]);
    assert_usage_error(&["balance", "-b", "ftp://x:1"], &["'ftp://x:1'", "ftp"]);
    assert_usage_error(&["balance", "-b", ":1,::1:80"], &["'::1:80'"]);
    assert_usage_error(
        &["balance", "--interval", "soon", "-b", ":1"],
        &["'soon'", "--interval"],
    );
    assert_usage_error(
        &["balance", "-b", ":1", "-p", "http"],
        &["'http'", "--port"],
    );
    assert_usage_error(
        &["balance", "-b", ":1", "--workers", "0"],
        &["'0'", "--workers"],
    );
}

#[test]
fn zero_where_zero_means_nothing_is_a_usage_error() {
    for flag in [
        "--interval",
        "--timeout",
        "--connect-timeout",
        "--response-timeout",
        "--header-timeout",
        "--idle-timeout",
        "--tunnel-timeout",
        "--dns-refresh",
    ] {
        assert_usage_error(&["balance", "-b", ":1", flag, "0s"], &["'0s'", flag]);
    }
    for flag in ["--rise", "--fall", "--max-connections"] {
        assert_usage_error(&["balance", "-b", ":1", flag, "0"], &["'0'", flag]);
    }
    for flag in ["--timeout", "--connect-timeout"] {
        assert_usage_error(&["check", flag, "0ms", ":1"], &["'0ms'", flag]);
    }
    for flag in ["--rise", "--fall"] {
        assert_usage_error(&["check", flag, "0", ":1"], &["'0'", flag]);
    }
    assert_usage_error(
        &[
            "serve",
            "--register",
            "etcd://127.0.0.1:1/x/",
            "--register-ttl",
            "0s",
        ],
        &["'0s'", "--register-ttl"],
    );
}

#[test]
fn absurd_values_are_usage_errors_not_crashes() {
    let cases: [(&[&str], &[&str]); 7] = [
        // Not a protocol name an Upgrade header could carry.
        (
            &["balance", "-b", ":1", "--allow-upgrade", "bad name"],
            &["'bad name'", "--allow-upgrade"],
        ),
        // Too long to add to a clock reading.
        (
            &["balance", "-b", ":1", "--header-timeout", "1000000h"],
            &["'1000000h'", "--header-timeout"],
        ),
        (
            &["check", "--timeout", "99999999999s", ":1"],
            &["'99999999999s'", "--timeout"],
        ),
        // A rate so low that the wait it implies overflows.
        (
            &["balance", "-b", ":1", "--rate-limit", "1e-300/s"],
            &["'1e-300/s'", "--rate-limit"],
        ),
        // Sizes that would exhaust memory before the first request.
        (
            &["bench", "-c", "1000000000", ":1"],
            &["'1000000000'", "--connections"],
        ),
        (
            &["bench", "--http2", "-p", "100000", ":1"],
            &["'100000'", "--streams"],
        ),
        (
            &["bench", "--threads", "100000", ":1"],
            &["'100000'", "--threads"],
        ),
    ];
    for (args, needles) in cases {
        assert_usage_error(args, needles);
    }
}

#[test]
fn balance_requires_a_backend() {
    assert_usage_error(&["balance"], &["--backend"]);
}

#[test]
fn check_rejects_bad_values() {
    assert_usage_error(&["check", "::1:80"], &["'::1:80'", "brackets"]);
    assert_usage_error(&["check", ":1", "host:"], &["'host:'"]);
    assert_usage_error(
        &["check", "--timeout", "soon", ":1"],
        &["'soon'", "--timeout"],
    );
}

#[test]
fn check_requires_a_target() {
    assert_usage_error(&["check"], &["<ADDR>"]);
}

#[test]
fn bench_rejects_bad_values() {
    assert_usage_error(&["bench", "-n", "lots", ":1"], &["'lots'", "--requests"]);
    assert_usage_error(&["bench", "-c", "0", ":1"], &["'0'", "--connections"]);
    assert_usage_error(
        &["bench", "-z", "forever", ":1"],
        &["'forever'", "--duration"],
    );
    assert_usage_error(&["bench", "-t", "never", ":1"], &["'never'", "--timeout"]);
}

#[test]
fn bench_requires_a_url() {
    assert_usage_error(&["bench"], &["<URL>"]);
}

#[test]
fn demo_rejects_bad_values() {
    assert_usage_error(&["demo", "-p", "x"], &["'x'", "--port"]);
}

#[test]
fn unknown_flags_are_usage_errors_everywhere() {
    for sub in ["serve", "balance", "check", "bench", "demo"] {
        assert_usage_error(&[sub, "--no-such-flag"], &["'--no-such-flag'"]);
    }
    assert_usage_error(&["--no-such-flag"], &["'--no-such-flag'"]);
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    assert_usage_error(&["balence"], &["'balence'"]);
}

#[test]
fn help_and_version_exit_0() {
    for flag in ["--help", "-h"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0), "lbx {flag}");
        let text = stdout(&out);
        for sub in ["serve", "balance", "check", "bench", "demo"] {
            assert!(text.contains(sub), "lbx {flag} should list {sub}:\n{text}");
        }
        let listed = |name: &str| text.lines().any(|l| l.trim_start().starts_with(name));
        assert!(!listed("generate "), "generate is hidden:\n{text}");
    }
    for flag in ["--version", "-V"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0), "lbx {flag}");
        assert_eq!(
            stdout(&out).trim(),
            format!("lbx {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn every_subcommand_has_help_and_version() {
    for sub in ["serve", "balance", "check", "bench", "demo"] {
        let out = run(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0), "lbx {sub} --help");
        assert!(
            stdout(&out).contains(&format!("Usage: lbx {sub}")),
            "lbx {sub} --help:\n{}",
            stdout(&out)
        );
        let out = run(&[sub, "--version"]);
        assert_eq!(out.status.code(), Some(0), "lbx {sub} --version");
        assert!(stdout(&out).contains(env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn no_arguments_prints_help_on_stderr_and_exits_2() {
    // clap's arg_required_else_help: the full help goes to stderr, as a usage error does.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("Usage: lbx <COMMAND>"), "{err}");
    assert!(err.contains("Commands:"), "{err}");
    assert!(err.contains("balance"), "{err}");
}
