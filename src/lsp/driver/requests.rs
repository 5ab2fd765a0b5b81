//! Performing the engine's actions that leave the process: requests to the
//! server (and the bodies a pull left out that we lack), replies to the
//! editor, notifications and progress.

use super::*;

impl Driver {
    /// Fetches the content of our own inserts that came back without it
    /// and that this machine no longer has, then hands the pull on (or
    /// fails it, to be retried).
    pub(super) fn fetch_bodies(&mut self, req: ReqId, r: PullOutcome, missing: Vec<(ThreadId, MessageId)>) {
        let PullOutcome::Ok(resp) = r else { return };
        let (net, tx) = (self.net.clone(), self.tx.clone());
        let h = tokio::spawn(async move {
            let mut fetched = Vec::with_capacity(missing.len());
            for (thread, id) in missing {
                match net.kept_message(&thread, &id, Duration::from_secs(60)).await {
                    Ok(Some(m)) => fetched.push((thread, m)),
                    Ok(None) => {
                        let message = format!("the server does not have message {id} of {thread} it announced");
                        let f = Failure::Http { status: 502, retry_after: None, message };
                        let _ = tx.send(Cmd::Pulled(req, PullOutcome::Failed(f)));
                        return;
                    }
                    Err(f) => {
                        let _ = tx.send(Cmd::Pulled(req, PullOutcome::Failed(f)));
                        return;
                    }
                }
            }
            let _ = tx.send(Cmd::Fetched(req, resp, fetched));
        });
        self.pulls.insert(req, h);
    }

    pub(super) async fn act(&mut self, action: Action) {
        match action {
            Action::Push { req, body, timeout } => {
                let (net, tx) = (self.net.clone(), self.tx.clone());
                match self.client.load_push(&body) {
                    Ok(body) => {
                        tokio::spawn(async move {
                            let r = net.push(&body, timeout).await;
                            let _ = tx.send(Cmd::Pushed(req, r));
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot load what a push carries");
                        let _ = tx
                            .send(Cmd::Pushed(req, Err(Failure::Http { status: 500, retry_after: None, message: e })));
                    }
                }
            }
            Action::Pull { req, cursor, wait, timeout } => {
                let (net, tx) = (self.net.clone(), self.tx.clone());
                let clients: Vec<ClientId> = self.client.engine.client_ids().into_iter().cloned().collect();
                let h = tokio::spawn(async move {
                    let r = net.pull(cursor.as_ref(), wait, timeout, &clients.iter().collect::<Vec<_>>()).await;
                    let _ = tx.send(Cmd::Pulled(req, r));
                });
                self.pulls.insert(req, h);
            }
            Action::CancelPull { req } => {
                if let Some(h) = self.pulls.remove(&req) {
                    h.abort();
                }
            }
            Action::Probe { req, timeout } => {
                let (net, tx) = (self.net.clone(), self.tx.clone());
                tokio::spawn(async move {
                    let r = net.probe(timeout).await;
                    let _ = tx.send(Cmd::Probed(req, r));
                });
            }
            Action::Save(_) | Action::WriteFile { .. } => unreachable!("performed by the client"),
            Action::Status(s) => {
                let v = SyncStatus::from(&s);
                self.status.send_replace(v.clone());
                self.editor.send_notification::<protocol::Status>(v).await;
            }
            Action::ThreadStatus(s) => {
                self.editor.send_notification::<protocol::ThreadStatus>(ThreadStatusParams::from(&s)).await;
            }
            Action::ThreadUpdated { thread_id, version, title, message_count, origin } => {
                let v = ThreadUpdatedParams {
                    thread_id: thread_id.into(),
                    version,
                    title,
                    message_count,
                    origin: origin.into(),
                };
                self.editor.send_notification::<protocol::ThreadUpdated>(v).await;
            }
            Action::Rollback { thread_id, reason, ops } => {
                let now = self.now().as_millis();
                let kept =
                    ops.iter().map(|op| self.client.store.load_op(&thread_id, op)).collect::<Result<Vec<_>, _>>();
                match kept.and_then(|ops| self.client.store.save_rejected(&thread_id, &ops, &reason, now)) {
                    Ok(()) => {}
                    Err(e) => tracing::error!(thread = %thread_id, error = %e, "cannot keep a refused change"),
                }
                let v = RollbackParams { thread_id: thread_id.into(), reason };
                self.editor.send_notification::<protocol::Rollback>(v).await;
            }
            Action::SyncDone { ticket, result } => {
                if let Some(reply) = self.tickets.remove(&ticket) {
                    let _ = reply.send(result);
                }
            }
            Action::Notify { error, message } => {
                let level = if error { MessageType::ERROR } else { MessageType::WARNING };
                self.editor.show_message(level, message).await;
            }
            Action::Progress { token, step } => match step {
                ProgressStep::Begin(title) if self.progress => {
                    let done = show_progress(self.editor.clone(), &token, title);
                    self.shown.insert(token, done);
                }
                ProgressStep::Begin(_) => {}
                ProgressStep::End(message) => {
                    if let Some(done) = self.shown.remove(&token) {
                        let _ = done.send(message);
                    }
                }
            },
            Action::Warning(w) => tracing::warn!("{w}"),
        }
    }
}
