//! Property tests: random round trips, and single bit flips that must never open.

use proptest::prelude::*;

use crate::crypto::{CryptoError, Key, Keyring};

fn key_strategy() -> impl Strategy<Value = Key> {
    prop::array::uniform32(any::<u8>()).prop_map(|bytes| {
        Key::from_bytes(&bytes).unwrap_or_else(|e| panic!("32 bytes are a key: {e}"))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn seal_then_open_round_trips(
        key in key_strategy(),
        topic in "\\PC{0,40}",
        plaintext in prop::collection::vec(any::<u8>(), 0..2000),
    ) {
        let ring = Keyring::with_key(key.clone());
        let env = ring.seal(&topic, &plaintext).unwrap();
        prop_assert_eq!(env.len(), crate::crypto::sealed_len(plaintext.len()));
        prop_assert_eq!(ring.open(&topic, &env).unwrap(), plaintext.clone());
        prop_assert_eq!(key.open(&topic, &env).unwrap(), plaintext.clone());
        let text = ring.seal_to_base64(&topic, &plaintext).unwrap();
        prop_assert_eq!(ring.open_base64(&topic, &text).unwrap(), plaintext);
    }

    #[test]
    fn any_single_bit_flip_is_rejected(
        key in key_strategy(),
        topic in "\\PC{0,20}",
        plaintext in prop::collection::vec(any::<u8>(), 0..300),
        bit in any::<prop::sample::Index>(),
    ) {
        let ring = Keyring::with_key(key);
        let mut env = ring.seal(&topic, &plaintext).unwrap();
        let bit = bit.index(env.len() * 8);
        env[bit / 8] ^= 1 << (bit % 8);
        let err = ring.open(&topic, &env).unwrap_err();
        let expected = match bit / 8 {
            0 => "malformed_envelope",
            1..=8 => "unknown_key_id",
            _ => "decrypt_failed",
        };
        prop_assert_eq!(err.code().name(), expected, "bit {}", bit);
    }

    #[test]
    fn arbitrary_bytes_never_open_and_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        key in key_strategy(),
    ) {
        let ring = Keyring::with_key(key.clone());
        // Make some inputs reach the tag check: a valid version and this key's id.
        let mut forged = bytes.clone();
        if forged.len() > 9 {
            forged[0] = 1;
            forged[1..9].copy_from_slice(&key.id().to_bytes());
        }
        for input in [&bytes, &forged] {
            let result = ring.open("t", input);
            prop_assert!(matches!(
                result,
                Err(CryptoError::MalformedEnvelope(_)
                    | CryptoError::UnknownKeyId(_)
                    | CryptoError::DecryptFailed)
            ), "{:?}", result);
        }
    }
}
