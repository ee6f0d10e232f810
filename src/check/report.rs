//! How `lbx check` shows results: one [`Row`] per target and round, rendered as an aligned table
//! (coloured on a terminal), as JSON objects, or as timestamped state-change lines in watch mode.

use std::time::Duration;

use serde_json::{json, Value};

use super::cert::CertInfo;
use super::expect::Expect;
use crate::core::addr::Target;
use crate::core::prober::ProbeOutcome;
use crate::term;

/// One target's result in one round of probes.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was probed.
    pub target: Target,
    /// The full URL requested, for the report.
    pub url: String,
    /// What the shared prober saw.
    pub outcome: ProbeOutcome,
    /// `Ok` when healthy under the expectations, otherwise why not.
    pub verdict: Result<(), String>,
    /// The leaf certificate of an https target, when the handshake got that far.
    pub cert: Option<CertInfo>,
}

/// Durations of each phase of one probe, httpstat style: they add up to `total`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phases {
    /// Name resolution (zero for IP literals).
    pub dns: Duration,
    /// TCP connect.
    pub connect: Duration,
    /// TLS handshake (zero for http).
    pub tls: Duration,
    /// From the connection being ready to the response head (server processing).
    pub ttfb: Option<Duration>,
    /// From the response head to the end of the body.
    pub transfer: Option<Duration>,
    /// The whole probe.
    pub total: Duration,
}

impl Row {
    /// Judges `outcome` against `expect` and parses the certificate.
    pub fn new(target: Target, path: &str, outcome: ProbeOutcome, expect: &Expect) -> Row {
        let verdict = expect.judge(&outcome);
        let cert = outcome.peer_cert.as_deref().and_then(CertInfo::from_der);
        let url = format!("{}://{}{path}", target.scheme.as_str(), target.authority);
        Row {
            target,
            url,
            outcome,
            verdict,
            cert,
        }
    }

    /// True when the probe passed every expectation.
    pub fn healthy(&self) -> bool {
        self.verdict.is_ok()
    }

    /// Why the probe failed, if it did.
    pub fn reason(&self) -> Option<&str> {
        self.verdict.as_ref().err().map(String::as_str)
    }

    /// The probe's phase durations.
    pub fn phases(&self) -> Phases {
        let t = &self.outcome.timings;
        let dial = t.dns + t.connect + t.tls;
        let ttfb = self.outcome.ttfb.map(|f| f.saturating_sub(dial));
        let transfer = self
            .outcome
            .ttfb
            .map(|f| self.outcome.latency.saturating_sub(f));
        Phases {
            dns: t.dns,
            connect: t.connect,
            tls: t.tls,
            ttfb,
            transfer,
            total: self.outcome.latency,
        }
    }

    /// The JSON object for `--json`: address, healthy, status, latency_ms, timings and more.
    pub fn to_json(&self, warn_days: u32) -> Value {
        let p = self.phases();
        let error = self
            .outcome
            .error
            .as_ref()
            .map(|(kind, detail)| json!({ "kind": kind.as_str(), "detail": detail }));
        json!({
            "address": self.target.to_string(),
            "url": self.url,
            "healthy": self.healthy(),
            "status": self.outcome.status.map(|s| s.as_u16()),
            "http_version": self.outcome.version.map(version_name),
            "latency_ms": ms(p.total),
            "timings_ms": {
                "dns": ms(p.dns),
                "connect": ms(p.connect),
                "tls": ms(p.tls),
                "ttfb": p.ttfb.map(ms),
                "transfer": p.transfer.map(ms),
                "total": ms(p.total),
            },
            "reason": self.reason(),
            "error": error,
            "cert": self.cert.as_ref().map(|c| c.to_json(warn_days)),
        })
    }
}

/// An HTTP version as JSON shows it, as `lbx bench` does: `1.1`, `2`.
fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        _ => "3",
    }
}

/// Milliseconds with microsecond precision, for JSON.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A duration for the table: `0.4ms`, `12ms`, `1.25s`; `-` for a phase that did not happen.
pub fn short_duration(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d.is_zero() => "-".into(),
        Some(d) => {
            let ms = d.as_secs_f64() * 1e3;
            if ms < 10.0 {
                format!("{ms:.1}ms")
            } else if ms < 1000.0 {
                format!("{ms:.0}ms")
            } else {
                format!("{:.2}s", ms / 1e3)
            }
        }
    }
}

/// How a table cell is coloured (on a terminal without NO_COLOR).
#[derive(Clone, Copy)]
pub enum Paint {
    /// As is.
    Plain,
    /// Good news.
    Green,
    /// Bad news.
    Red,
    /// Worth a look.
    Yellow,
    /// Headers.
    Bold,
}

impl Paint {
    /// `s` in this paint.
    pub fn apply(self, s: &str) -> String {
        match self {
            Paint::Plain => s.to_string(),
            Paint::Green => term::green(s),
            Paint::Red => term::red(s),
            Paint::Yellow => term::yellow(s),
            Paint::Bold => term::bold(s),
        }
    }
}

/// Renders the rows as an aligned table, one line per target, a header line first when `header`.
/// Colours come from [`crate::term`], so they appear only on a terminal without NO_COLOR.
pub fn table(rows: &[Row], warn_days: u32, header: bool) -> Vec<String> {
    let with_cert = rows.iter().any(|r| r.target.is_tls());
    let mut heads = vec![
        "TARGET", "STATE", "STATUS", "DNS", "CONNECT", "TLS", "TTFB", "TOTAL",
    ];
    if with_cert {
        heads.push("CERT");
    }
    heads.push("NOTE");
    let mut grid: Vec<Vec<(String, Paint)>> = Vec::new();
    if header {
        grid.push(heads.iter().map(|h| (h.to_string(), Paint::Bold)).collect());
    }
    for r in rows {
        grid.push(cells(r, warn_days, with_cert));
    }
    align(&grid)
}

/// Lays out rows of cells in aligned columns, two spaces apart, trailing blanks trimmed.
pub fn align(grid: &[Vec<(String, Paint)>]) -> Vec<String> {
    let cols = grid.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            grid.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.0.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    grid.iter()
        .map(|row| {
            let mut line = String::new();
            for (c, (text, paint)) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                let pad = widths[c].saturating_sub(text.chars().count());
                line.push_str(&paint.apply(text));
                if c + 1 < cols {
                    line.push_str(&" ".repeat(pad));
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

fn cells(r: &Row, warn_days: u32, with_cert: bool) -> Vec<(String, Paint)> {
    let p = r.phases();
    let plain = |s: String| (s, Paint::Plain);
    let (state, paint) = if r.healthy() {
        ("healthy", Paint::Green)
    } else {
        ("unhealthy", Paint::Red)
    };
    let status = r
        .outcome
        .status
        .map_or("-".to_string(), |s| s.as_u16().to_string());
    let mut out = vec![
        plain(r.target.to_string()),
        (state.to_string(), paint),
        plain(status),
        plain(short_duration(Some(p.dns))),
        plain(short_duration(Some(p.connect))),
        plain(short_duration(Some(p.tls))),
        plain(short_duration(p.ttfb)),
        plain(short_duration(Some(p.total))),
    ];
    let expiring = r.cert.as_ref().filter(|c| c.expiring(warn_days));
    if with_cert {
        out.push(match (&r.cert, expiring) {
            (Some(c), Some(_)) => (c.short(), Paint::Yellow),
            (Some(c), None) => plain(c.short()),
            (None, _) => plain("-".into()),
        });
    }
    out.push(match (r.reason(), expiring) {
        (Some(reason), _) => (reason.to_string(), Paint::Red),
        (None, Some(c)) => (c.warning(), Paint::Yellow),
        (None, None) => plain(String::new()),
    });
    out
}

/// What a state change says about a row: the reason it failed, or its status and latency.
pub fn event_detail(r: &Row, warn_days: u32) -> String {
    let mut detail = match (r.reason(), r.outcome.status) {
        (Some(reason), _) => reason.to_string(),
        (None, Some(s)) => format!(
            "{} in {}",
            s.as_u16(),
            short_duration(Some(r.outcome.latency))
        ),
        (None, None) => String::new(),
    };
    if let Some(c) = r.cert.as_ref().filter(|c| c.expiring(warn_days)) {
        detail.push_str(&format!(" ({})", c.warning()));
    }
    detail
}

/// One watch-mode line: `TIME TARGET UP|DOWN detail`.
pub fn event_line(time: &str, r: &Row, up: bool, warn_days: u32) -> String {
    let word = if up {
        term::green("UP")
    } else {
        term::red("DOWN")
    };
    let detail = event_detail(r, warn_days);
    format!("{} {} {word} {detail}", term::dim(time), r.target)
        .trim_end()
        .to_string()
}

/// One watch-mode NDJSON object: the row plus `time` and `event` (`up` or `down`).
pub fn event_json(time: &str, r: &Row, up: bool, warn_days: u32) -> Value {
    let mut v = r.to_json(warn_days);
    if let Value::Object(m) = &mut v {
        m.insert("time".into(), json!(time));
        m.insert("event".into(), json!(if up { "up" } else { "down" }));
    }
    v
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::core::client::{DialTimings, ErrorKind};
    use bytes::Bytes;
    use http::StatusCode;

    /// A row for `:9001` with this status, or refused when `None`.
    pub(crate) fn row(status: Option<u16>) -> Row {
        let error = status.is_none().then_some(ErrorKind::ConnectionRefused);
        row_with(status, error)
    }

    fn row_with(status: Option<u16>, error: Option<ErrorKind>) -> Row {
        let outcome = ProbeOutcome {
            healthy: false,
            status: status.and_then(|s| StatusCode::from_u16(s).ok()),
            latency: Duration::from_millis(12),
            timings: DialTimings {
                dns: Duration::ZERO,
                connect: Duration::from_millis(1),
                tls: Duration::ZERO,
            },
            ttfb: status.map(|_| Duration::from_millis(10)),
            error: error.map(|k| (k, k.as_str().to_string())),
            body: Bytes::from_static(b"ok"),
            ..Default::default()
        };
        let target = Target::parse(":9001").unwrap();
        Row::new(target, "/healthcheck", outcome, &Expect::default())
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(None), "-");
        assert_eq!(short_duration(Some(Duration::ZERO)), "-");
        assert_eq!(short_duration(Some(Duration::from_micros(420))), "0.4ms");
        assert_eq!(short_duration(Some(Duration::from_millis(12))), "12ms");
        assert_eq!(short_duration(Some(Duration::from_millis(1250))), "1.25s");
    }

    #[test]
    fn phases_add_up() {
        let p = row(Some(200)).phases();
        assert_eq!(p.ttfb, Some(Duration::from_millis(9)));
        assert_eq!(p.transfer, Some(Duration::from_millis(2)));
        assert_eq!(p.connect + p.ttfb.unwrap() + p.transfer.unwrap(), p.total);
    }

    #[test]
    fn json_has_the_fields() {
        let v = row(Some(503)).to_json(14);
        assert_eq!(v["address"], "127.0.0.1:9001");
        assert_eq!(v["url"], "http://127.0.0.1:9001/healthcheck");
        assert_eq!(v["healthy"], false);
        assert_eq!(v["status"], 503);
        assert_eq!(v["latency_ms"], 12.0);
        assert_eq!(v["timings_ms"]["ttfb"], 9.0);
        assert_eq!(v["reason"], "status 503, expected 2xx");
        let v = row(None).to_json(14);
        assert_eq!(v["status"], Value::Null);
        assert_eq!(v["error"]["kind"], "connection refused");
    }

    #[test]
    fn table_aligns_columns() {
        let rows = [row(Some(200)), row(None)];
        let lines = table(&rows, 14, true);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("TARGET"));
        let col = |l: &str, w: &str| l.find(w).unwrap();
        assert_eq!(col(&lines[1], "healthy"), col(&lines[2], "unhealthy"));
        assert!(lines[2].ends_with("connection refused"));
        assert!(
            !lines[0].contains("CERT"),
            "no https target, no cert column"
        );
    }
}
