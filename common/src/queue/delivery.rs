//! Handing jobs to workers and recording what became of them.
//!
//! A worker reads entries with `XREADGROUP` (the entry joins its pending
//! list), starts them with one `ferry_start` call per batch, and records each
//! outcome with one function call that also acknowledges and deletes the
//! entry. Outcomes of many jobs travel in one pipeline: a job costs a fraction
//! of a round trip.

use std::time::Duration;

use redis::Pipeline;
use redis::aio::ConnectionLike;
use redis::streams::StreamInfoGroupsReply;

use super::{JobQueue, QueueError};
use crate::functions::{fcall, run};
use crate::job::{Delivery, JobId, from_millis};
use crate::keys::{CONSUMER_GROUP, Partition};

/// A stream entry read for this worker, not yet started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub partition: Partition,
    pub entry_id: String,
    pub job_id: String,
}

/// What became of one attempt, decided by the worker's retry policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded {
        result: serde_json::Value,
    },
    /// Try again after `delay`.
    Retry {
        error: String,
        delay: Duration,
    },
    /// No more attempts: to the dead-letter stream with the reason.
    Dead {
        reason: String,
    },
    /// Not attempted to the end (shutdown): back to the stream at once.
    HandBack,
}

impl JobQueue {
    /// Waits up to `block` for an entry none of the group's workers has
    /// read yet in any of `partitions`, without reading it: a wake-up, so a
    /// wait cut short (shutdown, another partition woke first) leaves
    /// nothing pending. Answers whether something arrived; the caller then
    /// fetches. Use a dedicated connection (see
    /// [`crate::connection::dedicated`]); on a cluster, one partition per
    /// call (a blocking read names keys of one slot only).
    ///
    /// The read starts after the group's last-delivered id, read first
    /// (`XINFO GROUPS`): an entry added between the caller's empty fetch
    /// and this wait wakes it at once.
    pub async fn wait_for_new<C: ConnectionLike>(
        &self,
        conn: &mut C,
        partitions: &[Partition],
        block: Duration,
    ) -> Result<bool, QueueError> {
        if partitions.is_empty() {
            tokio::time::sleep(block).await;
            return Ok(false);
        }
        let streams: Vec<String> = partitions
            .iter()
            .map(|p| self.keys().partition(p).stream())
            .collect();
        let mut info = Pipeline::new();
        info.ignore_errors();
        for stream in &streams {
            info.cmd("XINFO").arg("GROUPS").arg(stream);
        }
        let groups: Vec<redis::Value> = info.query_async(conn).await?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&streams);
        for reply in groups {
            // No stream or no group yet: anything in the stream is new.
            let id = redis::from_redis_value::<StreamInfoGroupsReply>(reply)
                .ok()
                .and_then(|r| {
                    r.groups
                        .into_iter()
                        .find(|g| g.name == CONSUMER_GROUP)
                        .map(|g| g.last_delivered_id)
                })
                .unwrap_or_else(|| "0-0".to_owned());
            cmd.arg(id);
        }
        let reply: Option<redis::Value> = cmd.query_async(conn).await?;
        Ok(reply.is_some())
    }

    /// Reads up to `count` new entries of one partition and starts their
    /// jobs in ONE function call (`ferry_fetch_flat`): the fast path while there
    /// is work. Never blocks; use [`JobQueue::wait_for_new`] to wait.
    pub async fn fetch<C: ConnectionLike>(
        &self,
        conn: &mut C,
        consumer: &str,
        partition: &Partition,
        count: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        let q = self.keys().partition(partition);
        let stream = q.stream();
        let record_prefix = q.job("");
        let mut pipe = Pipeline::new();
        fcall(&mut pipe, "ferry_fetch_flat", &[&stream])
            .arg(CONSUMER_GROUP)
            .arg(consumer)
            .arg(count)
            .arg(&record_prefix);
        let (reply,): (Vec<redis::Value>,) = match run(conn, &pipe).await {
            Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP") => {
                tracing::warn!("consumer group missing (Redis lost its data?): recreating it");
                crate::schema::ensure_group(conn, &stream).await?;
                run(conn, &pipe).await?
            }
            other => other?,
        };
        let mut deliveries = Vec::with_capacity(reply.len() / FETCH_STRIDE);
        let mut corrupt = Pipeline::new();
        let mut items = reply.into_iter();
        while let Some(entry_id) = items.next() {
            let entry_id: String = redis::from_redis_value(entry_id)?;
            let job_id: String =
                redis::from_redis_value(items.next().unwrap_or(redis::Value::Nil))?;
            let f = Fetched {
                partition: partition.clone(),
                entry_id,
                job_id,
            };
            // Read in place, no list per entry; what a stale entry's answer
            // leaves unread (its padding) is skipped, so the next entry
            // starts where it should.
            let mut fields = items.by_ref().take(FETCH_STRIDE - 2);
            let parsed = parse_started(&f, fields.by_ref());
            fields.for_each(drop);
            match parsed {
                Ok(Some(d)) => deliveries.push(d),
                Ok(None) => {} // acknowledged by ferry_fetch_flat
                Err(e) => {
                    tracing::error!(job = %f.job_id, error = %e, "unreadable job record: dead-lettering it");
                    self.add_outcome(
                        &mut corrupt,
                        &f.partition,
                        &f.entry_id,
                        &f.job_id,
                        &Outcome::Dead {
                            reason: e.to_string(),
                        },
                    );
                    corrupt.ignore();
                }
            }
        }
        if corrupt.cmd_iter().next().is_some() {
            run::<(), _>(conn, &corrupt).await?;
        }
        Ok(deliveries)
    }

    /// [`fetch`](Self::fetch) over every partition of `queue` in turn,
    /// until `count` are read (tools and tests; the worker's fetcher spreads
    /// its reads fairly itself).
    pub async fn fetch_any<C: ConnectionLike>(
        &self,
        conn: &mut C,
        consumer: &str,
        queue: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        let mut out = Vec::new();
        for partition in self.served_partitions(queue) {
            if out.len() >= count {
                break;
            }
            out.extend(
                self.fetch(conn, consumer, &partition, count - out.len())
                    .await?,
            );
        }
        Ok(out)
    }

    /// Marks fetched jobs running and counts the attempt: one function call
    /// per partition for the whole batch. Entries whose job is gone or already
    /// finished are acknowledged and dropped here.
    pub async fn start(
        &self,
        fetched: Vec<Fetched>,
        worker: &str,
    ) -> Result<Vec<Delivery>, QueueError> {
        if fetched.is_empty() {
            return Ok(Vec::new());
        }
        let by_partition = group_by_partition(&fetched, |f| f.partition.clone());
        let mut pipe = Pipeline::new();
        for (partition, indexes) in &by_partition {
            let q = self.keys().partition(partition);
            let records: Vec<String> = indexes.iter().map(|&i| q.job(&fetched[i].job_id)).collect();
            let records: Vec<&str> = records.iter().map(String::as_str).collect();
            fcall(&mut pipe, "ferry_start", &records).arg(worker);
        }
        let mut conn = self.conn().await?;
        let replies: Vec<Vec<Vec<redis::Value>>> = run(&mut conn, &pipe).await?;
        let mut started: Vec<Option<Vec<redis::Value>>> = vec![None; fetched.len()];
        for ((_, indexes), reply) in by_partition.iter().zip(replies) {
            for (&i, fields) in indexes.iter().zip(reply) {
                started[i] = Some(fields);
            }
        }
        let mut deliveries = Vec::with_capacity(fetched.len());
        let mut stale = Pipeline::new();
        for (f, fields) in fetched.iter().zip(started) {
            match parse_started(f, fields.unwrap_or_default()) {
                Ok(Some(d)) => deliveries.push(d),
                Ok(None) => {
                    let stream = self.keys().partition(&f.partition).stream();
                    stale
                        .cmd("XACK")
                        .arg(&stream)
                        .arg(CONSUMER_GROUP)
                        .arg(&f.entry_id)
                        .ignore();
                    stale.cmd("XDEL").arg(&stream).arg(&f.entry_id).ignore();
                }
                Err(e) => {
                    tracing::error!(job = %f.job_id, error = %e, "unreadable job record: dead-lettering it");
                    self.add_outcome(
                        &mut stale,
                        &f.partition,
                        &f.entry_id,
                        &f.job_id,
                        &Outcome::Dead {
                            reason: e.to_string(),
                        },
                    );
                    stale.ignore();
                }
            }
        }
        if stale.cmd_iter().next().is_some() {
            run::<(), _>(&mut conn, &stale).await?;
        }
        Ok(deliveries)
    }

    /// Records outcomes in one pipeline: the successes of each partition in
    /// one function call, the rest one call each. Each item answers whether
    /// this call changed the job (false: it had already finished, e.g. a
    /// duplicate delivery).
    pub async fn record(
        &self,
        outcomes: &[(&Delivery, &Outcome)],
    ) -> Result<Vec<bool>, QueueError> {
        let mut conn = self.conn().await?;
        self.record_on(&mut conn, outcomes).await
    }

    /// [`record`](Self::record) on a connection the caller holds (the
    /// worker's acker keeps one multiplexed connection, so a batch costs
    /// no pool checkout and several batches can be on the wire at once).
    pub async fn record_on<C: ConnectionLike>(
        &self,
        conn: &mut C,
        outcomes: &[(&Delivery, &Outcome)],
    ) -> Result<Vec<bool>, QueueError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let (successes, others): (Vec<usize>, Vec<usize>) =
            (0..outcomes.len()).partition(|&i| matches!(outcomes[i].1, Outcome::Succeeded { .. }));
        let successes: Vec<(&Delivery, &Outcome)> =
            successes.iter().map(|&i| outcomes[i]).collect();
        let by_partition = group_by_partition(&successes, |(d, _)| d.id.partition());
        let mut pipe = Pipeline::new();
        for (partition, indexes) in &by_partition {
            let q = self.keys().partition(partition);
            let stream = q.stream();
            let mut keys = vec![stream];
            keys.extend(
                indexes
                    .iter()
                    .map(|&i| q.job(&successes[i].0.id.to_string())),
            );
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let call = fcall(
                &mut pipe,
                OutcomeFunctions::of(&partition.queue).complete,
                &keys,
            )
            .arg(CONSUMER_GROUP)
            .arg(self.retention_secs());
            for &i in indexes {
                let (d, outcome) = successes[i];
                let Outcome::Succeeded { result } = outcome else {
                    unreachable!("partitioned above")
                };
                call.arg(&d.entry_id).arg(result.to_string());
            }
        }
        for &i in &others {
            let (d, outcome) = outcomes[i];
            self.add_outcome(
                &mut pipe,
                &d.id.partition(),
                &d.entry_id,
                &d.id.to_string(),
                outcome,
            );
        }
        let replies: Vec<redis::Value> = run(conn, &pipe).await?;
        let mut replies = replies.into_iter();
        let mut changed = vec![false; outcomes.len()];
        let success_index: Vec<usize> = (0..outcomes.len())
            .filter(|&i| matches!(outcomes[i].1, Outcome::Succeeded { .. }))
            .collect();
        for (_, indexes) in &by_partition {
            let flags: Vec<i32> =
                redis::from_redis_value(replies.next().unwrap_or(redis::Value::Nil))?;
            for (&i, flag) in indexes.iter().zip(flags) {
                changed[success_index[i]] = flag == 1;
            }
        }
        for &i in &others {
            let flag: i32 = redis::from_redis_value(replies.next().unwrap_or(redis::Value::Nil))?;
            changed[i] = flag == 1;
        }
        Ok(changed)
    }

    /// Puts held jobs back on their streams at once (a worker shutting down
    /// before they finished). Returns how many went back.
    pub async fn hand_back(&self, held: &[(JobId, String)]) -> Result<usize, QueueError> {
        if held.is_empty() {
            return Ok(0);
        }
        let mut pipe = Pipeline::new();
        for (job, entry_id) in held {
            self.add_outcome(
                &mut pipe,
                &job.partition(),
                entry_id,
                &job.to_string(),
                &Outcome::HandBack,
            );
        }
        let mut conn = self.conn().await?;
        let back: Vec<i32> = run(&mut conn, &pipe).await?;
        Ok(back.into_iter().filter(|b| *b == 1).count())
    }

    fn add_outcome(
        &self,
        pipe: &mut Pipeline,
        partition: &Partition,
        entry_id: &str,
        job_id: &str,
        outcome: &Outcome,
    ) {
        let q = self.keys().partition(partition);
        let (stream, record) = (q.stream(), q.job(job_id));
        let functions = OutcomeFunctions::of(&partition.queue);
        match outcome {
            Outcome::Succeeded { result } => {
                // `ferry_complete` answers a list, one flag per job.
                fcall(pipe, functions.complete, &[&stream, &record])
                    .arg(CONSUMER_GROUP)
                    .arg(self.retention_secs())
                    .arg(entry_id)
                    .arg(result.to_string());
            }
            Outcome::Retry { error, delay } => {
                fcall(pipe, functions.retry, &[&stream, &record, &q.delayed()])
                    .arg(CONSUMER_GROUP)
                    .arg(entry_id)
                    .arg(delay.as_millis() as u64)
                    .arg(error);
            }
            Outcome::Dead { reason } => {
                fcall(pipe, functions.dead_letter, &[&stream, &record, &q.dead()])
                    .arg(CONSUMER_GROUP)
                    .arg(entry_id)
                    .arg(reason);
            }
            Outcome::HandBack => {
                fcall(pipe, functions.hand_back, &[&stream, &record])
                    .arg(CONSUMER_GROUP)
                    .arg(entry_id);
            }
        }
    }
}

/// The functions that record outcomes on a queue. Jobs of the `batch` queue
/// use `ferry_batch.lua`'s, which do the same and also keep their batch's
/// counts and their owner's in-flight count in the same call (a job without
/// a batch or owner is recorded exactly as `ferry_queue.lua` would).
pub(crate) struct OutcomeFunctions {
    pub complete: &'static str,
    pub retry: &'static str,
    pub dead_letter: &'static str,
    pub hand_back: &'static str,
}

impl OutcomeFunctions {
    pub(crate) fn of(queue: &str) -> Self {
        if queue == super::BATCH {
            Self {
                complete: "ferry_batch_complete",
                retry: "ferry_batch_retry",
                dead_letter: "ferry_batch_dead_letter",
                hand_back: "ferry_batch_hand_back",
            }
        } else {
            Self {
                complete: "ferry_complete",
                retry: "ferry_retry",
                dead_letter: "ferry_dead_letter",
                hand_back: "ferry_hand_back",
            }
        }
    }
}

/// Indexes of `items` grouped by partition, partitions in first-seen
/// order: one function call per partition (one slot each).
fn group_by_partition<'a, T>(
    items: &'a [T],
    partition: impl Fn(&'a T) -> Partition,
) -> Vec<(Partition, Vec<usize>)> {
    let mut groups: Vec<(Partition, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = partition(item);
        match groups.iter_mut().find(|(name, _)| *name == p) {
            Some((_, indexes)) => indexes.push(i),
            None => groups.push((p, vec![i])),
        }
    }
    groups
}

/// Items per entry in `ferry_fetch_flat`'s answer (`FETCH_STRIDE` in
/// `ferry_queue.lua`): entry id, job id, then `ferry_start`'s answer.
const FETCH_STRIDE: usize = 8;

/// `ferry_start`'s answer for one job: a delivery, or `None` for a stale
/// entry (job gone or already finished).
fn parse_started(
    f: &Fetched,
    fields: impl IntoIterator<Item = redis::Value>,
) -> Result<Option<Delivery>, QueueError> {
    let corrupt = |reason: &str| QueueError::Corrupt {
        id: f.job_id.clone(),
        reason: reason.to_owned(),
    };
    let mut it = fields.into_iter();
    let status: String = it
        .next()
        .map(redis::from_redis_value)
        .transpose()?
        .unwrap_or_default();
    if status != "run" {
        if status == "missing" {
            tracing::warn!(job = %f.job_id, "job record is gone (purged or expired): dropping its entry");
        }
        return Ok(None);
    }
    let mut next = || {
        it.next()
            .ok_or_else(|| corrupt("short reply from ferry_start"))
    };
    let kind: String = redis::from_redis_value(next()?)?;
    let payload: String = redis::from_redis_value(next()?)?;
    let attempt: u32 = redis::from_redis_value(next()?)?;
    let max_attempts: u32 = redis::from_redis_value(next()?)?;
    let created_ms: i64 = redis::from_redis_value(next()?)?;
    let id: JobId = f.job_id.parse().map_err(|_| corrupt("bad job id"))?;
    Ok(Some(Delivery {
        id,
        entry_id: f.entry_id.clone(),
        kind,
        payload: serde_json::from_str(&payload).map_err(|_| corrupt("payload is not JSON"))?,
        attempt,
        max_attempts,
        created_at: from_millis(created_ms),
    }))
}
