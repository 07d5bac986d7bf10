//! `ferry migrate --status` reports the Redis it found, including the
//! stream node size Ferry recommends (advice: Ferry is correct without it),
//! and the deployment file sets that size.

use std::process::Command;

use ferry_common::Keys;
use ferry_common::schema::{self, RECOMMENDED_STREAM_NODE_ENTRIES};
use ferry_tests::RedisServer;

fn migrate_status(redis: &RedisServer) -> String {
    let out = Command::new(ferry_tests::ferry_binary())
        .args(["migrate", "--status"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REDIS_URL", redis.url())
        .env("LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_stream_node_size_is_reported_against_the_recommendation() {
    let redis = RedisServer::start();
    redis.migrate().await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = Keys::new("ferry");

    // A stock Redis: 100 entries a node, and the advice says so.
    let status = schema::status(&mut conn, &keys).await.unwrap();
    assert!(status.is_current());
    assert_eq!(status.stream_node_entries, Some(100));
    let shown = migrate_status(&redis);
    assert!(
        shown.contains("stream nodes:      100 entries; Ferry recommends 16"),
        "{shown}"
    );

    // Configured as compose.yaml does.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(RECOMMENDED_STREAM_NODE_ENTRIES)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let status = schema::status(&mut conn, &keys).await.unwrap();
    assert_eq!(
        status.stream_node_entries,
        Some(RECOMMENDED_STREAM_NODE_ENTRIES)
    );
    let shown = migrate_status(&redis);
    assert!(
        shown.contains("stream nodes:      16 entries (as recommended)"),
        "{shown}"
    );
}

#[test]
fn compose_gives_redis_the_recommended_stream_node_size() {
    let compose = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose.yaml"),
    )
    .unwrap();
    let setting = format!(r#""--stream-node-max-entries", "{RECOMMENDED_STREAM_NODE_ENTRIES}""#);
    assert!(compose.contains(&setting), "compose.yaml sets {setting}");
}
