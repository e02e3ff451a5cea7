//! Bearer tokens: compact JWTs signed with HMAC-SHA256 (`HS256`), carrying
//! the owner (`sub`) and an expiry (`exp`). The secret comes from
//! configuration; nothing here holds one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Shortest secret accepted: 256 bits, the size of the HMAC.
pub const MIN_SECRET_BYTES: usize = 32;
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed bearer token")]
    Malformed,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("owner names are 1 to 64 of a-z, 0-9, '-' and '_'")]
    BadOwner,
    #[error("the token secret must be at least {MIN_SECRET_BYTES} bytes")]
    WeakSecret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The owner every request with this token acts for.
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
}

/// Whether `owner` can be used as a key segment in S3 and DynamoDB.
pub fn valid_owner(owner: &str) -> bool {
    (1..=64).contains(&owner.len()) && owner.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[derive(Clone)]
pub struct TokenKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(…)")
    }
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(AuthError::WeakSecret);
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::WeakSecret)?;
        Ok(Self { mac })
    }

    pub fn issue(&self, owner: &str, ttl: Duration, now: DateTime<Utc>) -> Result<String, AuthError> {
        if !valid_owner(owner) {
            return Err(AuthError::BadOwner);
        }
        let claims = Claims { sub: owner.to_owned(), iat: now.timestamp(), exp: (now + ttl).timestamp() };
        let payload = serde_json::to_vec(&claims).map_err(|_| AuthError::Malformed)?;
        let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(payload));
        let mut mac = self.mac.clone();
        mac.update(signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", B64.encode(mac.finalize().into_bytes())))
    }

    /// Checks signature (in constant time), header and expiry.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Malformed);
        };
        let signature = B64.decode(signature).map_err(|_| AuthError::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).map_err(|_| AuthError::BadSignature)?;
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(header).map_err(|_| AuthError::Malformed)?).map_err(|_| AuthError::Malformed)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(AuthError::Malformed);
        }
        let claims: Claims =
            serde_json::from_slice(&B64.decode(payload).map_err(|_| AuthError::Malformed)?).map_err(|_| AuthError::Malformed)?;
        if claims.exp <= now.timestamp() {
            return Err(AuthError::Expired);
        }
        if !valid_owner(&claims.sub) {
            return Err(AuthError::BadOwner);
        }
        Ok(claims)
    }

    /// Reads `Authorization: Bearer …`.
    pub fn verify_header(&self, authorization: Option<&str>, now: DateTime<Utc>) -> Result<Claims, AuthError> {
        let value = authorization.ok_or(AuthError::Missing)?;
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).ok_or(AuthError::Malformed)?;
        self.verify(token.trim(), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::new(&[7u8; 32]).expect("key")
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let now = Utc::now();
        let t = key().issue("alice", Duration::hours(1), now).expect("issue");
        assert_eq!(key().verify(&t, now).expect("valid").sub, "alice");
        assert_eq!(key().verify(&t, now + Duration::hours(2)), Err(AuthError::Expired));
        assert_eq!(key().verify_header(Some(&format!("Bearer {t}")), now).map(|c| c.sub), Ok("alice".into()));
    }

    #[test]
    fn forged_or_mangled_tokens_are_refused() {
        let now = Utc::now();
        let t = key().issue("alice", Duration::hours(1), now).expect("issue");
        let other = TokenKey::new(&[8u8; 32]).expect("key");
        assert_eq!(other.verify(&t, now), Err(AuthError::BadSignature));
        // Swap in another owner's payload, keep the signature.
        let bob = key().issue("bob", Duration::hours(1), now).expect("issue");
        let parts: Vec<&str> = t.split('.').collect();
        let bob_parts: Vec<&str> = bob.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], bob_parts[1], parts[2]);
        assert_eq!(key().verify(&forged, now), Err(AuthError::BadSignature));
        assert_eq!(key().verify("a.b", now), Err(AuthError::Malformed));
        assert_eq!(key().verify_header(None, now), Err(AuthError::Missing));
        assert_eq!(TokenKey::new(b"short").err(), Some(AuthError::WeakSecret));
        assert_eq!(key().issue("../x", Duration::hours(1), now), Err(AuthError::BadOwner));
    }
}
