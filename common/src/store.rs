//! The one Redis handle of a deployment (its connection pool and its key
//! names) and the one Redis error type. Every Redis-backed part of Ferry
//! (the queue engine, the fleet's gates, limits, breakers, token and
//! registry, the alert log, conversation memory) is built from a [`Store`]
//! and reports Redis failures as [`RedisError`], wrapped in its own error
//! type; this is the seam where a cluster connection can replace a single
//! one.

use deadpool_redis::{Connection, Pool};

use crate::keys::Keys;

/// Redis failed: no connection, a command refused, or a reply Ferry could
/// not read.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("Redis is unavailable: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("Redis: {0}")]
    Command(#[from] redis::RedisError),
    #[error("unexpected reply from Redis: {0}")]
    Reply(#[from] redis::ParsingError),
}

/// The pool and key names of one deployment. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    keys: Keys,
}

impl Store {
    pub fn new(pool: Pool, keys: Keys) -> Self {
        Self { pool, keys }
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A pooled connection.
    pub async fn conn(&self) -> Result<Connection, RedisError> {
        Ok(self.pool.get().await?)
    }
}

/// Lets `?` turn every Redis failure (pool, command, reply) into `$error`
/// through its `Redis(RedisError)` variant (`#[from]` covers only
/// [`RedisError`] itself).
#[macro_export]
macro_rules! wraps_redis_error {
    ($error:ty) => {
        impl From<deadpool_redis::PoolError> for $error {
            fn from(e: deadpool_redis::PoolError) -> Self {
                Self::Redis($crate::store::RedisError::from(e))
            }
        }
        impl From<redis::RedisError> for $error {
            fn from(e: redis::RedisError) -> Self {
                Self::Redis($crate::store::RedisError::from(e))
            }
        }
        impl From<redis::ParsingError> for $error {
            fn from(e: redis::ParsingError) -> Self {
                Self::Redis($crate::store::RedisError::from(e))
            }
        }
    };
}
