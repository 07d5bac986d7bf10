//! `ferry status`: the dashboard's overview in the terminal: queues,
//! workers, providers' breakers and limits, alerts. Exits non-zero when an
//! alert fires or a breaker is open, so a cron job or a deploy script can
//! use it as a check.

use ferry_common::overview::{self, Overview};

use crate::app;

#[derive(clap::Args)]
pub struct Args {
    /// Print the overview as JSON (what `/admin/api/overview` returns).
    #[arg(long)]
    json: bool,
    /// Also list every partition of a split queue on a row of its own.
    #[arg(long)]
    partitions: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let (config, _guard) = app::init()?;
    let queue = app::job_queue(&config, 2)?;
    let o = overview::read(&queue, &overview::gated_providers(&config)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&o)?);
    } else {
        print!("{}", render(&o));
        if args.partitions {
            for q in o.queues.iter().filter(|q| q.stats.partitions > 1) {
                if let Some(view) = overview::partitions(&queue, &q.stats.queue).await? {
                    print!("{}", render_partitions(&view));
                }
            }
        }
        // This process's configuration, not Redis's: names and scopes only.
        let tokens: Vec<String> = config
            .api_tokens
            .names()
            .map(|(name, scopes)| format!("{name} ({scopes})"))
            .collect();
        println!(
            "\napi tokens: {}",
            if tokens.is_empty() {
                "none configured".to_owned()
            } else {
                tokens.join(", ")
            }
        );
    }
    let open = o
        .providers
        .iter()
        .filter(|p| p.breaker.state == "open")
        .count();
    if !o.firing.is_empty() || open > 0 {
        anyhow::bail!(
            "{} alert(s) firing, {} breaker(s) open",
            o.firing.len(),
            open
        );
    }
    Ok(())
}

/// One queue's partitions as text, one row each.
pub fn render_partitions(view: &overview::PartitionsView) -> String {
    use std::fmt::Write;
    let mut out = format!("\npartitions of {}:\n", view.total.queue);
    for p in &view.partitions {
        let oldest = p
            .oldest_age_secs
            .map_or("-".to_string(), |a| format!("{a:.1}s"));
        let _ = writeln!(
            out,
            "  {:<12} depth {:>7}  pending {:>6}  delayed {:>6}  dead {:>5}  oldest {:>8}",
            p.queue, p.depth, p.pending, p.delayed, p.dead, oldest
        );
    }
    out
}

/// The overview as text.
pub fn render(o: &Overview) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "Ferry at {}\n", o.at.format("%Y-%m-%d %H:%M:%S UTC"));
    let _ = writeln!(
        w,
        "{:<8} {:>5} {:>7} {:>8} {:>9} {:>8} {:>6} {:>9} {:>10} {:>10}",
        "queue",
        "parts",
        "depth",
        "pending",
        "in-flight",
        "delayed",
        "dead",
        "oldest",
        "added",
        "delivered"
    );
    for q in &o.queues {
        let s = &q.stats;
        let oldest = s
            .oldest_age_secs
            .map_or("-".to_string(), |a| format!("{a:.1}s"));
        let _ = writeln!(
            w,
            "{:<8} {:>5} {:>7} {:>8} {:>9} {:>8} {:>6} {:>9} {:>10} {:>10}",
            s.queue,
            s.partitions,
            s.depth,
            s.pending,
            s.in_flight,
            s.delayed,
            s.dead,
            oldest,
            q.totals.added,
            q.totals.delivered
        );
    }
    let _ = writeln!(w, "\nworkers: {}", o.workers.len());
    for wk in &o.workers {
        let _ = writeln!(
            w,
            "  {}  queues {}  in flight {}/{}  since {}",
            wk.id, wk.queues, wk.in_flight, wk.concurrency, wk.started_at
        );
    }
    let _ = writeln!(w, "\nproviders:");
    if o.providers.is_empty() {
        let _ = writeln!(w, "  none gated (FERRY_PROVIDERS)");
    }
    for p in &o.providers {
        let b = &p.breaker;
        let limit = |n: u32| {
            if n == 0 {
                "-".to_string()
            } else {
                n.to_string()
            }
        };
        let _ = writeln!(
            w,
            "  {:<10} breaker {:<9} in flight {:<3} rpm {:<6} tpm {:<8} concurrency {}{}",
            b.provider,
            b.state,
            p.in_flight,
            limit(p.requests_per_minute),
            limit(p.tokens_per_minute),
            limit(p.max_concurrency),
            b.open_until
                .as_deref()
                .map(|u| format!("  until {u} ({})", b.reason.as_deref().unwrap_or("")))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(w, "\nalerts:");
    if o.firing.is_empty() {
        let _ = writeln!(w, "  ok: none firing");
    }
    for a in &o.firing {
        let _ = writeln!(
            w,
            "  FIRING {} since {} on {} (value {:.3}, threshold {})",
            a.alert, a.at, a.process, a.value, a.threshold
        );
    }
    if !o.recent_alerts.is_empty() {
        let _ = writeln!(w, "  recent:");
        for a in o.recent_alerts.iter().take(5) {
            let _ = writeln!(w, "    {} {} {} on {}", a.at, a.alert, a.state, a.process);
        }
    }
    out
}
