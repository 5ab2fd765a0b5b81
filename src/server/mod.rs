//! The sync server.
//!
//! `core` makes the decisions (push exactly once, pull from the change log)
//! over a `Tx`; `memory`, `sql` (+ `sqlite`, `postgres`) store; `store` is
//! the seam the HTTP layer sees.

pub mod core;
pub mod http;
pub mod memory;
pub mod postgres;
pub mod run;
pub mod sql;
pub mod sqlite;
pub mod store;

pub use self::core::{PullError, PullLimits, StoreError, TeamId, Tx, pull, push};
