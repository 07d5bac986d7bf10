//! `ferry breaker list|reset|open <provider>`: the fleet's shared circuit
//! breakers, one per provider.

use std::time::Duration;

use anyhow::bail;
use ferry_common::fleet::Breakers;

use crate::app;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Every provider of the chain: state, until when, why.
    List,
    /// Close a breaker and forget its failure window.
    Reset { provider: String },
    /// Force a breaker open: calls fall over to the next provider.
    Open {
        provider: String,
        /// How long it stays open, in seconds.
        #[arg(long = "for", default_value_t = 600)]
        for_secs: u64,
        #[arg(long, default_value = "forced open by an operator")]
        reason: String,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (config, _guard) = app::init()?;
    let queue = app::job_queue(&config, 2)?;
    let breakers = Breakers::new(queue.store().clone());
    let chain: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    let known = |p: &str| -> anyhow::Result<()> {
        if !chain.contains(&p) {
            bail!("provider {p:?} is not in the chain ({})", chain.join(", "));
        }
        Ok(())
    };
    match args.action {
        Action::List => {
            if chain.is_empty() {
                println!("no providers configured (FERRY_PROVIDERS)");
            }
            println!(
                "{:<12} {:<10} {:<27} reason",
                "provider", "state", "open until"
            );
            for b in breakers.list(&chain).await? {
                println!(
                    "{:<12} {:<10} {:<27} {}{}",
                    b.provider,
                    b.state,
                    b.open_until.as_deref().unwrap_or("-"),
                    b.reason.as_deref().unwrap_or(""),
                    b.slowed_until
                        .map(|s| format!(" (slowed by a 429 until {s})"))
                        .unwrap_or_default()
                );
            }
        }
        Action::Reset { provider } => {
            known(&provider)?;
            breakers.reset(&provider).await?;
            println!("{provider}: closed");
        }
        Action::Open {
            provider,
            for_secs,
            reason,
        } => {
            known(&provider)?;
            breakers
                .force_open(&provider, Duration::from_secs(for_secs), &reason)
                .await?;
            println!("{provider}: open for {for_secs} s");
        }
    }
    Ok(())
}
