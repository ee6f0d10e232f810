//! `lbx serve --register etcd://HOST:PORT/PREFIX/`: each listener is written under the prefix
//! (`PREFIX` + its address, value `{"address": ..., "weight": 1}`) on a lease of
//! `--register-ttl`, renewed every third of it. At shutdown the keys are deleted and the lease
//! revoked; if the process dies, the lease runs out and every balancer watching drops it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use crate::core::etcd::{Client, EtcdUrl};

/// Time each etcd call has.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The keys one `lbx serve` keeps registered.
pub struct Registration {
    client: Client,
    url: EtcdUrl,
    entries: Vec<(String, Vec<u8>)>,
    ttl: Duration,
    lease: AtomicI64,
}

impl Registration {
    /// The keys for `servers` under `url`'s prefix. Fails when a listener is on an unspecified
    /// address (0.0.0.0), which no balancer could dial.
    pub fn new(
        url: &EtcdUrl,
        servers: &[SocketAddr],
        ttl: Duration,
    ) -> Result<Registration, String> {
        let mut entries = Vec::new();
        for addr in servers {
            if addr.ip().is_unspecified() {
                return Err(format!(
                    "--register: the server listens on {addr}; give --host the address \
                     balancers reach it on"
                ));
            }
            let value = serde_json::json!({"address": addr.to_string(), "weight": 1});
            entries.push((
                format!("{}{addr}", url.prefix),
                value.to_string().into_bytes(),
            ));
        }
        Ok(Registration {
            client: Client::new(url.endpoint.clone(), CALL_TIMEOUT),
            url: url.clone(),
            entries,
            ttl: ttl.max(Duration::from_secs(1)),
            lease: AtomicI64::new(0),
        })
    }

    async fn register(&self) -> Result<(), String> {
        let lease = self.client.grant(self.ttl).await?;
        self.lease.store(lease, Relaxed);
        for (key, value) in &self.entries {
            self.client.put(key, value, lease).await?;
        }
        Ok(())
    }

    /// Registers, then keeps the lease alive; registers again whenever the lease is found
    /// expired. Runs until dropped (the caller selects it against the shutdown signal).
    pub async fn keep(&self) {
        let every = self.ttl / 3;
        let mut failing = false;
        loop {
            match self.register().await {
                Ok(()) => {
                    failing = false;
                    for (key, _) in &self.entries {
                        crate::term::info(&format!(
                            "registered {key} in etcd://{} (lease {:?})",
                            self.url.endpoint.authority, self.ttl
                        ));
                    }
                }
                Err(e) => {
                    if !failing {
                        crate::term::warn(&format!("registering in {}: {e}; retrying", self.url));
                        failing = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            loop {
                tokio::time::sleep(every).await;
                match self.client.keep_alive(self.lease.load(Relaxed)).await {
                    Ok(true) => failing = false,
                    Ok(false) => {
                        crate::term::warn(&format!(
                            "{}: the lease expired; registering again",
                            self.url
                        ));
                        break;
                    }
                    Err(e) => {
                        // The lease may outlive a short etcd outage: keep trying to renew it.
                        if !failing {
                            crate::term::warn(&format!("renewing the lease in {}: {e}", self.url));
                            failing = true;
                        }
                    }
                }
            }
        }
    }

    /// Deletes the keys and revokes the lease (best effort, bounded by the call timeouts).
    pub async fn deregister(&self) {
        for (key, _) in &self.entries {
            match self.client.delete(key).await {
                Ok(()) => crate::term::info(&format!("deregistered {key}")),
                Err(e) => crate::term::warn(&format!("deregistering {key}: {e}")),
            }
        }
        let lease = self.lease.load(Relaxed);
        if lease != 0 {
            let _ = self.client.revoke(lease).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_each_listener() {
        let url = EtcdUrl::parse("etcd://127.0.0.1:2379/lbx/backends/").unwrap();
        let a: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let r = Registration::new(&url, &[a], Duration::from_secs(10)).unwrap();
        assert_eq!(r.entries[0].0, "/lbx/backends/127.0.0.1:9001");
        let v: serde_json::Value = serde_json::from_slice(&r.entries[0].1).unwrap();
        assert_eq!(v["address"], "127.0.0.1:9001");
        let any: SocketAddr = "0.0.0.0:9001".parse().unwrap();
        assert!(Registration::new(&url, &[any], Duration::from_secs(10)).is_err());
    }
}
