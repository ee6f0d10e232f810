//! Address parsing shared by every subcommand: `:9001`, `host:port`, `[::1]:9001`, `http://…`,
//! `https://…`, `h2c://…`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// How lbx talks to a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP/1.1.
    Http,
    /// HTTP over TLS (rustls): HTTP/2 or HTTP/1.1, as ALPN decides.
    Https,
    /// Plain HTTP/2 with prior knowledge (no upgrade, no TLS).
    H2c,
}

impl Scheme {
    /// The scheme as it appears in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::H2c => "h2c",
        }
    }

    /// The scheme a request URI carries (`h2c` is plain `http` on the wire).
    pub fn uri_scheme(self) -> http::uri::Scheme {
        match self {
            Scheme::Http | Scheme::H2c => http::uri::Scheme::HTTP,
            Scheme::Https => http::uri::Scheme::HTTPS,
        }
    }
}

/// A parsed target: the one address type used by `balance`, `check` and `bench`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Protocol to speak.
    pub scheme: Scheme,
    /// Host name or IP literal, without IPv6 brackets.
    pub host: String,
    /// TCP port, never 0.
    pub port: u16,
    /// The IP when `host` is a literal, so connecting needs no resolver.
    pub ip: Option<IpAddr>,
    /// `host:port` as sent in `Host` headers (IPv6 in brackets).
    pub authority: String,
}

impl Target {
    /// Parses one address as users write it. The error names the bad item.
    pub fn parse(input: &str) -> Result<Target, String> {
        let s = input.trim();
        if s.is_empty() {
            return Err("empty address".into());
        }
        let (scheme, rest) = match s.split_once("://") {
            Some((sch, rest)) => match sch.to_ascii_lowercase().as_str() {
                "http" => (Scheme::Http, rest),
                "https" => (Scheme::Https, rest),
                "h2c" => (Scheme::H2c, rest),
                other => {
                    return Err(format!(
                    "unsupported scheme '{other}' in '{input}' (use http://, https:// or h2c://)"
                ))
                }
            },
            None => (Scheme::Http, s),
        };
        // A trailing slash is tolerated; any other path is not an address.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(format!(
                "'{input}' has a path; give only [scheme://]host:port"
            ));
        }
        if rest.contains('@') {
            return Err(format!(
                "'{input}': credentials in addresses are not supported"
            ));
        }
        let (host, port) = split_host_port(rest).map_err(|e| format!("'{input}': {e}"))?;
        let port = match port {
            Some(p) => p,
            None if s.contains("://") => match scheme {
                Scheme::Http | Scheme::H2c => 80,
                Scheme::Https => 443,
            },
            None => {
                return Err(format!(
                    "'{input}': missing port (expected host:port or :port)"
                ))
            }
        };
        if port == 0 {
            return Err(format!("'{input}': port 0 is not a valid target port"));
        }
        let host = if host.is_empty() {
            Ipv4Addr::LOCALHOST.to_string()
        } else {
            host.to_string()
        };
        let ip = host.parse::<IpAddr>().ok();
        if ip.is_none() && !valid_hostname(&host) {
            return Err(format!(
                "'{input}': '{host}' is not a valid host name or IP address"
            ));
        }
        let authority = match ip {
            Some(IpAddr::V6(_)) => format!("[{host}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        Ok(Target {
            scheme,
            host,
            port,
            ip,
            authority,
        })
    }

    /// The socket address when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip.map(|ip| SocketAddr::new(ip, self.port))
    }

    /// True for `https://` targets.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// True for `h2c://` targets: HTTP/2 with prior knowledge over plain TCP.
    pub fn is_h2c(&self) -> bool {
        self.scheme == Scheme::H2c
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::Http => f.write_str(&self.authority),
            scheme => write!(f, "{}://{}", scheme.as_str(), self.authority),
        }
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse(s)
    }
}

/// A backend address with its weight, as `-b :9001=3` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedTarget {
    /// The address.
    pub target: Target,
    /// Its relative share, 1 when not given.
    pub weight: u32,
}

/// Largest weight accepted.
pub const MAX_WEIGHT: u32 = 1000;

/// Parses `ADDR` or `ADDR=WEIGHT` (weight 1 to 1000). [`Target::parse`] itself rejects `=`.
pub fn parse_weighted(input: &str) -> Result<WeightedTarget, String> {
    let (addr, weight) = match input.rsplit_once('=') {
        Some((addr, w)) => {
            let weight = w
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|w| (1..=MAX_WEIGHT).contains(w))
                .ok_or_else(|| {
                    format!("'{input}': weight '{w}' is not a whole number from 1 to {MAX_WEIGHT}")
                })?;
            (addr, weight)
        }
        None => (input, 1),
    };
    Ok(WeightedTarget {
        target: Target::parse(addr)?,
        weight,
    })
}

/// Splits `host:port`, `[v6]:port`, `:port` or a bare host.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in IPv6 address".to_string())?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("'{host}' is not an IPv6 address"));
        }
        return match after {
            "" => Ok((host, None)),
            p => match p.strip_prefix(':') {
                Some(p) => Ok((host, Some(parse_port(p)?))),
                None => Err(format!("unexpected '{p}' after IPv6 address")),
            },
        };
    }
    match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            Err("IPv6 addresses need brackets, e.g. [::1]:9001".into())
        }
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((s, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{p}' is not a port number"));
    }
    p.parse::<u16>()
        .map_err(|_| format!("port {p} is out of range (1-65535)"))
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
        })
}

/// Parses a listen port or an inclusive range like `9001-9003` (used by `serve -p`).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    let num = |p: &str| -> Result<u16, String> {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("'{s}' is not a port or a range like 9001-9003"))
    };
    let (lo, hi) = (num(a)?, num(b)?);
    if lo > hi {
        return Err(format!("'{s}': range start is above its end"));
    }
    if lo == 0 && hi != 0 {
        return Err(format!("'{s}': a range cannot start at port 0"));
    }
    if hi - lo >= 1024 {
        return Err(format!("'{s}': at most 1024 ports in one range"));
    }
    Ok((lo, hi))
}

/// Parses a listen host (`--host`): an IP literal, `localhost`, or `[v6]`.
pub fn parse_listen_host(s: &str) -> Result<IpAddr, String> {
    let t = s.trim().trim_start_matches('[').trim_end_matches(']');
    if t.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    t.parse::<IpAddr>()
        .map_err(|_| format!("'{s}' is not an IP address to listen on"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let t = Target::parse(":9001").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.scheme),
            ("127.0.0.1", 9001, Scheme::Http)
        );
        assert_eq!(t.to_string(), "127.0.0.1:9001");
        let t = Target::parse("[::1]:9001").unwrap();
        assert_eq!(t.authority, "[::1]:9001");
        assert!(t.ip.is_some());
        let t = Target::parse("https://example.com").unwrap();
        assert_eq!((t.port, t.is_tls()), (443, true));
        assert_eq!(t.to_string(), "https://example.com:443");
        let t = Target::parse("http://localhost:8080/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.ip), ("localhost", 8080, None));
        let t = Target::parse("H2C://:9001").unwrap();
        assert_eq!(
            (t.scheme, t.is_h2c(), t.is_tls()),
            (Scheme::H2c, true, false)
        );
        assert_eq!(t.to_string(), "h2c://127.0.0.1:9001");
        assert_eq!(t.scheme.uri_scheme(), http::uri::Scheme::HTTP);
        assert_eq!(Target::parse("h2c://example.com").unwrap().port, 80);
        assert_eq!(
            Target::parse(&t.to_string()).unwrap(),
            t,
            "Display parses back"
        );
    }

    #[test]
    fn errors_name_the_item() {
        for bad in [
            "",
            "9001",
            ":0",
            ":99999",
            "ftp://x:1",
            "::1:80",
            "a b:1",
            "h:/x",
            "x:1/path",
            "[::1",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(Target::parse(":abc").unwrap_err().contains("abc"));
        let e = Target::parse("h2://x:1").unwrap_err();
        assert!(e.contains("'h2'") && e.contains("h2c://"), "{e}");
    }

    #[test]
    fn weights() {
        let w = parse_weighted(":9001=3").unwrap();
        assert_eq!((w.target.port, w.weight), (9001, 3));
        assert_eq!(parse_weighted("http://h:80").unwrap().weight, 1);
        let w = parse_weighted("h2c://:9001=2").unwrap();
        assert_eq!((w.target.is_h2c(), w.weight), (true, 2));
        for bad in [":9001=0", ":9001=x", ":9001=", ":9001=1001", "=3"] {
            let e = parse_weighted(bad).unwrap_err();
            assert!(e.contains(bad.split('=').next().unwrap()), "{bad}: {e}");
        }
        assert!(Target::parse(":9001=3").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_port_range("9001-9003"), Ok((9001, 9003)));
        assert_eq!(parse_port_range("0"), Ok((0, 0)));
        assert!(parse_port_range("9003-9001").is_err());
        assert!(parse_port_range("x").is_err());
    }
}

/// Parses a URL that may carry a path and query (`:8080`, `:8080/api?x=1`, `http://h:p/path`)
/// into its target, by [`Target::parse`]'s rules, and the path with query (`/` when absent).
/// A fragment is dropped, as browsers do. The error names the bad URL.
pub fn parse_url(input: &str) -> Result<(Target, String), String> {
    let s = input.trim();
    let host_from = s.find("://").map_or(0, |i| i + 3);
    let (addr, path) = match s[host_from..].find(['/', '?', '#']) {
        Some(i) => s.split_at(host_from + i),
        None => (s, ""),
    };
    let target = Target::parse(addr).map_err(|e| {
        if addr == s {
            e
        } else {
            format!("bad URL '{input}': {e}")
        }
    })?;
    let path = path.split('#').next().unwrap_or_default();
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "bad URL '{input}': the path has spaces or control characters"
        ));
    }
    Ok((target, path))
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn urls_with_paths() {
        let (t, p) = parse_url(":8080").unwrap();
        assert_eq!((t.port, p.as_str()), (8080, "/"));
        let (t, p) = parse_url(":8080/api?x=1").unwrap();
        assert_eq!(
            (t.authority.as_str(), p.as_str()),
            ("127.0.0.1:8080", "/api?x=1")
        );
        let (t, p) = parse_url("https://example.com/a/b#frag").unwrap();
        assert_eq!((t.port, t.is_tls(), p.as_str()), (443, true, "/a/b"));
        let (_, p) = parse_url("http://[::1]:9001?q").unwrap();
        assert_eq!(p, "/?q");
        for bad in ["", "nope", ":0/x", "ftp://h:1/", ":80/a b"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(parse_url("x:99999/p").unwrap_err().contains("x:99999/p"));
    }
}
