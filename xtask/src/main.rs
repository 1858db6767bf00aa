//! `cargo xtask`: the project's task runner.

fn main() {}
