//! The queue engine against a real Redis: at-least-once through kill -9,
//! leases, retries and dead letters, Redis restarts, and priorities.
//! Assertions are on counts and order, never on wall-clock durations.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_common::job::{Delivery, JobId, JobState, NewJob};
use ferry_common::queue::{BATCH, JobQueue, WECHAT};
use ferry_tests::counting::{COUNT, Counting, EXECUTIONS_KEY, ORDER_KEY};
use ferry_tests::{Backend, RedisServer, RedisUnderTest, eventually};
use ferry_worker::handler::{Handler, HandlerError, Handlers, JobNotes};
use ferry_worker::job_retry::RetryPolicy;
use ferry_worker::{Worker, WorkerSettings};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

fn count_job(queue: &str, sleep_ms: u64) -> NewJob {
    NewJob {
        kind: COUNT.into(),
        queue: queue.into(),
        payload: serde_json::json!({ "sleep_ms": sleep_ms }),
        max_attempts: 5,
        idempotency: None,
    }
}

fn settings(concurrency: usize, visibility: Duration) -> WorkerSettings {
    let mut s = WorkerSettings::from_config(
        &ferry_common::Config::from_vars(Vec::<(String, String)>::new())
            .unwrap()
            .queue,
    );
    s.concurrency = concurrency;
    s.visibility_timeout = visibility;
    s.fetch_block = Duration::from_millis(100);
    s.shutdown_grace = Duration::from_secs(5);
    s
}

ferry_tests::on_one_redis_and_a_cluster!(
    kill_9_of_a_worker_loses_nothing_and_duplicates_at_most_its_in_flight_jobs,
    retries_wait_for_the_hint_then_dead_letter_with_the_reason_and_replay_works,
    wechat_jobs_are_fetched_before_a_batch_flood_queued_ahead_of_them,
    an_idempotency_key_returns_the_same_job_and_finished_records_expire,
);

/// The worker runtime in this process with the counting handler: its
/// shutdown token and task.
fn counting_worker(
    queue: &JobQueue,
    settings: WorkerSettings,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let handlers = Handlers::new().register(
        COUNT,
        Counting {
            store: queue.store().clone(),
        },
    );
    let worker = Worker::new(queue.clone(), handlers, settings);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    (shutdown, running)
}

/// A worker process running the real runtime with the counting handler.
struct WorkerProcess {
    child: Child,
    id: String,
}

impl WorkerProcess {
    fn spawn(redis: &dyn RedisUnderTest, concurrency: usize, visibility_secs: u64) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry_test_worker"))
            .envs(redis.env())
            .env("FERRY_WORKER_CONCURRENCY", concurrency.to_string())
            .env("FERRY_VISIBILITY_TIMEOUT", visibility_secs.to_string())
            .env("FERRY_FETCH_BLOCK_MS", "100")
            .env("LOG_LEVEL", "warn")
            .env("LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        Self {
            child,
            id: line.trim().to_owned(),
        }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn executions(redis: &dyn RedisUnderTest) -> HashMap<String, u64> {
    redis::cmd("HGETALL")
        .arg(EXECUTIONS_KEY)
        .query(redis.conn().as_mut())
        .unwrap()
}

/// Entries of `queue` (all its partitions) pending for one consumer.
fn pending_of(redis: &dyn RedisUnderTest, queue: &str, consumer: &str) -> u64 {
    let keys = redis.keys();
    let mut conn = redis.conn();
    let mut pending = 0;
    for partition in keys.partitions().of(queue) {
        let rows: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(keys.partition(&partition).stream())
            .arg("workers")
            .arg("-")
            .arg("+")
            .arg(100_000)
            .arg(consumer)
            .query(conn.as_mut())
            .unwrap();
        pending += rows.len() as u64;
    }
    pending
}

async fn state_of(queue: &JobQueue, id: &JobId) -> Option<JobState> {
    queue.job(id).await.ok().flatten().map(|r| r.state)
}

async fn states(queue: &JobQueue, ids: &[JobId]) -> HashMap<JobState, usize> {
    let mut out = HashMap::new();
    for id in ids {
        let record = queue.job(id).await.unwrap().expect("record exists");
        *out.entry(record.state).or_default() += 1;
    }
    out
}

async fn kill_9_of_a_worker_loses_nothing_and_duplicates_at_most_its_in_flight_jobs(
    redis: &Backend,
) {
    let queue = redis.job_queue().await;
    let mut ids = Vec::new();
    for _ in 0..3000 {
        ids.push(queue.enqueue(&count_job(WECHAT, 1)).await.unwrap().id);
    }
    let mut victim = WorkerProcess::spawn(&redis, 16, 2);
    let _others = [
        WorkerProcess::spawn(&redis, 16, 2),
        WorkerProcess::spawn(&redis, 16, 2),
    ];

    eventually(
        "a few hundred jobs done",
        Duration::from_secs(60),
        async || executions(&redis).len() >= 500,
    )
    .await;
    victim.kill9();
    let in_flight_at_kill = pending_of(&redis, WECHAT, &victim.id);
    assert!(
        executions(&redis).len() < 3000,
        "the kill must land in the middle of the run"
    );

    eventually("every job finished", Duration::from_secs(120), async || {
        let stats = queue.stats().await.unwrap();
        stats
            .iter()
            .all(|s| s.depth == 0 && s.pending == 0 && s.delayed == 0)
    })
    .await;
    let by_state = states(&queue, &ids).await;
    assert_eq!(
        by_state.get(&JobState::Succeeded),
        Some(&3000),
        "{by_state:?}"
    );
    let execs = executions(&redis);
    assert_eq!(execs.len(), 3000, "every job ran");
    let ran_twice = execs.values().filter(|n| **n > 1).count() as u64;
    assert!(
        execs.values().all(|n| *n <= 2),
        "no job ran more than twice"
    );
    assert!(
        ran_twice <= in_flight_at_kill,
        "{ran_twice} jobs ran twice, but only {in_flight_at_kill} were in flight at the kill"
    );
    println!("in flight at kill: {in_flight_at_kill}, ran twice: {ran_twice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_job_is_kept_while_its_worker_lives_and_taken_over_when_it_is_killed() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    // Visibility timeout 1 s; each job takes 3.5 s.
    let mut holder = WorkerProcess::spawn(&redis, 1, 1);
    let kept = queue.enqueue(&count_job(WECHAT, 3500)).await.unwrap().id;
    eventually(
        "the slow job started",
        Duration::from_secs(10),
        async || executions(&redis).contains_key(&kept.to_string()),
    )
    .await;
    let _other = WorkerProcess::spawn(&redis, 4, 1);
    eventually(
        "the slow job finished",
        Duration::from_secs(30),
        async || state_of(&queue, &kept).await == Some(JobState::Succeeded),
    )
    .await;
    assert_eq!(
        executions(&redis)[&kept.to_string()],
        1,
        "a live worker's job was taken over"
    );

    // Now the holder dies in the middle of a slow job.
    let orphan = queue.enqueue(&count_job(WECHAT, 3500)).await.unwrap().id;
    eventually("the orphan started", Duration::from_secs(10), async || {
        executions(&redis).contains_key(&orphan.to_string())
    })
    .await;
    let started_by_holder = pending_of(&redis, WECHAT, &holder.id) == 1;
    holder.kill9();
    eventually(
        "the orphan was taken over and finished",
        Duration::from_secs(30),
        async || state_of(&queue, &orphan).await == Some(JobState::Succeeded),
    )
    .await;
    if started_by_holder {
        assert_eq!(
            executions(&redis)[&orphan.to_string()],
            2,
            "taken over after the kill"
        );
    }
}

/// Fails until told otherwise, asking for a retry after a fixed hint.
struct Flaky {
    starts: Arc<Mutex<Vec<tokio::time::Instant>>>,
    succeed: Arc<Mutex<bool>>,
    hint: Duration,
}

impl Handler for Flaky {
    fn handle<'a>(
        &'a self,
        _job: &'a Delivery,
        _notes: JobNotes<'a>,
    ) -> BoxFuture<'a, Result<serde_json::Value, HandlerError>> {
        Box::pin(async move {
            self.starts
                .lock()
                .unwrap()
                .push(tokio::time::Instant::now());
            if *self.succeed.lock().unwrap() {
                Ok(serde_json::json!("finally"))
            } else {
                Err(HandlerError::Retry {
                    error: "upstream busy".into(),
                    after: Some(self.hint),
                })
            }
        })
    }
}

async fn retries_wait_for_the_hint_then_dead_letter_with_the_reason_and_replay_works(
    redis: &Backend,
) {
    let queue = redis.job_queue().await;
    let starts = Arc::new(Mutex::new(Vec::new()));
    let succeed = Arc::new(Mutex::new(false));
    let hint = Duration::from_millis(300);
    let handlers = Handlers::new().register(
        "test.flaky",
        Flaky {
            starts: starts.clone(),
            succeed: succeed.clone(),
            hint,
        },
    );
    let mut s = settings(4, Duration::from_secs(30));
    s.retry = RetryPolicy {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
    };
    let worker = Worker::new(queue.clone(), handlers, s);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));

    let job = NewJob {
        kind: "test.flaky".into(),
        queue: BATCH.into(),
        payload: serde_json::json!({}),
        max_attempts: 3,
        idempotency: None,
    };
    let id = queue.enqueue(&job).await.unwrap().id;
    eventually("dead-lettered", Duration::from_secs(20), async || {
        state_of(&queue, &id).await == Some(JobState::Dead)
    })
    .await;
    let record = queue.job(&id).await.unwrap().unwrap();
    assert_eq!(record.attempts, 3);
    assert_eq!(
        record.last_error.as_deref(),
        Some("gave up after 3 attempts: upstream busy")
    );
    let times = starts.lock().unwrap().clone();
    assert_eq!(times.len(), 3);
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= hint,
            "a retry came sooner than the upstream's hint"
        );
    }
    let letters = queue.dead_letters(BATCH, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].job_id, id.to_string());
    assert_eq!(letters[0].reason, "gave up after 3 attempts: upstream busy");

    *succeed.lock().unwrap() = true;
    assert_eq!(queue.replay(&letters).await.unwrap(), 1);
    eventually(
        "replayed job succeeded",
        Duration::from_secs(10),
        async || state_of(&queue, &id).await == Some(JobState::Succeeded),
    )
    .await;
    assert!(queue.dead_letters(BATCH, 10).await.unwrap().is_empty());
    let record = queue.job(&id).await.unwrap().unwrap();
    assert_eq!(record.attempts, 1, "a replay starts with fresh attempts");
    assert_eq!(record.result, Some(serde_json::json!("finally")));
    shutdown.cancel();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_aof_mid_run_loses_no_acknowledged_job() {
    let mut redis = RedisServer::start_with_aof();
    let queue = redis.job_queue().await;
    let (shutdown, running) = counting_worker(&queue, settings(16, Duration::from_secs(5)));

    // A producer that keeps whatever Redis acknowledged.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let producer = {
        let (queue, acknowledged) = (queue.clone(), acknowledged.clone());
        tokio::spawn(async move {
            let mut refused = 0;
            for _ in 0..1500 {
                match queue.enqueue(&count_job(WECHAT, 0)).await {
                    Ok(e) => acknowledged.lock().unwrap().push(e.id),
                    Err(_) => refused += 1,
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            refused
        })
    };
    eventually(
        "some jobs acknowledged",
        Duration::from_secs(30),
        async || acknowledged.lock().unwrap().len() >= 300,
    )
    .await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    let refused = producer.await.unwrap();
    let ids = acknowledged.lock().unwrap().clone();
    assert!(!ids.is_empty());
    eventually(
        "every acknowledged job succeeded",
        Duration::from_secs(60),
        async || {
            for id in &ids {
                if state_of(&queue, id).await != Some(JobState::Succeeded) {
                    return false;
                }
            }
            true
        },
    )
    .await;
    println!(
        "acknowledged {}, refused while Redis was down: {refused}",
        ids.len()
    );
    shutdown.cancel();
    running.await.unwrap();
}

async fn wechat_jobs_are_fetched_before_a_batch_flood_queued_ahead_of_them(redis: &Backend) {
    let queue = redis.job_queue().await;
    let mut batch = Vec::new();
    for _ in 0..2000 {
        batch.push(
            queue
                .enqueue(&count_job(BATCH, 2))
                .await
                .unwrap()
                .id
                .to_string(),
        );
    }
    let mut wechat = Vec::new();
    for _ in 0..20 {
        wechat.push(
            queue
                .enqueue(&count_job(WECHAT, 2))
                .await
                .unwrap()
                .id
                .to_string(),
        );
    }
    let concurrency = 8;
    let (shutdown, running) =
        counting_worker(&queue, settings(concurrency, Duration::from_secs(30)));

    // A trickle of WeChat jobs while the flood is being worked through.
    let mut trickle = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started_before: usize = redis::cmd("LLEN")
            .arg(ORDER_KEY)
            .query(redis.conn().as_mut())
            .unwrap();
        let id = queue
            .enqueue(&count_job(WECHAT, 2))
            .await
            .unwrap()
            .id
            .to_string();
        trickle.push((id, started_before));
    }
    eventually("all jobs ran", Duration::from_secs(120), async || {
        executions(&redis).len() == 2030
    })
    .await;
    let order: Vec<String> = redis::cmd("LRANGE")
        .arg(ORDER_KEY)
        .arg(0)
        .arg(-1)
        .query(redis.conn().as_mut())
        .unwrap();
    let position: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();

    // Up front: the 20 queued behind 2000 batch jobs start among the first
    // few, apart from the slots batch keeps.
    let last_wechat = wechat.iter().map(|id| position[id.as_str()]).max().unwrap();
    assert!(
        last_wechat < 20 + concurrency,
        "the last of the first 20 WeChat jobs started at position {last_wechat}"
    );
    // Trickle: each starts after at most two workers' worth of batch jobs
    // that started after it was enqueued: the jobs already in flight (a
    // handler notes its start when it runs, which may be after the enqueue)
    // and one fetch that chose batch just before the WeChat job arrived.
    // Out of 2,000 batch jobs queued ahead of it.
    for (id, started_before) in &trickle {
        let overtaken = position[id.as_str()].saturating_sub(*started_before);
        assert!(
            overtaken <= 2 * concurrency,
            "{overtaken} jobs started between a WeChat job's enqueue and its start"
        );
    }
    // And batch was never starved: it kept going while WeChat jobs waited.
    assert!(batch.iter().all(|id| position.contains_key(id.as_str())));
    shutdown.cancel();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_work_and_exits_0() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(queue.enqueue(&count_job(WECHAT, 500)).await.unwrap().id);
    }
    let mut worker = WorkerProcess::spawn(&redis, 4, 30);
    eventually("jobs started", Duration::from_secs(10), async || {
        !executions(&redis).is_empty()
    })
    .await;
    let status = worker.terminate();
    assert!(status.success(), "{status:?}");
    // What was in flight finished; what was not started is still queued.
    let by_state = states(&queue, &ids).await;
    assert_eq!(by_state.get(&JobState::Running), None, "{by_state:?}");
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        stats.iter().map(|s| s.pending).sum::<u64>(),
        0,
        "nothing left pending after a graceful stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_survives_redis_losing_everything_and_keeps_serving() {
    // No persistence: a restart loses the functions, the groups and the data.
    let mut redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let (shutdown, running) = counting_worker(&queue, settings(8, Duration::from_secs(5)));
    let before = queue.enqueue(&count_job(WECHAT, 0)).await.unwrap().id;
    eventually("first job done", Duration::from_secs(10), async || {
        state_of(&queue, &before).await == Some(JobState::Succeeded)
    })
    .await;

    redis.restart();
    // The producer's first call finds the functions missing, reloads them
    // and succeeds; the worker recreates its consumer group and goes on.
    let after = queue
        .enqueue(&count_job(WECHAT, 0))
        .await
        .expect("enqueue reloads the functions");
    eventually(
        "a job enqueued after the restart is done",
        Duration::from_secs(30),
        async || state_of(&queue, &after.id).await == Some(JobState::Succeeded),
    )
    .await;
    shutdown.cancel();
    running.await.unwrap();
}

async fn an_idempotency_key_returns_the_same_job_and_finished_records_expire(redis: &Backend) {
    let queue = redis.job_queue().await;
    let mut job = count_job(BATCH, 0);
    job.idempotency = Some(ferry_common::job::Idempotency {
        key: "client-key-1".into(),
        ttl: Duration::from_secs(60),
    });
    let first = queue.enqueue(&job).await.unwrap();
    let second = queue.enqueue(&job).await.unwrap();
    assert!(first.created && !second.created);
    assert_eq!(first.id, second.id);
    let len: u64 = redis::cmd("XLEN")
        .arg(redis.keys().partition(&first.id.partition()).stream())
        .query(redis.conn().as_mut())
        .unwrap();
    assert_eq!(len, 1);

    let (shutdown, running) = counting_worker(&queue, settings(2, Duration::from_secs(5)));
    eventually("done", Duration::from_secs(10), async || {
        state_of(&queue, &first.id).await == Some(JobState::Succeeded)
    })
    .await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(
            redis
                .keys()
                .partition(&first.id.partition())
                .job(&first.id.to_string()),
        )
        .query(redis.conn().as_mut())
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 3600,
        "a finished record expires after the retention, ttl={ttl}"
    );
    let record = queue.job(&first.id).await.unwrap().unwrap();
    assert_eq!(record.attempts, 1);
    assert!(record.finished_at.unwrap() >= record.started_at.unwrap());
    shutdown.cancel();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_workers_are_registered_and_a_killed_one_disappears() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    let registry = ferry_common::fleet::WorkerRegistry::new(queue.store().clone());
    let mut a = WorkerProcess::spawn(&redis, 3, 30);
    let b = WorkerProcess::spawn(&redis, 5, 30);
    eventually("both registered", Duration::from_secs(10), async || {
        registry.live().await.unwrap().len() == 2
    })
    .await;
    let live = registry.live().await.unwrap();
    let b_fields = &live
        .iter()
        .find(|(id, _)| *id == b.id)
        .expect("b is live")
        .1;
    assert_eq!(b_fields["concurrency"], "5");
    assert_eq!(b_fields["queues"], "wechat,batch");
    assert!(b_fields.contains_key("in_flight:wechat"));

    a.kill9();
    // Its record expires with the heartbeat TTL; nobody has to clean up.
    eventually(
        "the killed worker disappears",
        Duration::from_secs(30),
        async || {
            let live = registry.live().await.unwrap();
            live.len() == 1 && live[0].0 == b.id
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queues_and_dlq_commands_show_and_replay_dead_letters() {
    let redis = RedisServer::start();
    let queue = redis.job_queue().await;
    // A job of a kind no worker handles is dead-lettered with that reason.
    let mut orphan = count_job(BATCH, 0);
    orphan.kind = "no.such.kind".into();
    let id = queue.enqueue(&orphan).await.unwrap().id;
    let worker = Worker::new(
        queue.clone(),
        Handlers::new(),
        settings(2, Duration::from_secs(5)),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    eventually("dead", Duration::from_secs(10), async || {
        state_of(&queue, &id).await == Some(JobState::Dead)
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();

    let ferry = |args: &[&str]| {
        let out = Command::new(ferry_tests::ferry_binary())
            .args(args)
            .env("REDIS_URL", redis.url())
            .env("LOG_LEVEL", "error")
            .output()
            .expect("the ferry binary is built before the tests (scripts/test)");
        assert!(
            out.status.success(),
            "ferry {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let queues = ferry(&["queues"]);
    let batch_line = queues.lines().find(|l| l.starts_with("batch")).unwrap();
    assert_eq!(
        batch_line.split_whitespace().nth(6),
        Some("1"),
        "one dead letter:\n{queues}"
    );
    let list = ferry(&["dlq", "list", "--queue", "batch"]);
    assert!(
        list.contains(&id.to_string()) && list.contains("no handler for job kind"),
        "{list}"
    );
    let show = ferry(&["dlq", "show", &id.to_string()]);
    assert!(show.contains("\"state\": \"dead\""), "{show}");
    assert!(ferry(&["dlq", "replay", "--queue", "batch", &id.to_string()]).contains("replayed 1"));
    assert_eq!(state_of(&queue, &id).await, Some(JobState::Queued));
    assert!(queue.dead_letters(BATCH, 10).await.unwrap().is_empty());
}

/// The queue engine on one Redis with its queues split as `spec` says
/// (`FERRY_QUEUE_PARTITIONS`), migrated, the fleet's partition marks read.
async fn partitioned_queue(redis: &RedisServer, spec: &str) -> JobQueue {
    let partitions =
        ferry_common::keys::Partitions::parse(spec, ferry_common::queue::QUEUES).unwrap();
    let target =
        ferry_common::connection::RedisTarget::Single(ferry_common::Secret::new(redis.url()));
    let keys = ferry_common::Keys::new("ferry").with_partitions(partitions);
    let store = ferry_common::store::Store::new(&target, 4, keys).unwrap();
    let mut conn = store.conn().await.unwrap();
    ferry_common::schema::migrate(&mut conn, store.keys(), "test")
        .await
        .unwrap();
    let queue = JobQueue::new(store, Duration::from_secs(3600));
    queue.refresh_partitions().await.unwrap();
    queue
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_the_partition_count_strands_nothing_the_old_partitions_are_drained() {
    let redis = RedisServer::start();
    // Yesterday: wechat in four partitions, jobs spread over all of them.
    let before = partitioned_queue(&redis, "wechat=4").await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(before.enqueue(&count_job(WECHAT, 0)).await.unwrap().id);
    }
    let spread: std::collections::HashSet<u16> =
        ids.iter().map(|id| id.partition().index).collect();
    assert!(spread.len() > 1, "jobs in several partitions: {spread:?}");

    // Today: one partition configured. The worker still serves all four.
    let after = partitioned_queue(&redis, "").await;
    assert_eq!(after.served_partitions(WECHAT).len(), 4);
    let (shutdown, running) = counting_worker(&after, settings(8, Duration::from_secs(30)));
    eventually("every old job ran", Duration::from_secs(30), async || {
        states(&after, &ids).await.get(&JobState::Succeeded) == Some(&40)
    })
    .await;
    // New jobs go to partition 0 only.
    let new = after.enqueue(&count_job(WECHAT, 0)).await.unwrap().id;
    assert_eq!(new.partition().index, 0);
    shutdown.cancel();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_partition_starves_behind_a_flood_in_another() {
    let redis = RedisServer::start();
    let queue = partitioned_queue(&redis, "wechat=4").await;
    let keys = queue.keys().clone();
    // Dedup keys choose the partition: 1,500 jobs in partition 0, then 10
    // in partition 2.
    let keyed = |partition: u16, n: usize| -> Vec<NewJob> {
        (0..)
            .map(|i| format!("k{partition}-{i}"))
            .filter(|k| keys.partitions().place(WECHAT, k).index == partition)
            .take(n)
            .map(|key| {
                let mut job = count_job(WECHAT, 2);
                job.idempotency = Some(ferry_common::job::Idempotency {
                    key,
                    ttl: Duration::from_secs(600),
                });
                job
            })
            .collect()
    };
    queue.enqueue_many(&keyed(0, 1500)).await.unwrap();
    let late: Vec<String> = queue
        .enqueue_many(&keyed(2, 10))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    let concurrency = 8;
    let (shutdown, running) =
        counting_worker(&queue, settings(concurrency, Duration::from_secs(30)));
    eventually(
        "the late partition's jobs ran",
        Duration::from_secs(60),
        async || {
            let ran = executions(&redis);
            late.iter().all(|id| ran.contains_key(id))
        },
    )
    .await;
    shutdown.cancel();
    running.await.unwrap();
    let order: Vec<String> = redis::cmd("LRANGE")
        .arg(ORDER_KEY)
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .unwrap();
    let last_late = order
        .iter()
        .position(|id| id == late.last().unwrap())
        .unwrap()
        .max(
            late.iter()
                .map(|l| order.iter().position(|id| id == l).unwrap())
                .max()
                .unwrap(),
        );
    // Each round starts at the next partition: the late ones go within a
    // few rounds of slots, not after the 1,500 queued ahead of them.
    assert!(
        last_late < 4 * concurrency + late.len(),
        "the last job of the late partition started at position {last_late} of {}",
        order.len()
    );
}
