//! A batch's counts and an API key's in-flight count under at-least-once
//! delivery, driven through the engine's own calls (no worker): each job is
//! counted once however often its outcome is recorded, failed lines stay out
//! of the dead-letter stream, and cancel and abort release what they hold.

use std::time::Duration;

use ferry_common::batch::{Batches, Begin, NewBatch, new_batch_id};
use ferry_common::job::Delivery;
use ferry_common::job::kinds::{ChatCompletion, ChatParameters, ChatTurn};
use ferry_common::keys::QueueKeys;
use ferry_common::queue::{BATCH, JobQueue, Outcome};
use ferry_tests::{Backend, RedisUnderTest};

const OWNER: &str = "ci";

async fn engine(redis: &Backend) -> (JobQueue, Batches) {
    let queue = redis.job_queue().await;
    let batches = Batches::new(queue.store().clone(), Duration::from_secs(3600));
    (queue, batches)
}

ferry_tests::on_one_redis_and_a_cluster!(
    each_job_is_counted_once_however_often_its_outcome_is_recorded,
    a_cancelled_batchs_queued_jobs_are_recorded_cancelled_and_never_run,
    an_aborted_submission_releases_its_reservation_and_cancels_what_it_wrote,
    jobs_finishing_before_the_commit_complete_the_batch_at_the_commit,
    a_batch_abandoned_while_being_enqueued_fails_when_read
);

/// The keys of the partition holding the owner's jobs and batches.
fn owner_keys(redis: &dyn RedisUnderTest) -> QueueKeys {
    let keys = redis.keys();
    keys.partition(&keys.partitions().place(BATCH, OWNER))
}

fn request(i: usize) -> (String, ChatCompletion) {
    (
        format!("r{i}"),
        ChatCompletion {
            provider: None,
            model: None,
            messages: vec![ChatTurn {
                role: "user".into(),
                content: format!("q{i}"),
            }],
            parameters: ChatParameters::default(),
        },
    )
}

/// Opens a batch of `n` jobs, writes `written` of them, commits if asked.
async fn batch(batches: &Batches, n: usize, written: usize, commit: bool) -> String {
    let id = new_batch_id(&batches.partition_of_owner(OWNER));
    let spec = NewBatch {
        id: id.clone(),
        owner: OWNER.into(),
        jobs: n as u64,
        skipped: 0,
        in_flight_limit: 0,
        webhook_url: None,
    };
    batches.create(&spec).await.unwrap().unwrap();
    let jobs: Vec<_> = (0..written).map(request).collect();
    batches.enqueue_chunk(&id, OWNER, &jobs).await.unwrap();
    if commit {
        assert_eq!(batches.commit(&id).await.unwrap(), "in_progress");
    }
    id
}

async fn fetch(queue: &JobQueue, n: usize) -> Vec<Delivery> {
    let mut conn = queue.store().conn().await.unwrap();
    queue.fetch_any(&mut conn, "w1", BATCH, n).await.unwrap()
}

fn in_flight(redis: &dyn RedisUnderTest) -> i64 {
    redis::cmd("GET")
        .arg(owner_keys(redis).owner_in_flight(OWNER))
        .query::<Option<i64>>(redis.conn().as_mut())
        .unwrap()
        .unwrap_or(0)
}

fn dead_letters(redis: &dyn RedisUnderTest) -> i64 {
    redis::cmd("XLEN")
        .arg(owner_keys(redis).dead())
        .query(redis.conn().as_mut())
        .unwrap()
}

async fn each_job_is_counted_once_however_often_its_outcome_is_recorded(redis: &Backend) {
    let (queue, batches) = engine(redis).await;
    let id = batch(&batches, 3, 3, true).await;
    let jobs = fetch(&queue, 3).await;
    for job in &jobs {
        assert_eq!(batches.begin(job).await.unwrap(), Begin::Run);
    }
    let counts = batches.get(&id).await.unwrap().unwrap().counts;
    assert_eq!((counts.running, counts.queued), (3, 0));

    let ok = Outcome::Succeeded {
        result: serde_json::json!({"answer": "a"}),
    };
    let dead = Outcome::Dead {
        reason: "bad request".into(),
    };
    let retry = Outcome::Retry {
        error: "503".into(),
        delay: Duration::from_secs(3600),
    };
    // A duplicate delivery records the same outcome again: no effect.
    assert_eq!(queue.record(&[(&jobs[0], &ok)]).await.unwrap(), [true]);
    assert_eq!(queue.record(&[(&jobs[0], &ok)]).await.unwrap(), [false]);
    assert_eq!(queue.record(&[(&jobs[1], &dead)]).await.unwrap(), [true]);
    assert_eq!(queue.record(&[(&jobs[1], &dead)]).await.unwrap(), [false]);
    assert_eq!(queue.record(&[(&jobs[2], &retry)]).await.unwrap(), [true]);

    let info = batches.get(&id).await.unwrap().unwrap();
    let c = info.counts;
    assert_eq!(
        (c.total, c.succeeded, c.failed, c.running, c.queued),
        (3, 1, 1, 0, 1)
    );
    assert_eq!(info.status, "in_progress");
    assert_eq!(in_flight(redis), 1, "two finished jobs released the key");
    assert_eq!(
        dead_letters(redis),
        0,
        "a failed line is a result, not a dead letter"
    );
    let outcomes = batches.outcomes(&id, 0, 10).await.unwrap();
    let states: Vec<&str> = outcomes.iter().map(|o| o.state.as_str()).collect();
    assert_eq!(states, ["succeeded", "dead", "retrying"]);
    assert_eq!(outcomes[1].error.as_deref(), Some("bad request"));
}

async fn a_cancelled_batchs_queued_jobs_are_recorded_cancelled_and_never_run(redis: &Backend) {
    let (queue, batches) = engine(redis).await;
    let id = batch(&batches, 4, 4, true).await;
    let running = fetch(&queue, 1).await;
    assert_eq!(batches.begin(&running[0]).await.unwrap(), Begin::Run);

    assert_eq!(
        batches.cancel(&id).await.unwrap().as_deref(),
        Some("cancelling")
    );
    let rest = fetch(&queue, 10).await;
    assert_eq!(rest.len(), 3);
    for job in &rest {
        assert_eq!(batches.begin(job).await.unwrap(), Begin::Cancelled);
        // A second delivery of the same job finds it finished.
        assert_eq!(batches.begin(job).await.unwrap(), Begin::Finished);
    }
    let info = batches.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            info.status.as_str(),
            info.counts.cancelled,
            info.counts.running
        ),
        ("cancelling", 3, 1)
    );

    // The running job finishes; the batch becomes final.
    let ok = Outcome::Succeeded {
        result: serde_json::json!({"answer": "a"}),
    };
    queue.record(&[(&running[0], &ok)]).await.unwrap();
    let info = batches.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (info.status.as_str(), info.counts.succeeded),
        ("cancelled", 1)
    );
    assert!(info.finished_at.is_some());
    assert_eq!(in_flight(redis), 0);
    let stream_len: i64 = redis::cmd("XLEN")
        .arg(owner_keys(redis).stream())
        .query(redis.conn().as_mut())
        .unwrap();
    assert_eq!(
        stream_len, 0,
        "cancelled entries were acknowledged and deleted"
    );
}

async fn an_aborted_submission_releases_its_reservation_and_cancels_what_it_wrote(redis: &Backend) {
    let (queue, batches) = engine(redis).await;
    // Five reserved, two written, then Redis "failed": the api aborts.
    let id = batch(&batches, 5, 2, false).await;
    assert_eq!(in_flight(redis), 5);
    batches.abort(&id, "cut short").await.unwrap();
    assert_eq!(in_flight(redis), 2, "the three never written are released");
    let info = batches.get(&id).await.unwrap().unwrap();
    assert_eq!((info.status.as_str(), info.counts.total), ("failed", 2));
    // A chunk arriving late is refused.
    assert!(
        batches
            .enqueue_chunk(&id, OWNER, &[request(9)])
            .await
            .is_err()
    );

    for job in fetch(&queue, 10).await {
        assert_eq!(batches.begin(&job).await.unwrap(), Begin::Cancelled);
    }
    assert_eq!(in_flight(redis), 0);
    assert_eq!(batches.get(&id).await.unwrap().unwrap().counts.cancelled, 2);
}

async fn jobs_finishing_before_the_commit_complete_the_batch_at_the_commit(redis: &Backend) {
    let (queue, batches) = engine(redis).await;
    let id = batch(&batches, 2, 2, false).await;
    let ok = Outcome::Succeeded {
        result: serde_json::json!({"answer": "a"}),
    };
    for job in fetch(&queue, 2).await {
        batches.begin(&job).await.unwrap();
        queue.record(&[(&job, &ok)]).await.unwrap();
    }
    assert_eq!(
        batches.get(&id).await.unwrap().unwrap().status,
        "validating"
    );
    assert_eq!(batches.commit(&id).await.unwrap(), "completed");
}

async fn a_batch_abandoned_while_being_enqueued_fails_when_read(redis: &Backend) {
    let (_queue, batches) = engine(redis).await;
    let id = batch(&batches, 4, 1, false).await;
    assert_eq!(
        batches.get(&id).await.unwrap().unwrap().status,
        "validating"
    );
    // Opened 16 minutes ago and never committed (its api died, the abort lost).
    let long_ago = chrono::Utc::now().timestamp_millis() - 16 * 60 * 1000;
    redis::cmd("HSET")
        .arg(owner_keys(redis).batch(&id))
        .arg("created_ms")
        .arg(long_ago)
        .query::<()>(redis.conn().as_mut())
        .unwrap();

    let info = batches.get(&id).await.unwrap().unwrap();
    assert_eq!((info.status.as_str(), info.counts.total), ("failed", 1));
    assert_eq!(
        in_flight(redis),
        1,
        "only the written job still holds the key"
    );
}
