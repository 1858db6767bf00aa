//! The `sealbus` command-line tool.

fn main() {}
