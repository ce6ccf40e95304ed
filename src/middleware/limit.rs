//! Traffic limiting middlewares in the style of Traefik: `rateLimit` (token bucket per key) and
//! `inFlightReq` (concurrent requests per key).
//!
//! Owns the per-key state of both limiters. Invariants: a rate bucket never holds more than
//! `burst` tokens and starts full; an in-flight entry exists only while at least one permit for
//! its key is alive. Must never: sleep or block on time (callers pass `now`), or leak a permit
//! count.
//!
//! The rate limiter's housekeeping is amortised and local: its keys live in `RATE_SHARDS`
//! independently locked shards, and a request takes only its key's shard lock (as a `DashMap`
//! would) — never a whole-map count or sweep. A shard drops its refilled buckets only when a new
//! key arrives while it holds `MAX_RATE_KEYS / RATE_SHARDS` keys or more, and the next sweep of
//! that shard waits until at least a quarter of that many keys more were added, so a sweep costs
//! O(shard size) at most once per that many new keys (O(1) amortised per request), and a flood of
//! live keys cannot make every insert scan.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Key count (over all shards) past which `RateLimiter::check` sweeps refilled buckets, one
/// shard at a time, before inserting new keys.
pub const MAX_RATE_KEYS: usize = 100_000;
/// Independently locked parts of a rate limiter's key map.
pub const RATE_SHARDS: usize = 128;
/// Keys a shard holds before its first sweep.
const SHARD_SWEEP_AT: usize = MAX_RATE_KEYS / RATE_SHARDS;

/// A rate limit kept where every router replica counts (the shared store): the same GCRA as
/// `RateLimiter`, one round trip per request.
pub trait SharedRate: Send + Sync + fmt::Debug {
    /// Takes one token of `bucket` (refill `interval`, capacity `burst`): `Ok(Ok(()))` within the
    /// limit, `Ok(Err(retry_after))` over it, `Err` when the store cannot answer now (the caller
    /// falls back to its local limiter).
    fn take<'a>(&'a self, bucket: &'a str, interval: Duration, burst: u64) -> SharedTake<'a>;
}

/// The answer of `SharedRate::take`.
pub type SharedTake<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Result<(), Duration>, String>> + Send + 'a>,
>;

/// Token bucket rate limiter keyed by an arbitrary string (client IP, header value, ...).
///
/// Implemented as GCRA (the token bucket expressed as a "theoretical arrival time" per key), so
/// the state is one `Instant` and the arithmetic is exact integer nanoseconds.
pub struct RateLimiter {
    average: u64,
    period: Duration,
    burst: u64,
    /// Time one token takes to refill: `period / average`.
    interval: Duration,
    /// How far ahead of `now` a key's arrival time may be and still pass: `interval * (burst-1)`.
    tolerance: Duration,
    /// Picks a key's shard (keyed randomly per limiter, like the shards' own maps).
    shard_of: ahash::RandomState,
    shards: Box<[Mutex<Shard>]>,
}

/// Key -> theoretical arrival time; the bucket is full when it is not after `now`.
struct Shard {
    tats: HashMap<String, Instant, ahash::RandomState>,
    /// Size at which the next insert sweeps this shard first.
    sweep_at: usize,
}

impl Shard {
    /// Drops buckets that are full again (their key has been idle for at least a refill), then
    /// sets the size of the next sweep so that sweeps stay amortised.
    fn sweep(&mut self, now: Instant) {
        self.tats.retain(|_, tat| *tat > now);
        let left = self.tats.len();
        self.sweep_at = SHARD_SWEEP_AT.max(left.saturating_add(SHARD_SWEEP_AT / 4));
    }
}

impl RateLimiter {
    /// `average` requests per `period` refill rate, `burst` capacity (0 means 1).
    pub fn new(average: u64, period: Duration, burst: u64) -> Result<RateLimiter, String> {
        if average == 0 {
            return Err("rate limit: average must be at least 1".to_owned());
        }
        if period.is_zero() {
            return Err("rate limit: period must be greater than zero".to_owned());
        }
        let burst = burst.max(1);
        let interval_ns = (period.as_nanos() / u128::from(average)).max(1);
        let tolerance_ns = interval_ns.saturating_mul(u128::from(burst - 1));
        Ok(RateLimiter {
            average,
            period,
            burst,
            interval: nanos(interval_ns),
            tolerance: nanos(tolerance_ns),
            shard_of: ahash::RandomState::new(),
            shards: (0..RATE_SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        tats: HashMap::default(),
                        sweep_at: SHARD_SWEEP_AT,
                    })
                })
                .collect(),
        })
    }

    /// The shard holding `key`, locked.
    fn shard(&self, key: &str) -> Option<MutexGuard<'_, Shard>> {
        let i = self.shard_of.hash_one(key) as usize % self.shards.len().max(1);
        self.shards
            .get(i)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Time one token takes to refill (`period / average`).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The bucket's capacity.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Takes one token for `key`; `Err(retry_after)` (>= 1 ms) when the bucket is empty.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Some(mut shard) = self.shard(key) else {
            return Ok(());
        };
        if let Some(tat) = shard.tats.get_mut(key) {
            return self.take(tat, now);
        }
        if shard.tats.len() >= shard.sweep_at {
            shard.sweep(now);
        }
        shard.tats.insert(
            key.to_owned(),
            now.checked_add(self.interval).unwrap_or(now),
        );
        Ok(())
    }

    fn take(&self, tat: &mut Instant, now: Instant) -> Result<(), Duration> {
        // An older `now` from a racing caller sees `tat` as is: it can never mint tokens.
        let base = (*tat).max(now);
        let ahead = base.saturating_duration_since(now);
        if ahead > self.tolerance {
            let wait = ahead.saturating_sub(self.tolerance);
            return Err(wait.max(Duration::from_millis(1)));
        }
        *tat = base.checked_add(self.interval).unwrap_or(base);
        Ok(())
    }

    /// Keys tracked now (locks every shard in turn: for listings and tests, never per request).
    pub fn tracked_keys(&self) -> usize {
        self.shards
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).tats.len())
            .sum()
    }

    /// E.g. `100/1s burst 50`.
    pub fn describe(&self) -> String {
        format!(
            "{}/{} burst {}",
            self.average,
            format_period(self.period),
            self.burst
        )
    }
}

fn nanos(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.describe())
            .field("keys", &self.tracked_keys())
            .finish()
    }
}

fn format_period(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 {
        if secs != 0 && secs % 3600 == 0 {
            return format!("{}h", secs / 3600);
        }
        if secs != 0 && secs % 60 == 0 {
            return format!("{}m", secs / 60);
        }
        return format!("{secs}s");
    }
    if d.subsec_nanos() % 1_000_000 == 0 {
        return format!("{}ms", d.as_millis());
    }
    format!("{d:?}")
}

/// Limits concurrent requests per key.
pub struct InFlightLimiter {
    amount: u64,
    counts: Arc<DashMap<String, u64>>,
}

impl InFlightLimiter {
    /// `amount`: maximum concurrent permits per key (0 is an error).
    pub fn new(amount: u64) -> Result<InFlightLimiter, String> {
        if amount == 0 {
            return Err("in-flight limit: amount must be at least 1".to_owned());
        }
        Ok(InFlightLimiter {
            amount,
            counts: Arc::new(DashMap::new()),
        })
    }

    /// A permit while fewer than `amount` are alive for `key`; it releases on drop.
    pub fn try_acquire(&self, key: &str) -> Option<InFlightPermit> {
        // Increments and the removal at zero both happen under the key's shard lock, so a
        // release racing an acquire can never delete a live count.
        let mut count = self.counts.entry(key.to_owned()).or_insert(0);
        if *count >= self.amount {
            return None;
        }
        *count += 1;
        drop(count);
        Some(InFlightPermit {
            counts: Arc::clone(&self.counts),
            key: key.to_owned(),
        })
    }

    pub fn amount(&self) -> u64 {
        self.amount
    }

    #[cfg(test)]
    fn tracked_keys(&self) -> usize {
        self.counts.len()
    }
}

impl fmt::Debug for InFlightLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightLimiter")
            .field("amount", &self.amount)
            .field("keys", &self.counts.len())
            .finish()
    }
}

/// One in-flight request slot; dropping it frees the slot.
pub struct InFlightPermit {
    counts: Arc<DashMap<String, u64>>,
    key: String,
}

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        if let Entry::Occupied(mut e) = self.counts.entry(std::mem::take(&mut self.key)) {
            let count = e.get_mut();
            *count = count.saturating_sub(1);
            if *count == 0 {
                e.remove();
            }
        }
    }
}

impl fmt::Debug for InFlightPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlightPermit")
            .field("key", &self.key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send_static<T: Send + 'static>() {}

    #[test]
    fn traits() {
        assert_send_sync::<RateLimiter>();
        assert_send_sync::<InFlightLimiter>();
        assert_send_static::<InFlightPermit>();
    }

    #[test]
    fn rate_new_errors_and_describe() {
        assert!(RateLimiter::new(0, Duration::from_secs(1), 5).is_err());
        assert!(RateLimiter::new(1, Duration::ZERO, 5).is_err());
        let rl = RateLimiter::new(100, Duration::from_secs(1), 50).unwrap();
        assert_eq!(rl.describe(), "100/1s burst 50");
        let rl = RateLimiter::new(3, Duration::from_secs(60), 0).unwrap();
        assert_eq!(rl.describe(), "3/1m burst 1");
        let rl = RateLimiter::new(3, Duration::from_millis(250), 2).unwrap();
        assert_eq!(rl.describe(), "3/250ms burst 2");
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        // 10 per second: one token per 100 ms.
        let rl = RateLimiter::new(10, Duration::from_secs(1), 5).unwrap();
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(rl.check("a", t0), Ok(()), "request {i}");
        }
        let wait = rl.check("a", t0).unwrap_err();
        assert!(
            wait >= Duration::from_millis(99) && wait <= Duration::from_millis(101),
            "{wait:?}"
        );
        // Half a token later: still refused, about 50 ms left.
        let wait = rl.check("a", t0 + Duration::from_millis(50)).unwrap_err();
        assert!(
            wait >= Duration::from_millis(49) && wait <= Duration::from_millis(51),
            "{wait:?}"
        );
        // One token refilled at 100 ms.
        assert_eq!(rl.check("a", t0 + Duration::from_millis(100)), Ok(()));
        assert!(rl.check("a", t0 + Duration::from_millis(100)).is_err());
        // Long idle refills only up to burst.
        let t1 = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(rl.check("a", t1), Ok(()));
        }
        assert!(rl.check("a", t1).is_err());
    }

    #[test]
    fn retry_after_has_floor_and_older_now_does_not_mint() {
        let rl = RateLimiter::new(1_000_000, Duration::from_secs(1), 1).unwrap();
        let t0 = Instant::now() + Duration::from_secs(1);
        assert!(rl.check("k", t0).is_ok());
        assert_eq!(rl.check("k", t0), Err(Duration::from_millis(1)));

        let rl = RateLimiter::new(1, Duration::from_secs(1), 1).unwrap();
        assert!(rl.check("k", t0).is_ok());
        assert!(rl.check("k", t0 - Duration::from_millis(500)).is_err());
        assert!(rl.check("k", t0 + Duration::from_millis(999)).is_err());
        assert!(rl.check("k", t0 + Duration::from_millis(1000)).is_ok());
    }

    #[test]
    fn keys_are_independent() {
        let rl = RateLimiter::new(1, Duration::from_secs(1), 2).unwrap();
        let t0 = Instant::now();
        assert!(rl.check("a", t0).is_ok());
        assert!(rl.check("a", t0).is_ok());
        assert!(rl.check("a", t0).is_err());
        assert!(rl.check("b", t0).is_ok());
        assert!(rl.check("b", t0).is_ok());
        assert!(rl.check("b", t0).is_err());
    }

    #[test]
    fn sweep_drops_only_refilled_buckets() {
        let rl = RateLimiter::new(1, Duration::from_secs(1), 2).unwrap();
        let t0 = Instant::now();
        rl.check("idle", t0).unwrap();
        rl.check("busy", t0 + Duration::from_secs(10)).unwrap();
        for m in rl.shards.iter() {
            m.lock().unwrap().sweep(t0 + Duration::from_secs(10));
        }
        let has = |k: &str| rl.shard(k).unwrap().tats.contains_key(k);
        assert!(!has("idle"));
        assert!(has("busy"));
        assert_eq!(rl.tracked_keys(), 1);
    }

    #[test]
    fn housekeeping_is_amortised_per_shard() {
        let rl = RateLimiter::new(1, Duration::from_secs(1), 1).unwrap();
        let t0 = Instant::now();
        // More live keys than the sweep threshold: nothing can be dropped, the map grows, and
        // each shard's next sweep is pushed out instead of running on every insert.
        let n = MAX_RATE_KEYS + MAX_RATE_KEYS / 2;
        for i in 0..n {
            rl.check(&format!("k{i}"), t0).unwrap();
        }
        assert_eq!(rl.tracked_keys(), n);
        let raised = rl
            .shards
            .iter()
            .filter(|m| m.lock().unwrap().sweep_at > SHARD_SWEEP_AT)
            .count();
        assert!(raised > RATE_SHARDS / 2, "{raised}");
        // Later, every old bucket has refilled. New keys sweep their own shard once it reaches
        // its (raised) threshold: a few hundred new keys per shard clear the old ones out.
        let later = t0 + Duration::from_secs(5);
        let fresh = RATE_SHARDS * 400;
        for i in 0..fresh {
            rl.check(&format!("new{i}"), later).unwrap();
        }
        let old_left = rl.tracked_keys() - fresh;
        assert!(old_left < n / 10, "{old_left}");
        // Refusals still work for the keys that are there.
        assert!(rl.check("new0", later).is_err());
    }

    #[test]
    fn in_flight_amount_two() {
        assert!(InFlightLimiter::new(0).is_err());
        let lim = InFlightLimiter::new(2).unwrap();
        assert_eq!(lim.amount(), 2);
        let p1 = lim.try_acquire("k").unwrap();
        let p2 = lim.try_acquire("k").unwrap();
        assert!(lim.try_acquire("k").is_none());
        // Another key is independent.
        let other = lim.try_acquire("other").unwrap();
        assert_eq!(lim.tracked_keys(), 2);
        drop(p1);
        let p3 = lim.try_acquire("k").unwrap();
        assert!(lim.try_acquire("k").is_none());
        drop(p2);
        drop(p3);
        assert_eq!(lim.tracked_keys(), 1);
        drop(other);
        assert_eq!(lim.tracked_keys(), 0);
        assert!(format!("{lim:?}").contains("amount: 2"));
    }

    #[test]
    fn permits_released_across_threads() {
        let lim = Arc::new(InFlightLimiter::new(3).unwrap());
        let permits: Vec<_> = (0..3).map(|_| lim.try_acquire("k").unwrap()).collect();
        let handles: Vec<_> = permits
            .into_iter()
            .map(|p| std::thread::spawn(move || drop(p)))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(lim.tracked_keys(), 0);
    }
}
