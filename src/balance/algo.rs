//! Load-balancing algorithms: which of a service's servers takes the next request.
//!
//! Owns round robin (an atomic counter for equal weights, nginx's smooth weighted round robin
//! otherwise), least connections, power of two choices, weighted random and consistent hashing
//! (weighted rendezvous over the servers' stable "host:port" ids). A balancer only returns an
//! index into the service's server list, and only of a server with weight > 0 that is
//! `available` at the given instant; it never sees requests or sockets and never panics, whatever
//! states it is given (a server without a state counts as unavailable).
//!
//! No lock per pick: every algorithm is lock-free. Smooth weighted round robin is written once,
//! as `SmoothWrr`, and also used by weighted composite services (`routing::service`): one cycle
//! of nginx's sequence over the usable servers is precomputed (a plan, swapped whole through an
//! `ArcSwap`) and an atomic counter walks it. The plan is recomputed only when a pick finds the
//! usable set changed — its server unusable, or at the start of a cycle a different set usable —
//! so a down server's share goes to the others by weight and, with every server up, the sequence
//! is exactly nginx's (weights {5,1,1}: a a b a c a a). A cycle longer than `MAX_CYCLE` entries is
//! made over proportionally scaled weights (each usable server keeps at least one turn).
//!
//! Consistent hashing must give the same answer on every run and machine so that several
//! routers agree: it uses FNV-1a plus a fixed 64-bit finalizer, never a randomly keyed hasher.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use super::state::ServerState;

/// Where a consistent-hash balancer takes a request's key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(http::HeaderName),
    Cookie(String),
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastConn,
    P2c,
    Random,
    ConsistentHash(HashKey),
}

#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    weights: Vec<u32>,
    /// Per-server seed for rendezvous hashing, derived from the stable id only.
    id_hashes: Vec<u64>,
    /// Every weight is the same (kind "round_robin", lock-free path).
    uniform: bool,
    /// Every non-zero weight is the same: rendezvous can compare hashes exactly, no floats.
    uniform_positive: bool,
    /// Round robin position, and least_conn's rotating tie-break start.
    next: AtomicUsize,
    /// Smooth weighted round robin; also the fallback for hash requests without a key.
    smooth: SmoothWrr,
}

impl Balancer {
    /// `servers`: (stable id — the server's "host:port" —, weight) in server order.
    /// Weight 0 = never picked.
    pub fn new(algorithm: Algorithm, servers: &[(&str, u32)]) -> Balancer {
        let weights: Vec<u32> = servers.iter().map(|(_, w)| *w).collect();
        let first = weights.first().copied().unwrap_or(0);
        let uniform = weights.iter().all(|w| *w == first);
        let mut positive = weights.iter().filter(|w| **w > 0);
        let first_positive = positive.next().copied();
        let uniform_positive = positive.all(|w| Some(*w) == first_positive);
        Balancer {
            algorithm,
            id_hashes: servers
                .iter()
                .map(|(id, _)| fmix64(fnv1a(id.as_bytes())))
                .collect(),
            smooth: SmoothWrr::new(&weights),
            weights,
            uniform,
            uniform_positive,
            next: AtomicUsize::new(0),
        }
    }

    /// "round_robin", "weighted_round_robin", "least_conn", "p2c", "random", "consistent_hash".
    pub fn kind(&self) -> &'static str {
        match self.algorithm {
            Algorithm::RoundRobin if self.uniform => "round_robin",
            Algorithm::RoundRobin => "weighted_round_robin",
            Algorithm::LeastConn => "least_conn",
            Algorithm::P2c => "p2c",
            Algorithm::Random => "random",
            Algorithm::ConsistentHash(_) => "consistent_hash",
        }
    }

    pub fn algorithm(&self) -> &Algorithm {
        &self.algorithm
    }

    /// `states[i]` is server i's live state. `key`: this request's hash key bytes (only used by
    /// ConsistentHash; None when the request has no key). Returns the index of a server with
    /// weight > 0 that is available at `now`, or None when there is none.
    pub fn pick(
        &self,
        states: &[Arc<ServerState>],
        key: Option<&[u8]>,
        now: Instant,
    ) -> Option<usize> {
        let usable = |i: usize| -> bool {
            self.weights.get(i).is_some_and(|w| *w > 0)
                && states.get(i).is_some_and(|s| s.available(now))
        };
        match &self.algorithm {
            Algorithm::RoundRobin if self.uniform => self.round_robin(&usable),
            Algorithm::RoundRobin => self.smooth.pick(&usable),
            Algorithm::LeastConn => self.least_conn(states, &usable),
            Algorithm::P2c => self.p2c(states, &usable),
            Algorithm::Random => self.weighted_random(&usable),
            Algorithm::ConsistentHash(_) => match key {
                Some(key) => self.rendezvous(key, &usable),
                None => self.smooth.pick(&usable),
            },
        }
    }

    fn len(&self) -> usize {
        self.weights.len()
    }

    fn round_robin(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let skipped = (0..n).find(|off| usable((start + off) % n))?;
        if skipped > 0 {
            // Move the counter past the skipped servers too, so the server after a down one
            // does not get the down one's turn as well as its own.
            self.next.fetch_add(skipped, Ordering::Relaxed);
        }
        Some((start + skipped) % n)
    }

    fn least_conn(
        &self,
        states: &[Arc<ServerState>],
        usable: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        // Rotating start: among equally loaded servers the first one scanned wins, so equal
        // idle servers alternate instead of all traffic going to server 0.
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64, u64)> = None;
        for off in 0..n {
            let i = (start + off) % n;
            if !usable(i) {
                continue;
            }
            let Some((load, w)) = self.load(states, i) else {
                continue;
            };
            match best {
                // load/w < best_load/best_w, cross-multiplied to stay in integers.
                Some((_, bl, bw)) if load * bw >= bl * w => {}
                _ => best = Some((i, load, w)),
            }
        }
        best.map(|(i, _, _)| i)
    }

    fn p2c(&self, states: &[Arc<ServerState>], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let count = (0..self.len()).filter(|i| usable(*i)).count();
        match count {
            0 => None,
            1 => nth_usable(self.len(), usable, 0),
            _ => {
                let r1 = fastrand::usize(0..count);
                // Drawing from count-1 and shifting past r1 keeps the two picks distinct.
                let mut r2 = fastrand::usize(0..count - 1);
                if r2 >= r1 {
                    r2 += 1;
                }
                let a = nth_usable(self.len(), usable, r1)?;
                let Some(b) = nth_usable(self.len(), usable, r2) else {
                    return Some(a);
                };
                match (self.load(states, a), self.load(states, b)) {
                    (Some((la, wa)), Some((lb, wb))) if lb * wa < la * wb => Some(b),
                    _ => Some(a),
                }
            }
        }
    }

    fn weighted_random(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let total: u64 = self
            .weights
            .iter()
            .enumerate()
            .filter(|(i, _)| usable(*i))
            .map(|(_, w)| u64::from(*w))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = fastrand::u64(0..total);
        for (i, w) in self.weights.iter().enumerate() {
            if !usable(i) {
                continue;
            }
            let w = u64::from(*w);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }

    /// Weighted rendezvous (highest random weight): each key goes to the usable server with the
    /// top score, so a server leaving only moves the keys it held.
    fn rendezvous(&self, key: &[u8], usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let key_hash = fnv1a(key);
        let candidates = self
            .id_hashes
            .iter()
            .zip(&self.weights)
            .enumerate()
            .filter(|(i, _)| usable(*i))
            .map(|(i, (id, w))| (i, fmix64(key_hash ^ *id), *w));
        if self.uniform_positive {
            // Equal weights: the score is monotonic in the hash, so compare integers exactly
            // and stay bit-identical across machines.
            return candidates
                .max_by_key(|(i, h, _)| (*h, *i))
                .map(|(i, _, _)| i);
        }
        // score = w / -ln(u), u uniform in (0,1): the classic weighted rendezvous formula,
        // which gives each server a share of keys proportional to its weight.
        candidates
            .map(|(i, h, w)| {
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                (i, f64::from(w) / -u.ln(), h)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(a.2.cmp(&b.2)))
            .map(|(i, _, _)| i)
    }

    /// (in flight, weight) of a server, both widened so cross-multiplying cannot overflow.
    fn load(&self, states: &[Arc<ServerState>], i: usize) -> Option<(u64, u64)> {
        let load = u64::from(states.get(i)?.in_flight());
        let w = u64::from(*self.weights.get(i)?);
        Some((load, w))
    }
}

/// Longest precomputed cycle (entries) of a smooth weighted round robin; longer ones are made
/// over scaled weights. Also bounded by `MAX_PLAN_WORK` / servers, so that recomputing a plan
/// (the rare pick that finds the usable set changed) stays well under a millisecond.
pub const MAX_CYCLE: u64 = 1 << 16;
const MAX_PLAN_WORK: u64 = 1 << 20;

/// nginx's smooth weighted round robin, lock-free: an atomic counter over a precomputed cycle.
///
/// `weights[i]` is entry i's weight (0 = never picked). `pick` is given which entries are usable
/// now and returns one of them; the cycle is recomputed only when that set differs from the one
/// the current plan was made for (found when the counter lands on an unusable entry, or checked
/// once per cycle so recovered entries rejoin). Concurrent picks never block: they may both
/// recompute an identical plan, and the counter's phase in a new plan is arbitrary.
pub struct SmoothWrr {
    weights: Vec<u32>,
    plan: ArcSwap<Plan>,
    next: AtomicUsize,
}

/// One cycle of the smooth sequence over the entries in `members`.
struct Plan {
    /// `members[i]`: entry i was usable (and weighted) when the plan was made.
    members: Vec<bool>,
    /// Entry indices in nginx order; empty when no entry was usable.
    cycle: Vec<u32>,
}

impl SmoothWrr {
    /// A plan over every weighted entry, as if all were usable.
    pub fn new(weights: &[u32]) -> SmoothWrr {
        let members: Vec<bool> = weights.iter().map(|w| *w > 0).collect();
        SmoothWrr {
            plan: ArcSwap::from_pointee(Plan::new(weights, members)),
            weights: weights.to_vec(),
            next: AtomicUsize::new(0),
        }
    }

    /// Number of entries (usable or not).
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Index of a usable entry with weight > 0, or None when there is none. `usable(i)` is
    /// asked only for `i < len()`.
    pub fn pick(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let ok = |i: usize| self.weights.get(i).is_some_and(|w| *w > 0) && usable(i);
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        let plan = self.plan.load();
        if let Some(i) = plan.at(k) {
            // At the start of each cycle, also check that no other entry came back.
            if ok(i) && (k % plan.cycle.len() != 0 || plan.same_members(&ok)) {
                return Some(i);
            }
        }
        // The usable set changed (or nothing was usable): make a plan for the current one.
        if !(0..self.len()).any(ok) {
            return None;
        }
        let members: Vec<bool> = (0..self.len()).map(ok).collect();
        let fresh = Arc::new(Plan::new(&self.weights, members));
        self.plan.store(Arc::clone(&fresh));
        // Same counter value, so the first pick of a fresh plan is its first entry when the
        // counter is at a cycle start, as in a plan made from the beginning. (Walking on only
        // matters if an entry went down again meanwhile.)
        (0..fresh.cycle.len())
            .filter_map(|off| fresh.at(k.wrapping_add(off)))
            .find(|i| ok(*i))
    }
}

impl fmt::Debug for SmoothWrr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plan = self.plan.load();
        f.debug_struct("SmoothWrr")
            .field("weights", &self.weights)
            .field("members", &plan.members)
            .field("cycle_len", &plan.cycle.len())
            .finish()
    }
}

impl Plan {
    fn new(weights: &[u32], members: Vec<bool>) -> Plan {
        let picked: Vec<(u32, u64)> = weights
            .iter()
            .zip(&members)
            .enumerate()
            .filter(|(_, (w, m))| **m && **w > 0)
            .filter_map(|(i, (w, _))| Some((u32::try_from(i).ok()?, u64::from(*w))))
            .collect();
        Plan {
            cycle: smooth_cycle(&picked),
            members,
        }
    }

    /// The entry at counter value `k`.
    fn at(&self, k: usize) -> Option<usize> {
        let n = self.cycle.len();
        if n == 0 {
            return None;
        }
        self.cycle.get(k % n).map(|i| *i as usize)
    }

    fn same_members(&self, ok: &dyn Fn(usize) -> bool) -> bool {
        self.members.iter().enumerate().all(|(i, m)| *m == ok(i))
    }
}

/// One full cycle of nginx's smooth weighted round robin over (index, weight > 0) pairs: each
/// step adds every weight to its running value, picks the largest (the first on ties) and takes
/// the total off it. Weights are divided by their gcd first (the sequence of k·w is the one of w
/// repeated), and scaled down when the cycle would exceed the caps.
fn smooth_cycle(entries: &[(u32, u64)]) -> Vec<u32> {
    if entries.is_empty() {
        return Vec::new();
    }
    let g = entries.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
    let mut weights: Vec<i64> = entries
        .iter()
        .map(|(_, w)| i64::try_from(*w / g).unwrap_or(i64::MAX))
        .collect();
    let n = entries.len() as u64;
    let cap = MAX_CYCLE.min(MAX_PLAN_WORK / n).max(n);
    let total: u64 = weights.iter().map(|w| w.unsigned_abs()).sum();
    if total > cap {
        // Proportional shares of `cap` turns, each at least 1.
        for w in &mut weights {
            let scaled = u128::from(w.unsigned_abs()) * u128::from(cap) / u128::from(total);
            *w = i64::try_from(scaled).unwrap_or(i64::MAX).max(1);
        }
    }
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best: Option<usize> = None;
        let mut best_value = i64::MIN;
        for (j, (cur, w)) in current.iter_mut().zip(&weights).enumerate() {
            *cur += w;
            if *cur > best_value {
                best_value = *cur;
                best = Some(j);
            }
        }
        let Some(j) = best else { break };
        if let Some(c) = current.get_mut(j) {
            *c -= total;
        }
        if let Some((index, _)) = entries.get(j) {
            cycle.push(*index);
        }
    }
    cycle
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Index of the `k`-th usable server, counting from 0.
fn nth_usable(n: usize, usable: &dyn Fn(usize) -> bool, k: usize) -> Option<usize> {
    (0..n).filter(|i| usable(*i)).nth(k)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// MurmurHash3's 64-bit finalizer: FNV-1a alone mixes its last bytes poorly, which would
/// skew rendezvous scores for keys differing only at the end.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::super::state::{InFlight, PassivePolicy};
    use super::*;
    use std::time::Duration;

    fn states(n: usize) -> Vec<Arc<ServerState>> {
        (0..n).map(|_| ServerState::new()).collect()
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:8080", i + 1)).collect()
    }

    fn servers<'a>(ids: &'a [String], weights: &[u32]) -> Vec<(&'a str, u32)> {
        ids.iter()
            .map(String::as_str)
            .zip(weights.iter().copied())
            .collect()
    }

    fn seq(b: &Balancer, st: &[Arc<ServerState>], n: usize) -> Vec<usize> {
        let now = Instant::now();
        (0..n).filter_map(|_| b.pick(st, None, now)).collect()
    }

    fn counts(picks: impl Iterator<Item = Option<usize>>, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for i in picks.flatten() {
            c[i] += 1;
        }
        c
    }

    #[test]
    fn kinds() {
        let id = ids(3);
        let k = |a: Algorithm, w: &[u32]| Balancer::new(a, &servers(&id, w)).kind();
        assert_eq!(k(Algorithm::RoundRobin, &[1, 1, 1]), "round_robin");
        assert_eq!(k(Algorithm::RoundRobin, &[5, 1, 1]), "weighted_round_robin");
        assert_eq!(k(Algorithm::LeastConn, &[1, 1, 1]), "least_conn");
        assert_eq!(k(Algorithm::P2c, &[1, 1, 1]), "p2c");
        assert_eq!(k(Algorithm::Random, &[1, 2, 1]), "random");
        assert_eq!(
            k(Algorithm::ConsistentHash(HashKey::ClientIp), &[1, 1, 1]),
            "consistent_hash"
        );
        let b = Balancer::new(
            Algorithm::ConsistentHash(HashKey::Cookie("sid".into())),
            &servers(&id, &[1, 1, 1]),
        );
        assert_eq!(
            b.algorithm(),
            &Algorithm::ConsistentHash(HashKey::Cookie("sid".into()))
        );
    }

    #[test]
    fn round_robin_cycles_and_skips_unavailable() {
        let id = ids(3);
        let st = states(3);
        let b = Balancer::new(Algorithm::RoundRobin, &servers(&id, &[1, 1, 1]));
        assert_eq!(seq(&b, &st, 6), vec![0, 1, 2, 0, 1, 2]);
        st[1].set_active_healthy(false);
        let s = seq(&b, &st, 6);
        assert!(!s.contains(&1));
        // The skipped server's turn is not handed to its neighbour twice in a row.
        assert_eq!(s, vec![0, 2, 0, 2, 0, 2]);
        st[1].set_active_healthy(true);
        let s = seq(&b, &st, 3);
        let mut sorted = s.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2]);
    }

    #[test]
    fn nginx_smooth_weighted_sequence() {
        let id = ids(3);
        let st = states(3);
        let b = Balancer::new(Algorithm::RoundRobin, &servers(&id, &[5, 1, 1]));
        // nginx's documented sequence for weights 5,1,1: a a b a c a a
        assert_eq!(seq(&b, &st, 7), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(seq(&b, &st, 7), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weighted_with_one_server_down() {
        let id = ids(3);
        let st = states(3);
        let b = Balancer::new(Algorithm::RoundRobin, &servers(&id, &[5, 1, 1]));
        st[0].set_active_healthy(false);
        // Only b and c (1,1) take part: they alternate.
        assert_eq!(seq(&b, &st, 4), vec![1, 2, 1, 2]);
        st[0].set_active_healthy(true);
        st[1].set_active_healthy(false);
        let c = counts((0..60).map(|_| b.pick(&st, None, Instant::now())), 3);
        assert_eq!(c[1], 0);
        // Weights 5:1 over the remaining two servers.
        assert_eq!(c, vec![50, 0, 10]);
    }

    #[test]
    fn smooth_wrr_rejoins_recovered_servers_at_the_next_cycle() {
        let id = ids(3);
        let st = states(3);
        let b = Balancer::new(Algorithm::RoundRobin, &servers(&id, &[5, 1, 1]));
        st[2].set_active_healthy(false);
        // Weights 5:1 over a and b: one full cycle is a a a b a a.
        assert_eq!(seq(&b, &st, 6), vec![0, 0, 0, 1, 0, 0]);
        st[2].set_active_healthy(true);
        // c is back within one cycle of the smaller plan, then the full sequence runs again.
        let c = counts((0..7 * 20).map(|_| b.pick(&st, None, Instant::now())), 3);
        assert!(c[2] >= 19, "{c:?}");
        assert!((95..=101).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn smooth_wrr_cycles_and_caps() {
        let seq_of = |w: &[u32], n: usize| {
            let s = SmoothWrr::new(w);
            (0..n).filter_map(|_| s.pick(&|_| true)).collect::<Vec<_>>()
        };
        assert_eq!(seq_of(&[5, 1, 1], 7), vec![0, 0, 1, 0, 2, 0, 0]);
        // Multiples of the same weights give the same sequence (the gcd is taken out).
        assert_eq!(seq_of(&[500, 100, 100], 14), seq_of(&[5, 1, 1], 14));
        assert_eq!(seq_of(&[2, 0, 1], 6), vec![0, 2, 0, 0, 2, 0]);
        assert_eq!(seq_of(&[0, 0], 3), Vec::<usize>::new());
        assert_eq!(seq_of(&[], 3), Vec::<usize>::new());
        // Weights whose cycle would be huge are scaled: the small one keeps at least one turn.
        let big = smooth_cycle(&[(0, 1_000_000), (1, 1), (2, 999_999)]);
        assert!(big.len() as u64 <= MAX_CYCLE + 3, "{}", big.len());
        let c = counts(big.iter().map(|i| Some(*i as usize)), 3);
        assert!(c[1] >= 1 && c[0].abs_diff(c[2]) <= 1, "{c:?}");
        // A 1000:1 split stays exact.
        let exact = smooth_cycle(&[(0, 1000), (1, 1)]);
        assert_eq!(
            counts(exact.iter().map(|i| Some(*i as usize)), 2),
            vec![1000, 1]
        );
    }

    #[test]
    fn smooth_wrr_is_shared_across_threads_without_a_lock() {
        let id = ids(3);
        let st = states(3);
        let b = Arc::new(Balancer::new(
            Algorithm::RoundRobin,
            &servers(&id, &[5, 1, 1]),
        ));
        let st = Arc::new(st);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (b, st) = (Arc::clone(&b), Arc::clone(&st));
                std::thread::spawn(move || {
                    let now = Instant::now();
                    counts((0..7000).map(|_| b.pick(&st, None, now)), 3)
                })
            })
            .collect();
        let mut total = vec![0; 3];
        for h in handles {
            for (t, c) in total.iter_mut().zip(h.join().unwrap()) {
                *t += c;
            }
        }
        // One counter over one cycle: the shares are exact whatever the interleaving.
        assert_eq!(total, vec![20_000, 4000, 4000]);
    }

    #[test]
    fn zero_weight_never_picked() {
        let id = ids(3);
        let st = states(3);
        let now = Instant::now();
        for alg in [
            Algorithm::RoundRobin,
            Algorithm::LeastConn,
            Algorithm::P2c,
            Algorithm::Random,
            Algorithm::ConsistentHash(HashKey::ClientIp),
        ] {
            for w in [[0, 1, 1], [0, 2, 1]] {
                let b = Balancer::new(alg.clone(), &servers(&id, &w));
                for k in 0..300u32 {
                    let key = k.to_be_bytes();
                    let keyed = (k % 2 == 0).then_some(&key[..]);
                    let p = b.pick(&st, keyed, now);
                    assert!(matches!(p, Some(1) | Some(2)), "{alg:?} {w:?} picked {p:?}");
                }
            }
            let b = Balancer::new(alg.clone(), &servers(&id, &[0, 0, 0]));
            assert_eq!(b.pick(&st, Some(b"k"), now), None, "{alg:?}");
        }
    }

    #[test]
    fn all_unavailable_or_missing_is_none() {
        let id = ids(3);
        let st = states(3);
        let now = Instant::now();
        for s in &st {
            s.set_active_healthy(false);
        }
        for alg in [
            Algorithm::RoundRobin,
            Algorithm::LeastConn,
            Algorithm::P2c,
            Algorithm::Random,
            Algorithm::ConsistentHash(HashKey::ClientIp),
        ] {
            for w in [[1, 1, 1], [3, 2, 1]] {
                let b = Balancer::new(alg.clone(), &servers(&id, &w));
                assert_eq!(b.pick(&st, None, now), None, "{alg:?}");
                assert_eq!(b.pick(&st, Some(b"key"), now), None, "{alg:?}");
                // Fewer states than servers: the missing ones count as unavailable.
                let healthy = states(1);
                for _ in 0..20 {
                    assert_eq!(b.pick(&healthy, Some(b"key"), now), Some(0), "{alg:?}");
                    assert_eq!(b.pick(&healthy, None, now), Some(0), "{alg:?}");
                }
                assert_eq!(b.pick(&[], None, now), None, "{alg:?}");
                // More states than servers: the extra ones are never returned.
                let more = states(5);
                for _ in 0..20 {
                    assert!(b.pick(&more, None, now).is_some_and(|i| i < 3), "{alg:?}");
                }
            }
            let empty = Balancer::new(alg.clone(), &[]);
            assert_eq!(empty.pick(&st, Some(b"key"), now), None);
            assert_eq!(empty.pick(&[], None, now), None);
        }
    }

    #[test]
    fn passively_ejected_server_is_skipped_until_cooldown_ends() {
        let id = ids(2);
        let st = states(2);
        let b = Balancer::new(Algorithm::RoundRobin, &servers(&id, &[1, 1]));
        let p = PassivePolicy {
            max_failures: 2,
            cooldown: Duration::from_secs(30),
        };
        let t0 = Instant::now();
        assert!(!st[0].record_failure(&p, t0));
        assert!(st[0].record_failure(&p, t0));
        let during = t0 + Duration::from_secs(29);
        assert!((0..4).all(|_| b.pick(&st, None, during) == Some(1)));
        let after = t0 + Duration::from_secs(30);
        let picks: Vec<_> = (0..4).filter_map(|_| b.pick(&st, None, after)).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");
    }

    #[test]
    fn least_conn_prefers_idle_and_alternates_ties() {
        let id = ids(3);
        let st = states(3);
        let now = Instant::now();
        let b = Balancer::new(Algorithm::LeastConn, &servers(&id, &[1, 1, 1]));
        let _g: Vec<InFlight> = vec![st[0].begin(), st[0].begin(), st[2].begin()];
        for _ in 0..10 {
            assert_eq!(b.pick(&st, None, now), Some(1));
        }
        // Equal idle servers alternate rather than always the first.
        let st2 = states(3);
        let c = counts((0..30).map(|_| b.pick(&st2, None, now)), 3);
        assert_eq!(c, vec![10, 10, 10]);
        // Load is relative to weight: 3 in flight on weight 4 beats 1 in flight on weight 1.
        let st3 = states(2);
        let w = Balancer::new(Algorithm::LeastConn, &servers(&id[..2], &[4, 1]));
        let _h: Vec<InFlight> = vec![
            st3[0].begin(),
            st3[0].begin(),
            st3[0].begin(),
            st3[1].begin(),
        ];
        for _ in 0..4 {
            assert_eq!(w.pick(&st3, None, now), Some(0));
        }
        // The idle one is ignored when it is down.
        st[1].set_active_healthy(false);
        assert_eq!(b.pick(&st, None, now), Some(2));
    }

    #[test]
    fn p2c_avoids_the_loaded_server() {
        let id = ids(3);
        let st = states(3);
        let now = Instant::now();
        let b = Balancer::new(Algorithm::P2c, &servers(&id, &[1, 1, 1]));
        let _g: Vec<InFlight> = (0..50).map(|_| st[0].begin()).collect();
        let c = counts((0..1000).map(|_| b.pick(&st, None, now)), 3);
        // Two distinct servers are always compared and the other two are idle, so the loaded
        // one never wins.
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 350 && c[2] > 350, "{c:?}");
        // With one server left it is picked whatever its load.
        st[1].set_active_healthy(false);
        st[2].set_active_healthy(false);
        assert_eq!(b.pick(&st, None, now), Some(0));
    }

    #[test]
    fn p2c_uses_both_when_equal() {
        let id = ids(2);
        let st = states(2);
        let now = Instant::now();
        let b = Balancer::new(Algorithm::P2c, &servers(&id, &[1, 1]));
        let c = counts((0..1000).map(|_| b.pick(&st, None, now)), 2);
        assert!(c[0] > 350 && c[1] > 350, "{c:?}");
    }

    #[test]
    fn random_follows_weights() {
        let id = ids(3);
        let st = states(3);
        let now = Instant::now();
        let b = Balancer::new(Algorithm::Random, &servers(&id, &[6, 3, 1]));
        let c = counts((0..10_000).map(|_| b.pick(&st, None, now)), 3);
        assert!((5400..6600).contains(&c[0]), "{c:?}");
        assert!((2600..3400).contains(&c[1]), "{c:?}");
        assert!((700..1300).contains(&c[2]), "{c:?}");
        st[0].set_active_healthy(false);
        let c = counts((0..10_000).map(|_| b.pick(&st, None, now)), 3);
        assert_eq!(c[0], 0);
        assert!((7000..8000).contains(&c[1]), "{c:?}");
    }

    /// Where user-0..user-7 land over ids(4) with equal weights; a change here means routers
    /// built from different versions would disagree.
    const PINNED: [usize; 8] = [0, 0, 3, 2, 1, 1, 2, 1];

    fn keys() -> Vec<Vec<u8>> {
        (0..1000)
            .map(|i| format!("user-{i}").into_bytes())
            .collect()
    }

    fn assign(b: &Balancer, st: &[Arc<ServerState>], keys: &[Vec<u8>]) -> Vec<usize> {
        let now = Instant::now();
        keys.iter()
            .map(|k| b.pick(st, Some(k), now).unwrap_or(usize::MAX))
            .collect()
    }

    #[test]
    fn consistent_hash_is_stable_when_a_server_goes() {
        for w in [[1u32, 1, 1, 1], [2, 1, 3, 1]] {
            let id = ids(4);
            let st = states(4);
            let ks = keys();
            let hash = Algorithm::ConsistentHash(HashKey::ClientIp);
            let b = Balancer::new(hash.clone(), &servers(&id, &w));
            let before = assign(&b, &st, &ks);
            let c = counts(before.iter().map(|i| Some(*i)), 4);
            assert!(c.iter().all(|n| *n > 100), "{w:?} {c:?}");

            // Ejected: only its keys move, and they spread over the other three.
            st[2].set_active_healthy(false);
            let ejected = assign(&b, &st, &ks);
            let mut moved_to = [0usize; 4];
            for (old, new) in before.iter().zip(&ejected) {
                if *old == 2 {
                    moved_to[*new] += 1;
                } else {
                    assert_eq!(old, new, "{w:?}: a key not on the ejected server moved");
                }
            }
            assert_eq!(moved_to[2], 0);
            assert!(
                [0, 1, 3].iter().all(|i| moved_to[*i] > 10),
                "{w:?} {moved_to:?}"
            );
            // Back up: every key returns to where it was.
            st[2].set_active_healthy(true);
            assert_eq!(assign(&b, &st, &ks), before);

            // Removed from the list: same outcome, with indices shifted down past it.
            let kept: Vec<(&str, u32)> = servers(&id, &w)
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i != 2)
                .map(|(_, s)| s)
                .collect();
            let removed = Balancer::new(hash.clone(), &kept);
            let after = assign(&removed, &st[..3], &ks);
            let to_old = [0usize, 1, 3];
            for ((old, new), ej) in before.iter().zip(&after).zip(&ejected) {
                let new_old_index = to_old[*new];
                assert_eq!(new_old_index, *ej, "{w:?}: removal and ejection disagree");
                if *old != 2 {
                    assert_eq!(*old, new_old_index);
                }
            }
        }
    }

    #[test]
    fn consistent_hash_agrees_across_balancers_and_follows_weights() {
        let id = ids(4);
        let st = states(4);
        let ks = keys();
        let hash =
            Algorithm::ConsistentHash(HashKey::Header(http::HeaderName::from_static("x-user")));
        let a = Balancer::new(hash.clone(), &servers(&id, &[1, 1, 1, 1]));
        let b = Balancer::new(hash.clone(), &servers(&id, &[1, 1, 1, 1]));
        assert_eq!(assign(&a, &st, &ks), assign(&b, &st, &ks));
        // Pinned values: the hash is fixed, so these must hold on every run and machine.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(assign(&a, &st, &ks[..8]), PINNED);

        let w = Balancer::new(hash, &servers(&id, &[4, 1, 1, 1]));
        let c = counts(assign(&w, &st, &ks).into_iter().map(Some), 4);
        // Server 0 should hold about 4/7 of the keys.
        assert!((480..660).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn consistent_hash_without_key_round_robins() {
        let id = ids(3);
        let st = states(3);
        let b = Balancer::new(
            Algorithm::ConsistentHash(HashKey::ClientIp),
            &servers(&id, &[5, 1, 1]),
        );
        assert_eq!(seq(&b, &st, 7), vec![0, 0, 1, 0, 2, 0, 0]);
        let e = Balancer::new(
            Algorithm::ConsistentHash(HashKey::ClientIp),
            &servers(&id, &[1, 1, 1]),
        );
        st[0].set_active_healthy(false);
        assert_eq!(seq(&e, &st, 4), vec![1, 2, 1, 2]);
    }
}
