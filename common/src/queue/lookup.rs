//! One job looked up by its id, for people (`ferry jobs show`, the
//! dashboard's job page): its record, its handler's notes and a timeline
//! made only of what the record holds.
//!
//! The timeline invents nothing. The record keeps its creation, the start
//! of each of its first attempts and the retry each failed one scheduled
//! (the attempt log `ferry_queue.lua` writes in the same `HSET` as the
//! state change it belongs to), a replay, and the outcome with its time and
//! error. Each part of an answer WeChat accepted is noted with its time
//! (`part_sent_ms:<n>`, by the worker's clock, in the same write as the
//! `parts_sent` count); a record noted before those times existed shows
//! the count alone.
//!
//! Payloads, results and notes can be long and personal (what a user wrote,
//! the answer): every text is cut to [`SHOWN_CHARS`]. The record holds no
//! secret (none is ever written to Redis). A WeChat openid in a payload is
//! the operator's own data, shown to the operator only: these views are
//! behind the admin sign-in or on the operator's own terminal.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::inspect::parse_record;
use super::{JobQueue, QUEUES, QueueError};
use crate::job::kinds::{NOTE_PARTS_SENT, PART_SENT_MS, note_part_sent_ms};
use crate::job::{JobId, JobRecord, JobState, from_millis};

/// The most characters of any one text shown (a payload's string, a note,
/// an error).
pub const SHOWN_CHARS: usize = 300;

/// The most parts shown one by one (a WeChat answer has a handful; a
/// record edited by hand could claim any count).
const MAX_PARTS_SHOWN: usize = 64;

/// A job, as the lookup shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobLookup {
    /// The record, its texts cut to [`SHOWN_CHARS`].
    pub record: JobRecord,
    /// The handler's notes by name (`answer`, `parts_sent`, ...), cut.
    pub notes: BTreeMap<String, String>,
    /// What happened, oldest first.
    pub timeline: Vec<Event>,
}

/// One thing that happened to a job.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// When, by Redis's clock (a part sent: by the sending worker's);
    /// `None` when the record keeps no time for it (parts sent before
    /// their times were noted).
    pub at: Option<DateTime<Utc>>,
    pub kind: EventKind,
    /// The attempt it belongs to, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// What there is to say (a worker, an error, a due time), cut.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Enqueued,
    /// A dead job was put back on its queue; attempts counted from 1 again.
    Replayed,
    /// An attempt started (fetched and marked running by a worker).
    Started,
    /// An attempt failed and a retry was scheduled.
    RetryScheduled,
    /// WeChat accepted a part of the answer (or, untimed, this many).
    PartsSent,
    Succeeded,
    Dead,
    Cancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Enqueued => "enqueued",
            EventKind::Replayed => "replayed",
            EventKind::Started => "started",
            EventKind::RetryScheduled => "retry scheduled",
            EventKind::PartsSent => "part sent",
            EventKind::Succeeded => "succeeded",
            EventKind::Dead => "dead",
            EventKind::Cancelled => "cancelled",
        }
    }
}

/// Why a lookup found nothing to show.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("not a job id (expected <queue>:<ULID> or <queue>:<partition>:<ULID>)")]
    NotAJobId,
    #[error("no such job {0} (finished jobs expire after FERRY_JOB_RETENTION)")]
    NoSuchJob(String),
    #[error("{0}")]
    Queue(#[from] QueueError),
}

impl JobQueue {
    /// The job named by `raw` (as pasted: surrounding blanks ignored), in
    /// one `HGETALL` of its record under its partition's tag.
    pub async fn lookup(&self, raw: &str) -> Result<JobLookup, LookupError> {
        let id: JobId = raw.trim().parse().map_err(|_| LookupError::NotAJobId)?;
        if !QUEUES.contains(&id.queue()) {
            // A well-formed id of a queue Ferry has not: no record to read.
            return Err(LookupError::NoSuchJob(id.to_string()));
        }
        let mut conn = self.conn().await?;
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys_of(&id).job(&id.to_string()))
            .query_async(&mut conn)
            .await
            .map_err(|e| QueueError::from(crate::store::RedisError::from(e)))?;
        if fields.is_empty() {
            return Err(LookupError::NoSuchJob(id.to_string()));
        }
        Ok(build(&id, &fields)?)
    }
}

/// The lookup of a record read as `fields` (pure: tested without Redis).
pub fn build(id: &JobId, fields: &HashMap<String, String>) -> Result<JobLookup, QueueError> {
    let mut record = parse_record(id, fields)?;
    let timeline = timeline(&record, fields);
    record.payload = clip_json(&record.payload);
    record.result = record.result.as_ref().map(clip_json);
    record.last_error = record.last_error.as_deref().map(clip);
    let notes = fields
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("note:").map(|n| (n.to_owned(), clip(v))))
        // A part's time is in the timeline already.
        .filter(|(n, _)| !n.starts_with(PART_SENT_MS))
        .collect();
    Ok(JobLookup {
        record,
        notes,
        timeline,
    })
}

/// `<ms> <rest>` -> (time, rest).
fn timed(value: &str) -> Option<(i64, &str)> {
    let (ms, rest) = value.split_once(' ').unwrap_or((value, ""));
    Some((ms.parse().ok()?, rest))
}

fn timeline(r: &JobRecord, f: &HashMap<String, String>) -> Vec<Event> {
    let event = |at: Option<DateTime<Utc>>, kind, attempt, detail: String| Event {
        at,
        kind,
        attempt,
        detail,
    };
    let mut out = vec![event(
        Some(r.created_at),
        EventKind::Enqueued,
        None,
        format!("on {}", r.id.partition().name()),
    )];
    // Log fields older than a replay belong to the job's life before it.
    let replayed = f.get("replayed_ms").and_then(|v| v.parse::<i64>().ok());
    if let Some(ms) = replayed {
        out.push(event(
            Some(from_millis(ms)),
            EventKind::Replayed,
            None,
            "from the dead letters; attempts counted from 1 again".into(),
        ));
    }
    let current = |ms: i64| replayed.is_none_or(|at| ms >= at);
    let mut logged = 0;
    for n in 1..=r.attempts {
        let start = f
            .get(&format!("attempt:{n}"))
            .and_then(|v| timed(v))
            .filter(|(ms, _)| current(*ms));
        if let Some((ms, worker)) = start {
            logged += 1;
            out.push(event(
                Some(from_millis(ms)),
                EventKind::Started,
                Some(n),
                format!("on {}", clip(worker)),
            ));
        } else if n == r.attempts
            && let Some(at) = r.started_at
        {
            // No log entry (a record from before the log, or past its
            // cap): the record's own last start.
            logged += 1;
            out.push(event(
                Some(at),
                EventKind::Started,
                Some(n),
                format!("on {}", r.worker.as_deref().map(clip).unwrap_or_default()),
            ));
        }
        let retry = f
            .get(&format!("retry:{n}"))
            .and_then(|v| timed(v))
            .filter(|(ms, _)| current(*ms));
        if let Some((ms, rest)) = retry {
            let (due, error) = rest.split_once(' ').unwrap_or((rest, ""));
            let due = due
                .parse::<i64>()
                .map(|d| from_millis(d).to_rfc3339())
                .unwrap_or_default();
            out.push(event(
                Some(from_millis(ms)),
                EventKind::RetryScheduled,
                Some(n),
                format!("failed: {}; next attempt due {due}", clip(error)),
            ));
        }
    }
    if logged < r.attempts {
        // Said, not guessed: which attempts the record has no start for.
        out.push(event(
            None,
            EventKind::Started,
            None,
            format!(
                "{} of {} attempts have no recorded start",
                r.attempts - logged,
                r.attempts
            ),
        ));
    }
    if let Some(parts) = f.get(&format!("note:{NOTE_PARTS_SENT}")) {
        let count = parts.parse::<usize>().unwrap_or(0);
        let mut untimed = 0;
        for n in 1..=count.min(MAX_PARTS_SHOWN) {
            let at = f
                .get(&format!("note:{}", note_part_sent_ms(n)))
                .and_then(|v| v.parse::<i64>().ok());
            match at {
                Some(ms) => out.push(event(
                    Some(from_millis(ms)),
                    EventKind::PartsSent,
                    None,
                    format!("part {n} of the answer accepted by WeChat"),
                )),
                None => untimed += 1,
            }
        }
        if untimed > 0 || count == 0 {
            out.push(event(
                None,
                EventKind::PartsSent,
                None,
                format!(
                    "{} part(s) accepted by WeChat (noted as each was sent, without its time)",
                    if count == 0 {
                        clip(parts)
                    } else {
                        untimed.to_string()
                    }
                ),
            ));
        }
    }
    let outcome = match r.state {
        JobState::Succeeded => Some((EventKind::Succeeded, String::new())),
        JobState::Dead => Some((
            EventKind::Dead,
            r.last_error.as_deref().map(clip).unwrap_or_default(),
        )),
        JobState::Cancelled => Some((
            EventKind::Cancelled,
            r.last_error.as_deref().map(clip).unwrap_or_default(),
        )),
        _ => None,
    };
    if let Some((kind, detail)) = outcome {
        out.push(event(
            r.finished_at.or(Some(r.updated_at)),
            kind,
            (r.attempts > 0).then_some(r.attempts),
            detail,
        ));
    }
    // Stable by time; untimed events keep their place after what precedes them.
    let mut last = None;
    let mut keyed: Vec<(Option<DateTime<Utc>>, Event)> = out
        .into_iter()
        .map(|e| {
            last = e.at.or(last);
            (last, e)
        })
        .collect();
    keyed.sort_by_key(|(at, _)| *at);
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// `text` cut to [`SHOWN_CHARS`] characters, saying so.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!(
            "{}… ({} more characters)",
            &text[..cut],
            text[cut..].chars().count()
        ),
    }
}

/// `value` with every string in it cut by [`clip`].
pub fn clip_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(clip(s)),
        Value::Array(items) => Value::Array(items.iter().map(clip_json).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), clip_json(v))).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn kinds(l: &JobLookup) -> Vec<(EventKind, Option<u32>)> {
        l.timeline.iter().map(|e| (e.kind, e.attempt)).collect()
    }

    #[test]
    fn a_retried_job_shows_each_attempt_its_retry_and_its_outcome() {
        let id: JobId = "wechat:3:01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
        let f = fields(&[
            ("state", "succeeded"),
            ("payload", r#"{"content":"hi"}"#),
            ("attempts", "2"),
            ("created_ms", "1000"),
            ("attempt:1", "1100 w1"),
            ("retry:1", "1200 2200 provider answered 500"),
            ("attempt:2", "2300 w2"),
            ("started_ms", "2300"),
            ("finished_ms", "2500"),
            ("note:parts_sent", "2"),
            ("note:part_sent_ms:1", "2400"),
            ("note:part_sent_ms:2", "2450"),
        ]);
        let l = build(&id, &f).unwrap();
        use EventKind::*;
        assert_eq!(
            kinds(&l),
            [
                (Enqueued, None),
                (Started, Some(1)),
                (RetryScheduled, Some(1)),
                (Started, Some(2)),
                (PartsSent, None),
                (PartsSent, None),
                (Succeeded, Some(2)),
            ]
        );
        assert!(l.timeline[2].detail.contains("provider answered 500"));
        assert!(l.timeline[0].detail.contains("wechat:3"));
        assert_eq!(l.timeline[4].at, Some(from_millis(2400)));
        assert_eq!(l.timeline[5].at, Some(from_millis(2450)));
        assert_eq!(
            l.timeline[5].detail,
            "part 2 of the answer accepted by WeChat"
        );
        assert_eq!(l.notes["parts_sent"], "2");
        assert!(!l.notes.contains_key("part_sent_ms:1"), "{:?}", l.notes);
    }

    #[test]
    fn parts_noted_without_times_are_counted_untimed() {
        let id: JobId = "wechat:01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
        let f = fields(&[
            ("state", "succeeded"),
            ("attempts", "1"),
            ("created_ms", "1000"),
            ("attempt:1", "1100 w1"),
            ("finished_ms", "1500"),
            ("note:parts_sent", "3"),
            ("note:part_sent_ms:1", "1200"),
        ]);
        let l = build(&id, &f).unwrap();
        use EventKind::*;
        assert_eq!(
            kinds(&l),
            [
                (Enqueued, None),
                (Started, Some(1)),
                (PartsSent, None),
                (PartsSent, None),
                (Succeeded, Some(1)),
            ]
        );
        assert_eq!(l.timeline[3].at, None);
        assert!(
            l.timeline[3].detail.starts_with("2 part(s)"),
            "{}",
            l.timeline[3].detail
        );
    }

    #[test]
    fn a_record_without_a_log_shows_only_what_it_keeps() {
        let id: JobId = "wechat:01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
        let f = fields(&[
            ("state", "dead"),
            ("attempts", "3"),
            ("created_ms", "1000"),
            ("started_ms", "3000"),
            ("worker", "w9"),
            ("finished_ms", "3100"),
            ("last_error", "WeChat refused: 45015"),
        ]);
        let l = build(&id, &f).unwrap();
        use EventKind::*;
        assert_eq!(
            kinds(&l),
            [
                (Enqueued, None),
                (Started, Some(3)),
                (Started, None),
                (Dead, Some(3))
            ]
        );
        assert_eq!(
            l.timeline[2].detail,
            "2 of 3 attempts have no recorded start"
        );
        assert_eq!(l.timeline[3].detail, "WeChat refused: 45015");
    }

    #[test]
    fn log_fields_from_before_a_replay_are_not_shown_as_current() {
        let id: JobId = "wechat:01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
        let f = fields(&[
            ("state", "running"),
            ("attempts", "1"),
            ("created_ms", "1000"),
            ("attempt:1", "5100 w1"),
            ("retry:1", "1200 2200 old failure"),
            ("replayed_ms", "5000"),
        ]);
        let l = build(&id, &f).unwrap();
        use EventKind::*;
        assert_eq!(
            kinds(&l),
            [(Enqueued, None), (Replayed, None), (Started, Some(1))]
        );
    }

    #[test]
    fn long_texts_are_cut_in_payloads_notes_and_errors() {
        let id: JobId = "wechat:01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
        let long = "长".repeat(SHOWN_CHARS + 5);
        let payload = serde_json::json!({ "content": long }).to_string();
        let f = fields(&[
            ("state", "retrying"),
            ("payload", &payload),
            ("created_ms", "1000"),
            ("note:answer", &long),
            ("last_error", &long),
        ]);
        let l = build(&id, &f).unwrap();
        let cut = format!("{}… (5 more characters)", "长".repeat(SHOWN_CHARS));
        assert_eq!(l.record.payload["content"], cut.as_str());
        assert_eq!(l.notes["answer"], cut);
        assert_eq!(l.record.last_error.as_deref(), Some(cut.as_str()));
        assert_eq!(clip("short"), "short");
    }
}
