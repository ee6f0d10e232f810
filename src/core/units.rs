//! Human units in flags: durations (`500ms`, `2s`, `1m`), counts (`10k`) and sizes (`64k`).

use std::time::Duration;

/// Parses `500ms`, `2s`, `1.5s`, `1m`, `1h`, `250us`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (try 500ms, 2s, 1m)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "'{s}': unknown duration unit '{other}' (use ms, s, m, h)"
            ))
        }
    };
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("'{s}' is too long a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// [`parse_duration`] for settings where zero means nothing (timeouts, intervals): above 0.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("'{s}': the duration must be above 0")),
        d => Ok(d),
    }
}

/// Parses a count with an optional `k` (1e3) or `m` (1e6) suffix, e.g. `10k`.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1_000.0),
        Some('m') => (&t[..t.len() - 1], 1_000_000.0),
        _ => (&t[..], 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a count (try 500, 10k, 1m)"))?;
    if v.is_nan() || v < 0.0 || v * mult > 1e15 || (v * mult).fract() != 0.0 {
        return Err(format!("'{s}' is not a whole, non-negative count"));
    }
    Ok((v * mult) as u64)
}

/// Parses a byte size: `512`, `64k`, `10m`, `1g` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size (try 512, 64k, 10m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_positive_duration("0ms")
            .unwrap_err()
            .contains("'0ms'"));
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
        assert!(parse_duration("1000000h").is_err());
    }

    #[test]
    fn counts_and_sizes() {
        assert_eq!(parse_count("10k"), Ok(10_000));
        assert_eq!(parse_count("1m"), Ok(1_000_000));
        assert_eq!(parse_count("500"), Ok(500));
        assert!(parse_count("-1").is_err());
        assert!(parse_count("lots").is_err());
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert!(parse_size("big").is_err());
    }
}
