//! Optional step-up for approvals: a command with `step_up = "totp"` needs each approver
//! to confirm with a TOTP code (RFC 6238: SHA-1, 6 digits, 30 s steps, one step of skew)
//! in a modal. Slack identity alone is a weak factor for a production failover.
//!
//! Secrets are 160 random bits, stored only encrypted (ChaCha20-Poly1305, a 256-bit key
//! from `KLAXON_TOTP_KEY`, the user id as associated data so a row cannot be moved to
//! another user), never logged. A code's time step is accepted once per user.
//!
//! Why a module of its own: the key is read by `config` (`KLAXON_TOTP_KEY`), codes are
//! checked by `http` (the step-up modal) and users are enrolled by `app` (`klaxon totp
//! enrol`). None of that is recovery-command logic, and under `commands` it made `config`
//! import `commands` while `commands` reads `config`. Here it sits below all three and
//! imports only `store` (the `totp_secrets` rows and their [`Sealed`] form).

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use totp_rs::{Algorithm, Secret, Totp};

/// The key that encrypts TOTP secrets at rest (32 bytes, given as 64 hex characters).
#[derive(Clone, PartialEq, Eq)]
pub struct TotpKey([u8; 32]);

impl fmt::Debug for TotpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpKey([redacted])")
    }
}

impl TotpKey {
    /// Parses 64 hex characters.
    pub fn from_hex(text: &str) -> Result<TotpKey, String> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| "must be 64 hex characters (e.g. `openssl rand -hex 32`)".to_string())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "must be 64 hex characters (32 bytes)".to_string())?;
        Ok(TotpKey(key))
    }
}

/// A sealed secret as stored (defined with the table, so the store needs nothing from here).
pub use crate::store::Sealed;

fn random_bytes<const N: usize>() -> [u8; N] {
    // uuid's v4 draws from the operating system's generator (getrandom).
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(16) {
        let random = uuid::Uuid::new_v4();
        chunk.copy_from_slice(&random.as_bytes()[..chunk.len()]);
    }
    out
}

/// A fresh 160-bit secret.
pub fn new_secret() -> Vec<u8> {
    random_bytes::<20>().to_vec()
}

/// Encrypts `secret` for `user`.
pub fn seal(key: &TotpKey, user: &str, secret: &[u8]) -> Sealed {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    let nonce = random_bytes::<12>();
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: user.as_bytes(),
            },
        )
        .expect("encryption of a short secret cannot fail");
    Sealed {
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    }
}

/// Decrypts `user`'s sealed secret; `Err` for a wrong key or a row not sealed for them.
pub fn open(key: &TotpKey, user: &str, sealed: &Sealed) -> Result<Vec<u8>, String> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key.0));
    let nonce = hex::decode(&sealed.nonce).map_err(|_| "corrupt nonce".to_string())?;
    let ciphertext = hex::decode(&sealed.ciphertext).map_err(|_| "corrupt secret".to_string())?;
    if nonce.len() != 12 {
        return Err("corrupt nonce".into());
    }
    cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: user.as_bytes(),
            },
        )
        .map_err(|_| "cannot decrypt (wrong KLAXON_TOTP_KEY, or not this user's)".to_string())
}

fn totp(secret: &[u8], user: &str) -> Result<Totp, String> {
    totp_rs::Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(Secret::from(secret.to_vec()))
        .with_issuer(Some("Klaxon"))
        .with_account_name(user)
        .build()
        .map_err(|e| e.to_string())
}

/// The `otpauth://` URI an authenticator app enrols from.
pub fn otpauth_uri(secret: &[u8], user: &str) -> Result<String, String> {
    totp(secret, user)?.to_url().map_err(|e| e.to_string())
}

/// The time step `code` is valid for at `unix_secs`, if it is.
pub fn check(secret: &[u8], user: &str, code: &str, unix_secs: u64) -> Option<u64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    totp(secret, user).ok()?.check(&code, unix_secs)
}

/// The code for `unix_secs` (tests and enrolment checks).
pub fn code_at(secret: &[u8], user: &str, unix_secs: u64) -> Result<String, String> {
    Ok(totp(secret, user)?.generate(unix_secs).to_string())
}

/// Enrols `user` (a Slack user id): a fresh secret, sealed and stored (replacing any
/// earlier one). Returns the `otpauth://` URI to give them, once; it is never logged.
pub async fn enrol(
    store: &crate::store::Store,
    key: &TotpKey,
    user: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, String> {
    let valid = user.len() >= 3
        && (user.starts_with('U') || user.starts_with('W'))
        && user
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if !valid {
        return Err(format!("`{user}` is not a Slack user id like U0123ABCD"));
    }
    let secret = new_secret();
    let uri = otpauth_uri(&secret, user)?;
    store
        .put_totp(user, &seal(key, user, &secret), now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_key_and_for_their_user() {
        let key = TotpKey::from_hex(&"11".repeat(32)).unwrap();
        let secret = new_secret();
        let sealed = seal(&key, "UALICE", &secret);
        assert!(!sealed.ciphertext.contains(&hex::encode(&secret)));
        assert_eq!(open(&key, "UALICE", &sealed).unwrap(), secret);
        assert!(open(&key, "UMALLORY", &sealed).is_err());
        let other = TotpKey::from_hex(&"22".repeat(32)).unwrap();
        assert!(open(&other, "UALICE", &sealed).is_err());
        assert!(TotpKey::from_hex("abc").is_err());
        assert_eq!(format!("{key:?}"), "TotpKey([redacted])");
    }

    #[test]
    fn rfc6238_codes_check_within_one_step() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890", T = 59 -> 94287082
        // (8 digits); the 6-digit code is its last six digits.
        let secret = b"12345678901234567890";
        assert_eq!(code_at(secret, "U1", 59).unwrap(), "287082");
        assert_eq!(check(secret, "U1", "287 082", 59), Some(1));
        assert_eq!(
            check(secret, "U1", "287082", 59 + 30),
            Some(1),
            "one step of skew"
        );
        assert_eq!(check(secret, "U1", "287082", 59 + 90), None);
        assert_eq!(check(secret, "U1", "000000", 59), None);
        let uri = otpauth_uri(secret, "U1").unwrap();
        assert!(uri.starts_with("otpauth://totp/Klaxon:U1?"), "{uri}");
    }
}
