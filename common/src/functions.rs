//! Calling Ferry's Redis functions, surviving a Redis that lost them.
//!
//! Functions persist only with persistence (AOF/RDB). After a restart
//! without it, every call fails with "Function not found": the caller loads
//! the libraries once and tries again, instead of failing every job until an
//! operator runs `ferry migrate`.

use redis::aio::ConnectionLike;
use redis::{FromRedisValue, Pipeline};

/// Whether Redis answered that a function (library) is not loaded.
pub fn is_function_missing(err: &redis::RedisError) -> bool {
    err.to_string().contains("Function not found")
}

/// Runs a pipeline of `FCALL`s; reloads the libraries and retries once if
/// they are missing. Safe because a missing function ran nothing.
pub(crate) async fn run<T: FromRedisValue, C: ConnectionLike>(
    conn: &mut C,
    pipe: &Pipeline,
) -> Result<T, redis::RedisError> {
    match pipe.query_async(conn).await {
        Err(e) if is_function_missing(&e) => {
            tracing::warn!(
                "Ferry's Redis functions are missing (Redis restarted without persistence?): reloading them"
            );
            crate::schema::load_libraries(conn).await?;
            pipe.query_async(conn).await
        }
        other => other,
    }
}

/// Adds `FCALL name numkeys keys...` to a pipeline; chain `.arg(..)` for
/// the function's arguments.
///
/// Every function call names keys of one slot (a Redis Cluster refuses
/// anything else with CROSSSLOT): checked here in every debug build, so
/// the whole test suite, on one Redis too, proves it for every call site.
pub(crate) fn fcall<'a>(pipe: &'a mut Pipeline, name: &str, keys: &[&str]) -> &'a mut Pipeline {
    debug_assert!(
        single_slot(keys),
        "{name} called with keys of several slots: {keys:?}"
    );
    pipe.cmd("FCALL").arg(name).arg(keys.len());
    for k in keys {
        pipe.arg(*k);
    }
    pipe
}

/// Whether `keys` all hash to one cluster slot.
pub fn single_slot(keys: &[&str]) -> bool {
    let mut slots = keys.iter().map(redis::cluster_routing::Slot::for_key);
    match slots.next() {
        None => true,
        Some(first) => slots.all(|s| s == first),
    }
}

/// Deletes `key` only if it still holds `value`, atomically: releasing a
/// lock we own (never one that expired and was taken by another process),
/// or dropping a cached value only if it is still the one that failed.
/// Returns whether the key was deleted.
pub async fn delete_if_equals<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    value: &str,
) -> Result<bool, redis::RedisError> {
    let deleted: i32 = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
    .key(key)
    .arg(value)
    .invoke_async(conn)
    .await?;
    Ok(deleted == 1)
}
