//! `ferry tokens new NAME --scopes submit,read` and `ferry tokens hash`:
//! make the api's bearer tokens. The server is configured with hashes only
//! (`FERRY_API_TOKENS`, `FERRY_ADMIN_TOKEN`), so the token is shown once,
//! here, and never stored by Ferry.

use std::io::Read as _;

use anyhow::{Context, bail};
use ferry_common::api_tokens::{self, Scope, Scopes};
use ferry_common::config::vars;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// A new random token: prints the token (give it to the client) and the
    /// entry to add to FERRY_API_TOKENS (or FERRY_ADMIN_TOKEN for `admin`).
    New {
        /// The client's name: quotas, logs and audit use it.
        name: String,
        /// Comma-separated: submit, read, admin.
        #[arg(long, default_value = "submit,read", value_delimiter = ',')]
        scopes: Vec<Scope>,
    },
    /// The SHA-256 of a token read from standard input (to configure an
    /// existing token).
    Hash,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.action {
        Action::New { name, scopes } => {
            let (token, hash) = api_tokens::generate();
            println!("token (shown once; give it to {name}):");
            println!("  {}", token.expose());
            if name == api_tokens::ADMIN_NAME {
                println!("configure:");
                println!("  {}={hash}", vars::FERRY_ADMIN_TOKEN);
            } else {
                let scopes = Scopes::of(&scopes);
                println!(
                    "add to {} (comma-separated entries):",
                    vars::FERRY_API_TOKENS
                );
                println!("  {name}:{scopes}:{hash}");
            }
        }
        Action::Hash => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .context("cannot read the token from standard input")?;
            let token = token.trim();
            if token.is_empty() {
                bail!("no token on standard input");
            }
            println!("{}", api_tokens::hash_hex(token));
        }
    }
    Ok(())
}
