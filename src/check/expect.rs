//! What counts as healthy for `lbx check`: the accepted statuses (`200`, `2xx`, `200-399`, lists),
//! the body expectations, and the flag parsers for them, the method and `-H` headers.

use std::fmt;

use http::{HeaderName, HeaderValue, Method};

use crate::core::prober::ProbeOutcome;

/// A set of accepted status codes: a union of inclusive ranges, as written by the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet {
    ranges: Vec<(u16, u16)>,
    text: String,
}

impl StatusSet {
    /// Parses `200`, `2xx`, `200-399` or a comma list of these. The error names the bad item.
    pub fn parse(s: &str) -> Result<StatusSet, String> {
        let mut ranges = Vec::new();
        for item in s.split(',').map(str::trim) {
            let named = |e| match s.contains(',') {
                true => format!("'{item}' in '{s}': {e}"),
                false => format!("'{item}': {e}"),
            };
            ranges.push(parse_item(item).map_err(named)?);
        }
        Ok(StatusSet {
            ranges,
            text: s.split(',').map(str::trim).collect::<Vec<_>>().join(","),
        })
    }

    /// True when `code` is accepted.
    pub fn contains(&self, code: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&code))
    }
}

impl Default for StatusSet {
    /// Any 2xx, as the shared prober counts healthy.
    fn default() -> StatusSet {
        StatusSet {
            ranges: vec![(200, 299)],
            text: "2xx".into(),
        }
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_item(item: &str) -> Result<(u16, u16), String> {
    let code = |t: &str| -> Result<u16, String> {
        match t.trim().parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(c),
            _ => Err(format!("'{t}' is not a status code (100-599)")),
        }
    };
    if item.is_empty() {
        return Err("empty item (expected 200, 2xx or 200-399)".into());
    }
    let lower = item.to_ascii_lowercase();
    if let Some(class) = lower.strip_suffix("xx") {
        return match class.parse::<u16>() {
            Ok(c) if (1..=5).contains(&c) && class.len() == 1 => Ok((c * 100, c * 100 + 99)),
            _ => Err("a status class is 1xx to 5xx".into()),
        };
    }
    match item.split_once('-') {
        Some((a, b)) => {
            let (lo, hi) = (code(a)?, code(b)?);
            if lo > hi {
                return Err("range start is above its end".into());
            }
            Ok((lo, hi))
        }
        None => code(item).map(|c| (c, c)),
    }
}

/// The full healthy rule: a status in the set, then the body expectations.
#[derive(Clone, Debug, Default)]
pub struct Expect {
    /// Accepted statuses.
    pub status: StatusSet,
    /// Text the body must contain.
    pub body: Option<String>,
    /// Pattern the body must match.
    pub body_regex: Option<regex::Regex>,
}

impl Expect {
    /// Judges one probe: `Ok` when healthy, otherwise the reason it is not.
    pub fn judge(&self, out: &ProbeOutcome) -> Result<(), String> {
        if let Some((kind, detail)) = &out.error {
            return Err(error_text(kind.as_str(), detail));
        }
        let Some(status) = out.status else {
            return Err("no answer".into());
        };
        if !self.status.contains(status.as_u16()) {
            return Err(format!(
                "status {}, expected {}",
                status.as_u16(),
                self.status
            ));
        }
        let body = String::from_utf8_lossy(&out.body);
        if let Some(text) = &self.body {
            if !body.contains(text.as_str()) {
                return Err(format!("body does not contain {text:?}"));
            }
        }
        if let Some(re) = &self.body_regex {
            if !re.is_match(&body) {
                return Err(format!("body does not match /{re}/"));
            }
        }
        Ok(())
    }
}

/// `kind: detail`, saying the kind once: `connection refused`, not
/// `connection refused: Connection refused (os error 111)`.
fn error_text(kind: &str, detail: &str) -> String {
    let rest = detail
        .strip_prefix(kind)
        .map_or(detail, |r| r.trim_start_matches(": "));
    let bare = match rest.rfind(" (os error ") {
        Some(i) if rest.ends_with(')') => &rest[..i],
        _ => rest,
    };
    if bare.is_empty() || bare.eq_ignore_ascii_case(kind) {
        kind.to_string()
    } else {
        format!("{kind}: {rest}")
    }
}

/// Flag parser for `--expect-status`.
pub fn parse_status_set(s: &str) -> Result<StatusSet, String> {
    StatusSet::parse(s)
}

/// Flag parser for `-m/--method`: any HTTP token, upper-cased (`get` means GET).
pub fn parse_method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("'{s}' is not an HTTP method"))
}

/// Flag parser for `-H 'Name: value'`.
pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not a header (expected 'Name: value')"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("'{}' is not a header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of header '{name}' has characters not allowed"))?;
    Ok((name, value))
}

/// Flag parser for `--expect-body-regex`.
pub fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| format!("'{s}' is not a regular expression: {e}"))
}

/// Flag parser for `--path`: an absolute path with an optional query.
pub fn parse_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("'{s}' is not a path (it must start with /)"));
    }
    s.parse::<http::uri::PathAndQuery>()
        .map(|p| p.as_str().to_string())
        .map_err(|_| format!("'{s}' is not a valid path"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    fn outcome(status: u16, body: &'static str) -> ProbeOutcome {
        ProbeOutcome {
            status: StatusCode::from_u16(status).ok(),
            body: Bytes::from_static(body.as_bytes()),
            ..Default::default()
        }
    }

    #[test]
    fn status_sets() {
        let s = StatusSet::parse("200").unwrap();
        assert!(s.contains(200) && !s.contains(201));
        let s = StatusSet::parse("2xx").unwrap();
        assert!(s.contains(200) && s.contains(299) && !s.contains(300));
        let s = StatusSet::parse("200-399").unwrap();
        assert!(s.contains(302) && !s.contains(404));
        let s = StatusSet::parse("204, 3XX,418").unwrap();
        assert!(s.contains(204) && s.contains(301) && s.contains(418) && !s.contains(200));
        assert_eq!(s.to_string(), "204,3XX,418");
        assert!(StatusSet::default().contains(204));
    }

    #[test]
    fn bad_status_sets_name_the_item() {
        for (bad, item) in [
            ("abc", "abc"),
            ("200,", "''"),
            ("6xx", "6xx"),
            ("22xx", "22xx"),
            ("399-200", "399-200"),
            ("99", "99"),
            ("200-700", "700"),
        ] {
            let e = StatusSet::parse(bad).unwrap_err();
            assert!(e.contains(item), "{bad}: {e}");
        }
    }

    #[test]
    fn judges_status_then_body() {
        let e = Expect::default();
        assert!(e.judge(&outcome(200, "ok")).is_ok());
        assert_eq!(
            e.judge(&outcome(503, "")).unwrap_err(),
            "status 503, expected 2xx"
        );
        let e = Expect {
            status: StatusSet::parse("503").unwrap(),
            body: Some("fail".into()),
            body_regex: Some(parse_regex("^fa.*g$").unwrap()),
        };
        assert!(e.judge(&outcome(503, "failing")).is_ok());
        assert!(e
            .judge(&outcome(503, "ok"))
            .unwrap_err()
            .contains("\"fail\""));
        let mut o = outcome(200, "");
        o.status = None;
        o.error = Some((
            crate::core::client::ErrorKind::ConnectionRefused,
            "connection refused: Connection refused (os error 111)".into(),
        ));
        assert_eq!(e.judge(&o).unwrap_err(), "connection refused");
        assert_eq!(error_text("tls", "tls: bad cert"), "tls: bad cert");
        assert_eq!(error_text("dns", "x: unknown"), "dns: x: unknown");
    }

    #[test]
    fn flag_parsers() {
        assert_eq!(parse_method("post").unwrap(), Method::POST);
        assert!(parse_method("GE T").is_err());
        let (n, v) = parse_header("X-Token:  abc ").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-token", "abc"));
        assert!(parse_header("nocolon").unwrap_err().contains("nocolon"));
        assert!(parse_header("bad name: x").is_err());
        assert_eq!(parse_path("/h?x=1").unwrap(), "/h?x=1");
        assert!(parse_path("h").is_err());
        assert!(parse_regex("(").is_err());
    }
}
