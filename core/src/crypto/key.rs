//! Master keys, their key ids and the derived key schedule.
//!
//! A master key is 32 random bytes. HKDF-SHA-256 (no salt, the master key as input key material)
//! derives from it the AES-256 key, the HMAC-SHA-256 key and the 8-byte key id; a [`Key`] keeps
//! the expanded AES cipher and a pre-keyed HMAC so that sealing and opening never repeat that
//! work. See `docs/SECURITY.md`.

use std::fmt;
use std::sync::Arc;

use aes::Aes256;
use aes::cipher::KeyInit;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use hmac::Hmac;
use sha2::Sha256;

use crate::crypto::CryptoError;

/// The length of a master key in bytes.
pub const KEY_LEN: usize = 32;

/// The length of a key id in bytes.
pub const KEY_ID_LEN: usize = 8;

/// HKDF `info` for the AES-256-CBC key.
pub(crate) const INFO_AES: &[u8] = b"sealbus v1 aes-256-cbc";
/// HKDF `info` for the HMAC-SHA-256 key.
pub(crate) const INFO_MAC: &[u8] = b"sealbus v1 hmac-sha-256";
/// HKDF `info` for the key id.
pub(crate) const INFO_KEY_ID: &[u8] = b"sealbus v1 key id";

/// The identifier of a key: 8 bytes derived from the key itself, so it is a fingerprint.
///
/// It travels in clear in every envelope so that a keyring can pick the key to open it with.
/// Displayed as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// A key id from its 8 bytes.
    pub const fn from_bytes(bytes: [u8; KEY_ID_LEN]) -> KeyId {
        KeyId(bytes)
    }

    /// The 8 bytes of the key id.
    pub const fn to_bytes(self) -> [u8; KEY_ID_LEN] {
        self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A master key together with its derived key schedule.
///
/// Cloning is cheap (the key schedule is shared). `Debug` shows the key id only, never key
/// material.
#[derive(Clone)]
pub struct Key {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    master: [u8; KEY_LEN],
    id: KeyId,
    aes: Aes256,
    mac: Hmac<Sha256>,
}

impl Key {
    /// A new random key from the operating system's random number generator.
    pub fn generate() -> Result<Key, CryptoError> {
        let mut master = [0u8; KEY_LEN];
        getrandom::getrandom(&mut master).map_err(|e| CryptoError::Random(e.to_string()))?;
        Key::from_bytes(&master)
    }

    /// A key from its 32 raw bytes; any other length is [`CryptoError::InvalidKey`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Key, CryptoError> {
        let master: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            CryptoError::InvalidKey(format!("a key is {KEY_LEN} bytes, got {}", bytes.len()))
        })?;
        let hkdf = Hkdf::<Sha256>::new(None, &master);
        let mut aes_key = [0u8; 32];
        let mut mac_key = [0u8; 32];
        let mut id = [0u8; KEY_ID_LEN];
        for (info, okm) in [
            (INFO_AES, &mut aes_key[..]),
            (INFO_MAC, &mut mac_key[..]),
            (INFO_KEY_ID, &mut id[..]),
        ] {
            hkdf.expand(info, okm)
                .map_err(|_| CryptoError::InvalidKey("key derivation failed".into()))?;
        }
        let aes = Aes256::new(&aes_key.into());
        // HMAC pads keys shorter than its 64-byte block with zeros (RFC 2104), so the
        // fixed-size constructor with the zero-padded key equals keying with the 32 bytes.
        let mut padded = [0u8; 64];
        padded[..32].copy_from_slice(&mac_key);
        let mac = <Hmac<Sha256> as KeyInit>::new(&padded.into());
        aes_key.fill(0);
        mac_key.fill(0);
        padded.fill(0);
        Ok(Key {
            inner: Arc::new(KeyInner {
                master,
                id: KeyId(id),
                aes,
                mac,
            }),
        })
    }

    /// A key from its text form: standard base64 with padding (44 characters).
    ///
    /// Surrounding whitespace is ignored. Text that is not base64 is [`CryptoError::BadBase64`];
    /// base64 that does not decode to 32 bytes is [`CryptoError::InvalidKey`].
    pub fn from_base64(text: &str) -> Result<Key, CryptoError> {
        let bytes = STANDARD.decode(text.trim())?;
        Key::from_bytes(&bytes)
    }

    /// The text form of the key: standard base64 with padding (44 characters).
    ///
    /// This is the secret itself: share it only over a confidential channel.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.inner.master)
    }

    /// The key's id, a fingerprint derived from the key.
    pub fn id(&self) -> KeyId {
        self.inner.id
    }

    /// The expanded AES-256 cipher.
    pub(super) fn aes(&self) -> &Aes256 {
        &self.inner.aes
    }

    /// The HMAC-SHA-256 state keyed with the MAC key, to be cloned per message.
    pub(super) fn mac(&self) -> &Hmac<Sha256> {
        &self.inner.mac
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;
    use hmac::Mac as _;

    const TEXT: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn text_form_round_trips_and_ignores_surrounding_whitespace() {
        let key = Key::from_base64(&format!("  {TEXT}\n")).unwrap();
        assert_eq!(key.to_base64(), TEXT);
        assert_eq!(key.to_base64().len(), 44);
        let bytes: Vec<u8> = (0u8..32).collect();
        assert_eq!(Key::from_bytes(&bytes).unwrap().id(), key.id());
    }

    #[test]
    fn wrong_lengths_are_invalid_key_and_bad_text_is_bad_base64() {
        for len in [0usize, 16, 31, 33, 64] {
            let err = Key::from_bytes(&vec![7u8; len]).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidKey, "len {len}");
        }
        let short = STANDARD.encode([1u8; 31]);
        assert_eq!(
            Key::from_base64(&short).unwrap_err().code(),
            ErrorCode::InvalidKey
        );
        for bad in [
            "not base64!",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
            "A A=",
        ] {
            assert_eq!(
                Key::from_base64(bad).unwrap_err().code(),
                ErrorCode::BadBase64,
                "{bad}"
            );
        }
    }

    #[test]
    fn key_id_is_the_hkdf_fingerprint_and_displays_as_hex() {
        let master: Vec<u8> = (0u8..32).collect();
        let key = Key::from_bytes(&master).unwrap();
        let mut expected = [0u8; 8];
        Hkdf::<Sha256>::new(None, &master)
            .expand(b"sealbus v1 key id", &mut expected)
            .unwrap();
        assert_eq!(key.id().to_bytes(), expected);
        let shown = key.id().to_string();
        assert_eq!(shown.len(), 16);
        assert!(
            shown
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(
            KeyId::from_bytes([0, 1, 0xab, 0xcd, 0xef, 0x10, 0x99, 0xff]).to_string(),
            "0001abcdef1099ff"
        );
    }

    #[test]
    fn cached_mac_equals_hmac_keyed_with_the_derived_mac_key() {
        let master = [9u8; 32];
        let key = Key::from_bytes(&master).unwrap();
        let mut mac_key = [0u8; 32];
        Hkdf::<Sha256>::new(None, &master)
            .expand(INFO_MAC, &mut mac_key)
            .unwrap();
        let mut reference = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&mac_key).unwrap();
        reference.update(b"hello");
        let mut cached = key.mac().clone();
        cached.update(b"hello");
        assert_eq!(
            cached.finalize().into_bytes(),
            reference.finalize().into_bytes()
        );
    }

    #[test]
    fn generated_keys_differ_and_debug_hides_the_key() {
        let a = Key::generate().unwrap();
        let b = Key::generate().unwrap();
        assert_ne!(a.to_base64(), b.to_base64());
        assert_ne!(a.id(), b.id());
        let shown = format!("{a:?}");
        assert!(shown.contains(&a.id().to_string()), "{shown}");
        assert!(!shown.contains(&a.to_base64()), "{shown}");
        assert!(!shown.contains("master"), "{shown}");
    }
}
