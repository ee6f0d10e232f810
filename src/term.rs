//! Terminal output: colours only on a terminal without NO_COLOR, timestamped log lines on stderr.

use std::io::{IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use owo_colors::{OwoColorize, Stream};

/// True when stdout is a terminal (progress bars, tables, colours).
pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

/// `text` in green on stdout when colours are on.
pub fn green(text: &str) -> String {
    text.if_supports_color(Stream::Stdout, |t| t.green())
        .to_string()
}

/// `text` in red on stdout when colours are on.
pub fn red(text: &str) -> String {
    text.if_supports_color(Stream::Stdout, |t| t.red())
        .to_string()
}

/// `text` in yellow on stdout when colours are on.
pub fn yellow(text: &str) -> String {
    text.if_supports_color(Stream::Stdout, |t| t.yellow())
        .to_string()
}

/// `text` in bold on stdout when colours are on.
pub fn bold(text: &str) -> String {
    text.if_supports_color(Stream::Stdout, |t| t.bold())
        .to_string()
}

/// `text` dimmed on stdout when colours are on.
pub fn dim(text: &str) -> String {
    text.if_supports_color(Stream::Stdout, |t| t.dimmed())
        .to_string()
}

/// The current UTC time as RFC 3339 with milliseconds, e.g. `2026-11-24T00:05:39.123Z`.
pub fn timestamp() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_unix(now.as_secs(), now.subsec_millis())
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC.
pub fn format_unix(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Log levels for operational lines.
#[derive(Clone, Copy, Debug)]
pub enum Level {
    /// Normal events.
    Info,
    /// Something went wrong but lbx carries on.
    Warn,
    /// A failure.
    Error,
}

/// Writes one timestamped log line to stderr, the level coloured when stderr is a terminal.
/// Goes through `tracing` (and so `--log-level` / `RUST_LOG`) once [`crate::logging::init`] has
/// installed the subscriber; before that, straight to stderr.
pub fn log(level: Level, msg: &str) {
    if tracing::dispatcher::has_been_set() {
        match level {
            Level::Info => tracing::info!("{msg}"),
            Level::Warn => tracing::warn!("{msg}"),
            Level::Error => tracing::error!("{msg}"),
        }
        return;
    }
    let level = match level {
        Level::Info => tracing::Level::INFO,
        Level::Warn => tracing::Level::WARN,
        Level::Error => tracing::Level::ERROR,
    };
    let tag = crate::logging::level_tag(level);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{} {tag} {msg}", timestamp());
}

/// [`log`] at info level.
pub fn info(msg: &str) {
    log(Level::Info, msg);
}

/// [`log`] at warn level.
pub fn warn(msg: &str) {
    log(Level::Warn, msg);
}

/// [`log`] at error level.
pub fn error(msg: &str) {
    log(Level::Error, msg);
}

/// `up`/`down` coloured for stderr log lines.
pub fn state_word(up: bool) -> String {
    if up {
        "UP".if_supports_color(Stream::Stderr, |t| t.green())
            .to_string()
    } else {
        "DOWN"
            .if_supports_color(Stream::Stderr, |t| t.red())
            .to_string()
    }
}

/// Prints a line to stdout, ignoring a closed pipe (`lbx ... | head` is not an error).
pub fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_time() {
        assert_eq!(super::format_unix(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::format_unix(1_795_480_000, 5),
            "2026-11-24T00:26:40.005Z"
        );
        assert_eq!(
            super::format_unix(951_782_400, 0),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
