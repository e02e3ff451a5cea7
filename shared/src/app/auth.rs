//! Bearer tokens: compact JWTs signed with HMAC-SHA256 (`HS256`, by
//! `jsonwebtoken`), carrying the owner (`sub`), an expiry (`exp`) and, for an
//! operator, the scope [`OPERATOR_SCOPE`]. The secret comes from
//! configuration; nothing here holds one.

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Shortest secret accepted: 256 bits, the size of the HMAC.
pub const MIN_SECRET_BYTES: usize = 32;

/// The `scope` (RFC 8693's space-separated list) that lets a token use the
/// operator routes: pausing lanes, reading and redriving dead letters.
pub const OPERATOR_SCOPE: &str = "prism:operate";

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Claims {
    /// Whether the token was issued to an operator.
    pub fn is_operator(&self) -> bool {
        self.scope.as_deref().is_some_and(|s| s.split(' ').any(|granted| granted == OPERATOR_SCOPE))
    }
}

/// Whether `owner` can be used as a key segment in S3 and DynamoDB.
pub fn valid_owner(owner: &str) -> bool {
    (1..=64).contains(&owner.len()) && owner.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[derive(Clone)]
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
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
        // HS256 only, so `alg: none` and every other algorithm are refused.
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked against the caller's clock in `verify` (tests pass their own).
        validation.validate_exp = false;
        validation.required_spec_claims = ["exp", "sub"].into_iter().map(str::to_owned).collect();
        Ok(Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation })
    }

    /// An owner's token.
    pub fn issue(&self, owner: &str, ttl: Duration, now: DateTime<Utc>) -> Result<String, AuthError> {
        self.issue_scoped(owner, None, ttl, now)
    }

    /// An operator's token: `subject` names the operator in logs.
    pub fn issue_operator(&self, subject: &str, ttl: Duration, now: DateTime<Utc>) -> Result<String, AuthError> {
        self.issue_scoped(subject, Some(OPERATOR_SCOPE), ttl, now)
    }

    fn issue_scoped(&self, owner: &str, scope: Option<&str>, ttl: Duration, now: DateTime<Utc>) -> Result<String, AuthError> {
        if !valid_owner(owner) {
            return Err(AuthError::BadOwner);
        }
        let claims = Claims { sub: owner.to_owned(), iat: now.timestamp(), exp: (now + ttl).timestamp(), scope: scope.map(str::to_owned) };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|_| AuthError::Malformed)
    }

    /// Checks signature (in constant time), algorithm and expiry.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, AuthError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed,
            })?
            .claims;
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
    fn only_tokens_issued_to_operators_carry_the_operator_scope() {
        let now = Utc::now();
        let owner = key().issue("alice", Duration::hours(1), now).expect("issue");
        let operator = key().issue_operator("oncall", Duration::hours(1), now).expect("issue");
        assert!(!key().verify(&owner, now).expect("valid").is_operator());
        let claims = key().verify(&operator, now).expect("valid");
        assert!(claims.is_operator());
        assert_eq!(claims.sub, "oncall");
        let near_miss = Claims { scope: Some("prism:operated read".into()), ..claims };
        assert!(!near_miss.is_operator(), "scopes match whole words only");
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
        // The same claims unsigned (`alg: none`) are not a token.
        let unsigned = format!("{}.{}.", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", parts[1]);
        assert_eq!(key().verify(&unsigned, now), Err(AuthError::Malformed));
        assert_eq!(key().issue("../x", Duration::hours(1), now), Err(AuthError::BadOwner));
    }
}
