//! Runs the language-neutral frame vectors in `tests/vectors/frames.json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sealbus::protocol::{ClientFrame, Codec, ErrorCode, ServerFrame};
use serde_json::Value;

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/frames.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_frame_type_has_a_canonical_vector_that_round_trips() {
    let vectors = vectors();
    let codec = Codec::default();
    let mut seen_client = std::collections::BTreeSet::new();
    let mut seen_server = std::collections::BTreeSet::new();
    for case in vectors["frames"].as_array().unwrap() {
        let text = serde_json::to_string(&case["frame"]).unwrap();
        match case["direction"].as_str().unwrap() {
            "client" => {
                let frame = codec
                    .decode_client(text.as_bytes())
                    .unwrap_or_else(|e| panic!("{text}: {e}"));
                seen_client.insert(frame.type_name());
                assert_eq!(Codec::encode_client(&frame).unwrap(), text);
            }
            "server" => {
                let frame = codec
                    .decode_server(text.as_bytes())
                    .unwrap_or_else(|e| panic!("{text}: {e}"));
                seen_server.insert(frame.type_name());
                assert_eq!(Codec::encode_server(&frame).unwrap(), text);
            }
            other => panic!("unknown direction {other}"),
        }
    }
    let all_client: std::collections::BTreeSet<_> = ClientFrame::TYPES.iter().copied().collect();
    let all_server: std::collections::BTreeSet<_> = ServerFrame::TYPES.iter().copied().collect();
    assert_eq!(seen_client, all_client, "a client frame type has no vector");
    assert_eq!(seen_server, all_server, "a server frame type has no vector");
}

#[test]
fn invalid_client_frames_fail_with_their_code_and_request_id() {
    let vectors = vectors();
    let max = vectors["max_frame_bytes"].as_u64().unwrap() as usize;
    let codec = Codec::new(max);
    let cases = vectors["invalid"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = match &case["text"] {
            Value::String(text) => text.clone(),
            Value::Object(spec) => {
                let len = spec["repeat_pad"].as_u64().unwrap() as usize;
                let head = r#"{"type":"ping","pad":""#;
                let pad = len - head.len() - 2;
                format!("{head}{}\"}}", "x".repeat(pad))
            }
            other => panic!("{name}: bad text {other}"),
        };
        let want = ErrorCode::from_name(case["code"].as_str().unwrap()).unwrap();
        match codec.decode_client(text.as_bytes()) {
            Ok(frame) => failures.push(format!("{name}: decoded as {frame:?}")),
            Err(err) if err.code != want => failures.push(format!("{name}: got {err}")),
            Err(err) if err.id != case["id"].as_u64() => {
                failures.push(format!("{name}: request id {:?}", err.id))
            }
            Err(err) => assert!(!err.message.is_empty(), "{name}: empty message"),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
