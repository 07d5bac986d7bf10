//! Every metric name Ferry exports, spelled here and nowhere else, with the
//! labels each one takes.
//!
//! Metrics are recorded through the `metrics` facade where things happen
//! (ingress, jobs, provider calls, reply delivery); the api installs the
//! Prometheus recorder and serves `/metrics` (see `ferry_api::metrics`).
//! Without a recorder (a CLI command, a unit test) recording costs nothing.
//!
//! Labels have bounded values only: route templates, queue and provider
//! names from the configuration, job kinds known to the worker, failure
//! classes, WeChat errcodes. Never an openid, a token, a message or an error
//! text.

/// `ferry_http_requests_total{route, method, status}`: api responses.
pub const HTTP_REQUESTS: &str = "ferry_http_requests_total";
/// `ferry_http_request_duration_seconds{route, method}`: api latency.
pub const HTTP_DURATION: &str = "ferry_http_request_duration_seconds";

/// `ferry_queue_depth{queue}`: entries no worker has read yet.
pub const QUEUE_DEPTH: &str = "ferry_queue_depth";
/// `ferry_partition_depth{queue,partition}`: one partition's
/// `ferry_queue_depth` (a queue split by `FERRY_QUEUE_PARTITIONS`; a lagging
/// partition shows here while the queue's sum looks fine).
pub const PARTITION_DEPTH: &str = "ferry_partition_depth";
/// `ferry_partition_pending{queue,partition}`: one partition's entries read
/// and not yet acknowledged.
pub const PARTITION_PENDING: &str = "ferry_partition_pending";
/// `ferry_queue_pending{queue}`: entries read and not yet acknowledged.
pub const QUEUE_PENDING: &str = "ferry_queue_pending";
/// `ferry_queue_in_flight{queue}`: jobs live workers report running.
pub const QUEUE_IN_FLIGHT: &str = "ferry_queue_in_flight";
/// `ferry_queue_delayed{queue}`: retries waiting for their due time.
pub const QUEUE_DELAYED: &str = "ferry_queue_delayed";
/// `ferry_queue_dead{queue}`: entries in the dead-letter stream.
pub const QUEUE_DEAD: &str = "ferry_queue_dead";
/// `ferry_queue_oldest_age_seconds{queue}`: age of the oldest stream entry
/// (0 when the stream is empty).
pub const QUEUE_OLDEST_AGE: &str = "ferry_queue_oldest_age_seconds";
/// `ferry_redis_up`: 1 when the last scrape could read Redis, else 0.
pub const REDIS_UP: &str = "ferry_redis_up";

/// `ferry_jobs_total{queue, kind, outcome}`: finished attempts; outcome is
/// `succeeded`, `retried` or `dead`.
pub const JOBS: &str = "ferry_jobs_total";
/// `ferry_job_duration_seconds{queue, kind}`: one attempt's handler time.
pub const JOB_DURATION: &str = "ferry_job_duration_seconds";

/// `ferry_jobs_taken_over_total{queue, reason}`: jobs a worker took over
/// from another: `worker_gone` (its heartbeat lapsed), `lease_expired`
/// (idle past the visibility timeout: the backstop), or `lost_fetch` (read
/// for this worker by a fetch whose reply never arrived: a broken
/// connection, a cluster failover).
pub const JOBS_TAKEN_OVER: &str = "ferry_jobs_taken_over_total";

/// `ferry_provider_calls_total{provider, outcome}`: calls (each attempt)
/// that reached a provider; outcome `success` or a failure class.
pub const PROVIDER_CALLS: &str = "ferry_provider_calls_total";
/// `ferry_provider_errors_total{provider, class}`: failed calls by class.
pub const PROVIDER_ERRORS: &str = "ferry_provider_errors_total";
/// `ferry_provider_latency_seconds{provider}`: one call, sent to answered.
pub const PROVIDER_LATENCY: &str = "ferry_provider_latency_seconds";
/// `ferry_provider_tokens_total{provider, type}`: `prompt` and `completion`
/// tokens the providers reported.
pub const PROVIDER_TOKENS: &str = "ferry_provider_tokens_total";

/// `ferry_breaker_state{provider}`: 0 closed, 1 half-open, 2 open (read
/// from Redis on scrape).
pub const BREAKER_STATE: &str = "ferry_breaker_state";
/// `ferry_breaker_transitions_total{provider, to}`: breaker moves this
/// process caused or saw (`open`, `half_open`, `closed`).
pub const BREAKER_TRANSITIONS: &str = "ferry_breaker_transitions_total";
/// `ferry_limiter_rejections_total{limiter}`: requests held back by a
/// limiter: `ip` (api), `user` (per-user messages), `provider_rate` (also
/// a 429 hint slowing the fleet), `provider_tokens`, `provider_concurrency`,
/// `breaker_open`.
pub const LIMITER_REJECTIONS: &str = "ferry_limiter_rejections_total";

/// `ferry_wechat_sends_total`: messages WeChat accepted.
pub const WECHAT_SENDS: &str = "ferry_wechat_sends_total";
/// `ferry_wechat_send_errors_total{errcode}`: WeChat's non-zero errcodes,
/// and `errcode="none"` for calls that got no usable answer.
pub const WECHAT_SEND_ERRORS: &str = "ferry_wechat_send_errors_total";
/// `ferry_wechat_token_refreshes_total`: access tokens fetched.
pub const WECHAT_TOKEN_REFRESHES: &str = "ferry_wechat_token_refreshes_total";
/// `ferry_wechat_token_invalidations_total`: cached tokens dropped after
/// WeChat refused them.
pub const WECHAT_TOKEN_INVALIDATIONS: &str = "ferry_wechat_token_invalidations_total";
/// `ferry_wechat_apologies_total`: apologies sent when the AI failed.
pub const WECHAT_APOLOGIES: &str = "ferry_wechat_apologies_total";

/// `ferry_security_events_total{kind}`: refused requests that look like
/// attacks (`bad_signature`, `replay`, `rate_limited`, `forbidden_xml`, ...).
pub const SECURITY_EVENTS: &str = "ferry_security_events_total";

/// `ferry_workers_live`: workers in the registry (read on scrape).
pub const WORKERS_LIVE: &str = "ferry_workers_live";
/// `ferry_alerts_active{alert}`: 1 while this process's alert fires.
pub const ALERTS_ACTIVE: &str = "ferry_alerts_active";
/// `ferry_build_info{version, schema}`: always 1; which binary (and which
/// schema version it needs) each process runs, to watch a deploy or a
/// rollback go through the fleet.
pub const BUILD_INFO: &str = "ferry_build_info";

/// `ferry_allocator_allocated_bytes`: bytes the process's allocator has
/// handed out and not had back (jemalloc's `stats.allocated`), read on
/// scrape; absent when the binary allocates otherwise (tests).
pub const ALLOCATOR_ALLOCATED: &str = "ferry_allocator_allocated_bytes";
/// `ferry_allocator_resident_bytes`: bytes of the allocator's pages in
/// physical memory (`stats.resident`): allocated plus what is freed but
/// not yet given back, plus its own metadata. Beside the process's RSS it
/// tells live data from allocator slack.
pub const ALLOCATOR_RESIDENT: &str = "ferry_allocator_resident_bytes";

/// `ferry_history_dropped_minutes_total`: minutes of fleet history a
/// process gave up on because Redis stayed away longer than it keeps them
/// (`common/src/history/`).
pub const HISTORY_DROPPED: &str = "ferry_history_dropped_minutes_total";

/// Latency bucket bounds (seconds) of `/wechat`-like requests: the
/// Prometheus histogram of [`HTTP_DURATION`] and the fleet history's
/// per-minute p95. 5 is a bound on purpose (`RESPONSE_TIME_THRESHOLD`'s
/// default), and the steps around it are fine enough to place a p95.
pub const HTTP_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0,
];
/// Latency bucket bounds (seconds) of AI calls and jobs, which take
/// seconds to minutes.
pub const SLOW_LATENCY_BUCKETS: &[f64] =
    &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0];

/// Every name above (the deploy files' test checks their expressions
/// against it).
pub const ALL: &[&str] = &[
    HTTP_REQUESTS,
    HTTP_DURATION,
    QUEUE_DEPTH,
    PARTITION_DEPTH,
    PARTITION_PENDING,
    QUEUE_PENDING,
    QUEUE_IN_FLIGHT,
    QUEUE_DELAYED,
    QUEUE_DEAD,
    QUEUE_OLDEST_AGE,
    REDIS_UP,
    JOBS,
    JOB_DURATION,
    JOBS_TAKEN_OVER,
    PROVIDER_CALLS,
    PROVIDER_ERRORS,
    PROVIDER_LATENCY,
    PROVIDER_TOKENS,
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    LIMITER_REJECTIONS,
    WECHAT_SENDS,
    WECHAT_SEND_ERRORS,
    WECHAT_TOKEN_REFRESHES,
    WECHAT_TOKEN_INVALIDATIONS,
    WECHAT_APOLOGIES,
    SECURITY_EVENTS,
    WORKERS_LIVE,
    ALERTS_ACTIVE,
    BUILD_INFO,
    ALLOCATOR_ALLOCATED,
    ALLOCATOR_RESIDENT,
    HISTORY_DROPPED,
];

/// Breaker state as a gauge value.
pub fn breaker_state_value(state: &str) -> f64 {
    match state {
        "open" => 2.0,
        "half_open" | "half-open" => 1.0,
        _ => 0.0,
    }
}
