//! The sidecar's HTTP client: turns the engine's requests into calls to
//! `threadsync serve` and the answers (or failures) back into engine inputs.

use std::time::Duration;

use reqwest::StatusCode;

use crate::engine::PullOutcome;
use crate::engine::retry::Failure;
use crate::model::{Message, MessageId, ThreadId};
use crate::wire::{Change, ClientId, Cursor, PullResponse, PushRequest, PushResponse};

#[derive(Clone)]
pub struct Net {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Net {
    pub fn new(server: &str, token: Option<String>) -> Net {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Under the server's read timeout (30 s by default), which also
            // closes idle connections: never reuse one it is closing.
            .pool_idle_timeout(Duration::from_secs(20))
            // A held pull hears a byte every 20 s (the server's heartbeat):
            // silence for longer is a dead connection, noticed in time.
            .read_timeout(Duration::from_secs(45))
            .build()
            .expect("the HTTP client builds");
        Net { http, server: server.to_string(), token }
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn push(&self, body: &PushRequest, timeout: Duration) -> Result<PushResponse, Failure> {
        let r = self.auth(self.http.post(format!("{}/v1/push", self.server)).json(body).timeout(timeout)).send().await;
        decode(r).await
    }

    /// `clients`: this sidecar's client ids, so that what it pushed comes
    /// back without the content it has (see `Change::elided`).
    pub async fn pull(
        &self,
        cursor: Option<&Cursor>,
        wait: Option<Duration>,
        timeout: Duration,
        clients: &[&ClientId],
    ) -> PullOutcome {
        let mut query = vec![("cursor", cursor.map(|c| c.to_string()).unwrap_or_default())];
        if let Some(w) = wait {
            query.push(("wait", w.as_secs().to_string()));
        }
        if !clients.is_empty() {
            query.push(("clients", clients.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",")));
        }
        let url = format!("{}/v1/pull", self.server);
        let r = self.auth(self.http.get(url).query(&query).timeout(timeout)).send().await;
        if let Ok(resp) = &r
            && resp.status() == StatusCode::GONE
        {
            return PullOutcome::Refetch;
        }
        match decode::<PullResponse>(r).await {
            Ok(mut p) => {
                p.changes.iter_mut().for_each(Change::take_elided);
                PullOutcome::Ok(p)
            }
            // Said inside a held pull's answer (its status went out first).
            Err(Failure::Http { status: 410, .. }) => PullOutcome::Refetch,
            Err(f) => PullOutcome::Failed(f),
        }
    }

    /// A message as the server keeps it, deleted or not (None: no such message).
    pub async fn kept_message(
        &self,
        thread: &ThreadId,
        id: &MessageId,
        timeout: Duration,
    ) -> Result<Option<Message>, Failure> {
        let url = format!("{}/v1/threads/{thread}/messages/{id}", self.server);
        let r = self.auth(self.http.get(url).timeout(timeout)).send().await;
        if let Ok(resp) = &r
            && resp.status() == StatusCode::NOT_FOUND
        {
            return Ok(None);
        }
        #[derive(serde::Deserialize)]
        struct Kept {
            message: Message,
        }
        decode::<Kept>(r).await.map(|k| Some(k.message))
    }

    pub async fn probe(&self, timeout: Duration) -> Result<(), Failure> {
        let r = self.http.get(format!("{}/healthz", self.server)).timeout(timeout).send().await;
        decode::<serde_json::Value>(r).await.map(|_| ())
    }
}

async fn decode<T: serde::de::DeserializeOwned>(r: reqwest::Result<reqwest::Response>) -> Result<T, Failure> {
    let resp = r.map_err(failure)?;
    let status = resp.status();
    if status.is_success() {
        let bytes = resp.bytes().await.map_err(failure)?;
        return serde_json::from_slice(&bytes).map_err(|e| match serde_json::from_slice::<ErrorBody>(&bytes) {
            // A held pull that failed after its 200 went out.
            Ok(err) => Failure::Http { status: err.status(), retry_after: None, message: err.message },
            Err(_) => Failure::Http {
                status: 502,
                retry_after: None,
                message: format!("unreadable answer from the server: {e}"),
            },
        });
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse().ok())
        .map(Duration::from_secs);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let message = body["message"].as_str().unwrap_or_default().to_string();
    Err(Failure::Http { status: status.as_u16(), retry_after, message })
}

/// The server's JSON error (protocol.md).
#[derive(serde::Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl ErrorBody {
    /// The status the code goes with, for an error said in a 200's body.
    fn status(&self) -> u16 {
        match self.code.as_str() {
            "refetch" => 410,
            "overloaded" => 429,
            "unavailable" => 503,
            _ => 500,
        }
    }
}

fn failure(e: reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::Timeout
    } else {
        // The chain says why (refused, reset, DNS); without the URL, which
        // is the user's own configuration anyway.
        let e = e.without_url();
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg = format!("{msg}: {s}");
            source = s.source();
        }
        Failure::Network(msg)
    }
}
