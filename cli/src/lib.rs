//! The `ferry` executable's library half: building Ferry's parts from
//! configuration ([`app`]) and the subcommands ([`commands`]). A library so
//! the workspace tests run exactly what the binary runs.

pub mod app;
pub mod commands;
pub mod reload;
pub mod signals;
