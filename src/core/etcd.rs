//! A small etcd v3 client over etcd's JSON gateway (plain HTTP through [`Dialer`] and hyper, no
//! gRPC stack): range reads, prefix watches, leases and puts. Keys and values travel base64
//! encoded, as the gateway wants; 64-bit numbers arrive as JSON strings.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::addr::{Scheme, Target};
use super::client::{handshake, Dialer, TlsOptions};

/// Largest reply body read from a non-streaming call.
const MAX_REPLY: usize = 16 << 20;

/// `etcd://HOST:PORT/PREFIX/`: an etcd endpoint and a key prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUrl {
    /// The etcd client URL (plain HTTP).
    pub endpoint: Target,
    /// The key prefix, from the path, with its leading `/` (e.g. `/lbx/backends/`).
    pub prefix: String,
}

impl EtcdUrl {
    /// Parses `etcd://HOST:PORT/PREFIX/` (port 2379 when not given). The error names the URL.
    pub fn parse(input: &str) -> Result<EtcdUrl, String> {
        let s = input.trim();
        let rest = match s.split_once("://") {
            Some((sch, rest)) if sch.eq_ignore_ascii_case("etcd") => rest,
            _ => return Err(format!("'{input}': expected etcd://HOST:PORT/PREFIX/")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if path.len() < 2 || path.contains(['?', '#']) {
            return Err(format!(
                "'{input}': give a key prefix, e.g. etcd://127.0.0.1:2379/lbx/backends/"
            ));
        }
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:2379")
        };
        let endpoint = Target::parse(&authority).map_err(|e| format!("'{input}': {e}"))?;
        Ok(EtcdUrl {
            endpoint,
            prefix: path.to_string(),
        })
    }
}

impl std::fmt::Display for EtcdUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd://{}{}", self.endpoint.authority, self.prefix)
    }
}

/// The end of the key range that holds every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// One key and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value (raw bytes).
    pub value: Vec<u8>,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The key was written.
    Put(Kv),
    /// The key was deleted (or its lease expired).
    Delete(String),
}

/// Talks to one etcd endpoint. Each call opens its own connection, so a restarted etcd is
/// simply dialed again.
#[derive(Clone)]
pub struct Client {
    dialer: Dialer,
    endpoint: Target,
    timeout: Duration,
}

impl Client {
    /// A client for `endpoint`; every unary call must finish within `timeout`.
    pub fn new(endpoint: Target, timeout: Duration) -> Client {
        let endpoint = Target {
            scheme: Scheme::Http,
            ..endpoint
        };
        Client {
            dialer: Dialer::new(timeout, TlsOptions::default()),
            endpoint,
            timeout,
        }
    }

    async fn send(&self, path: &str, body: &Value) -> Result<hyper::Response<Incoming>, String> {
        let (stream, _) = self
            .dialer
            .dial(&self.endpoint)
            .await
            .map_err(|e| format!("etcd {}: {e}", self.endpoint))?;
        let mut tx = handshake::<Full<Bytes>>(stream)
            .await
            .map_err(|e| format!("etcd {}: {e}", self.endpoint))?;
        let req = Request::post(path)
            .header(http::header::HOST, self.endpoint.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, super::client::USER_AGENT)
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = tx
            .send_request(req)
            .await
            .map_err(|e| format!("etcd {}{path}: {e}", self.endpoint))?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let text = read_limited(resp.into_body()).await.unwrap_or_default();
            return Err(format!(
                "etcd {}{path}: {status}: {}",
                self.endpoint,
                String::from_utf8_lossy(&text).trim()
            ));
        }
        Ok(resp)
    }

    /// One request and its whole JSON reply, within the timeout.
    pub async fn call(&self, path: &str, body: Value) -> Result<Value, String> {
        let fut = async {
            let resp = self.send(path, &body).await?;
            let bytes = read_limited(resp.into_body()).await?;
            serde_json::from_slice(&bytes).map_err(|e| format!("etcd {path}: bad reply: {e}"))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| Err(format!("etcd {}{path}: no reply", self.endpoint)))
    }

    /// Every key under `prefix`, and the store revision the read saw.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(Vec<Kv>, i64), String> {
        let v = self
            .call(
                "/v3/kv/range",
                json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix.as_bytes()))}),
            )
            .await?;
        let rev = int(&v["header"]["revision"]);
        let kvs = v["kvs"]
            .as_array()
            .map(|a| a.iter().filter_map(kv).collect())
            .unwrap_or_default();
        Ok((kvs, rev))
    }

    /// Watches `prefix` from revision `from`, calling `on_events` for each batch of changes with
    /// the batch's revision. Returns `Ok` after `idle` without a message (a connection cut
    /// without a FIN, e.g. by a partition, looks just like a quiet prefix, so the caller
    /// re-reads to be sure) and an error when the watch breaks; either way the caller re-reads
    /// and starts again.
    pub async fn watch_prefix(
        &self,
        prefix: &str,
        from: i64,
        idle: Duration,
        mut on_events: impl FnMut(Vec<Event>, i64),
    ) -> Result<(), String> {
        let body = json!({"create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix.as_bytes())),
            "start_revision": from.to_string(),
        }});
        let resp = tokio::time::timeout(self.timeout, self.send("/v3/watch", &body))
            .await
            .unwrap_or_else(|_| Err(format!("etcd {}: watch not accepted", self.endpoint)))?;
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => return Ok(()),
                Ok(None) => break,
                Ok(Some(f)) => f.map_err(|e| format!("etcd watch: {e}"))?,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            if buf.len() > MAX_REPLY {
                return Err("etcd watch: message too large".into());
            }
            let mut stream = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
            let mut used = 0;
            while let Some(Ok(msg)) = stream.next() {
                used = stream.byte_offset();
                let r = match msg.get("result") {
                    Some(r) => r,
                    None => return Err(format!("etcd watch: {msg}")),
                };
                if r["canceled"].as_bool() == Some(true) || int(&r["compact_revision"]) > 0 {
                    return Err(format!(
                        "etcd watch canceled: {}",
                        r["cancel_reason"].as_str().unwrap_or("compacted")
                    ));
                }
                let events: Vec<Event> = r["events"]
                    .as_array()
                    .map(|a| a.iter().filter_map(event).collect())
                    .unwrap_or_default();
                if !events.is_empty() {
                    on_events(events, int(&r["header"]["revision"]));
                }
            }
            buf.drain(..used);
        }
        Err("etcd watch: stream ended".into())
    }

    /// Grants a lease of `ttl`; returns its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, String> {
        let v = self
            .call(
                "/v3/lease/grant",
                json!({"TTL": ttl.as_secs().max(1).to_string()}),
            )
            .await?;
        match int(&v["ID"]) {
            0 => Err(format!("etcd lease grant: {v}")),
            id => Ok(id),
        }
    }

    /// Renews a lease; false when it has already expired.
    pub async fn keep_alive(&self, lease: i64) -> Result<bool, String> {
        // A bidirectional stream in gRPC; over the gateway, one request gets one reply.
        let fut = async {
            let resp = self
                .send("/v3/lease/keepalive", &json!({"ID": lease.to_string()}))
                .await?;
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("etcd keepalive: {e}"))?;
                if let Ok(d) = frame.into_data() {
                    buf.extend_from_slice(&d);
                }
                let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Value>();
                if let Some(Ok(v)) = it.next() {
                    return Ok(int(&v["result"]["TTL"]) > 0);
                }
                if buf.len() > MAX_REPLY {
                    break;
                }
            }
            Err("etcd keepalive: no reply".to_string())
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| Err("etcd keepalive: no reply".into()))
    }

    /// Writes `key` = `value`, attached to `lease` (0 for none).
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), String> {
        let mut body = json!({"key": B64.encode(key), "value": B64.encode(value)});
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        self.call("/v3/kv/put", body).await.map(|_| ())
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        self.call("/v3/kv/deleterange", json!({"key": B64.encode(key)}))
            .await
            .map(|_| ())
    }

    /// Ends a lease now (its keys go with it).
    pub async fn revoke(&self, lease: i64) -> Result<(), String> {
        self.call("/v3/lease/revoke", json!({"ID": lease.to_string()}))
            .await
            .map(|_| ())
    }
}

async fn read_limited(body: Incoming) -> Result<Bytes, String> {
    http_body_util::Limited::new(body, MAX_REPLY)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| format!("etcd reply: {e}"))
}

/// A gateway int64: a JSON string (or a number); 0 when absent.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn decode(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => B64.decode(s).ok(),
        // Empty values are left out of the JSON.
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

fn kv(v: &Value) -> Option<Kv> {
    Some(Kv {
        key: String::from_utf8(decode(&v["key"])?).ok()?,
        value: decode(&v["value"])?,
    })
}

fn event(v: &Value) -> Option<Event> {
    // PUT is the enum's zero value, which the gateway leaves out.
    match v["type"].as_str() {
        Some("DELETE") => Some(Event::Delete(kv(&v["kv"])?.key)),
        None | Some("PUT") => Some(Event::Put(kv(&v["kv"])?)),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = EtcdUrl::parse("etcd://127.0.0.1:2379/lbx/backends/").unwrap();
        assert_eq!(
            (u.endpoint.port, u.prefix.as_str()),
            (2379, "/lbx/backends/")
        );
        assert_eq!(EtcdUrl::parse("etcd://etcd/x").unwrap().endpoint.port, 2379);
        for bad in [
            "etcd://h:1",
            "etcd://h:1/",
            "http://h:1/x",
            "etcd://h:0/x",
            "etcd://h:1/x?y",
        ] {
            assert!(EtcdUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    /// A gateway that accepts a watch and then says nothing, like a partitioned etcd.
    #[tokio::test]
    async fn a_silent_watch_ends_after_idle() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            let _ = s.write_all(head.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let c = Client::new(
            Target::parse(&addr.to_string()).unwrap(),
            Duration::from_secs(2),
        );
        let started = std::time::Instant::now();
        let r = c
            .watch_prefix("/p/", 1, Duration::from_millis(200), |_, _| {})
            .await;
        assert_eq!(r, Ok(()));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn gateway_json() {
        let put = json!({"kv": {"key": B64.encode("/p/a"), "value": B64.encode("{}"), "mod_revision": "7"}});
        assert_eq!(
            event(&put),
            Some(Event::Put(Kv {
                key: "/p/a".into(),
                value: b"{}".to_vec()
            }))
        );
        let del = json!({"type": "DELETE", "kv": {"key": B64.encode("/p/a")}});
        assert_eq!(event(&del), Some(Event::Delete("/p/a".into())));
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(null)), 0);
        assert!(kv(&json!({"key": "!!"})).is_none());
    }
}
