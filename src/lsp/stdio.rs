//! A guard in front of the LSP transport. tower-lsp-server stops reading
//! after the first undecodable message (tokio-util's framed reader ends on
//! a decode error), which would make one malformed message kill the
//! sidecar. So stdin is framed here first: well-formed messages pass through
//! untouched; a malformed one becomes a request to `threadsync/_parseError`,
//! which answers with a JSON-RPC parse error (-32700), and reading goes on.

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

/// Largest message accepted (a megabytes-long message is normal; this is not).
const MAX_MESSAGE: usize = 256 << 20;
const MAX_HEADER_LINE: usize = 8 << 10;

pub const PARSE_ERROR_METHOD: &str = "threadsync/_parseError";

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

fn parse_error(n: u64, message: String) -> Vec<u8> {
    let req = json!({ "jsonrpc": "2.0", "id": format!("threadsync-parse-error-{n}"), "method": PARSE_ERROR_METHOD, "params": { "message": message } });
    framed(&serde_json::to_vec(&req).expect("serialises"))
}

/// Returns the reader tower-lsp should use; a task copies `input` into it.
pub fn guard(input: impl AsyncRead + Unpin + Send + 'static) -> DuplexStream {
    let (mut tx, rx) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let mut input = BufReader::with_capacity(1 << 16, input);
        let mut errors = 0u64;
        loop {
            // Headers, up to the blank line.
            let mut len: Option<Result<usize, String>> = None;
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = match (&mut input).take(MAX_HEADER_LINE as u64).read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return, // stdin closed: dropping `tx` ends the server.
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
                    break;
                }
                if let Some((name, value)) = text.split_once(':') {
                    if name.trim().eq_ignore_ascii_case("content-length") {
                        len = Some(
                            value.trim().parse::<usize>().map_err(|_| format!("bad Content-Length {:?}", value.trim())),
                        );
                    }
                } else {
                    len.get_or_insert(Err(format!("not a header: {text:?}")));
                }
            }
            let out = match len.expect("set before the blank line") {
                Err(e) => {
                    errors += 1;
                    parse_error(errors, e)
                }
                Ok(n) if n > MAX_MESSAGE => {
                    // Skip it without holding it in memory.
                    let skipped = tokio::io::copy(&mut (&mut input).take(n as u64), &mut tokio::io::sink()).await;
                    if skipped.is_err() {
                        return;
                    }
                    errors += 1;
                    parse_error(errors, format!("message of {n} bytes is over the {MAX_MESSAGE}-byte limit"))
                }
                Ok(n) => {
                    let mut body = vec![0; n];
                    if input.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    match serde_json::from_slice::<serde_json::Value>(&body) {
                        Ok(_) => framed(&body),
                        Err(e) => {
                            errors += 1;
                            parse_error(errors, format!("invalid JSON: {e}"))
                        }
                    }
                }
            };
            if tx.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// stdout for the transport: a write error there means the editor is gone
/// (or the pipe is broken), and a sidecar that cannot answer must not linger.
pub struct FatalWriter<W>(pub W);

fn fatal<T>(r: std::task::Poll<std::io::Result<T>>) -> std::task::Poll<std::io::Result<T>> {
    if let std::task::Poll::Ready(Err(e)) = &r {
        tracing::error!(error = %e, "cannot write to the editor; exiting");
        std::process::exit(1);
    }
    r
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FatalWriter<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        fatal(std::pin::Pin::new(&mut self.0).poll_write(cx, buf))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        fatal(std::pin::Pin::new(&mut self.0).poll_flush(cx))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
