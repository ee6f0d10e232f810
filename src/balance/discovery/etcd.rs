//! etcd discovery: `--discover etcd://HOST:PORT/PREFIX/`. Reads every key under the prefix,
//! then watches it from the next revision; each key's value is a backend as JSON,
//! `{"address": ":9001", "weight": 1}`. On a broken watch it re-reads and watches again; while
//! etcd is unreachable the last good set stays in the pool.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::Feed;
use crate::balance::registry::check_weight;
use crate::core::addr::Target;
use crate::core::etcd::{Client, EtcdUrl, Event, Kv};

/// Time each etcd call has.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before re-reading after a failure (doubling up to [`RETRY_MAX`]).
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A watch with no message for this long is restarted after a fresh read: a connection cut
/// without a FIN (a partition) would otherwise look like a quiet prefix forever.
const QUIET: Duration = Duration::from_secs(60);

/// A key's value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Value {
    address: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

/// Reads a key's value into a backend; the error says what is wrong with it.
pub fn parse_value(value: &[u8]) -> Result<(Target, u32), String> {
    let v: Value = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    let t = Target::parse(&v.address)?;
    Ok((t, check_weight(v.weight)?))
}

/// The backends under the prefix, by key.
#[derive(Default)]
struct State {
    by_key: BTreeMap<String, (Target, u32)>,
}

impl State {
    fn put(&mut self, feed: &Feed, kv: Kv) {
        match parse_value(&kv.value) {
            Ok(b) => {
                self.by_key.insert(kv.key, b);
            }
            Err(e) => {
                crate::term::warn(&format!("{}: ignoring key {}: {e}", feed.name(), kv.key));
                self.by_key.remove(&kv.key);
            }
        }
    }

    fn backends(&self) -> Vec<(Target, u32)> {
        let mut v: Vec<(Target, u32)> = Vec::new();
        for b in self.by_key.values() {
            if !v.iter().any(|(t, _)| *t == b.0) {
                v.push(b.clone());
            }
        }
        v
    }
}

/// Follows one etcd prefix forever (the caller aborts it at shutdown).
pub async fn follow(url: EtcdUrl, feed: Feed) {
    let client = Client::new(url.endpoint.clone(), CALL_TIMEOUT);
    let mut wait = RETRY_MIN;
    let mut unreachable = false;
    loop {
        match client.range_prefix(&url.prefix).await {
            Ok((kvs, rev)) => {
                if unreachable {
                    crate::term::info(&format!("{}: etcd reachable again", feed.name()));
                    unreachable = false;
                }
                wait = RETRY_MIN;
                let mut state = State::default();
                for kv in kvs {
                    state.put(&feed, kv);
                }
                feed.apply(&state.backends());
                let broke = client
                    .watch_prefix(&url.prefix, rev + 1, QUIET, |events, _| {
                        for e in events {
                            match e {
                                Event::Put(kv) => state.put(&feed, kv),
                                Event::Delete(k) => {
                                    state.by_key.remove(&k);
                                }
                            }
                        }
                        feed.apply(&state.backends());
                    })
                    .await;
                if let Err(e) = broke {
                    crate::term::warn(&format!("{}: {e}; reading the prefix again", feed.name()));
                }
            }
            Err(e) => {
                if !unreachable {
                    crate::term::warn(&format!(
                        "{}: keeping the last good set, etcd is unreachable: {e}",
                        feed.name()
                    ));
                    unreachable = true;
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let (t, w) = parse_value(br#"{"address": ":9001", "weight": 3}"#).unwrap();
        assert_eq!((t.port, w), (9001, 3));
        assert_eq!(parse_value(br#"{"address": "h:1"}"#).unwrap().1, 1);
        for bad in [
            &b"not json"[..],
            br#"{"address": ":0"}"#,
            br#"{"address": ":1", "weight": 0}"#,
            br#"{"address": ":1", "extra": 1}"#,
            br#"{"weight": 1}"#,
        ] {
            assert!(parse_value(bad).is_err());
        }
    }
}
