//! A real Redis Cluster on loopback for the tests that run Ferry against
//! one: six `redis-server` children (three primaries, three replicas), each
//! on free loopback ports with a temporary directory of its own, joined with
//! `redis-cli --cluster create` and killed when dropped. Tests can kill a
//! primary and wait for its replica to take over, so failover is exercised
//! against Redis itself and never a mock.
//!
//! The helpers here talk to one node at a time over plain synchronous
//! connections (never the cluster client): they are set-up and assertions,
//! and must see each node's own view of the cluster.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start` and `wait_for_failover` wait for the cluster to become
/// healthy before failing: generous, as CI machines are shared and slow.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

/// `cluster-node-timeout`: short, so a killed primary is detected and its
/// replica promoted within a few seconds.
const NODE_TIMEOUT_MS: u32 = 1000;

/// Every hash slot of a Redis Cluster.
const SLOTS: usize = 16384;

/// How often the waits poll: often enough to notice health quickly, rarely
/// enough to leave the two CI cores to Redis.
const POLL: Duration = Duration::from_millis(100);

/// Connect and read/write timeouts of the helpers' connections, so a stuck
/// node fails a check instead of hanging the test.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RedisCluster {
    /// In start order; a killed node stays here (its URL is still one of
    /// [`Self::urls`]) with no process.
    nodes: Vec<Node>,
}

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    /// The cluster bus port, chosen explicitly (`--cluster-port`) rather
    /// than `port + 10000`, which may be taken or past 65535.
    bus_port: u16,
    /// `None` once killed.
    child: Option<Child>,
    // Dropped after the process (`Drop::drop` runs before the fields are
    // dropped): the directory outlives the server.
    dir: tempfile::TempDir,
}

impl Node {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn is_live(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL and reap: returns once the process is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One line of `CLUSTER NODES`, as much of it as the helpers need.
struct NodeLine {
    port: u16,
    flags: Vec<String>,
    /// Slot ranges (inclusive) this line says the node serves; slots being
    /// imported or migrated (`[...]`) are left out.
    slots: Vec<(usize, usize)>,
}

impl NodeLine {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// A primary no one suspects of having failed.
    fn is_healthy_primary(&self) -> bool {
        self.has_flag("master") && !self.has_flag("fail") && !self.has_flag("fail?")
    }

    fn serves(&self, slot: usize) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

impl RedisCluster {
    /// 3 primaries, 3 replicas, cluster-node-timeout 1000 ms: the smallest
    /// cluster where a primary's death is agreed on by a majority of the
    /// primaries and its replica takes over, with failover quick enough for
    /// tests. Returns once every node says `cluster_state:ok` with all 16384
    /// slots assigned and every replica's link to its primary is up.
    pub fn start() -> Self {
        let ports = free_ports(12);
        let nodes: Vec<Node> = ports
            .chunks(2)
            .map(|pair| spawn_node(pair[0], pair[1]))
            .collect();
        let cluster = Self { nodes };
        for node in &cluster.nodes {
            cluster.wait_answering(node);
        }
        cluster.create();
        cluster.wait_healthy("the new cluster to become healthy");
        cluster
    }

    /// Seeds in the form REDIS_CLUSTER_NODES takes:
    /// "redis://127.0.0.1:p1,redis://127.0.0.1:p2,..." (all six nodes), so a
    /// test can hand the whole cluster to Ferry's configuration as is.
    pub fn nodes_env(&self) -> String {
        self.urls().join(",")
    }

    /// Every node's URL "redis://127.0.0.1:port", in start order, killed
    /// nodes included: the cluster's fixed membership, for seeds and for
    /// naming a node to [`Self::kill`].
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// URLs of the nodes that are primaries right now: each live node is
    /// asked `CLUSTER NODES` and its own (`myself`) line says whether it is a
    /// primary, so a promotion shows as soon as the promoted node knows it.
    pub fn primaries(&self) -> Vec<String> {
        self.live()
            .filter(|node| {
                let lines = self
                    .cluster_nodes(node.port)
                    .unwrap_or_else(|e| panic!("CLUSTER NODES on {}: {e}", node.url()));
                myself(&lines).is_some_and(|line| line.has_flag("master"))
            })
            .map(Node::url)
            .collect()
    }

    /// The URL of the primary that owns the slot of `key` right now, so a
    /// test can write to (or kill) exactly the node holding a key: `CLUSTER
    /// KEYSLOT` gives the slot, and the live primary whose own `CLUSTER
    /// NODES` line claims that slot is its owner. Panics when no live primary
    /// claims it (mid-failover: call [`Self::wait_for_failover`] first).
    pub fn primary_for_key(&self, key: &str) -> String {
        let any = self.live().next().expect("a live node");
        let slot: usize = self
            .conn(any.port)
            .and_then(|mut conn| {
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query(&mut conn)
            })
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT on {}: {e}", any.url()));
        self.live()
            .find(|node| {
                self.cluster_nodes(node.port)
                    .ok()
                    .and_then(|lines| {
                        myself(&lines).map(|line| line.is_healthy_primary() && line.serves(slot))
                    })
                    .unwrap_or(false)
            })
            .map(Node::url)
            .unwrap_or_else(|| {
                panic!("no live primary serves slot {slot} (of key {key:?}) right now")
            })
    }

    /// kill -9 the node with this URL (a primary, normally), as a crash
    /// would: it loses nothing its AOF had (`appendfsync always`), and the
    /// rest of the cluster must notice on its own. Returns once the process
    /// is gone. Panics on a URL that is not a live node of this cluster.
    pub fn kill(&mut self, url: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.url() == url)
            .unwrap_or_else(|| panic!("{url} is not a node of this cluster"));
        assert!(node.is_live(), "{url} was already killed");
        node.kill();
    }

    /// Blocks until the cluster is healthy again after a kill: a replica has
    /// been promoted for every slot range (every live node says
    /// cluster_state:ok and all 16384 slots are served by live primaries).
    /// Panics with a clear message after 30 s. Tests wait on this instead
    /// of sleeping, and never assert on how long failover took.
    pub fn wait_for_failover(&self) {
        self.wait_healthy("failover: every slot served by a live primary again");
    }

    /// One field of one node's `INFO <section>` (e.g. `"cpu"`,
    /// `"used_cpu_sys"`), `None` when the node does not answer or has no such
    /// field: for assertions and benchmarks reading Redis's own counters.
    pub fn info_field(&self, url: &str, section: &str, field: &str) -> Option<String> {
        let node = self.nodes.iter().find(|node| node.url() == url)?;
        let info = self.info(node.port, section).ok()?;
        info_value(&info, field).map(str::to_owned)
    }

    /// Sum over live nodes of a numeric field of INFO (e.g. `"cpu"`,
    /// `"used_cpu_sys"`; a node without the field counts 0): for benchmarks
    /// measuring what the whole cluster spent. Panics when a live node does
    /// not answer, so a sum never silently leaves a node out.
    pub fn info_sum(&self, section: &str, field: &str) -> f64 {
        self.live()
            .map(|node| {
                let info = self
                    .info(node.port, section)
                    .unwrap_or_else(|e| panic!("INFO {section} on {}: {e}", node.url()));
                info_value(&info, field)
                    .map(|v| {
                        v.parse::<f64>().unwrap_or_else(|_| {
                            panic!("{field}:{v} on {} is not a number", node.url())
                        })
                    })
                    .unwrap_or(0.0)
            })
            .sum()
    }

    /// Sum of `errorstat_CROSSSLOT` counts over all live nodes (from INFO
    /// errorstats; 0 when absent): lets a test prove no CROSSSLOT error ever
    /// reached Redis, i.e. every multi-key command Ferry sent kept its keys
    /// in one slot. Panics when a live node does not answer.
    pub fn crossslot_errors(&self) -> u64 {
        self.live()
            .map(|node| {
                let info = self
                    .info(node.port, "errorstats")
                    .unwrap_or_else(|e| panic!("INFO errorstats on {}: {e}", node.url()));
                // errorstat_CROSSSLOT:count=3
                info_value(&info, "errorstat_CROSSSLOT")
                    .and_then(|v| v.strip_prefix("count="))
                    .map(|n| n.parse::<u64>().expect("errorstat count"))
                    .unwrap_or(0)
            })
            .sum()
    }

    /// A plain (non-cluster) synchronous connection to the node with this
    /// URL, for set-up and assertions on that node alone.
    pub fn connection(&self, url: &str) -> redis::Connection {
        let node = self
            .nodes
            .iter()
            .find(|node| node.url() == url)
            .unwrap_or_else(|| panic!("{url} is not a node of this cluster"));
        self.conn(node.port)
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|node| node.is_live())
    }

    fn conn(&self, port: u16) -> redis::RedisResult<redis::Connection> {
        let conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
            .get_connection_with_timeout(IO_TIMEOUT)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(conn)
    }

    fn info(&self, port: u16, section: &str) -> redis::RedisResult<String> {
        let mut conn = self.conn(port)?;
        redis::cmd("INFO").arg(section).query(&mut conn)
    }

    fn cluster_nodes(&self, port: u16) -> redis::RedisResult<Vec<NodeLine>> {
        let mut conn = self.conn(port)?;
        let text: String = redis::cmd("CLUSTER").arg("NODES").query(&mut conn)?;
        Ok(text.lines().filter_map(parse_node_line).collect())
    }

    /// Waits until a freshly spawned node answers (and has loaded its
    /// empty AOF); panics with its log when it exits or never answers.
    fn wait_answering(&self, node: &Node) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(info) = self.info(node.port, "persistence")
                // `loading:0` exactly: `async_loading:0` is another line.
                && info.lines().any(|line| line.trim() == "loading:0")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within 10 s; its log:\n{}",
                node.port,
                log_tail(&node.log_file())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis-cli --cluster create` over all six nodes, one replica per
    /// primary; panics with its output when it fails.
    fn create(&self) {
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(
                self.nodes
                    .iter()
                    .map(|node| format!("127.0.0.1:{}", node.port)),
            )
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (is it on PATH?): {e}"));
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
    }

    /// Polls [`Self::health`] until it holds; after [`HEALTHY_TIMEOUT`]
    /// panics naming `what`, the last reason and the nodes' logs.
    fn wait_healthy(&self, what: &str) {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let reason = match self.health() {
                Ok(()) => return,
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {} s waiting for {what}: {reason}\n{}",
                    HEALTHY_TIMEOUT.as_secs(),
                    self.logs()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// `Ok` when the cluster is healthy from every live node's point of
    /// view, else why not:
    /// - every live node says `cluster_state:ok` and
    ///   `cluster_slots_assigned:16384`;
    /// - in every live node's `CLUSTER NODES`, each of the 16384 slots is
    ///   served by a live primary not flagged as failed, and all live nodes
    ///   agree on which;
    /// - that owner says so itself (it is a primary and claims the slot);
    /// - every live replica's link to its primary is up.
    fn health(&self) -> Result<(), String> {
        let live_ports: HashSet<u16> = self.live().map(|node| node.port).collect();
        let mut agreed: Option<(u16, Vec<u16>)> = None;
        let mut self_claims = vec![None::<u16>; SLOTS];
        for node in self.live() {
            let url = node.url();
            let mut conn = self.conn(node.port).map_err(|e| format!("{url}: {e}"))?;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut conn)
                .map_err(|e| format!("CLUSTER INFO on {url}: {e}"))?;
            for expected in ["cluster_state:ok", "cluster_slots_assigned:16384"] {
                if !info.lines().any(|line| line.trim() == expected) {
                    return Err(format!("{url} does not say {expected}"));
                }
            }

            let lines = self
                .cluster_nodes(node.port)
                .map_err(|e| format!("CLUSTER NODES on {url}: {e}"))?;
            let mut owners = vec![0u16; SLOTS];
            for line in lines.iter().filter(|line| line.has_flag("master")) {
                for &(a, b) in &line.slots {
                    for owner in &mut owners[a..=b.min(SLOTS - 1)] {
                        *owner = line.port;
                    }
                }
                if line.slots.is_empty() {
                    continue;
                }
                if !live_ports.contains(&line.port) {
                    return Err(format!(
                        "{url} still has slots {:?} served by 127.0.0.1:{}, which is dead",
                        line.slots, line.port
                    ));
                }
                if !line.is_healthy_primary() {
                    return Err(format!(
                        "{url} sees the primary 127.0.0.1:{} as {}",
                        line.port,
                        line.flags.join(",")
                    ));
                }
            }
            if let Some(slot) = owners.iter().position(|&port| port == 0) {
                return Err(format!("{url} sees no primary serving slot {slot}"));
            }
            match &agreed {
                None => agreed = Some((node.port, owners)),
                Some((first, first_owners)) => {
                    if let Some(slot) = (0..SLOTS).find(|&s| first_owners[s] != owners[s]) {
                        return Err(format!(
                            "127.0.0.1:{first} and {url} disagree on slot {slot}'s primary \
                             (127.0.0.1:{} vs 127.0.0.1:{})",
                            first_owners[slot], owners[slot]
                        ));
                    }
                }
            }

            let me = myself(&lines).ok_or_else(|| format!("{url} has no myself line"))?;
            if me.has_flag("master") {
                for &(a, b) in &me.slots {
                    for claim in &mut self_claims[a..=b.min(SLOTS - 1)] {
                        *claim = Some(node.port);
                    }
                }
            } else {
                let replication: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut conn)
                    .map_err(|e| format!("INFO replication on {url}: {e}"))?;
                if !replication
                    .lines()
                    .any(|line| line.trim() == "master_link_status:up")
                {
                    return Err(format!("replica {url} does not say master_link_status:up"));
                }
            }
        }
        let (_, owners) = agreed.ok_or("no live node")?;
        if let Some(slot) = (0..SLOTS).find(|&s| self_claims[s] != Some(owners[s])) {
            return Err(format!(
                "slot {slot}: the cluster says 127.0.0.1:{} serves it, but it does not claim it \
                 itself (claimed by {:?})",
                owners[slot], self_claims[slot]
            ));
        }
        Ok(())
    }

    /// The end of every node's log, for failure messages (the temporary
    /// directories are gone once the test has failed).
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                format!(
                    "--- 127.0.0.1:{} (bus {}, {}) ---\n{}",
                    node.port,
                    node.bus_port,
                    if node.is_live() { "live" } else { "killed" },
                    log_tail(&node.log_file())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Starts one cluster node with its data and log in a temporary directory
/// of its own; does not wait for it to answer.
fn spawn_node(port: u16, bus_port: u16) -> Node {
    let dir = tempfile::Builder::new()
        .prefix("ferry-redis-cluster-")
        .tempdir()
        .expect("temp dir");
    let child = Command::new("redis-server")
        .arg("--port")
        .arg(port.to_string())
        .arg("--cluster-port")
        .arg(bus_port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--dir")
        .arg(dir.path())
        .arg("--logfile")
        .arg(dir.path().join("redis.log"))
        .args(["--daemonize", "no"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", "nodes.conf"])
        .arg("--cluster-node-timeout")
        .arg(NODE_TIMEOUT_MS.to_string())
        // A replica may always take over, however long since it last heard
        // from its primary.
        .args(["--cluster-replica-validity-factor", "0"])
        .args(["--cluster-allow-reads-when-down", "no"])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .args(["--save", ""])
        // Replicas sync at once instead of after the default 5 s pause that
        // waits for more replicas to share a diskless transfer.
        .args(["--repl-diskless-sync-delay", "0"])
        .args(["--stream-node-max-entries", "16"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server (on Debian/Ubuntu: apt-get install redis-server): {e}"
            )
        });
    Node {
        port,
        bus_port,
        child: Some(child),
        dir,
    }
}

/// `n` distinct free loopback ports: all bound at once (port 0) so none
/// repeats, then released for the servers to take.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// Parses `<id> <ip:port@cport[,hostname]> <flags> <primary> <ping-sent>
/// <pong-recv> <config-epoch> <link-state> <slot>...`; `None` for a line
/// without a usable address (a node still in handshake).
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let addr = fields[1].split(['@', ',']).next()?;
    let port: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
    if port == 0 {
        return None;
    }
    let flags = fields[2].split(',').map(str::to_owned).collect();
    let slots = fields[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|a| (a, a)),
        })
        .collect();
    Some(NodeLine { port, flags, slots })
}

fn myself(lines: &[NodeLine]) -> Option<&NodeLine> {
    lines.iter().find(|line| line.has_flag("myself"))
}

/// The value of `field` in INFO's `field:value` lines.
fn info_value<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.trim_end().strip_prefix(field)?.strip_prefix(':'))
}

/// The last lines of a node's log, or why it cannot be read.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
