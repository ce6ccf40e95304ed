//! Access control middlewares in the style of Traefik: `basicAuth` (htpasswd users) and
//! `ipAllowList` (client address against CIDRs).
//!
//! Owns parsing of htpasswd lines (bcrypt, Apache `$apr1$` MD5-crypt, `{SHA}`), the check of an
//! `Authorization` header, and the allow-list match. Invariants: the user table is immutable
//! after `new`; the verification cache only ever holds credentials that verified OK, is bounded
//! (`CACHE_CAPACITY`) and is keyed by a SHA-256 digest, never by the raw header. Must never:
//! print, log or put into an error message a password hash or a password; compare a secret
//! digest with a short-circuiting `==`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Mutex;

use base64::Engine as _;
use http::{HeaderMap, HeaderValue};
use ipnet::{IpNet, Ipv4Net};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Entries kept in the verified-credentials cache before it is cleared. Bcrypt costs tens of
/// milliseconds per check; this keeps repeated good requests cheap with bounded memory.
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

/// HTTP Basic authentication against a fixed htpasswd user table.
pub struct BasicAuth {
    /// In file order, for listings.
    names: Vec<String>,
    users: HashMap<String, PasswordHash>,
    realm: String,
    challenge: HeaderValue,
    /// SHA-256 of an `Authorization` value that verified OK -> the user it names.
    cache: Mutex<HashMap<[u8; 32], String>>,
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
            if users.insert(user.to_owned(), parsed).is_some() {
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
        Ok(BasicAuth {
            names,
            users,
            realm: realm.to_owned(),
            challenge,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The user named by a valid `Authorization: Basic ...` header, else `None`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Option<String> {
        let value = headers.get(http::header::AUTHORIZATION)?;
        let key: [u8; 32] = Sha256::digest(value.as_bytes()).into();
        if let Some(user) = self.lock_cache().get(&key) {
            return Some(user.clone());
        }

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
        if !hash.verify(password) {
            return None;
        }

        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(key, user.to_owned());
        Some(user.to_owned())
    }

    /// The `WWW-Authenticate` value for a 401: `Basic realm="<realm>"`.
    pub fn challenge(&self) -> HeaderValue {
        self.challenge.clone()
    }

    /// User names in file order (no hashes).
    pub fn users(&self) -> Vec<String> {
        self.names.clone()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], String>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("realm", &self.realm)
            .field("users", &self.names)
            .field("cached", &self.lock_cache().len())
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
    fn cache_holds_only_successes_and_hits_return_same_user() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let auth = BasicAuth::new(&lines(&[&format!("bob:{hash}")]), "r").unwrap();
        assert_eq!(auth.authenticate(&basic("bob:bad")), None);
        assert_eq!(auth.lock_cache().len(), 0);
        assert_eq!(auth.authenticate(&basic("bob:pw")).as_deref(), Some("bob"));
        assert_eq!(auth.lock_cache().len(), 1);
        // Second call is served from the cache (still one entry, same answer).
        assert_eq!(auth.authenticate(&basic("bob:pw")).as_deref(), Some("bob"));
        assert_eq!(auth.lock_cache().len(), 1);
        assert_eq!(auth.authenticate(&basic("bob:bad")), None);
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
        assert_eq!(auth.lock_cache().len(), CACHE_CAPACITY);
        assert_eq!(
            auth.authenticate(&raw_auth("bAsIc YWxpY2U6cGFzc3dvcmQ="))
                .as_deref(),
            Some("alice")
        );
        assert_eq!(auth.lock_cache().len(), 1);
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
