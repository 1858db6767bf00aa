//! A keyring: several keys, one of them primary, for sealing and for key rotation.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::crypto::envelope::Parsed;
use crate::crypto::{CryptoError, Key, KeyId};

/// A set of keys: the primary one seals, any of them opens (chosen by the envelope's key id).
///
/// Rotation: add the new key on every client (it becomes primary where it is added), keep the
/// old one until no envelope sealed with it is still in flight, then remove it.
///
/// Cloning is cheap and clones share their keys: a key added, removed or made primary through
/// one clone is seen by all. A `Keyring` is `Send + Sync`.
#[derive(Clone, Default)]
pub struct Keyring {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// In the order they were added, the newest last.
    keys: Vec<Key>,
    primary: Option<KeyId>,
}

impl Inner {
    fn get(&self, id: KeyId) -> Option<&Key> {
        self.keys.iter().find(|key| key.id() == id)
    }
}

impl Keyring {
    /// An empty keyring; it cannot seal until a key is added.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// A keyring holding `key` as its primary key.
    pub fn with_key(key: Key) -> Keyring {
        let ring = Keyring::new();
        ring.add(key);
        ring
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // The lock is never held across code that can panic, but a poisoned lock would still
        // hold a consistent value, so recover it rather than propagate the panic.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `key` and makes it the primary key. Adding a key that is already held (same id)
    /// replaces it and makes it primary.
    pub fn add(&self, key: Key) {
        let mut inner = self.write();
        let id = key.id();
        inner.keys.retain(|held| held.id() != id);
        inner.keys.push(key);
        inner.primary = Some(id);
    }

    /// Removes the key with this id; returns whether it was held.
    ///
    /// If it was the primary key, the most recently added remaining key becomes primary.
    pub fn remove(&self, id: KeyId) -> bool {
        let mut inner = self.write();
        let before = inner.keys.len();
        inner.keys.retain(|held| held.id() != id);
        let removed = inner.keys.len() != before;
        if inner.primary == Some(id) {
            inner.primary = inner.keys.last().map(Key::id);
        }
        removed
    }

    /// Makes the key with this id the primary key; [`CryptoError::UnknownKeyId`] if not held.
    pub fn set_primary(&self, id: KeyId) -> Result<(), CryptoError> {
        let mut inner = self.write();
        if inner.get(id).is_none() {
            return Err(CryptoError::UnknownKeyId(id));
        }
        inner.primary = Some(id);
        Ok(())
    }

    /// The id of the primary key, if the keyring holds any key.
    pub fn primary(&self) -> Option<KeyId> {
        self.read().primary
    }

    /// The ids of all keys, in the order they were added.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.read().keys.iter().map(Key::id).collect()
    }

    /// The key with this id, if held.
    pub fn get(&self, id: KeyId) -> Option<Key> {
        self.read().get(id).cloned()
    }

    /// The number of keys held.
    pub fn len(&self) -> usize {
        self.read().keys.len()
    }

    /// Whether the keyring holds no key.
    pub fn is_empty(&self) -> bool {
        self.read().keys.is_empty()
    }

    /// Runs `f` with the primary key, under the read lock (readers never wait on each other;
    /// this saves cloning the key's `Arc` per message).
    fn with_primary<T>(
        &self,
        f: impl FnOnce(&Key) -> Result<T, CryptoError>,
    ) -> Result<T, CryptoError> {
        let inner = self.read();
        let key = inner.primary.and_then(|id| inner.get(id));
        f(key.ok_or(CryptoError::EmptyKeyring)?)
    }

    /// Seals `plaintext` for `topic` with the primary key (see [`Key::seal`]).
    ///
    /// [`CryptoError::EmptyKeyring`] if the keyring holds no key.
    pub fn seal(&self, topic: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.with_primary(|key| key.seal(topic, plaintext))
    }

    /// Seals with a caller-chosen IV. **For known-answer tests only** (see [`Key::seal_with_iv`]).
    #[doc(hidden)]
    pub fn seal_with_iv(
        &self,
        topic: &str,
        plaintext: &[u8],
        iv: [u8; 16],
    ) -> Result<Vec<u8>, CryptoError> {
        self.with_primary(|key| key.seal_with_iv(topic, plaintext, iv))
    }

    /// Opens an envelope for `topic` with the key its key id names (see [`Key::open`]).
    pub fn open(&self, topic: &str, envelope: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let parsed = Parsed::parse(envelope)?;
        let inner = self.read();
        let key = inner
            .get(parsed.key_id)
            .ok_or(CryptoError::UnknownKeyId(parsed.key_id))?;
        key.open_parsed(topic, &parsed)
    }

    /// [`Keyring::seal`], then standard base64 with padding: the text form of an envelope.
    pub fn seal_to_base64(&self, topic: &str, plaintext: &[u8]) -> Result<String, CryptoError> {
        Ok(STANDARD.encode(self.seal(topic, plaintext)?))
    }

    /// Decodes the text form of an envelope ([`CryptoError::BadBase64`]), then [`Keyring::open`].
    pub fn open_base64(&self, topic: &str, text: &str) -> Result<Vec<u8>, CryptoError> {
        self.open(topic, &STANDARD.decode(text)?)
    }
}

impl From<Key> for Keyring {
    fn from(key: Key) -> Keyring {
        Keyring::with_key(key)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.read();
        f.debug_struct("Keyring")
            .field("keys", &inner.keys.iter().map(Key::id).collect::<Vec<_>>())
            .field("primary", &inner.primary)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    fn key(seed: u8) -> Key {
        Key::from_bytes(&[seed; 32]).unwrap()
    }

    #[test]
    fn empty_keyring_cannot_seal() {
        let ring = Keyring::new();
        assert!(ring.is_empty());
        assert_eq!(ring.primary(), None);
        let err = ring.seal("t", b"x").unwrap_err();
        assert_eq!(err, CryptoError::EmptyKeyring);
        assert_eq!(err.code(), ErrorCode::NoKeyring);
    }

    #[test]
    fn newest_key_seals_and_every_held_key_opens() {
        let ring = Keyring::with_key(key(1));
        let old = ring.seal("t", b"old").unwrap();
        ring.add(key(2));
        assert_eq!(ring.primary(), Some(key(2).id()));
        assert_eq!(ring.key_ids(), vec![key(1).id(), key(2).id()]);
        let new = ring.seal("t", b"new").unwrap();
        assert_eq!(new[1..9], key(2).id().to_bytes());
        assert_eq!(ring.open("t", &old).unwrap(), b"old");
        assert_eq!(ring.open("t", &new).unwrap(), b"new");

        ring.set_primary(key(1).id()).unwrap();
        assert_eq!(ring.seal("t", b"x").unwrap()[1..9], key(1).id().to_bytes());
        assert_eq!(
            ring.set_primary(key(9).id()),
            Err(CryptoError::UnknownKeyId(key(9).id()))
        );
    }

    #[test]
    fn removing_keys_moves_the_primary_and_forgets_envelopes() {
        let ring = Keyring::new();
        ring.add(key(1));
        ring.add(key(2));
        ring.add(key(3));
        let sealed_by_3 = ring.seal("t", b"x").unwrap();
        assert!(ring.remove(key(3).id()));
        assert!(!ring.remove(key(3).id()));
        assert_eq!(ring.primary(), Some(key(2).id()));
        assert_eq!(
            ring.open("t", &sealed_by_3),
            Err(CryptoError::UnknownKeyId(key(3).id()))
        );
        assert!(ring.remove(key(1).id()));
        assert_eq!(ring.primary(), Some(key(2).id()));
        assert!(ring.remove(key(2).id()));
        assert_eq!(ring.primary(), None);
        assert_eq!(ring.len(), 0);
    }

    #[test]
    fn re_adding_a_key_replaces_it_and_makes_it_primary() {
        let ring = Keyring::new();
        ring.add(key(1));
        ring.add(key(2));
        ring.add(key(1));
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.key_ids(), vec![key(2).id(), key(1).id()]);
        assert_eq!(ring.primary(), Some(key(1).id()));
    }

    #[test]
    fn clones_share_keys_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Keyring>();
        assert_send_sync::<Key>();
        let ring = Keyring::with_key(key(1));
        let clone = ring.clone();
        std::thread::spawn(move || clone.add(key(2)))
            .join()
            .unwrap();
        assert_eq!(ring.primary(), Some(key(2).id()));
        let text = ring.seal_to_base64("t", b"hello").unwrap();
        assert_eq!(ring.open_base64("t", &text).unwrap(), b"hello");
        assert_eq!(ring.get(key(2).id()).map(|k| k.id()), Some(key(2).id()));
    }

    #[test]
    fn debug_shows_ids_only() {
        let ring = Keyring::with_key(key(1));
        let shown = format!("{ring:?}");
        assert!(shown.contains(&key(1).id().to_string()), "{shown}");
        assert!(!shown.contains(&key(1).to_base64()), "{shown}");
    }
}
