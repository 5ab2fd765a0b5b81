//! Timers: every deadline the engine keeps, named by a closed [`Timer`]
//! enum and read into a small table (as quinn-proto's `TimerTable`), and
//! what each does when due.
//!
//! The deadlines themselves live with the state they belong to (a lane's
//! retry, a thread's backoff, the pull's next time), so that they cannot
//! disagree with it; [`SyncEngine::timers`] reads them all, with the
//! conditions under which each can act, in one place.

use super::*;

/// A kind of deadline. One kind may stand for several instances (one per
/// thread or lane): its deadline is the earliest of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// A thread's file changes have settled (debounce): take them in.
    Debounce,
    /// The status throttle lets the trailing status out.
    Status,
    /// A file write that failed is tried again.
    WriteRetry,
    /// Offline long enough to tell the user so.
    OfflineNotice,
    /// The batch window closes: compose and send what is queued.
    Batch,
    /// A lane's backoff after a failed push ends: resend.
    PushRetry,
    /// A thread's own backoff (after refusals) ends: it may be sent again.
    ThreadBackoff,
    /// The next pull: the poll interval, or a retry's backoff.
    Pull,
    /// Offline: ask the server whether it is back.
    Probe,
}

impl Timer {
    pub const ALL: [Timer; 9] = [
        Timer::Debounce,
        Timer::Status,
        Timer::WriteRetry,
        Timer::OfflineNotice,
        Timer::Batch,
        Timer::PushRetry,
        Timer::ThreadBackoff,
        Timer::Pull,
        Timer::Probe,
    ];
}

/// Every timer's deadline at one moment (None: not armed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerTable([Option<Time>; Timer::ALL.len()]);

impl TimerTable {
    pub fn get(&self, t: Timer) -> Option<Time> {
        self.0[t as usize]
    }

    /// Arms `t` at `at`, or at its earlier deadline if it has one.
    fn arm(&mut self, t: Timer, at: Option<Time>) {
        let slot = &mut self.0[t as usize];
        if let Some(at) = at {
            *slot = Some(slot.map_or(at, |s| s.min(at)));
        }
    }

    /// The earliest armed timer.
    pub fn next(&self) -> Option<(Timer, Time)> {
        Timer::ALL.into_iter().filter_map(|t| Some((t, self.get(t)?))).min_by_key(|(_, at)| *at)
    }

    /// The timers due at `now`.
    pub fn due(&self, now: Time) -> impl Iterator<Item = Timer> + '_ {
        Timer::ALL.into_iter().filter(move |t| self.get(*t).is_some_and(|at| at <= now))
    }
}

impl SyncEngine {
    /// Every timer, armed where it can act.
    pub fn timers(&self) -> TimerTable {
        let mut table = TimerTable::default();
        table.arm(Timer::Debounce, self.debounce.deadline());
        table.arm(Timer::Status, self.status_throttle.deadline());
        table.arm(Timer::WriteRetry, self.threads.values().filter_map(|t| t.write_retry).min());
        if let Connectivity::Offline { since, told: false, .. } = &self.net {
            table.arm(Timer::OfflineNotice, Some(*since + self.cfg.offline_notice));
        }
        // Unauthorized, nothing is sent until the credentials change.
        if self.unauthorized.is_none() {
            match &self.net {
                Connectivity::Online => {
                    table.arm(Timer::Batch, self.batch_at.filter(|at| self.has_sendable(*at)));
                    for lane in &self.lanes {
                        if lane.inflight.is_none() && !lane.outstanding.is_empty() {
                            table.arm(Timer::PushRetry, lane.retry_at);
                        }
                    }
                    if self.pull.inflight.is_none() {
                        table.arm(Timer::Pull, self.pull.next_at);
                    }
                    table.arm(
                        Timer::ThreadBackoff,
                        self.threads.values().filter(|t| !t.pending.is_empty()).filter_map(|t| t.backoff_until).min(),
                    );
                }
                Connectivity::Offline { probe_at, probe: None, .. } => table.arm(Timer::Probe, Some(*probe_at)),
                Connectivity::Offline { .. } => {}
            }
        }
        table
    }

    /// When the engine next needs [`SyncEngine::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers().next().map(|(_, at)| at)
    }

    pub fn handle_timeout(&mut self, now: Time) {
        let due: Vec<Timer> = self.timers().due(now).collect();
        for timer in due {
            match timer {
                Timer::Debounce => {
                    for id in self.debounce.take_due(now) {
                        self.flush_snapshot(now, &id);
                    }
                }
                Timer::Status => {
                    if self.status_throttle.poll(now) {
                        self.emit_status();
                    }
                }
                Timer::WriteRetry => {
                    for (id, t) in self.threads.iter_mut() {
                        if t.write_retry.is_some_and(|at| at <= now) {
                            t.write_retry = None;
                            self.to_write.insert(id.clone());
                        }
                    }
                }
                Timer::OfflineNotice => self.notice_offline(),
                // What the network timers start, `drive` sends.
                Timer::Batch | Timer::PushRetry | Timer::ThreadBackoff | Timer::Pull | Timer::Probe => {}
            }
        }
        self.drive(now);
        self.update_status(now);
    }

    fn notice_offline(&mut self) {
        let Connectivity::Offline { told, .. } = &mut self.net else { return };
        *told = true;
        let minutes = self.cfg.offline_notice.as_secs().div_ceil(60);
        self.actions.push_back(Action::Notify {
            error: false,
            message: format!(
                "threadsync: the sync server has been unreachable for {minutes} minutes; changes are kept and will sync when it is back"
            ),
        });
    }
}
