//! Test support for Ferry's integration and end-to-end tests: a real
//! `redis-server` per test, and fakes of the outside services (WeChat's API,
//! the AI providers) speaking their exact wire formats.

pub mod counting;
pub mod fake_provider;
pub mod fake_wechat;
pub mod ferry;
pub mod redis_server;

pub use fake_wechat::FakeWeChat;
pub use ferry::{Parts, TestFerry, eventually};
pub use redis_server::RedisServer;
