//! The Redis a test runs on: one `redis-server`, or a loopback Redis
//! Cluster with Ferry's queues split into partitions. The queue engine's
//! core tests take a [`Backend`] and run on both, so a behaviour that holds
//! on one Redis is shown to hold on a cluster (where every function call
//! must name keys of one slot and a queue is several streams).

use std::time::Duration;

use ferry_common::connection::RedisTarget;
use ferry_common::keys::Partitions;
use ferry_common::queue::{JobQueue, QUEUES};
use ferry_common::store::Store;
use ferry_common::{Keys, Secret, schema};

use crate::redis_cluster::RedisCluster;
use crate::redis_server::{PREFIX, RedisServer};

/// How the cluster's queues are split: more partitions than primaries, so
/// every primary holds some and a queue spans several nodes.
pub const CLUSTER_PARTITIONS: &str = "wechat=4,batch=4";

/// What a test's helpers need from the Redis under test, one server or a
/// cluster alike.
pub trait RedisUnderTest {
    /// The environment a Ferry process needs to run here.
    fn env(&self) -> Vec<(&'static str, String)>;
    /// A plain connection for the test's own reads and writes (any key).
    fn conn(&self) -> Box<dyn redis::ConnectionLike>;
    /// The key names Ferry uses here (partitions included).
    fn keys(&self) -> Keys;
}

impl<T: RedisUnderTest + ?Sized> RedisUnderTest for &T {
    fn env(&self) -> Vec<(&'static str, String)> {
        (**self).env()
    }
    fn conn(&self) -> Box<dyn redis::ConnectionLike> {
        (**self).conn()
    }
    fn keys(&self) -> Keys {
        (**self).keys()
    }
}

impl RedisUnderTest for RedisServer {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("REDIS_URL", self.url())]
    }
    fn conn(&self) -> Box<dyn redis::ConnectionLike> {
        Box::new(RedisServer::conn(self))
    }
    fn keys(&self) -> Keys {
        Keys::new(PREFIX)
    }
}

impl RedisUnderTest for Backend {
    fn env(&self) -> Vec<(&'static str, String)> {
        Backend::env(self)
    }
    fn conn(&self) -> Box<dyn redis::ConnectionLike> {
        Backend::conn(self)
    }
    fn keys(&self) -> Keys {
        Backend::keys(self)
    }
}

pub enum Backend {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Backend {
    pub fn single() -> Self {
        Backend::Single(RedisServer::start())
    }

    pub fn cluster() -> Self {
        Backend::Cluster(RedisCluster::start())
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster(_))
    }

    /// The environment a Ferry process needs to run here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Backend::Single(redis) => vec![("REDIS_URL", redis.url())],
            Backend::Cluster(cluster) => vec![
                ("REDIS_CLUSTER_NODES", cluster.nodes_env()),
                ("FERRY_QUEUE_PARTITIONS", CLUSTER_PARTITIONS.to_owned()),
            ],
        }
    }

    pub fn target(&self) -> RedisTarget {
        match self {
            Backend::Single(redis) => RedisTarget::Single(Secret::new(redis.url())),
            Backend::Cluster(cluster) => {
                RedisTarget::Cluster(cluster.urls().into_iter().map(Secret::new).collect())
            }
        }
    }

    /// The key names Ferry uses here (partitions included).
    pub fn keys(&self) -> Keys {
        let partitions = match self {
            Backend::Single(_) => Partitions::default(),
            Backend::Cluster(_) => {
                Partitions::parse(CLUSTER_PARTITIONS, QUEUES).expect("partitions")
            }
        };
        Keys::new(PREFIX).with_partitions(partitions)
    }

    /// A Redis handle as one process would have it.
    pub fn store(&self, pool_size: usize) -> Store {
        Store::new(&self.target(), pool_size, self.keys()).expect("store")
    }

    /// The queue engine here, migrated first (finished records kept an hour).
    pub async fn job_queue(&self) -> JobQueue {
        let store = self.store(8);
        let mut conn = store.conn().await.expect("connect");
        schema::migrate(&mut conn, store.keys(), "test")
            .await
            .expect("ferry migrate");
        let queue = JobQueue::new(store, Duration::from_secs(3600));
        queue.refresh_partitions().await.expect("partitions");
        queue
    }

    /// A plain connection for the test's own reads and writes (any key).
    pub fn conn(&self) -> Box<dyn redis::ConnectionLike> {
        match self {
            Backend::Single(redis) => Box::new(redis.conn()),
            Backend::Cluster(cluster) => Box::new(
                redis::cluster::ClusterClient::new(cluster.urls())
                    .expect("cluster client")
                    .get_connection()
                    .expect("cluster connection"),
            ),
        }
    }

    /// On a cluster: that no CROSSSLOT error ever reached Redis, whatever
    /// the test did (every function call and multi-key command named keys
    /// of one slot). Nothing to check on one Redis.
    pub fn assert_no_crossslot(&self) {
        if let Backend::Cluster(cluster) = self {
            assert_eq!(
                cluster.crossslot_errors(),
                0,
                "a CROSSSLOT error reached Redis"
            );
        }
    }
}

/// Runs each named `async fn(&Backend)` as two tests, `one_redis::<name>`
/// and `cluster::<name>` (a loopback cluster with the queues split into
/// partitions, where every call must stay in one slot: a CROSSSLOT reaching
/// Redis fails the test).
#[macro_export]
macro_rules! on_one_redis_and_a_cluster {
    ($($name:ident),* $(,)?) => {
        mod one_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&ferry_tests::Backend::single()).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let cluster = ferry_tests::Backend::cluster();
                    super::$name(&cluster).await;
                    cluster.assert_no_crossslot();
                }
            )*
        }
    };
}
