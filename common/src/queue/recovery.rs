//! Keeping at-least-once honest: leases on held work, take-over of work
//! whose worker vanished, and due retries back to their streams.
//!
//! A pending entry's idle time is its lease: the lease keeper resets it for
//! everything its worker still holds (`XCLAIM ... JUSTID` to itself), so only
//! entries of a dead or cut-off worker ever go idle past the visibility
//! timeout and get taken over with `XAUTOCLAIM`.

use std::time::Duration;

use redis::Pipeline;
use redis::streams::{StreamAutoClaimReply, StreamPendingCountReply};

use super::{Fetched, JobQueue, QueueError};
use crate::functions::{fcall, run};
use crate::keys::CONSUMER_GROUP;

/// What one take-over pass did.
#[derive(Debug, Default)]
pub struct Reclaimed {
    /// Entries now held by this worker, to be started like fresh ones.
    pub fetched: Vec<Fetched>,
    /// Jobs moved to the dead-letter stream for too many deliveries.
    pub dead_lettered: usize,
}

impl JobQueue {
    /// Renews the lease on entries this worker holds. Returns how many were
    /// still pending (an entry missing here was recorded or taken over).
    pub async fn renew_leases(
        &self,
        consumer: &str,
        queue: &str,
        entry_ids: &[String],
    ) -> Result<usize, QueueError> {
        if entry_ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(self.keys.queue(queue).stream())
            .arg(CONSUMER_GROUP)
            .arg(consumer)
            .arg(0)
            .arg(entry_ids)
            .arg("JUSTID");
        let mut conn = self.conn().await?;
        let renewed: Vec<String> = cmd.query_async(&mut conn).await?;
        Ok(renewed.len())
    }

    /// Takes over entries idle longer than `visibility_timeout`. Jobs already
    /// delivered `max_deliveries` times go to the dead-letter stream instead,
    /// with the reason: a job that kills its worker every time must not kill
    /// the whole fleet one worker after another.
    pub async fn reclaim(
        &self,
        consumer: &str,
        queue: &str,
        visibility_timeout: Duration,
        max_deliveries: u32,
        count: usize,
    ) -> Result<Reclaimed, QueueError> {
        let q = self.keys.queue(queue);
        let stream = q.stream();
        let idle_ms = visibility_timeout.as_millis() as u64;
        let mut conn = self.conn().await?;
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(CONSUMER_GROUP)
            .arg("IDLE")
            .arg(idle_ms)
            .arg("-")
            .arg("+")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let mut out = Reclaimed::default();
        let worn_out: Vec<_> = pending
            .ids
            .iter()
            .filter(|p| p.times_delivered >= max_deliveries as usize)
            .collect();
        if !worn_out.is_empty() {
            // The job ids are in the entries: read them first.
            let mut pipe = Pipeline::new();
            for p in &worn_out {
                pipe.cmd("XRANGE").arg(&stream).arg(&p.id).arg(&p.id);
            }
            let entries: Vec<redis::streams::StreamRangeReply> =
                pipe.query_async(&mut conn).await?;
            let mut dead = Pipeline::new();
            for (p, range) in worn_out.iter().zip(entries) {
                let Some(entry) = range.ids.into_iter().next() else {
                    dead.cmd("XACK")
                        .arg(&stream)
                        .arg(CONSUMER_GROUP)
                        .arg(&p.id)
                        .ignore();
                    continue;
                };
                let job_id: String = entry.get("job").unwrap_or_default();
                let reason = format!(
                    "delivered {} times without an outcome (its worker died or stalled each time)",
                    p.times_delivered
                );
                tracing::error!(job = %job_id, deliveries = p.times_delivered, "dead-lettering a job that never finished");
                fcall(
                    &mut dead,
                    super::delivery::OutcomeFunctions::of(queue).dead_letter,
                    &[&stream, &q.job(&job_id), &q.dead()],
                )
                .arg(CONSUMER_GROUP)
                .arg(&p.id)
                .arg(reason);
                out.dead_lettered += 1;
            }
            run::<Vec<redis::Value>, _>(&mut conn, &dead).await?;
        }
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&stream)
            .arg(CONSUMER_GROUP)
            .arg(consumer)
            .arg(idle_ms)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        for entry in claimed.claimed {
            out.fetched.push(Fetched {
                queue: queue.to_owned(),
                job_id: entry.get::<String>("job").unwrap_or_default(),
                entry_id: entry.id,
            });
        }
        if !claimed.deleted_ids.is_empty() {
            // Entries deleted while pending: nothing to run, clear the PEL.
            redis::cmd("XACK")
                .arg(&stream)
                .arg(CONSUMER_GROUP)
                .arg(&claimed.deleted_ids)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(out)
    }

    /// Moves due retries of `queue` back to its stream. Safe to run from
    /// every worker at once.
    pub async fn promote_due(&self, queue: &str, most: usize) -> Result<usize, QueueError> {
        let q = self.keys.queue(queue);
        let mut pipe = Pipeline::new();
        fcall(&mut pipe, "ferry_promote", &[&q.delayed(), &q.stream()]).arg(most);
        let mut conn = self.conn().await?;
        let (moved,): (usize,) = run(&mut conn, &pipe).await?;
        Ok(moved)
    }
}
