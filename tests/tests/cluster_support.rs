//! The loopback Redis Cluster test support itself: it starts, serves a key
//! from the primary that owns it, survives that primary's kill -9 by
//! promoting its replica, and counts the CROSSSLOT errors Redis returned.

use std::time::Instant;

use ferry_tests::redis_cluster::RedisCluster;

#[test]
fn loopback_cluster_starts_and_fails_over() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start();
    eprintln!("cluster healthy after {:?}", started.elapsed());
    assert_eq!(cluster.urls().len(), 6);
    assert_eq!(cluster.nodes_env().split(',').count(), 6);
    assert_eq!(cluster.primaries().len(), 3);
    assert_eq!(cluster.crossslot_errors(), 0);

    let key = "{ferry}smoke";
    let owner = cluster.primary_for_key(key);
    let mut conn = cluster.connection(&owner);
    redis::cmd("SET")
        .arg(key)
        .arg("kept")
        .exec(&mut conn)
        .expect("SET on the key's own primary");
    // Replication is asynchronous: make sure the replica has the write
    // before its primary dies.
    let replicas: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut conn)
        .expect("WAIT");
    assert_eq!(replicas, 1, "the write reached the replica");
    drop(conn);

    let killed_at = Instant::now();
    cluster.kill(&owner);
    cluster.wait_for_failover();
    eprintln!("failover done {:?} after the kill", killed_at.elapsed());
    let primaries = cluster.primaries();
    assert!(
        !primaries.contains(&owner),
        "{owner} was killed yet is listed among {primaries:?}"
    );
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    let new_owner = cluster.primary_for_key(key);
    assert_ne!(new_owner, owner);
    let value: Option<String> = redis::cmd("GET")
        .arg(key)
        .query(&mut cluster.connection(&new_owner))
        .expect("GET on the promoted primary");
    assert_eq!(value.as_deref(), Some("kept"));

    // A deliberate cross-slot MSET. Redis checks the slots before the owner,
    // so any primary answers CROSSSLOT; should one answer MOVED, the owner
    // of {a}'s slot is asked instead.
    let mset = |url: &str| {
        redis::cmd("MSET")
            .arg("{a}x")
            .arg(1)
            .arg("{b}y")
            .arg(2)
            .exec(&mut cluster.connection(url))
            .expect_err("a cross-slot MSET must fail")
    };
    let mut err = mset(&primaries[0]);
    if err.code() == Some("MOVED") {
        err = mset(&cluster.primary_for_key("{a}x"));
    }
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
    assert!(cluster.crossslot_errors() >= 1);
    eprintln!("whole test took {:?}", started.elapsed());
}
