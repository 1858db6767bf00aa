//! The multi-session scenario: several sessions (virtual brokers) loaded at once.
//!
//! Every other scenario loads one session, whose work the server serialises under that
//! session's lock. This one creates `LOAD_SESSIONS` sessions through the admin API, runs the
//! QoS 1 scenario (1 publisher → 10 acknowledging subscribers) in each at the same time and
//! prints the confirmed publishes per second of each and of all: what a server hosting several
//! busy tenants does with its cores (compare `--server-workers 1` with the default).

use std::time::Duration;

use anyhow::{Result, bail};
use futures_util::future::try_join_all;

use super::conn::{self, Target};
use super::durable;
use super::scenarios::run_prefix;

/// Sessions loaded at once unless `LOAD_SESSIONS` says otherwise.
const DEFAULT_SESSIONS: usize = 4;

/// `LOAD_SESSIONS`, or [`DEFAULT_SESSIONS`].
fn session_count() -> usize {
    std::env::var("LOAD_SESSIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_SESSIONS)
}

/// Creates the sessions, loads them all at once for `duration`, prints the figures and deletes
/// the sessions again.
pub(crate) async fn sessions(target: &Target, duration: Duration) -> Result<()> {
    let Some(token) = target.admin_token.as_deref() else {
        bail!(
            "the `sessions` scenario creates sessions through the admin API: give the server's \
             admin token with --admin-token (or SEALBUS_ADMIN_TOKEN) when using --url"
        );
    };
    let count = session_count();
    let prefix = run_prefix().replace('/', "-");
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    let mut targets = Vec::new();
    let mut outcome = Ok(Vec::new());
    for name in &names {
        let body = serde_json::json!({ "name": name, "password": "load" }).to_string();
        if let Err(err) = admin(target, token, "POST", "/api/sessions", Some(&body)).await {
            outcome = Err(err);
            break;
        }
        targets.push(Target {
            session: name.clone(),
            password: "load".into(),
            ..target.clone()
        });
    }
    if outcome.is_ok() {
        println!("sessions: QoS 1 in {count} sessions at once, 1 -> 10 acking subscribers each");
        let runs = targets.iter().enumerate().map(|(i, target)| async move {
            durable::qos1(target, &format!("session {i}"), 10, duration).await
        });
        outcome = try_join_all(runs).await;
    }
    // The sessions created go whatever happened, so that a failed run leaves a running server
    // as it found it.
    for created in &targets {
        let path = format!("/api/sessions/{}", created.session);
        admin(target, token, "DELETE", &path, None).await?;
    }
    let rates = outcome?;
    println!(
        "sessions: {count} sessions, {:.0} confirmed/s in all ({})",
        rates.iter().sum::<f64>(),
        rates
            .iter()
            .map(|rate| format!("{rate:.0}"))
            .collect::<Vec<_>>()
            .join(" + ")
    );
    Ok(())
}

/// One admin API request; fails unless it succeeded.
async fn admin(
    target: &Target,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<()> {
    let (status, answer) = conn::http(target, method, path, Some(token), body).await?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: HTTP {status} {}", answer.trim());
    }
    Ok(())
}
