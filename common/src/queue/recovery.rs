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
use crate::keys::{CONSUMER_GROUP, Partition};

/// A consumer of a queue's group, as Redis sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    /// Entries it holds (delivered, not acknowledged).
    pub pending: usize,
    /// Time since it last read or claimed.
    pub idle: Duration,
}

/// What one take-over pass did.
#[derive(Debug, Default)]
pub struct Reclaimed {
    /// Entries now held by this worker, to be started like fresh ones.
    pub fetched: Vec<Fetched>,
    /// Jobs moved to the dead-letter stream for too many deliveries.
    pub dead_lettered: usize,
}

impl JobQueue {
    /// Renews the lease on entries this worker holds. Returns the entries
    /// still held: one missing here was recorded, or taken over by another
    /// worker (which keeps it: the renewal never takes an entry back).
    pub async fn renew_leases(
        &self,
        consumer: &str,
        partition: &Partition,
        entry_ids: &[String],
    ) -> Result<Vec<String>, QueueError> {
        if entry_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = Pipeline::new();
        fcall(
            &mut pipe,
            "ferry_renew",
            &[&self.keys().partition(partition).stream()],
        )
        .arg(CONSUMER_GROUP)
        .arg(consumer)
        .arg(entry_ids);
        let mut conn = self.conn().await?;
        let (held,): (Vec<String>,) = run(&mut conn, &pipe).await?;
        Ok(held)
    }

    /// The consumers of `queue`'s group with the entries each holds and
    /// how long since each last read or claimed (Redis's own clock).
    pub async fn consumers(&self, partition: &Partition) -> Result<Vec<Consumer>, QueueError> {
        let mut conn = self.conn().await?;
        let reply: redis::streams::StreamInfoConsumersReply = match redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(self.keys().partition(partition).stream())
            .arg(CONSUMER_GROUP)
            .query_async(&mut conn)
            .await
        {
            Ok(reply) => reply,
            // No stream or group yet (or Redis lost them): no consumers.
            Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(reply
            .consumers
            .into_iter()
            .map(|c| Consumer {
                name: c.name,
                pending: c.pending,
                idle: Duration::from_millis(c.idle as u64),
            })
            .collect())
    }

    /// Takes over the entries of `dead`, a consumer whose worker is gone,
    /// idle at least `min_idle` (so two workers taking over at once never
    /// both get an entry: the first claim resets its idle time). Worn-out
    /// jobs go to the dead-letter stream as in [`JobQueue::reclaim`].
    pub async fn take_over(
        &self,
        consumer: &str,
        dead: &str,
        partition: &Partition,
        min_idle: Duration,
        max_deliveries: u32,
        count: usize,
    ) -> Result<Reclaimed, QueueError> {
        self.claim_idle_of(
            consumer,
            dead,
            partition,
            min_idle,
            max_deliveries,
            count,
            |_| false,
        )
        .await
    }

    /// Claims `pending` for `consumer` (those idle at least `idle_ms` still:
    /// a claim by another worker meanwhile reset them), dead-lettering the
    /// worn-out ones.
    async fn claim_pending<C: redis::aio::ConnectionLike>(
        &self,
        conn: &mut C,
        consumer: &str,
        partition: &Partition,
        pending: StreamPendingCountReply,
        idle_ms: u64,
        max_deliveries: u32,
    ) -> Result<Reclaimed, QueueError> {
        let stream = self.keys().partition(partition).stream();
        let mut out = Reclaimed {
            dead_lettered: self
                .dead_letter_worn_out(conn, partition, &pending, max_deliveries)
                .await?,
            ..Reclaimed::default()
        };
        let claimable: Vec<&str> = pending
            .ids
            .iter()
            .filter(|p| p.times_delivered < max_deliveries as usize)
            .map(|p| p.id.as_str())
            .collect();
        if claimable.is_empty() {
            return Ok(out);
        }
        let claimed: redis::streams::StreamClaimReply = redis::cmd("XCLAIM")
            .arg(&stream)
            .arg(CONSUMER_GROUP)
            .arg(consumer)
            .arg(idle_ms)
            .arg(&claimable)
            .query_async(conn)
            .await?;
        for entry in claimed.ids {
            out.fetched.push(Fetched {
                partition: partition.clone(),
                job_id: entry.get::<String>("job").unwrap_or_default(),
                entry_id: entry.id,
            });
        }
        Ok(out)
    }

    /// Takes back the entries pending under `consumer` itself, idle at
    /// least `min_idle`, that `is_held` says its worker does not hold. A
    /// fetch whose reply never arrived (the connection broke after Redis ran
    /// it; on a cluster, a failover) leaves entries pending under a live
    /// worker that never learnt of them: its heartbeat keeps others from
    /// taking them over, so without this they would wait for the visibility
    /// timeout. Worn-out jobs go to the dead-letter stream as in
    /// [`JobQueue::reclaim`].
    pub async fn take_back_orphans(
        &self,
        consumer: &str,
        partition: &Partition,
        min_idle: Duration,
        max_deliveries: u32,
        count: usize,
        is_held: impl Fn(&str) -> bool,
    ) -> Result<Reclaimed, QueueError> {
        self.claim_idle_of(
            consumer,
            consumer,
            partition,
            min_idle,
            max_deliveries,
            count,
            is_held,
        )
        .await
    }

    /// Claims for `consumer` up to `count` entries pending under `owner`,
    /// idle at least `min_idle`, except those `is_held` names.
    #[allow(clippy::too_many_arguments)]
    async fn claim_idle_of(
        &self,
        consumer: &str,
        owner: &str,
        partition: &Partition,
        min_idle: Duration,
        max_deliveries: u32,
        count: usize,
        is_held: impl Fn(&str) -> bool,
    ) -> Result<Reclaimed, QueueError> {
        let stream = self.keys().partition(partition).stream();
        let idle_ms = min_idle.as_millis() as u64;
        let mut conn = self.conn().await?;
        let mut pending = pending_idle(&mut conn, &stream, idle_ms, count, Some(owner)).await?;
        pending.ids.retain(|p| !is_held(&p.id));
        self.claim_pending(
            &mut conn,
            consumer,
            partition,
            pending,
            idle_ms,
            max_deliveries,
        )
        .await
    }

    /// Removes `consumer` from `queue`'s group if it holds nothing (one
    /// atomic call, so an entry delivered meanwhile is never dropped).
    /// Returns whether it was removed.
    pub async fn forget_consumer(
        &self,
        partition: &Partition,
        consumer: &str,
    ) -> Result<bool, QueueError> {
        let mut pipe = Pipeline::new();
        fcall(
            &mut pipe,
            "ferry_forget_consumer",
            &[&self.keys().partition(partition).stream()],
        )
        .arg(CONSUMER_GROUP)
        .arg(consumer);
        let mut conn = self.conn().await?;
        let (removed,): (i64,) = run(&mut conn, &pipe).await?;
        Ok(removed == 1)
    }

    /// Takes over entries idle longer than `visibility_timeout`. Jobs already
    /// delivered `max_deliveries` times go to the dead-letter stream instead,
    /// with the reason: a job that kills its worker every time must not kill
    /// the whole fleet one worker after another.
    pub async fn reclaim(
        &self,
        consumer: &str,
        partition: &Partition,
        visibility_timeout: Duration,
        max_deliveries: u32,
        count: usize,
    ) -> Result<Reclaimed, QueueError> {
        let q = self.keys().partition(partition);
        let stream = q.stream();
        let idle_ms = visibility_timeout.as_millis() as u64;
        let mut conn = self.conn().await?;
        let pending = pending_idle(&mut conn, &stream, idle_ms, count, None).await?;
        let mut out = Reclaimed {
            dead_lettered: self
                .dead_letter_worn_out(&mut conn, partition, &pending, max_deliveries)
                .await?,
            ..Reclaimed::default()
        };
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
                partition: partition.clone(),
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

    /// Moves the jobs among `pending` delivered `max_deliveries` times to
    /// the dead-letter stream, with the reason; returns how many.
    async fn dead_letter_worn_out<C: redis::aio::ConnectionLike>(
        &self,
        conn: &mut C,
        partition: &Partition,
        pending: &StreamPendingCountReply,
        max_deliveries: u32,
    ) -> Result<usize, QueueError> {
        let q = self.keys().partition(partition);
        let stream = q.stream();
        let worn_out: Vec<_> = pending
            .ids
            .iter()
            .filter(|p| p.times_delivered >= max_deliveries as usize)
            .collect();
        if worn_out.is_empty() {
            return Ok(0);
        }
        // The job ids are in the entries: read them first.
        let mut pipe = Pipeline::new();
        for p in &worn_out {
            pipe.cmd("XRANGE").arg(&stream).arg(&p.id).arg(&p.id);
        }
        let entries: Vec<redis::streams::StreamRangeReply> = pipe.query_async(conn).await?;
        let mut dead = Pipeline::new();
        let mut count = 0;
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
                super::delivery::OutcomeFunctions::of(&partition.queue).dead_letter,
                &[&stream, &q.job(&job_id), &q.dead()],
            )
            .arg(CONSUMER_GROUP)
            .arg(&p.id)
            .arg(reason);
            count += 1;
        }
        run::<Vec<redis::Value>, _>(conn, &dead).await?;
        Ok(count)
    }

    /// Moves due retries of `queue` back to its stream. Safe to run from
    /// every worker at once.
    pub async fn promote_due(
        &self,
        partition: &Partition,
        most: usize,
    ) -> Result<usize, QueueError> {
        let q = self.keys().partition(partition);
        let mut pipe = Pipeline::new();
        fcall(&mut pipe, "ferry_promote", &[&q.delayed(), &q.stream()]).arg(most);
        let mut conn = self.conn().await?;
        let (moved,): (usize,) = run(&mut conn, &pipe).await?;
        Ok(moved)
    }
}

/// Up to `count` pending entries of `stream` idle at least `idle_ms`, of
/// one consumer or of all.
async fn pending_idle<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    stream: &str,
    idle_ms: u64,
    count: usize,
    consumer: Option<&str>,
) -> Result<StreamPendingCountReply, QueueError> {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(stream)
        .arg(CONSUMER_GROUP)
        .arg("IDLE")
        .arg(idle_ms)
        .arg("-")
        .arg("+")
        .arg(count);
    if let Some(consumer) = consumer {
        cmd.arg(consumer);
    }
    Ok(cmd.query_async(conn).await?)
}
