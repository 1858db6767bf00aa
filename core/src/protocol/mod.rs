//! Wire protocol v1: frames, payloads, the JSON codec and the stable error codes.

mod code;

pub use code::ErrorCode;
