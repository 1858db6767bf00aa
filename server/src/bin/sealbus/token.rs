//! `sealbus token`: mint a client token for a session whose `token_secret` is in the
//! configuration file.

use std::path::PathBuf;

use anyhow::Context as _;
use sealbus_server::auth::{Claims, sign_token};
use sealbus_server::config::Config;

/// Options of `sealbus token`.
#[derive(clap::Args)]
pub(crate) struct TokenArgs {
    /// TOML configuration file holding the session's `token_secret`.
    #[arg(long, env = "SEALBUS_CONFIG")]
    config: PathBuf,
    /// Session name.
    #[arg(long)]
    session: String,
    /// Client id the token grants (the `sub` claim).
    #[arg(long)]
    client_id: String,
    /// Validity in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Filter the client may publish to (repeatable; absent: everything).
    #[arg(long = "pub")]
    publish: Vec<String>,
    /// Filter the client may subscribe within (repeatable; absent: everything).
    #[arg(long = "sub")]
    subscribe: Vec<String>,
}

pub(crate) fn run(args: TokenArgs) -> anyhow::Result<()> {
    let config = Config::from_file(&args.config)?;
    let session = config
        .sessions
        .iter()
        .find(|s| s.name == args.session)
        .with_context(|| format!("no session `{}` in the configuration", args.session))?;
    let secret = session
        .token_secret
        .as_deref()
        .with_context(|| format!("session `{}` has no token_secret", args.session))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let claims = Claims {
        sub: args.client_id,
        exp: now.as_secs() + args.ttl,
        publish: (!args.publish.is_empty()).then_some(args.publish),
        sub_filters: (!args.subscribe.is_empty()).then_some(args.subscribe),
    };
    println!("{}", sign_token(&claims, secret.as_bytes())?);
    Ok(())
}
