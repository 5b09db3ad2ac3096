//! Password hashing for every service that keeps accounts: argon2id (the crate's defaults, which
//! follow OWASP's recommendation) stored as PHC strings (`$argon2id$v=19$m=...`), with the salt
//! inside. Hashing is deliberately slow, so the async functions run it on the blocking pool.
//!
//! [`failure_delay`] is the slow-down shared by every log-in path: each consecutive failure
//! doubles the pause before the answer, up to a cap.

use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// The longest pause [`failure_delay`] imposes.
pub const MAX_FAILURE_DELAY: Duration = Duration::from_secs(30);

/// Hashing failed: a bug or a resource problem, never the user's fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordError(String);

impl std::fmt::Display for PasswordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "password hashing failed: {}", self.0)
    }
}

impl std::error::Error for PasswordError {}

/// The PHC string of `password` with a fresh random salt.
pub async fn hash_password(password: String) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash_password_blocking(&password))
        .await
        .map_err(|err| PasswordError(err.to_string()))?
}

/// Whether `password` matches the PHC string `hash`. A `hash` that is not a PHC string is an
/// error, not a mismatch: it means the stored data is damaged.
pub async fn verify_password(password: String, hash: String) -> Result<bool, PasswordError> {
    tokio::task::spawn_blocking(move || verify_password_blocking(&password, &hash))
        .await
        .map_err(|err| PasswordError(err.to_string()))?
}

/// [`hash_password`] on the calling thread.
pub fn hash_password_blocking(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| PasswordError(err.to_string()))
}

/// [`verify_password`] on the calling thread.
pub fn verify_password_blocking(password: &str, hash: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(hash).map_err(|err| PasswordError(err.to_string()))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

/// Whether `text` is a PHC string we can verify against (and not, say, a plaintext password).
pub fn is_password_hash(text: &str) -> bool {
    PasswordHash::new(text).is_ok()
}

/// The pause before answering the `failures`-th consecutive failed attempt: `base`, doubled for
/// each earlier failure, at most [`MAX_FAILURE_DELAY`]. Zero failures, no pause.
pub fn failure_delay(base: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (failures - 1).min(16);
    base.saturating_mul(factor).min(MAX_FAILURE_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hash = hash_password("hunter42".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains("hunter42"));
        assert!(is_password_hash(&hash));
        assert!(
            verify_password("hunter42".into(), hash.clone())
                .await
                .unwrap()
        );
        assert!(!verify_password("hunter43".into(), hash).await.unwrap());
    }

    #[test]
    fn the_same_password_hashes_differently_each_time() {
        let a = hash_password_blocking("same").unwrap();
        let b = hash_password_blocking("same").unwrap();
        assert_ne!(a, b, "a fresh salt each time");
    }

    #[test]
    fn plaintext_is_not_a_hash_and_cannot_be_verified_against() {
        assert!(!is_password_hash("hunter42"));
        assert!(verify_password_blocking("hunter42", "hunter42").is_err());
    }

    #[test]
    fn failure_delay_doubles_up_to_the_cap() {
        let base = Duration::from_millis(500);
        assert_eq!(failure_delay(base, 0), Duration::ZERO);
        assert_eq!(failure_delay(base, 1), base);
        assert_eq!(failure_delay(base, 3), Duration::from_secs(2));
        assert_eq!(failure_delay(base, 40), MAX_FAILURE_DELAY);
    }
}
