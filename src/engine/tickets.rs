//! Force-sync tickets: a `forceSync` answers once the changes made before it
//! are on the server and a pull after them finished.

use super::*;

#[derive(Debug)]
pub(super) struct Ticket {
    pub(super) id: u64,
    pub(super) thread: Option<ThreadId>,
    /// Operations up to this sequence must be on the server.
    pub(super) upto: u64,
    pub(super) phase: TicketPhase,
}

#[derive(Debug, PartialEq)]
pub(super) enum TicketPhase {
    /// Waiting for the ticket's changes to be answered by the server.
    Pushing,
    /// Waiting for a pull that started at or after this time to finish.
    Pulling {
        since: Time,
    },
    Done,
}

impl SyncEngine {
    /// Sync now: skip the debounce and batching windows and any backoff. A
    /// `SyncDone` with the returned ticket follows when the changes made so
    /// far are on the server and a pull after them has finished, or when an
    /// attempt failed.
    pub fn force_sync(&mut self, now: Time, thread: Option<ThreadId>) -> u64 {
        match &thread {
            Some(id) => {
                if self.debounce.take(id) {
                    self.flush_snapshot(now, id);
                }
            }
            None => {
                for id in self.debounce.take_all() {
                    self.flush_snapshot(now, &id);
                }
            }
        }
        let id = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.push(Ticket { id, thread: thread.clone(), upto: self.next_seq - 1, phase: TicketPhase::Pushing });
        // Bypass every wait.
        self.unauthorized = None;
        if let Connectivity::Offline { .. } = self.net {
            self.net = Connectivity::Online;
        }
        for (tid, t) in self.threads.iter_mut() {
            if thread.as_ref().is_none_or(|id| id == tid) {
                t.backoff_until = None;
                if t.write_retry.take().is_some() {
                    self.to_write.insert(tid.clone());
                }
            }
        }
        for lane in &mut self.lanes {
            lane.retry_at = lane.retry_at.map(|_| now);
        }
        self.pull.backoff.reset();
        self.batch_at = Some(now);
        self.check_tickets(now);
        self.drive(now);
        self.update_status(now);
        id
    }

    // ----- force-sync tickets ---------------------------------------------

    pub(super) fn check_tickets(&mut self, now: Time) {
        let mut need_pull = false;
        let mut done = Vec::new();
        for (i, ticket) in self.tickets.iter_mut().enumerate() {
            if ticket.phase == TicketPhase::Pushing {
                let waiting =
                    self.threads.iter().filter(|(id, _)| ticket.thread.as_ref().is_none_or(|t| t == *id)).any(
                        |(_, t)| {
                            t.snapshot.is_some()
                                || t.pending.iter().any(|p| p.seq <= ticket.upto)
                                || t.inflight.as_ref().is_some_and(|i| i.ops.iter().any(|p| p.seq <= ticket.upto))
                        },
                    );
                if !waiting {
                    ticket.phase = TicketPhase::Pulling { since: now };
                    need_pull = true;
                }
            } else if ticket.phase == TicketPhase::Done {
                done.push(i);
            }
        }
        if !done.is_empty() {
            // Whoever waited for this sync reads the status next: make it
            // current now rather than at the throttle's trailing edge.
            self.emit_status();
        }
        for i in done.into_iter().rev() {
            let t = self.tickets.remove(i);
            self.actions.push_back(Action::SyncDone { ticket: t.id, result: Ok(()) });
        }
        if need_pull {
            self.pull.fresh = true;
            // A held long-poll began before our changes; ask again now.
            match self.pull.inflight {
                Some((req, started, true)) if started <= now => {
                    self.pull.inflight = None;
                    self.actions.push_back(Action::CancelPull { req });
                    self.pull.next_at = Some(now);
                }
                Some(_) => {}
                None => self.pull.next_at = Some(now),
            }
        }
    }

    pub(super) fn fail_tickets(&mut self, reason: &str) {
        for t in self.tickets.drain(..) {
            self.actions.push_back(Action::SyncDone { ticket: t.id, result: Err(reason.to_string()) });
        }
    }
}
