//! `ferry-worker`: consumes jobs from the queues and runs them.
//!
//! The layout is the architecture (after asynq and Sidekiq), one file per
//! background responsibility:
//! - [`launcher`] starts everything and supervises shutdown;
//! - [`fetcher`] reads new entries, `wechat` before `batch`;
//! - [`processor`] runs one job through its handler;
//! - [`job_notes`] keeps what an attempt did, held through Redis outages;
//! - [`job_retry`] decides what a failure means (retry when, or dead);
//! - [`acker`] records outcomes, many per round trip;
//! - [`lease`] renews what this worker holds so live work is never taken over;
//! - [`recoverer`] takes over work whose worker vanished;
//! - [`promoter`] moves due retries back to their streams;
//! - [`heartbeat`] registers this worker as alive;
//! - [`handlers`] what each job kind does; [`providers`] the AI models;
//!   [`memory`] what each WeChat user said lately; [`reply`] delivery of
//!   answers to WeChat users.

pub mod acker;
pub mod fetcher;
pub mod handler;
pub mod handlers;
pub mod heartbeat;
pub mod in_flight;
pub mod job_notes;
pub mod job_retry;
pub mod launcher;
pub mod lease;
pub mod memory;
mod outage;
pub mod processor;
pub mod promoter;
pub mod providers;
pub mod recoverer;
pub mod reply;

pub use launcher::{Worker, WorkerSettings};
