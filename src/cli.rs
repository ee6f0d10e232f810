//! The whole command-line interface: one clap definition that main, the completions and the man
//! pages are all generated from.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::balance::discovery::{BackendSpec, SourceSpec};
use crate::core::addr::{parse_listen_host, parse_port_range, Target};
use crate::core::select::hash::HashKey;
use crate::core::select::Algorithm;
use crate::core::units::{parse_count, parse_duration, parse_positive_duration, parse_size};

/// lbx: an HTTP load balancer, demo backend, health probe and load generator in one binary.
#[derive(Parser, Debug)]
#[command(
    name = "lbx",
    version,
    about = "HTTP load balancer, demo backend, health probe and load generator",
    long_about = "lbx balances HTTP traffic over backends with health checks (balance), runs demo \
                  backends with fault knobs (serve), probes services from scripts (check) and \
                  generates load with latency percentiles (bench).\n\n\
                  Addresses everywhere take the same forms: :9001 (127.0.0.1:9001), host:port, \
                  [::1]:9001, http://host:port, https://host:port, h2c://host:port (HTTP/2 with \
                  prior knowledge). Durations take 500ms, 2s, 1m.",
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// lbx's subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run demo backends: GET / answers with the server id; fault knobs for demos and tests.
    Serve(ServeArgs),
    /// Load-balance HTTP over backends, with health checks.
    Balance(Box<BalanceArgs>),
    /// Probe backends' health endpoints; exit 0 when all are healthy.
    #[command(
        after_help = "Exit status: 0 all healthy, 1 any unhealthy or unreachable, 2 usage error."
    )]
    Check(CheckArgs),
    /// Generate HTTP load and report latency percentiles and the spread over backends.
    #[command(
        after_help = "Exit status: 0 the run completed, 1 every request failed (or any failed with \
                      --fail-on-error), 2 usage error."
    )]
    Bench(BenchArgs),
    /// Show lbx in one command: three backends, a balancer, load, a failure and a recovery.
    Demo(DemoArgs),
    /// Write shell completions and man pages (used to refresh completions/ and man/).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

fn target(s: &str) -> Result<Target, String> {
    Target::parse(s)
}

fn backend(s: &str) -> Result<BackendSpec, String> {
    crate::balance::discovery::parse_backend(s)
}

pub(crate) fn discover(s: &str) -> Result<SourceSpec, String> {
    match crate::balance::discovery::parse_source(s)? {
        e @ SourceSpec::Etcd(_) => Ok(e),
        _ => Err(format!(
            "'{s}': give DNS names as backends (-b or backends in the config file: dns://NAME:PORT, srv://NAME)"
        )),
    }
}

fn etcd_url(s: &str) -> Result<crate::core::etcd::EtcdUrl, String> {
    crate::core::etcd::EtcdUrl::parse(s)
}

/// A DNS server: an IP, with `:PORT` when not 53.
pub(crate) fn dns_server(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(ip) = t
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, 53));
    }
    t.parse::<SocketAddr>()
        .map_err(|_| format!("'{s}' is not a DNS server address (IP or IP:PORT)"))
}

fn hash_key(s: &str) -> Result<HashKey, String> {
    HashKey::parse(s)
}

fn cidr(s: &str) -> Result<crate::balance::trust::Cidr, String> {
    crate::balance::trust::Cidr::parse(s)
}

fn size(s: &str) -> Result<u64, String> {
    parse_size(s)
}

/// Parses a request rate: `100/s`, `6000/m` or a bare `100` (per second).
pub(crate) fn per_second(s: &str) -> Result<f64, String> {
    let (num, per) = match s.trim().split_once('/') {
        Some((n, "s")) => (n, 1.0),
        Some((n, "m")) => (n, 60.0),
        Some(_) => return Err(format!("'{s}' is not a rate (try 100/s or 6000/m)")),
        None => (s.trim(), 1.0),
    };
    // Below one request in 1000 s the wait a client is told (Retry-After) stops making sense.
    match num.trim().parse::<f64>().map(|v| v / per) {
        Ok(v) if v.is_finite() && (1e-3..=1e9).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{s}' is not a rate from 0.001/s to 1000000000/s (try 100/s or 6000/m)"
        )),
    }
}

/// An upgrade protocol name as the `Upgrade` header carries it (an RFC 9110 token, optionally
/// `/version`), e.g. `foo` or `foo/2`.
pub(crate) fn upgrade_name(s: &str) -> Result<String, String> {
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let ok = match s.split_once('/') {
        Some((name, version)) => token(name) && token(version),
        None => token(s),
    };
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not an upgrade protocol name (a token such as foo or foo/2)"
        ))
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// A duration above 0: timeouts and intervals, where 0 means nothing.
pub(crate) fn positive_duration(s: &str) -> Result<Duration, String> {
    parse_positive_duration(s)
}

/// `--register-ttl`: etcd leases count whole seconds.
fn lease_ttl(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < Duration::from_secs(1) => Err(format!("'{s}': a lease lasts at least 1s")),
        d => Ok(d),
    }
}

fn count(s: &str) -> Result<u64, String> {
    parse_count(s)
}

fn host(s: &str) -> Result<IpAddr, String> {
    parse_listen_host(s)
}

/// An address to listen on, in the shared syntax (`:9900` is 127.0.0.1:9900); the host must
/// be an IP. Port 0 picks a free port (targets reject it, listeners may use it).
pub fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    let (parsed, zero) = match s.trim().strip_suffix(":0") {
        Some(head) => (Target::parse(&format!("{head}:1")), true),
        None => (Target::parse(s), false),
    };
    let t = parsed?;
    if t.scheme != crate::core::addr::Scheme::Http {
        return Err(format!("'{s}': the admin API serves plain HTTP"));
    }
    let addr = t
        .socket_addr()
        .ok_or_else(|| format!("'{s}': listen on an IP address, not a host name"))?;
    Ok(if zero {
        SocketAddr::new(addr.ip(), 0)
    } else {
        addr
    })
}

fn ports(s: &str) -> Result<(u16, u16), String> {
    parse_port_range(s)
}

fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a share between 0 and 1")),
    }
}

/// A whole number above 0 (counts and thresholds where 0 means nothing).
pub(crate) fn positive<T: std::str::FromStr + PartialOrd + Default>(s: &str) -> Result<T, String> {
    match s.trim().parse::<T>() {
        Ok(v) if v > T::default() => Ok(v),
        _ => Err(format!("'{s}' is not a whole number above 0")),
    }
}

/// A whole number from 1 to `MAX` (bench sizes, each a task or a thread of its own).
fn up_to<const MAX: usize>(s: &str) -> Result<usize, String> {
    match positive::<usize>(s)? {
        v if v > MAX => Err(format!("'{s}' is more than {MAX}")),
        v => Ok(v),
    }
}

/// Options for `lbx serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Server id reported by GET / and the x-server-id header; counts up over a port range.
    #[arg(long, default_value_t = 1)]
    pub id: u32,
    /// Port, or a range like 9001-9003 for one server per port; 0 picks a free port.
    #[arg(short, long, value_name = "PORT[-PORT]", default_value = "9001", value_parser = ports)]
    pub port: (u16, u16),
    /// Address to listen on.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1", value_parser = host)]
    pub host: IpAddr,
    /// Delay added to every response, e.g. 20ms.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub delay: Option<Duration>,
    /// Share of GET / requests answered 500, from 0 to 1.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0, value_parser = rate)]
    pub fail_rate: f64,
    /// Worker threads (default: available cores).
    #[arg(long, value_name = "N", value_parser = positive::<usize>)]
    pub workers: Option<usize>,
    /// Serve HTTPS with this certificate chain (PEM); ALPN offers h2 and http/1.1.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Concurrent HTTP/2 streams allowed per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,
    // Registration: kept together at the end.
    /// Register each listener in etcd under this key prefix, e.g.
    /// etcd://127.0.0.1:2379/lbx/backends/, on a lease kept alive while running; the key is
    /// deleted at shutdown and expires with the lease if the process dies.
    #[arg(long, value_name = "URL", value_parser = etcd_url)]
    pub register: Option<crate::core::etcd::EtcdUrl>,
    /// Lease time-to-live for --register: how long a dead server stays registered.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = lease_ttl, requires = "register")]
    pub register_ttl: Duration,
}

/// Options for `lbx balance`.
#[derive(Args, Debug, Clone)]
pub struct BalanceArgs {
    /// Backends, comma-separated or repeated: -b :9001,:9002 -b host:9003; `:9001=3` gives a
    /// weight (weighted and least-conn use it). h2c://HOST:PORT speaks HTTP/2 with prior
    /// knowledge, https:// HTTP/2 or HTTP/1.1 by ALPN. dns://NAME:PORT (A/AAAA) and
    /// srv://_http._tcp.NAME (SRV) are re-resolved every --dns-refresh; dns://h2c://NAME:PORT
    /// finds h2c backends.
    #[arg(short, long = "backend", value_name = "ADDR", value_delimiter = ',', required_unless_present_any = ["config", "discover"], value_parser = backend)]
    pub backends: Vec<BackendSpec>,
    /// Port to listen on; 0 picks a free port.
    #[arg(short, long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0", value_parser = host)]
    pub host: IpAddr,
    /// Time between health checks.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = positive_duration)]
    pub interval: Duration,
    /// Health check timeout.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Health check path.
    #[arg(long, value_name = "PATH", default_value = "/healthcheck")]
    pub health_path: String,
    /// Successful checks in a row before a down backend takes traffic again.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = positive::<u32>)]
    pub rise: u32,
    /// Failed checks in a row before a backend is taken out.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = positive::<u32>)]
    pub fall: u32,
    /// Time to connect to a backend.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = positive_duration)]
    pub connect_timeout: Duration,
    /// At shutdown, how long in-flight requests may take to finish.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub grace: Duration,
    /// Worker threads, each with its own listener and backend connections (default: cores).
    #[arg(long, value_name = "N", value_parser = positive::<usize>)]
    pub workers: Option<usize>,
    /// How requests are spread over backends.
    #[arg(long, value_name = "NAME", value_enum, default_value_t = Algorithm::RoundRobin)]
    pub algorithm: Algorithm,
    /// What `--algorithm hash` hashes: ip, header:NAME or cookie:NAME.
    #[arg(long, value_name = "KEY", default_value = "ip", value_parser = hash_key)]
    pub hash_key: HashKey,
    /// Failed requests in a row (connect errors, timeouts, 5xx) that eject a backend for 30s,
    /// doubling with each ejection up to 5m; 0 turns passive health checking off.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub eject_after: u32,
    /// Time over which a backend coming back ramps up to its full share; 0 is off.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration)]
    pub slow_start: Duration,
    /// Times a failed idempotent request is retried on another backend (within a budget of 20%
    /// of requests plus 10/s).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retries: u32,
    /// Time a backend has to send its response head (beyond it the client gets 504), and the
    /// longest pause within its response body (beyond it the response is cut short).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    pub response_timeout: Duration,
    /// Time a client has to send its first request head on a new connection (slowloris).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    pub header_timeout: Duration,
    /// Time a client keep-alive connection may sit idle before the next request head.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    pub idle_timeout: Duration,
    /// Client connections open at once; beyond it new ones wait in the accept queue.
    #[arg(long, value_name = "N", value_parser = positive::<usize>)]
    pub max_connections: Option<usize>,
    /// Largest request body, e.g. 64k or 10m; beyond it the client gets 413.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_body: Option<u64>,
    /// Requests per second per client IP (token bucket, per worker thread), e.g. 100/s; beyond
    /// it the client gets 429 with Retry-After.
    #[arg(long, value_name = "N/s", value_parser = per_second)]
    pub rate_limit: Option<f64>,
    /// Proxies whose X-Forwarded-For is believed for --hash-key ip and --rate-limit, as
    /// addresses or blocks (10.0.0.0/8,192.0.2.7); by default the socket peer is the client.
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = cidr)]
    pub trusted_proxies: Vec<crate::balance::trust::Cidr>,
    // Operations (admin API, config file, access log): kept together at the end.
    /// Read settings from this TOML file (flags given on the command line override it); SIGHUP
    /// or POST /reload re-reads it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve the admin API (backends, metrics, healthz, reload) on this address; :9900 means
    /// 127.0.0.1:9900.
    #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
    pub admin: Option<SocketAddr>,
    /// Bearer token the admin API requires.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LBX_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Write one line per request to PATH, or to stdout when no PATH is given.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "-")]
    pub access_log: Option<PathBuf>,
    /// Access log line format.
    #[arg(long, value_name = "FORMAT", value_enum, default_value = "text")]
    pub access_log_format: crate::balance::access_log::LogFormat,
    /// Operational log level (error, warn, info, debug, trace, off) or RUST_LOG-style filter;
    /// overrides RUST_LOG [default: info].
    #[arg(long, value_name = "LEVEL", value_parser = crate::logging::parse_filter)]
    pub log_level: Option<String>,
    // Protocols (TLS termination, upgrades): kept together at the end.
    /// Certificate chain (PEM) to terminate TLS with; repeat with --tls-key for several
    /// certificates, chosen by SNI (the first is the default). Re-read on reload.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Vec<PathBuf>,
    /// Private key (PEM) of the --tls-cert given in the same position.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Vec<PathBuf>,
    /// Serve TLS on this port beside the plain one on --port (without it, --port serves TLS
    /// when certificates are given); 0 picks a free port.
    #[arg(long, value_name = "PORT")]
    pub tls_port: Option<u16>,
    /// Time a WebSocket (or other upgraded) tunnel may pass no bytes either way before it is
    /// closed.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = positive_duration)]
    pub tunnel_timeout: Duration,
    /// Also tunnel this upgrade protocol besides websocket (repeatable); other upgrade requests
    /// are refused.
    #[arg(long, value_name = "NAME", value_parser = upgrade_name)]
    pub allow_upgrade: Vec<String>,
    /// Also trust the CA certificates in this PEM file when verifying https:// backends (and
    /// their health checks).
    #[arg(long, value_name = "FILE", conflicts_with = "backend_insecure")]
    pub backend_cacert: Option<PathBuf>,
    /// Do not verify the certificates of https:// backends.
    #[arg(long)]
    pub backend_insecure: bool,
    // Discovery (DNS and etcd): kept together at the end.
    /// Follow the backends under an etcd key prefix (repeatable), e.g.
    /// etcd://127.0.0.1:2379/lbx/backends/; each key's value is {"address": ":9001", "weight": 1}.
    #[arg(long, value_name = "URL", value_parser = discover)]
    pub discover: Vec<SourceSpec>,
    /// Longest time between two lookups of a dns:// or srv:// backend (sooner when the record's
    /// TTL is shorter, at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    pub dns_refresh: Duration,
    /// DNS server for dns:// and srv:// backends, IP or IP:PORT [default: the system's resolver].
    #[arg(long, value_name = "ADDR", value_parser = dns_server)]
    pub dns_server: Option<SocketAddr>,
}

/// Options for `lbx check`.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = "Examples:\n  \
    lbx check :9001 :9002                       probe two local backends at once\n  \
    lbx check https://api.example.com --path /ready --expect-status 200,204\n  \
    lbx check :8080 --wait-healthy --timeout 30s && ./run-tests\n  \
    lbx check :9001 :9002 --watch 1s            print UP/DOWN changes until Ctrl-C\n  \
    lbx check :9001 --json | jq '.[0].timings_ms'\n  \
    lbx check --admin :9900                     the pool as a running balancer sees it\n\n\
    Timings are phases that add up to the total: DNS, TCP connect, TLS handshake, TTFB (request \
    sent to response head) and transfer (the body; JSON only).\n\n\
    Exit status: 0 all healthy, 1 any unhealthy or unreachable, 2 usage error.")]
pub struct CheckArgs {
    /// Targets to probe, all at once.
    #[arg(value_name = "ADDR", required_unless_present = "admin", value_parser = target)]
    pub targets: Vec<Target>,
    /// Path (and query) to request.
    #[arg(long, value_name = "PATH", default_value = "/healthcheck", value_parser = crate::check::expect::parse_path)]
    pub path: String,
    /// HTTP method.
    #[arg(short, long, value_name = "METHOD", default_value = "GET", value_parser = crate::check::expect::parse_method)]
    pub method: http::Method,
    /// Request header 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = crate::check::expect::parse_header)]
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Statuses that count as healthy: 200, 2xx, 200-399, or a comma list of these.
    #[arg(long, value_name = "CODES", default_value = "2xx", value_parser = crate::check::expect::parse_status_set)]
    pub expect_status: crate::check::expect::StatusSet,
    /// Text the response body must contain (its first 64 KiB are read).
    #[arg(long, value_name = "TEXT")]
    pub expect_body: Option<String>,
    /// Regular expression the response body must match (its first 64 KiB are read).
    #[arg(long, value_name = "REGEX", value_parser = crate::check::expect::parse_regex)]
    pub expect_body_regex: Option<regex::Regex>,
    /// Time allowed for each probe, connect included [default: 2s]. With --wait-healthy: the
    /// whole wait [default: 30s], each probe then getting at most 2s.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub timeout: Option<Duration>,
    /// Time allowed to connect: DNS, TCP and TLS [default: the probe timeout].
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub connect_timeout: Option<Duration>,
    /// Do not verify TLS certificates.
    #[arg(short = 'k', long, conflicts_with = "cacert")]
    pub insecure: bool,
    /// Also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Warn when a certificate expires within this many days.
    #[arg(long, value_name = "DAYS", default_value_t = 14)]
    pub cert_warn_days: u32,
    /// Re-probe every INTERVAL [default: 2s] until Ctrl-C, printing only state changes with
    /// timestamps (NDJSON with --json). Exit status then reflects the last state.
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s",
          value_parser = crate::check::parse_watch_interval, conflicts_with = "wait_healthy")]
    pub watch: Option<Duration>,
    /// Re-probe twice a second until every target is healthy (exit 0) or --timeout runs out
    /// (exit 1). State changes are logged to stderr, the last round printed as usual.
    #[arg(long)]
    pub wait_healthy: bool,
    /// Successful probes in a row before a down target counts as up (--watch, --wait-healthy).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = positive::<u32>)]
    pub rise: u32,
    /// Failed probes in a row before an up target counts as down (--watch, --wait-healthy).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = positive::<u32>)]
    pub fall: u32,
    /// Print JSON: an array of objects, one per target (NDJSON events with --watch).
    #[arg(long)]
    pub json: bool,
    /// Show the pool as a balancer's admin API at ADDR sees it, instead of probing targets.
    #[arg(long, value_name = "ADDR", value_parser = target, conflicts_with_all = ["targets", "watch", "wait_healthy"])]
    pub admin: Option<Target>,
    /// Bearer token for --admin.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LBX_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
}

/// Options for `lbx bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Target URL: an address as elsewhere, optionally with a path (http://host:port/path?q);
    /// h2c://host:port speaks HTTP/2 with prior knowledge, as --http2 does.
    #[arg(value_name = "URL", value_parser = crate::bench::args::url)]
    pub url: Box<crate::bench::args::Url>,
    /// Number of requests (accepts 10k, 1m); default 200 when no --duration is given.
    #[arg(short = 'n', long = "requests", value_name = "N", value_parser = count)]
    pub requests: Option<u64>,
    /// Connections (concurrent requests).
    #[arg(short = 'c', long = "connections", value_name = "N", default_value_t = 50, value_parser = up_to::<100_000>)]
    pub connections: usize,
    /// Run for this long (with -n too, whichever ends first).
    #[arg(short = 'z', long, value_name = "DURATION", value_parser = positive_duration)]
    pub duration: Option<Duration>,
    /// Open model: send this many requests per second in total on a fixed schedule, and report
    /// latency from the scheduled send time (coordinated-omission correction).
    #[arg(short = 'q', long, value_name = "PER_SEC", value_parser = crate::bench::args::per_second)]
    pub rate: Option<f64>,
    /// HTTP method.
    #[arg(short, long, default_value = "GET", value_parser = crate::bench::args::method)]
    pub method: http::Method,
    /// Request header 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = crate::bench::args::header)]
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Request body.
    #[arg(
        short = 'd',
        long = "body",
        value_name = "TEXT",
        conflicts_with = "body_file"
    )]
    pub body: Option<String>,
    /// Request body read from a file.
    #[arg(short = 'D', long = "body-file", value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// Per-request timeout.
    #[arg(short = 't', long, value_name = "DURATION", default_value = "20s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Time to connect.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = positive_duration)]
    pub connect_timeout: Duration,
    /// A new connection for every request (sends Connection: close).
    #[arg(long)]
    pub disable_keepalive: bool,
    /// Speak HTTP/2: ALPN h2 over TLS, prior knowledge (h2c) over http://.
    #[arg(long)]
    pub http2: bool,
    /// With HTTP/2 (--http2 or an h2c:// URL), concurrent streams per connection.
    #[arg(short = 'p', long = "streams", value_name = "N", default_value_t = 1, value_parser = up_to::<1000>)]
    pub streams: usize,
    /// Accept any TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Worker threads (default: available cores, at most one per connection).
    #[arg(long, value_name = "N", value_parser = up_to::<1024>)]
    pub threads: Option<usize>,
    /// Send load for this long first without counting it.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub warmup: Option<Duration>,
    /// Response header whose values the spread is counted over.
    #[arg(long, value_name = "HEADER", default_value = "x-server-id", value_parser = crate::bench::args::header_name)]
    pub group_by: http::HeaderName,
    /// Exit 1 when any request failed (a connection error, a timeout or a 5xx answer).
    #[arg(long)]
    pub fail_on_error: bool,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Options for `lbx demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Port for the demo balancer; 0 picks a free port.
    #[arg(short, long, default_value_t = 8080)]
    pub port: u16,
    /// End after the show instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// What `lbx generate` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GenerateWhat {
    /// Shell completions (bash, zsh, fish, elvish, powershell).
    Completions,
    /// Man pages (lbx.1 and one per subcommand).
    Man,
}

/// Options for the hidden `lbx generate`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// What to write.
    #[arg(value_enum)]
    pub what: GenerateWhat,
    /// Directory to write into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn listen_addresses_default_to_loopback() {
        assert_eq!(listen_addr(":9900").unwrap().to_string(), "127.0.0.1:9900");
        assert_eq!(listen_addr(":0").unwrap().to_string(), "127.0.0.1:0");
        assert_eq!(listen_addr("[::1]:0").unwrap().to_string(), "[::1]:0");
        assert!(listen_addr("example.com:9900").is_err());
        assert!(listen_addr("https://127.0.0.1:9900").is_err());
        assert!(listen_addr("h2c://127.0.0.1:9900").is_err());
    }
}
