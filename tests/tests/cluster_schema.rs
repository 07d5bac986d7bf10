//! Ferry's schema on a Redis Cluster, as an operator meets it:
//!
//! - the wrong kind of Redis stops start-up with one line naming the
//!   variable (a cluster node in `REDIS_URL`, a plain Redis in
//!   `REDIS_CLUSTER_NODES`);
//! - `ferry migrate` loads the function libraries on every primary and says
//!   so, and a primary that lacks them later (a shard added, a slot moved to
//!   a node without them) gets them on the first call that needs them, with
//!   nothing the other shards did repeated.

use std::process::Command;

use ferry_common::job::NewJob;
use ferry_common::queue::WECHAT;
use ferry_tests::redis_cluster::RedisCluster;
use ferry_tests::{Backend, RedisServer, ferry_binary};

fn ferry(args: &[&str], env: &[(&str, String)]) -> (bool, String, String) {
    let out = Command::new(ferry_binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("LOG_LEVEL", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_wrong_kind_of_redis_stops_start_up_with_one_line_naming_the_variable() {
    let cluster = RedisCluster::start();
    let plain = RedisServer::start();
    let node = cluster.urls()[0].clone();

    let (ok, _, err) = ferry(&["migrate"], &[("REDIS_URL", node)]);
    assert!(!ok);
    let line = err.trim();
    assert_eq!(line.lines().count(), 1, "{err}");
    assert!(
        line.contains("REDIS_URL") && line.contains("REDIS_CLUSTER_NODES"),
        "{line}"
    );

    let (ok, _, err) = ferry(&["migrate"], &[("REDIS_CLUSTER_NODES", plain.url())]);
    assert!(!ok);
    let line = err.trim();
    assert_eq!(line.lines().count(), 1, "{err}");
    assert!(
        line.starts_with("ferry: REDIS_CLUSTER_NODES") && line.contains("without cluster mode"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_loads_the_functions_on_every_primary_and_a_primary_without_them_gets_them_back() {
    let backend = Backend::cluster();
    let Backend::Cluster(cluster) = &backend else {
        unreachable!()
    };
    let (ok, out, err) = ferry(&["migrate"], &backend.env());
    assert!(ok, "{err}");
    let loaded: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("primary ") && l.ends_with("libraries loaded"))
        .collect();
    assert_eq!(loaded.len(), 3, "every primary has the libraries:\n{out}");
    let placed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("partition ") && l.contains(": on 127.0.0.1:"))
        .collect();
    assert_eq!(
        placed.len(),
        8,
        "where each of 4 + 4 partitions lives:\n{out}"
    );

    // One primary loses them.
    let bare = cluster.primary_for_key("{ferry:wechat}:stream");
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut cluster.connection(&bare))
        .unwrap();
    let queue = backend.job_queue().await;
    // job_queue migrated again: flush once more, so the calls below meet a
    // primary without the functions.
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut cluster.connection(&bare))
        .unwrap();

    // Jobs spread over every partition, so some go to the bare primary and
    // the others to primaries that have the functions, in one pipeline.
    let jobs: Vec<NewJob> = (0..40)
        .map(|i| NewJob {
            kind: "noop".into(),
            queue: WECHAT.into(),
            payload: serde_json::json!({ "i": i }),
            max_attempts: 3,
            idempotency: None,
        })
        .collect();
    let enqueued = queue.enqueue_many(&jobs).await.unwrap();
    assert_eq!(enqueued.len(), 40);

    // The operator's view: the sum per queue, and each partition.
    let (ok, out, err) = ferry(&["queues", "--partitions"], &backend.env());
    assert!(ok, "{err}");
    let wechat = out.lines().find(|l| l.starts_with("wechat ")).unwrap();
    let columns: Vec<&str> = wechat.split_whitespace().collect();
    assert_eq!(
        (columns[1], columns[2]),
        ("4", "40"),
        "4 partitions, 40 waiting:\n{out}"
    );
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("wechat") && l.starts_with("  "))
        .collect();
    assert_eq!(rows.len(), 4, "{out}");
    let depth: u64 = rows
        .iter()
        .map(|r| r.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(depth, 40, "{out}");
    let (_, out, err) = ferry(&["status", "--partitions"], &backend.env());
    assert!(
        out.contains("partitions of wechat:") && out.contains("wechat:3"),
        "{out}{err}"
    );
    let mut conn = queue.store().conn().await.unwrap();
    let fetched = queue.fetch_any(&mut conn, "w1", WECHAT, 100).await.unwrap();
    assert_eq!(
        fetched.len(),
        40,
        "every job was enqueued once and is read once, none repeated"
    );
    let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .query(&mut cluster.connection(&bare))
        .unwrap();
    assert_eq!(
        libraries.len(),
        ferry_common::schema::LIBRARIES.len(),
        "the bare primary has them again"
    );
    backend.assert_no_crossslot();
}
