//! Sealing and opening values under the vault key.
//!
//! XChaCha20-Poly1305: its 192-bit nonce can be drawn at random for every value with no
//! risk of reuse, so no nonce counter has to be kept consistent across processes.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

/// Length of the vault key in bytes.
pub const KEY_LEN: usize = 32;

/// Length of a nonce in bytes.
pub const NONCE_LEN: usize = 24;

/// The 256-bit key that seals every value of a vault. Zeroized on drop, never printed.
pub struct VaultKey(Zeroizing<[u8; KEY_LEN]>);

impl VaultKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> VaultKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        VaultKey(bytes)
    }

    /// A key from exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<VaultKey> {
        let array: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(VaultKey(Zeroizing::new(array)))
    }

    /// The raw key, for storing it in a keychain or key file.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Seals `plaintext` with a fresh nonce, binding `aad`. Returns `(nonce, ciphertext)`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());

        // Encryption only fails for inputs beyond the cipher's length limit (256 GiB).
        let ciphertext = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .expect("value within the cipher's length limit");
        (nonce.to_vec(), ciphertext)
    }

    /// Opens a sealed value; `None` when the ciphertext, nonce or `aad` do not match.
    pub fn open(&self, nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if nonce.len() != NONCE_LEN {
            return None;
        }
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad })
            .ok()
            .map(Zeroizing::new)
    }
}

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultKey([redacted])")
    }
}

/// Derives a key-wrapping key from a passphrase with Argon2id.
pub fn derive_from_passphrase(passphrase: &[u8], salt: &[u8]) -> VaultKey {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    // 19 MiB, 2 passes: the OWASP minimum for Argon2id, so opening the vault stays quick.
    let params = argon2::Params::new(19 * 1024, 2, 1, Some(KEY_LEN))
        .expect("constant Argon2 parameters are valid");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    argon
        .hash_password_into(passphrase, salt, out.as_mut())
        .expect("salt length and output length are within Argon2 limits");
    VaultKey(out)
}

/// The associated data that binds a secret to its project and name, so that a
/// ciphertext copied into another row fails to open.
pub fn secret_aad(project_id: i64, name: &str) -> Vec<u8> {
    format!("agentsecrets/secret/v1\0{project_id}\0{name}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let key = VaultKey::generate();
        let (nonce, sealed) = key.seal(b"sk_live_canary", b"aad");

        assert_eq!(key.open(&nonce, &sealed, b"aad").unwrap().as_slice(), b"sk_live_canary");
        assert!(!sealed.windows(14).any(|w| w == b"sk_live_canary"));
    }

    #[test]
    fn tampering_and_moving_are_detected() {
        let key = VaultKey::generate();
        let (nonce, mut sealed) = key.seal(b"value", &secret_aad(1, "A"));

        assert!(key.open(&nonce, &sealed, &secret_aad(1, "B")).is_none(), "moved to B");
        assert!(key.open(&nonce, &sealed, &secret_aad(2, "A")).is_none(), "moved project");
        sealed[0] ^= 1;
        assert!(key.open(&nonce, &sealed, &secret_aad(1, "A")).is_none(), "flipped bit");
    }

    #[test]
    fn another_key_cannot_open() {
        let (nonce, sealed) = VaultKey::generate().seal(b"value", b"");
        assert!(VaultKey::generate().open(&nonce, &sealed, b"").is_none());
    }

    #[test]
    fn passphrase_derivation_is_deterministic_per_salt() {
        let a = derive_from_passphrase(b"pass", b"0123456789abcdef");
        let b = derive_from_passphrase(b"pass", b"0123456789abcdef");
        let c = derive_from_passphrase(b"pass", b"fedcba9876543210");

        assert_eq!(a.expose(), b.expose());
        assert_ne!(a.expose(), c.expose());
    }
}
