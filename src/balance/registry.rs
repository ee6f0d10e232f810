//! The service registry: add, drain, enable and remove backends at run time, and apply a
//! reloaded config file. Every change builds a new backend set and swaps it into the pool, so
//! the request path never waits; a mutex here only orders the changes among themselves.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::core::addr::Target;
use crate::core::backend::Backend;
use crate::core::pool::{BackendSet, Pool};

/// Why a registry change was refused; the admin API maps these to HTTP statuses.
#[derive(Debug, PartialEq, Eq)]
pub enum RegistryError {
    /// The request itself is wrong (400).
    BadRequest(String),
    /// No such backend (404).
    NotFound(String),
    /// The backend is already registered (409).
    Conflict(String),
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryError::BadRequest(m)
            | RegistryError::NotFound(m)
            | RegistryError::Conflict(m) => f.write_str(m),
        }
    }
}

/// What a config reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Backends the file added.
    pub added: Vec<String>,
    /// Backends the file no longer names (now draining, removed once idle).
    pub removed: Vec<String>,
    /// Backends kept as they were (counters and health preserved).
    pub kept: usize,
}

/// Backend weights accepted by the registry and the config file.
pub const MAX_WEIGHT: u32 = 1000;

/// Checks a weight given by a user.
pub fn check_weight(w: u32) -> Result<u32, String> {
    if (1..=MAX_WEIGHT).contains(&w) {
        Ok(w)
    } else {
        Err(format!("weight {w} is out of range 1-{MAX_WEIGHT}"))
    }
}

/// Changes to the pool's backend set, from the admin API and from reloads.
pub struct Registry {
    pool: Arc<Pool>,
    /// Who added the backends that did not come from the config file; a reload keeps them.
    owners: Mutex<Owners>,
}

/// Backends added through the API or by a discovery source (not from the config): they survive
/// a reload that does not name them.
#[derive(Default)]
struct Owners {
    api: HashSet<Target>,
    /// Per discovery source (by its name): the backends it added and still wants.
    sources: HashMap<String, HashSet<Target>>,
}

impl Owners {
    fn owned(&self, t: &Target) -> bool {
        self.api.contains(t) || self.sources.values().any(|s| s.contains(t))
    }

    fn disown(&mut self, t: &Target) {
        self.api.remove(t);
        for s in self.sources.values_mut() {
            s.remove(t);
        }
    }
}

impl Registry {
    /// A registry over `pool`; the backends already in it count as coming from the config.
    pub fn new(pool: Arc<Pool>) -> Registry {
        Registry {
            pool,
            owners: Mutex::new(Owners::default()),
        }
    }

    /// The pool this registry changes.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    fn lock(&self) -> MutexGuard<'_, Owners> {
        // A panic while holding it cannot leave the set half-changed (the swap is atomic).
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backend at `target`, if registered and not on its way out.
    pub fn find(&self, target: &Target) -> Option<Arc<Backend>> {
        self.pool
            .snapshot()
            .iter()
            .find(|b| b.target == *target && !b.ops.removing.load(Relaxed))
            .cloned()
    }

    /// Registers a backend; it takes traffic once its health checks pass (`rise` in a row). A
    /// backend whose delete is still draining is taken back instead of added twice.
    pub fn add(&self, target: Target, weight: u32) -> Result<Arc<Backend>, RegistryError> {
        let weight = check_weight(weight).map_err(RegistryError::BadRequest)?;
        let mut api = self.lock();
        let set = self.pool.snapshot();
        if let Some(b) = set.iter().find(|b| b.target == target) {
            if !b.ops.removing.swap(false, Relaxed) {
                return Err(RegistryError::Conflict(format!(
                    "backend {target} is already registered"
                )));
            }
            b.ops.draining.store(false, Relaxed);
            if b.set_weight(weight) {
                self.pool.replace((**set).clone()); // rebuild the weighted tables
            }
            api.api.insert(target);
            return Ok(b.clone());
        }
        let b = Arc::new(Backend::weighted(target.clone(), weight).start_down());
        let mut next: BackendSet = (**set).clone();
        next.push(b.clone());
        self.pool.replace(next);
        api.api.insert(target);
        Ok(b)
    }

    /// Starts or ends maintenance: a draining backend gets no new requests.
    pub fn set_draining(&self, target: &Target, on: bool) -> Result<Arc<Backend>, RegistryError> {
        let _api = self.lock();
        let b = self.find(target).ok_or_else(|| not_found(target))?;
        b.ops.draining.store(on, Relaxed);
        Ok(b)
    }

    /// Deregisters gracefully: the backend drains now and leaves the set at the first
    /// [`Registry::sweep`] that finds it idle.
    pub fn remove(&self, target: &Target) -> Result<Arc<Backend>, RegistryError> {
        let mut api = self.lock();
        let b = self.find(target).ok_or_else(|| not_found(target))?;
        b.ops.draining.store(true, Relaxed);
        b.ops.removing.store(true, Relaxed);
        api.api.remove(target);
        Ok(b)
    }

    /// Takes out every backend being removed whose in-flight count is 0. Requests routed just
    /// before the drain hold their own reference to the backend, so they finish either way.
    /// Returns how many removals are still waiting.
    pub fn sweep(&self) -> usize {
        let set = self.pool.snapshot();
        if !set.iter().any(|b| b.ops.removing.load(Relaxed)) {
            return 0;
        }
        let _api = self.lock();
        let set = self.pool.snapshot();
        let gone = |b: &Backend| b.ops.removing.load(Relaxed) && b.in_flight.load(Relaxed) == 0;
        if set.iter().any(|b| gone(b)) {
            let next: BackendSet = set.iter().filter(|b| !gone(b)).cloned().collect();
            for b in set.iter().filter(|b| gone(b)) {
                crate::term::info(&format!("backend {} removed", b.target));
            }
            self.pool.replace(next);
        }
        self.pool
            .snapshot()
            .iter()
            .filter(|b| b.ops.removing.load(Relaxed))
            .count()
    }

    /// Applies the backends a (re)loaded config names: new ones are added (taking traffic once
    /// their health checks pass), ones it no longer
    /// names are removed gracefully unless they were registered through the API, the rest keep
    /// their counters and health. A backend the file names becomes the file's (its weight wins).
    pub fn apply_config(&self, wanted: &[(Target, u32)]) -> ReloadSummary {
        let mut api = self.lock();
        let set = self.pool.snapshot();
        let mut summary = ReloadSummary::default();
        let mut next: BackendSet = Vec::with_capacity(set.len() + wanted.len());
        for b in set.iter() {
            match wanted.iter().find(|(t, _)| *t == b.target) {
                Some((_, w)) => {
                    if b.ops.removing.swap(false, Relaxed) {
                        b.ops.draining.store(false, Relaxed);
                    }
                    b.set_weight(*w);
                    api.disown(&b.target);
                    summary.kept += 1;
                }
                None if api.owned(&b.target) || b.ops.removing.load(Relaxed) => {
                    summary.kept += usize::from(!b.ops.removing.load(Relaxed));
                }
                None => {
                    b.ops.draining.store(true, Relaxed);
                    b.ops.removing.store(true, Relaxed);
                    summary.removed.push(b.target.to_string());
                }
            }
            next.push(b.clone());
        }
        summary.added = add_missing(&mut next, wanted);
        self.pool.replace(next);
        summary
    }
}

impl Registry {
    /// Makes the backends discovery source `source` added match `wanted` (its whole current
    /// answer): new ones are added (taking traffic once their health checks pass), ones it no
    /// longer wants are removed gracefully unless the config file, the API or another source
    /// also has them, and a backend someone else already has is left to them. The weight a
    /// source gives applies to the backends it owns.
    pub fn apply_source(&self, source: &str, wanted: &[(Target, u32)]) -> ReloadSummary {
        let mut owners = self.lock();
        let set = self.pool.snapshot();
        let mut summary = ReloadSummary::default();
        let mut mine = owners.sources.remove(source).unwrap_or_default();
        let mut next: BackendSet = (**set).clone();
        let mut reweighted = false;
        for b in &next {
            let want = wanted.iter().find(|(t, _)| *t == b.target);
            let owned_here = mine.contains(&b.target);
            match want {
                Some((t, w)) if owned_here || b.ops.removing.load(Relaxed) => {
                    if b.ops.removing.swap(false, Relaxed) {
                        b.ops.draining.store(false, Relaxed);
                        summary.added.push(t.to_string());
                    } else {
                        summary.kept += 1;
                    }
                    reweighted |= b.set_weight(*w);
                    mine.insert(t.clone());
                }
                Some((t, _)) => {
                    // The API's or another source's: share it, so it stays while either wants
                    // it. The config file's stays the file's.
                    if owners.owned(t) {
                        mine.insert(t.clone());
                    }
                    summary.kept += 1;
                }
                None if owned_here => {
                    mine.remove(&b.target);
                    if !owners.owned(&b.target) && !b.ops.removing.swap(true, Relaxed) {
                        b.ops.draining.store(true, Relaxed);
                        summary.removed.push(b.target.to_string());
                    }
                }
                None => {}
            }
        }
        let before = next.len();
        summary.added.extend(add_missing(&mut next, wanted));
        mine.extend(next[before..].iter().map(|b| b.target.clone()));
        owners.sources.insert(source.to_string(), mine);
        if reweighted || !summary.added.is_empty() || !summary.removed.is_empty() {
            self.pool.replace(next);
        }
        summary
    }
}

/// Appends a new backend (down until its health checks pass) for every wanted target the set
/// lacks; returns their addresses.
fn add_missing(next: &mut BackendSet, wanted: &[(Target, u32)]) -> Vec<String> {
    let mut added = Vec::new();
    for (t, w) in wanted {
        if next.iter().any(|b| b.target == *t) {
            continue;
        }
        let b = Arc::new(Backend::weighted(t.clone(), *w).start_down());
        added.push(t.to_string());
        next.push(b);
    }
    added
}

fn not_found(t: &Target) -> RegistryError {
    RegistryError::NotFound(format!("no backend {t}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    fn registry(ports: &[&str]) -> Registry {
        Registry::new(Arc::new(Pool::new(ports.iter().map(|p| t(p)))))
    }

    fn ports(r: &Registry) -> Vec<u16> {
        r.pool().snapshot().iter().map(|b| b.target.port).collect()
    }

    #[test]
    fn a_changed_weight_alone_rebuilds_the_weighted_tables() {
        use crate::core::select::Algorithm;
        let pool = Arc::new(Pool::with_policy(
            [],
            Algorithm::Weighted,
            std::time::Duration::ZERO,
        ));
        let r = Registry::new(pool.clone());
        // The source's backends (new ones start down until probed).
        r.apply_source("dns", &[(t(":1"), 1), (t(":2"), 1)]);
        for b in pool.snapshot().iter() {
            b.set_healthy(true);
        }
        let first = |n| {
            let mut rng = fastrand::Rng::with_seed(1);
            (0..n)
                .filter(|_| pool.pick(None, &mut rng).next().unwrap().target.port == 1)
                .count()
        };
        assert_eq!(first(400), 200);
        // The source now wants :1 at weight 3 and nothing else changes.
        r.apply_source("dns", &[(t(":1"), 3), (t(":2"), 1)]);
        assert_eq!(first(400), 300, "3:1 after a weight-only change");
    }

    #[test]
    fn add_then_conflict_then_bad_weight() {
        let r = registry(&[":1"]);
        r.add(t(":2"), 3).unwrap();
        assert_eq!(ports(&r), [1, 2]);
        assert_eq!(r.find(&t(":2")).unwrap().weight(), 3);
        assert!(matches!(r.add(t(":2"), 1), Err(RegistryError::Conflict(_))));
        assert!(matches!(
            r.add(t(":3"), 0),
            Err(RegistryError::BadRequest(_))
        ));
        assert_eq!(ports(&r), [1, 2]);
    }

    #[test]
    fn remove_waits_for_in_flight() {
        let r = registry(&[":1", ":2"]);
        let b = r.find(&t(":2")).unwrap();
        b.in_flight.store(1, Relaxed);
        r.remove(&t(":2")).unwrap();
        assert!(!b.is_routable());
        assert_eq!(r.sweep(), 1);
        assert_eq!(ports(&r), [1, 2]);
        b.in_flight.store(0, Relaxed);
        assert_eq!(r.sweep(), 0);
        assert_eq!(ports(&r), [1]);
        assert!(matches!(
            r.remove(&t(":2")),
            Err(RegistryError::NotFound(_))
        ));
    }

    #[test]
    fn drain_and_enable() {
        let r = registry(&[":1"]);
        r.set_draining(&t(":1"), true).unwrap();
        assert_eq!(r.pool().healthy_count(), 0);
        r.set_draining(&t(":1"), false).unwrap();
        assert_eq!(r.pool().healthy_count(), 1);
    }

    #[test]
    fn reload_keeps_api_backends_unless_the_file_names_them() {
        let r = registry(&[":1", ":2"]);
        r.add(t(":3"), 1).unwrap();
        r.add(t(":4"), 1).unwrap();
        let s = r.apply_config(&[(t(":1"), 1), (t(":4"), 5), (t(":5"), 1)]);
        assert_eq!(s.added, ["127.0.0.1:5"]);
        assert_eq!(s.removed, ["127.0.0.1:2"]);
        r.sweep();
        assert_eq!(ports(&r), [1, 3, 4, 5]);
        assert_eq!(r.find(&t(":4")).unwrap().weight(), 5);
        // :4 now belongs to the file: a reload without it removes it; :3 still survives.
        r.apply_config(&[(t(":1"), 1)]);
        r.sweep();
        assert_eq!(ports(&r), [1, 3]);
    }

    #[test]
    fn a_source_owns_only_what_it_added() {
        let r = registry(&[":1"]);
        let s = r.apply_source("dns", &[(t(":1"), 1), (t(":2"), 1), (t(":3"), 2)]);
        assert_eq!((s.added.len(), s.kept), (2, 1));
        assert_eq!(r.find(&t(":3")).unwrap().weight(), 2);
        // A reload that names none of them keeps what the source added.
        r.apply_config(&[(t(":1"), 1)]);
        r.sweep();
        assert_eq!(ports(&r), [1, 2, 3]);
        // The source dropping :1 (the file's) and :2 (its own) removes only :2.
        let s = r.apply_source("dns", &[(t(":3"), 2)]);
        assert_eq!(s.removed, ["127.0.0.1:2"]);
        r.sweep();
        assert_eq!(ports(&r), [1, 3]);
        // Another source wanting :3 too keeps it when the first lets go.
        r.apply_source("etcd", &[(t(":3"), 1)]);
        r.apply_source("dns", &[]);
        r.sweep();
        assert_eq!(ports(&r), [1, 3]);
        // Taken back while draining.
        r.apply_source("etcd", &[]);
        assert!(r.find(&t(":3")).is_none());
        r.apply_source("etcd", &[(t(":3"), 1)]);
        r.sweep();
        assert_eq!(ports(&r), [1, 3]);
    }
}
