//! Access control middlewares in the style of Traefik: `basicAuth` (htpasswd users) and
//! `ipAllowList` (client address against CIDRs).
//!
//! Owns parsing of htpasswd lines (bcrypt, Apache `$apr1$` MD5-crypt, `{SHA}`), the check of an
//! `Authorization` header, and the allow-list match. The proxy checks in two steps:
//! `BasicAuth::check_cached` answers from the verdict cache (or verifies a cheap `{SHA}` hash)
//! without blocking; a slow hash (bcrypt, `$apr1$`) comes back as `Cached::Unknown` and
//! `BasicAuth::verify` runs it on tokio's blocking pool, so a proxy worker's thread never
//! spends a hash's time on one request. `authenticate` is the synchronous one-step form (it
//! verifies slow hashes on the caller's thread).
//!
//! Invariants: the user table is immutable after `new`; the verdict cache holds exactly the
//! outcome the hash gave for that `Authorization` value — successes (with the user they name)
//! and failures in two separate maps, each bounded by `CACHE_CAPACITY` (cleared when full, so a
//! flood of wrong passwords never evicts good credentials) — and is keyed by a SHA-256 digest of
//! the whole `Authorization` value, never by the raw header; a value's verdict never changes
//! (same bytes, same immutable users), so a cached failure never turns into a success or back,
//! and a corrected password is a different value, hence a different key. Only a finished hash
//! comparison is cached: malformed headers and unknown users are refused without an entry, and
//! a verification that did not finish (`JoinError`) is refused and not cached. At most
//! `available_parallelism` slow verifications per `BasicAuth` run at once; the rest wait without
//! holding a thread. Must never: print, log or put into an error message a password hash or a
//! password; compare a secret digest with a short-circuiting `==`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use ipnet::{IpNet, Ipv4Net};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Entries kept in each half of the verdict cache (successes, failures) before that half is
/// cleared. Bcrypt costs tens of milliseconds per check; this keeps repeated requests — good or
/// bad — cheap with bounded memory.
const CACHE_CAPACITY: usize = 1024;

const APR1_MAGIC: &str = "$apr1$";
/// The crypt(3) base-64 alphabet used by MD5-crypt (not RFC 4648).
const CRYPT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A parsed password hash. Deliberately not `Debug` so it cannot leak through formatting.
enum PasswordHash {
    /// The full `$2?$cost$salthash` string, validated at parse time.
    Bcrypt(String),
    /// Salt (at most 8 chars) and the 22-char encoded digest.
    Apr1 { salt: String, encoded: String },
    /// The raw SHA-1 digest.
    Sha1([u8; 20]),
}

impl PasswordHash {
    fn parse(hash: &str) -> Result<PasswordHash, &'static str> {
        if hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$") {
            return match bcrypt::HashParts::from_str(hash) {
                Ok(_) => Ok(PasswordHash::Bcrypt(hash.to_owned())),
                Err(_) => Err("malformed bcrypt hash"),
            };
        }
        if let Some(rest) = hash.strip_prefix(APR1_MAGIC) {
            let (salt, encoded) = rest.split_once('$').ok_or("malformed $apr1$ hash")?;
            let valid_salt = !salt.is_empty()
                && salt.len() <= 8
                && salt.bytes().all(|b| b != b'$' && b.is_ascii_graphic());
            let valid_digest =
                encoded.len() == 22 && encoded.bytes().all(|b| CRYPT_ALPHABET.contains(&b));
            if !valid_salt || !valid_digest {
                return Err("malformed $apr1$ hash");
            }
            return Ok(PasswordHash::Apr1 {
                salt: salt.to_owned(),
                encoded: encoded.to_owned(),
            });
        }
        if let Some(b64) = hash.strip_prefix("{SHA}") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| "malformed {SHA} hash")?;
            let digest: [u8; 20] = raw.try_into().map_err(|_| "malformed {SHA} hash")?;
            return Ok(PasswordHash::Sha1(digest));
        }
        Err("unsupported hash (expected bcrypt, $apr1$ or {SHA})")
    }

    /// Whether checking a password costs real time (bcrypt, 1000 MD5 rounds): such checks run
    /// off the proxy worker's thread.
    fn is_slow(&self) -> bool {
        !matches!(self, PasswordHash::Sha1(_))
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Apr1 { salt, encoded } => {
                let computed = apr1_encoded(password, salt.as_bytes());
                computed.as_bytes().ct_eq(encoded.as_bytes()).into()
            }
            PasswordHash::Sha1(expected) => {
                let computed = Sha1::digest(password);
                computed.as_slice().ct_eq(expected.as_slice()).into()
            }
        }
    }
}

/// MD5-crypt (as in FreeBSD's crypt and Apache's `$apr1$`): returns the 22-char encoded digest
/// (without magic and salt). `salt` must already be at most 8 bytes without `$`.
fn apr1_encoded(password: &[u8], salt: &[u8]) -> String {
    let alt = {
        let mut h = md5::Md5::new();
        h.update(password);
        h.update(salt);
        h.update(password);
        h.finalize()
    };

    let mut ctx = md5::Md5::new();
    ctx.update(password);
    ctx.update(APR1_MAGIC.as_bytes());
    ctx.update(salt);
    let mut remaining = password.len();
    while remaining > 0 {
        let n = remaining.min(16);
        ctx.update(alt.get(..n).unwrap_or_default());
        remaining -= n;
    }
    let first = password.get(..1).unwrap_or_default();
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(first);
        }
        i >>= 1;
    }
    let mut digest: [u8; 16] = ctx.finalize().into();

    // The 1000 rounds exist to slow down brute force; the mixing order is the algorithm.
    for round in 0..1000u32 {
        let mut h = md5::Md5::new();
        if round & 1 == 1 {
            h.update(password);
        } else {
            h.update(digest);
        }
        if round % 3 != 0 {
            h.update(salt);
        }
        if round % 7 != 0 {
            h.update(password);
        }
        if round & 1 == 1 {
            h.update(digest);
        } else {
            h.update(password);
        }
        digest = h.finalize().into();
    }

    let [f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15] = digest;
    let groups: [(u32, usize); 6] = [
        (
            (u32::from(f0) << 16) | (u32::from(f6) << 8) | u32::from(f12),
            4,
        ),
        (
            (u32::from(f1) << 16) | (u32::from(f7) << 8) | u32::from(f13),
            4,
        ),
        (
            (u32::from(f2) << 16) | (u32::from(f8) << 8) | u32::from(f14),
            4,
        ),
        (
            (u32::from(f3) << 16) | (u32::from(f9) << 8) | u32::from(f15),
            4,
        ),
        (
            (u32::from(f4) << 16) | (u32::from(f10) << 8) | u32::from(f5),
            4,
        ),
        (u32::from(f11), 2),
    ];
    let mut out = String::with_capacity(22);
    for (mut value, chars) in groups {
        for _ in 0..chars {
            let c = CRYPT_ALPHABET
                .get((value & 0x3f) as usize)
                .copied()
                .unwrap_or(b'.');
            out.push(char::from(c));
            value >>= 6;
        }
    }
    out
}

/// What the verdict cache (or a cheap inline check) knows about an `Authorization` header.
#[derive(Debug)]
pub enum Cached {
    /// Verified: the user it names.
    Allowed(String),
    /// No header, a malformed one, an unknown user, or a password known to be wrong.
    Refused,
    /// A slow hash has to be checked: hand this to `BasicAuth::verify`.
    Unknown(Pending),
}

/// A slow password check not done yet (from `BasicAuth::check_cached`). Deliberately without
/// the password in its `Debug`.
pub struct Pending {
    key: [u8; 32],
    user: String,
    password: Vec<u8>,
    hash: Arc<PasswordHash>,
}

impl Pending {
    /// Runs the hash check on the calling thread and records the verdict.
    fn run(self, cache: &Mutex<Verdicts>) -> Option<String> {
        let ok = self.hash.verify(&self.password);
        lock(cache).record(self.key, ok.then(|| self.user.clone()));
        ok.then_some(self.user)
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").field("user", &self.user).finish()
    }
}

/// The verdict cache: SHA-256 of an `Authorization` value -> what its check gave. Two maps so
/// that failures (which anyone can mint) never push successes out.
#[derive(Default)]
struct Verdicts {
    /// Values that verified OK -> the user they name.
    allowed: HashMap<[u8; 32], String>,
    /// Values whose password was wrong.
    refused: HashSet<[u8; 32]>,
}

impl Verdicts {
    fn get(&self, key: &[u8; 32]) -> Option<Option<String>> {
        if let Some(user) = self.allowed.get(key) {
            return Some(Some(user.clone()));
        }
        self.refused.contains(key).then_some(None)
    }

    /// Records a finished check: `Some(user)` verified, `None` did not.
    fn record(&mut self, key: [u8; 32], verdict: Option<String>) {
        match verdict {
            Some(user) => {
                if self.allowed.len() >= CACHE_CAPACITY {
                    self.allowed.clear();
                }
                self.allowed.insert(key, user);
            }
            None => {
                if self.refused.len() >= CACHE_CAPACITY {
                    self.refused.clear();
                }
                self.refused.insert(key);
            }
        }
    }
}

fn lock(cache: &Mutex<Verdicts>) -> MutexGuard<'_, Verdicts> {
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

/// HTTP Basic authentication against a fixed htpasswd user table.
pub struct BasicAuth {
    /// In file order, for listings.
    names: Vec<String>,
    /// `Arc` so a slow check can take its hash to the blocking pool.
    users: HashMap<String, Arc<PasswordHash>>,
    realm: String,
    challenge: HeaderValue,
    /// Shared with the blocking checks, which record their verdict even when the request that
    /// asked has gone.
    cache: Arc<Mutex<Verdicts>>,
    /// Bounds the slow checks running at once (owned permits travel into the blocking task).
    slow: Arc<tokio::sync::Semaphore>,
}

impl BasicAuth {
    /// `lines`: htpasswd lines `user:hash` (bcrypt `$2y$`/`$2a$`/`$2b$`, `$apr1$`, `{SHA}`).
    /// Blank lines and `#` comments are skipped. Errors name the 1-based line and the user,
    /// never the hash. An empty user list is an error.
    pub fn new(lines: &[String], realm: &str) -> Result<BasicAuth, String> {
        let mut names = Vec::new();
        let mut users = HashMap::new();
        for (index, raw) in lines.iter().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = match line.split_once(':') {
                Some((user, hash)) if !user.is_empty() && !hash.is_empty() => (user, hash),
                _ => return Err(format!("line {line_no}: expected user:hash")),
            };
            let parsed = PasswordHash::parse(hash)
                .map_err(|why| format!("line {line_no}: user {user:?}: {why}"))?;
            if users.insert(user.to_owned(), Arc::new(parsed)).is_some() {
                return Err(format!("line {line_no}: user {user:?}: duplicate user"));
            }
            names.push(user.to_owned());
        }
        if names.is_empty() {
            return Err("basic auth: no users".to_owned());
        }
        let escaped = realm.replace('\\', "\\\\").replace('"', "\\\"");
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{escaped}\""))
            .map_err(|_| format!("basic auth: realm {realm:?}: not a valid header value"))?;
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(BasicAuth {
            names,
            users,
            realm: realm.to_owned(),
            challenge,
            cache: Arc::new(Mutex::new(Verdicts::default())),
            slow: Arc::new(tokio::sync::Semaphore::new(parallel)),
        })
    }

    /// The cheap step: the cached verdict for this `Authorization` header, a `{SHA}` check done
    /// inline, a refusal that needs no hash (no or malformed header, unknown user), or
    /// `Unknown` when a slow hash has to be checked (`verify`). Never blocks for a hash's time.
    pub fn check_cached(&self, headers: &HeaderMap) -> Cached {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Cached::Refused;
        };
        let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        if let Some(verdict) = lock(&self.cache).get(&key) {
            return match verdict {
                Some(user) => Cached::Allowed(user),
                None => Cached::Refused,
            };
        }
        let Some((user, password, hash)) = self.parse(value) else {
            return Cached::Refused;
        };
        let pending = Pending {
            key,
            user,
            password,
            hash,
        };
        if pending.hash.is_slow() {
            return Cached::Unknown(pending);
        }
        match pending.run(&self.cache) {
            Some(user) => Cached::Allowed(user),
            None => Cached::Refused,
        }
    }

    /// The slow step: checks a pending password on tokio's blocking pool (at most
    /// `available_parallelism` at once per `BasicAuth`) and caches the verdict. The user on
    /// success. A check that does not finish (the blocking task failed or was cancelled) is a
    /// refusal, logged and not cached. Outside a tokio runtime it checks inline.
    pub async fn verify(&self, pending: Pending) -> Option<String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return pending.run(&self.cache);
        }
        // The semaphore is never closed; if it were, checking unbounded is still correct.
        let permit = self.slow.clone().acquire_owned().await.ok();
        let cache = self.cache.clone();
        let task = tokio::task::spawn_blocking(move || {
            let verdict = pending.run(&cache);
            drop(permit);
            verdict
        });
        match task.await {
            Ok(verdict) => verdict,
            Err(e) => {
                tracing::warn!(error = %e, "basic auth: password check did not finish; refused");
                None
            }
        }
    }

    /// The user named by a valid `Authorization: Basic ...` header, else `None`. Synchronous:
    /// a slow hash is checked on the calling thread (the proxy uses `check_cached` + `verify`).
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        match self.check_cached(headers) {
            Cached::Allowed(user) => Some(user),
            Cached::Refused => None,
            Cached::Unknown(pending) => pending.run(&self.cache),
        }
    }

    /// User, password and the user's hash from a well-formed `Basic` value of a known user.
    fn parse(&self, value: &HeaderValue) -> Option<(String, Vec<u8>, Arc<PasswordHash>)> {
        let text = value.to_str().ok()?.trim();
        let (scheme, credentials) = text.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials.trim())
            .ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        let (user, password) = decoded.split_at(colon);
        let password = password.get(1..).unwrap_or_default();
        let user = std::str::from_utf8(user).ok()?;
        let hash = self.users.get(user)?;
        Some((user.to_owned(), password.to_vec(), hash.clone()))
    }

    /// The `WWW-Authenticate` value for a 401: `Basic realm="<realm>"`.
    pub fn challenge(&self) -> HeaderValue {
        self.challenge.clone()
    }

    /// User names in file order (no hashes).
    pub fn users(&self) -> Vec<String> {
        self.names.clone()
    }

    fn lock_cache(&self) -> MutexGuard<'_, Verdicts> {
        lock(&self.cache)
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cache = self.lock_cache();
        f.debug_struct("BasicAuth")
            .field("realm", &self.realm)
            .field("users", &self.names)
            .field("cached_allowed", &cache.allowed.len())
            .field("cached_refused", &cache.refused.len())
            .finish()
    }
}

/// Client address allow list.
#[derive(Debug, Clone)]
pub struct IpAllowList {
    /// As written, for listings.
    entries: Vec<String>,
    /// IPv4-mapped IPv6 networks are stored as their IPv4 network so both spellings match.
    nets: Vec<IpNet>,
}

impl IpAllowList {
    /// Entries: CIDRs (`10.0.0.0/8`, `::1/128`) or single addresses. Empty is an error.
    pub fn new(entries: &[String]) -> Result<IpAllowList, String> {
        if entries.is_empty() {
            return Err("ip allow list: no entries".to_owned());
        }
        let mut nets = Vec::with_capacity(entries.len());
        for entry in entries {
            let text = entry.trim();
            let net = if text.contains('/') {
                IpNet::from_str(text).map_err(|_| {
                    format!("ip allow list: entry {entry:?}: not an IP address or CIDR")
                })?
            } else {
                IpAddr::from_str(text).map(IpNet::from).map_err(|_| {
                    format!("ip allow list: entry {entry:?}: not an IP address or CIDR")
                })?
            };
            nets.push(canonical_net(net));
        }
        Ok(IpAllowList {
            entries: entries.to_vec(),
            nets,
        })
    }

    /// Whether `ip` is inside any entry; `::ffff:a.b.c.d` is treated as `a.b.c.d`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The entries as written.
    pub fn entries(&self) -> Vec<String> {
        self.entries.clone()
    }
}

/// `::ffff:a.b.c.d/n` with n >= 96 becomes `a.b.c.d/(n-96)`; everything else is unchanged.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if v6.prefix_len() >= 96 {
            if let Some(v4) = v6.network().to_ipv4_mapped() {
                if let Ok(mapped) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(mapped);
                }
            }
        }
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn basic(user_pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {b64}")).unwrap(),
        );
        h
    }

    fn raw_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    // Generated with `openssl passwd -apr1 -salt qHyN1eX4 myPassword`. The vector given in the
    // brief ("$apr1$qHyN1eX4$W1I5z.tm2Alt8TJ1xnOsX0") does not match openssl or this code.
    const APR1_MYPASSWORD: &str = "$apr1$qHyN1eX4$fa5LkijgGQ1hAX3SGNfXD/";

    #[test]
    fn apr1_matches_openssl_vectors() {
        assert_eq!(
            apr1_encoded(b"myPassword", b"qHyN1eX4"),
            "fa5LkijgGQ1hAX3SGNfXD/"
        );
        // `openssl passwd -apr1 -salt abc x`
        assert_eq!(apr1_encoded(b"x", b"abc"), "51YrpNiEtKAQp4coykJmu.");
    }

    #[test]
    fn apr1_user_right_and_wrong_password() {
        let auth = BasicAuth::new(&lines(&[&format!("myName:{APR1_MYPASSWORD}")]), "r").unwrap();
        assert_eq!(
            auth.authenticate(&basic("myName:myPassword")).as_deref(),
            Some("myName")
        );
        assert_eq!(auth.authenticate(&basic("myName:mypassword")), None);
        assert_eq!(auth.authenticate(&basic("other:myPassword")), None);
    }

    #[test]
    fn sha_user_right_and_wrong_password() {
        let auth =
            BasicAuth::new(&lines(&["alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="]), "r").unwrap();
        assert_eq!(
            auth.authenticate(&basic("alice:password")).as_deref(),
            Some("alice")
        );
        assert_eq!(auth.authenticate(&basic("alice:Password")), None);
        assert_eq!(auth.authenticate(&basic("alice:")), None);
    }

    #[test]
    fn bcrypt_user_right_and_wrong_password_all_prefixes() {
        let hash = bcrypt::hash("s3cret:with:colons", 4).unwrap();
        assert!(hash.starts_with("$2b$"));
        let as_2y = hash.replacen("$2b$", "$2y$", 1);
        let as_2a = hash.replacen("$2b$", "$2a$", 1);
        let auth = BasicAuth::new(
            &lines(&[
                &format!("b:{hash}"),
                &format!("y:{as_2y}"),
                &format!("a:{as_2a}"),
            ]),
            "r",
        )
        .unwrap();
        for user in ["b", "y", "a"] {
            assert_eq!(
                auth.authenticate(&basic(&format!("{user}:s3cret:with:colons")))
                    .as_deref(),
                Some(user)
            );
            assert_eq!(auth.authenticate(&basic(&format!("{user}:s3cret"))), None);
        }
        assert_eq!(auth.users(), vec!["b", "y", "a"]);
    }

    #[test]
    fn cache_hits_return_same_user() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let auth = BasicAuth::new(&lines(&[&format!("bob:{hash}")]), "r").unwrap();
        assert_eq!(auth.authenticate(&basic("bob:pw")).as_deref(), Some("bob"));
        assert_eq!(auth.lock_cache().allowed.len(), 1);
        // Second call is served from the cache (still one entry, same answer).
        assert!(matches!(
            auth.check_cached(&basic("bob:pw")),
            Cached::Allowed(u) if u == "bob"
        ));
        assert_eq!(auth.authenticate(&basic("bob:pw")).as_deref(), Some("bob"));
        assert_eq!(auth.lock_cache().allowed.len(), 1);
        assert!(auth.lock_cache().refused.is_empty());
    }

    #[test]
    fn wrong_password_is_cached_as_refused_and_right_one_still_allowed() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let auth = BasicAuth::new(&lines(&[&format!("bob:{hash}")]), "r").unwrap();
        // First sight of a wrong password: a slow check is needed.
        let Cached::Unknown(pending) = auth.check_cached(&basic("bob:bad")) else {
            panic!("a bcrypt user is not checked inline");
        };
        assert_eq!(pending.run(&auth.cache), None);
        assert_eq!(auth.lock_cache().refused.len(), 1);
        assert!(auth.lock_cache().allowed.is_empty());
        // Now the same value is refused from the cache, without a hash.
        assert!(matches!(
            auth.check_cached(&basic("bob:bad")),
            Cached::Refused
        ));
        assert_eq!(auth.authenticate(&basic("bob:bad")), None);
        // The right password right after is a different value: checked and allowed.
        assert!(matches!(
            auth.check_cached(&basic("bob:pw")),
            Cached::Unknown(_)
        ));
        assert_eq!(auth.authenticate(&basic("bob:pw")).as_deref(), Some("bob"));
        assert!(matches!(
            auth.check_cached(&basic("bob:pw")),
            Cached::Allowed(u) if u == "bob"
        ));
        // Neither verdict moved: the wrong one is still refused.
        assert!(matches!(
            auth.check_cached(&basic("bob:bad")),
            Cached::Refused
        ));
        assert_eq!(auth.lock_cache().allowed.len(), 1);
        assert_eq!(auth.lock_cache().refused.len(), 1);
        // The key is a digest: neither the raw header nor the password is stored.
        let raw = basic("bob:bad");
        let value = raw.get(http::header::AUTHORIZATION).unwrap().as_bytes();
        let key: [u8; 32] = Sha256::digest(value).into();
        assert!(auth.lock_cache().refused.contains(&key));
        // Malformed headers and unknown users leave no entry.
        assert_eq!(auth.authenticate(&basic("nobody:pw")), None);
        assert_eq!(auth.authenticate(&raw_auth("Basic !!!")), None);
        assert_eq!(auth.lock_cache().refused.len(), 1);
    }

    #[test]
    fn sha_and_apr1_checks_split_inline_and_slow() {
        let auth = BasicAuth::new(
            &lines(&[
                "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
                &format!("myName:{APR1_MYPASSWORD}"),
            ]),
            "r",
        )
        .unwrap();
        // {SHA} is checked inline, both ways, and the verdicts are cached.
        assert!(matches!(
            auth.check_cached(&basic("alice:password")),
            Cached::Allowed(u) if u == "alice"
        ));
        assert!(matches!(
            auth.check_cached(&basic("alice:wrong")),
            Cached::Refused
        ));
        assert_eq!(auth.lock_cache().allowed.len(), 1);
        assert_eq!(auth.lock_cache().refused.len(), 1);
        // $apr1$ (1000 MD5 rounds) goes to the slow path.
        assert!(matches!(
            auth.check_cached(&basic("myName:myPassword")),
            Cached::Unknown(_)
        ));
        assert!(matches!(
            auth.check_cached(&HeaderMap::new()),
            Cached::Refused
        ));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn verify_runs_off_thread_and_caches_both_verdicts() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let auth = BasicAuth::new(&lines(&[&format!("bob:{hash}")]), "r").unwrap();
        let Cached::Unknown(bad) = auth.check_cached(&basic("bob:bad")) else {
            panic!("slow path expected");
        };
        let dbg = format!("{bad:?}");
        assert!(dbg.contains("bob") && !dbg.contains("bad"), "{dbg}");
        assert_eq!(auth.verify(bad).await, None);
        assert!(matches!(
            auth.check_cached(&basic("bob:bad")),
            Cached::Refused
        ));
        let Cached::Unknown(good) = auth.check_cached(&basic("bob:pw")) else {
            panic!("slow path expected");
        };
        assert_eq!(auth.verify(good).await.as_deref(), Some("bob"));
        assert!(matches!(
            auth.check_cached(&basic("bob:pw")),
            Cached::Allowed(u) if u == "bob"
        ));
    }

    #[test]
    fn refused_half_is_bounded_and_never_evicts_successes() {
        let auth =
            BasicAuth::new(&lines(&["alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="]), "r").unwrap();
        assert!(auth.authenticate(&basic("alice:password")).is_some());
        for i in 0..CACHE_CAPACITY {
            assert_eq!(auth.authenticate(&basic(&format!("alice:wrong{i}"))), None);
        }
        assert_eq!(auth.lock_cache().refused.len(), CACHE_CAPACITY);
        assert_eq!(auth.authenticate(&basic("alice:one-more")), None);
        assert_eq!(auth.lock_cache().refused.len(), 1);
        assert_eq!(auth.lock_cache().allowed.len(), 1);
    }

    #[test]
    fn cache_is_cleared_when_full() {
        let auth =
            BasicAuth::new(&lines(&["alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="]), "r").unwrap();
        // Different spellings of the scheme give distinct cache keys for the same credential.
        for i in 0..CACHE_CAPACITY {
            let b64 = base64::engine::general_purpose::STANDARD.encode("alice:password");
            let value = format!("Basic {b64}{}", " ".repeat(i));
            assert!(auth.authenticate(&raw_auth(&value)).is_some());
        }
        assert_eq!(auth.lock_cache().allowed.len(), CACHE_CAPACITY);
        assert_eq!(
            auth.authenticate(&raw_auth("bAsIc YWxpY2U6cGFzc3dvcmQ="))
                .as_deref(),
            Some("alice")
        );
        assert_eq!(auth.lock_cache().allowed.len(), 1);
    }

    #[test]
    fn malformed_authorization_headers() {
        let auth =
            BasicAuth::new(&lines(&["alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="]), "r").unwrap();
        assert_eq!(auth.authenticate(&HeaderMap::new()), None);
        // Right credentials, wrong scheme.
        assert_eq!(
            auth.authenticate(&raw_auth("Bearer YWxpY2U6cGFzc3dvcmQ=")),
            None
        );
        assert_eq!(auth.authenticate(&raw_auth("YWxpY2U6cGFzc3dvcmQ=")), None);
        assert_eq!(auth.authenticate(&raw_auth("Basic")), None);
        assert_eq!(auth.authenticate(&raw_auth("Basic !!!not-base64")), None);
        // base64("alicepassword"): no colon.
        assert_eq!(
            auth.authenticate(&raw_auth("Basic YWxpY2VwYXNzd29yZA==")),
            None
        );
        // Scheme is case-insensitive.
        assert_eq!(
            auth.authenticate(&raw_auth("bAsIc YWxpY2U6cGFzc3dvcmQ="))
                .as_deref(),
            Some("alice")
        );
    }

    #[test]
    fn parse_errors_name_line_and_user_not_hash() {
        let err = BasicAuth::new(&lines(&["# comment", "bob:$1$abc$notsupported", "x"]), "r")
            .unwrap_err();
        assert_eq!(
            err,
            "line 2: user \"bob\": unsupported hash (expected bcrypt, $apr1$ or {SHA})"
        );
        assert!(!err.contains("notsupported"));

        let err = BasicAuth::new(&lines(&["", "# c", "nocolon"]), "r").unwrap_err();
        assert_eq!(err, "line 3: expected user:hash");

        let err = BasicAuth::new(&lines(&["a:{SHA}short"]), "r").unwrap_err();
        assert_eq!(err, "line 1: user \"a\": malformed {SHA} hash");

        let err = BasicAuth::new(&lines(&["a:$2y$04$tooshort"]), "r").unwrap_err();
        assert_eq!(err, "line 1: user \"a\": malformed bcrypt hash");

        let err = BasicAuth::new(&lines(&["a:$apr1$salt"]), "r").unwrap_err();
        assert_eq!(err, "line 1: user \"a\": malformed $apr1$ hash");

        let err = BasicAuth::new(
            &lines(&[
                "a:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
                "a:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
            ]),
            "r",
        )
        .unwrap_err();
        assert_eq!(err, "line 2: user \"a\": duplicate user");

        assert!(BasicAuth::new(&lines(&["", "# only comments"]), "r").is_err());
        assert!(BasicAuth::new(&[], "r").is_err());
    }

    #[test]
    fn challenge_escapes_realm_and_debug_hides_hashes() {
        let auth = BasicAuth::new(
            &lines(&["alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="]),
            "my \"realm\"",
        )
        .unwrap();
        assert_eq!(auth.challenge(), "Basic realm=\"my \\\"realm\\\"\"");
        let dbg = format!("{auth:?}");
        assert!(dbg.contains("alice"));
        assert!(!dbg.contains("W6ph5Mm5"));
    }

    #[test]
    fn allow_list_v4_v6_and_mapped() {
        let list = IpAllowList::new(&lines(&[
            "10.0.0.0/8",
            "192.168.1.7",
            "2001:db8::/32",
            "::ffff:172.16.0.0/108",
        ]))
        .unwrap();
        let ip = |s: &str| IpAddr::from_str(s).unwrap();
        assert!(list.allows(ip("10.1.2.3")));
        assert!(!list.allows(ip("11.0.0.1")));
        assert!(list.allows(ip("192.168.1.7")));
        assert!(!list.allows(ip("192.168.1.8")));
        assert!(list.allows(ip("2001:db8::1")));
        assert!(!list.allows(ip("2001:db9::1")));
        // Mapped client against a v4 entry.
        assert!(list.allows(ip("::ffff:10.9.9.9")));
        assert!(!list.allows(ip("::ffff:11.9.9.9")));
        // Plain v4 client against a mapped entry (/108 = /12 in v4 terms).
        assert!(list.allows(ip("172.31.255.255")));
        assert!(!list.allows(ip("172.32.0.0")));
        assert_eq!(list.entries().len(), 4);

        let v6only = IpAllowList::new(&lines(&["::1/128"])).unwrap();
        assert!(v6only.allows(ip("::1")));
        assert!(!v6only.allows(ip("127.0.0.1")));
    }

    #[test]
    fn allow_list_errors() {
        assert_eq!(
            IpAllowList::new(&lines(&["10.0.0.0/8", "10.0.0.0/33"])).unwrap_err(),
            "ip allow list: entry \"10.0.0.0/33\": not an IP address or CIDR"
        );
        assert_eq!(
            IpAllowList::new(&lines(&["example.com"])).unwrap_err(),
            "ip allow list: entry \"example.com\": not an IP address or CIDR"
        );
        assert!(IpAllowList::new(&[]).is_err());
    }
}
