//! DNS discovery: `dns://NAME:PORT` (A and AAAA records) and `srv://NAME` (SRV records),
//! re-resolved with hickory-resolver every `--dns-refresh`, or sooner when the records' TTL is
//! shorter. A failed lookup keeps the last good set; an empty answer empties it only when the
//! next refresh agrees, so one bad answer from a flapping server does not drain every backend.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use super::{Feed, SourceSpec};
use crate::balance::registry::MAX_WEIGHT;
use crate::core::addr::{Scheme, Target};

/// Shortest wait between two lookups of one name, however short its TTL (a TTL of 0 would
/// otherwise make it a busy loop).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

/// A resolver asking `server` (IP, port 53 unless given), or the system's resolvers. Answers
/// are cached no longer than `refresh`, so every refresh sees what the server says now.
pub fn resolver(server: Option<SocketAddr>, refresh: Duration) -> anyhow::Result<TokioResolver> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match server {
        Some(addr) => {
            let conn = |mut c: ConnectionConfig| {
                c.port = addr.port();
                c
            };
            let ns = NameServerConfig::new(
                addr.ip(),
                true,
                vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())],
            );
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], vec![ns]),
                provider,
            )
        }
        None => TokioResolver::builder(provider)
            .map_err(|e| anyhow::anyhow!("reading the system's DNS configuration: {e}"))?,
    };
    let opts = builder.options_mut();
    opts.positive_max_ttl = Some(refresh);
    opts.negative_max_ttl = Some(refresh);
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    opts.ip_strategy = hickory_resolver::config::LookupIpStrategy::Ipv4AndIpv6;
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("DNS resolver: {e}"))
}

/// What one lookup found: backends with weights, and the shortest TTL among the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The backends, sorted.
    pub backends: Vec<(Target, u32)>,
    /// Shortest record TTL, when there were records.
    pub ttl: Option<Duration>,
}

/// Resolves `spec` once. An empty answer (no such name, or no records of the type) is an
/// `Ok` with no backends; only a failure to get an answer is an `Err`.
pub async fn lookup(r: &TokioResolver, spec: &SourceSpec) -> Result<Answer, String> {
    let mut answer = Answer {
        backends: Vec::new(),
        ttl: None,
    };
    match spec {
        SourceSpec::Dns { name, port, scheme } => {
            let ips = match r.lookup_ip(fqdn(name)).await {
                Ok(l) => l,
                Err(e) if e.is_no_records_found() => return Ok(answer),
                Err(e) => return Err(describe(&e)),
            };
            answer.ttl = ips
                .as_lookup()
                .answers()
                .iter()
                .map(|r| r.ttl)
                .min()
                .map(secs);
            for ip in ips.iter() {
                answer.backends.push((target(*scheme, ip, *port), 1));
            }
        }
        SourceSpec::Srv { name, scheme } => {
            let l = match r.lookup(fqdn(name), RecordType::SRV).await {
                Ok(l) => l,
                Err(e) if e.is_no_records_found() => return Ok(answer),
                Err(e) => return Err(describe(&e)),
            };
            let srvs: Vec<_> = l
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    RData::SRV(s) => Some((rec.ttl, s.clone())),
                    _ => None,
                })
                .collect();
            // RFC 2782: lower priorities are used first; the others are fallbacks that lbx's
            // own health checks and retries stand in for, so only the lowest is taken.
            let best = srvs.iter().map(|(_, s)| s.priority).min();
            let mut ttl = srvs.iter().map(|(t, _)| *t).min();
            for (_, s) in srvs.iter().filter(|(_, s)| Some(s.priority) == best) {
                if s.port == 0 {
                    continue;
                }
                let host = s.target.to_utf8();
                let ips = r
                    .lookup_ip(host.as_str())
                    .await
                    .map_err(|e| format!("SRV target {host}: {}", describe(&e)))?;
                let t = ips.as_lookup().answers().iter().map(|r| r.ttl).min();
                ttl = ttl.min(t).or(ttl).or(t);
                // SRV weight 0 means "rarely"; lbx weights start at 1.
                let w = u32::from(s.weight).clamp(1, MAX_WEIGHT);
                for ip in ips.iter() {
                    answer.backends.push((target(*scheme, ip, s.port), w));
                }
            }
            answer.ttl = ttl.map(secs);
        }
        SourceSpec::Etcd(_) => return Err("not a DNS source".into()),
    }
    answer.backends.sort_by_key(|b| b.0.to_string());
    answer.backends.dedup_by(|a, b| a.0 == b.0);
    Ok(answer)
}

/// A name as given is taken as complete: no search domains are tried.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn describe(e: &NetError) -> String {
    e.to_string()
}

/// A backend found at `ip`, spoken to in `scheme`.
fn target(scheme: Scheme, ip: IpAddr, port: u16) -> Target {
    let authority = match ip {
        IpAddr::V6(_) => format!("[{ip}]:{port}"),
        IpAddr::V4(_) => format!("{ip}:{port}"),
    };
    Target {
        scheme,
        host: ip.to_string(),
        port,
        ip: Some(ip),
        authority,
    }
}

/// The rules for turning lookups into changes, apart from any I/O.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The set last applied (None before the first good answer).
    current: Option<Vec<(Target, u32)>>,
    /// Empty answers in a row while the current set is not empty.
    empties: u32,
}

/// What to do after a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Apply this set.
    Apply(Vec<(Target, u32)>),
    /// Nothing changed.
    Same,
    /// The lookup failed: keep the last good set (the string says why).
    KeepFailed(String),
    /// An empty answer not yet confirmed: keep the set until the next refresh agrees.
    KeepEmpty,
}

impl Tracker {
    /// Feeds one lookup result in.
    pub fn observe(&mut self, result: Result<Vec<(Target, u32)>, String>) -> Step {
        let set = match result {
            Ok(set) => set,
            Err(e) => return Step::KeepFailed(e),
        };
        let had = self.current.as_ref().is_some_and(|c| !c.is_empty());
        if set.is_empty() && had {
            self.empties += 1;
            if self.empties < 2 {
                return Step::KeepEmpty;
            }
        }
        self.empties = 0;
        if self.current.as_ref() == Some(&set) {
            return Step::Same;
        }
        self.current = Some(set.clone());
        Step::Apply(set)
    }
}

/// Follows one DNS source forever (the caller aborts it at shutdown).
pub async fn follow(r: TokioResolver, spec: SourceSpec, refresh: Duration, feed: Feed) {
    let mut tracker = Tracker::default();
    loop {
        let result = lookup(&r, &spec).await;
        let ttl = result.as_ref().ok().and_then(|a| a.ttl);
        match tracker.observe(result.map(|a| a.backends)) {
            Step::Apply(set) => feed.apply(&set),
            Step::Same => {}
            Step::KeepFailed(e) => crate::term::warn(&format!(
                "{}: lookup failed, keeping the last good set: {e}",
                feed.name()
            )),
            Step::KeepEmpty => crate::term::warn(&format!(
                "{}: empty answer, keeping the set until the next refresh agrees",
                feed.name()
            )),
        }
        let wait = ttl.map_or(refresh, |t| t.min(refresh)).max(MIN_REFRESH);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ports: &[u16]) -> Vec<(Target, u32)> {
        ports
            .iter()
            .map(|p| (target(Scheme::Http, IpAddr::from([127, 0, 0, 1]), *p), 1))
            .collect()
    }

    #[test]
    fn failures_keep_and_empties_need_two() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(Ok(set(&[1, 2]))), Step::Apply(set(&[1, 2])));
        assert_eq!(t.observe(Ok(set(&[1, 2]))), Step::Same);
        assert!(matches!(t.observe(Err("x".into())), Step::KeepFailed(_)));
        assert_eq!(t.observe(Ok(set(&[]))), Step::KeepEmpty);
        // A non-empty answer in between resets the count.
        assert_eq!(t.observe(Ok(set(&[2]))), Step::Apply(set(&[2])));
        assert_eq!(t.observe(Ok(set(&[]))), Step::KeepEmpty);
        assert!(matches!(t.observe(Err("x".into())), Step::KeepFailed(_)));
        assert_eq!(t.observe(Ok(set(&[]))), Step::Apply(set(&[])));
        assert_eq!(t.observe(Ok(set(&[]))), Step::Same);
    }

    #[test]
    fn an_empty_first_answer_applies_at_once() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(Ok(set(&[]))), Step::Apply(set(&[])));
    }

    #[test]
    fn names_are_taken_as_complete() {
        assert_eq!(fqdn("web.lbx.test"), "web.lbx.test.");
        assert_eq!(fqdn("web."), "web.");
    }
}
