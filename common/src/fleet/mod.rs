//! Coordination of the whole fleet through Redis: state that every api and
//! worker process must agree on lives here, never in one process's memory.

pub mod wechat_token;
pub mod workers;

pub use wechat_token::{TokenCache, TokenError, TokenSource};
pub use workers::{WorkerInfo, WorkerRegistry};
