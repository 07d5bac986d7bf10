//! `ferry simulate "你好"`: play WeChat against a running Ferry.
//!
//! Builds the text push exactly as WeChat does (XML with CDATA, a fresh
//! MsgId), signs it with the token (sha1 of the sorted token, timestamp and
//! nonce), posts it, and shows the reply when it arrives (through the dev
//! api of `ferry dev`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_common::config::vars;
use ferry_common::wechat;
use rand::Rng;

use crate::app;

#[derive(clap::Args)]
pub struct Args {
    /// What the user writes.
    text: String,
    /// Where Ferry's api listens.
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    url: String,
    /// The WeChat token (default: WECHAT_TOKEN, else the dev token).
    #[arg(long)]
    token: Option<String>,
    /// The simulated user's openid.
    #[arg(long, default_value = "o_simulated_user")]
    openid: String,
    /// How long to wait for the reply, in seconds.
    #[arg(long, default_value_t = 30)]
    wait: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let token = args
        .token
        .or_else(|| {
            std::env::var(vars::WECHAT_TOKEN)
                .ok()
                .filter(|t| !t.is_empty())
        })
        .unwrap_or_else(|| app::DEV_WECHAT_TOKEN.to_owned());
    let mut rng = rand::thread_rng();
    let timestamp = chrono::Utc::now().timestamp();
    let ts = timestamp.to_string();
    let nonce = rng.gen_range(100_000_000u64..10_000_000_000).to_string();
    let msg_id: i64 = rng.gen_range(1..i64::MAX);
    let xml = wechat::text_message_xml(
        "gh_ferry_simulator",
        &args.openid,
        timestamp,
        &args.text,
        msg_id,
    );
    let signature = wechat::sign(&[&token, &ts, &nonce]);

    let http = reqwest::Client::new();
    let base = args.url.trim_end_matches('/');
    let started = Instant::now();
    let response = http
        .post(format!("{base}/wechat"))
        .query(&[
            ("signature", signature.as_str()),
            ("timestamp", &ts),
            ("nonce", &nonce),
            ("openid", &args.openid),
        ])
        .header("content-type", "text/xml")
        .body(xml)
        .send()
        .await
        .with_context(|| format!("cannot reach Ferry at {base} (is `ferry dev` running?)"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    println!("you  -> {}", args.text);
    println!(
        "ferry: HTTP {} {:?} after {} ms",
        status.as_u16(),
        body,
        started.elapsed().as_millis()
    );
    if !status.is_success() {
        bail!("Ferry refused the message (wrong --token?)");
    }

    let deadline = Instant::now() + Duration::from_secs(args.wait);
    let mut got_any = false;
    while Instant::now() < deadline {
        // After the first part, wait briefly for the rest.
        let wait_ms = if got_any {
            300
        } else {
            deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64
        };
        let response = http
            .get(format!("{base}/dev/replies/{}", args.openid))
            .query(&[("wait_ms", wait_ms)])
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            println!("(this Ferry sends replies through WeChat's API; see the worker's logs)");
            return Ok(());
        }
        let replies: serde_json::Value = response.json().await?;
        let replies = replies["replies"].as_array().cloned().unwrap_or_default();
        if replies.is_empty() {
            if got_any {
                return Ok(());
            }
            continue;
        }
        for reply in replies {
            println!(
                "bot  <- {} ({} ms)",
                reply.as_str().unwrap_or_default(),
                started.elapsed().as_millis()
            );
        }
        got_any = true;
    }
    if !got_any {
        bail!("no reply within {} s (is a worker running?)", args.wait);
    }
    Ok(())
}
