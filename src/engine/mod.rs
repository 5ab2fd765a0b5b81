pub mod flow;
pub mod monitor;
pub mod poller;
pub mod retry;
