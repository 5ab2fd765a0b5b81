//! Change-log rows back into [`Change`]s: a stored effect has no message
//! body (an insert names its message), so the body joined from `messages`
//! goes back in.

use super::{Val, json_err};
use crate::model::ThreadId;
use crate::server::core::StoreError;
use crate::wire::{Change, ClientId};

pub(super) fn decode_changes(rows: Vec<Vec<Val>>) -> Result<Vec<Change>, StoreError> {
    rows.into_iter()
        .map(|r| {
            let mut r = r.into_iter();
            let seq = r.next().unwrap().int()? as u64;
            let thread_id = ThreadId::new(r.next().unwrap().text()?).map_err(|e| StoreError::new(e.to_string()))?;
            let version = r.next().unwrap().int()? as u64;
            let mut effect: serde_json::Value = serde_json::from_str(&r.next().unwrap().text()?).map_err(json_err)?;
            if let Some(body) = r.next().unwrap().opt_text()? {
                let obj = effect.as_object_mut().ok_or_else(|| StoreError::new("stored effect is not an object"))?;
                obj.remove("id");
                obj.insert("message".into(), serde_json::from_str(&body).map_err(json_err)?);
            }
            let effect = serde_json::from_value(effect).map_err(json_err)?;
            let mut change = Change::new(seq, thread_id, version, effect);
            change.author = r
                .next()
                .unwrap()
                .opt_text()?
                .map(|a| ClientId::new(a).map_err(|e| StoreError::new(format!("stored author: {e}"))))
                .transpose()?;
            Ok(change)
        })
        .collect()
}
