//! Turning application [`Data`] into wire payloads and back, sealing and opening envelopes.
//!
//! A sealed plaintext starts with one content-kind byte: [`KIND_BYTES`] or [`KIND_JSON`]
//! (followed by compact UTF-8 JSON text), so the receiver knows which form to hand over.

use crate::Error;
use crate::crypto::{CryptoError, Keyring};
use crate::protocol::Payload;

use super::types::Data;

/// Content-kind byte of sealed raw bytes.
pub const KIND_BYTES: u8 = 0x00;
/// Content-kind byte of sealed JSON text.
pub const KIND_JSON: u8 = 0x01;

/// The wire payload for `data`: sealed for `topic` with the keyring's primary key when a
/// keyring is given, plain otherwise.
pub(crate) fn to_payload(
    data: Data,
    topic: &str,
    keyring: Option<&Keyring>,
) -> Result<Payload, Error> {
    let Some(keyring) = keyring else {
        return Ok(match data {
            Data::Json(value) => Payload::Json(value),
            Data::Bytes(bytes) => Payload::Bytes(bytes),
        });
    };
    let plaintext = match data {
        Data::Bytes(bytes) => {
            let mut plain = Vec::with_capacity(bytes.len() + 1);
            plain.push(KIND_BYTES);
            plain.extend_from_slice(&bytes);
            plain
        }
        Data::Json(value) => {
            let mut plain = vec![KIND_JSON];
            serde_json::to_writer(&mut plain, &value).map_err(|err| {
                Error::InvalidOption(format!("JSON data cannot be serialized: {err}"))
            })?;
            plain
        }
    };
    Ok(Payload::Sealed(keyring.seal(topic, &plaintext)?))
}

/// The application data of a wire payload, opened with `keyring` (for `topic`) if sealed.
///
/// Returns the data and whether it was sealed.
pub(crate) fn from_payload(
    payload: Payload,
    topic: &str,
    keyring: Option<&Keyring>,
) -> Result<(Data, bool), Error> {
    match payload {
        Payload::Json(value) => Ok((Data::Json(value), false)),
        Payload::Bytes(bytes) => Ok((Data::Bytes(bytes), false)),
        Payload::Sealed(envelope) => {
            let keyring = keyring.ok_or(Error::NoKeyring)?;
            let mut plain = keyring.open(topic, &envelope)?;
            let data = match plain.first() {
                Some(&KIND_BYTES) => {
                    plain.remove(0);
                    Data::Bytes(plain)
                }
                Some(&KIND_JSON) => {
                    Data::Json(serde_json::from_slice(&plain[1..]).map_err(|_| {
                        CryptoError::MalformedEnvelope("sealed JSON content is not valid JSON")
                    })?)
                }
                _ => {
                    return Err(CryptoError::MalformedEnvelope(
                        "unknown content kind in the sealed plaintext",
                    )
                    .into());
                }
            };
            Ok((data, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;
    use crate::protocol::ErrorCode;
    use serde_json::json;

    #[test]
    fn plain_data_passes_through() {
        let payload = to_payload(Data::Json(json!({"a": 1})), "t", None).unwrap();
        assert_eq!(payload, Payload::Json(json!({"a": 1})));
        let (data, sealed) = from_payload(Payload::Bytes(vec![1]), "t", None).unwrap();
        assert_eq!((data, sealed), (Data::Bytes(vec![1]), false));
    }

    #[test]
    fn sealed_data_round_trips_with_its_kind() {
        let ring = Keyring::with_key(Key::generate().unwrap());
        for data in [
            Data::Json(json!({"z": 1, "a": [true]})),
            Data::Bytes(vec![0, 1]),
        ] {
            let payload = to_payload(data.clone(), "t/x", Some(&ring)).unwrap();
            let Payload::Sealed(envelope) = &payload else {
                panic!("not sealed: {payload:?}");
            };
            let plain = ring.open("t/x", envelope).unwrap();
            let kind = if matches!(data, Data::Json(_)) {
                KIND_JSON
            } else {
                KIND_BYTES
            };
            assert_eq!(plain[0], kind);
            assert_eq!(
                from_payload(payload, "t/x", Some(&ring)).unwrap(),
                (data, true)
            );
        }
    }

    #[test]
    fn opening_failures_have_their_codes() {
        let ring = Keyring::with_key(Key::generate().unwrap());
        let other = Keyring::with_key(Key::generate().unwrap());
        let sealed = to_payload(Data::Bytes(vec![1]), "t", Some(&ring)).unwrap();
        let code = |result: Result<(Data, bool), Error>| result.unwrap_err().code();
        assert_eq!(
            code(from_payload(sealed.clone(), "t", None)),
            ErrorCode::NoKeyring
        );
        assert_eq!(
            code(from_payload(sealed.clone(), "t", Some(&other))),
            ErrorCode::UnknownKeyId
        );
        assert_eq!(
            code(from_payload(sealed, "other", Some(&ring))),
            ErrorCode::DecryptFailed
        );
        assert_eq!(
            code(from_payload(Payload::Sealed(vec![1, 2]), "t", Some(&ring))),
            ErrorCode::MalformedEnvelope
        );
        let bad_kind = Payload::Sealed(ring.seal("t", &[7, 1]).unwrap());
        assert_eq!(
            code(from_payload(bad_kind, "t", Some(&ring))),
            ErrorCode::MalformedEnvelope
        );
    }
}
