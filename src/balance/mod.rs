//! Balancers: how a service picks one of its servers for a request.
//!
//! Owns round robin (equal weights, one atomic counter) and smooth weighted round robin (nginx's
//! algorithm: the same interleaving for the same weights, no bursts). A balancer only returns an
//! index into the service's server list; it never sees requests or sockets. A server with weight
//! 0 is never picked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Debug)]
pub enum Balancer {
    /// No server can be picked.
    Empty,
    RoundRobin {
        len: usize,
        next: AtomicUsize,
    },
    /// Smooth weighted round robin; the vector holds each server's current weight.
    Weighted {
        weights: Vec<i64>,
        current: Mutex<Vec<i64>>,
    },
}

impl Balancer {
    /// Chooses the algorithm for these weights: equal non-zero weights take the lock-free path.
    pub fn for_weights(weights: &[u32]) -> Self {
        if weights.iter().all(|w| *w == 0) {
            return Balancer::Empty;
        }
        let first = weights.first().copied().unwrap_or(0);
        if weights.iter().all(|w| *w == first) {
            return Balancer::RoundRobin {
                len: weights.len(),
                next: AtomicUsize::new(0),
            };
        }
        Balancer::Weighted {
            weights: weights.iter().map(|w| i64::from(*w)).collect(),
            current: Mutex::new(vec![0; weights.len()]),
        }
    }

    /// A short name for listings (`round_robin`, `weighted_round_robin`).
    pub fn kind(&self) -> &'static str {
        match self {
            Balancer::Empty => "none",
            Balancer::RoundRobin { .. } => "round_robin",
            Balancer::Weighted { .. } => "weighted_round_robin",
        }
    }

    /// The index of the server to use, or `None` when there is none.
    pub fn pick(&self) -> Option<usize> {
        match self {
            Balancer::Empty => None,
            Balancer::RoundRobin { len, next } => {
                if *len == 0 {
                    return None;
                }
                Some(next.fetch_add(1, Ordering::Relaxed) % len)
            }
            Balancer::Weighted { weights, current } => {
                // A poisoned lock only means another thread panicked mid-pick; the weights are
                // still usable numbers, so keep balancing.
                let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
                let total: i64 = weights.iter().sum();
                let mut best: Option<usize> = None;
                let mut best_weight = i64::MIN;
                for (i, (cur, w)) in current.iter_mut().zip(weights).enumerate() {
                    if *w == 0 {
                        continue;
                    }
                    *cur += w;
                    if *cur > best_weight {
                        best_weight = *cur;
                        best = Some(i);
                    }
                }
                if let Some(c) = best.and_then(|i| current.get_mut(i)) {
                    *c -= total;
                }
                best
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_interleaves() {
        let b = Balancer::for_weights(&[5, 1, 1]);
        let seq: Vec<usize> = (0..7).filter_map(|_| b.pick()).collect();
        // nginx's documented sequence for weights 5,1,1: a a b a c a a
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn zero_weights_are_skipped() {
        let b = Balancer::for_weights(&[0, 2, 1]);
        let seq: Vec<usize> = (0..6).filter_map(|_| b.pick()).collect();
        assert!(!seq.contains(&0));
        assert_eq!(seq.iter().filter(|i| **i == 1).count(), 4);
        assert!(Balancer::for_weights(&[0, 0]).pick().is_none());
        assert!(Balancer::for_weights(&[]).pick().is_none());
    }

    #[test]
    fn round_robin_cycles() {
        let b = Balancer::for_weights(&[1, 1, 1]);
        let seq: Vec<usize> = (0..6).filter_map(|_| b.pick()).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
    }
}
