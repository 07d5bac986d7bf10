//! Shared pieces of Ferry's benchmark programs.

pub mod redis_benchmark;
