//! Consistent hashing with a Maglev lookup table (Eisenbud et al., NSDI 2016): built once per
//! backend set from the backends' addresses, so two balancers with the same list agree on every
//! key, and removing one of n backends moves about 1/n of the keys. A request without a key
//! falls back to round robin.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, COOKIE};

use super::round_robin::RoundRobin;
use super::{Pick, Select};
use crate::core::backend::Backend;

/// Table size: a prime well above 100 × any realistic backend count (the paper's 65537).
const TABLE_SIZE: usize = 65_537;

/// What a request is hashed on (`--hash-key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    Ip,
    /// The value of a request header.
    Header(HeaderName),
    /// The value of a cookie.
    Cookie(String),
}

impl HashKey {
    /// Parses `ip`, `header:NAME` or `cookie:NAME`; the error names the bad value.
    pub fn parse(s: &str) -> Result<HashKey, String> {
        let bad = || format!("'{s}' is not a hash key (use ip, header:NAME or cookie:NAME)");
        match s.split_once(':') {
            None if s == "ip" => Ok(HashKey::Ip),
            Some(("header", name)) => HeaderName::from_bytes(name.trim().as_bytes())
                .map(HashKey::Header)
                .map_err(|_| bad()),
            Some(("cookie", name))
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && b != b'=' && b != b';') =>
            {
                Ok(HashKey::Cookie(name.to_string()))
            }
            _ => Err(bad()),
        }
    }

    /// The request's key hashed, or `None` when it has no such header or cookie. Hashes the
    /// bytes in place: no allocation.
    pub fn of(&self, headers: &HeaderMap, peer: SocketAddr) -> Option<u64> {
        match self {
            HashKey::Ip => Some(match peer.ip() {
                IpAddr::V4(ip) => hash(&ip.octets(), 0),
                IpAddr::V6(ip) => hash(&ip.octets(), 0),
            }),
            HashKey::Header(name) => headers.get(name).map(|v| hash(v.as_bytes(), 0)),
            HashKey::Cookie(name) => headers
                .get_all(COOKIE)
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
                .find_map(|pair| {
                    let pair = pair.trim_ascii();
                    let value = pair.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
                    Some(hash(value, 0))
                }),
        }
    }
}

/// FNV-1a with a seed, finished with the splitmix64 mixer: stable across processes and
/// versions (unlike std's hasher), which is what lets balancers agree without talking.
pub fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A Maglev lookup table over one backend set.
pub struct Maglev {
    table: Vec<u16>,
    fallback: RoundRobin,
}

impl Maglev {
    /// Fills the table from the backends' addresses. Their order does not matter: Maglev's
    /// turn-taking depends on it, so the table is built over the addresses sorted, and two
    /// balancers that learned the same backends in another order (discovery) still agree.
    pub fn new(set: &[Arc<Backend>]) -> Maglev {
        let names: Vec<String> = set.iter().map(|b| b.target.to_string()).collect();
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| names[a].cmp(&names[b]));
        let sorted: Vec<String> = order.iter().map(|&i| names[i].clone()).collect();
        let table = populate(&sorted, TABLE_SIZE)
            .into_iter()
            .map(|j| order[j as usize] as u16)
            .collect();
        Maglev {
            table,
            fallback: RoundRobin::default(),
        }
    }

    /// The backend index a key maps to, health aside.
    pub fn lookup(&self, key: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(key % self.table.len() as u64) as usize] as usize)
    }
}

impl Select for Maglev {
    fn first(&self, set: &[Arc<Backend>], pick: &mut Pick<'_>) -> Option<usize> {
        match pick.key {
            // An out backend's keys go to its ring successor (the pool's fallback order), and
            // come back when it does.
            Some(k) => self.lookup(k),
            None => self.fallback.first(set, pick),
        }
    }
}

/// Maglev population: each backend walks its own permutation of the slots (offset and skip
/// from two hashes of its name) and backends take turns claiming their next free slot.
fn populate(names: &[String], m: usize) -> Vec<u16> {
    let n = names.len().min(u16::MAX as usize);
    if n == 0 {
        return Vec::new();
    }
    let perm: Vec<(usize, usize)> = names[..n]
        .iter()
        .map(|s| {
            let offset = (hash(s.as_bytes(), 0x6d61_676c) % m as u64) as usize;
            let skip = (hash(s.as_bytes(), 0x6576_0001) % (m as u64 - 1)) as usize + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0usize; n];
    let mut table = vec![u16::MAX; m];
    let mut filled = 0;
    'fill: loop {
        for i in 0..n {
            let (offset, skip) = perm[i];
            let mut c = (offset + next[i] * skip) % m;
            while table[c] != u16::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            table[c] = i as u16;
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::super::testutil::set;
    use super::*;
    use http::HeaderValue;

    fn keys() -> impl Iterator<Item = u64> {
        (0..1000u32).map(|k| hash(format!("user-{k}").as_bytes(), 0))
    }

    #[test]
    fn the_order_of_the_set_does_not_matter() {
        let fwd = set(5, &[]);
        let mut rev = fwd.clone();
        rev.reverse();
        let (a, b) = (Maglev::new(&fwd), Maglev::new(&rev));
        for k in 0..TABLE_SIZE as u64 {
            let pa = fwd[a.lookup(k).unwrap()].target.port;
            let pb = rev[b.lookup(k).unwrap()].target.port;
            assert_eq!(pa, pb);
        }
    }

    #[test]
    fn two_tables_from_the_same_list_agree() {
        let (a, b) = (Maglev::new(&set(5, &[])), Maglev::new(&set(5, &[])));
        assert!(keys().all(|k| a.lookup(k) == b.lookup(k)));
    }

    #[test]
    fn spreads_evenly() {
        let t = Maglev::new(&set(4, &[]));
        let mut c = [0usize; 4];
        for i in &t.table {
            c[*i as usize] += 1;
        }
        for n in c {
            assert!(n.abs_diff(TABLE_SIZE / 4) < TABLE_SIZE / 50, "{c:?}");
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let full = set(5, &[]);
        let before = Maglev::new(&full);
        let rest: Vec<_> = full
            .iter()
            .filter(|b| b.target.port != 3)
            .cloned()
            .collect();
        let after = Maglev::new(&rest);
        let name = |set: &[Arc<Backend>], i: Option<usize>| set[i.unwrap()].target.port;
        let moved = keys()
            .filter(|&k| name(&full, before.lookup(k)) != name(&rest, after.lookup(k)))
            .count();
        // The removed backend's keys (about 200 of 1000) must move; Maglev moves few others.
        assert!((150..=300).contains(&moved), "moved {moved} of 1000");
    }

    #[test]
    fn keys_from_requests() {
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("alice"));
        h.append(COOKIE, HeaderValue::from_static("a=1; sid=xyz"));
        let peer: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let other_port: SocketAddr = "192.0.2.1:6000".parse().unwrap();
        assert_eq!(HashKey::Ip.of(&h, peer), HashKey::Ip.of(&h, other_port));
        let header = HashKey::parse("header:X-User").unwrap();
        assert_eq!(header.of(&h, peer), Some(hash(b"alice", 0)));
        let cookie = HashKey::parse("cookie:sid").unwrap();
        assert_eq!(cookie.of(&h, peer), Some(hash(b"xyz", 0)));
        assert_eq!(HashKey::parse("cookie:si").unwrap().of(&h, peer), None);
        assert_eq!(HashKey::parse("header:x-none").unwrap().of(&h, peer), None);
        for bad in [
            "",
            "ip:",
            "header:",
            "header:a b",
            "cookie:",
            "path",
            "cookie:a=b",
        ] {
            assert!(HashKey::parse(bad).unwrap_err().contains(bad), "{bad}");
        }
    }
}
