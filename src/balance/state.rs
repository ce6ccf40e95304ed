//! Live per-server state shared by every request and the health checker.
//!
//! Owns one server's active-check health flag, its passive-ejection bookkeeping (consecutive
//! failures and the instant the ejection ends) and its in-flight request count. Everything is
//! an atomic so the hot path never locks. Instants are stored as nanoseconds since a process-wide
//! epoch (set on first use) because `Instant` itself cannot live in an atomic; an instant before
//! the epoch saturates to it. An ejection end of 0 means "not ejected".
//!
//! It must never block, allocate on the request path, or decide which server to use: that is
//! the balancer's job (`algo.rs`); this only answers "may this server take traffic now?".

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// When a server is taken out after failing requests, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassivePolicy {
    /// Consecutive failures that eject the server; 0 disables passive ejection.
    pub max_failures: u32,
    pub cooldown: Duration,
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the epoch; saturates rather than wrapping (u64 nanos last 584 years).
fn to_nanos(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

fn from_nanos(n: u64) -> Instant {
    let e = epoch();
    e.checked_add(Duration::from_nanos(n)).unwrap_or(e)
}

/// One server's live state. Shared as `Arc<ServerState>` between the balancer, the requests
/// using it and the health checker.
pub struct ServerState {
    active_healthy: AtomicBool,
    failures: AtomicU32,
    /// Nanos since the epoch at which the passive ejection ends; 0 = not ejected.
    ejected_until: AtomicU64,
    in_flight: AtomicU32,
    /// Responses this server sent, by status class (1xx … 5xx): per-member metrics, so a
    /// canary's error rate can be compared with the stable version's.
    responses: [AtomicU64; 5],
}

impl ServerState {
    pub fn new() -> Arc<ServerState> {
        // Pin the epoch now so instants taken after any server exists are never before it.
        let _ = epoch();
        Arc::new(ServerState {
            active_healthy: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            responses: Default::default(),
        })
    }

    /// Active check says healthy AND not passively ejected at `now`.
    pub fn available(&self, now: Instant) -> bool {
        self.active_healthy() && !self.is_ejected(now)
    }

    pub fn active_healthy(&self) -> bool {
        self.active_healthy.load(Ordering::Relaxed)
    }

    /// Returns true when the flag changed.
    pub fn set_active_healthy(&self, healthy: bool) -> bool {
        self.active_healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// +1 in flight now, -1 when the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// A success resets the consecutive-failure count.
    pub fn record_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Counts a response head the server sent, by class.
    pub fn count_response(&self, status: u16) {
        if let Some(c) = usize::from(status / 100)
            .checked_sub(1)
            .and_then(|i| self.responses.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Responses counted so far, by class (index 0: 1xx … 4: 5xx).
    pub fn responses(&self) -> [u64; 5] {
        std::array::from_fn(|i| {
            self.responses
                .get(i)
                .map_or(0, |c| c.load(Ordering::Relaxed))
        })
    }

    /// Counts a failure; at `policy.max_failures` consecutive failures the server is ejected
    /// until `now + cooldown` and the count resets. Returns true when this call ejected it.
    ///
    /// Failures reported while the server is already ejected are ignored: they come from
    /// requests sent before the ejection and must not extend it.
    pub fn record_failure(&self, policy: &PassivePolicy, now: Instant) -> bool {
        if policy.max_failures == 0 || self.is_ejected(now) {
            return false;
        }
        let count = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if count < policy.max_failures {
            return false;
        }
        // Only the thread that resets the count ejects, so concurrent failures report one
        // ejection rather than several.
        if self
            .failures
            .compare_exchange(count, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let until = now.checked_add(policy.cooldown).map_or(u64::MAX, to_nanos);
        // max(1): 0 is the "not ejected" marker.
        self.ejected_until.store(until.max(1), Ordering::Relaxed);
        true
    }

    /// Some(instant) while ejected at `now`.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        (until != 0 && to_nanos(now) < until).then(|| from_nanos(until))
    }

    fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && to_nanos(now) < until
    }
}

impl fmt::Debug for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerState")
            .field("active_healthy", &self.active_healthy())
            .field("failures", &self.failures.load(Ordering::Relaxed))
            .field(
                "ejected_until_nanos",
                &self.ejected_until.load(Ordering::Relaxed),
            )
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// One request in flight on a server; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<ServerState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // Saturating so a count can never wrap to u32::MAX and starve the server under least_conn.
        let _ = self
            .0
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PassivePolicy {
        PassivePolicy {
            max_failures: 3,
            cooldown: Duration::from_secs(10),
        }
    }

    #[test]
    fn starts_healthy_and_idle() {
        let s = ServerState::new();
        let now = Instant::now();
        assert!(s.active_healthy());
        assert!(s.available(now));
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.ejected_until(now), None);
    }

    #[test]
    fn active_flag_reports_changes() {
        let s = ServerState::new();
        let now = Instant::now();
        assert!(!s.set_active_healthy(true));
        assert!(s.set_active_healthy(false));
        assert!(!s.available(now));
        assert!(!s.set_active_healthy(false));
        assert!(s.set_active_healthy(true));
        assert!(s.available(now));
    }

    #[test]
    fn failures_eject_for_the_cooldown() {
        let s = ServerState::new();
        let p = policy();
        let t0 = Instant::now();
        assert!(!s.record_failure(&p, t0));
        assert!(!s.record_failure(&p, t0));
        assert!(s.available(t0));
        assert!(s.record_failure(&p, t0));
        assert!(!s.available(t0));
        let until = s.ejected_until(t0);
        assert_eq!(until, Some(t0 + Duration::from_secs(10)));
        assert!(!s.available(t0 + Duration::from_secs(9)));
        assert!(s.ejected_until(t0 + Duration::from_secs(9)).is_some());
        // Stragglers while ejected neither count nor extend the ejection.
        assert!(!s.record_failure(&p, t0 + Duration::from_secs(5)));
        assert!(!s.record_failure(&p, t0 + Duration::from_secs(5)));
        assert!(!s.record_failure(&p, t0 + Duration::from_secs(5)));
        assert_eq!(s.ejected_until(t0), until);
        let after = t0 + Duration::from_secs(10);
        assert!(s.available(after));
        assert_eq!(s.ejected_until(after), None);
        // The count was reset by the ejection: one more failure does not eject again.
        assert!(!s.record_failure(&p, after));
        assert!(s.available(after));
    }

    #[test]
    fn success_resets_the_count() {
        let s = ServerState::new();
        let p = policy();
        let t0 = Instant::now();
        assert!(!s.record_failure(&p, t0));
        assert!(!s.record_failure(&p, t0));
        s.record_success();
        assert!(!s.record_failure(&p, t0));
        assert!(!s.record_failure(&p, t0));
        assert!(s.available(t0));
        assert!(s.record_failure(&p, t0));
        assert!(!s.available(t0));
    }

    #[test]
    fn zero_max_failures_disables_ejection() {
        let s = ServerState::new();
        let p = PassivePolicy {
            max_failures: 0,
            cooldown: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(!s.record_failure(&p, t0));
        }
        assert!(s.available(t0));
    }

    #[test]
    fn ejected_but_active_unhealthy_stays_unavailable_after_cooldown() {
        let s = ServerState::new();
        let p = PassivePolicy {
            max_failures: 1,
            cooldown: Duration::from_secs(1),
        };
        let t0 = Instant::now();
        assert!(s.record_failure(&p, t0));
        s.set_active_healthy(false);
        assert!(!s.available(t0 + Duration::from_secs(2)));
        s.set_active_healthy(true);
        assert!(s.available(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn in_flight_guards_count() {
        let s = ServerState::new();
        let a = s.begin();
        let b = s.begin();
        assert_eq!(s.in_flight(), 2);
        drop(a);
        assert_eq!(s.in_flight(), 1);
        let c = s.begin();
        assert_eq!(s.in_flight(), 2);
        drop(b);
        drop(c);
        assert_eq!(s.in_flight(), 0);
        assert!(format!("{s:?}").contains("in_flight: 0"));
    }
}
