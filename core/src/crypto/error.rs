//! The errors of the envelope layer and their stable wire codes.

use crate::crypto::KeyId;
use crate::protocol::ErrorCode;

/// Why a key could not be made or an envelope could not be sealed or opened.
///
/// Every variant maps to a stable [`ErrorCode`] through [`CryptoError::code`]. The messages never
/// contain key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The authentication tag did not verify: wrong key, wrong topic or tampered data.
    ///
    /// Also returned, for the same reason, if the padding is invalid after a valid tag (which
    /// cannot happen without the key).
    #[error("the envelope did not authenticate (wrong key, wrong topic or tampered data)")]
    DecryptFailed,
    /// The envelope names a key id that the key or keyring does not hold.
    #[error("the envelope was sealed with key {0}, which this keyring does not hold")]
    UnknownKeyId(KeyId),
    /// The bytes are not an envelope: too short, not a whole number of blocks, or not version 1.
    #[error("malformed envelope: {0}")]
    MalformedEnvelope(&'static str),
    /// The key is not 32 bytes (or could not be expanded).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Text that should be standard base64 (with padding) is not.
    #[error("bad base64: {0}")]
    BadBase64(String),
    /// The keyring holds no key, so there is nothing to seal with.
    #[error("the keyring holds no key to seal with")]
    EmptyKeyring,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

impl CryptoError {
    /// The stable error code for this error.
    ///
    /// [`CryptoError::EmptyKeyring`] maps to `no_keyring` (there is no key to seal with) and
    /// [`CryptoError::Random`] to `internal` (a failure that is not the caller's fault).
    pub fn code(&self) -> ErrorCode {
        match self {
            CryptoError::DecryptFailed => ErrorCode::DecryptFailed,
            CryptoError::UnknownKeyId(_) => ErrorCode::UnknownKeyId,
            CryptoError::MalformedEnvelope(_) => ErrorCode::MalformedEnvelope,
            CryptoError::InvalidKey(_) => ErrorCode::InvalidKey,
            CryptoError::BadBase64(_) => ErrorCode::BadBase64,
            CryptoError::EmptyKeyring => ErrorCode::NoKeyring,
            CryptoError::Random(_) => ErrorCode::Internal,
        }
    }
}

impl From<base64::DecodeError> for CryptoError {
    fn from(err: base64::DecodeError) -> Self {
        CryptoError::BadBase64(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_code() {
        let id = KeyId::from_bytes([0xab; 8]);
        let cases = [
            (CryptoError::DecryptFailed, "decrypt_failed", 5001),
            (CryptoError::UnknownKeyId(id), "unknown_key_id", 5002),
            (
                CryptoError::MalformedEnvelope("x"),
                "malformed_envelope",
                5003,
            ),
            (CryptoError::InvalidKey("x".into()), "invalid_key", 5004),
            (CryptoError::BadBase64("x".into()), "bad_base64", 5005),
            (CryptoError::EmptyKeyring, "no_keyring", 5006),
            (CryptoError::Random("x".into()), "internal", 6001),
        ];
        for (err, name, number) in cases {
            assert_eq!(err.code().name(), name, "{err}");
            assert_eq!(err.code().number(), number, "{err}");
        }
    }

    #[test]
    fn unknown_key_id_message_shows_the_id_in_hex() {
        let err =
            CryptoError::UnknownKeyId(KeyId::from_bytes([0, 1, 2, 3, 0xfc, 0xfd, 0xfe, 0xff]));
        assert!(err.to_string().contains("00010203fcfdfeff"), "{err}");
    }

    #[test]
    fn bad_base64_converts_from_decode_errors() {
        use base64::Engine as _;
        let err = base64::engine::general_purpose::STANDARD
            .decode("!!!")
            .map_err(CryptoError::from)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadBase64);
    }
}
