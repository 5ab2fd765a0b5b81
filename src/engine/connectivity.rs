//! Connectivity and failures: online, offline with probes, unauthorized,
//! and what a failure's class means for retries.

use super::*;

#[derive(Debug)]
pub(super) enum Connectivity {
    Online,
    Offline { probe_at: Time, probe: Option<ReqId>, backoff: Backoff, reason: String, since: Time, told: bool },
}

impl SyncEngine {
    /// The server URL or token changed: try again at once.
    pub fn credentials_changed(&mut self, now: Time) {
        self.unauthorized = None;
        self.told_unauthorized = false;
        self.net = Connectivity::Online;
        for lane in &mut self.lanes {
            lane.backoff.reset();
            lane.retry_at = lane.retry_at.map(|_| now);
        }
        if let Some((req, _, _)) = self.pull.inflight.take() {
            self.actions.push_back(Action::CancelPull { req });
        }
        self.pull.next_at = Some(now);
        self.batch_at = Some(now);
        self.drive(now);
        self.update_status(now);
    }

    pub fn handle_probe(&mut self, now: Time, req: ReqId, outcome: Result<(), Failure>) {
        let Connectivity::Offline { probe, .. } = &mut self.net else { return };
        if *probe != Some(req) {
            return;
        }
        *probe = None;
        match outcome {
            Ok(()) => self.on_reachable(now),
            Err(f) => {
                if let Connectivity::Offline { probe_at, backoff, reason, .. } = &mut self.net {
                    *probe_at = now + backoff.next_delay(&mut self.rng, None);
                    *reason = f.describe();
                }
            }
        }
        self.drive(now);
        self.update_status(now);
    }

    // ----- connectivity and failures --------------------------------------

    pub(super) fn on_reachable(&mut self, now: Time) {
        if let Connectivity::Offline { .. } = self.net {
            self.net = Connectivity::Online;
            // Back online: flush everything now.
            for lane in &mut self.lanes {
                lane.backoff.reset();
                if !lane.outstanding.is_empty() {
                    lane.retry_at = Some(now);
                }
            }
            self.batch_at = Some(now);
            if self.pull.inflight.is_none() {
                self.pull.next_at = Some(now);
            }
        }
    }

    pub(super) fn go_offline(&mut self, now: Time, f: &Failure) {
        self.monitor.record_failure();
        match &mut self.net {
            Connectivity::Online => {
                let mut backoff = Backoff::new(self.cfg.jitter);
                let delay = backoff.next_delay(&mut self.rng, None);
                self.net = Connectivity::Offline {
                    probe_at: now + delay,
                    probe: None,
                    backoff,
                    reason: f.describe(),
                    since: now,
                    told: false,
                };
                // A held pull would only fail too.
                if let Some((req, _, _)) = self.pull.inflight.take() {
                    self.actions.push_back(Action::CancelPull { req });
                }
                self.pull.next_at = Some(now);
            }
            Connectivity::Offline { reason, .. } => *reason = f.describe(),
        }
    }

    pub(super) fn set_unauthorized(&mut self, f: &Failure) {
        let why = f.describe();
        if !self.told_unauthorized {
            // Said once per token: the statusline keeps saying it after.
            self.told_unauthorized = true;
            self.actions.push_back(Action::Notify {
                error: true,
                message: format!("threadsync: the server refused our token ({why}); set a valid token"),
            });
        }
        self.unauthorized = Some(why);
        self.pull.next_at = Some(Time::ZERO);
        for lane in &mut self.lanes {
            lane.retry_at = Some(Time::ZERO);
        }
    }

    pub(super) fn record(&mut self, s: SyncSample) {
        if let Some(slow) = self.monitor.record(s) {
            self.actions.push_back(Action::Warning(format!(
                "slow sync: {} ms (p95 {} ms)",
                slow.duration.as_millis(),
                slow.p95.as_millis()
            )));
        }
    }
}
