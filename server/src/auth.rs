//! Authentication: Argon2 password hashes, HS256 client tokens with permissions, and the
//! failed-login rate limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};
use sealbus::protocol::ErrorCode;
use sealbus::topic::{matches, validate_filter};

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if getrandom::getrandom(&mut bytes).is_err() {
        // The OS generator is unavailable only on exotic platforms; fall back to clock noise
        // mixed through SHA-256 so values still differ between calls.
        use sha2::Digest as _;
        let seed = format!("{:?}{:?}", Instant::now(), std::thread::current().id());
        let digest = Sha256::digest(seed.as_bytes());
        for (out, byte) in bytes.iter_mut().zip(digest.iter().cycle()) {
            *out = *byte;
        }
    }
    bytes
}

/// A random URL-safe string of `N` random bytes.
pub fn random_token<const N: usize>() -> String {
    B64URL.encode(random_bytes::<N>())
}

/// Hashes a password with Argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|err| Error::Crypto(format!("salt: {err}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| Error::Crypto(format!("password hash: {err}")))
}

/// Checks a password against an Argon2 PHC hash (false for a malformed hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Spends the same Argon2 work as a real check, for logins to sessions that do not exist, so
/// that response times do not reveal which session names exist.
pub fn verify_against_dummy(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password("sealbus-dummy").unwrap_or_default());
    let _ = verify_password(password, hash);
}

/// The claims of a client token (`docs/PROTOCOL.md` §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The client id the connection gets.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Filters the client may publish to (absent: everything).
    #[serde(default, rename = "pub", skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
    /// Filters the client may subscribe within (absent: everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_filters: Option<Vec<String>>,
}

type HmacSha256 = Hmac<Sha256>;

/// Signs claims as an HS256 JWT with `secret`.
pub fn sign_token(claims: &Claims, secret: &[u8]) -> Result<String> {
    let header = B64URL.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = serde_json::to_vec(claims).map_err(|err| Error::Crypto(err.to_string()))?;
    let signing_input = format!("{header}.{}", B64URL.encode(body));
    let mut mac = HmacSha256::new_from_slice(secret)
        .map_err(|err| Error::Crypto(format!("token secret: {err}")))?;
    mac.update(signing_input.as_bytes());
    let signature = B64URL.encode(mac.finalize().into_bytes());
    Ok(format!("{signing_input}.{signature}"))
}

/// Verifies an HS256 JWT and its expiry; `auth_failed` or `token_expired` otherwise.
pub fn verify_token(token: &str, secret: &[u8], now_secs: u64) -> Result<Claims> {
    let failed = || Error::protocol(ErrorCode::AuthFailed, None, "authentication failed");
    let mut parts = token.split('.');
    let (Some(header), Some(body), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(failed());
    };
    let header: serde_json::Value = B64URL
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(failed)?;
    if header.get("alg").and_then(|alg| alg.as_str()) != Some("HS256") {
        return Err(failed());
    }
    let signature = B64URL.decode(signature).map_err(|_| failed())?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| failed())?;
    mac.update(&token.as_bytes()[..header_len(token)]);
    mac.verify_slice(&signature).map_err(|_| failed())?;
    let claims: Claims = B64URL
        .decode(body)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(failed)?;
    if claims.exp <= now_secs {
        return Err(Error::protocol(
            ErrorCode::TokenExpired,
            None,
            "token expired",
        ));
    }
    Ok(claims)
}

/// Length of the `header.body` part of a token (the signing input).
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

/// What a connection may do; from its token, or everything for a password login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Filters allowed for publishing (None: all).
    pub publish: Option<Vec<String>>,
    /// Filters allowed for subscribing (None: all).
    pub subscribe: Option<Vec<String>>,
}

impl Permissions {
    /// Permissions from token claims.
    pub fn from_claims(claims: &Claims) -> Self {
        Permissions {
            publish: claims.publish.clone(),
            subscribe: claims.sub_filters.clone(),
        }
    }

    /// May the client publish to `topic`?
    pub fn may_publish(&self, topic: &str) -> bool {
        match &self.publish {
            None => true,
            Some(allowed) => allowed.iter().any(|filter| matches(filter, topic)),
        }
    }

    /// May the client subscribe to `filter` (is it within one of the allowed filters)?
    pub fn may_subscribe(&self, filter: &str) -> bool {
        match &self.subscribe {
            None => true,
            Some(allowed) => allowed.iter().any(|outer| covers(outer, filter)),
        }
    }
}

/// Whether every topic matched by `inner` is also matched by `outer`.
pub fn covers(outer: &str, inner: &str) -> bool {
    if validate_filter(outer).is_err() {
        return false;
    }
    let mut outer_levels = outer.split('/');
    let mut inner_levels = inner.split('/');
    loop {
        match (outer_levels.next(), inner_levels.next()) {
            (Some("#"), Some(level)) => return !(level.starts_with('$') && outer == "#"),
            (Some("#"), None) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Counts failed authentications per peer address and refuses peers over the limit.
#[derive(Debug)]
pub struct RateLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    /// A limiter allowing `max_failures` failures per `window` per address.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        RateLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `peer` is currently refused.
    pub fn is_limited(&self, peer: IpAddr) -> bool {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(&peer) {
            Some((start, _)) if now.duration_since(*start) > self.window => {
                failures.remove(&peer);
                false
            }
            Some((_, count)) => *count >= self.max_failures,
            None => false,
        }
    }

    /// Records a failed attempt from `peer`.
    pub fn record_failure(&self, peer: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 100_000 {
            failures.retain(|_, (start, _)| now.duration_since(*start) <= self.window);
        }
        let entry = failures.entry(peer).or_insert((now, 0));
        if now.duration_since(entry.0) > self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trip_expiry_and_tamper() {
        let claims = Claims {
            sub: "c1".into(),
            exp: 2_000,
            publish: Some(vec!["a/#".into()]),
            sub_filters: None,
        };
        let token = sign_token(&claims, b"secret").unwrap();
        assert_eq!(verify_token(&token, b"secret", 1_000).unwrap(), claims);
        let expired = verify_token(&token, b"secret", 3_000).unwrap_err();
        assert_eq!(expired.code(), ErrorCode::TokenExpired);
        let wrong = verify_token(&token, b"other", 1_000).unwrap_err();
        assert_eq!(wrong.code(), ErrorCode::AuthFailed);
    }

    #[test]
    fn password_hash_verifies() {
        let hash = hash_password("pw").unwrap();
        assert!(verify_password("pw", &hash));
        assert!(!verify_password("px", &hash));
        assert!(!verify_password("pw", "not a hash"));
    }

    #[test]
    fn filter_coverage() {
        assert!(covers("a/#", "a/b/+"));
        assert!(covers("a/+/c", "a/x/c"));
        assert!(!covers("a/+/c", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(covers("#", "x/y"));
        assert!(!covers("a/#", "b"));
    }
}
