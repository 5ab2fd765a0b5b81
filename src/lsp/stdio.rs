//! The LSP transport around tower-lsp-server. tower-lsp stops reading after
//! the first message it cannot decode (tokio-util's framed reader ends on a
//! decode error), which would make one bad message end the sidecar. So stdin
//! is framed and checked here first: a message tower-lsp can serve passes
//! through untouched, anything else is answered here and reading goes on.
//! Those answers and tower-lsp's output go through one writer task, so
//! frames on stdout never interleave.

use serde_json::{Map, Value};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tower_lsp_server::jsonrpc::{Error, ErrorCode, Id, Request, Response};

/// Largest message accepted (a megabytes-long message is normal; this is not).
const MAX_MESSAGE: usize = 256 << 20;
const MAX_HEADER_LINE: usize = 8 << 10;
const PIPE: usize = 1 << 20;

fn header(len: usize) -> Vec<u8> {
    format!("Content-Length: {len}\r\n\r\n").into_bytes()
}

/// Why a message is answered here instead of reaching tower-lsp.
#[derive(Debug)]
struct Reject {
    id: Value,
    code: i64,
    message: String,
}

impl Reject {
    fn parse(why: impl std::fmt::Display) -> Self {
        Reject { id: Value::Null, code: -32700, message: format!("Parse error: {why}") }
    }

    fn invalid(why: &str) -> Self {
        Reject { id: Value::Null, code: -32600, message: format!("Invalid Request: {why}") }
    }

    fn frame(&self) -> Vec<u8> {
        // `check` let through only ids tower-lsp's `Id` can hold.
        let id = serde_json::from_value(self.id.clone()).unwrap_or(Id::Null);
        let error = Error { code: ErrorCode::from(self.code), message: self.message.clone().into(), data: None };
        let body = serde_json::to_vec(&Response::from_error(id, error)).expect("serialises");
        let mut out = header(body.len());
        out.extend_from_slice(&body);
        out
    }
}

/// Checks one message body: `Ok` if tower-lsp should have it, else the
/// error to answer with. Whatever passes here decodes as tower-lsp's
/// `Request` or `Response` (a decode error there would end the transport).
fn check(body: &[u8]) -> Result<(), Reject> {
    check_shape(body)?;
    // A `Value` keeps the last of a key given twice; tower-lsp's types refuse
    // some of those (`{"id":0,"id":0,…}`).
    if serde_json::from_slice::<Request>(body).is_err() && serde_json::from_slice::<Response>(body).is_err() {
        return Err(Reject::invalid("a key appears twice in the message"));
    }
    Ok(())
}

fn check_shape(body: &[u8]) -> Result<(), Reject> {
    let msg: Value = serde_json::from_slice(body).map_err(|e| Reject::parse(format!("invalid JSON: {e}")))?;
    let obj = match &msg {
        Value::Object(o) => o,
        Value::Array(_) => return Err(Reject::invalid("batches are not supported (LSP has none): send one object")),
        _ => return Err(Reject::invalid("a message must be a JSON object")),
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Reject::invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let id = obj.get("id");
    // tower-lsp's ids are i64, string or null; 2^70 parses as f64, not i64.
    if id.is_some_and(|id| !(id.is_null() || id.is_string() || id.as_i64().is_some())) {
        return Err(Reject::invalid("\"id\" must be a string, an integer (64-bit) or null"));
    }
    let answer = obj.contains_key("result") || obj.contains_key("error");
    match obj.get("method") {
        Some(Value::String(method)) => {
            if answer {
                return Err(Reject::invalid("a request or notification has no \"result\" or \"error\""));
            }
            // `null` is tolerated as "no params", as tower-lsp does: lsp4j sends it.
            if obj.get("params").is_some_and(|p| !(p.is_null() || p.is_object() || p.is_array())) {
                return Err(Reject::invalid("\"params\" must be an object or an array"));
            }
            // tower-lsp drops requests for unknown `$/` methods unanswered, and
            // serves no `$/` method as a request (only `$/cancelRequest`, a
            // notification). A `$/` request served here would need an exemption.
            if let Some(id) = id
                && method.starts_with("$/")
            {
                return Err(Reject { id: id.clone(), code: -32601, message: format!("Method not found: {method}") });
            }
            Ok(())
        }
        Some(_) => Err(Reject::invalid("\"method\" must be a string")),
        None if id.is_none() => Err(Reject::invalid(
            "a message needs a \"method\" (request, notification) or an \"id\" with \"result\" or \"error\" (response)",
        )),
        None => check_response(obj),
    }
}

fn check_response(obj: &Map<String, Value>) -> Result<(), Reject> {
    match (obj.get("result"), obj.get("error")) {
        (Some(_), None) => Ok(()),
        (None, Some(Value::Object(e)))
            if e.get("code").and_then(Value::as_i64).is_some() && e.get("message").is_some_and(Value::is_string) =>
        {
            Ok(())
        }
        (None, Some(_)) => {
            Err(Reject::invalid("\"error\" must be an object with an integer \"code\" and a string \"message\""))
        }
        (Some(_), Some(_)) => Err(Reject::invalid("a response has \"result\" or \"error\", not both")),
        (None, None) => Err(Reject::invalid("a response needs \"result\" or \"error\"")),
    }
}

/// Reads one message's headers, up to the blank line. `None`: the input
/// ended. `Some(Err)`: no usable length (reading goes on after the blank line).
async fn read_headers(input: &mut (impl AsyncBufRead + Unpin)) -> Option<Result<usize, String>> {
    let mut len: Option<Result<usize, String>> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut *input).take(MAX_HEADER_LINE as u64).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        if n >= MAX_HEADER_LINE && !line.ends_with(b"\n") {
            len = Some(Err("a header line is too long".into()));
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            if len.is_none() {
                continue; // stray blank lines between messages
            }
            return len;
        }
        if let Some((name, value)) = text.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                len = Some(value.trim().parse::<usize>().map_err(|_| format!("bad Content-Length {:?}", value.trim())));
            }
        } else {
            len.get_or_insert(Err(format!("not a header: {text:?}")));
        }
    }
}

/// stdin → tower-lsp, answering what it must not see. Returning drops
/// `server`, which ends tower-lsp's input: closing stdin ends the server.
async fn guard(input: impl AsyncRead + Unpin, mut server: DuplexStream, out: mpsc::Sender<Vec<u8>>) {
    let mut input = BufReader::with_capacity(1 << 16, input);
    while let Some(len) = read_headers(&mut input).await {
        let verdict = match len {
            Err(e) => Err(Reject::parse(e)),
            Ok(n) if n > MAX_MESSAGE => {
                // Skip it without holding it in memory.
                let skipped = tokio::io::copy(&mut (&mut input).take(n as u64), &mut tokio::io::sink()).await;
                if skipped.is_err() {
                    return;
                }
                Err(Reject::parse(format!("message of {n} bytes is over the {MAX_MESSAGE}-byte limit")))
            }
            Ok(n) => {
                let mut body = vec![0; n];
                if input.read_exact(&mut body).await.is_err() {
                    return;
                }
                check(&body).map(|()| body)
            }
        };
        match verdict {
            Ok(body) => {
                if server.write_all(&header(body.len())).await.is_err() || server.write_all(&body).await.is_err() {
                    return;
                }
            }
            Err(r) => {
                tracing::warn!(code = r.code, message = %r.message, "answered a message tower-lsp cannot serve");
                if out.send(r.frame()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// tower-lsp's output → whole frames for the writer.
async fn frames(server: DuplexStream, out: mpsc::Sender<Vec<u8>>) {
    let mut server = BufReader::new(server);
    while let Some(len) = read_headers(&mut server).await {
        let Ok(n) = len else {
            tracing::error!("tower-lsp wrote a frame without a usable Content-Length");
            continue;
        };
        let mut frame = header(n);
        let start = frame.len();
        frame.resize(start + n, 0);
        if server.read_exact(&mut frame[start..]).await.is_err() || out.send(frame).await.is_err() {
            return;
        }
    }
}

/// The only writer of stdout. A write error there means the editor is gone
/// (or the pipe is broken), and a sidecar that cannot answer must not linger.
async fn write_out(mut output: impl AsyncWrite + Unpin, mut frames: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = frames.recv().await {
        let mut r = output.write_all(&frame).await;
        // Whatever else is queued, then one flush.
        while r.is_ok()
            && let Ok(frame) = frames.try_recv()
        {
            r = output.write_all(&frame).await;
        }
        if r.is_ok() {
            r = output.flush().await;
        }
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot write to the editor; exiting");
            std::process::exit(1);
        }
    }
}

/// The tasks behind [`transport`].
pub struct Transport {
    guard: JoinHandle<()>,
    frames: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// Returns the input and output to give tower-lsp's `Server`; tasks connect
/// them to `input` (stdin) and `output` (stdout).
pub fn transport(
    input: impl AsyncRead + Unpin + Send + 'static,
    output: impl AsyncWrite + Unpin + Send + 'static,
) -> (DuplexStream, DuplexStream, Transport) {
    let (tx, rx) = mpsc::channel(64);
    let (server_in, guard_end) = tokio::io::duplex(PIPE);
    let (server_out, frames_end) = tokio::io::duplex(PIPE);
    let guard = tokio::spawn(guard(input, guard_end, tx.clone()));
    let frames = tokio::spawn(frames(frames_end, tx));
    let writer = tokio::spawn(write_out(output, rx));
    (server_in, server_out, Transport { guard, frames, writer })
}

impl Transport {
    /// Once the server has stopped (dropping its output): writes out what is
    /// queued, then returns.
    pub async fn finish(self) {
        // The guard would wait for stdin; its answers so far are queued.
        self.guard.abort();
        let _ = self.guard.await;
        let _ = self.frames.await;
        // Both senders are gone now: the writer ends once the queue is empty.
        let _ = self.writer.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PASS: Option<i64> = None;
    const PARSE: Option<i64> = Some(-32700);
    const INVALID: Option<i64> = Some(-32600);
    const NOT_FOUND: Option<i64> = Some(-32601);

    /// Body → passed to tower-lsp, or the error code answered here (with a
    /// null id, except MethodNotFound, which has the request's own).
    #[test]
    fn check_answers_what_tower_lsp_cannot_serve() {
        let cases: &[(&[u8], Option<i64>)] = &[
            // Requests, notifications and responses pass through.
            (br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{}}}"#, PASS),
            (br#"{"jsonrpc":"2.0","id":"a","method":"threadsync/getStatus"}"#, PASS),
            (br#"{"jsonrpc":"2.0","id":null,"method":"threadsync/getStatus"}"#, PASS),
            (br#"{"jsonrpc":"2.0","id":-9223372036854775808,"method":"x","params":[]}"#, PASS),
            (br#"{"jsonrpc":"2.0","id":1,"method":"shutdown","params":null}"#, PASS),
            (br#"{"jsonrpc":"2.0","method":"initialized","params":{}}"#, PASS),
            (br#"{"jsonrpc":"2.0","method":"exit"}"#, PASS),
            (br#"{"jsonrpc":"2.0","method":"$/cancelRequest","params":{"id":3}}"#, PASS),
            (br#"{"jsonrpc":"2.0","method":"$/setTrace","params":{"value":"off"}}"#, PASS),
            (br#"{"jsonrpc":"2.0","method":"$/progress","params":{"token":1,"value":{}}}"#, PASS),
            (br#"{"jsonrpc":"2.0","id":0,"result":null}"#, PASS),
            (br#"{"jsonrpc":"2.0","id":"s","result":[1]}"#, PASS),
            (br#"{"jsonrpc":"2.0","id":0,"error":{"code":-32800,"message":"cancelled","data":[1]}}"#, PASS),
            (br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#, PASS),
            (br#"  {"method":"exit","jsonrpc":"2.0","extra":1}  "#, PASS),
            // Not JSON.
            (b"", PARSE),
            (br#"{"jsonrpc":"2.0","id":99,"method":"#, PARSE),
            (b"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}", PARSE),
            (br#"{"jsonrpc":"2.0","method":"\ud800"}"#, PARSE),
            (b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"method\":\"exit\"}", PARSE),
            // JSON, not JSON-RPC 2.0.
            (b"1", INVALID),
            (b"null", INVALID),
            (b"{}", INVALID),
            (b"[]", INVALID),
            (br#""text""#, INVALID),
            (br#"[{"jsonrpc":"2.0","id":1,"method":"threadsync/getStatus"}]"#, INVALID),
            (br#"{"jsonrpc":"1.0","id":1,"method":"threadsync/getStatus"}"#, INVALID),
            (br#"{"jsonrpc":2.0,"id":1,"method":"threadsync/getStatus"}"#, INVALID),
            (br#"{"id":1,"method":"threadsync/getStatus"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1,"method":5}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1,"method":null}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1.5,"method":"threadsync/getStatus"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1.0,"method":"threadsync/getStatus"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":true,"method":"threadsync/getStatus"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":[1],"method":"threadsync/getStatus"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":{},"method":"threadsync/getStatus"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1180591620717411303424,"method":"x"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":9223372036854775808,"method":"x"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":7,"method":"threadsync/getStatus","params":5}"#, INVALID),
            (br#"{"jsonrpc":"2.0","method":"initialized","params":"x"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1,"method":"x","result":1}"#, INVALID),
            (br#"{"jsonrpc":"2.0"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","result":1}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"m"}}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"m"}}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1,"error":"boom"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1.5,"result":1}"#, INVALID),
            // A key twice (found by fuzz/lsp_frames): tower-lsp refuses it.
            (br#"{"jsonrpc":"2.0","id":0,"errrpc":"2.0","id":0,"error":{"code":-32799,"message":"cancelled"}}"#, INVALID),
            (br#"{"jsonrpc":"2.0","id":1,"method":"x","method":"x"}"#, INVALID),
            (br#"{"jsonrpc":"2.0","jsonrpc":"2.0","method":"exit"}"#, INVALID),
            // Requests for `$/` methods: MethodNotFound, with their own id.
            (br#"{"jsonrpc":"2.0","id":4,"method":"$/threadsync.unknown","params":{}}"#, NOT_FOUND),
            (br#"{"jsonrpc":"2.0","id":"c","method":"$/cancelRequest","params":{"id":3}}"#, NOT_FOUND),
            (br#"{"jsonrpc":"2.0","id":null,"method":"$/x"}"#, NOT_FOUND),
        ];
        for (body, want) in cases {
            let shown = String::from_utf8_lossy(body);
            match (check(body), want) {
                (Ok(()), None) => {
                    // What passes must not end tower-lsp's reader.
                    let decodes = serde_json::from_slice::<Response>(body).is_ok()
                        || serde_json::from_slice::<Request>(body).is_ok();
                    assert!(decodes, "{shown}: passed, but tower-lsp cannot decode it");
                }
                (Err(r), Some(code)) => {
                    let id = if *code == -32601 {
                        serde_json::from_slice::<Value>(body).unwrap()["id"].clone()
                    } else {
                        Value::Null
                    };
                    assert_eq!((r.code, &r.id), (*code, &id), "{shown}: {}", r.message);
                    let prefix = match code {
                        -32700 => "Parse error: ",
                        -32600 => "Invalid Request: ",
                        _ => "Method not found: ",
                    };
                    assert!(r.message.starts_with(prefix), "{shown}: {}", r.message);
                }
                (got, want) => panic!("{shown}: got {got:?}, want {want:?}"),
            }
        }
    }

    async fn read_frame(r: &mut BufReader<DuplexStream>) -> Value {
        let n = read_headers(r).await.expect("a frame").expect("a length");
        let mut body = vec![0; n];
        r.read_exact(&mut body).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// Good messages reach the server, bad ones are answered on stdout next
    /// to the server's own output, and closing stdin ends the server's input.
    #[tokio::test]
    async fn the_transport_answers_bad_messages_and_forwards_the_rest() {
        let (mut editor_out, stdin) = tokio::io::duplex(1 << 16);
        let (stdout, editor_in) = tokio::io::duplex(1 << 16);
        let (server_in, mut server_out, io) = transport(stdin, stdout);
        let mut server_in = BufReader::new(server_in);
        let mut editor_in = BufReader::new(editor_in);

        for body in
            [&br#"{"jsonrpc":"2.0","id":1,"method":"a"}"#[..], b"[]", b"{", br#"{"jsonrpc":"2.0","method":"b"}"#]
        {
            editor_out.write_all(&header(body.len())).await.unwrap();
            editor_out.write_all(body).await.unwrap();
        }
        editor_out.write_all(b"Content-Length: x\r\n\r\n").await.unwrap();
        assert_eq!(read_frame(&mut server_in).await["method"], "a");
        assert_eq!(read_frame(&mut server_in).await["method"], "b");
        for code in [-32600, -32700, -32700] {
            let m = read_frame(&mut editor_in).await;
            assert_eq!((&m["error"]["code"], &m["id"]), (&json!(code), &Value::Null), "{m}");
        }

        let answer = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        server_out.write_all(&header(answer.len())).await.unwrap();
        server_out.write_all(answer).await.unwrap();
        assert_eq!(read_frame(&mut editor_in).await["id"], 1);

        drop(editor_out);
        assert!(read_headers(&mut server_in).await.is_none(), "stdin closed: the server's input ends");
        // Queued output is written before `finish` returns.
        server_out.write_all(&header(answer.len())).await.unwrap();
        server_out.write_all(answer).await.unwrap();
        drop(server_out);
        io.finish().await;
        assert_eq!(read_frame(&mut editor_in).await["result"], json!({}));
        assert!(read_headers(&mut editor_in).await.is_none(), "nothing else on stdout");
    }
}
