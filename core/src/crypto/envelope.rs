//! Sealing and opening envelope format v1 with one [`Key`].
//!
//! ```text
//! offset  size  field
//! 0       1     version = 0x01
//! 1       8     key id
//! 9       16    IV (random per message)
//! 25      n     AES-256-CBC ciphertext, PKCS#7 padded (n multiple of 16, n >= 16)
//! 25+n    32    tag = HMAC-SHA-256(mac_key, version || key id || u32_be(len(topic)) || topic
//!               || IV || ciphertext)
//! ```
//!
//! Opening checks the shape, then the key id, then the tag (in constant time), and only then
//! decrypts: nothing about the plaintext or its padding is computed from unauthenticated data.

use aes::Aes256;
use aes::cipher::inout::InOutBuf;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::Pkcs7;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::crypto::{CryptoError, KEY_ID_LEN, Key, KeyId};

/// The version byte of envelope format v1.
pub const ENVELOPE_VERSION: u8 = 1;
/// The length of the IV in bytes (one AES block).
pub const IV_LEN: usize = 16;
/// The length of the authentication tag in bytes.
pub const TAG_LEN: usize = 32;
/// The length of the smallest possible envelope (an empty plaintext): 73 bytes.
pub const MIN_ENVELOPE_LEN: usize = HEADER_LEN + BLOCK_LEN + TAG_LEN;

const BLOCK_LEN: usize = 16;
/// Version, key id and IV.
const HEADER_LEN: usize = 1 + KEY_ID_LEN + IV_LEN;
/// The bytes of the header that precede the topic in the MAC input: version and key id.
const ID_END: usize = 1 + KEY_ID_LEN;

/// The length of the envelope that sealing `plaintext_len` bytes produces.
///
/// PKCS#7 always adds 1 to 16 bytes, so this is `57 + 16 * (plaintext_len / 16 + 1)`.
pub const fn sealed_len(plaintext_len: usize) -> usize {
    HEADER_LEN + padded_len(plaintext_len) + TAG_LEN
}

const fn padded_len(plaintext_len: usize) -> usize {
    (plaintext_len / BLOCK_LEN + 1) * BLOCK_LEN
}

/// An envelope whose shape has been checked but which has not been authenticated yet.
pub(super) struct Parsed<'a> {
    /// The key id named by the envelope.
    pub(super) key_id: KeyId,
    /// Version and key id: the MAC input before the topic.
    head: &'a [u8],
    /// IV and ciphertext: the MAC input after the topic.
    body: &'a [u8],
    iv: &'a [u8; IV_LEN],
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

impl<'a> Parsed<'a> {
    /// Checks the length, block alignment and version of `envelope`.
    pub(super) fn parse(envelope: &'a [u8]) -> Result<Parsed<'a>, CryptoError> {
        if envelope.len() < MIN_ENVELOPE_LEN {
            return Err(CryptoError::MalformedEnvelope("shorter than 73 bytes"));
        }
        if !(envelope.len() - HEADER_LEN - TAG_LEN).is_multiple_of(BLOCK_LEN) {
            return Err(CryptoError::MalformedEnvelope(
                "ciphertext is not a whole number of blocks",
            ));
        }
        let (head, rest) = envelope.split_at(ID_END);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let too_short = CryptoError::MalformedEnvelope("shorter than 73 bytes");
        let (&[version], key_id) = head.split_first_chunk::<1>().ok_or(too_short.clone())?;
        if version != ENVELOPE_VERSION {
            return Err(CryptoError::MalformedEnvelope("unknown envelope version"));
        }
        let key_id = <[u8; KEY_ID_LEN]>::try_from(key_id).map_err(|_| too_short.clone())?;
        let (iv, ciphertext) = body.split_first_chunk::<IV_LEN>().ok_or(too_short)?;
        Ok(Parsed {
            key_id: KeyId::from_bytes(key_id),
            head,
            body,
            iv,
            ciphertext,
            tag,
        })
    }
}

/// The topic's length as the 4 big-endian bytes that the MAC input carries.
fn topic_len(topic: &str) -> Result<[u8; 4], CryptoError> {
    u32::try_from(topic.len())
        .map(u32::to_be_bytes)
        .map_err(|_| CryptoError::MalformedEnvelope("topic longer than 2^32 - 1 bytes"))
}

/// HMAC-SHA-256 fed with `head || u32_be(len(topic)) || topic || body`, ready to finalize.
///
/// Starts from a clone of the key's pre-keyed state, so the MAC key is never re-processed.
fn mac_over(
    keyed: &Hmac<Sha256>,
    head: &[u8],
    topic: &str,
    body: &[u8],
) -> Result<Hmac<Sha256>, CryptoError> {
    let mut mac = keyed.clone();
    mac.update(head);
    mac.update(&topic_len(topic)?);
    mac.update(topic.as_bytes());
    mac.update(body);
    Ok(mac)
}

/// Fills `iv` from the operating system's random number generator.
fn random_iv() -> Result<[u8; IV_LEN], CryptoError> {
    let mut iv = [0u8; IV_LEN];
    getrandom::getrandom(&mut iv).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(iv)
}

impl Key {
    /// Seals `plaintext` for `topic` with a fresh random IV and returns the envelope bytes.
    ///
    /// The topic is authenticated, not encrypted: opening under another topic fails. For a
    /// direct message the topic is `@` followed by the recipient's client id.
    pub fn seal(&self, topic: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_with_iv(topic, plaintext, random_iv()?)
    }

    /// Seals with a caller-chosen IV. **For known-answer tests only.**
    ///
    /// Reusing an IV with the same key reveals which messages share a prefix; real messages
    /// must go through [`Key::seal`], which draws a fresh random IV.
    #[doc(hidden)]
    pub fn seal_with_iv(
        &self,
        topic: &str,
        plaintext: &[u8],
        iv: [u8; IV_LEN],
    ) -> Result<Vec<u8>, CryptoError> {
        let padded = padded_len(plaintext.len());
        let mut out = Vec::with_capacity(HEADER_LEN + padded + TAG_LEN);
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(&self.id().to_bytes());
        out.extend_from_slice(&iv);
        out.extend_from_slice(plaintext);
        // PKCS#7: pad with k bytes of value k, 1 <= k <= 16.
        let pad = padded - plaintext.len();
        out.resize(HEADER_LEN + padded, pad as u8);
        let (blocks, _empty) = InOutBuf::from(&mut out[HEADER_LEN..]).into_chunks();
        cbc::Encryptor::<&Aes256>::inner_iv_init(self.aes(), &iv.into())
            .encrypt_blocks_inout_mut(blocks);
        let tag = mac_over(self.mac(), &out[..ID_END], topic, &out[ID_END..])?.finalize();
        out.extend_from_slice(&tag.into_bytes());
        Ok(out)
    }

    /// Opens an envelope sealed with this key for `topic` and returns the plaintext.
    ///
    /// Errors: [`CryptoError::MalformedEnvelope`] if the bytes are not a v1 envelope,
    /// [`CryptoError::UnknownKeyId`] if it was sealed with another key,
    /// [`CryptoError::DecryptFailed`] if the tag does not verify (tampering, wrong topic).
    pub fn open(&self, topic: &str, envelope: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let parsed = Parsed::parse(envelope)?;
        if parsed.key_id != self.id() {
            return Err(CryptoError::UnknownKeyId(parsed.key_id));
        }
        self.open_parsed(topic, &parsed)
    }

    /// Verifies the tag of an envelope already matched to this key, then decrypts it.
    pub(super) fn open_parsed(
        &self,
        topic: &str,
        parsed: &Parsed<'_>,
    ) -> Result<Vec<u8>, CryptoError> {
        // Constant-time comparison; nothing is decrypted unless the tag is valid.
        mac_over(self.mac(), parsed.head, topic, parsed.body)?
            .verify_slice(parsed.tag)
            .map_err(|_| CryptoError::DecryptFailed)?;

        let mut buf = parsed.ciphertext.to_vec();
        let len = cbc::Decryptor::<&Aes256>::inner_iv_init(self.aes(), parsed.iv.into())
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map_err(|_| CryptoError::DecryptFailed)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// [`Key::seal`], then standard base64 with padding: the text form of an envelope.
    pub fn seal_to_base64(&self, topic: &str, plaintext: &[u8]) -> Result<String, CryptoError> {
        Ok(STANDARD.encode(self.seal(topic, plaintext)?))
    }

    /// Decodes the text form of an envelope ([`CryptoError::BadBase64`]), then [`Key::open`].
    pub fn open_base64(&self, topic: &str, text: &str) -> Result<Vec<u8>, CryptoError> {
        self.open(topic, &STANDARD.decode(text)?)
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
    fn layout_matches_the_format() {
        let key = key(1);
        let iv = [0x5a; IV_LEN];
        for len in [0usize, 1, 15, 16, 17, 31, 32, 100] {
            let plaintext = vec![0xee; len];
            let env = key.seal_with_iv("a/b", &plaintext, iv).unwrap();
            assert_eq!(env.len(), sealed_len(len), "len {len}");
            assert_eq!(env.len(), 57 + 16 * (len / 16 + 1));
            assert_eq!(env[0], 1);
            assert_eq!(env[1..9], key.id().to_bytes());
            assert_eq!(env[9..25], iv);
            if len > 0 {
                assert_ne!(env[25..25 + len.min(16)], plaintext[..len.min(16)]);
            }
            // The tag is HMAC over version || key id || u32_be(len(topic)) || topic || IV || ct.
            let mut input = env[..9].to_vec();
            input.extend_from_slice(&3u32.to_be_bytes());
            input.extend_from_slice(b"a/b");
            input.extend_from_slice(&env[9..env.len() - 32]);
            let mut mac = key.mac().clone();
            mac.update(&input);
            assert_eq!(env[env.len() - 32..], mac.finalize().into_bytes()[..]);
            assert_eq!(key.open("a/b", &env).unwrap(), plaintext);
        }
        assert_eq!(MIN_ENVELOPE_LEN, 73);
        assert_eq!(sealed_len(0), 73);
    }

    #[test]
    fn random_ivs_differ_per_message() {
        let key = key(2);
        let a = key.seal("t", b"same").unwrap();
        let b = key.seal("t", b"same").unwrap();
        assert_ne!(a[9..25], b[9..25]);
        assert_ne!(a, b);
        assert_eq!(key.open("t", &a).unwrap(), b"same");
        assert_eq!(key.open("t", &b).unwrap(), b"same");
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let key = key(3);
        let env = key.seal("x", b"attack at dawn, bring snacks").unwrap();
        for i in 0..env.len() {
            let mut bad = env.clone();
            bad[i] ^= 0x01;
            let want = match i {
                0 => ErrorCode::MalformedEnvelope,
                1..=8 => ErrorCode::UnknownKeyId,
                _ => ErrorCode::DecryptFailed,
            };
            assert_eq!(key.open("x", &bad).unwrap_err().code(), want, "byte {i}");
        }
    }

    #[test]
    fn wrong_topic_and_malformed_shapes_are_rejected() {
        let key = key(4);
        let env = key.seal("room/1", b"hi").unwrap();
        for topic in ["room/2", "room/1 ", "", "@room/1"] {
            assert_eq!(
                key.open(topic, &env),
                Err(CryptoError::DecryptFailed),
                "{topic}"
            );
        }
        // The length prefix keeps topic and IV apart: moving a byte between them fails.
        let env = key.seal("ab", b"x").unwrap();
        assert_eq!(key.open("a", &env), Err(CryptoError::DecryptFailed));
        for len in [0usize, 1, 9, 25, 72, 74, 88, 100] {
            let mut bytes = env.clone();
            bytes.resize(len, 0);
            if len == 73 {
                continue;
            }
            let err = key.open("ab", &bytes).unwrap_err();
            assert_eq!(err.code(), ErrorCode::MalformedEnvelope, "len {len}");
        }
        let mut v2 = env.clone();
        v2[0] = 2;
        assert_eq!(
            key.open("ab", &v2).unwrap_err().code(),
            ErrorCode::MalformedEnvelope
        );
    }

    #[test]
    fn envelope_from_another_key_is_unknown_key_id() {
        let env = key(5).seal("t", b"secret").unwrap();
        let err = key(6).open("t", &env).unwrap_err();
        assert_eq!(err, CryptoError::UnknownKeyId(key(5).id()));
    }

    #[test]
    fn bad_padding_under_a_valid_tag_is_decrypt_failed() {
        // Only the key holder can build this: a valid tag over a ciphertext whose last block
        // decrypts to invalid PKCS#7 padding (a zero byte). It must fail cleanly, not panic.
        let key = key(7);
        let iv = [9u8; IV_LEN];
        let mut block = [0u8; 16];
        let (blocks, _) = InOutBuf::from(&mut block[..]).into_chunks();
        cbc::Encryptor::<&Aes256>::inner_iv_init(key.aes(), &iv.into())
            .encrypt_blocks_inout_mut(blocks);
        let mut env = vec![ENVELOPE_VERSION];
        env.extend_from_slice(&key.id().to_bytes());
        env.extend_from_slice(&iv);
        env.extend_from_slice(&block);
        let tag = mac_over(key.mac(), &env[..ID_END], "t", &env[ID_END..])
            .unwrap()
            .finalize();
        env.extend_from_slice(&tag.into_bytes());
        assert_eq!(key.open("t", &env), Err(CryptoError::DecryptFailed));
    }

    #[test]
    fn text_form_round_trips_and_rejects_bad_base64() {
        let key = key(8);
        let text = key.seal_to_base64("t", b"hello").unwrap();
        assert_eq!(STANDARD.decode(&text).unwrap().len(), sealed_len(5));
        assert_eq!(key.open_base64("t", &text).unwrap(), b"hello");
        let err = key.open_base64("t", "not*base64").unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadBase64);
        let unpadded = text.trim_end_matches('=');
        if unpadded.len() != text.len() {
            assert_eq!(
                key.open_base64("t", unpadded).unwrap_err().code(),
                ErrorCode::BadBase64
            );
        }
    }
}
