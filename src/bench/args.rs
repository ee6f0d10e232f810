//! Value parsers for `lbx bench` flags: each error names the bad value (clap exits 2 with it).

use http::{HeaderName, HeaderValue, Method};

use crate::core::addr::{parse_url, Target};

/// A bench URL: where to connect and the path with query to request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// Where to connect.
    pub target: Target,
    /// Path with query, `/` at least.
    pub path: String,
}

/// The URL argument, by [`parse_url`]'s rules. Boxed to keep `BenchArgs` (and so the `Command`
/// enum) small.
pub fn url(s: &str) -> Result<Box<Url>, String> {
    let (target, path) = parse_url(s)?;
    Ok(Box::new(Url { target, path }))
}

/// `--rate`: requests per second, a finite number above zero.
pub fn per_second(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err(format!("'{s}' is not a rate above 0 (requests per second)")),
    }
}

/// `-m`: an HTTP method token (`GET`, `POST`, `PURGE`...), upper-cased.
pub fn method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("'{s}' is not an HTTP method"))
}

/// `--group-by`: a header name.
pub fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.trim().as_bytes())
        .map_err(|_| format!("'{s}' is not a valid header name"))
}

/// `-H`: `Name: value`.
pub fn header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("'{s}' is not a header (expected 'Name: value')"))?;
    let name = header_name(name).map_err(|e| format!("in '{s}': {e}"))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("'{s}': the header value has invalid characters"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_name_bad_values() {
        assert_eq!(per_second("200"), Ok(200.0));
        for bad in ["0", "-1", "nan", "inf", "fast"] {
            assert!(per_second(bad).unwrap_err().contains(bad), "{bad}");
        }
        assert_eq!(method("post"), Ok(Method::POST));
        assert!(method("GE T").unwrap_err().contains("GE T"));
        let (n, v) = header("X-Test:  a b ").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-test", "a b"));
        assert!(header("nocolon").unwrap_err().contains("nocolon"));
        assert!(header("bad name: v").unwrap_err().contains("bad name"));
    }
}
