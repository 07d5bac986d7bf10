//! The one Redis handle of a deployment (its connection pool and its key
//! names) and the one Redis error type. Every Redis-backed part of Ferry
//! (the queue engine, the fleet's gates, limits, breakers, token and
//! registry, the alert log, conversation memory) is built from a [`Store`]
//! and reports Redis failures as [`RedisError`], wrapped in its own error
//! type. It runs on one Redis or on a Redis Cluster alike
//! ([`crate::connection`]).

use crate::connection::{self, Conn, ConnectionError, RedisTarget, Shared};
use std::sync::Arc;

use crate::history::History;
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

/// Where Redis is, its shared connections and the key names of one
/// deployment. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    target: RedisTarget,
    shared: Shared,
    keys: Keys,
    /// This deployment's per-minute counts not yet in Redis, shared by
    /// every clone, so each part built from the store counts into one
    /// place and one flusher adds them up (`crate::history`).
    history: Arc<History>,
}

impl Store {
    /// A store on `target` with up to `pool_size` pooled connections (one
    /// Redis; a cluster shares one multiplexed connection). Connects
    /// lazily: nothing is dialled until the first command.
    pub fn new(
        target: &RedisTarget,
        pool_size: usize,
        keys: Keys,
    ) -> Result<Self, ConnectionError> {
        Ok(Self {
            target: target.clone(),
            shared: connection::shared(target, pool_size)?,
            keys,
            history: Arc::default(),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Where Redis is: for the connections a part makes of its own
    /// ([`connection::dedicated`]).
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// The fleet history's counter of this process (see
    /// [`crate::history`]): record into it, flush it in the background.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// A connection for a few short commands.
    pub async fn conn(&self) -> Result<Conn, RedisError> {
        self.shared.get().await
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
