//! Credentials at rest: AES-256-GCM with a key from configuration.
//!
//! A stored blob is `v1:` + base64(nonce (12 bytes) || ciphertext || tag).
//! The connection id is the associated data, so a blob copied onto another
//! connection's row does not decrypt. The key never touches the database.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::error::SqlError;

const PREFIX: &str = "v1:";

/// The 256-bit key that encrypts connection credentials in the
/// [`StateStore`](crate::StateStore). Keep it in configuration or a secret
/// manager, never in the database it protects. `Debug` does not print it.
pub struct CredentialKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialKey([REDACTED])")
    }
}

impl Clone for CredentialKey {
    fn clone(&self) -> Self {
        CredentialKey(SecretBox::new(Box::new(*self.0.expose_secret())))
    }
}

impl CredentialKey {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        CredentialKey(SecretBox::new(Box::new(bytes)))
    }

    /// A key from its standard base64 form (44 characters).
    ///
    /// # Errors
    /// [`SqlError::ConfigInvalid`] unless the text is base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, SqlError> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            SqlError::ConfigInvalid("the credential key is not valid base64".into())
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            SqlError::ConfigInvalid(
                "the credential key must be 32 bytes (base64 of 32 bytes)".into(),
            )
        })?;
        Ok(CredentialKey::from_bytes(arr))
    }

    /// A key read from the environment variable `var` (base64).
    ///
    /// # Errors
    /// [`SqlError::ConfigInvalid`] if the variable is unset or not a key.
    pub fn from_env(var: &str) -> Result<Self, SqlError> {
        let text = std::env::var(var).map_err(|_| {
            SqlError::ConfigInvalid(format!(
                "the environment variable {var} (credential key) is not set"
            ))
        })?;
        CredentialKey::from_base64(&text)
    }

    /// A fresh random key, printed once as base64 for the operator to keep.
    pub fn generate() -> (Self, SecretString) {
        let key = Aes256Gcm::generate_key(OsRng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&key);
        let text = SecretString::from(STANDARD.encode(bytes));
        (CredentialKey::from_bytes(bytes), text)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.0.expose_secret()))
    }

    /// Encrypts `plaintext`, bound to `context` (the connection id).
    pub(crate) fn seal(&self, plaintext: &str, context: &str) -> Result<String, SqlError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ct = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SqlError::Crypto("encryption failed".into()))?;
        let mut blob = Vec::with_capacity(nonce.len() + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(format!("{PREFIX}{}", STANDARD.encode(blob)))
    }

    /// Decrypts a blob made by [`CredentialKey::seal`] with the same context.
    pub(crate) fn open(&self, blob: &str, context: &str) -> Result<SecretString, SqlError> {
        self.open_labelled(blob, context, "stored credentials")
    }

    /// As [`CredentialKey::open`], naming what was sealed (`what`, e.g.
    /// "a sealed personal value") in error messages.
    pub(crate) fn open_labelled(
        &self,
        blob: &str,
        context: &str,
        what: &str,
    ) -> Result<SecretString, SqlError> {
        let body = blob
            .strip_prefix(PREFIX)
            .ok_or_else(|| SqlError::Crypto(format!("{what}: unknown format")))?;
        let raw = STANDARD
            .decode(body)
            .map_err(|_| SqlError::Crypto(format!("{what}: corrupt")))?;
        if raw.len() < 12 + 16 {
            return Err(SqlError::Crypto(format!("{what}: truncated")));
        }
        let (nonce, ct) = raw.split_at(12);
        let pt = self
            .cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                SqlError::Crypto(format!(
                    "{what} cannot be decrypted: wrong credential key, or the data was altered"
                ))
            })?;
        String::from_utf8(pt)
            .map(SecretString::from)
            .map_err(|_| SqlError::Crypto(format!("{what}: not text")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let (key, text) = CredentialKey::generate();
        let blob = key.seal("refresh-token-123", "conn-1").unwrap();
        assert!(!blob.contains("refresh-token-123"));
        let back = key.open(&blob, "conn-1").unwrap();
        assert_eq!(back.expose_secret(), "refresh-token-123");
        // Same key from its text form.
        let again = CredentialKey::from_base64(text.expose_secret()).unwrap();
        assert_eq!(
            again.open(&blob, "conn-1").unwrap().expose_secret(),
            "refresh-token-123"
        );
        // Another row's id, another key, or tampering: clear errors.
        assert!(key.open(&blob, "conn-2").is_err());
        let (other, _) = CredentialKey::generate();
        let err = other.open(&blob, "conn-1").unwrap_err().to_string();
        assert!(err.contains("wrong credential key"), "{err}");
        assert!(format!("{key:?}").contains("REDACTED"));
    }

    #[test]
    fn bad_keys() {
        assert!(CredentialKey::from_base64("short").is_err());
        assert!(CredentialKey::from_base64(&STANDARD.encode([1u8; 16])).is_err());
        assert!(CredentialKey::from_base64(&STANDARD.encode([1u8; 32])).is_ok());
    }
}
