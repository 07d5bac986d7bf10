//! The Redis schema: function libraries from `migrations/`, consumer groups,
//! and the record of what was applied.
//!
//! The libraries are compiled into the binary, so a `ferry` binary always
//! knows exactly which schema it needs. `ferry migrate` applies it under a
//! lock (two migrations at once wait for each other; each step is idempotent
//! anyway); `api` and `worker` call [`require_current`] at start and refuse an
//! older schema. Call sites that find a library missing (a Redis restart
//! without persistence) reload it through [`load_libraries`].

use redis::aio::ConnectionLike;
use sha2::{Digest, Sha256};

use crate::keys::{CONSUMER_GROUP, Keys};
use crate::queue::QUEUES;

/// One function library, as shipped in `migrations/`.
pub struct Library {
    pub file: &'static str,
    pub source: &'static str,
}

/// The libraries, in the order the manifest lists them.
pub const LIBRARIES: &[Library] = &[
    Library {
        file: "ferry_queue.lua",
        source: include_str!("../../migrations/ferry_queue.lua"),
    },
    Library {
        file: "ferry_fleet.lua",
        source: include_str!("../../migrations/ferry_fleet.lua"),
    },
    Library {
        file: "ferry_batch.lua",
        source: include_str!("../../migrations/ferry_batch.lua"),
    },
    Library {
        file: "ferry_wechat.lua",
        source: include_str!("../../migrations/ferry_wechat.lua"),
    },
];

const MANIFEST: &str = include_str!("../../migrations/manifest.toml");

/// The schema version this binary needs, from `migrations/manifest.toml`.
pub fn required_version() -> u32 {
    manifest_version(MANIFEST)
        .expect("migrations/manifest.toml carries `version = N` (checked by a test)")
}

fn manifest_version(manifest: &str) -> Option<u32> {
    let table: toml::Table = manifest.parse().ok()?;
    u32::try_from(table.get("version")?.as_integer()?).ok()
}

/// SHA-256 over every library, in order: what `migrate` records.
pub fn checksum() -> String {
    let mut hash = Sha256::new();
    for lib in LIBRARIES {
        hash.update(lib.file.as_bytes());
        hash.update([0]);
        hash.update(lib.source.as_bytes());
    }
    hex::encode(hash.finalize())
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "Redis schema is at version {found} but this ferry needs version {required}: run `ferry migrate`"
    )]
    Outdated { found: u32, required: u32 },
    #[error("Redis has no Ferry schema under this FERRY_PREFIX: run `ferry migrate`")]
    Missing,
    #[error("another `ferry migrate` has held the lock for too long; retry when it has finished")]
    Locked,
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What Redis holds, for `ferry migrate --status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    pub applied_version: Option<u32>,
    pub applied_checksum: Option<String>,
    pub applied_at: Option<String>,
    pub required_version: u32,
    pub required_checksum: String,
    pub libraries_loaded: bool,
    /// Redis's `stream-node-max-entries`; `None` where `CONFIG` is not
    /// allowed (some managed Redis services).
    pub stream_node_entries: Option<u64>,
}

/// The stream node size Ferry's Redis should have (`compose.yaml` sets it):
/// every outcome deletes its entry, and `XDEL` scans a node to find it, so
/// nodes of 16 entries instead of Redis's 100 cut Redis's CPU per job by 8%
/// (ARCHITECTURE.md, "Redis's stream node size"). Advice, not a
/// requirement: Ferry is correct with any value.
pub const RECOMMENDED_STREAM_NODE_ENTRIES: u64 = 16;

impl SchemaStatus {
    pub fn is_current(&self) -> bool {
        self.applied_version == Some(self.required_version)
            && self.applied_checksum.as_deref() == Some(self.required_checksum.as_str())
            && self.libraries_loaded
    }
}

/// Loads (or replaces) every function library.
pub async fn load_libraries<C: ConnectionLike>(conn: &mut C) -> Result<(), redis::RedisError> {
    for lib in LIBRARIES {
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(lib.source)
            .query_async::<String>(conn)
            .await?;
    }
    Ok(())
}

/// Creates the stream and consumer group of every partition of every queue
/// (as configured, and up to the most partitions ever recorded, which this
/// call also records); existing ones are kept.
pub async fn ensure_groups<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
) -> Result<(), redis::RedisError> {
    let seen = crate::queue::partitions::record_and_read(conn, keys).await?;
    for queue in QUEUES {
        for partition in crate::queue::partitions::served(keys, &seen, queue) {
            ensure_group(conn, &keys.partition(&partition).stream()).await?;
        }
    }
    Ok(())
}

/// Creates one stream and its consumer group (reading from the start, so
/// entries added before the group are delivered); an existing one is kept.
pub async fn ensure_group<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
) -> Result<(), redis::RedisError> {
    let result = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(CONSUMER_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(conn)
        .await;
    match result {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Applies the schema: libraries, groups, then the record. Idempotent; two
/// concurrent runs take turns under a lock.
pub async fn migrate<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    applied_by: &str,
) -> Result<SchemaStatus, SchemaError> {
    let token = format!("{applied_by}:{}", ulid::Ulid::new());
    let mut waited = 0;
    loop {
        let acquired: Option<String> = redis::cmd("SET")
            .arg(keys.migrate_lock())
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(conn)
            .await?;
        if acquired.is_some() {
            break;
        }
        waited += 1;
        if waited > 300 {
            return Err(SchemaError::Locked);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let result = apply(conn, keys, applied_by).await;
    // Release only our own lock (if it expired meanwhile, it is not ours).
    if let Err(e) = crate::functions::delete_if_equals(conn, &keys.migrate_lock(), &token).await {
        tracing::warn!(error = %e, "could not release the migration lock; it expires by itself");
    }
    result?;
    status(conn, keys).await
}

async fn apply<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    applied_by: &str,
) -> Result<(), SchemaError> {
    load_libraries(conn).await?;
    ensure_groups(conn, keys).await?;
    redis::cmd("HSET")
        .arg(keys.schema())
        .arg("version")
        .arg(required_version())
        .arg("checksum")
        .arg(checksum())
        .arg("applied_at")
        .arg(chrono::Utc::now().to_rfc3339())
        .arg("applied_by")
        .arg(applied_by)
        .query_async::<()>(conn)
        .await?;
    Ok(())
}

/// Where Redis stands compared with what this binary needs.
pub async fn status<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
) -> Result<SchemaStatus, SchemaError> {
    let (version, checksum_found, applied_at): (Option<u32>, Option<String>, Option<String>) =
        redis::cmd("HMGET")
            .arg(keys.schema())
            .arg("version")
            .arg("checksum")
            .arg("applied_at")
            .query_async(conn)
            .await?;
    let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("LIBRARYNAME")
        .arg("ferry_*")
        .query_async(conn)
        .await?;
    Ok(SchemaStatus {
        applied_version: version,
        applied_checksum: checksum_found,
        applied_at,
        required_version: required_version(),
        required_checksum: checksum(),
        libraries_loaded: libraries.len() >= LIBRARIES.len(),
        stream_node_entries: stream_node_entries(conn).await,
    })
}

async fn stream_node_entries<C: ConnectionLike>(conn: &mut C) -> Option<u64> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("stream-node-max-entries")
        .query_async(conn)
        .await
        .ok()?;
    reply.get(1)?.parse().ok()
}

/// Whether each primary of `target` holds every library (one Redis: that
/// Redis), by address with no password: what `ferry migrate` reports on a
/// cluster, where libraries live on each primary.
pub async fn libraries_on_primaries(
    target: &crate::connection::RedisTarget,
) -> Result<Vec<(String, bool)>, crate::connection::ConnectionError> {
    let mut out = Vec::new();
    for url in crate::connection::primaries(target).await? {
        let mut conn = crate::connection::client(&url)?
            .get_multiplexed_async_connection()
            .await?;
        let libraries: Vec<redis::Value> = redis::cmd("FUNCTION")
            .arg("LIST")
            .arg("LIBRARYNAME")
            .arg("ferry_*")
            .query_async(&mut conn)
            .await?;
        out.push((
            crate::config::redact_url(url.expose()),
            libraries.len() >= LIBRARIES.len(),
        ));
    }
    Ok(out)
}

/// Refuses to run on a schema older than this binary's. A newer schema is
/// accepted (a rolled-back binary keeps working while its functions exist).
pub async fn require_current<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
) -> Result<SchemaStatus, SchemaError> {
    let status = status(conn, keys).await?;
    match status.applied_version {
        None => Err(SchemaError::Missing),
        Some(found) if found < status.required_version => Err(SchemaError::Outdated {
            found,
            required: status.required_version,
        }),
        Some(_) => Ok(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_a_version_and_every_library() {
        assert!(required_version() >= 1);
        let table: toml::Table = MANIFEST.parse().unwrap();
        let listed: Vec<&str> = table["libraries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let embedded: Vec<&str> = LIBRARIES.iter().map(|l| l.file).collect();
        assert_eq!(
            listed, embedded,
            "migrations/manifest.toml and schema::LIBRARIES disagree"
        );
        for lib in LIBRARIES {
            assert!(lib.source.starts_with("#!lua name=ferry_"), "{}", lib.file);
        }
    }
}
