//! Docs that cannot drift: protocol.md records a hash of the wire types
//! (`src/wire.rs`, `src/ops.rs`). Change them, update protocol.md, then the
//! hash this test prints.

use sha2::{Digest, Sha256};

#[test]
fn protocol_doc_matches_the_wire_types() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut h = Sha256::new();
    for f in ["src/wire.rs", "src/ops.rs"] {
        let text = std::fs::read_to_string(format!("{root}/{f}")).unwrap();
        // Line endings must not matter.
        h.update(text.replace("\r\n", "\n").as_bytes());
    }
    let hash: String = h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let doc = std::fs::read_to_string(format!("{root}/protocol.md")).unwrap();
    let want = format!("<!-- wire-hash: {hash} -->");
    assert!(
        doc.contains(&want),
        "src/wire.rs or src/ops.rs changed: update protocol.md, then set its last line to\n{want}"
    );
}
