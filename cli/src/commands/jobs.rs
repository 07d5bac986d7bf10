//! `ferry jobs show ID`: one job's record, notes and timeline, the same
//! lookup as the dashboard's job page (`common::queue::lookup`), as text or
//! `--json`. An unknown or garbled id ends with one line and a non-zero exit.

use std::fmt::Write as _;

use ferry_common::queue::lookup::JobLookup;

use crate::app;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// A job's record, its handler's notes and its timeline (texts cut).
    Show {
        /// `wechat:<ULID>`, `wechat:3:<ULID>`, `batch:<ULID>`...
        job_id: String,
        /// Print the lookup as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let Action::Show { job_id, json } = args.action;
    let (config, _guard) = app::init()?;
    let queue = app::job_queue(&config, 2)?;
    let found = queue.lookup(&job_id).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        print!("{}", render(&found));
    }
    Ok(())
}

/// The lookup as text: the record's fields, the timeline, the notes, the
/// payload and result (pretty JSON).
pub fn render(l: &JobLookup) -> String {
    let r = &l.record;
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
    };
    let mut out = String::new();
    let _ = writeln!(out, "job       {}", r.id);
    let _ = writeln!(out, "kind      {}", r.kind);
    let _ = writeln!(out, "state     {}", r.state.as_str());
    let _ = writeln!(out, "attempts  {} / {}", r.attempts, r.max_attempts);
    let _ = writeln!(out, "created   {}", r.created_at.to_rfc3339());
    let _ = writeln!(out, "updated   {}", r.updated_at.to_rfc3339());
    if let Some(due) = r.due_at {
        let _ = writeln!(out, "due       {}", due.to_rfc3339());
    }
    let _ = writeln!(out, "worker    {}", r.worker.as_deref().unwrap_or("-"));
    let _ = writeln!(out, "error     {}", r.last_error.as_deref().unwrap_or("-"));
    out.push_str("\ntimeline\n");
    for e in &l.timeline {
        let attempt = e.attempt.map(|n| format!(" #{n}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<29} {}{}  {}",
            time(e.at),
            e.kind.as_str(),
            attempt,
            e.detail
        );
    }
    out.push_str("\nnotes\n");
    if l.notes.is_empty() {
        out.push_str("  none\n");
    }
    for (name, value) in &l.notes {
        let _ = writeln!(out, "  {name}: {value}");
    }
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let _ = writeln!(out, "\npayload\n{}", pretty(&r.payload));
    if let Some(result) = &r.result {
        let _ = writeln!(out, "\nresult\n{}", pretty(result));
    }
    out
}
