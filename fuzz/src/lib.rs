//! What several fuzz targets check.

use std::collections::HashSet;

use serde_json::Value;
use threadsync::merge::Doc;
use threadsync::model::MessageId;

/// Whether a JSON value holds a float. serde_json's default float parsing
/// is not exact (the main crate does not enable `float_roundtrip`), so a
/// round trip through JSON text is compared by shape only when it does.
pub fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

/// A [`Doc`]'s placement data agrees with its thread: the visible messages
/// are `seq` without the deleted ids, in order; every id is in `seq` once
/// and has an anchor entry; tombstones are in `seq`.
pub fn check_doc(d: &Doc) {
    let mut seen = HashSet::new();
    for id in &d.seq {
        assert!(seen.insert(id), "{id:?} twice in seq: {:?}", d.seq);
        assert!(d.after.contains_key(id), "{id:?} has no anchor entry");
    }
    assert_eq!(d.after.len(), d.seq.len(), "anchors of ids not in seq");
    for id in &d.deleted {
        assert!(seen.contains(id), "tombstone {id:?} not in seq");
    }
    let visible: Vec<&MessageId> = d.seq.iter().filter(|id| !d.deleted.contains(*id)).collect();
    let shown: Vec<&MessageId> = d.thread.messages.iter().map(|m| &m.id).collect();
    assert_eq!(shown, visible, "the thread's messages are not seq without the tombstones");
}
