//! The adaptive poll interval: how long the engine waits before asking the
//! server for remote changes.
//!
//! A port of the seed's `AdaptivePoller`, made pure: the seed decayed activity
//! on a timer; here decay is computed lazily from the `now` the caller passes,
//! so the poller has no timers and behaves identically under simulation.

use std::time::Duration;

use crate::time::Time;

const ACTIVITY_PER_EVENT: f64 = 10.0;
const ACTIVITY_MAX: f64 = 100.0;
const DECAY_PER_SECOND: f64 = 1.0;
/// A queue deeper than this means we are behind; poll faster to catch up.
const DEEP_QUEUE: usize = 10;

#[derive(Clone, Debug)]
pub struct AdaptivePoller {
    base: Duration,
    max: Duration,
    /// Activity level as of `updated`, before any decay since then.
    activity: f64,
    updated: Time,
    queue_depth: usize,
}

impl Default for AdaptivePoller {
    fn default() -> Self {
        Self::new(Duration::from_secs(5), Duration::from_secs(60))
    }
}

impl AdaptivePoller {
    /// A `max` below `base` is raised to `base`, so the clamp range is never empty.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max: max.max(base), activity: 0.0, updated: Time::ZERO, queue_depth: 0 }
    }

    /// User activity (a local change): activity level += 10, capped at 100.
    /// Decay is applied first.
    pub fn record_activity(&mut self, now: Time) {
        let decayed = self.activity(now);
        self.activity = (decayed + ACTIVITY_PER_EVENT).min(ACTIVITY_MAX);
        // Never move `updated` backwards, or a stepped clock would replay decay.
        self.updated = self.updated.max(now);
    }

    /// Depth of the local sync queue (threads with pending changes).
    pub fn set_queue_depth(&mut self, depth: usize) {
        self.queue_depth = depth;
    }

    /// Activity decays by 1 point per elapsed second since the last update,
    /// computed lazily from `now` (no timers).
    pub fn activity(&self, now: Time) -> f64 {
        let elapsed = now.saturating_since(self.updated).as_secs_f64();
        (self.activity - elapsed * DECAY_PER_SECOND).max(0.0)
    }

    /// interval = base + (max - base) * (1 - activity/100); a queue deeper
    /// than 10 halves it (never below base); result clamped to [base, max].
    pub fn interval(&self, now: Time) -> Duration {
        let idle = 1.0 - self.activity(now) / ACTIVITY_MAX;
        // Whole milliseconds: `Time` has no finer resolution, and float noise
        // in the nanoseconds would only make intervals harder to compare.
        let span_ms = (self.max - self.base).as_secs_f64() * 1000.0 * idle.clamp(0.0, 1.0);
        let mut interval = self.base + Duration::from_millis(span_ms.round() as u64);
        if self.queue_depth > DEEP_QUEUE {
            interval /= 2;
        }
        interval.clamp(self.base, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Time {
        Time(s * 1000)
    }

    #[test]
    fn idle_polls_at_max() {
        let p = AdaptivePoller::default();
        assert_eq!(p.interval(secs(0)), MAX);
        assert_eq!(p.interval(secs(10_000)), MAX);
        assert_eq!(p.activity(secs(0)), 0.0);
    }

    #[test]
    fn ten_activities_reach_base_and_cap_at_100() {
        let mut p = AdaptivePoller::default();
        for _ in 0..10 {
            p.record_activity(secs(100));
        }
        assert_eq!(p.activity(secs(100)), 100.0);
        assert_eq!(p.interval(secs(100)), BASE);
        p.record_activity(secs(100));
        assert_eq!(p.activity(secs(100)), 100.0);
    }

    #[test]
    fn single_activity_shortens_interval_proportionally() {
        let mut p = AdaptivePoller::default();
        p.record_activity(secs(0));
        // 5 s + 55 s * 0.9
        assert_eq!(p.interval(secs(0)), Duration::from_millis(54_500));
    }

    #[test]
    fn activity_decays_back_towards_max() {
        let mut p = AdaptivePoller::default();
        for _ in 0..10 {
            p.record_activity(secs(0));
        }
        assert_eq!(p.activity(secs(30)), 70.0);
        assert_eq!(p.activity(Time(30_500)), 69.5);
        let mid = p.interval(secs(50));
        assert_eq!(mid, Duration::from_millis(32_500));
        assert!(p.interval(secs(80)) > mid);
        assert_eq!(p.interval(secs(100)), MAX);
        assert_eq!(p.interval(secs(1000)), MAX);
    }

    #[test]
    fn decay_applies_before_new_activity() {
        let mut p = AdaptivePoller::default();
        p.record_activity(secs(0));
        p.record_activity(secs(5));
        // 10 - 5 + 10, not 20.
        assert_eq!(p.activity(secs(5)), 15.0);
        p.record_activity(secs(100));
        assert_eq!(p.activity(secs(100)), 10.0);
    }

    #[test]
    fn deep_queue_halves_interval_but_not_below_base() {
        let mut p = AdaptivePoller::default();
        p.set_queue_depth(10);
        assert_eq!(p.interval(secs(0)), MAX);
        p.set_queue_depth(11);
        assert_eq!(p.interval(secs(0)), Duration::from_secs(30));
        for _ in 0..9 {
            p.record_activity(secs(0));
        }
        // 10.5 s halved would be 5.25 s; fully active would be 2.5 s -> base.
        assert_eq!(p.interval(secs(0)), Duration::from_millis(5_250));
        p.record_activity(secs(0));
        assert_eq!(p.interval(secs(0)), BASE);
    }

    #[test]
    fn interval_always_within_bounds() {
        let mut p = AdaptivePoller::default();
        for step in 0..500u64 {
            let now = Time(step * 777);
            if step % 3 == 0 {
                p.record_activity(now);
            }
            p.set_queue_depth((step % 25) as usize);
            let i = p.interval(now);
            assert!((BASE..=MAX).contains(&i), "{i:?} at step {step}");
        }
    }

    #[test]
    fn max_below_base_is_raised() {
        let p = AdaptivePoller::new(Duration::from_secs(10), Duration::from_secs(1));
        assert_eq!(p.interval(secs(0)), Duration::from_secs(10));
    }
}
