//! The fleet-wide provider gate against a real Redis: several gates with
//! their own connection pools stand for several worker processes.

use std::time::Duration;

use ferry_common::Keys;
use ferry_common::fleet::{
    Admission, BreakerSettings, Breakers, CallResult, Denial, GateSettings, ProviderGate,
};
use ferry_common::store::Store;
use ferry_tests::RedisServer;

/// A Redis handle as one process would have it (its own pool).
fn store(redis: &RedisServer, pool_size: usize) -> Store {
    redis.store(pool_size)
}

/// A user's message-limit key.
fn user_limit(openid: &str) -> String {
    Keys::new("ferry").user(ferry_common::keys::UserKey::Limit, openid)
}

/// A gate as one process would have it.
fn gate(redis: &RedisServer, settings: &GateSettings) -> ProviderGate {
    ProviderGate::new(&store(redis, 4), "deepseek", settings.clone())
}

fn breaker_settings() -> BreakerSettings {
    BreakerSettings {
        window: Duration::from_secs(30),
        minimum_calls: 4,
        failure_rate: 0.5,
        open_for: Duration::from_millis(400),
        open_for_quota: Duration::from_secs(60),
        slow_call: None,
    }
}

fn granted(a: Admission) -> ferry_common::fleet::Pass {
    match a {
        Admission::Granted(p) => p,
        Admission::Denied { why, .. } => panic!("denied: {why:?}"),
    }
}

fn denial(a: &Admission) -> Option<Denial> {
    match a {
        Admission::Granted(_) => None,
        Admission::Denied { why, .. } => Some(*why),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fleet_wide_lets_exactly_one_probe_through_and_closes_on_success() {
    let redis = RedisServer::start();
    redis.migrate().await;
    let settings = GateSettings {
        breaker: breaker_settings(),
        ..GateSettings::default()
    };
    let gates: Vec<ProviderGate> = (0..3).map(|_| gate(&redis, &settings)).collect();
    // Four failures from different processes reach the minimum: it opens.
    let mut last = None;
    for i in 0..4 {
        let pass = granted(gates[i % 3].admit(10).await);
        last = gates[i % 3]
            .settle(
                pass,
                CallResult::Failure,
                Duration::ZERO,
                None,
                None,
                "HTTP 503",
            )
            .await;
    }
    assert_eq!(last.unwrap().state, "open");
    for g in &gates {
        assert_eq!(
            denial(&g.admit(10).await),
            Some(Denial::Open),
            "every process sees it open"
        );
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    // After the cool-down, all three ask at once: exactly one probe.
    let (a, b, c) = tokio::join!(gates[0].admit(10), gates[1].admit(10), gates[2].admit(10));
    let admissions = [a, b, c];
    let probes: Vec<_> = admissions
        .into_iter()
        .filter_map(|a| match a {
            Admission::Granted(p) => Some(p),
            Admission::Denied { why, .. } => {
                assert_eq!(why, Denial::Open);
                None
            }
        })
        .collect();
    assert_eq!(probes.len(), 1, "exactly one probe fleet-wide");
    assert!(probes[0].is_probe());
    let state = gates[0]
        .settle(
            probes[0].clone(),
            CallResult::Success,
            Duration::ZERO,
            None,
            None,
            "",
        )
        .await
        .unwrap();
    assert_eq!((state.state.as_str(), state.changed), ("closed", true));
    assert!(matches!(gates[2].admit(10).await, Admission::Granted(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_whose_owner_died_does_not_leave_the_breaker_stuck() {
    let redis = RedisServer::start();
    redis.migrate().await;
    let settings = GateSettings {
        lease_ttl: Duration::from_millis(300),
        breaker: breaker_settings(),
        ..GateSettings::default()
    };
    let (owner, other) = (gate(&redis, &settings), gate(&redis, &settings));
    Breakers::new(store(&redis, 1))
        .force_open("deepseek", Duration::from_millis(100), "test")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let probe = granted(owner.admit(10).await);
    assert!(probe.is_probe());
    drop(probe); // The owner dies: it never settles.
    assert_eq!(
        denial(&other.admit(10).await),
        Some(Denial::Open),
        "the probe is still out"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let second = granted(other.admit(10).await);
    assert!(
        second.is_probe(),
        "the expired probe lease lets another probe go"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_auth_failures_open_the_breaker_at_once_and_for_long() {
    let redis = RedisServer::start();
    redis.migrate().await;
    let settings = GateSettings {
        breaker: breaker_settings(),
        ..GateSettings::default()
    };
    let g = gate(&redis, &settings);
    let pass = granted(g.admit(10).await);
    let state = g
        .settle(
            pass,
            CallResult::Quota,
            Duration::ZERO,
            None,
            None,
            "insufficient_quota",
        )
        .await
        .unwrap();
    assert_eq!(state.state, "open");
    match g.admit(10).await {
        Admission::Denied { why, retry_after } => {
            assert_eq!(why, Denial::Open);
            assert!(
                retry_after > Duration::from_secs(30),
                "open for the long quota period, {retry_after:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let views = Breakers::new(store(&redis, 1))
        .list(&["deepseek"])
        .await
        .unwrap();
    assert_eq!(views[0].state, "open");
    assert_eq!(views[0].reason.as_deref(), Some("insufficient_quota"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds_across_processes_and_a_lost_lease_expires() {
    let redis = RedisServer::start();
    redis.migrate().await;
    let settings = GateSettings {
        max_concurrency: 2,
        lease_ttl: Duration::from_millis(300),
        ..GateSettings::default()
    };
    let gates: Vec<ProviderGate> = (0..3).map(|_| gate(&redis, &settings)).collect();
    let first = granted(gates[0].admit(1).await);
    let _second = granted(gates[1].admit(1).await);
    assert_eq!(denial(&gates[2].admit(1).await), Some(Denial::Concurrency));
    gates[0]
        .settle(first, CallResult::Success, Duration::ZERO, None, None, "")
        .await;
    let third = granted(gates[2].admit(1).await);
    assert_eq!(denial(&gates[0].admit(1).await), Some(Denial::Concurrency));
    drop(third); // Its holder crashed: the lease frees itself.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(matches!(gates[0].admit(1).await, Admission::Granted(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_hint_seen_by_one_process_slows_the_whole_fleet() {
    let redis = RedisServer::start();
    redis.migrate().await;
    let settings = GateSettings::default();
    let (a, b) = (gate(&redis, &settings), gate(&redis, &settings));
    let pass = granted(a.admit(1).await);
    a.settle(
        pass,
        CallResult::RateLimited,
        Duration::ZERO,
        None,
        Some(Duration::from_secs(20)),
        "429",
    )
    .await;
    match b.admit(1).await {
        Admission::Denied { why, retry_after } => {
            assert_eq!(why, Denial::Rate);
            assert!(retry_after > Duration::from_secs(15), "{retry_after:?}");
        }
        other => panic!("the other process was not slowed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_reserved_from_the_estimate_and_corrected_from_usage() {
    let redis = RedisServer::start();
    redis.migrate().await;
    let settings = GateSettings {
        tokens_per_minute: 6000,
        ..GateSettings::default()
    };
    let g = gate(&redis, &settings);
    // A minute's worth reserved by an over-estimate...
    let pass = granted(g.admit(6000).await);
    assert_eq!(denial(&g.admit(100).await), Some(Denial::Tokens));
    // ...is given back when the answer says only 100 were used.
    g.settle(
        pass,
        CallResult::Success,
        Duration::ZERO,
        Some(100),
        None,
        "",
    )
    .await;
    assert!(matches!(g.admit(100).await, Admission::Granted(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_subject_limit_is_shared_by_every_process() {
    let redis = RedisServer::start();
    redis.migrate().await;
    let limit = |_: usize| ferry_common::fleet::RateLimit::new(store(&redis, 2), 6, 2);
    let (a, b) = (limit(0), limit(1));
    use ferry_common::fleet::Verdict;
    assert_eq!(a.check(&user_limit("o_1")).await.unwrap(), Verdict::Allowed);
    assert_eq!(
        b.check(&user_limit("o_1")).await.unwrap(),
        Verdict::Allowed,
        "the burst of 2"
    );
    match a.check(&user_limit("o_1")).await.unwrap() {
        Verdict::Limited(wait) => assert!(
            wait > Duration::from_secs(5) && wait <= Duration::from_secs(10),
            "{wait:?}"
        ),
        Verdict::Allowed => panic!("a third message within the burst window passed"),
    }
    assert_eq!(
        b.check(&user_limit("o_2")).await.unwrap(),
        Verdict::Allowed,
        "another user has a budget of their own"
    );
}
