//! The shared store (`--store redis://…` or `rediss://…`): what every router replica's
//! certificate resolvers share — the ACME account, the certificates (private keys encrypted
//! with `--store.key-file`), HTTP-01 and TLS-ALPN-01 challenge answers and a per-name order
//! lock — kept in Redis.
//!
//! Keys (all under `switchyard:acme:RESOLVER:`): `account` (the account credentials, JSON),
//! `certs` (a hash: name → `{certificate, key}` JSON, the key sealed), `lock:NAME` (the order
//! lock: a random token, `SET NX PX`, renewed while the order runs, released only by its owner),
//! `switchyard:acme:alpn` (a hash: name → expiry and the TLS-ALPN-01 key authorization digest,
//! read by every replica each second) and `switchyard:acme:challenge:TOKEN` (an HTTP-01 key
//! authorization, with a TTL).
//!
//! Invariants: a store outage never fails a request or drops a certificate held in memory: reads
//! fail soft (logged once per outage) and orders wait; only the lock's owner releases or renews
//! it (a Lua compare-and-delete); private keys never reach Redis unsealed when a key file is
//! given.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::storage::{Issued, Stored};

/// How long an order lock lives unless renewed.
pub const LOCK_TTL: Duration = Duration::from_secs(60);
/// How long an HTTP-01 answer is kept.
const CHALLENGE_TTL: Duration = Duration::from_secs(600);

/// The Redis store.
pub struct SharedStore {
    /// The connection to Redis (with Sentinel: to the master it named last).
    conn: arc_swap::ArcSwap<ConnectionManager>,
    /// `redis+sentinel://`: the sentinels, asked every second which node is the master.
    sentinel: Option<Sentinel>,
    url: String,
    key: Option<LessSafeKey>,
    /// Set while the store is unreachable (the outage is logged once).
    down: AtomicBool,
    /// The error that started the outage in progress.
    outage: std::sync::Mutex<Option<String>>,
    /// During an outage, when (ms after `since`) a request last tried the store for a rate
    /// limit; the others go straight to their local limiter.
    probed: AtomicU64,
    since: Instant,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredCert {
    certificate: String,
    /// PEM, or `sealed:BASE64(nonce || ciphertext)`.
    key: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    on_demand: bool,
}

/// `redis+sentinel://[user:password@]host:port[,host:port…]/MASTER[/DB]`: the sentinels and the
/// master they watch.
struct Sentinel {
    client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    /// The master's address the connection goes to.
    master_now: std::sync::Mutex<String>,
}

/// A parsed `redis+sentinel://` URL before the first connection.
struct SentinelSetup {
    client: redis::sentinel::SentinelClient,
    master: String,
}

impl Sentinel {
    fn parse(rest: &str) -> Result<SentinelSetup, String> {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (hosts, path) = rest
            .split_once('/')
            .ok_or("write redis+sentinel://[user:password@]host:port[,host:port]/MASTER[/DB]")?;
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let name = parts
            .next()
            .ok_or("the master's name is missing (…/MASTER/DB)")?;
        let db: i64 = match parts.next() {
            Some(d) => d
                .parse()
                .map_err(|_| format!("database {d:?} is not a number"))?,
            None => 0,
        };
        let sentinels: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{h}"))
            .collect();
        if sentinels.is_empty() {
            return Err("no sentinel address".into());
        }
        let (username, password) = match auth.map(|a| a.split_once(':')) {
            Some(Some((u, p))) => (
                Some(u.to_string()).filter(|u| !u.is_empty()),
                Some(p.to_string()),
            ),
            Some(None) => (None, auth.map(str::to_string)),
            None => (None, None),
        };
        let node = redis::sentinel::SentinelNodeConnectionInfo {
            tls_mode: None,
            redis_connection_info: Some(redis::RedisConnectionInfo {
                db,
                username,
                password,
                ..Default::default()
            }),
        };
        let client = redis::sentinel::SentinelClient::build(
            sentinels,
            name.to_string(),
            Some(node),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|e| e.to_string())?;
        Ok(SentinelSetup {
            client,
            master: String::new(),
        })
    }
}

/// With a Sentinel store, follows the master every second until the store is dropped.
pub async fn follow_sentinel_master(store: std::sync::Weak<SharedStore>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(s) = store.upgrade() else { return };
        if s.sentinel.is_none() {
            return;
        }
        s.follow_master().await;
    }
}

/// Reads a 32-byte key: raw bytes, or 64 hex digits, or base64 of 32 bytes (a trailing newline
/// allowed).
pub fn read_key_file(path: &Path) -> Result<[u8; 32], String> {
    let raw = std::fs::read(path).map_err(|e| format!("store key file {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&raw).trim().to_string();
    let bytes = if raw.len() == 32 {
        raw
    } else if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).unwrap_or(0))
            .collect()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(&text)
            .map_err(|_| {
                format!(
                    "store key file {}: give 32 bytes, 64 hex digits or base64 of 32 bytes \
                     (e.g. `openssl rand -hex 32`)",
                    path.display()
                )
            })?
    };
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "store key file {}: the key must be 32 bytes",
            path.display()
        )
    })
}

/// Where TLS-ALPN-01 answers live: a hash, name → `expiry (Unix seconds):sha256 hex`.
const ALPN_KEY: &str = "switchyard:acme:alpn";

/// During a store outage, how often a rate-limit request tries the store again.
const RATE_PROBE_MS: u64 = 1000;

/// GCRA in one round trip, exactly as `middleware::limit::RateLimiter` counts: a bucket is the
/// theoretical arrival time (µs, the store's clock, so replicas' clocks do not matter); the
/// answer is 0 (taken) or the µs to wait.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * (tonumber(ARGV[2]) - 1)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then return math.max(1, math.floor(ahead - tolerance)) end
local next = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', math.floor((next - now) / 1000) + 1)
return 0
";

impl crate::middleware::limit::SharedRate for SharedStore {
    fn take<'a>(
        &'a self,
        bucket: &'a str,
        interval: Duration,
        burst: u64,
    ) -> crate::middleware::limit::SharedTake<'a> {
        Box::pin(async move {
            if !self.may_try() {
                return Err("the shared store is unreachable".to_string());
            }
            // Keys are client addresses or header values: hashed, so any length or byte fits.
            let digest = ring::digest::digest(&ring::digest::SHA256, bucket.as_bytes());
            let mut key = String::from("switchyard:rl:");
            for b in digest.as_ref().iter().take(16) {
                use std::fmt::Write as _;
                let _ = write!(key, "{b:02x}");
            }
            let micros = u64::try_from(interval.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let mut c = self.conn();
            static SCRIPT: std::sync::LazyLock<redis::Script> =
                std::sync::LazyLock::new(|| redis::Script::new(GCRA));
            let wait: u64 = SCRIPT
                .key(key)
                .arg(micros)
                .arg(burst.max(1))
                .invoke_async(&mut c)
                .await
                .map_err(|e| self.failed("rate limit", e))?;
            self.ok();
            Ok(match wait {
                0 => Ok(()),
                us => Err(Duration::from_micros(us).max(Duration::from_millis(1))),
            })
        })
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn bytes_of_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// `url` without the password of its user part (`redis://user:***@host/0`), for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((user, host)) => {
            let name = user.split(':').next().unwrap_or_default();
            if user.contains(':') {
                format!("{scheme}://{name}:***@{host}")
            } else {
                url.to_string()
            }
        }
        None => url.to_string(),
    }
}

impl SharedStore {
    /// Connects (the connection manager reconnects by itself after an outage); a `rediss://` URL
    /// speaks TLS, checked against `ca_file` or the system's roots. Messages show the URL
    /// without its password.
    pub async fn connect(
        url: &str,
        key: Option<[u8; 32]>,
        ca_file: Option<&Path>,
    ) -> Result<SharedStore, String> {
        let shown = redact(url);
        // The redis client builds its rustls config from the process default provider.
        crate::tls::install();
        let url = url.to_string();
        let mut sentinel = match url.strip_prefix("redis+sentinel://") {
            Some(rest) => Some(Sentinel::parse(rest).map_err(|e| format!("store {shown}: {e}"))?),
            None => None,
        };
        let client =
            match (&mut sentinel, ca_file) {
                (Some(s), _) => s.client.async_get_client().await.map_err(|e| {
                    format!("store {shown}: asking the sentinels for the master: {e}")
                }),
                (None, ca_file) => Self::client(&url, ca_file, &shown),
            }?;
        if let Some(s) = &mut sentinel {
            s.master = client.get_connection_info().addr.to_string();
            info!(store = %shown, master = %s.master, "the sentinels name the master");
        }
        let url = shown;
        let url = url.as_str();
        let conn = ConnectionManager::new_with_config(client, Self::manager_config())
            .await
            .map_err(|e| format!("store {url}: {e}"))?;
        let key = match key {
            Some(k) => Some(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &k).map_err(|_| "store key rejected".to_string())?,
            )),
            None => {
                warn!(
                    store = url,
                    "no --store.key-file: certificate keys are kept in the store unencrypted"
                );
                None
            }
        };
        info!(store = url, "shared store connected");
        Ok(SharedStore {
            conn: arc_swap::ArcSwap::from_pointee(conn),
            sentinel: sentinel.map(|s| Sentinel {
                client: tokio::sync::Mutex::new(s.client),
                master_now: std::sync::Mutex::new(s.master),
            }),
            url: url.to_string(),
            key,
            down: AtomicBool::new(false),
            outage: std::sync::Mutex::new(None),
            probed: AtomicU64::new(0),
            since: Instant::now(),
        })
    }

    /// A client for a plain `redis://` or `rediss://` URL.
    fn client(url: &str, ca_file: Option<&Path>, shown: &str) -> Result<redis::Client, String> {
        match ca_file {
            // `rediss://` checked against the given CA; without one, the system's roots.
            Some(ca) if url.starts_with("rediss://") => {
                let root = std::fs::read(ca)
                    .map_err(|e| format!("store {shown}: --store.ca-file {}: {e}", ca.display()))?;
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root),
                    },
                )
            }
            _ => redis::Client::open(url),
        }
        .map_err(|e| format!("store {shown}: {e}"))
    }

    fn manager_config() -> redis::aio::ConnectionManagerConfig {
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(3))
            .set_response_timeout(Duration::from_secs(3))
            .set_number_of_retries(2)
            .set_max_delay(2000)
    }

    /// The connection now.
    fn conn(&self) -> ConnectionManager {
        (**self.conn.load()).clone()
    }

    /// With Sentinel: asks the sentinels which node is the master and, when it moved (a
    /// failover), connects to the new one. Without: nothing.
    pub async fn follow_master(&self) {
        let Some(s) = &self.sentinel else { return };
        let mut client = s.client.lock().await;
        let master = match client.async_get_client().await {
            Ok(c) => c,
            Err(e) => {
                debug!(store = %self.url, error = %e, "the sentinels did not answer");
                return;
            }
        };
        let addr = master.get_connection_info().addr.to_string();
        let mut current = s
            .master_now
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if addr == current {
            return;
        }
        match ConnectionManager::new_with_config(master, Self::manager_config()).await {
            Ok(conn) => {
                info!(store = %self.url, from = %current, to = %addr, "the sentinels name a new master: connected to it");
                self.conn.store(Arc::new(conn));
                current = addr;
                *s.master_now.lock().unwrap_or_else(|e| e.into_inner()) = current;
            }
            Err(e) => {
                debug!(store = %self.url, master = %addr, error = %e, "cannot reach the new master yet")
            }
        }
    }

    /// Notes a failed call (logged once per outage) and passes the error on as text.
    fn failed(&self, what: &str, e: redis::RedisError) -> String {
        let message = format!("store {what}: {e}");
        if !self.down.swap(true, Ordering::AcqRel) {
            warn!(store = %self.url, error = %e, "shared store unreachable ({what}); certificates keep serving from memory, orders wait");
            *self.outage.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.clone());
        }
        message
    }

    fn ok(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            info!(store = %self.url, "shared store reachable again");
            *self.outage.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// The store's URL (without its password) and, during an outage, the error that began it.
    pub fn state(&self) -> (String, Option<String>) {
        let outage = self
            .outage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.url.clone(), outage)
    }

    /// Whether the last call failed.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Whether a rate-limit request may try the store: always while it is up, one request a
    /// second during an outage (that one finds out when it is back).
    fn may_try(&self) -> bool {
        if !self.is_down() {
            return true;
        }
        let now = self.since.elapsed().as_millis() as u64;
        let last = self.probed.load(Ordering::Relaxed);
        now.saturating_sub(last) >= RATE_PROBE_MS
            && self
                .probed
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    fn seal(&self, pem: &str) -> Result<String, String> {
        let Some(key) = &self.key else {
            return Ok(pem.to_string());
        };
        let mut nonce = [0u8; NONCE_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| "no randomness for sealing".to_string())?;
        let mut data = pem.as_bytes().to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| "sealing a certificate key failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(format!(
            "sealed:{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    fn open(&self, stored: &str) -> Result<String, String> {
        let Some(sealed) = stored.strip_prefix("sealed:") else {
            return Ok(stored.to_string());
        };
        let key = self
            .key
            .as_ref()
            .ok_or("a sealed key in the store, but no --store.key-file")?;
        let mut data = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| "a sealed key is not base64".to_string())?;
        if data.len() < NONCE_LEN {
            return Err("a sealed key is too short".into());
        }
        let body = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data).map_err(|_| "bad nonce".to_string())?;
        let mut body = body;
        let plain = key
            .open_in_place(nonce, Aad::empty(), &mut body)
            .map_err(|_| {
                "a sealed key does not open with --store.key-file (another key?)".to_string()
            })?;
        String::from_utf8(plain.to_vec()).map_err(|_| "a sealed key is not PEM".to_string())
    }

    fn prefix(resolver: &str) -> String {
        format!("switchyard:acme:{resolver}:")
    }

    /// The resolver's account and certificates (those that cannot serve are skipped).
    pub async fn load(&self, resolver: &str) -> Result<Stored, String> {
        let p = Self::prefix(resolver);
        let mut c = self.conn();
        let account: Option<String> = c
            .get(format!("{p}account"))
            .await
            .map_err(|e| self.failed("read", e))?;
        let certs: std::collections::HashMap<String, String> = c
            .hgetall(format!("{p}certs"))
            .await
            .map_err(|e| self.failed("read", e))?;
        self.ok();
        let mut stored = Stored::default();
        if let Some(a) = account {
            #[derive(Deserialize)]
            struct Account {
                credentials: instant_acme::AccountCredentials,
                ca_server: String,
            }
            let a: Account =
                serde_json::from_str(&a).map_err(|e| format!("the stored account: {e}"))?;
            stored.account = Some(a.credentials);
            stored.ca_server = Some(a.ca_server);
        }
        for (name, json) in certs {
            let parsed = serde_json::from_str::<StoredCert>(&json)
                .map_err(|e| e.to_string())
                .and_then(|s| Ok((s.certificate, self.open(&s.key)?, s.on_demand)))
                .and_then(|(chain, key, on_demand)| {
                    let i = Issued::from_pem(&name, &chain, &key, resolver)?;
                    Ok(Issued { on_demand, ..i })
                });
            match parsed {
                Ok(i) => stored.issued.push(i),
                Err(e) => warn!(resolver, name, error = %e, "a stored certificate was skipped"),
            }
        }
        Ok(stored)
    }

    /// Keeps the account for every replica.
    pub async fn save_account(
        &self,
        resolver: &str,
        credentials: &instant_acme::AccountCredentials,
        ca_server: &str,
    ) -> Result<(), String> {
        let json = serde_json::json!({ "credentials": credentials, "ca_server": ca_server });
        let mut c = self.conn();
        let _: () = c
            .set(
                format!("{}account", Self::prefix(resolver)),
                json.to_string(),
            )
            .await
            .map_err(|e| self.failed("write", e))?;
        self.ok();
        Ok(())
    }

    /// Keeps a certificate for every replica.
    pub async fn save_cert(&self, resolver: &str, issued: &Issued) -> Result<(), String> {
        let value = serde_json::to_string(&StoredCert {
            certificate: issued.certificate.clone(),
            key: self.seal(&issued.key)?,
            on_demand: issued.on_demand,
        })
        .map_err(|e| e.to_string())?;
        let mut c = self.conn();
        let _: () = c
            .hset(
                format!("{}certs", Self::prefix(resolver)),
                &issued.name,
                value,
            )
            .await
            .map_err(|e| self.failed("write", e))?;
        self.ok();
        Ok(())
    }

    /// Takes the order lock of `name` for `LOCK_TTL`: the token to renew and release it with, or
    /// `None` when another replica holds it.
    pub async fn lock(&self, resolver: &str, name: &str) -> Result<Option<String>, String> {
        let token = format!("{:032x}", fastrand::u128(..));
        let mut c = self.conn();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}lock:{name}", Self::prefix(resolver)))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_TTL.as_millis() as u64)
            .query_async(&mut c)
            .await
            .map_err(|e| self.failed("lock", e))?;
        self.ok();
        Ok(set.map(|_| token))
    }

    /// Renews (`renew`) or releases the lock, only when `token` still holds it.
    pub async fn unlock(&self, resolver: &str, name: &str, token: &str, renew: bool) -> bool {
        let script = if renew {
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
        } else {
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
        };
        let mut c = self.conn();
        let n: Result<i64, _> = redis::Script::new(script)
            .key(format!("{}lock:{name}", Self::prefix(resolver)))
            .arg(token)
            .arg(LOCK_TTL.as_millis() as u64)
            .invoke_async(&mut c)
            .await;
        n.is_ok_and(|n| n == 1)
    }

    /// Publishes an HTTP-01 answer for every replica.
    pub async fn put_challenge(&self, token: &str, key_auth: &str) -> Result<(), String> {
        let mut c = self.conn();
        let _: () = c
            .set_ex(
                format!("switchyard:acme:challenge:{token}"),
                key_auth,
                CHALLENGE_TTL.as_secs(),
            )
            .await
            .map_err(|e| self.failed("write", e))?;
        Ok(())
    }

    /// Removes an HTTP-01 answer.
    pub async fn drop_challenge(&self, token: &str) {
        let mut c = self.conn();
        let _: Result<(), _> = c.del(format!("switchyard:acme:challenge:{token}")).await;
    }

    /// Publishes a TLS-ALPN-01 answer (the key authorization's SHA-256) for `name`, so the
    /// replica the CA reaches can answer the handshake; it expires with the challenge.
    pub async fn put_alpn(&self, name: &str, digest: &[u8]) -> Result<(), String> {
        let mut c = self.conn();
        let ttl = i64::try_from(CHALLENGE_TTL.as_secs()).unwrap_or(i64::MAX);
        let until = crate::tls::certs::now().saturating_add(ttl);
        let value = format!("{until}:{}", hex_of(digest));
        let _: () = c
            .hset(ALPN_KEY, name, value)
            .await
            .map_err(|e| self.failed("write", e))?;
        Ok(())
    }

    /// Removes a TLS-ALPN-01 answer.
    pub async fn drop_alpn(&self, name: &str) {
        let mut c = self.conn();
        let _: Result<(), _> = c.hdel(ALPN_KEY, name).await;
    }

    /// The TLS-ALPN-01 answers every replica published and that have not expired: name →
    /// digest. `None` when the store cannot be read.
    pub async fn alpn_answers(&self) -> Option<BTreeMap<String, Vec<u8>>> {
        let mut c = self.conn();
        let all: BTreeMap<String, String> = match c.hgetall(ALPN_KEY).await {
            Ok(v) => {
                self.ok();
                v
            }
            Err(e) => {
                self.failed("read", e);
                return None;
            }
        };
        let now = crate::tls::certs::now();
        let mut out = BTreeMap::new();
        for (name, value) in all {
            let parsed = value
                .split_once(':')
                .and_then(|(until, hex)| Some((until.parse::<i64>().ok()?, bytes_of_hex(hex)?)));
            match parsed {
                Some((until, digest)) if until > now => {
                    out.insert(name, digest);
                }
                // Expired or unreadable: an order that died without cleaning up.
                _ => self.drop_alpn(&name).await,
            }
        }
        Some(out)
    }

    /// An HTTP-01 answer another replica published.
    pub async fn challenge(&self, token: &str) -> Option<String> {
        let mut c = self.conn();
        match c.get(format!("switchyard:acme:challenge:{token}")).await {
            Ok(v) => {
                self.ok();
                v
            }
            Err(e) => {
                self.failed("read", e);
                None
            }
        }
    }
}

impl crate::tls::store::RemoteChallenges for SharedStore {
    fn http<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(self.challenge(token))
    }
}
