//! Reading the `ack` frame without serde: the frame a server receives most (one per QoS 1 copy
//! and per publish_with_ack copy), in the exact form the SDKs write it
//! (`{"type":"ack","did":17,"aid":9,"ok":true}`: those three fields in any order, no spaces).
//!
//! Anything else (spaces, `code`/`error`, other or repeated keys, numbers serde would refuse)
//! is left to serde, so both paths accept and refuse the same frames.

use super::client_frames::Ack;

/// The `ack` in `text`, if it has the SDKs' exact form.
pub(super) fn parse(text: &str) -> Option<Ack> {
    let mut rest = text.strip_prefix("{\"type\":\"ack\"")?.as_bytes();
    let (mut did, mut aid, mut ok) = (None, None, None);
    loop {
        match rest {
            [b'}'] => break,
            [b',', b'"', tail @ ..] => rest = tail,
            _ => return None,
        }
        let (key, tail) = key(rest)?;
        rest = tail;
        match key {
            b"did" if did.is_none() => (did, rest) = number(rest).map(|(n, t)| (Some(n), t))?,
            b"aid" if aid.is_none() => (aid, rest) = number(rest).map(|(n, t)| (Some(n), t))?,
            b"ok" if ok.is_none() => {
                (ok, rest) = if let Some(tail) = rest.strip_prefix(b"true") {
                    (Some(true), tail)
                } else {
                    (Some(false), rest.strip_prefix(b"false")?)
                };
            }
            _ => return None,
        }
    }
    Some(Ack {
        did,
        aid,
        ok: ok?,
        code: None,
        error: None,
    })
}

/// A key made of ASCII letters, its closing quote and colon; returns it and what follows.
fn key(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|b| !b.is_ascii_lowercase())?;
    let (key, tail) = bytes.split_at(end);
    Some((key, tail.strip_prefix(b"\":")?))
}

/// An unsigned JSON integer (no leading zero, no fraction or exponent) that fits in a `u64`.
fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && bytes[0] == b'0') {
        return None;
    }
    if matches!(bytes.get(digits), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let mut value: u64 = 0;
    for &digit in &bytes[..digits] {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    Some((value, &bytes[digits..]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{ClientFrame, Codec};
    use super::*;

    /// What serde makes of `text` (through the whole codec, validation included).
    fn by_serde(text: &str) -> Option<ClientFrame> {
        let frame: ClientFrame = super::super::codec::decode_text(text).ok()?;
        frame.validate().ok()?;
        Some(frame)
    }

    #[test]
    fn the_sdk_form_is_read_and_the_rest_left_to_serde() {
        let ack = parse(r#"{"type":"ack","did":17,"aid":9,"ok":true}"#).unwrap();
        assert_eq!((ack.did, ack.aid, ack.ok), (Some(17), Some(9), true));
        let ack = parse(r#"{"type":"ack","ok":false,"aid":3}"#).unwrap();
        assert_eq!((ack.did, ack.aid, ack.ok), (None, Some(3), false));
        for other in [
            r#"{"type":"ack","did":1,"ok":true,"error":"x"}"#,
            r#"{"type":"ack", "did":1,"ok":true}"#,
            r#"{"type":"ack","did":1,"did":2,"ok":true}"#,
            r#"{"type":"ack","did":01,"ok":true}"#,
            r#"{"type":"ack","did":1.0,"ok":true}"#,
            r#"{"type":"ack","did":18446744073709551616,"ok":true}"#,
            r#"{"type":"ack","did":1}"#,
            r#"{"type":"ack","did":1,"ok":true}x"#,
            r#"{"type":"acked","did":1,"ok":true}"#,
        ] {
            assert!(parse(other).is_none(), "{other}");
        }
        let codec = Codec::default();
        let too_large = br#"{"type":"ack","did":9007199254740992,"ok":true}"#;
        assert!(parse(std::str::from_utf8(too_large).unwrap()).is_some());
        assert!(codec.decode_client(too_large).is_err(), "still validated");
        let neither = br#"{"type":"ack","ok":true}"#;
        assert!(codec.decode_client(neither).is_err(), "still validated");
    }

    /// Pieces an `ack` frame may be made of, valid or not.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| format!(",\"did\":{n}")),
            any::<u64>().prop_map(|n| format!(",\"aid\":{n}")),
            Just(",\"ok\":true".to_owned()),
            Just(",\"ok\":false".to_owned()),
            Just(",\"did\":-1".to_owned()),
            Just(",\"did\":007".to_owned()),
            Just(",\"aid\":2e3".to_owned()),
            Just(",\"ok\":1".to_owned()),
            Just(",\"code\":6006".to_owned()),
            Just(",\"error\":\"disk full\"".to_owned()),
            Just(", \"ok\":true".to_owned()),
            Just(",\"x\":null".to_owned()),
            "[,:\"a-z0-9 ]{0,6}",
        ]
    }

    proptest! {
        #[test]
        fn whatever_the_fast_path_reads_serde_reads_the_same(
            pieces in prop::collection::vec(piece(), 0..5),
        ) {
            let text = format!("{{\"type\":\"ack\"{}}}", pieces.concat());
            if let Some(ack) = parse(&text) {
                let fast = Some(ClientFrame::Ack(ack)).filter(|frame| frame.validate().is_ok());
                prop_assert_eq!(fast, by_serde(&text));
            }
            // And the codec as a whole agrees with serde on every frame.
            prop_assert_eq!(Codec::new(usize::MAX).decode_client(text.as_bytes()).ok(), by_serde(&text));
        }
    }
}
