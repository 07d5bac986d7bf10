//! Connections to Redis, one Redis (`REDIS_URL`) or a Redis Cluster
//! (`REDIS_CLUSTER_NODES`): a shared handle for short commands, and
//! dedicated connections for blocking reads and a worker's own writes.
//!
//! A blocking read holds its connection for the whole wait (a blocking read
//! on a shared connection stalls every command behind it), so the fetcher
//! gets connections of its own whose response timeout exceeds the block
//! time (the client's default, 500 ms, would cut every long poll).
//!
//! **decision: one shared cluster connection, not deadpool's cluster pool.**
//! redis-rs's `ClusterConnection` is multiplexed and cloneable: every
//! caller shares it, and it follows the cluster's topology by itself
//! (MOVED/ASK, a refreshed slot map after a failover). deadpool-redis's
//! cluster manager builds its client with redis-rs's defaults, which retry
//! 16 times at 1.28 s or more each with no response timeout, and cannot be
//! told otherwise: a command could hang for minutes during a failover. Our
//! client retries for a few seconds at most ([`cluster_client`]).

use std::collections::HashMap;
use std::time::Duration;

use deadpool_redis::{Pool, PoolConfig, Runtime};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};

use crate::secret::Secret;

/// How long a short command may take before it counts as "Redis is down".
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A cluster command's whole budget, redirections and retries included:
/// long enough for a replica's promotion after `cluster-node-timeout`
/// (Ferry's callers retry on their own beyond it).
const CLUSTER_OVERALL_TIMEOUT: Duration = Duration::from_secs(6);

/// The longest a write waits for a replica (`FERRY_DURABLE_ACK=replica`):
/// a push is spooled instead, a note goes on. A healthy replica answers
/// within a millisecond; a shard whose replica is gone (its primary just
/// failed over) would hold every write for the whole wait, so it is kept
/// short (the api's spool is durable too).
pub const REPLICA_WAIT: Duration = Duration::from_millis(200);

/// Which Redis a deployment runs on.
#[derive(Clone, Debug)]
pub enum RedisTarget {
    /// One Redis (`REDIS_URL`).
    Single(Secret),
    /// A Redis Cluster, reached through these seeds (`REDIS_CLUSTER_NODES`).
    Cluster(Vec<Secret>),
}

impl RedisTarget {
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }

    /// Where Redis is, passwords replaced: for logs and messages.
    pub fn redacted(&self) -> String {
        match self {
            RedisTarget::Single(url) => crate::config::redact_url(url.expose()),
            RedisTarget::Cluster(seeds) => format!(
                "the cluster at {}",
                seeds
                    .iter()
                    .map(|s| crate::config::redact_url(s.expose()))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// The whole target as one secret value, to tell whether a reloaded
    /// configuration moved Redis (a restart is needed then).
    pub fn as_secret(&self) -> Secret {
        match self {
            RedisTarget::Single(url) => url.clone(),
            RedisTarget::Cluster(seeds) => Secret::from(
                seeds
                    .iter()
                    .map(|s| s.expose().to_owned())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        }
    }

    /// The variable that names this target, for start-up errors.
    pub fn variable(&self) -> &'static str {
        match self {
            RedisTarget::Single(_) => crate::config::vars::REDIS_URL,
            RedisTarget::Cluster(_) => crate::config::vars::REDIS_CLUSTER_NODES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("REDIS_URL: {0}")]
    Url(String),
    #[error("{0}")]
    Mode(String),
    #[error("{0}")]
    Redis(#[from] crate::store::RedisError),
}

crate::wraps_redis_error!(ConnectionError);

impl ConnectionError {
    /// As the one Redis error (a bad URL or mode becomes a connection
    /// failure, its message kept).
    pub fn into_redis(self) -> crate::store::RedisError {
        match self {
            ConnectionError::Redis(e) => e,
            other => crate::store::RedisError::Command(redis::RedisError::from((
                redis::ErrorKind::Io,
                "cannot connect to Redis",
                other.to_string(),
            ))),
        }
    }
}

/// The shared handle of a deployment: a pool of connections to one Redis,
/// or one multiplexed cluster connection. Made lazily: it exists while
/// Redis is down and recovers by itself when it comes back.
#[derive(Clone)]
pub enum Shared {
    Single(TrimmedPool),
    Cluster(std::sync::Arc<OwnConnection>),
}

impl Shared {
    /// A connection for a few short commands.
    pub async fn get(&self) -> Result<Conn, crate::store::RedisError> {
        match self {
            Shared::Single(pool) => Ok(Conn::Pooled(pool.get().await?)),
            Shared::Cluster(own) => Ok(Conn::Dedicated(
                own.get().await.map_err(ConnectionError::into_redis)?,
            )),
        }
    }
}

/// Builds the shared handle (`size` pooled connections to one Redis).
pub fn shared(target: &RedisTarget, size: usize) -> Result<Shared, ConnectionError> {
    match target {
        RedisTarget::Single(url) => Ok(Shared::Single(TrimmedPool::new(
            pool(url, size)?,
            PoolTrim::DEFAULT,
        ))),
        RedisTarget::Cluster(_) => {
            cluster_client(target, COMMAND_TIMEOUT)?;
            Ok(Shared::Cluster(std::sync::Arc::new(OwnConnection::new(
                target.clone(),
            ))))
        }
    }
}

/// When a pool closes connections a burst opened and no longer uses.
#[derive(Clone, Copy, Debug)]
pub struct PoolTrim {
    /// Connections unused this long are closed...
    pub idle: Duration,
    /// ...down to this many (kept open whatever their age).
    pub kept: usize,
    /// How often a checkout looks for them.
    pub every: Duration,
}

impl PoolTrim {
    /// A burst (a worker's 1,000 jobs writing their notes at once) opens
    /// the pool up to its size, and deadpool never closes a connection by
    /// itself: each holds its buffers and its driver task for good (with
    /// the burst's idle HTTP connections, 2.7 MB over idle after the burst,
    /// bench/RESULTS.md, "Worker memory"). Reconnecting costs one round
    /// trip, so 15 s without use is long enough.
    pub const DEFAULT: PoolTrim = PoolTrim {
        idle: Duration::from_secs(15),
        kept: 4,
        every: Duration::from_secs(5),
    };
}

/// A pool of connections to one Redis that closes its idle ones
/// ([`PoolTrim`]), checked on a checkout (no task of its own: a worker
/// checks out every second for its heartbeat, `fleet::workers::BEAT_EVERY`;
/// a pool nobody uses keeps its connections until its next checkout).
#[derive(Clone)]
pub struct TrimmedPool {
    pool: Pool,
    trim: PoolTrim,
    last_trim: std::sync::Arc<std::sync::Mutex<std::time::Instant>>,
}

impl TrimmedPool {
    pub fn new(pool: Pool, trim: PoolTrim) -> Self {
        TrimmedPool {
            pool,
            trim,
            last_trim: std::sync::Arc::new(std::sync::Mutex::new(std::time::Instant::now())),
        }
    }

    /// A pooled connection.
    ///
    /// The checkout is boxed: its future holds a connect and a recycle
    /// (several KB), and every future that awaits a Redis command would
    /// otherwise carry that space for its whole life, such as a job waiting
    /// 10 s on a provider (bench/RESULTS.md, "Worker memory"). One
    /// short-lived allocation per checkout instead.
    pub async fn get(&self) -> Result<deadpool_redis::Connection, deadpool_redis::PoolError> {
        let conn = Box::pin(self.pool.get()).await?;
        self.trim_if_due();
        Ok(conn)
    }

    /// Open connections, idle or in use.
    pub fn size(&self) -> usize {
        self.pool.status().size
    }

    /// Closes the connections idle for longer than `trim.idle`, keeping
    /// `trim.kept`, at most once per `trim.every` (a checkout that finds
    /// another one trimming goes on).
    fn trim_if_due(&self) {
        let Ok(mut last) = self.last_trim.try_lock() else {
            return;
        };
        if last.elapsed() < self.trim.every {
            return;
        }
        *last = std::time::Instant::now();
        drop(last);
        let (idle, kept) = (self.trim.idle, self.trim.kept);
        // Idle connections queue oldest first (the pool hands out the last
        // one returned): the last `kept` are the most recently used. The
        // count is read just before (a checkout in between only moves the
        // line by one).
        let available = self.pool.status().available;
        let mut seen = 0;
        // The closed connections are dropped with the result, outside the
        // pool's lock.
        drop(self.pool.retain(|_, metrics| {
            seen += 1;
            seen + kept > available || metrics.last_used() < idle
        }));
    }
}

/// A pool of connections to one Redis.
pub fn pool(url: &Secret, size: usize) -> Result<Pool, ConnectionError> {
    let mut config = deadpool_redis::Config::from_url(url.expose());
    config.pool = Some(PoolConfig {
        max_size: size,
        timeouts: deadpool_redis::Timeouts {
            wait: Some(COMMAND_TIMEOUT),
            create: Some(CONNECT_TIMEOUT),
            recycle: Some(COMMAND_TIMEOUT),
        },
        // The connection used last is handed out next, so the ones a burst
        // opened stay unused and [`TrimmedPool`] can close them: first in,
        // first out would rotate every checkout through all of them and
        // keep each one fresh.
        queue_mode: deadpool_redis::QueueMode::Lifo,
    });
    // The URL may hold a password: say what is wrong without echoing it.
    config
        .create_pool(Some(Runtime::Tokio1))
        .map_err(|e| ConnectionError::Url(crate::config::redact_url(&e.to_string())))
}

/// The cluster client of `target`: a few quick retries on redirections and
/// refused connections, each answer awaited at most `response`.
fn cluster_client(
    target: &RedisTarget,
    response: Duration,
) -> Result<ClusterClient, ConnectionError> {
    let RedisTarget::Cluster(seeds) = target else {
        return Err(ConnectionError::Mode("not a cluster target".into()));
    };
    ClusterClient::builder(seeds.iter().map(|s| s.expose().to_owned()))
        .retries(8)
        .min_retry_wait(50)
        .max_retry_wait(1000)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(response)
        .overall_response_timeout(Some(response.max(CLUSTER_OVERALL_TIMEOUT)))
        .build()
        .map_err(|_| {
            ConnectionError::Url(format!(
                "{}: not a list of valid Redis URLs",
                crate::config::vars::REDIS_CLUSTER_NODES
            ))
        })
}

/// A connection of its own (one Redis) or a cluster connection of its own,
/// for blocking reads of up to `block` and for writes that must not wait
/// behind a pool checkout.
pub async fn dedicated(
    target: &RedisTarget,
    block: Duration,
) -> Result<Dedicated, ConnectionError> {
    let response = block + COMMAND_TIMEOUT;
    match target {
        RedisTarget::Single(url) => {
            let client = client(url)?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(response));
            Ok(Dedicated::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            ))
        }
        RedisTarget::Cluster(_) => {
            let client = cluster_client(target, response)?;
            let config = ClusterConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(response);
            Ok(Dedicated::Cluster(
                client.get_async_connection_with_config(config).await?,
            ))
        }
    }
}

/// A pub/sub connection to the first Redis of `target` that answers. On a
/// cluster any node will do: a `PUBLISH` reaches the subscribers of every
/// node.
pub async fn pubsub(target: &RedisTarget) -> Result<redis::aio::PubSub, ConnectionError> {
    let urls = match target {
        RedisTarget::Single(url) => std::slice::from_ref(url),
        RedisTarget::Cluster(seeds) => seeds.as_slice(),
    };
    let mut last_error = None;
    for url in urls {
        match client(url)?.get_async_pubsub().await {
            Ok(pubsub) => return Ok(pubsub),
            Err(e) => last_error = Some(ConnectionError::from(e)),
        }
    }
    Err(last_error.unwrap_or_else(|| ConnectionError::Mode("no Redis to subscribe to".into())))
}

/// A plain client to one Redis, for one-off tools and node checks.
pub fn client(url: &Secret) -> Result<redis::Client, ConnectionError> {
    redis::Client::open(url.expose())
        .map_err(|_| ConnectionError::Url("not a valid Redis URL".into()))
}

/// Stops start-up when the target and the server disagree: a
/// `REDIS_CLUSTER_NODES` seed without cluster mode, or a `REDIS_URL` that
/// names a cluster node (where every key outside its slots would fail).
pub async fn check_mode(target: &RedisTarget) -> Result<(), ConnectionError> {
    let (urls, want_cluster) = match target {
        RedisTarget::Single(url) => (std::slice::from_ref(url), false),
        RedisTarget::Cluster(seeds) => (seeds.as_slice(), true),
    };
    let (url, mut conn) = first_answering(urls).await?;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut conn)
        .await?;
    let is_cluster = info.contains("cluster_enabled:1");
    match (want_cluster, is_cluster) {
        (true, false) => Err(ConnectionError::Mode(format!(
            "{}: {} is a Redis without cluster mode; use REDIS_URL for one Redis",
            crate::config::vars::REDIS_CLUSTER_NODES,
            crate::config::redact_url(url.expose())
        ))),
        (false, true) => Err(ConnectionError::Mode(format!(
            "{}: {} is a Redis Cluster node; list the cluster's nodes in REDIS_CLUSTER_NODES instead",
            crate::config::vars::REDIS_URL,
            crate::config::redact_url(url.expose())
        ))),
        _ => Ok(()),
    }
}

/// A connection to the first of `urls` that answers (any seed may be down:
/// the first that answers speaks for the cluster).
async fn first_answering(
    urls: &[Secret],
) -> Result<(&Secret, MultiplexedConnection), ConnectionError> {
    let mut last_error = None;
    for url in urls {
        match client(url)?.get_multiplexed_async_connection().await {
            Ok(conn) => return Ok((url, conn)),
            Err(e) => last_error = Some(ConnectionError::from(e)),
        }
    }
    Err(last_error.unwrap_or_else(|| ConnectionError::Mode("no Redis to ask".into())))
}

/// `CLUSTER NODES` as the first seed that answers sees it, and that seed.
async fn cluster_nodes(
    seeds: &[Secret],
) -> Result<(&Secret, MultiplexedConnection, String), ConnectionError> {
    let (seed, mut conn) = first_answering(seeds).await?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await?;
    Ok((seed, conn, nodes))
}

/// The primaries of a cluster right now, as URLs carrying the seeds'
/// credentials and scheme (for what must run on every primary: loading
/// the function libraries). One Redis: its own URL.
pub async fn primaries(target: &RedisTarget) -> Result<Vec<Secret>, ConnectionError> {
    let seeds = match target {
        RedisTarget::Single(url) => return Ok(vec![url.clone()]),
        RedisTarget::Cluster(seeds) => seeds,
    };
    let (seed, _, nodes) = cluster_nodes(seeds).await?;
    let base = url::Url::parse(seed.expose())
        .map_err(|_| ConnectionError::Url("not a valid Redis URL".into()))?;
    Ok(primary_addresses(&nodes)
        .into_iter()
        .filter_map(|(host, port)| {
            let mut url = base.clone();
            url.set_host(Some(&host)).ok()?;
            url.set_port(Some(port)).ok()?;
            Some(Secret::from(url.to_string()))
        })
        .collect())
}

/// `host:port` of every live primary that serves slots, from `CLUSTER NODES`.
fn primary_addresses(nodes: &str) -> Vec<(String, u16)> {
    primary_slots(nodes)
        .into_iter()
        .map(|(address, _)| address)
        .collect()
}

/// A node's `host` and `port`.
type NodeAddress = (String, u16);
/// The first and last slot of a range a primary serves.
type SlotRange = (u16, u16);

/// Every live primary that serves slots, with its slot ranges, from
/// `CLUSTER NODES` (`<id> <ip:port@cport> <flags> ... <slot> <from-to>...`).
fn primary_slots(nodes: &str) -> Vec<(NodeAddress, Vec<SlotRange>)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") || fields.len() <= 8 {
                return None;
            }
            // ip:port@cport[,hostname]
            let address = fields.get(1)?.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            let ranges = fields[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(((host.to_owned(), port.parse().ok()?), ranges))
        })
        .collect()
}

/// Which primary (`host:port`) owns each of `keys` right now, asked of
/// the first seed that answers: where each partition of a queue lives, so
/// an operator sees whether they spread evenly over the shards.
pub async fn owners(target: &RedisTarget, keys: &[String]) -> Result<Vec<String>, ConnectionError> {
    let RedisTarget::Cluster(seeds) = target else {
        return Ok(keys.iter().map(|_| target.redacted()).collect());
    };
    let (_, mut conn, nodes) = cluster_nodes(seeds).await?;
    let mut asks = redis::pipe();
    for key in keys {
        asks.cmd("CLUSTER").arg("KEYSLOT").arg(key);
    }
    let slots: Vec<u16> = asks.query_async(&mut conn).await?;
    let primaries = primary_slots(&nodes);
    Ok(slots
        .into_iter()
        .map(|slot| {
            primaries
                .iter()
                .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
                .map_or("no primary".to_owned(), |((host, port), _)| {
                    format!("{host}:{port}")
                })
        })
        .collect())
}

/// A connection of its own: to one Redis, or to a cluster. Clones share it.
#[derive(Clone)]
pub enum Dedicated {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Dedicated {
    /// Waits up to `timeout` until `replicas` replicas have every write this
    /// connection made so far (`WAIT`), and answers the least count. On a
    /// cluster only the primaries owning `keys` are asked: a shard that lost
    /// its replica holds up only the writes that went to it.
    pub async fn wait_for_replicas(
        &mut self,
        keys: &[String],
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<u32> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis().max(1) as u64);
        match self {
            Dedicated::Single(c) => wait.query_async(c).await,
            Dedicated::Cluster(c) => {
                let slots: std::collections::HashSet<Slot> =
                    keys.iter().map(Slot::for_key).collect();
                let asks = slots.into_iter().map(|slot| {
                    let mut c = c.clone();
                    let wait = wait.clone();
                    async move {
                        let route = redis::cluster_routing::RoutingInfo::SingleNode(
                            redis::cluster_routing::SingleNodeRoutingInfo::SpecificNode(
                                redis::cluster_routing::Route::with_slot(
                                    slot,
                                    redis::cluster_routing::SlotAddr::Master,
                                ),
                            ),
                        );
                        let v = c.route_command(wait, route).await?;
                        redis::from_redis_value::<u32>(v).map_err(redis::RedisError::from)
                    }
                });
                let counts = futures::future::try_join_all(asks).await?;
                Ok(counts.into_iter().min().unwrap_or(replicas))
            }
        }
    }
}

/// A connection for a few commands: pooled (one Redis) or the shared
/// cluster connection.
pub enum Conn {
    Pooled(deadpool_redis::Connection),
    Dedicated(Dedicated),
}

impl ConnectionLike for Dedicated {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Dedicated::Single(c) => c.req_packed_command(cmd),
            Dedicated::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Dedicated::Single(c) => c.req_packed_commands(pipe, offset, count),
            Dedicated::Cluster(c) => Box::pin(cluster_pipeline(c.clone(), pipe, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Dedicated::Single(c) => c.get_db(),
            Dedicated::Cluster(c) => c.get_db(),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Pooled(c) => c.req_packed_command(cmd),
            Conn::Dedicated(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Pooled(c) => c.req_packed_commands(pipe, offset, count),
            Conn::Dedicated(c) => c.req_packed_commands(pipe, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Pooled(c) => c.get_db(),
            Conn::Dedicated(c) => c.get_db(),
        }
    }
}

/// A pipeline on a cluster: redis-rs sends a pipeline to one node and
/// refuses one whose commands span slots, so the commands are grouped by
/// slot (order kept within each group), each group sent as a pipeline of
/// its own, all at once, and the answers put back in the pipeline's order.
/// Transactions (`MULTI`) must be single-slot anyway and go as they are.
async fn cluster_pipeline(
    conn: ClusterConnection,
    pipe: &Pipeline,
    offset: usize,
    count: usize,
) -> redis::RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipe.cmd_iter().collect();
    let mut groups: HashMap<Option<Slot>, Vec<usize>> = HashMap::new();
    for (i, cmd) in commands.iter().enumerate() {
        groups
            .entry(routing_key(cmd).map(Slot::for_key))
            .or_default()
            .push(i);
    }
    if pipe.is_transaction() || groups.len() <= 1 {
        return conn.clone().req_packed_commands(pipe, offset, count).await;
    }
    let groups: Vec<Vec<usize>> = groups.into_values().collect();
    let send = |indexes: &Vec<usize>| {
        let mut sub = Pipeline::with_capacity(indexes.len());
        for &i in indexes {
            sub.add_command(commands[i].clone());
        }
        let mut conn = conn.clone();
        let n = indexes.len();
        async move { conn.req_packed_commands(&sub, 0, n).await }
    };
    let mut answers = futures::future::try_join_all(groups.iter().map(send)).await?;
    // A shard without Ferry's functions (added later, or a slot moved to a
    // node without them) refuses its group only: load them and send that
    // group again. Resending the whole pipeline would repeat what the other
    // shards already did.
    let missing: Vec<usize> = (0..groups.len())
        .filter(|&g| answers[g].iter().any(is_function_missing_value))
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            "a Redis Cluster node lacks Ferry's functions: loading them on every primary"
        );
        crate::schema::load_libraries(&mut conn.clone()).await?;
        for g in missing {
            answers[g] = send(&groups[g]).await?;
        }
    }
    let mut out: Vec<Option<Value>> = vec![None; commands.len()];
    for (indexes, values) in groups.iter().zip(answers) {
        for (&i, v) in indexes.iter().zip(values) {
            out[i] = Some(v);
        }
    }
    Ok(out.into_iter().map(|v| v.unwrap_or(Value::Nil)).collect())
}

fn is_function_missing_value(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.details().is_some_and(|d| d.contains("Function not found")))
}

/// The key a command is routed by, for the commands Ferry pipelines.
fn routing_key(cmd: &Cmd) -> Option<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(a) => Some(a),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"FCALL" | b"FCALL_RO" | b"EVAL" | b"EVALSHA" => {
            let numkeys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if numkeys == 0 {
                None
            } else {
                args.get(3).copied()
            }
        }
        b"XREAD" | b"XREADGROUP" => {
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(at + 1).copied()
        }
        b"XINFO" | b"XGROUP" | b"OBJECT" | b"MEMORY" => args.get(2).copied(),
        _ => args.get(1).copied(),
    }
}

/// A connection of its own, made on first use and made again after it
/// broke: for writes that must not wait behind a pool checkout (a handler's
/// notes, written the moment a side effect is done), and the shared cluster
/// connection. Cheap to share: every caller gets a clone of the one
/// multiplexed connection.
pub struct OwnConnection {
    target: RedisTarget,
    conn: tokio::sync::Mutex<Option<Dedicated>>,
}

impl OwnConnection {
    /// Connects lazily: nothing happens until the first [`Self::get`].
    pub fn new(target: RedisTarget) -> Self {
        Self {
            target,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection, connecting first if there is none.
    pub async fn get(&self) -> Result<Dedicated, ConnectionError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        // Boxed: the connect future is large and rarely run; inline, every
        // caller's future would carry its size (see `Shared::get`).
        let c = Box::pin(dedicated(&self.target, Duration::ZERO)).await?;
        *conn = Some(c.clone());
        Ok(c)
    }

    /// Drops the connection after a failure; the next [`Self::get`] makes a
    /// new one. (A cluster connection mends itself; it is kept.)
    pub async fn reset(&self) {
        let mut conn = self.conn.lock().await;
        if !matches!(conn.as_ref(), Some(Dedicated::Cluster(_))) {
            *conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst's connections are closed once idle, down to the kept ones,
    /// and the pool still serves afterwards.
    #[tokio::test]
    async fn a_pool_closes_what_a_burst_opened_once_it_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let redis = crate::embedded_redis::RedisProcess::start(dir.path(), false).unwrap();
        let trim = PoolTrim {
            idle: Duration::from_millis(200),
            kept: 2,
            every: Duration::ZERO,
        };
        let pool = TrimmedPool::new(pool(&Secret::new(redis.url()), 8).unwrap(), trim);
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(pool.get().await.unwrap());
        }
        drop(held);
        assert_eq!(pool.size(), 8);
        // Then one command at a time, for longer than the idle limit: one
        // connection serves them all, and the other 7 go stale.
        // (First in, first out would hand each of the 8 out in turn, every
        // 80 ms or so, and none would ever be idle for 200 ms.)
        for _ in 0..40 {
            let mut conn = pool.get().await.unwrap();
            let _: String = redis::cmd("PING").query_async(&mut *conn).await.unwrap();
            drop(conn);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The checkouts trimmed the 7 stale ones down to the 2 kept, beside
        // the one the loop kept using.
        assert_eq!(pool.size(), 3);
        let clients = || async {
            let mut conn = pool.get().await.unwrap();
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut *conn)
                .await
                .unwrap();
            list.lines().count()
        };
        let mut conn = pool.get().await.unwrap();
        let pong: String = redis::cmd("PING").query_async(&mut *conn).await.unwrap();
        assert_eq!(pong, "PONG");
        drop(conn);
        // Redis sees the closed ones go (it counts its clients itself).
        let mut left = 0;
        for _ in 0..50 {
            left = clients().await;
            if left <= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(left <= 3, "Redis still has {left} clients");
    }

    #[test]
    fn routing_keys_of_the_commands_ferry_pipelines() {
        let mut fcall = redis::cmd("FCALL");
        fcall
            .arg("ferry_fetch")
            .arg(1)
            .arg("{f:wechat:2}:stream")
            .arg("workers");
        assert_eq!(routing_key(&fcall), Some(&b"{f:wechat:2}:stream"[..]));
        let mut keyless = redis::cmd("FCALL");
        keyless.arg("x").arg(0);
        assert_eq!(routing_key(&keyless), None);
        let mut read = redis::cmd("XREAD");
        read.arg("BLOCK")
            .arg(5)
            .arg("STREAMS")
            .arg("{f:batch}:stream")
            .arg("0");
        assert_eq!(routing_key(&read), Some(&b"{f:batch}:stream"[..]));
        let mut info = redis::cmd("XINFO");
        info.arg("GROUPS").arg("{f:wechat}:stream");
        assert_eq!(routing_key(&info), Some(&b"{f:wechat}:stream"[..]));
        let mut hset = redis::cmd("HSET");
        hset.arg("{f}:schema").arg("v").arg(1);
        assert_eq!(routing_key(&hset), Some(&b"{f}:schema"[..]));
    }

    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let nodes = "\
a 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922
c 127.0.0.1:7003@17003 master,fail - 0 0 3 connected
d 127.0.0.1:7004@17004 slave a 0 0 1 connected
e 127.0.0.1:7005@17005 master - 0 0 5 connected 10923-16383
";
        assert_eq!(
            primary_addresses(nodes),
            vec![
                ("127.0.0.1".to_owned(), 7001),
                ("127.0.0.1".to_owned(), 7002),
                ("127.0.0.1".to_owned(), 7005)
            ]
        );
        let slots = primary_slots(nodes);
        assert_eq!(slots[0].1, vec![(0, 5460)]);
        assert_eq!(slots[2].1, vec![(10923, 16383)]);
    }
}
