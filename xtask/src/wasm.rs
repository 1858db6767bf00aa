//! The JS/TypeScript SDK (`bindings/wasm`): toolchain, build and tests.
//!
//! * [`ensure_toolchain`] installs what is missing, and only that: the `wasm32-unknown-unknown`
//!   target, the `wasm-bindgen` CLI of exactly the version in `Cargo.lock`, the package's npm
//!   dev-dependencies (playwright-core, typescript) and Debian's Chromium for the browser test;
//! * [`build`] compiles the crate for wasm32 and runs `wasm-bindgen --target web` and
//!   `--target nodejs` into `bindings/wasm/dist/` (gitignored);
//! * [`test()`] runs the Node tests against a real `sealbus serve`, then the headless Chromium
//!   test, and fails unless tests really ran;
//! * [`bench()`] measures the SDK's receive rate in Node and Chromium against a release server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::steps::{build_release_server, cargo, describe, locked, root, run};

const TARGET: &str = "wasm32-unknown-unknown";

fn package_dir() -> PathBuf {
    root().join("bindings").join("wasm")
}

/// `cargo xtask wasm` (and the wasm step of `cargo xtask ci`): install, lint for wasm32, build,
/// test.
pub(crate) fn ci() -> Result<()> {
    ensure_toolchain()?;
    run(
        "clippy for wasm32 (sealbus-wasm, -D warnings)",
        locked(cargo().args(["clippy", "-p", "sealbus-wasm", "--target", TARGET]))
            .args(["--", "-D", "warnings"]),
    )?;
    build()?;
    test()
}

/// The stdout of `cmd`, or `None` when it cannot run or fails.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The version of the `wasm-bindgen` crate that `Cargo.lock` holds.
fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\""
            && let Some(version) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
        {
            return Ok(version.trim_matches('"').to_owned());
        }
    }
    bail!("Cargo.lock has no wasm-bindgen package")
}

/// Installs the wasm target, the matching `wasm-bindgen` CLI, npm packages and Chromium when
/// they are missing; fast when everything is there.
pub(crate) fn ensure_toolchain() -> Result<()> {
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"]));
    if targets.is_some_and(|t| !t.lines().any(|l| l.trim() == TARGET)) {
        run(
            "install the wasm32 target",
            Command::new("rustup").args(["target", "add", TARGET]),
        )?;
    }
    let version = locked_wasm_bindgen_version()?;
    let installed = output(Command::new("wasm-bindgen").arg("--version")).unwrap_or_default();
    if installed.split_whitespace().nth(1) != Some(version.as_str()) {
        // No --locked: the CLI's own lockfile asks for versions the registry index may lack.
        run(
            &format!("install wasm-bindgen-cli {version} (must match the crate exactly)"),
            cargo().args(["install", "wasm-bindgen-cli", "--version", &version]),
        )?;
    }
    ensure_npm_packages()?;
    if !Path::new("/usr/bin/chromium").exists() {
        run("apt-get update", Command::new("apt-get").arg("update"))?;
        run(
            "install Chromium (Debian package) for the browser test",
            Command::new("apt-get").args(["install", "-y", "chromium"]),
        )?;
    }
    Ok(())
}

/// `npm ci` when `node_modules` is missing or older than `package-lock.json`.
fn ensure_npm_packages() -> Result<()> {
    let dir = package_dir();
    let lock = dir.join("package-lock.json");
    let marker = dir.join("node_modules").join(".package-lock.json");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (modified(&lock), modified(&marker)) {
        (Some(lock), Some(marker)) => marker >= lock,
        _ => false,
    };
    if !fresh {
        let verb = if lock.exists() { "ci" } else { "install" };
        run(
            &format!("npm {verb} (bindings/wasm dev-dependencies)"),
            Command::new("npm")
                .args([verb, "--no-audit", "--no-fund"])
                .current_dir(&dir),
        )?;
    }
    Ok(())
}

/// Builds the wasm module and the two wasm-bindgen outputs of the npm package.
pub(crate) fn build() -> Result<()> {
    run(
        "build sealbus-wasm for wasm32 (profile wasm-release: size-optimized, LTO)",
        locked(cargo().args([
            "build",
            "--target",
            TARGET,
            "--profile",
            "wasm-release",
            "-p",
            "sealbus-wasm",
        ])),
    )?;
    let wasm = root()
        .join("target")
        .join(TARGET)
        .join("wasm-release")
        .join("sealbus_wasm.wasm");
    let dist = package_dir().join("dist");
    for target in ["web", "nodejs"] {
        let out = dist.join(if target == "web" { "web" } else { "node" });
        if out.exists() {
            std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
        }
        run(
            &format!("wasm-bindgen --target {target}"),
            Command::new("wasm-bindgen")
                .arg(&wasm)
                .args(["--out-dir"])
                .arg(&out)
                .args(["--target", target, "--no-typescript"]),
        )?;
        let generated = out.join("sealbus_wasm_bg.wasm");
        if !generated.exists() {
            bail!("wasm-bindgen did not write {}", generated.display());
        }
    }
    // The Node output is CommonJS inside an ESM ("type": "module") package.
    std::fs::write(
        dist.join("node").join("package.json"),
        "{ \"type\": \"commonjs\" }\n",
    )?;
    let module = dist.join("web").join("sealbus_wasm_bg.wasm");
    let raw = std::fs::metadata(&module)?.len();
    let gzipped = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(&module)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| o.stdout.len());
    match gzipped {
        Some(gz) => println!("    sealbus_wasm_bg.wasm: {raw} bytes, {gz} bytes gzipped"),
        None => println!("    sealbus_wasm_bg.wasm: {raw} bytes"),
    }
    Ok(())
}

/// Counts of a `node --test` run, from its closing lines (`# pass N`, `# fail N`).
fn node_counts(text: &str) -> (u64, u64) {
    let count = |prefix: &str| {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(prefix))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .next_back()
            .unwrap_or(0)
    };
    (count("# pass "), count("# fail "))
}

/// Runs `cmd` (a `node --test` run), echoing its output, and fails unless tests ran and passed.
fn node_test(title: &str, cmd: &mut Command) -> Result<()> {
    println!("\n==> {title}");
    println!("    $ {}", describe(cmd));
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    let (passed, failed) = node_counts(&text);
    if !out.status.success() || failed > 0 {
        bail!(
            "step `{title}` failed: {passed} passed, {failed} failed ({})",
            out.status
        );
    }
    if passed == 0 {
        bail!("step `{title}` ran no test");
    }
    println!("    ok: {passed} passed, {failed} failed");
    Ok(())
}

/// Node 20 has a global WebSocket only behind a flag (Node 22 has it by default).
fn node_flags() -> Vec<&'static str> {
    let version = output(Command::new("node").arg("--version")).unwrap_or_default();
    let major = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if major < 22 {
        vec!["--experimental-websocket"]
    } else {
        vec![]
    }
}

/// Builds the server and the Rust peer, type-checks the declarations, then runs the Node and
/// browser tests.
pub(crate) fn test() -> Result<()> {
    run(
        "build the server (debug) for the JS tests",
        locked(cargo().args(["build", "-p", "sealbus-server", "--bin", "sealbus"])),
    )?;
    run(
        "build the Rust peer of the E2E interop test",
        locked(cargo().args([
            "build",
            "-p",
            "sealbus",
            "--features",
            "native",
            "--example",
            "e2e_peer",
        ])),
    )?;
    let debug = root().join("target").join("debug");
    let dir = package_dir();
    run(
        "type-check index.d.ts (tsc --strict on tests/types/usage.ts)",
        Command::new(dir.join("node_modules").join(".bin").join("tsc"))
            .args(["-p", "tests/types"])
            .current_dir(&dir),
    )?;
    let mut node = Command::new("node");
    node.args(node_flags())
        .args(["--test", "--test-reporter=tap", "--test-timeout=120000"])
        .arg(dir.join("tests").join("node"))
        .env("SEALBUS_BIN", debug.join("sealbus"))
        .env("SEALBUS_E2E_PEER", debug.join("examples").join("e2e_peer"))
        .env("SEALBUS_REPO", root())
        .current_dir(&dir);
    node_test("JS tests in Node (node --test)", &mut node)?;
    let mut browser = Command::new("node");
    browser
        .args(["--test", "--test-reporter=tap", "--test-timeout=120000"])
        .arg(dir.join("tests").join("browser"))
        .env("SEALBUS_BIN", debug.join("sealbus"))
        .env("SEALBUS_E2E_PEER", debug.join("examples").join("e2e_peer"))
        .env("SEALBUS_REPO", root())
        .current_dir(&dir);
    node_test(
        "JS tests in headless Chromium (playwright-core)",
        &mut browser,
    )
}

/// `cargo xtask bench js [OPTIONS]`: builds the package and a release server, then runs
/// `bench/receive.mjs` (messages/s received by the SDK in Node and headless Chromium, with and
/// without E2E); `args` go to the script (`--seconds N`, `--hosts node,chromium`).
pub(crate) fn bench(args: &[String]) -> Result<()> {
    ensure_toolchain()?;
    build()?;
    let server = build_release_server()?;
    let dir = package_dir();
    run(
        "JS SDK receive benchmark (figures print as they finish)",
        Command::new("node")
            .args(node_flags())
            .arg(dir.join("bench").join("receive.mjs"))
            .args(args)
            .env("SEALBUS_BIN", server)
            .current_dir(&dir),
    )
}
