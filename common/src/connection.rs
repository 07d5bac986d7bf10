//! Connections to Redis: a shared pool for short commands, and dedicated
//! connections for blocking reads.
//!
//! A blocking `XREADGROUP ... BLOCK` holds its connection for the whole wait,
//! so the fetcher gets a connection of its own whose response timeout exceeds
//! the block time (the client's default, 500 ms, would cut every long poll).

use std::time::Duration;

use deadpool_redis::{Pool, PoolConfig, Runtime};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::secret::Secret;

/// How long a short command may take before it counts as "Redis is down".
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("REDIS_URL: {0}")]
    Url(String),
    #[error("{0}")]
    Redis(#[from] crate::store::RedisError),
}

crate::wraps_redis_error!(ConnectionError);

/// Builds the shared pool. Connections are made lazily: a pool exists even
/// while Redis is down, and recovers by itself when it comes back.
pub fn pool(url: &Secret, size: usize) -> Result<Pool, ConnectionError> {
    let mut config = deadpool_redis::Config::from_url(url.expose());
    config.pool = Some(PoolConfig {
        max_size: size,
        timeouts: deadpool_redis::Timeouts {
            wait: Some(COMMAND_TIMEOUT),
            create: Some(CONNECT_TIMEOUT),
            recycle: Some(COMMAND_TIMEOUT),
        },
        ..PoolConfig::default()
    });
    // The URL may hold a password: say what is wrong without echoing it.
    config
        .create_pool(Some(Runtime::Tokio1))
        .map_err(|e| ConnectionError::Url(crate::config::redact_url(&e.to_string())))
}

/// A connection of its own for a blocking read of up to `block`.
pub async fn dedicated(
    url: &Secret,
    block: Duration,
) -> Result<MultiplexedConnection, ConnectionError> {
    let client = client(url)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(block + COMMAND_TIMEOUT));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// A plain client, for one-off tools (`ferry migrate`, `ferry queues`).
pub fn client(url: &Secret) -> Result<redis::Client, ConnectionError> {
    redis::Client::open(url.expose())
        .map_err(|_| ConnectionError::Url("not a valid Redis URL".into()))
}

/// A connection of its own, made on first use and made again after it
/// broke: for writes that must not wait behind a pool checkout (a handler's
/// notes, written the moment a side effect is done). Cheap to share: every
/// caller gets a clone of the one multiplexed connection.
pub struct OwnConnection {
    url: Secret,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl OwnConnection {
    /// Connects lazily: nothing happens until the first [`Self::get`].
    pub fn new(url: Secret) -> Self {
        Self {
            url,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection, connecting first if there is none.
    pub async fn get(&self) -> Result<MultiplexedConnection, ConnectionError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let c = dedicated(&self.url, Duration::ZERO).await?;
        *conn = Some(c.clone());
        Ok(c)
    }

    /// Drops the connection after a failure; the next [`Self::get`] makes a
    /// new one.
    pub async fn reset(&self) {
        *self.conn.lock().await = None;
    }
}
