//! The config file (`lbx balance --config lbx.toml`) and its reload. The file sets what the flags
//! set; a flag given on the command line (or through its environment variable) wins over the
//! file. Unknown keys and bad values are usage errors naming the line and column.
//!
//! Which flags were given is read from clap's `ArgMatches::value_source`, re-derived from the
//! process's own arguments: a default value is not "given", so the file may override it.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::CommandFactory;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::access_log::LogFormat;
use super::discovery::{BackendSpec, SourceSpec};
use super::registry::{check_weight, Registry};
use crate::cli::{BalanceArgs, Cli};
use crate::core::addr::{parse_listen_host, Target, WeightedTarget};
use crate::core::select::hash::HashKey;
use crate::core::select::Algorithm;
use crate::core::units::{parse_duration, parse_positive_duration, parse_size};

/// A string value checked by a parser; its error becomes a serde error, which toml places at
/// the value's line and column.
macro_rules! parsed {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $parse:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(pub $ty);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                ($parse)(s.as_str()).map($name).map_err(de::Error::custom)
            }
        }
    };
}

parsed!(
    /// A duration such as `500ms` or `2s`.
    Dur, Duration, parse_duration
);
parsed!(
    /// A duration above 0, for timeouts and intervals.
    PosDur, Duration, parse_positive_duration
);
parsed!(
    /// A selection algorithm, as `--algorithm` takes it.
    Algo, Algorithm, |s: &str| <Algorithm as clap::ValueEnum>::from_str(s, true)
        .map_err(|_| format!("'{s}' is not an algorithm (round-robin, weighted, least-conn, p2c, hash, random)"))
);
parsed!(
    /// A hash key, as `--hash-key` takes it.
    Key, HashKey, HashKey::parse
);
parsed!(
    /// A byte size such as `64k` or `10m`.
    Size, u64, parse_size
);
parsed!(
    /// An address block such as `10.0.0.0/8`.
    Block, crate::balance::trust::Cidr, crate::balance::trust::Cidr::parse
);
parsed!(
    /// A request rate such as `100/s`.
    Rate, f64, crate::cli::per_second
);
parsed!(
    /// A backend address, as `-b` takes it.
    Addr, Target, Target::parse
);
parsed!(
    /// An IP to listen on.
    Host, IpAddr, parse_listen_host
);
parsed!(
    /// An address to listen on, as `--admin` takes it.
    Listen, SocketAddr, crate::cli::listen_addr
);
parsed!(
    /// A log level or filter, as `--log-level` takes it.
    LogFilter, String, crate::logging::parse_filter
);
parsed!(
    /// An etcd prefix to follow, as `--discover` takes it.
    Discover, SourceSpec, crate::cli::discover
);
parsed!(
    /// An upgrade protocol name, as `--allow-upgrade` takes it.
    UpgradeName, String, crate::cli::upgrade_name
);
parsed!(
    /// A DNS server, as `--dns-server` takes it.
    DnsServer, SocketAddr, crate::cli::dns_server
);
parsed!(
    /// A path that starts with `/`.
    UrlPath, String, |s: &str| if s.starts_with('/') {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' must start with '/'"))
    }
);

/// A whole number above 0, for counts where 0 means nothing; toml places the error at the value.
#[derive(Clone, Copy, Debug)]
pub struct Positive<T>(pub T);

impl<'de, T> Deserialize<'de> for Positive<T>
where
    T: Deserialize<'de> + PartialOrd + Default + std::fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = T::deserialize(d)?;
        if v > T::default() {
            Ok(Positive(v))
        } else {
            Err(de::Error::custom(format!(
                "'{v}' is not a whole number above 0"
            )))
        }
    }
}

/// A backend in the file: `":9001"`, `{ address = ":9001", weight = 2 }`, or a DNS name to
/// follow as `-b` takes it (`"dns://web.internal:9001"`, `"srv://_http._tcp.web.internal"`).
#[derive(Clone, Debug)]
pub struct BackendEntry(pub BackendSpec);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendTable {
    address: Addr,
    #[serde(default)]
    weight: Option<u32>,
}

impl<'de> Deserialize<'de> for BackendEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BackendEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an address or a table { address = \"...\", weight = N }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<BackendEntry, E> {
                let discovered = ["dns://", "srv://"].iter().any(|p| {
                    s.trim()
                        .get(..p.len())
                        .is_some_and(|h| h.eq_ignore_ascii_case(p))
                });
                let spec = if discovered {
                    crate::balance::discovery::parse_source(s).map(BackendSpec::Discovered)
                } else {
                    Target::parse(s)
                        .map(|target| BackendSpec::Static(WeightedTarget { target, weight: 1 }))
                };
                spec.map(BackendEntry).map_err(E::custom)
            }
            fn visit_map<M: MapAccess<'de>>(self, m: M) -> Result<BackendEntry, M::Error> {
                let t = BackendTable::deserialize(de::value::MapAccessDeserializer::new(m))?;
                let weight = check_weight(t.weight.unwrap_or(1)).map_err(de::Error::custom)?;
                Ok(BackendEntry(BackendSpec::Static(WeightedTarget {
                    target: t.address.0,
                    weight,
                })))
            }
        }
        d.deserialize_any(V)
    }
}

/// A file name or a list of them: `cert = "a.pem"` or `cert = ["a.pem", "b.pem"]`.
#[derive(Clone, Debug, Default)]
pub struct Files(pub Vec<PathBuf>);

impl<'de> Deserialize<'de> for Files {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Files;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a file name or a list of file names")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Files, E> {
                Ok(Files(vec![PathBuf::from(s)]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Files, A::Error> {
                let mut files = Vec::new();
                while let Some(f) = seq.next_element::<PathBuf>()? {
                    files.push(f);
                }
                Ok(Files(files))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[health]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// `--health-path`.
    pub path: Option<UrlPath>,
    /// `--interval`.
    pub interval: Option<PosDur>,
    /// `--timeout`.
    pub timeout: Option<PosDur>,
    /// `--rise`.
    pub rise: Option<Positive<u32>>,
    /// `--fall`.
    pub fall: Option<Positive<u32>>,
}

/// `[traffic]`: selection, passive health, retries, timeouts and limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSection {
    /// `--algorithm`.
    pub algorithm: Option<Algo>,
    /// `--hash-key`.
    pub hash_key: Option<Key>,
    /// `--eject-after`.
    pub eject_after: Option<u32>,
    /// `--slow-start`.
    pub slow_start: Option<Dur>,
    /// `--retries`.
    pub retries: Option<u32>,
    /// `--response-timeout`.
    pub response_timeout: Option<PosDur>,
    /// `--header-timeout`.
    pub header_timeout: Option<PosDur>,
    /// `--idle-timeout`.
    pub idle_timeout: Option<PosDur>,
    /// `--max-connections`.
    pub max_connections: Option<Positive<usize>>,
    /// `--max-body`.
    pub max_body: Option<Size>,
    /// `--rate-limit`.
    pub rate_limit: Option<Rate>,
    /// `--trusted-proxies`.
    pub trusted_proxies: Option<Vec<Block>>,
}

/// `[tls]`: TLS termination.
#[derive(Debug, Default)]
pub struct TlsSection {
    /// `--tls-cert` and `--tls-key`, as many of each (paired in order).
    pub pairs: Option<(Vec<PathBuf>, Vec<PathBuf>)>,
    /// `--tls-port`.
    pub port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsTable {
    cert: Option<Files>,
    key: Option<Files>,
    port: Option<u16>,
}

impl<'de> Deserialize<'de> for TlsSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = TlsTable::deserialize(d)?;
        let pairs = match (t.cert, t.key) {
            (None, None) => None,
            (Some(c), Some(k)) if c.0.len() == k.0.len() && !c.0.is_empty() => Some((c.0, k.0)),
            (c, k) => {
                let n = |f: Option<Files>| f.map_or(0, |f| f.0.len());
                return Err(de::Error::custom(format!(
                    "cert and key pair up in order: {} certificate(s) but {} key(s)",
                    n(c),
                    n(k)
                )));
            }
        };
        Ok(TlsSection {
            pairs,
            port: t.port,
        })
    }
}

/// `[discovery]`: backends found at run time besides the `dns://` and `srv://` ones in
/// `backends`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySection {
    /// `--discover`: etcd prefixes to follow.
    pub etcd: Option<Vec<Discover>>,
    /// `--dns-refresh`.
    pub dns_refresh: Option<PosDur>,
    /// `--dns-server`.
    pub dns_server: Option<DnsServer>,
}

/// `[backend_tls]`: how https backends are verified.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsSection {
    /// `--backend-cacert`.
    pub cacert: Option<PathBuf>,
    /// `--backend-insecure`.
    pub insecure: Option<bool>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `--admin`.
    pub listen: Option<Listen>,
    /// `--admin-token`.
    pub token: Option<String>,
}

/// `[access_log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    /// `--access-log PATH`; `"-"` is stdout.
    pub path: Option<PathBuf>,
    /// `--access-log-format`.
    pub format: Option<LogFormat>,
}

/// The whole file. Every key is optional; what it leaves out keeps the flag's default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--host`.
    pub host: Option<Host>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--backend`, with weights.
    pub backends: Option<Vec<BackendEntry>>,
    /// `--workers`.
    pub workers: Option<Positive<usize>>,
    /// `--connect-timeout`.
    pub connect_timeout: Option<PosDur>,
    /// `--grace`.
    pub grace: Option<Dur>,
    /// `--tunnel-timeout`.
    pub tunnel_timeout: Option<PosDur>,
    /// `--allow-upgrade`.
    pub allow_upgrade: Option<Vec<UpgradeName>>,
    /// Health checks.
    #[serde(default)]
    pub health: HealthSection,
    /// Selection, passive health, retries, timeouts and limits.
    #[serde(default)]
    pub traffic: TrafficSection,
    /// TLS termination.
    #[serde(default)]
    pub tls: TlsSection,
    /// Verifying https backends.
    #[serde(default)]
    pub backend_tls: BackendTlsSection,
    /// Backends found in etcd, and DNS lookups.
    #[serde(default)]
    pub discovery: DiscoverySection,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminSection,
    /// The access log.
    #[serde(default)]
    pub access_log: AccessLogSection,
    /// `--log-level`.
    pub log_level: Option<LogFilter>,
}

/// Parses config text; the error names `name`, the line and the column.
pub fn parse(name: &str, text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| format!("{name}: {e}"))
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

/// The ids of the `balance` flags given on the command line or through the environment, from
/// this process's own arguments. Empty when they do not parse as `lbx balance` (lbx used as a
/// library): then the file sets everything it names.
pub fn explicit_flags() -> HashSet<String> {
    let Ok(m) = Cli::command().try_get_matches_from(std::env::args_os()) else {
        return HashSet::new();
    };
    let Some(("balance", sub)) = m.subcommand() else {
        return HashSet::new();
    };
    sub.ids()
        .map(|id| id.as_str())
        .filter(|id| {
            matches!(
                sub.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .map(str::to_string)
        .collect()
}

/// Flags merged with a file: the settings to run with, and the backends with their weights.
#[derive(Clone, Debug)]
pub struct Merged {
    /// Settings, as if all had been flags.
    pub args: BalanceArgs,
    /// Backends and weights (weight 1 for those from `-b`).
    pub backends: Vec<(Target, u32)>,
}

/// Applies `file` under the flags in `explicit`.
pub fn merge(
    mut a: BalanceArgs,
    f: FileConfig,
    explicit: &HashSet<String>,
) -> Result<Merged, String> {
    let free = |id: &str| !explicit.contains(id);
    macro_rules! take {
        ($id:literal, $field:expr, $value:expr) => {
            if free($id) {
                if let Some(v) = $value {
                    $field = v;
                }
            }
        };
    }
    take!("host", a.host, f.host.map(|h| h.0));
    take!("port", a.port, f.port);
    take!("workers", a.workers, f.workers.map(|n| Some(n.0)));
    take!(
        "connect_timeout",
        a.connect_timeout,
        f.connect_timeout.map(|d| d.0)
    );
    take!("grace", a.grace, f.grace.map(|d| d.0));
    take!(
        "tunnel_timeout",
        a.tunnel_timeout,
        f.tunnel_timeout.map(|d| d.0)
    );
    take!(
        "allow_upgrade",
        a.allow_upgrade,
        f.allow_upgrade
            .map(|l| l.into_iter().map(|n| n.0).collect())
    );
    // A certificate and its key go together: either flag on the command line sets both.
    if free("tls_cert") && free("tls_key") {
        if let Some((certs, keys)) = f.tls.pairs {
            (a.tls_cert, a.tls_key) = (certs, keys);
        }
    }
    take!("tls_port", a.tls_port, f.tls.port.map(Some));
    let d = f.discovery;
    take!(
        "discover",
        a.discover,
        d.etcd.map(|l| l.into_iter().map(|s| s.0).collect())
    );
    take!("dns_refresh", a.dns_refresh, d.dns_refresh.map(|v| v.0));
    take!("dns_server", a.dns_server, d.dns_server.map(|v| Some(v.0)));
    let h = f.health;
    take!("health_path", a.health_path, h.path.map(|p| p.0));
    take!("interval", a.interval, h.interval.map(|d| d.0));
    take!("timeout", a.timeout, h.timeout.map(|d| d.0));
    take!("rise", a.rise, h.rise.map(|n| n.0));
    take!("fall", a.fall, h.fall.map(|n| n.0));
    let t = f.traffic;
    take!("algorithm", a.algorithm, t.algorithm.map(|v| v.0));
    take!("hash_key", a.hash_key, t.hash_key.map(|v| v.0));
    take!("eject_after", a.eject_after, t.eject_after);
    take!("slow_start", a.slow_start, t.slow_start.map(|d| d.0));
    take!("retries", a.retries, t.retries);
    take!(
        "response_timeout",
        a.response_timeout,
        t.response_timeout.map(|d| d.0)
    );
    take!(
        "header_timeout",
        a.header_timeout,
        t.header_timeout.map(|d| d.0)
    );
    take!("idle_timeout", a.idle_timeout, t.idle_timeout.map(|d| d.0));
    take!(
        "max_connections",
        a.max_connections,
        t.max_connections.map(|n| Some(n.0))
    );
    take!("max_body", a.max_body, t.max_body.map(|v| Some(v.0)));
    take!("rate_limit", a.rate_limit, t.rate_limit.map(|v| Some(v.0)));
    take!(
        "trusted_proxies",
        a.trusted_proxies,
        t.trusted_proxies
            .map(|l| l.into_iter().map(|b| b.0).collect())
    );
    take!(
        "backend_cacert",
        a.backend_cacert,
        f.backend_tls.cacert.map(Some)
    );
    take!(
        "backend_insecure",
        a.backend_insecure,
        f.backend_tls.insecure
    );
    if a.backend_cacert.is_some() && a.backend_insecure {
        return Err(
            "--backend-cacert and --backend-insecure (backend_tls.cacert and \
                    backend_tls.insecure) exclude each other"
                .into(),
        );
    }
    take!("admin", a.admin, f.admin.listen.map(|l| Some(l.0)));
    take!("admin_token", a.admin_token, f.admin.token.map(Some));
    take!("access_log", a.access_log, f.access_log.path.map(Some));
    take!("log_level", a.log_level, f.log_level.map(|l| Some(l.0)));
    take!(
        "access_log_format",
        a.access_log_format,
        f.access_log.format
    );
    if let Some(list) = f.backends.filter(|_| free("backends")) {
        a.backends = list.into_iter().map(|b| b.0).collect();
    }
    let backends: Vec<(Target, u32)> = a
        .backends
        .iter()
        .filter_map(|b| b.as_static())
        .map(|w| (w.target.clone(), w.weight))
        .collect();
    let discovers = !a.discover.is_empty() || a.backends.iter().any(|b| b.as_static().is_none());
    if backends.is_empty() && !discovers {
        return Err("no backends: give -b or list backends in the config file".into());
    }
    Ok(Merged { args: a, backends })
}

/// Reads `path` and merges it under the flags of this process.
pub fn load(args: BalanceArgs, path: &Path) -> anyhow::Result<(Merged, Reloader)> {
    let explicit = explicit_flags();
    let file = read(path).map_err(crate::usage)?;
    let merged = merge(args.clone(), file, &explicit).map_err(crate::usage)?;
    let reloader = Reloader {
        path: path.to_path_buf(),
        flags: args,
        explicit,
        running: Mutex::new(merged.args.clone()),
    };
    Ok((merged, reloader))
}

/// Re-reads the config file on SIGHUP and `POST /reload`.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    flags: BalanceArgs,
    explicit: HashSet<String>,
    running: Mutex<BalanceArgs>,
}

impl Reloader {
    /// Re-reads the file and merges it under the flags: the settings a reload would bring.
    /// Changes nothing, so the caller can check the rest of what could fail (certificates) before
    /// it [`commit`](Reloader::commit)s; logs nothing, so the caller logs every failure alike.
    pub fn prepare(&self) -> Result<Merged, String> {
        read(&self.path).and_then(|f| merge(self.flags.clone(), f, &self.explicit))
    }

    /// Applies the backends of a [`prepare`](Reloader::prepare)d reload through the registry and
    /// records its settings as the running ones; returns a summary for the log. The caller
    /// applies the health checks, the traffic policy, the client connection limits, the connect
    /// timeout and the certificates. Listener, worker, grace, admin and log settings apply at
    /// the next restart; the summary names the settings that changed, and when each applies.
    pub fn commit(&self, registry: &Registry, merged: &Merged) -> String {
        let s = registry.apply_config(&merged.backends);
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let changed = changed_settings(&running, &merged.args);
        *running = merged.args.clone();
        let mut summary = format!(
            "reloaded {}: {} added, {} removed, {} kept",
            self.path.display(),
            s.added.len(),
            s.removed.len(),
            s.kept
        );
        for (what, list) in [("added", &s.added), ("removing", &s.removed)] {
            if !list.is_empty() {
                summary.push_str(&format!("; {what} {}", list.join(", ")));
            }
        }
        for when in [
            Applies::Health,
            Applies::Requests,
            Applies::ClientConnections,
            Applies::BackendConnections,
            Applies::Restart,
        ] {
            let names: Vec<&str> = changed
                .iter()
                .filter(|(_, w)| *w == when)
                .map(|(n, _)| *n)
                .collect();
            if !names.is_empty() {
                summary.push_str(&format!("; {} {}", when.phrase(), names.join(", ")));
            }
        }
        summary
    }
}

type Show = fn(&BalanceArgs) -> String;

/// When a reloaded setting takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Applies {
    /// The prober restarts with it.
    Health,
    /// The next request reads it.
    Requests,
    /// Client connections accepted from now on get it.
    ClientConnections,
    /// Connections to backends (and probes) dialed from now on use it.
    BackendConnections,
    /// Bound when lbx starts: listeners, threads, the admin API, logging.
    Restart,
}

impl Applies {
    /// How the reload summary introduces the settings.
    fn phrase(self) -> &'static str {
        match self {
            Applies::Health => "health checks now use",
            Applies::Requests => "new requests now use",
            Applies::ClientConnections => "new client connections now use",
            Applies::BackendConnections => "new backend connections now use",
            Applies::Restart => "changed settings that apply at the next restart:",
        }
    }
}

/// The settings a reload reports when they change, with when each applies and how to compare
/// it.
const REPORTED_SETTINGS: [(&str, Applies, Show); 32] = {
    use Applies::*;
    [
        ("host", Restart, |a| a.host.to_string()),
        ("port", Restart, |a| a.port.to_string()),
        ("workers", Restart, |a| format!("{:?}", a.workers)),
        ("connect_timeout", BackendConnections, |a| {
            format!("{:?}", a.connect_timeout)
        }),
        ("grace", Restart, |a| format!("{:?}", a.grace)),
        ("health.path", Health, |a| a.health_path.clone()),
        ("health.interval", Health, |a| format!("{:?}", a.interval)),
        ("health.timeout", Health, |a| format!("{:?}", a.timeout)),
        ("health.rise", Health, |a| a.rise.to_string()),
        ("health.fall", Health, |a| a.fall.to_string()),
        ("traffic.algorithm", Requests, |a| {
            format!("{:?}", a.algorithm)
        }),
        ("traffic.hash_key", Requests, |a| {
            format!("{:?}", a.hash_key)
        }),
        ("traffic.eject_after", Requests, |a| {
            a.eject_after.to_string()
        }),
        ("traffic.slow_start", Requests, |a| {
            format!("{:?}", a.slow_start)
        }),
        ("traffic.retries", Requests, |a| a.retries.to_string()),
        ("traffic.response_timeout", Requests, |a| {
            format!("{:?}", a.response_timeout)
        }),
        ("traffic.max_body", Requests, |a| {
            format!("{:?}", a.max_body)
        }),
        ("traffic.rate_limit", Requests, |a| {
            format!("{:?}", a.rate_limit)
        }),
        ("traffic.trusted_proxies", Requests, |a| {
            format!("{:?}", a.trusted_proxies)
        }),
        ("traffic.header_timeout", ClientConnections, |a| {
            format!("{:?}", a.header_timeout)
        }),
        ("traffic.idle_timeout", ClientConnections, |a| {
            format!("{:?}", a.idle_timeout)
        }),
        ("traffic.max_connections", ClientConnections, |a| {
            format!("{:?}", a.max_connections)
        }),
        // Other certificate files are read at once; turning TLS on or off takes a restart
        // (see `changed_settings`).
        ("tls", ClientConnections, |a| {
            format!("{:?} {:?}", a.tls_cert, a.tls_key)
        }),
        ("tls.port", Restart, |a| format!("{:?}", a.tls_port)),
        ("tunnel_timeout", Restart, |a| {
            format!("{:?}", a.tunnel_timeout)
        }),
        ("allow_upgrade", Restart, |a| {
            format!("{:?}", a.allow_upgrade)
        }),
        ("backend_tls", Restart, |a| {
            format!("{:?} {}", a.backend_cacert, a.backend_insecure)
        }),
        ("discovery", Restart, |a| {
            let names: Vec<_> = a
                .backends
                .iter()
                .filter(|b| b.as_static().is_none())
                .collect();
            format!(
                "{names:?} {:?} {:?} {:?}",
                a.discover, a.dns_refresh, a.dns_server
            )
        }),
        ("admin.listen", Restart, |a| format!("{:?}", a.admin)),
        ("admin.token", Restart, |a| format!("{:?}", a.admin_token)),
        ("log_level", Restart, |a| format!("{:?}", a.log_level)),
        ("access_log", Restart, |a| {
            format!("{:?} {:?}", a.access_log, a.access_log_format)
        }),
    ]
};

/// The settings (other than backends) that differ, with when each applies.
fn changed_settings(old: &BalanceArgs, new: &BalanceArgs) -> Vec<(&'static str, Applies)> {
    let tls_switched = old.tls_cert.is_empty() != new.tls_cert.is_empty();
    REPORTED_SETTINGS
        .iter()
        .filter(|(_, _, show)| show(old) != show(new))
        .map(|(name, when, _)| match *name {
            "tls" if tls_switched => (*name, Applies::Restart),
            _ => (*name, *when),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(extra: &[&str]) -> BalanceArgs {
        let mut argv = vec!["lbx", "balance"];
        argv.extend_from_slice(extra);
        match Cli::parse_from(argv).command {
            crate::cli::Command::Balance(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../../examples/lbx.toml");
        let f = parse("examples/lbx.toml", text).unwrap();
        assert_eq!(f.backends.unwrap().len(), 3);
    }

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("### Config file and reload").unwrap()..];
        let start = section.find("```toml\n").unwrap() + "```toml\n".len();
        let text = &section[start..start + section[start..].find("```").unwrap()];
        let f = parse("README.md", text).unwrap();
        assert_eq!(f.tls.pairs.unwrap().0.len(), 2);
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse("x.toml", "port = 80\n[health]\nintervall = \"2s\"\n").unwrap_err();
        assert!(e.contains("line 3, column 1"), "{e}");
        assert!(e.contains("unknown field `intervall`"), "{e}");
        let e = parse("x.toml", "grace = \"soon\"\n").unwrap_err();
        assert!(e.contains("line 1, column 9"), "{e}");
        let e = parse(
            "x.toml",
            "backends = [\":1\", { address = \":2\", weight = 0 }]",
        )
        .unwrap_err();
        assert!(e.contains("line 1") && e.contains("weight 0"), "{e}");
        let e = parse("x.toml", "backends = [\"nope:\"]").unwrap_err();
        assert!(e.contains("line 1, column 13"), "{e}");
    }

    #[test]
    fn flags_given_win_over_the_file() {
        let file = parse(
            "x.toml",
            "port = 81\nbackends = [\":1\", { address = \":2\", weight = 3 }]\n[health]\nrise = 5\n",
        )
        .unwrap();
        let a = flags(&["--config", "x.toml", "-p", "82"]);
        let explicit: HashSet<String> = ["port".to_string(), "config".to_string()].into();
        let m = merge(a, file, &explicit).unwrap();
        assert_eq!(m.args.port, 82);
        assert_eq!(m.args.rise, 5);
        assert_eq!(m.backends[1].1, 3);
        assert_eq!(m.args.backends.len(), 2);
    }

    #[test]
    fn reload_names_the_settings_that_changed() {
        let old = flags(&["-b", ":1"]);
        let new = flags(&["-b", ":2", "--rise", "4", "-p", "81"]);
        assert_eq!(
            changed_settings(&old, &new),
            [("port", Applies::Restart), ("health.rise", Applies::Health)]
        );
        assert!(changed_settings(&old, &old).is_empty());
        let limits = flags(&[
            "-b",
            ":1",
            "--rate-limit",
            "5/s",
            "--header-timeout",
            "1s",
            "--max-connections",
            "9",
            "--connect-timeout",
            "1s",
        ]);
        assert_eq!(
            changed_settings(&old, &limits),
            [
                ("connect_timeout", Applies::BackendConnections),
                ("traffic.rate_limit", Applies::Requests),
                ("traffic.header_timeout", Applies::ClientConnections),
                ("traffic.max_connections", Applies::ClientConnections),
            ]
        );
    }

    #[test]
    fn backend_tls_from_the_file_and_its_conflict() {
        let file =
            |t: &str| parse("x.toml", &format!("backends = [\"https://h:1\"]\n{t}")).unwrap();
        let a = flags(&["--config", "x.toml"]);
        let m = merge(
            a.clone(),
            file("[backend_tls]\ncacert = \"ca.pem\"\n"),
            &HashSet::new(),
        );
        assert_eq!(
            m.unwrap().args.backend_cacert,
            Some(PathBuf::from("ca.pem"))
        );
        let m = merge(a, file("[backend_tls]\ninsecure = true\n"), &HashSet::new());
        assert!(m.unwrap().args.backend_insecure);
        // A CA on the command line and `insecure` in the file do not go together.
        let a = flags(&["--config", "x.toml", "--backend-cacert", "ca.pem"]);
        let explicit: HashSet<String> = ["backend_cacert".to_string()].into();
        let e = merge(a, file("[backend_tls]\ninsecure = true\n"), &explicit).unwrap_err();
        assert!(e.contains("--backend-insecure"), "{e}");
        let e = parse("x.toml", "[backend_tls]\ninsecure = \"yes\"\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let old = flags(&["-b", ":1"]);
        let new = flags(&["-b", ":1", "--backend-insecure"]);
        assert_eq!(
            changed_settings(&old, &new),
            [("backend_tls", Applies::Restart)]
        );
    }

    #[test]
    fn tls_upgrades_and_discovery_from_the_file() {
        let text = "backends = [\":1\", \"dns://web.test:80\"]\n\
                    tunnel_timeout = \"5m\"\nallow_upgrade = [\"foo\"]\n\
                    [tls]\ncert = [\"a.pem\", \"b.pem\"]\nkey = [\"a.key\", \"b.key\"]\nport = 8443\n\
                    [discovery]\netcd = [\"etcd://127.0.0.1:2379/lbx/\"]\n\
                    dns_refresh = \"5s\"\ndns_server = \"10.0.0.2\"\n";
        let m = merge(
            flags(&["--config", "x.toml"]),
            parse("x.toml", text).unwrap(),
            &HashSet::new(),
        )
        .unwrap();
        let a = &m.args;
        assert_eq!(a.tunnel_timeout, Duration::from_secs(300));
        assert_eq!(a.allow_upgrade, ["foo"]);
        assert_eq!(a.tls_cert, [PathBuf::from("a.pem"), PathBuf::from("b.pem")]);
        assert_eq!(a.tls_key, [PathBuf::from("a.key"), PathBuf::from("b.key")]);
        assert_eq!(a.tls_port, Some(8443));
        assert_eq!(a.discover.len(), 1);
        assert_eq!(a.dns_refresh, Duration::from_secs(5));
        assert_eq!(a.dns_server, Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(a.backends.len(), 2, "the DNS name is a backend entry");
        assert_eq!(m.backends.len(), 1, "only the fixed one is applied as such");
        // One path is a list of one; a certificate flag takes the pair from the file.
        let one = "backends = [\":1\"]\n[tls]\ncert = \"a.pem\"\nkey = \"a.key\"\n";
        let a = flags(&[
            "--config",
            "x.toml",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "c.key",
        ]);
        let explicit: HashSet<String> = ["tls_cert".to_string(), "tls_key".to_string()].into();
        let m = merge(a, parse("x.toml", one).unwrap(), &explicit).unwrap();
        assert_eq!(m.args.tls_cert, [PathBuf::from("c.pem")]);
        assert_eq!(m.args.tls_key, [PathBuf::from("c.key")]);
        // Bad values name the line (and column).
        for (text, want) in [
            ("tunnel_timeout = \"0s\"\n", "line 1, column 18"),
            ("allow_upgrade = \"foo\"\n", "line 1"),
            ("allow_upgrade = [\"ok\", \"bad name\"]\n", "line 1"),
            ("[tls]\ncert = \"a.pem\"\n", "line 1"),
            ("[tls]\nport = -1\n", "line 2, column 8"),
            ("[tls]\ncertificate = \"a.pem\"\n", "line 2"),
            ("[discovery]\netcd = [\"http://x:1\"]\n", "line 2"),
            (
                "[discovery]\ndns_server = \"dns.example\"\n",
                "line 2, column 14",
            ),
            ("[discovery]\ndns_refresh = \"0s\"\n", "line 2, column 15"),
            ("backends = [\"dns://web\"]\n", "line 1, column 13"),
        ] {
            let e = parse("x.toml", text).unwrap_err();
            assert!(e.contains(want), "{text:?} should name {want}: {e}");
        }
    }

    #[test]
    fn a_reload_reports_certificates_for_new_connections_and_tls_itself_at_restart() {
        let plain = flags(&["-b", ":1"]);
        let tls = flags(&["-b", ":1", "--tls-cert", "a.pem", "--tls-key", "a.key"]);
        let other = flags(&["-b", ":1", "--tls-cert", "b.pem", "--tls-key", "b.key"]);
        assert_eq!(
            changed_settings(&tls, &other),
            [("tls", Applies::ClientConnections)]
        );
        assert_eq!(changed_settings(&plain, &tls), [("tls", Applies::Restart)]);
        assert_eq!(changed_settings(&tls, &plain), [("tls", Applies::Restart)]);
        let upgrades = flags(&["-b", ":1", "--tunnel-timeout", "1m", "--allow-upgrade", "x"]);
        assert_eq!(
            changed_settings(&plain, &upgrades),
            [
                ("tunnel_timeout", Applies::Restart),
                ("allow_upgrade", Applies::Restart)
            ]
        );
        let dns = flags(&["-b", ":1,dns://web.test:80"]);
        assert_eq!(
            changed_settings(&plain, &dns),
            [("discovery", Applies::Restart)]
        );
    }

    #[test]
    fn no_backends_anywhere_is_an_error() {
        let a = flags(&["--config", "x.toml"]);
        assert!(merge(a, FileConfig::default(), &HashSet::new()).is_err());
    }
}
