//! The dashboard's HTML. maud escapes every interpolated value, so job
//! payloads, error texts and reasons can never become markup. The one
//! script is a constant (`LIVE_JS`).

use axum::http::StatusCode;
use ferry_common::alerts::RuleStatus;
use ferry_common::batch::BatchInfo;
use ferry_common::overview::{Overview, PartitionsView};
use ferry_common::queue::browse::{Held, Waiting};
use ferry_common::queue::inspect::DeadLetter;
use ferry_common::queue::lookup::JobLookup;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::session::Session;
use crate::security::SecurityCounts;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
header{background:#1d3557;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center}\
header a{color:#fff}header form{margin-left:auto}main{padding:1em 1.2em}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
th{background:#f1f1f1}.num{text-align:right;font-variant-numeric:tabular-nums}\
.open,.firing{color:#b00020;font-weight:bold}.half_open{color:#b36b00;font-weight:bold}.closed,.ok{color:#2e7d32}\
form.inline{display:inline}pre{background:#f6f6f6;padding:.6em;overflow:auto;max-width:100%}";

/// Polls the overview every 2 s: queue counts, rates from the lifetime
/// totals, batches' progress, worker count, firing alerts.
const LIVE_JS: &str = r#"
(function () {
  let last = null;
  async function poll() {
    try {
      const r = await fetch('/admin/api/overview', {credentials: 'same-origin'});
      if (r.status === 401) { location.reload(); return; }
      if (!r.ok) return;
      const o = await r.json();
      const now = Date.now();
      for (const q of o.queues) {
        for (const f of ['partitions', 'depth', 'pending', 'in_flight', 'delayed', 'dead']) {
          const el = document.querySelector(`[data-q="${q.queue}"][data-f="${f}"]`);
          if (el) el.textContent = q[f];
        }
        const age = document.querySelector(`[data-q="${q.queue}"][data-f="oldest"]`);
        if (age) age.textContent = q.oldest_age_secs == null ? '-' : q.oldest_age_secs.toFixed(1) + ' s';
        if (last && last.queues[q.queue]) {
          const secs = (now - last.at) / 1000;
          const prev = last.queues[q.queue];
          const set = (f, v) => {
            const el = document.querySelector(`[data-q="${q.queue}"][data-f="${f}"]`);
            if (el) el.textContent = (Math.max(0, v) / secs).toFixed(1);
          };
          set('in_rate', q.added - prev.added);
          set('out_rate', q.delivered - prev.delivered);
        }
      }
      for (const b of (o.batches || [])) {
        const c = b.counts;
        const done = c.succeeded + c.failed + c.cancelled;
        const cells = {status: b.status, queued: c.queued, running: c.running, succeeded: c.succeeded,
          failed: c.failed, cancelled: c.cancelled,
          progress: c.total ? `${Math.floor(done * 100 / c.total)}% (${done}/${c.total})` : '-'};
        for (const [f, v] of Object.entries(cells)) {
          const el = document.querySelector(`[data-b="${b.id}"][data-f="${f}"]`);
          if (el) el.textContent = v;
        }
      }
      const w = document.getElementById('workers-live');
      if (w) w.textContent = o.workers.length;
      const f = document.getElementById('alerts-firing');
      if (f) {
        f.textContent = o.firing.length ? o.firing.map(a => a.alert).join(', ') : 'none';
        f.className = o.firing.length ? 'firing' : 'ok';
      }
      const u = document.getElementById('updated');
      if (u) u.textContent = new Date(o.at).toLocaleTimeString();
      last = {at: now, queues: Object.fromEntries(o.queues.map(q => [q.queue, q]))};
    } catch (e) { /* keep the last numbers */ }
  }
  poll();
  setInterval(poll, 2000);
})();
"#;

fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // `same-origin`, not `no-referrer`: with the latter Chromium sends
                // `Origin: null` on our own forms, which the CSRF check refuses.
                meta name="referrer" content="same-origin";
                title { (title) " · Ferry" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "Ferry" }
                    @if let Some(s) = session {
                        a href="/admin" { "Overview" }
                        a href="/admin/charts" { "History" }
                        a href="/admin/dlq/wechat" { "Dead letters: wechat" }
                        a href="/admin/dlq/batch" { "batch" }
                        form method="post" action="/admin/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span { (s.principal) " " }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A signed-in page around `body` (for pages rendered elsewhere, such as
/// [`super::charts`]).
pub(super) fn layout_page(title: &str, s: &Session, body: Markup) -> Markup {
    layout(title, Some(s), body)
}

fn csrf(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

pub fn sign_in(notice: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(n) = notice { p.firing { (n) } }
            form method="post" action="/admin/login" {
                label for="token" { "Admin token " }
                input #token type="password" name="token" autocomplete="current-password" required;
                " "
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub fn error_page(status: StatusCode, message: &str) -> Markup {
    layout(
        status.canonical_reason().unwrap_or("Error"),
        None,
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p { (message) }
            p { a href="/admin" { "Back to the dashboard" } }
        },
    )
}

/// What the overview page shows besides the [`Overview`].
pub struct Local<'a> {
    pub rules: &'a [RuleStatus],
    pub security: SecurityCounts,
    pub limits: &'a [(String, String)],
}

pub fn overview(o: &Overview, batches: &[BatchInfo], local: &Local<'_>, s: &Session) -> Markup {
    layout(
        "Overview",
        Some(s),
        html! {
            h1 { "Overview" }
            (job_lookup_form())
            p { "Live: updated " span #updated { (o.at.format("%H:%M:%S")) } " (every 2 s). Firing: "
                span #alerts-firing class=(if o.firing.is_empty() { "ok" } else { "firing" }) {
                    @if o.firing.is_empty() { "none" }
                    @else { @for (i, a) in o.firing.iter().enumerate() { @if i > 0 { ", " } (a.alert) } }
                }
            }
            p { a href="/admin/charts" { "History: charts of the last hour and 24 h" } }
            h2 { "Queues" }
            table #queues {
                tr { th { "queue" } th { "partitions" } th { "depth" } th { "pending" } th { "in flight" } th { "delayed" }
                     th { "dead" } th { "oldest" } th { "in /s" } th { "out /s" } }
                @for q in &o.queues {
                    @let name = &q.stats.queue;
                    tr {
                        td { (name) }
                        td.num { a data-q=(name) data-f="partitions" href={ "/admin/queues/" (name) "/partitions" } { (q.stats.partitions) } }
                        td.num data-q=(name) data-f="depth" { (q.stats.depth) }
                        td.num { a data-q=(name) data-f="pending" href={ "/admin/held/" (name) } { (q.stats.pending) } }
                        td.num data-q=(name) data-f="in_flight" { (q.stats.in_flight) }
                        td.num { a data-q=(name) data-f="delayed" href={ "/admin/retries/" (name) } { (q.stats.delayed) } }
                        td.num { a data-q=(name) data-f="dead" href={ "/admin/dlq/" (name) } { (q.stats.dead) } }
                        td.num data-q=(name) data-f="oldest" { (age(q.stats.oldest_age_secs)) }
                        td.num data-q=(name) data-f="in_rate" { "-" }
                        td.num data-q=(name) data-f="out_rate" { "-" }
                    }
                }
            }
            h2 { "Workers (" span #workers-live { (o.workers.len()) } ")" }
            table {
                tr { th { "worker" } th { "queues" } th { "in flight / concurrency" } th { "started" } }
                @for w in &o.workers {
                    tr { td { (w.id) } td { (w.queues) } td.num { (w.in_flight) " / " (w.concurrency) } td { (w.started_at) } }
                }
            }
            h2 { "Batches" }
            table #batches {
                tr { th { "batch" } th { "key" } th { "status" } th { "progress" } th { "queued" } th { "running" }
                     th { "succeeded" } th { "failed" } th { "cancelled" } th { "total" } th { "created" } }
                @for b in batches {
                    @let c = &b.counts;
                    tr data-b=(b.id) {
                        td { (b.id) } td { (b.owner) }
                        td data-b=(b.id) data-f="status" { (b.status) }
                        td.num data-b=(b.id) data-f="progress" { (progress(c.finished(), c.total)) }
                        td.num data-b=(b.id) data-f="queued" { (c.queued) }
                        td.num data-b=(b.id) data-f="running" { (c.running) }
                        td.num data-b=(b.id) data-f="succeeded" { (c.succeeded) }
                        td.num data-b=(b.id) data-f="failed" { (c.failed) }
                        td.num data-b=(b.id) data-f="cancelled" { (c.cancelled) }
                        td.num { (c.total) }
                        td { (b.created_at.format("%Y-%m-%d %H:%M:%S")) }
                    }
                }
            }
            @if batches.is_empty() { p { "No batch submitted lately (POST /v1/batches, ferry batch submit)." } }
            h2 { "Providers: breakers and limits" }
            table #breakers {
                tr { th { "provider" } th { "breaker" } th { "open until" } th { "reason" } th { "in flight" }
                     th { "req/min" } th { "tokens/min" } th { "concurrency" } th { "actions" } }
                @for p in &o.providers {
                    @let b = &p.breaker;
                    tr data-provider=(b.provider) {
                        td { (b.provider) }
                        td class=(b.state) data-f="state" { (b.state) }
                        td { (b.open_until.as_deref().unwrap_or("-")) }
                        td { (b.reason.as_deref().unwrap_or("")) @if let Some(s) = &b.slowed_until { " (slowed by a 429 until " (s) ")" } }
                        td.num { (p.in_flight) }
                        td.num { (limit(p.requests_per_minute)) }
                        td.num { (limit(p.tokens_per_minute)) }
                        td.num { (limit(p.max_concurrency)) }
                        td {
                            form.inline method="post" action={ "/admin/breakers/" (b.provider) "/reset" } {
                                (csrf(s)) button type="submit" { "Reset" }
                            }
                            " "
                            form.inline method="post" action={ "/admin/breakers/" (b.provider) "/open" } {
                                (csrf(s))
                                input type="number" name="seconds" value="600" min="1" max="86400" style="width:5em";
                                " s " button type="submit" { "Force open" }
                            }
                        }
                    }
                }
            }
            @if o.providers.is_empty() { p { "No gated provider in the chain (FERRY_PROVIDERS)." } }
            h2 { "Other limiters" }
            table {
                @for (name, value) in local.limits { tr { th { (name) } td { (value) } } }
            }
            h2 { "Alerts" }
            p { "This api process's rules (last 60 s of /wechat):" }
            table {
                tr { th { "alert" } th { "state" } th { "value" } th { "threshold" } th { "since" } }
                @for r in local.rules {
                    tr {
                        td { (r.alert.name()) br; small { (r.summary) } }
                        @if r.firing { td.firing { "firing" } } @else { td.ok { "ok" } }
                        td.num { @match r.value { Some(v) => { (format!("{v:.3}")) } None => { "-" } } }
                        td.num { (r.threshold) }
                        td { (r.since.map(|t| t.to_rfc3339()).unwrap_or_default()) }
                    }
                }
            }
            p { "Recent alert events of every api process:" }
            table {
                tr { th { "at" } th { "alert" } th { "state" } th { "value" } th { "threshold" } th { "process" } }
                @for a in &o.recent_alerts {
                    tr { td { (a.at) } td { (a.alert) } td class=(a.state) { (a.state) }
                         td.num { (format!("{:.3}", a.value)) } td.num { (a.threshold) } td { (a.process) } }
                }
            }
            @if o.recent_alerts.is_empty() { p { "None." } }
            h2 { "Security events (this api process)" }
            table {
                tr { th { "bad signature" } th { "replay" } th { "rate limited" } th { "forbidden XML" }
                     th { "bad token" } th { "forbidden" } }
                tr { td.num { (local.security.bad_signature) } td.num { (local.security.replay) }
                     td.num { (local.security.rate_limited) } td.num { (local.security.forbidden_xml) }
                     td.num { (local.security.bad_token) } td.num { (local.security.forbidden) } }
            }
            script { (PreEscaped(LIVE_JS)) }
        },
    )
}

/// "37% (370/1000)"; "-" for an empty batch.
fn progress(finished: u64, total: u64) -> String {
    if total == 0 {
        return "-".into();
    }
    format!("{}% ({finished}/{total})", finished * 100 / total)
}

fn limit(n: u32) -> String {
    if n == 0 { "none".into() } else { n.to_string() }
}

pub fn dead_letters(queue: &str, letters: &[DeadLetter], s: &Session) -> Markup {
    layout(
        "Dead letters",
        Some(s),
        html! {
            h1 { "Dead letters: " (queue) }
            @if letters.is_empty() { p #empty { "No dead letters." } }
            @else {
                form method="post" action={ "/admin/dlq/" (queue) "/replay" } {
                    (csrf(s)) input type="hidden" name="all" value="1";
                    button type="submit" { "Replay all " (letters.len()) }
                }
                table #dead-letters {
                    tr { th { "dead at" } th { "job" } th { "reason" } th { "actions" } }
                    @for l in letters {
                        tr data-job=(l.job_id) {
                            td { (l.dead_at.to_rfc3339()) }
                            td { a href={ "/admin/jobs/" (l.job_id) } { (l.job_id) } }
                            td { (l.reason) }
                            td {
                                form.inline method="post" action={ "/admin/dlq/" (queue) "/replay" } {
                                    (csrf(s)) input type="hidden" name="entry" value=(l.entry_id);
                                    button type="submit" { "Replay" }
                                }
                                " "
                                form.inline method="post" action={ "/admin/dlq/" (queue) "/delete" }
                                    onsubmit="return confirm('Delete this job for good?')" {
                                    (csrf(s)) input type="hidden" name="entry" value=(l.entry_id);
                                    button type="submit" { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn retries(queue: &str, waiting: &[Waiting], s: &Session) -> Markup {
    layout(
        "Retries",
        Some(s),
        html! {
            h1 { "Retries: " (queue) }
            p { "Jobs waiting for their next attempt, soonest first; the promoter puts them back on the stream when due." }
            @if waiting.is_empty() { p { "None waiting." } }
            @else {
                table {
                    tr { th { "due" } th { "job" } th { "attempts" } th { "last error" } }
                    @for w in waiting {
                        tr {
                            td { (w.due_at.to_rfc3339()) }
                            td { a href={ "/admin/jobs/" (w.job_id) } { (w.job_id) } }
                            td.num { (w.attempts) }
                            td { (w.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        },
    )
}

pub fn held(queue: &str, held: &[Held], s: &Session) -> Markup {
    layout(
        "Held",
        Some(s),
        html! {
            h1 { "Held by workers: " (queue) }
            p { "Entries read and not yet acknowledged: running now (idle stays below a third of the visibility timeout while the worker renews its lease) or left by a worker that died (idle grows until another worker takes them over)." }
            @if held.is_empty() { p { "None." } }
            @else {
                table {
                    tr { th { "job" } th { "worker" } th { "idle" } th { "deliveries" } }
                    @for h in held {
                        tr {
                            td { a href={ "/admin/jobs/" (h.job_id) } { (h.job_id) } }
                            td { (h.worker) }
                            td.num { (format!("{:.1} s", h.idle_secs)) }
                            td.num { (h.deliveries) }
                        }
                    }
                }
            }
        },
    )
}

/// "12.3 s", or "-" for an empty stream.
fn age(secs: Option<f64>) -> String {
    secs.map_or_else(|| "-".into(), |a| format!("{a:.1} s"))
}

pub fn partitions(queue: &str, view: &PartitionsView, s: &Session) -> Markup {
    let t = &view.total;
    layout(
        "Partitions",
        Some(s),
        html! {
            h1 { "Partitions: " (queue) }
            p { "Read at " (view.at.format("%H:%M:%S")) ". New jobs go to a partition at random "
                "(or by their idempotency key); the overview shows their sums. Jobs in flight ("
                (t.in_flight) ") are known per queue only." }
            table #partitions {
                tr { th { "partition" } th { "depth" } th { "pending" } th { "delayed" } th { "dead" } th { "oldest" } }
                @for p in &view.partitions {
                    tr data-partition=(p.queue) {
                        td { (p.queue) }
                        td.num data-f="depth" { (p.depth) }
                        td.num data-f="pending" { (p.pending) }
                        td.num data-f="delayed" { (p.delayed) }
                        td.num data-f="dead" { (p.dead) }
                        td.num data-f="oldest" { (age(p.oldest_age_secs)) }
                    }
                }
                tr #partitions-total {
                    th { "all " (t.partitions) }
                    th.num { (t.depth) }
                    th.num { a href={ "/admin/held/" (queue) } { (t.pending) } }
                    th.num { a href={ "/admin/retries/" (queue) } { (t.delayed) } }
                    th.num { a href={ "/admin/dlq/" (queue) } { (t.dead) } }
                    th.num { (age(t.oldest_age_secs)) }
                }
            }
        },
    )
}

/// One job: its record, its timeline and its handler's notes (texts cut by
/// the lookup; an openid in a payload is shown to the signed-in operator).
pub fn job(found: &JobLookup, s: &Session) -> Markup {
    let record = &found.record;
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
    };
    layout(
        "Job",
        Some(s),
        html! {
            h1 { "Job " (record.id) }
            (job_lookup_form())
            table {
                tr { th { "kind" } td { (record.kind) } }
                tr { th { "state" } td #job-state { (record.state.as_str()) } }
                tr { th { "attempts" } td { (record.attempts) " / " (record.max_attempts) } }
                tr { th { "created" } td { (record.created_at.to_rfc3339()) } }
                tr { th { "updated" } td { (record.updated_at.to_rfc3339()) } }
                @if let Some(due) = record.due_at { tr { th { "due" } td { (due.to_rfc3339()) } } }
                tr { th { "worker" } td { (record.worker.as_deref().unwrap_or("-")) } }
                tr { th { "last error" } td { (record.last_error.as_deref().unwrap_or("-")) } }
            }
            h2 { "Timeline" }
            table #timeline {
                tr { th { "at" } th { "event" } th { "attempt" } th { "detail" } }
                @for e in &found.timeline {
                    tr data-event=(e.kind.as_str()) {
                        td { (time(e.at)) }
                        td { (e.kind.as_str()) }
                        td.num { @if let Some(n) = e.attempt { (n) } }
                        td { (e.detail) }
                    }
                }
            }
            h2 { "Notes" }
            @if found.notes.is_empty() { p { "None." } }
            @else {
                table #notes {
                    @for (name, value) in &found.notes { tr { th { (name) } td { (value) } } }
                }
            }
            h2 { "Payload" } pre { (pretty(&record.payload)) }
            @if let Some(r) = &record.result { h2 { "Result" } pre { (pretty(r)) } }
        },
    )
}

/// A GET form: paste a job id, see its page (`/admin/jobs?id=...`).
fn job_lookup_form() -> Markup {
    html! {
        form #job-lookup method="get" action="/admin/jobs" {
            label for="job-id" { "Job id " }
            input #job-id type="text" name="id" placeholder="wechat:01J..." size="40" required;
            " "
            button type="submit" { "Look up" }
        }
    }
}
