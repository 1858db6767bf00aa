//! `cargo xtask`: the project's one entry point for its own tasks.
//!
//! * `cargo xtask serve` starts the server with a demo session (the README's first command);
//! * `cargo xtask ci` runs every check and test (the README's second command, and `.ci/run`);
//! * `cargo xtask bench` runs the benchmarks and prints their figures (`bench js`: the JS SDK's
//!   receive rate in Node and Chromium);
//! * `cargo xtask wasm` builds the JS/TypeScript package and runs its Node and browser tests;
//! * `cargo xtask load` measures a running server (fan-out, acks, memory per connection) and
//!   one SDK client over a real socket (`--scenario client`).
//!
//! Each task installs what it needs (rustup components) and skips what is already there.

mod load;
mod steps;
mod wasm;

use anyhow::{Result, bail};

/// The allocator the server binary uses too: the load generator shares the cores with the
/// server it measures, and glibc's malloc was its largest single cost (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const HELP: &str = "\
cargo xtask: Sealbus project tasks

USAGE:
    cargo xtask <TASK> [ARGS...]

TASKS:
    serve [ARGS...]   Build and start the server with a demo session (session `demo`,
                      password `demo`); extra ARGS go to `sealbus serve`
                      (e.g. `--listen 0.0.0.0:7070`). Keeps its state in
                      target/sealbus-demo.db unless ARGS give --store, --memory or --config.
                      Serves the web console at /console/ once `cargo xtask wasm` has
                      built the JS package.
    ci                Run every check and test: rustfmt, clippy with -D warnings, the tests of
                      every crate, the wasm package's tests. Installs missing rustup
                      components first. With CI=true, builds use the committed Cargo.lock (--locked).
    bench [FILTER]    Run the criterion benchmarks (short measurement) and print their figures.
    bench js [OPTIONS]
                      Build the JS package and a release server, then measure messages/s
                      received (and opened, with E2E) by the JS SDK in Node and in headless
                      Chromium (bindings/wasm/bench/receive.mjs; OPTIONS: --seconds N,
                      --hosts node,chromium).
    load [OPTIONS]    Start a release server and measure it: fan-out, acks, idle memory,
                      and one sealbus::Client's publishes/s and messages/s with
                      --scenario client (`cargo xtask load --help`).
    wasm              Build the npm package `sealbus` (bindings/wasm) with the pinned
                      wasm-bindgen CLI and run its Node and headless Chromium tests
                      (installs the wasm target, wasm-bindgen-cli, npm packages and Chromium
                      when missing). Also part of `ci`.
    help              Show this text.
";

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_else(|| "help".to_owned());
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "ci" => steps::ci(),
        "serve" => steps::serve(&rest),
        "bench" => match rest.split_first() {
            Some((first, args)) if first == "js" => wasm::bench(args),
            _ => steps::bench(&rest),
        },
        "load" => load::run(&rest),
        "wasm" => wasm::ci(),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => {
            eprint!("{HELP}");
            bail!("unknown task `{other}`")
        }
    }
}
