//! The sync server.
//!
//! `core` makes the decisions (push exactly once, pull from the change log)
//! over a `Tx`; `store` is the seam the HTTP layer sees (the `Store` trait
//! and the in-memory store); `sql` is the store over a database, with its
//! backends `sqlite` and `postgres`.

pub mod core;
pub mod http;
pub mod postgres;
pub mod run;
pub mod search;
pub mod sql;
pub mod sqlite;
pub mod store;
pub mod web;
pub mod web_store;

pub use self::core::{PullError, PullLimits, StoreError, TeamId, Tx, pull, push};
