//! The server's decisions, as plain code over a storage transaction.
//!
//! `core` applies pushes exactly once and answers pulls from the team's change
//! log; `memory` is the in-memory store the simulator uses. The HTTP shell and
//! the SQL stores call the same `core` functions.

pub mod core;
pub mod memory;

pub use self::core::{PullError, PullLimits, StoreError, TeamId, Tx, pull, push};
