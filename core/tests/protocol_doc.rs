//! Keeps `docs/PROTOCOL.md` true: its error table, close codes and frame examples must match the code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sealbus::protocol::{ClientFrame, Codec, ErrorCode, ServerFrame};

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md")).unwrap()
}

#[test]
fn error_table_lists_every_code_with_its_name_and_close_code() {
    let doc = doc();
    let mut documented = Vec::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 {
            continue;
        }
        let Ok(number) = cells[1].parse::<u16>() else {
            continue;
        };
        let name = cells[2].trim_matches('`');
        let code = ErrorCode::from_number(number)
            .unwrap_or_else(|| panic!("documented code {number} does not exist"));
        assert_eq!(code.name(), name, "name of {number}");
        if let Some(close) = cells[4].strip_prefix("closes (") {
            let close: u16 = close.trim_end_matches(')').parse().unwrap();
            assert_eq!(code.close_code(), close, "close code of {name}");
        }
        documented.push(code);
    }
    assert_eq!(
        documented,
        ErrorCode::ALL,
        "table must list every code, in order"
    );
}

#[test]
fn every_frame_type_has_a_json_example_that_decodes() {
    let doc = doc();
    let codec = Codec::default();
    let examples: Vec<&str> = doc
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("{\"type\":"))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for example in &examples {
        // Multi-line examples (welcome) are checked by the vectors; single-line ones decode here.
        if serde_json::from_str::<serde_json::Value>(example).is_err() {
            continue;
        }
        let decoded_client = codec.decode_client(example.as_bytes());
        let decoded_server = codec.decode_server(example.as_bytes());
        match (decoded_client, decoded_server) {
            (Ok(frame), _) => seen.insert(frame.type_name()),
            (_, Ok(frame)) => seen.insert(frame.type_name()),
            (Err(a), Err(b)) => panic!("example does not decode: {example}\n{a}\n{b}"),
        };
    }
    for ty in ClientFrame::TYPES.iter().chain(ServerFrame::TYPES) {
        let mentioned = doc.contains(&format!("{{\"type\":\"{ty}\""));
        assert!(mentioned, "PROTOCOL.md has no example of `{ty}`");
    }
    assert!(
        seen.len() >= 20,
        "only {} frame types decoded from examples",
        seen.len()
    );
}
