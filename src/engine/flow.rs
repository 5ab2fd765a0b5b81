//! Debounce and throttle expressed as deadline-based state.
//!
//! The engine is sans-IO: it cannot sleep or arm timers. Instead each of these
//! types exposes `deadline()`, the shell wakes the engine at (or after) that
//! time, and the engine asks what became due. Because nothing here reads a
//! clock, the simulator can drive the same code with virtual time.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::time::Time;

/// When a waiting key was first and last touched since it was last taken.
#[derive(Clone, Copy, Debug)]
struct Pending {
    first: Time,
    last: Time,
}

/// Keyed debounce with a max wait: a key becomes due `quiet` after its last
/// touch, but never later than `max_wait` after its first untaken touch (so a
/// file rewritten continuously still syncs).
#[derive(Clone, Debug)]
pub struct Debouncer<K: Ord + Clone> {
    quiet: Duration,
    max_wait: Duration,
    // BTreeMap so that `take_due`/`take_all` return keys in a stable order,
    // which keeps simulation runs reproducible.
    waiting: BTreeMap<K, Pending>,
}

impl<K: Ord + Clone> Debouncer<K> {
    pub fn new(quiet: Duration, max_wait: Duration) -> Self {
        Self { quiet, max_wait, waiting: BTreeMap::new() }
    }

    pub fn touch(&mut self, now: Time, key: K) {
        self.waiting
            .entry(key)
            .and_modify(|p| {
                // A clock that steps backwards must not pull `last` earlier
                // and make a key due before its true quiet period ended.
                p.last = p.last.max(now);
            })
            .or_insert(Pending { first: now, last: now });
    }

    fn due_at(&self, p: &Pending) -> Time {
        (p.last + self.quiet).min(p.first + self.max_wait)
    }

    /// Earliest time any key becomes due, None when nothing waits.
    pub fn deadline(&self) -> Option<Time> {
        self.waiting.values().map(|p| self.due_at(p)).min()
    }

    /// Removes and returns (in key order) all keys due at `now`.
    pub fn take_due(&mut self, now: Time) -> Vec<K> {
        let due: Vec<K> = self.waiting.iter().filter(|(_, p)| self.due_at(p) <= now).map(|(k, _)| k.clone()).collect();
        for k in &due {
            self.waiting.remove(k);
        }
        due
    }

    /// Removes `key` at once (force sync); true if it was waiting.
    pub fn take(&mut self, key: &K) -> bool {
        self.waiting.remove(key).is_some()
    }

    /// Removes and returns all waiting keys (force sync of everything).
    pub fn take_all(&mut self) -> Vec<K> {
        std::mem::take(&mut self.waiting).into_keys().collect()
    }

    pub fn is_waiting(&self, key: &K) -> bool {
        self.waiting.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// Throttle with leading and trailing edges (the value itself is kept by the
/// caller): the first event after a quiet interval is emitted at once; events
/// inside the interval are coalesced into one trailing emission at
/// `last_emit + interval`.
#[derive(Clone, Debug)]
pub struct Throttle {
    interval: Duration,
    last_emit: Option<Time>,
    trailing: bool,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Self { interval, last_emit: None, trailing: false }
    }

    fn next_allowed(&self) -> Option<Time> {
        self.last_emit.map(|t| t + self.interval)
    }

    /// An event happened: true = emit now (leading edge). false = a trailing
    /// emission is scheduled (or already was).
    pub fn on_event(&mut self, now: Time) -> bool {
        match self.next_allowed() {
            Some(next) if now < next => {
                self.trailing = true;
                false
            }
            _ => {
                // Either quiet long enough, or a trailing emission is overdue
                // because the caller has not polled yet: one emission now
                // carries both, so the pending trailing edge is dropped.
                self.trailing = false;
                self.last_emit = Some(now);
                true
            }
        }
    }

    pub fn deadline(&self) -> Option<Time> {
        if self.trailing { self.next_allowed() } else { None }
    }

    /// True if the trailing emission is due at `now` (it is then cleared and
    /// counted as an emission at `now`).
    pub fn poll(&mut self, now: Time) -> bool {
        match self.deadline() {
            Some(due) if now >= due => {
                self.trailing = false;
                self.last_emit = Some(now);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn t(n: u64) -> Time {
        Time(n)
    }

    #[test]
    fn debounce_waits_for_quiet_after_last_touch() {
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.touch(t(0), "a");
        d.touch(t(50), "a");
        assert_eq!(d.deadline(), Some(t(150)));
        assert!(d.take_due(t(149)).is_empty());
        assert!(d.is_waiting(&"a"));
        assert_eq!(d.take_due(t(150)), vec!["a"]);
        assert!(d.is_empty());
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn debounce_max_wait_bounds_continuous_rewrites() {
        let mut d = Debouncer::new(ms(100), ms(300));
        for now in (0..=290).step_by(10) {
            d.touch(t(now), 1u32);
        }
        // Quiet alone would push the deadline to 390; max_wait caps it.
        assert_eq!(d.deadline(), Some(t(300)));
        assert_eq!(d.take_due(t(300)), vec![1]);
        // The next touch starts a fresh max-wait window.
        d.touch(t(310), 1);
        assert_eq!(d.deadline(), Some(t(410)));
    }

    #[test]
    fn debounce_take_due_returns_only_due_keys_in_key_order() {
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.touch(t(0), "c");
        d.touch(t(0), "a");
        d.touch(t(80), "b");
        assert_eq!(d.deadline(), Some(t(100)));
        assert_eq!(d.take_due(t(120)), vec!["a", "c"]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.deadline(), Some(t(180)));
    }

    #[test]
    fn debounce_force_take() {
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.touch(t(0), "b");
        d.touch(t(0), "a");
        d.touch(t(0), "c");
        assert!(d.take(&"b"));
        assert!(!d.take(&"b"));
        assert!(!d.is_waiting(&"b"));
        assert_eq!(d.take_all(), vec!["a", "c"]);
        assert!(d.is_empty());
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn debounce_backwards_touch_does_not_shorten_quiet() {
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.touch(t(500), "a");
        d.touch(t(400), "a");
        assert_eq!(d.deadline(), Some(t(600)));
    }

    #[test]
    fn throttle_leading_then_single_trailing() {
        let mut th = Throttle::new(ms(100));
        assert!(th.on_event(t(0)));
        assert_eq!(th.deadline(), None);
        assert!(!th.on_event(t(10)));
        assert!(!th.on_event(t(60)));
        assert_eq!(th.deadline(), Some(t(100)));
        assert!(!th.poll(t(99)));
        assert!(th.poll(t(100)));
        assert_eq!(th.deadline(), None);
        // Trailing emission counts: the next event within its interval waits.
        assert!(!th.poll(t(150)));
        assert!(!th.on_event(t(150)));
        assert_eq!(th.deadline(), Some(t(200)));
    }

    #[test]
    fn throttle_leading_again_after_quiet_interval() {
        let mut th = Throttle::new(ms(100));
        assert!(th.on_event(t(0)));
        assert!(th.on_event(t(100)));
        assert!(th.on_event(t(500)));
        assert!(!th.poll(t(1000)));
    }

    #[test]
    fn throttle_overdue_trailing_merges_into_event() {
        let mut th = Throttle::new(ms(100));
        assert!(th.on_event(t(0)));
        assert!(!th.on_event(t(50)));
        // Caller never polled; a late event emits once and clears the trailing edge.
        assert!(th.on_event(t(300)));
        assert_eq!(th.deadline(), None);
        assert!(!th.poll(t(300)));
    }
}
