//! Operational logs through `tracing`: one subscriber for the process that writes lines as
//! `TIME LEVEL message key=value...` to stderr (the level coloured on a terminal), filtered by
//! `--log-level` or, without it, `RUST_LOG` (default `info`).

use std::fmt;

use owo_colors::{OwoColorize, Stream};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The filter used when neither `--log-level` nor `RUST_LOG` says otherwise.
pub const DEFAULT_FILTER: &str = "info";

/// Flag parser for `--log-level`: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or
/// `RUST_LOG`-style directives such as `debug,hyper=info` (lbx's own lines
/// all carry the target `lbx::term`, so per-module levels inside lbx do not select among them).
pub fn parse_filter(s: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    // A lone word is a target to EnvFilter; here it is meant as a level, so check it is one.
    let lone = !s.contains(['=', ',']);
    if lone && !LEVELS.contains(&s.trim().to_ascii_lowercase().as_str()) {
        return Err(format!("'{s}' is not one of {}", LEVELS.join(", ")));
    }
    EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("'{s}' is not a log level or filter: {e}"))
}

/// Installs the process's subscriber once; later calls change nothing. `level` (from
/// `--log-level`) wins over `RUST_LOG`; an unusable `RUST_LOG` falls back to the default.
pub fn init(level: Option<&str>) {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).ok(),
        None => EnvFilter::try_from_default_env().ok(),
    }
    .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(LineFormat)
        .try_init();
}

/// The level word as lbx prints it, coloured when stderr is a terminal without NO_COLOR.
pub fn level_tag(level: Level) -> String {
    match level {
        Level::ERROR => "ERROR"
            .if_supports_color(Stream::Stderr, |t| t.red())
            .to_string(),
        Level::WARN => "WARN"
            .if_supports_color(Stream::Stderr, |t| t.yellow())
            .to_string(),
        Level::INFO => "INFO"
            .if_supports_color(Stream::Stderr, |t| t.green())
            .to_string(),
        Level::DEBUG => "DEBUG"
            .if_supports_color(Stream::Stderr, |t| t.blue())
            .to_string(),
        Level::TRACE => "TRACE"
            .if_supports_color(Stream::Stderr, |t| t.dimmed())
            .to_string(),
    }
}

/// `TIME LEVEL message key=value...`, the line format lbx has always used.
struct LineFormat;

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        write!(w, "{} {} ", crate::term::timestamp(), level_tag(level))?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        assert!(parse_filter("debug").is_ok());
        assert!(parse_filter("info,lbx::balance=trace").is_ok());
        for bad in ["lbx=loud", "[{", "loud", ""] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
