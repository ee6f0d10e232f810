//! One backend: its address, its routable flag and its counters, all atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use super::addr::Target;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A backend server. Shared by every worker; only atomics change after creation.
#[derive(Debug)]
pub struct Backend {
    /// Unique for the life of the process; keys per-worker connection pools.
    pub id: u64,
    /// Where it listens.
    pub target: Target,
    healthy: AtomicBool,
    /// Requests sent to it.
    pub requests: AtomicU64,
    /// Requests that failed at it (connect errors, errors before a response).
    pub errors: AtomicU64,
    /// Requests in progress right now.
    pub in_flight: AtomicU64,
}

impl Backend {
    /// A new backend, healthy until a probe or a request says otherwise.
    pub fn new(target: Target) -> Backend {
        Backend {
            id: NEXT_ID.fetch_add(1, Relaxed),
            target,
            healthy: AtomicBool::new(true),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Whether selection may pick it.
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Sets the routable flag; returns the previous value.
    pub fn set_healthy(&self, up: bool) -> bool {
        self.healthy.swap(up, Relaxed)
    }
}
