//! Shared pieces of Ferry's benchmark programs.

pub mod floor;
pub mod push_load;
pub mod redis_benchmark;

/// The `ferry` binary's allocator (cli/src/main.rs), so that what these
/// programs run in-process (the api, a worker, the floor beside them) pays
/// for allocation what production pays: under glibc's malloc the api's
/// threads spent 14% of their time in malloc and free (bench/RESULTS.md,
/// "Speed near the floor").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Reading one Redis node's own counters and settings (any node: a plain
/// `redis-server` or one node of a cluster), over plain synchronous
/// connections to that node alone, and setting up the loopback cluster of
/// the test support for a benchmark.
pub mod node {
    use anyhow::Context;
    use ferry_common::Keys;
    use ferry_tests::redis_cluster::RedisCluster;

    fn conn(url: &str) -> anyhow::Result<redis::Connection> {
        Ok(redis::Client::open(url)?.get_connection()?)
    }

    /// `INFO <section>` of the node at `url`.
    pub fn info(url: &str, section: &str) -> anyhow::Result<String> {
        Ok(redis::cmd("INFO").arg(section).query(&mut conn(url)?)?)
    }

    /// CPU seconds (user + system, the whole process) in an `INFO cpu`.
    pub fn cpu_seconds_in(info: &str) -> f64 {
        info.lines()
            .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
            .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
            .sum()
    }

    /// CPU seconds the node at `url` has used so far (`INFO cpu`).
    pub fn cpu_seconds(url: &str) -> anyhow::Result<f64> {
        Ok(cpu_seconds_in(&info(url, "cpu")?))
    }

    /// An `INFO commandstats` as (command, calls, usec).
    pub fn command_stats_in(info: &str) -> Vec<(String, f64, f64)> {
        info.lines()
            .filter_map(|l| {
                let (name, fields) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |key: &str| {
                    fields
                        .split(',')
                        .find_map(|f| f.strip_prefix(key))
                        .and_then(|v| v.parse::<f64>().ok())
                };
                Some((name.to_owned(), field("calls=")?, field("usec=")?))
            })
            .collect()
    }

    /// (calls, usec) of one command summed over `urls` (`INFO
    /// commandstats`), e.g. `"fcall"`.
    pub fn command_totals(urls: &[String], command: &str) -> anyhow::Result<(f64, f64)> {
        let mut totals = (0.0, 0.0);
        for url in urls {
            let stats = command_stats_in(&info(url, "commandstats")?);
            if let Some((_, calls, usec)) = stats.iter().find(|(n, _, _)| n == command) {
                totals.0 += calls;
                totals.1 += usec;
            }
        }
        Ok(totals)
    }

    /// The node's process id (`INFO server`): all nodes run on this machine.
    pub fn pid(url: &str) -> anyhow::Result<u32> {
        info(url, "server")?
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .context("no process_id in INFO")?
            .trim()
            .parse()
            .context("process_id")
    }

    /// The port of a `redis://host:port` URL, for short labels.
    pub fn port(url: &str) -> u16 {
        url.rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or(0)
    }

    /// `CONFIG SET name value` on the node at `url`.
    pub fn config_set(url: &str, name: &str, value: &str) -> anyhow::Result<()> {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query::<()>(&mut conn(url)?)
            .with_context(|| format!("CONFIG SET {name} {value} on {url}"))
    }

    /// `CONFIG GET name` on the node at `url`.
    pub fn config_get(url: &str, name: &str) -> anyhow::Result<String> {
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(&mut conn(url)?)?;
        pair.into_iter().nth(1).context("CONFIG GET: no value")
    }

    /// `FLUSHALL` on every primary (the replicas follow; the function
    /// libraries stay) and `CONFIG RESETSTAT` on every node.
    pub fn flush_cluster(cluster: &RedisCluster) -> anyhow::Result<()> {
        for url in cluster.primaries() {
            redis::cmd("FLUSHALL").query::<()>(&mut conn(&url)?)?;
        }
        for url in cluster.urls() {
            redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query::<()>(&mut conn(&url)?)?;
        }
        Ok(())
    }

    /// The live nodes that are replicas right now (a killed node answers
    /// nothing and is left out).
    pub fn replicas(cluster: &RedisCluster) -> Vec<String> {
        let primaries = cluster.primaries();
        cluster
            .urls()
            .into_iter()
            .filter(|u| !primaries.contains(u) && info(u, "server").is_ok())
            .collect()
    }

    /// Gives every node of the test support's cluster (started with AOF,
    /// `appendfsync always`) the persistence of the bench's own
    /// `redis-server`, so one Redis and the cluster are compared like for
    /// like: no persistence, or AOF with `appendfsync always`. Returns a
    /// line saying what was set.
    pub fn match_persistence(cluster: &RedisCluster, aof: bool) -> anyhow::Result<String> {
        for url in cluster.urls() {
            if aof {
                config_set(&url, "appendonly", "yes")?;
                config_set(&url, "appendfsync", "always")?;
            } else {
                config_set(&url, "appendonly", "no")?;
            }
        }
        Ok(if aof {
            "every cluster node: AOF appendfsync always".into()
        } else {
            "every cluster node: CONFIG SET appendonly no (no persistence, as the single Redis)"
                .into()
        })
    }

    /// Which primary (URL) holds each partition of `queue`, in partition
    /// order, as (partition name, primary).
    pub fn partition_owners(
        cluster: &RedisCluster,
        keys: &Keys,
        queue: &str,
    ) -> Vec<(String, String)> {
        keys.partitions()
            .of(queue)
            .into_iter()
            .map(|p| {
                let stream = keys.partition(&p).stream();
                (p.name(), cluster.primary_for_key(&stream))
            })
            .collect()
    }

    /// CPU time (user + system) of a process from `/proc/<pid>/stat`, in
    /// seconds.
    pub fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let close = text.rfind(')').context("stat")?;
        let fields: Vec<&str> = text[close + 2..].split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // USER_HZ is 100 on Linux.
        Ok(ticks as f64 / 100.0)
    }
}
