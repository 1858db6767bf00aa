//! The steps the tasks are made of: installing prerequisites and running cargo.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of this crate's directory).
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(root());
    cmd
}

/// Runs a command, printing it first and its duration after; fails on a non-zero exit.
pub(crate) fn run(title: &str, cmd: &mut Command) -> Result<()> {
    println!("\n==> {title}");
    println!("    $ {}", describe(cmd));
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    let took = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("step `{title}` failed ({status}) after {took:.1} s");
    }
    println!("    ok ({took:.1} s)");
    Ok(())
}

pub(crate) fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Installs a rustup component unless it is there already.
fn ensure_component(component: &str) -> Result<()> {
    let output = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output();
    let installed = match output {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|line| line.starts_with(component)),
        // No rustup: trust that the toolchain has what it needs.
        _ => return Ok(()),
    };
    if !installed {
        run(
            &format!("install rustup component {component}"),
            Command::new("rustup").args(["component", "add", component]),
        )?;
    }
    Ok(())
}

pub(crate) fn locked(cmd: &mut Command) -> &mut Command {
    if in_ci() {
        cmd.arg("--locked");
    }
    cmd
}

/// `cargo xtask ci`: every check and test.
pub(crate) fn ci() -> Result<()> {
    let started = Instant::now();
    ensure_component("rustfmt")?;
    ensure_component("clippy")?;
    run(
        "format check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    run(
        "clippy (all crates, all targets, all features, -D warnings)",
        locked(cargo().args(["clippy", "--workspace", "--all-targets", "--all-features"]))
            .args(["--", "-D", "warnings"]),
    )?;
    run(
        "tests (all crates, all features)",
        locked(cargo().args(["test", "--workspace", "--all-features"])),
    )?;
    crate::wasm::ci()?;
    run(
        "docs build (rustdoc warnings are errors)",
        locked(cargo().args(["doc", "--workspace", "--no-deps", "--all-features"]))
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    println!(
        "\nci: all steps passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds the release `sealbus` binary and returns its path.
pub(crate) fn build_release_server() -> Result<PathBuf> {
    run(
        "build the server (release)",
        cargo().args([
            "build",
            "--release",
            "--package",
            "sealbus-server",
            "--bin",
            "sealbus",
        ]),
    )?;
    Ok(root().join("target").join("release").join("sealbus"))
}

/// The SQLite store of `cargo xtask serve`: under `target/`, out of the working tree.
pub(crate) fn demo_store() -> PathBuf {
    root().join("target").join("sealbus-demo.db")
}

/// `cargo xtask serve`: build and start the server with a demo session.
pub(crate) fn serve(args: &[String]) -> Result<()> {
    let binary = build_release_server()?;
    println!("\n==> start the server with a demo session (Ctrl-C stops it)");
    let mut cmd = Command::new(&binary);
    cmd.arg("serve").arg("--demo");
    // State goes to an SQLite file under target/ unless the arguments or the environment
    // choose a store.
    let chosen = args
        .iter()
        .any(|a| a == "--memory" || a == "--store" || a.starts_with("--store=") || a == "--config")
        || std::env::var_os("SEALBUS_STORE").is_some()
        || std::env::var_os("SEALBUS_MEMORY").is_some();
    if !chosen {
        let store = demo_store();
        println!(
            "    state is kept in {} (delete it to start afresh; --memory keeps nothing)",
            store.display()
        );
        cmd.arg("--store").arg(store);
    }
    // The web console needs the built JS package (`cargo xtask wasm`).
    let package = root().join("bindings").join("wasm");
    if package.join("dist").join("web").exists() && !args.iter().any(|a| a == "--console") {
        cmd.arg("--console").arg(&package);
    }
    let status = cmd
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("could not start {}", binary.display()))?;
    if !status.success() {
        bail!("the server exited with {status}");
    }
    Ok(())
}

/// `cargo xtask bench [FILTER]`: run the benchmarks with a short measurement.
pub(crate) fn bench(args: &[String]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["bench", "--workspace", "--"]);
    cmd.args(["--warm-up-time", "1", "--measurement-time", "3"]);
    cmd.args(args);
    run("benchmarks (figures print as they finish)", &mut cmd)
}
