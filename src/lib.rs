//! threadsync: keeps AI coding-assistant threads in sync across machines.
//!
//! The pure core (`model`, `ops`, `merge`, `engine`, `server`) makes every
//! decision and performs no I/O; see ARCHITECTURE.md.

pub mod client;
pub mod daemon;
pub mod engine;
pub mod lsp;
pub mod merge;
pub mod model;
pub mod ops;
pub mod secrets;
pub mod server;
pub mod sources;
pub mod threadlog;
pub mod time;
pub mod wire;
