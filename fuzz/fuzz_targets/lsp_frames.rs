//! The sidecar's JSON-RPC framing guard (`lsp::stdio::transport`): any
//! bytes on stdin. Never panics or hangs; every message it passes on
//! decodes as tower-lsp's `Request` or `Response` (a decode error there
//! would end the sidecar's transport); everything it answers itself is a
//! whole frame holding a JSON-RPC error response; and a stream of
//! well-framed messages gets exactly one verdict per message.
//!
//! The first byte picks the mode: raw bytes (framing included), or the
//! rest split at `\0` into bodies, each framed with its right length.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tower_lsp_server::jsonrpc::{Request, Response};

static RT: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().unwrap());

/// The frames on a stream (it is ours or the guard's: they must be well
/// formed): `Content-Length` header, blank line, body.
async fn frames(r: &mut (impl AsyncBufRead + Unpin)) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let mut len = None;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap() == 0 {
                assert!(len.is_none(), "the stream ends inside a frame's header");
                return out;
            }
            if line == "\r\n" {
                break;
            }
            let n = line.strip_prefix("Content-Length: ").and_then(|l| l.strip_suffix("\r\n"));
            len = Some(n.unwrap_or_else(|| panic!("not a header: {line:?}")).parse::<usize>().unwrap());
        }
        let mut body = vec![0; len.expect("a frame without Content-Length")];
        r.read_exact(&mut body).await.expect("a whole frame");
        out.push(body);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (input, count) = if mode & 1 == 0 {
        (rest.to_vec(), None)
    } else {
        let mut input = Vec::new();
        let mut n = 0;
        for body in rest.split(|&b| b == 0) {
            input.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            input.extend_from_slice(body);
            n += 1;
        }
        (input, Some(n))
    };
    RT.block_on(async move {
        let (stdout, editor_in) = tokio::io::duplex(1 << 16);
        let (server_in, server_out, io) = threadsync::lsp::stdio::transport(std::io::Cursor::new(input), stdout);
        // What tower-lsp would read, and what the editor reads, concurrently
        // (the pipes are bounded).
        let server = tokio::spawn(async move { frames(&mut BufReader::new(server_in)).await });
        let editor = tokio::spawn(async move { frames(&mut BufReader::new(editor_in)).await });
        // Stdin ends: the guard ends, and with it the server's input.
        let passed = server.await.unwrap();
        drop(server_out);
        io.finish().await;
        let answered = editor.await.unwrap();
        for body in &passed {
            let decodes =
                serde_json::from_slice::<Request>(body).is_ok() || serde_json::from_slice::<Response>(body).is_ok();
            assert!(decodes, "passed, but tower-lsp cannot decode it: {:?}", String::from_utf8_lossy(body));
        }
        for body in &answered {
            let v: Value = serde_json::from_slice(body).expect("an answer is JSON");
            let code = v["error"]["code"].as_i64().expect("an answer is an error");
            assert!([-32700, -32600, -32601].contains(&code), "{v}");
            assert_eq!(v["jsonrpc"], "2.0");
            assert!(serde_json::from_slice::<Response>(body).is_ok(), "{v}");
        }
        if let Some(n) = count {
            assert_eq!(passed.len() + answered.len(), n, "one verdict per message");
        }
    });
});
