//! One file per `ferry` subcommand.

pub mod api;
pub mod batch;
pub mod breaker;
pub mod dev;
pub mod dlq;
pub mod jobs;
pub mod migrate;
pub mod providers;
pub mod queues;
pub mod secrets;
pub mod simulate;
pub mod status;
pub mod tokens;
pub mod worker;
