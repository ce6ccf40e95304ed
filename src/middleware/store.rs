//! The shared store hooks keep counters and flags in: a concurrent map (dashmap) of integers,
//! strings and booleans with optional time-to-live, shared by every worker and kept across
//! script reloads (it belongs to the process, not to a route table).
//!
//! Invariants: bounded — at most `MAX_KEYS` live keys; when full, expired keys are swept first
//! and a write of a new key is refused (an error to the hook) rather than growing without end;
//! an expired value reads as absent. Must never: hold a map lock across a call back into a script.

use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Live keys the store keeps at most.
pub const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Str(String),
    Bool(bool),
}

#[derive(Debug)]
struct Slot {
    value: Value,
    expires: Option<Instant>,
}

impl Slot {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

#[derive(Debug, Default)]
pub struct Store {
    map: DashMap<String, Slot>,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    pub fn get(&self, key: &str, now: Instant) -> Option<Value> {
        let slot = self.map.get(key)?;
        slot.live(now).then(|| slot.value.clone())
    }

    pub fn set(
        &self,
        key: &str,
        value: Value,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<(), String> {
        self.make_room(key, now)?;
        self.map.insert(
            key.to_string(),
            Slot {
                value,
                expires: ttl.map(|t| now + t),
            },
        );
        Ok(())
    }

    /// Adds `by` to an integer (absent or expired counts as 0) and returns the new value. The TTL
    /// starts when the key is created and is not extended by later increments (a fixed window).
    pub fn incr(
        &self,
        key: &str,
        by: i64,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Result<i64, String> {
        self.make_room(key, now)?;
        let mut slot = self.map.entry(key.to_string()).or_insert_with(|| Slot {
            value: Value::Int(0),
            expires: ttl.map(|t| now + t),
        });
        if !slot.live(now) {
            *slot = Slot {
                value: Value::Int(0),
                expires: ttl.map(|t| now + t),
            };
        }
        let current = match &slot.value {
            Value::Int(i) => *i,
            _ => return Err(format!("store key {key:?} does not hold an integer")),
        };
        let next = current.saturating_add(by);
        slot.value = Value::Int(next);
        Ok(next)
    }

    pub fn remove(&self, key: &str) -> bool {
        self.map.remove(key).is_some()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn make_room(&self, key: &str, now: Instant) -> Result<(), String> {
        if self.map.len() < MAX_KEYS || self.map.contains_key(key) {
            return Ok(());
        }
        self.map.retain(|_, slot| slot.live(now));
        if self.map.len() >= MAX_KEYS {
            return Err(format!(
                "the shared store is full ({MAX_KEYS} live keys); set a ttl on counters"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_expire_and_types_are_checked() {
        let s = Store::new();
        let t0 = Instant::now();
        let ttl = Some(Duration::from_secs(10));
        assert_eq!(s.incr("hits", 1, ttl, t0).unwrap(), 1);
        assert_eq!(
            s.incr("hits", 2, ttl, t0 + Duration::from_secs(5)).unwrap(),
            3
        );
        // The window does not slide: at 10 s the counter starts over.
        assert_eq!(
            s.incr("hits", 1, ttl, t0 + Duration::from_secs(11))
                .unwrap(),
            1
        );
        s.set("flag", Value::Bool(true), Some(Duration::from_secs(1)), t0)
            .unwrap();
        assert_eq!(s.get("flag", t0), Some(Value::Bool(true)));
        assert_eq!(s.get("flag", t0 + Duration::from_secs(2)), None);
        s.set("name", Value::Str("x".into()), None, t0).unwrap();
        assert!(s.incr("name", 1, None, t0).unwrap_err().contains("integer"));
        assert!(s.remove("name"));
        assert_eq!(s.get("name", t0), None);
    }
}
