//! The end-to-end envelope: keys, keyrings, sealing and opening.
//!
//! Publishers seal a payload for a topic with the primary key of a [`Keyring`]; subscribers open
//! it with whichever of their keys the envelope's [`KeyId`] names. The server only ever sees
//! envelopes. Envelope format v1 is AES-256-CBC with PKCS#7 and a random IV, then HMAC-SHA-256
//! over version, key id, topic, IV and ciphertext (encrypt-then-MAC); both sub-keys and the key
//! id are derived from one 32-byte master key with HKDF-SHA-256.
//!
//! The byte layout, the threat model and the known-answer vectors (`core/tests/vectors/
//! envelope.json`) are described in `docs/SECURITY.md`.
//!
//! ```
//! use sealbus::crypto::{Key, Keyring};
//!
//! let ring = Keyring::with_key(Key::generate()?);
//! let envelope = ring.seal("sensors/temp", b"21.5")?;
//! assert_eq!(ring.open("sensors/temp", &envelope)?, b"21.5");
//! assert!(ring.open("sensors/other", &envelope).is_err());
//! # Ok::<(), sealbus::crypto::CryptoError>(())
//! ```

mod envelope;
mod error;
mod key;
mod keyring;

pub use envelope::{ENVELOPE_VERSION, IV_LEN, MIN_ENVELOPE_LEN, TAG_LEN, sealed_len};
pub use error::CryptoError;
pub use key::{KEY_ID_LEN, KEY_LEN, Key, KeyId};
pub use keyring::Keyring;

#[cfg(test)]
mod proptests;
