//! Backends discovered at run time: `-b dns://NAME:PORT`, `-b srv://_http._tcp.NAME` and
//! `--discover etcd://HOST:PORT/PREFIX/`. Each source works out the whole set of backends it
//! wants and hands it to the registry ([`Registry::apply_source`]), which adds new ones and
//! removes, with a drain, the ones it added that are gone: the same path the admin API and a
//! config reload take, so the request path only ever sees an atomically swapped pool.

pub mod dns;
pub mod etcd;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::registry::Registry;
use crate::core::addr::{parse_weighted, Scheme, Target, WeightedTarget};
use crate::core::etcd::EtcdUrl;

/// One `-b` entry: a fixed backend or a DNS name to re-resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSpec {
    /// `ADDR` or `ADDR=WEIGHT`.
    Static(WeightedTarget),
    /// `dns://NAME:PORT` or `srv://NAME`.
    Discovered(SourceSpec),
}

impl BackendSpec {
    /// The fixed backend, if this is one.
    pub fn as_static(&self) -> Option<&WeightedTarget> {
        match self {
            BackendSpec::Static(w) => Some(w),
            BackendSpec::Discovered(_) => None,
        }
    }
}

/// Parses a `-b` entry: `dns://` and `srv://` become discovery sources, anything else is an
/// address as [`parse_weighted`] reads it.
pub fn parse_backend(input: &str) -> Result<BackendSpec, String> {
    let s = input.trim();
    let scheme = s.split_once("://").map(|(sch, _)| sch.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("dns") | Some("srv") => parse_source(s).map(BackendSpec::Discovered),
        _ => parse_weighted(input).map(BackendSpec::Static),
    }
}

/// Where a set of backends comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A and AAAA records of `name`, each address on `port`.
    Dns {
        /// The name to resolve.
        name: String,
        /// The port every address gets.
        port: u16,
        /// How the backends found are spoken to (`dns://h2c://NAME:PORT`: HTTP/2).
        scheme: Scheme,
    },
    /// SRV records of `name` (e.g. `_http._tcp.web.example`): targets, ports and weights.
    Srv {
        /// The SRV name.
        name: String,
        /// How the backends found are spoken to (`srv://h2c://NAME`: HTTP/2).
        scheme: Scheme,
    },
    /// The keys under an etcd prefix.
    Etcd(EtcdUrl),
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Dns { name, port, scheme } => {
                write!(f, "dns://{}{name}:{port}", inner_prefix(*scheme))
            }
            SourceSpec::Srv { name, scheme } => write!(f, "srv://{}{name}", inner_prefix(*scheme)),
            SourceSpec::Etcd(u) => write!(f, "{u}"),
        }
    }
}

/// How a DNS source's scheme is written after `dns://` or `srv://` (nothing for HTTP/1.1).
fn inner_prefix(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::Http => "",
        Scheme::H2c => "h2c://",
        Scheme::Https => "https://",
    }
}

/// The protocol of the backends a DNS source finds, from what follows `dns://` or `srv://`
/// (`h2c://NAME...`), and the rest. Backends found by DNS are dialed by IP address, which a
/// certificate does not name, so `https://` is refused.
fn inner_scheme<'a>(input: &str, rest: &'a str) -> Result<(Scheme, &'a str), String> {
    let Some((scheme, name)) = rest.split_once("://") else {
        return Ok((Scheme::Http, rest));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok((Scheme::Http, name)),
        "h2c" => Ok((Scheme::H2c, name)),
        "https" => Err(format!(
            "'{input}': backends found by DNS are dialed by IP address, which a certificate \
             does not name: https:// is not supported here (use http:// or h2c://)"
        )),
        other => Err(format!(
            "'{input}': unsupported scheme '{other}' for backends found by DNS (use http:// or \
             h2c://)"
        )),
    }
}

/// Parses `dns://NAME:PORT`, `srv://NAME` (either with `h2c://` before the name for HTTP/2
/// backends) or `etcd://HOST:PORT/PREFIX/`.
pub fn parse_source(input: &str) -> Result<SourceSpec, String> {
    let s = input.trim();
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!(
            "'{input}': expected dns://NAME:PORT, srv://NAME or etcd://HOST:PORT/PREFIX/"
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "dns" => {
            let (scheme, rest) = inner_scheme(input, rest)?;
            let t = Target::parse(rest).map_err(|e| format!("'{input}': {e}"))?;
            if !rest.contains(':') || t.ip.is_some() {
                return Err(format!("'{input}': expected dns://NAME:PORT"));
            }
            Ok(SourceSpec::Dns {
                name: t.host,
                port: t.port,
                scheme,
            })
        }
        "srv" => {
            let (scheme, rest) = inner_scheme(input, rest)?;
            let t = Target::parse(&format!("{rest}:1")).map_err(|e| format!("'{input}': {e}"))?;
            if t.ip.is_some() || rest.contains(':') {
                return Err(format!("'{input}': expected srv://_SERVICE._tcp.NAME"));
            }
            Ok(SourceSpec::Srv {
                name: t.host,
                scheme,
            })
        }
        "etcd" => EtcdUrl::parse(s).map(SourceSpec::Etcd),
        other => Err(format!(
            "'{input}': unsupported discovery scheme '{other}' (use dns://, srv:// or etcd://)"
        )),
    }
}

/// Discovery settings, from flags.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// The sources to follow.
    pub sources: Vec<SourceSpec>,
    /// Longest time between two DNS lookups of one name (shorter when the record's TTL is).
    pub dns_refresh: Duration,
    /// DNS server to ask; the system's resolver when None.
    pub dns_server: Option<SocketAddr>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            sources: Vec::new(),
            dns_refresh: Duration::from_secs(30),
            dns_server: None,
        }
    }
}

/// One source's way into the registry: applies its whole current answer and logs what changed.
pub struct Feed {
    registry: Arc<Registry>,
    name: String,
}

impl Feed {
    /// A feed for the source called `name` (its URL, used in logs and as its registry key).
    pub fn new(registry: Arc<Registry>, name: String) -> Feed {
        Feed { registry, name }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes the backends this source added match `wanted`.
    pub fn apply(&self, wanted: &[(Target, u32)]) {
        let s = self.registry.apply_source(&self.name, wanted);
        if !s.added.is_empty() || !s.removed.is_empty() {
            crate::term::info(&format!(
                "{}: {} backend{} (added: {}; removed: {})",
                self.name,
                wanted.len(),
                if wanted.len() == 1 { "" } else { "s" },
                list_or_none(&s.added),
                list_or_none(&s.removed)
            ));
        }
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Starts a thread that follows every source until `shutdown` turns true; None when there is
/// no source.
pub fn spawn(
    cfg: DiscoveryConfig,
    registry: Arc<Registry>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<std::thread::JoinHandle<()>>> {
    if cfg.sources.is_empty() {
        return Ok(None);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let resolver = if cfg
        .sources
        .iter()
        .any(|s| !matches!(s, SourceSpec::Etcd(_)))
    {
        Some(dns::resolver(cfg.dns_server, cfg.dns_refresh)?)
    } else {
        None
    };
    let thread = std::thread::Builder::new()
        .name("lbx-discovery".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for spec in cfg.sources {
                    let feed = Feed::new(registry.clone(), spec.to_string());
                    match spec {
                        SourceSpec::Etcd(url) => {
                            tasks.spawn(etcd::follow(url, feed));
                        }
                        dns_spec => {
                            let Some(r) = resolver.clone() else { continue };
                            tasks.spawn(dns::follow(r, dns_spec, cfg.dns_refresh, feed));
                        }
                    }
                }
                let mut stop = shutdown;
                while !*stop.borrow_and_update() {
                    if stop.changed().await.is_err() {
                        break;
                    }
                }
                tasks.abort_all();
            });
        })?;
    Ok(Some(thread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_entries() {
        assert!(matches!(
            parse_backend(":9001=2"),
            Ok(BackendSpec::Static(WeightedTarget { weight: 2, .. }))
        ));
        assert_eq!(
            parse_backend("dns://web.lbx.test:9001"),
            Ok(BackendSpec::Discovered(SourceSpec::Dns {
                name: "web.lbx.test".into(),
                port: 9001,
                scheme: Scheme::Http,
            }))
        );
        assert_eq!(
            parse_backend("dns://H2C://web.lbx.test:9001"),
            Ok(BackendSpec::Discovered(SourceSpec::Dns {
                name: "web.lbx.test".into(),
                port: 9001,
                scheme: Scheme::H2c,
            }))
        );
        assert_eq!(
            parse_backend("SRV://_http._tcp.web.lbx.test"),
            Ok(BackendSpec::Discovered(SourceSpec::Srv {
                name: "_http._tcp.web.lbx.test".into(),
                scheme: Scheme::Http,
            }))
        );
        assert_eq!(
            parse_source("srv://h2c://_h2._tcp.web.lbx.test")
                .unwrap()
                .to_string(),
            "srv://h2c://_h2._tcp.web.lbx.test"
        );
        assert_eq!(
            parse_source("dns://http://web.lbx.test:80")
                .unwrap()
                .to_string(),
            "dns://web.lbx.test:80"
        );
        let e = parse_backend("dns://https://web.lbx.test:443").unwrap_err();
        assert!(
            e.contains("'dns://https://web.lbx.test:443'") && e.contains("https://"),
            "{e}"
        );
        for bad in [
            "dns://web",
            "dns://:9001",
            "dns://10.0.0.1:80",
            "dns://web:0",
            "dns://h2c://web",
            "dns://ftp://web:1",
            "srv://https://_http._tcp.x",
            "srv://",
            "srv://_http._tcp.x:80",
            "srv://a b",
            "ftp://x:1",
        ] {
            assert!(parse_backend(bad).is_err(), "{bad}");
        }
        // Addresses elsewhere still refuse these schemes.
        assert!(Target::parse("dns://web:9001").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "dns://web.lbx.test:9001",
            "dns://h2c://web.lbx.test:9001",
            "srv://_http._tcp.web.lbx.test",
            "etcd://127.0.0.1:2379/lbx/backends/",
        ] {
            assert_eq!(parse_source(s).unwrap().to_string(), s);
        }
    }
}
