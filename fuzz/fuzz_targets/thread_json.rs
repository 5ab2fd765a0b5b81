//! `.json` thread files: `model::parse_thread_file` on any bytes. Never
//! panics; what it accepts has unique, valid message ids, and written back
//! as JSON (ids now explicit) it parses to the same thread.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use threadsync::model::{MessageId, ThreadId, parse_thread_file};
use threadsync_fuzz::has_float;

fuzz_target!(|data: &[u8]| {
    let id = ThreadId::new("T-1").unwrap();
    let Ok(t) = parse_thread_file(data, &id) else { return };
    assert_eq!(t.id, id);
    let mut seen = HashSet::new();
    for m in &t.messages {
        assert!(MessageId::new(m.id.as_str()).is_ok(), "invalid id {:?}", m.id);
        assert!(seen.insert(m.id.clone()), "id {:?} twice", m.id);
    }
    // Parsing the same bytes again derives the same ids.
    assert_eq!(parse_thread_file(data, &id).as_ref(), Ok(&t));
    // Written back (as the sidecar writes a file) and read again.
    let bytes = serde_json::to_vec_pretty(&t).expect("a parsed thread serialises");
    let again = parse_thread_file(&bytes, &id).unwrap_or_else(|e| panic!("written back, it does not parse: {e}"));
    let v = serde_json::to_value(&t).unwrap();
    if has_float(&v) {
        // serde_json's default float parsing is not exact (no
        // `float_roundtrip`): compare the shape only.
        let ids = |t: &threadsync::model::Thread| t.messages.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&again), ids(&t));
    } else {
        assert_eq!(again, t, "a round trip through the file changed the thread");
    }
});
