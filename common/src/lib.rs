//! `ferry-common`: what the api, the worker and the CLI share.
//!
//! Configuration and secrets, the job model and the Redis queue engine,
//! migrations of the Redis function libraries, fleet coordination (the shared
//! WeChat token), the WeChat protocol, and telemetry. `api` and `worker`
//! depend on this crate and never on each other.

pub mod alerts;
pub mod api_tokens;
pub mod batch;
pub mod config;
pub mod connection;
pub mod embedded_redis;
pub mod fleet;
pub mod functions;
pub mod history;
pub mod host;
pub mod job;
pub mod key_ring;
pub mod keys;
pub mod metrics;
pub mod overview;
pub mod queue;
pub mod schema;
pub mod secret;
pub mod secrets_file;
pub mod store;
pub mod telemetry;
pub mod users;
pub mod wechat;

pub use config::{Config, ConfigError};
pub use key_ring::KeyRing;
pub use keys::Keys;
pub use secret::Secret;
