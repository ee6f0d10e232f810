//! The whole command-line interface: one clap definition that main, the completions and the man
//! pages are all generated from.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::core::addr::{parse_listen_host, parse_port_range, Target};
use crate::core::units::{parse_count, parse_duration};

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
                  [::1]:9001, http://host:port, https://host:port. Durations take 500ms, 2s, 1m.",
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
    Balance(BalanceArgs),
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

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn count(s: &str) -> Result<u64, String> {
    parse_count(s)
}

fn host(s: &str) -> Result<IpAddr, String> {
    parse_listen_host(s)
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

fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("'{s}' is not a whole number above 0")),
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
    #[arg(long, value_name = "N", value_parser = positive)]
    pub workers: Option<usize>,
}

/// Options for `lbx balance`.
#[derive(Args, Debug, Clone)]
pub struct BalanceArgs {
    /// Backends, comma-separated or repeated: -b :9001,:9002 -b host:9003.
    #[arg(short, long = "backend", value_name = "ADDR", value_delimiter = ',', required = true, value_parser = target)]
    pub backends: Vec<Target>,
    /// Port to listen on; 0 picks a free port.
    #[arg(short, long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0", value_parser = host)]
    pub host: IpAddr,
    /// Time between health checks.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration)]
    pub interval: Duration,
    /// Health check timeout.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = duration)]
    pub timeout: Duration,
    /// Health check path.
    #[arg(long, value_name = "PATH", default_value = "/healthcheck")]
    pub health_path: String,
    /// Successful checks in a row before a down backend takes traffic again.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub rise: u32,
    /// Failed checks in a row before a backend is taken out.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub fall: u32,
    /// Time to connect to a backend.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// At shutdown, how long in-flight requests may take to finish.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub grace: Duration,
    /// Worker threads, each with its own listener and backend connections (default: cores).
    #[arg(long, value_name = "N", value_parser = positive)]
    pub workers: Option<usize>,
}

/// Options for `lbx check`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Targets to probe, all at once.
    #[arg(value_name = "ADDR", required = true, value_parser = target)]
    pub targets: Vec<Target>,
    /// Health check path.
    #[arg(long, default_value = "/healthcheck")]
    pub path: String,
    /// Time allowed for each probe, connect included.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = duration)]
    pub timeout: Duration,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Options for `lbx bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Target URL: an address as elsewhere, optionally with a path (http://host:port/path?q).
    #[arg(value_name = "URL", value_parser = crate::bench::args::url)]
    pub url: Box<crate::bench::args::Url>,
    /// Number of requests (accepts 10k, 1m); default 200 when no --duration is given.
    #[arg(short = 'n', long = "requests", value_name = "N", value_parser = count)]
    pub requests: Option<u64>,
    /// Connections (concurrent requests).
    #[arg(short = 'c', long = "connections", value_name = "N", default_value_t = 50, value_parser = positive)]
    pub connections: usize,
    /// Run for this long (with -n too, whichever ends first).
    #[arg(short = 'z', long, value_name = "DURATION", value_parser = crate::bench::args::run_duration)]
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
    #[arg(short = 't', long, value_name = "DURATION", default_value = "20s", value_parser = crate::bench::args::run_duration)]
    pub timeout: Duration,
    /// Time to connect.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = crate::bench::args::run_duration)]
    pub connect_timeout: Duration,
    /// A new connection for every request (sends Connection: close).
    #[arg(long)]
    pub disable_keepalive: bool,
    /// Speak HTTP/2: ALPN h2 over TLS, prior knowledge (h2c) over http://.
    #[arg(long)]
    pub http2: bool,
    /// With --http2, concurrent streams per connection.
    #[arg(short = 'p', long = "streams", value_name = "N", default_value_t = 1, value_parser = positive, requires = "http2")]
    pub streams: usize,
    /// Accept any TLS certificate.
    #[arg(long)]
    pub insecure: bool,
    /// Also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Worker threads (default: available cores, at most one per connection).
    #[arg(long, value_name = "N", value_parser = positive)]
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
}
