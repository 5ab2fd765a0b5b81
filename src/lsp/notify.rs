//! The custom notifications the sidecar sends (names fixed by interface.md).

use serde_json::Value;
use tower_lsp_server::lsp_types::notification::Notification;

macro_rules! notification {
    ($t:ident, $method:literal) => {
        pub enum $t {}
        impl Notification for $t {
            type Params = Value;
            const METHOD: &'static str = $method;
        }
    };
}

notification!(Status, "threadsync/status");
notification!(ThreadStatus, "threadsync/threadStatus");
notification!(ThreadUpdated, "threadsync/threadUpdated");
notification!(Rollback, "threadsync/rollback");
