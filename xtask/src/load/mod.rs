//! `cargo xtask load`: the server load tool.
//!
//! Starts a release `sealbus serve --demo` as a child process (or uses `--url`), then runs the
//! scenarios of the server issue and prints their figures: fan-out 1 → 100 with 128-byte QoS 0
//! payloads (deliveries/s, latency percentiles from a timestamp in the payload, then again at
//! half that rate and at half the 500 k deliveries/s target), 100 → 100,
//! publish_with_ack round trips/s with 10 subscribers, QoS 1 confirmed publishes/s with 10
//! acking subscribers (`qos1`, the durability issue), and the server's RSS per idle
//! authenticated connection with one subscription. The `client` scenario measures the SDK
//! instead: publishes/s and received messages/s of one `sealbus::Client`. Figures are printed,
//! never asserted.

mod acker;
mod client;
mod conn;
mod durable;
mod scenarios;
mod tenants;
#[cfg(test)]
mod tests;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use conn::Target;

const HELP: &str = "\
cargo xtask load: measure the server, or one client (--scenario client)

USAGE:
    cargo xtask load [OPTIONS]

OPTIONS:
    --scenario NAME    fanout | many | ack | qos1 | sessions | idle | client | all
                       (default: all)
    --seconds N        measurement time per scenario (default: 5; `client` runs eight
                       measurements of N seconds each)
    --store KIND       sqlite | memory: the store of the started server (default: memory
                       for --scenario client, sqlite otherwise)
    --connections N    idle connections for `idle` (default: 10000)
    --server-workers N tokio worker threads of the started server (its TOKIO_WORKER_THREADS;
                       default: one per core)
    --url URL          use a running server instead of starting one
                       (with --session NAME --password TEXT; default demo/demo)
    --admin-token T    that server's admin API token, for `sessions` (default:
                       SEALBUS_ADMIN_TOKEN)
    -h, --help         show this text

Without --url the tool builds and starts `target/release/sealbus serve --demo` on a free
loopback port, with a fresh SQLite store in target/sealbus-load.db (the default store, full
sync) or in memory (--store memory), and stops it afterwards. Load generator and server share this
machine's cores; the figures include that.

With `all` (the default) `idle` runs first, on the fresh server: after the others, the memory
their traffic left with the server would hide what the connections take.

`fanout` (1 -> 100) and `many` (100 -> 100) search for the highest publish rate delivered without
a loss, then measure latency at half of it and at half the server issue's target of 500 000
deliveries/s. `qos1` fails when a subscriber missed a confirmed message, `ack` when a round trip
timed out.

LOAD_WINDOW sets the requests in flight of `ack` (publish_with_ack, default 64), `qos1` (default
256) and `client` (default 256). LOAD_WORKERS sets the load tool's own worker threads (default:
one per core). LOAD_BATCH=0 makes the tool's raw connections read and send one frame per
WebSocket message (by default they announce `hello.batch` and join what they send, as the SDKs
do; docs/PROTOCOL.md §1). LOAD_RATE=N makes `fanout` and `many` skip the search for the highest
lossless rate and measure N publishes/s (in all) for twice --seconds: latency figures of
two builds are then taken at the same rate.

The `sessions` scenario creates LOAD_SESSIONS sessions (default 4) through the admin API, runs
`qos1` in all of them at once and prints each one's and the total confirmed publishes/s (the
server's lock is per session: this is the load that several cores can share); it deletes the
sessions afterwards.

The `client` scenario measures the Rust SDK (`sealbus::Client`) over a real socket, 128-byte
payloads, plain and sealed: publishes/s of one client (QoS 0 and QoS 1, a window of publishes
in flight; LOAD_WINDOW, default 256) and messages/s received (and opened) by one subscribing
client fed by a raw-frame publisher that stays at most LOAD_WINDOW messages ahead of it.
";

struct Options {
    scenario: String,
    seconds: u64,
    connections: usize,
    /// `--store`: whether a started server keeps its state in memory.
    memory: Option<bool>,
    /// `--server-workers`: the started server's tokio worker threads.
    server_workers: Option<usize>,
    target: Option<Target>,
}

/// Requests in flight for a scenario: `LOAD_WINDOW` when set, `default` otherwise.
pub(crate) fn load_window(default: u64) -> u64 {
    std::env::var("LOAD_WINDOW")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(default)
}

/// `LOAD_RATE`: a fixed publish rate for the fan-out scenarios, if set to a positive number.
pub(crate) fn load_rate() -> Option<f64> {
    std::env::var("LOAD_RATE")
        .ok()
        .and_then(|r| r.parse::<f64>().ok())
        .filter(|r| r.is_finite() && *r > 0.0)
}

fn parse(args: &[String]) -> Result<Option<Options>> {
    let mut options = Options {
        scenario: "all".into(),
        seconds: 5,
        connections: 10_000,
        memory: None,
        server_workers: None,
        target: None,
    };
    let (mut url, mut session, mut password) = (None, "demo".to_owned(), "demo".to_owned());
    let mut admin_token = std::env::var("SEALBUS_ADMIN_TOKEN").ok();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--scenario" => options.scenario = value()?,
            "--seconds" => options.seconds = value()?.parse().context("--seconds")?,
            "--connections" => options.connections = value()?.parse().context("--connections")?,
            "--store" => {
                options.memory = match value()?.as_str() {
                    "memory" => Some(true),
                    "sqlite" => Some(false),
                    other => bail!("--store is sqlite or memory, not `{other}`"),
                }
            }
            "--server-workers" => {
                let workers: usize = value()?.parse().context("--server-workers")?;
                if workers == 0 {
                    bail!("--server-workers must be at least 1");
                }
                options.server_workers = Some(workers);
            }
            "--url" => url = Some(value()?),
            "--session" => session = value()?,
            "--password" => password = value()?,
            "--admin-token" => admin_token = Some(value()?),
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            other => bail!("unknown option `{other}` (see --help)"),
        }
    }
    if url.is_some() && options.server_workers.is_some() {
        bail!("--server-workers sets up the server the tool starts; it cannot change --url's");
    }
    options.target = url.map(|url| Target {
        url,
        session,
        password,
        admin_token,
    });
    Ok(Some(options))
}

/// A server child process, killed on drop.
struct ServerProcess {
    child: Child,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sealbus serve --demo` on a free loopback port, in memory or with a fresh SQLite store.
fn start_server(memory: bool, workers: Option<usize>) -> Result<(ServerProcess, Target)> {
    let binary = super::steps::build_release_server()?;
    let mut command = Command::new(&binary);
    command.args(["serve", "--demo", "--listen", "127.0.0.1:0"]);
    // Known to the tool (the `sessions` scenario creates sessions), passed by environment so
    // that it does not show in the process list.
    let admin_token = format!("load-{:x}", std::process::id() as u64 ^ random_bits());
    command.env("SEALBUS_ADMIN_TOKEN", &admin_token);
    match workers {
        Some(workers) => command.env("TOKIO_WORKER_THREADS", workers.to_string()),
        None => command.env_remove("TOKIO_WORKER_THREADS"),
    };
    if memory {
        command.arg("--memory");
    } else {
        // The default store, started empty each run, under target/ (out of the working tree).
        let store = super::steps::root().join("target").join("sealbus-load.db");
        for suffix in ["", "-wal", "-shm"] {
            let mut file = store.clone().into_os_string();
            file.push(suffix);
            match std::fs::remove_file(&file) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(err).with_context(|| format!("removing {}", store.display()));
                }
                _ => {}
            }
        }
        command.arg("--store").arg(&store);
    }
    let mut child = command
        .env_remove("SEALBUS_MEMORY")
        .env_remove("SEALBUS_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting target/release/sealbus")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let server = ServerProcess { child };
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let Some(line) = lines.next().transpose()? else {
            bail!("the server exited before printing its address");
        };
        if let Some(start) = line.find("ws://") {
            let url: String = line[start..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            break url;
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let target = Target {
        url,
        session: "demo".into(),
        password: "demo".into(),
        admin_token: Some(admin_token),
    };
    Ok((server, target))
}

/// Bits that differ from run to run (the clock's nanoseconds and a hasher's random keys): the
/// started server's admin token is not meant to be guessed by anything else on the machine.
fn random_bits() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    RandomState::new().hash_one(nanos)
}

/// Builds the release xtask and runs `load` with it.
fn rerun_optimised(args: &[String]) -> Result<()> {
    let root = super::steps::root();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--package", "xtask"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("building the optimised load tool failed");
    }
    let status = Command::new(root.join("target/release/xtask"))
        .arg("load")
        .args(args)
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("the load tool failed ({status})");
    }
    Ok(())
}

/// Resident set size of a process in KiB, from `/proc`.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `cargo xtask load [OPTIONS]`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let Some(options) = parse(args)? else {
        return Ok(());
    };
    if cfg!(debug_assertions) {
        // `cargo xtask` is a debug build; an unoptimised load generator would measure itself.
        return rerun_optimised(args);
    }
    let (server, target) = match options.target.clone() {
        Some(target) => (None, target),
        None => {
            let memory = options.memory.unwrap_or(options.scenario == "client");
            let (server, target) = start_server(memory, options.server_workers)?;
            (Some(server), target)
        }
    };
    let pid = server.as_ref().map(|s| s.child.id());
    let workers = match options.server_workers {
        Some(workers) => format!("{workers} worker threads"),
        None => "one worker thread per core".into(),
    };
    match &server {
        Some(_) => println!("load: server {} (pid {pid:?}, {workers})", target.url),
        None => println!("load: server {}", target.url),
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = std::env::var("LOAD_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
    {
        runtime.worker_threads(workers);
    }
    let runtime = runtime.enable_all().build()?;
    let seconds = Duration::from_secs(options.seconds);
    let (scenario, connections) = (options.scenario, options.connections);
    let wanted = move |name: &str| scenario == "all" || scenario == name;
    // On a worker thread rather than in `block_on` on this one: the scenarios' own connections
    // (a publisher's) are then woken on the thread that polled their socket, not through a
    // wake-up of another thread per frame.
    let scenarios = async move {
        // First: its figure is what the connections add to the server's memory, which the
        // other scenarios' traffic would have left high (most of it kept for reuse).
        if wanted("idle") {
            scenarios::idle(&target, connections, || pid.and_then(rss_kib)).await?;
        }
        if wanted("fanout") {
            scenarios::fanout_search(&target, 1, 100, seconds, 250.0).await?;
        }
        if wanted("many") {
            scenarios::fanout_search(&target, 100, 100, seconds, 250.0).await?;
        }
        if wanted("ack") {
            scenarios::acks(&target, 10, seconds).await?;
        }
        if wanted("qos1") {
            durable::qos1(&target, "server's store", 10, seconds).await?;
        }
        if wanted("sessions") {
            tenants::sessions(&target, seconds).await?;
        }
        if wanted("client") {
            client::run(&target, seconds).await?;
        }
        anyhow::Ok(())
    };
    runtime.block_on(runtime.spawn(scenarios))??;
    drop(server);
    Ok(())
}
