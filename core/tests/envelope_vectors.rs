//! Known-answer vectors for envelope format v1 (`tests/vectors/envelope.json`).
//!
//! Every vector is checked both ways: the derived key id and sub-keys (with the `hkdf` crate
//! directly), sealing with the fixed IV must give the expected envelope byte for byte, and
//! opening the expected envelope must give the plaintext. Every tamper case must fail with its
//! named error code.
//!
//! The expected values were produced once by `regenerate_vectors` (ignored; run it with
//! `SEALBUS_WRITE_VECTORS=1 cargo test -p sealbus --test envelope_vectors -- --ignored`) and then
//! cross-checked with an independent implementation; regenerate only to add vectors, and redo
//! the cross-check when you do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hkdf::Hkdf;
use sealbus::crypto::{Key, Keyring};
use sealbus::protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const VECTORS: &str = include_str!("vectors/envelope.json");

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    description: String,
    format: String,
    vectors: Vec<Vector>,
    tamper: Vec<Tamper>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    name: String,
    /// Master key, standard base64.
    key: String,
    key_id: String,
    aes_key: String,
    mac_key: String,
    iv: String,
    topic: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    plaintext_utf8: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    plaintext_hex: Option<String>,
    /// Expected envelope, standard base64.
    envelope: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tamper {
    name: String,
    /// The key text the opening keyring is built from (its parse may itself be the failure).
    key: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    topic: Option<String>,
    /// Envelope text to open; absent when the case is about the key text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    envelope: Option<String>,
    /// Symbolic error code, e.g. `decrypt_failed`.
    expect: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length: {text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn derive(master: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let mut okm = vec![0u8; len];
    Hkdf::<Sha256>::new(None, master)
        .expand(info, &mut okm)
        .unwrap();
    okm
}

fn plaintext(v: &Vector) -> Vec<u8> {
    match (&v.plaintext_utf8, &v.plaintext_hex) {
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(h)) => unhex(h),
        _ => panic!("{}: exactly one of plaintext_utf8 / plaintext_hex", v.name),
    }
}

fn load() -> File {
    serde_json::from_str(VECTORS).expect("envelope.json parses")
}

#[test]
fn known_answer_vectors() {
    let file = load();
    assert_eq!(file.format, "sealbus envelope v1");
    assert!(file.description.contains("cross-checked"));
    assert!(file.vectors.len() >= 6, "at least 6 vectors");
    for v in &file.vectors {
        let master = STANDARD.decode(&v.key).unwrap();
        assert_eq!(master.len(), 32, "{}", v.name);
        assert_eq!(
            hex(&derive(&master, b"sealbus v1 key id", 8)),
            v.key_id,
            "{}",
            v.name
        );
        assert_eq!(
            hex(&derive(&master, b"sealbus v1 aes-256-cbc", 32)),
            v.aes_key,
            "{}",
            v.name
        );
        assert_eq!(
            hex(&derive(&master, b"sealbus v1 hmac-sha-256", 32)),
            v.mac_key,
            "{}",
            v.name
        );

        let key = Key::from_base64(&v.key).unwrap();
        assert_eq!(key.id().to_string(), v.key_id, "{}", v.name);
        assert_eq!(key.to_base64(), v.key, "{}", v.name);
        let iv: [u8; 16] = unhex(&v.iv).try_into().expect("16-byte IV");
        let plain = plaintext(v);
        let expected = STANDARD.decode(&v.envelope).unwrap();
        assert_eq!(
            expected.len(),
            sealbus::crypto::sealed_len(plain.len()),
            "{}",
            v.name
        );
        assert_eq!(expected[1..9], key.id().to_bytes(), "{}", v.name);
        assert_eq!(expected[9..25], iv, "{}", v.name);

        let sealed = key.seal_with_iv(&v.topic, &plain, iv).unwrap();
        assert_eq!(STANDARD.encode(&sealed), v.envelope, "{}: seal", v.name);
        let ring = Keyring::with_key(key.clone());
        assert_eq!(
            ring.seal_with_iv(&v.topic, &plain, iv).unwrap(),
            sealed,
            "{}",
            v.name
        );
        assert_eq!(
            ring.open_base64(&v.topic, &v.envelope).unwrap(),
            plain,
            "{}: open",
            v.name
        );
        assert_eq!(
            key.open(&v.topic, &expected).unwrap(),
            plain,
            "{}: open",
            v.name
        );
    }
}

#[test]
fn vectors_cover_the_required_shapes() {
    let file = load();
    let lens: Vec<usize> = file.vectors.iter().map(|v| plaintext(v).len()).collect();
    for len in [0, 16, 17, 1000] {
        assert!(lens.contains(&len), "a vector with a {len}-byte plaintext");
    }
    assert!(
        file.vectors.iter().any(|v| v.topic.is_empty()),
        "an empty topic"
    );
    assert!(
        file.vectors.iter().any(|v| !v.topic.is_ascii()),
        "a unicode topic"
    );
    for code in [
        "decrypt_failed",
        "unknown_key_id",
        "malformed_envelope",
        "bad_base64",
        "invalid_key",
    ] {
        assert!(
            file.tamper.iter().any(|t| t.expect == code),
            "a tamper case expecting {code}"
        );
    }
}

#[test]
fn tamper_cases_fail_with_their_codes() {
    let file = load();
    assert!(file.tamper.len() >= 10);
    for t in &file.tamper {
        let expect = ErrorCode::from_name(&t.expect)
            .unwrap_or_else(|| panic!("{}: unknown code {}", t.name, t.expect));
        let ring = match Key::from_base64(&t.key) {
            Ok(key) => Keyring::with_key(key),
            Err(err) => {
                assert_eq!(err.code(), expect, "{}: {err}", t.name);
                assert!(
                    t.envelope.is_none(),
                    "{}: key fails, nothing to open",
                    t.name
                );
                continue;
            }
        };
        let text = t
            .envelope
            .as_deref()
            .unwrap_or_else(|| panic!("{}: envelope", t.name));
        let topic = t
            .topic
            .as_deref()
            .unwrap_or_else(|| panic!("{}: topic", t.name));
        let err = ring.open_base64(topic, text).expect_err(&t.name);
        assert_eq!(err.code(), expect, "{}: {err}", t.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Generator: run once to produce the expected values, then cross-check them independently.

fn key_a() -> Vec<u8> {
    (0u8..32).collect()
}

fn key_b() -> Vec<u8> {
    (0x80u8..0xa0).collect()
}

fn iv(seed: u8) -> [u8; 16] {
    std::array::from_fn(|i| seed.wrapping_mul(16).wrapping_add(i as u8))
}

fn vector(name: &str, master: &[u8], iv: [u8; 16], topic: &str, plain: Plain) -> Vector {
    let key = Key::from_bytes(master).unwrap();
    let bytes = match &plain {
        Plain::Utf8(s) => s.as_bytes().to_vec(),
        Plain::Hex(b) => b.clone(),
    };
    Vector {
        name: name.into(),
        key: key.to_base64(),
        key_id: key.id().to_string(),
        aes_key: hex(&derive(master, b"sealbus v1 aes-256-cbc", 32)),
        mac_key: hex(&derive(master, b"sealbus v1 hmac-sha-256", 32)),
        iv: hex(&iv),
        topic: topic.into(),
        plaintext_utf8: match &plain {
            Plain::Utf8(s) => Some(s.clone()),
            Plain::Hex(_) => None,
        },
        plaintext_hex: match &plain {
            Plain::Hex(b) => Some(hex(b)),
            Plain::Utf8(_) => None,
        },
        envelope: STANDARD.encode(key.seal_with_iv(topic, &bytes, iv).unwrap()),
    }
}

enum Plain {
    Utf8(String),
    Hex(Vec<u8>),
}

fn tamper(name: &str, key: &[u8], topic: &str, envelope: &[u8], expect: &str) -> Tamper {
    Tamper {
        name: name.into(),
        key: STANDARD.encode(key),
        topic: Some(topic.into()),
        envelope: Some(STANDARD.encode(envelope)),
        expect: expect.into(),
    }
}

/// Rebuilds the vector file from the implementation and checks it equals the committed one, so
/// the file, the generator and the code cannot drift apart. With `SEALBUS_WRITE_VECTORS=1` it
/// rewrites the file instead (then cross-check the new vectors independently, as the file's
/// description says).
#[test]
fn committed_vectors_are_what_the_generator_produces() {
    let thousand: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut json_payload = vec![0x01];
    json_payload.extend_from_slice(br#"{"temp":21.5,"unit":"C"}"#);
    let vectors = vec![
        vector(
            "empty plaintext",
            &key_a(),
            iv(0),
            "sensors/temp",
            Plain::Utf8(String::new()),
        ),
        vector(
            "15 bytes",
            &key_a(),
            iv(1),
            "sensors/temp",
            Plain::Utf8("fifteen bytes!!".into()),
        ),
        vector(
            "exactly 16 bytes",
            &key_a(),
            iv(2),
            "sensors/temp",
            Plain::Utf8("0123456789abcdef".into()),
        ),
        vector(
            "17 bytes",
            &key_a(),
            iv(3),
            "sensors/temp",
            Plain::Utf8("0123456789abcdefg".into()),
        ),
        vector(
            "1000 bytes binary",
            &key_a(),
            iv(4),
            "bulk/data",
            Plain::Hex(thousand),
        ),
        vector(
            "unicode topic",
            &key_a(),
            iv(5),
            "température/泰/🚀",
            Plain::Utf8("héllo wörld".into()),
        ),
        vector("empty topic", &key_a(), iv(6), "", Plain::Utf8("x".into())),
        vector(
            "content kind json, direct message",
            &key_b(),
            iv(7),
            "@client-42",
            Plain::Hex(json_payload),
        ),
        vector(
            "second key",
            &key_b(),
            iv(8),
            "sensors/temp",
            Plain::Hex(vec![0x00, 0xde, 0xad, 0xbe, 0xef]),
        ),
    ];

    let a = Key::from_bytes(&key_a()).unwrap();
    let b = Key::from_bytes(&key_b()).unwrap();
    let env = a
        .seal_with_iv("orders/eu", b"order #1234: 3 widgets", iv(9))
        .unwrap();
    let flip = |i: usize| {
        let mut e = env.clone();
        e[i] ^= 0x01;
        e
    };
    let last = env.len() - 1;
    let mut forged = env.clone();
    forged[1..9].copy_from_slice(&b.id().to_bytes());
    let mut longer = env.clone();
    longer.splice(last - 31..last - 31, [0u8; 16]);
    let mut tampers = vec![
        tamper(
            "flipped bit in tag",
            &key_a(),
            "orders/eu",
            &flip(last),
            "decrypt_failed",
        ),
        tamper(
            "flipped bit in IV",
            &key_a(),
            "orders/eu",
            &flip(9),
            "decrypt_failed",
        ),
        tamper(
            "flipped bit in first ciphertext block",
            &key_a(),
            "orders/eu",
            &flip(25),
            "decrypt_failed",
        ),
        tamper(
            "flipped bit in last ciphertext block",
            &key_a(),
            "orders/eu",
            &flip(last - 32),
            "decrypt_failed",
        ),
        tamper(
            "flipped bit in key id",
            &key_a(),
            "orders/eu",
            &flip(1),
            "unknown_key_id",
        ),
        tamper(
            "version byte 0x00",
            &key_a(),
            "orders/eu",
            &flip(0),
            "malformed_envelope",
        ),
        tamper(
            "version byte 0x02",
            &key_a(),
            "orders/eu",
            &{
                let mut e = env.clone();
                e[0] = 2;
                e
            },
            "malformed_envelope",
        ),
        tamper(
            "truncated by one byte",
            &key_a(),
            "orders/eu",
            &env[..last],
            "malformed_envelope",
        ),
        tamper(
            "truncated to 72 bytes",
            &key_a(),
            "orders/eu",
            &env[..72],
            "malformed_envelope",
        ),
        tamper(
            "truncated by one whole block",
            &key_a(),
            "orders/eu",
            &env[..env.len() - 16],
            "decrypt_failed",
        ),
        tamper(
            "extra block inserted before the tag",
            &key_a(),
            "orders/eu",
            &longer,
            "decrypt_failed",
        ),
        tamper(
            "empty envelope",
            &key_a(),
            "orders/eu",
            &[],
            "malformed_envelope",
        ),
        tamper("wrong topic", &key_a(), "orders/us", &env, "decrypt_failed"),
        tamper(
            "topic differs only in case",
            &key_a(),
            "Orders/eu",
            &env,
            "decrypt_failed",
        ),
        tamper(
            "envelope from key A opened with only key B",
            &key_b(),
            "orders/eu",
            &env,
            "unknown_key_id",
        ),
        tamper(
            "key id forged to key B, opened with key B",
            &key_b(),
            "orders/eu",
            &forged,
            "decrypt_failed",
        ),
    ];
    let dm = a.seal_with_iv("@alice", b"for alice only", iv(10)).unwrap();
    tampers.push(tamper(
        "direct message replayed to another recipient",
        &key_a(),
        "@bob",
        &dm,
        "decrypt_failed",
    ));
    let key_text = STANDARD.encode(key_a());
    let text_case = |name: &str, envelope: &str| Tamper {
        name: name.into(),
        key: key_text.clone(),
        topic: Some("orders/eu".into()),
        envelope: Some(envelope.into()),
        expect: "bad_base64".into(),
    };
    let good = STANDARD.encode(&env);
    tampers.push(text_case(
        "envelope text is not base64",
        "this is not base64!",
    ));
    tampers.push(text_case(
        "envelope text without padding",
        good.trim_end_matches('='),
    ));
    tampers.push(text_case(
        "envelope text in url-safe alphabet",
        &good.replace('+', "-").replace('/', "_"),
    ));
    let key_case = |name: &str, key: String, expect: &str| Tamper {
        name: name.into(),
        key,
        topic: None,
        envelope: None,
        expect: expect.into(),
    };
    tampers.push(key_case(
        "key text of 31 bytes",
        STANDARD.encode(&key_a()[..31]),
        "invalid_key",
    ));
    tampers.push(key_case(
        "key text of 33 bytes",
        STANDARD.encode([7u8; 33]),
        "invalid_key",
    ));
    tampers.push(key_case("empty key text", String::new(), "invalid_key"));
    tampers.push(key_case(
        "key text is not base64",
        "not a key at all!".into(),
        "bad_base64",
    ));
    assert!(
        good.contains('=') && (good.contains('+') || good.contains('/')),
        "{good}"
    );

    let file = File {
        description: DESCRIPTION.into(),
        format: "sealbus envelope v1".into(),
        vectors,
        tamper: tampers,
    };
    let json = serde_json::to_string_pretty(&file).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/envelope.json");
    if std::env::var_os("SEALBUS_WRITE_VECTORS").is_some() {
        std::fs::write(path, json).unwrap();
    } else {
        let committed = std::fs::read_to_string(path).unwrap();
        assert!(
            committed == json,
            "tests/vectors/envelope.json differs from what the generator produces; \
             run with SEALBUS_WRITE_VECTORS=1 only if the format changed on purpose"
        );
    }
}

const DESCRIPTION: &str = "Known-answer vectors for the Sealbus end-to-end envelope, format v1 \
(docs/SECURITY.md). Each vector gives a master key (standard base64), the HKDF-SHA-256 outputs \
(no salt; infos 'sealbus v1 key id' / 'sealbus v1 aes-256-cbc' / 'sealbus v1 hmac-sha-256') as \
hex, a fixed IV (hex; real envelopes use a random IV), the topic, the plaintext (utf8 or hex) and \
the envelope (standard base64). Each tamper case must fail with the named error code when opened \
by a keyring holding only the given key (or, with no envelope, when the key text is parsed). \
Generated once by the Rust implementation, then cross-checked independently: every vector was \
rebuilt and every tamper case re-opened with Python's 'cryptography' 48 (HKDF, AES-CBC, PKCS7, \
HMAC), and the '17 bytes' vector also by a second route: HKDF and HMAC from Python's stdlib \
hmac/hashlib and AES-256-CBC from the OpenSSL 3.0 command line (openssl enc -aes-256-cbc -K -iv).";
