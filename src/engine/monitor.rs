//! Sync performance monitor: rolling latency percentiles, slow-sync
//! detection, lifetime counters and the adaptive push batch size.
//!
//! A port of the seed's `SyncPerformanceMonitor`, made sane: a bounded window
//! instead of an ever-growing list, nearest-rank percentiles, slow warnings
//! only once there is enough history and never for syncs too fast to matter,
//! and an AIMD batch limit so pushes shrink when the server struggles and
//! grow back once it keeps up. Durations are measured by the caller.

use std::collections::VecDeque;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    Push,
    Pull,
}

#[derive(Clone, Copy, Debug)]
pub struct SyncSample {
    pub kind: SyncKind,
    pub duration: Duration,
    pub bytes: u64,
    pub items: usize,
    pub conflicts: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SlowSync {
    pub duration: Duration,
    pub p95: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Number of recent syncs kept for percentiles and the conflict rate.
    pub window: usize,
    /// Never warn about a sync faster than this, however unusual.
    pub slow_floor: Duration,
    /// Samples needed before a p95 is trusted for slow warnings.
    pub min_samples: usize,
    /// Desired duration of one push.
    pub target: Duration,
    pub max_batch: usize,
    pub min_batch: usize,
    pub max_bytes: u64,
    pub min_bytes: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            window: 100,
            slow_floor: Duration::from_millis(500),
            min_samples: 20,
            target: Duration::from_secs(2),
            max_batch: 50,
            min_batch: 5,
            max_bytes: 8 * 1024 * 1024,
            min_bytes: 256 * 1024,
        }
    }
}

impl MonitorConfig {
    /// Repairs inconsistent limits so the monitor can never hand out a zero
    /// batch (which would stall pushing) or an empty [min, max] range.
    fn normalized(mut self) -> Self {
        self.window = self.window.max(1);
        self.min_samples = self.min_samples.max(1);
        self.max_batch = self.max_batch.max(1);
        self.min_batch = self.min_batch.clamp(1, self.max_batch);
        self.max_bytes = self.max_bytes.max(1);
        self.min_bytes = self.min_bytes.clamp(1, self.max_bytes);
        self
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSnapshot {
    pub pushes: u64,
    pub pulls: u64,
    pub failures: u64,
    pub items_pushed: u64,
    pub bytes_pushed: u64,
    pub bytes_pulled: u64,
    pub conflicts: u64,
    pub conflict_rate: f64,
    pub sync_p50_ms: Option<u64>,
    pub sync_p95_ms: Option<u64>,
    pub slow_syncs: u64,
    pub batch_limit: usize,
    pub byte_budget: u64,
    pub avg_batch_size: f64,
}

#[derive(Clone, Debug)]
pub struct PerfMonitor {
    cfg: MonitorConfig,
    window: VecDeque<SyncSample>,
    batch_limit: usize,
    byte_budget: u64,
    pushes: u64,
    pulls: u64,
    failures: u64,
    items_pushed: u64,
    bytes_pushed: u64,
    bytes_pulled: u64,
    conflicts: u64,
    slow_syncs: u64,
}

impl Default for PerfMonitor {
    fn default() -> Self {
        Self::new(MonitorConfig::default())
    }
}

/// Nearest-rank percentile of an ascending slice: the ceil(p/100 * n)-th
/// smallest value.
fn nearest_rank(sorted: &[Duration], p: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank.min(sorted.len()) - 1])
}

impl PerfMonitor {
    /// Inconsistent limits in `cfg` are repaired (see field docs); batches
    /// start at the maximum and only shrink once pushes prove slow.
    pub fn new(cfg: MonitorConfig) -> Self {
        let cfg = cfg.normalized();
        Self {
            window: VecDeque::with_capacity(cfg.window),
            batch_limit: cfg.max_batch,
            byte_budget: cfg.max_bytes,
            cfg,
            pushes: 0,
            pulls: 0,
            failures: 0,
            items_pushed: 0,
            bytes_pushed: 0,
            bytes_pulled: 0,
            conflicts: 0,
            slow_syncs: 0,
        }
    }

    fn sorted_durations(&self) -> Vec<Duration> {
        let mut d: Vec<Duration> = self.window.iter().map(|s| s.duration).collect();
        d.sort_unstable();
        d
    }

    /// Records a finished sync. Returns Some(SlowSync) when the duration
    /// exceeds the p95 of the previous samples of the same window (with at
    /// least min_samples of them) and slow_floor. Push samples also drive the
    /// adaptive batch limit (AIMD).
    pub fn record(&mut self, s: SyncSample) -> Option<SlowSync> {
        // Judge against history before adding the sample, so an outlier
        // cannot raise the bar it is measured against.
        let slow = if self.window.len() >= self.cfg.min_samples {
            self.p95()
                .filter(|&p95| s.duration > p95 && s.duration > self.cfg.slow_floor)
                .map(|p95| SlowSync { duration: s.duration, p95 })
        } else {
            None
        };
        if slow.is_some() {
            self.slow_syncs += 1;
        }

        self.conflicts += s.conflicts as u64;
        match s.kind {
            SyncKind::Push => {
                self.pushes += 1;
                self.items_pushed += s.items as u64;
                self.bytes_pushed += s.bytes;
                self.adapt_batch(&s);
            }
            SyncKind::Pull => {
                self.pulls += 1;
                self.bytes_pulled += s.bytes;
            }
        }

        if self.window.len() == self.cfg.window {
            self.window.pop_front();
        }
        self.window.push_back(s);
        slow
    }

    /// AIMD: halve on a slow push so a struggling server recovers quickly;
    /// grow gently, and only when the limit was actually the bottleneck (a
    /// fast push of three items says nothing about whether fifty would fit).
    fn adapt_batch(&mut self, s: &SyncSample) {
        let cfg = &self.cfg;
        if s.duration > cfg.target {
            self.batch_limit = (self.batch_limit / 2).max(cfg.min_batch);
            self.byte_budget = (self.byte_budget / 2).max(cfg.min_bytes);
        } else if s.duration < cfg.target / 2 {
            let items_full = s.items as u128 * 5 >= self.batch_limit as u128 * 4;
            let bytes_full = s.bytes as u128 * 5 >= self.byte_budget as u128 * 4;
            if items_full || bytes_full {
                self.batch_limit = (self.batch_limit + 5).min(cfg.max_batch);
                let grown = (self.byte_budget as u128 * 5 / 4) as u64;
                self.byte_budget = grown.min(cfg.max_bytes);
            }
        }
    }

    pub fn record_failure(&mut self) {
        self.failures += 1;
    }

    /// Median sync duration over the window (push and pull).
    pub fn p50(&self) -> Option<Duration> {
        nearest_rank(&self.sorted_durations(), 50)
    }

    /// 95th-percentile sync duration over the window (push and pull).
    pub fn p95(&self) -> Option<Duration> {
        nearest_rank(&self.sorted_durations(), 95)
    }

    /// Fraction of pushed items that came back as conflicts, over the window.
    pub fn conflict_rate(&self) -> f64 {
        let (items, conflicts) = self
            .window
            .iter()
            .filter(|s| s.kind == SyncKind::Push)
            .fold((0u64, 0u64), |(i, c), s| (i + s.items as u64, c + s.conflicts as u64));
        if items == 0 { 0.0 } else { conflicts as f64 / items as f64 }
    }

    pub fn batch_limit(&self) -> usize {
        self.batch_limit
    }

    pub fn byte_budget(&self) -> u64 {
        self.byte_budget
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let sorted = self.sorted_durations();
        let ms = |d: Duration| d.as_millis() as u64;
        MetricsSnapshot {
            pushes: self.pushes,
            pulls: self.pulls,
            failures: self.failures,
            items_pushed: self.items_pushed,
            bytes_pushed: self.bytes_pushed,
            bytes_pulled: self.bytes_pulled,
            conflicts: self.conflicts,
            conflict_rate: self.conflict_rate(),
            sync_p50_ms: nearest_rank(&sorted, 50).map(ms),
            sync_p95_ms: nearest_rank(&sorted, 95).map(ms),
            slow_syncs: self.slow_syncs,
            batch_limit: self.batch_limit,
            byte_budget: self.byte_budget,
            avg_batch_size: if self.pushes == 0 { 0.0 } else { self.items_pushed as f64 / self.pushes as f64 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pull(d: u64) -> SyncSample {
        SyncSample { kind: SyncKind::Pull, duration: ms(d), bytes: 0, items: 0, conflicts: 0 }
    }

    fn push(d: u64, items: usize, bytes: u64) -> SyncSample {
        SyncSample { kind: SyncKind::Push, duration: ms(d), bytes, items, conflicts: 0 }
    }

    #[test]
    fn percentiles_nearest_rank() {
        let mut m = PerfMonitor::default();
        assert_eq!(m.p50(), None);
        assert_eq!(m.p95(), None);
        // Insert 1..=100 ms out of order; order must not matter.
        for i in (1..=100u64).rev() {
            m.record(pull(i));
        }
        assert_eq!(m.p50(), Some(ms(50)));
        assert_eq!(m.p95(), Some(ms(95)));

        let mut m = PerfMonitor::default();
        for d in [10, 20, 30] {
            m.record(pull(d));
        }
        // ceil(0.5 * 3) = 2nd, ceil(0.95 * 3) = 3rd.
        assert_eq!(m.p50(), Some(ms(20)));
        assert_eq!(m.p95(), Some(ms(30)));
        let snap = m.snapshot();
        assert_eq!((snap.sync_p50_ms, snap.sync_p95_ms), (Some(20), Some(30)));
    }

    #[test]
    fn slow_warning_fires_for_outlier() {
        let mut m = PerfMonitor::default();
        for i in 0..20u64 {
            assert_eq!(m.record(pull(1_000 + i)), None);
        }
        // p95 of 1000..=1019 is the 19th smallest, 1018.
        assert_eq!(m.record(pull(1_018)), None, "equal to p95 is not slow");
        let slow = m.record(pull(5_000)).expect("outlier flagged");
        assert_eq!(slow, SlowSync { duration: ms(5_000), p95: ms(1_018) });
        assert_eq!(m.snapshot().slow_syncs, 1);
    }

    #[test]
    fn no_slow_warning_before_min_samples() {
        let mut m = PerfMonitor::default();
        for _ in 0..19 {
            m.record(pull(100));
        }
        assert_eq!(m.record(pull(5_000)), None);
        // Now 20 samples of history exist.
        assert!(m.record(pull(6_000)).is_some());
    }

    #[test]
    fn no_slow_warning_below_floor() {
        let mut m = PerfMonitor::default();
        for _ in 0..50 {
            m.record(pull(10));
        }
        assert_eq!(m.record(pull(500)), None, "at the floor is not slow");
        assert!(m.record(pull(501)).is_some());
        assert_eq!(m.snapshot().slow_syncs, 1);
    }

    #[test]
    fn aimd_shrinks_on_slow_pushes_down_to_minimum() {
        let mut m = PerfMonitor::default();
        assert_eq!((m.batch_limit(), m.byte_budget()), (50, 8 * MIB));
        m.record(push(2_500, 50, MIB));
        assert_eq!((m.batch_limit(), m.byte_budget()), (25, 4 * MIB));
        for _ in 0..10 {
            m.record(push(3_000, 10, 0));
        }
        assert_eq!((m.batch_limit(), m.byte_budget()), (5, 256 * KIB));
        // Pulls never touch the batch limit, however slow.
        m.record(pull(60_000));
        assert_eq!((m.batch_limit(), m.byte_budget()), (5, 256 * KIB));
    }

    #[test]
    fn aimd_grows_back_on_fast_full_pushes_up_to_maximum() {
        let mut m = PerfMonitor::default();
        for _ in 0..10 {
            m.record(push(3_000, 1, 0));
        }
        assert_eq!((m.batch_limit(), m.byte_budget()), (5, 256 * KIB));

        // Fast but far from full: no growth.
        m.record(push(100, 1, KIB));
        assert_eq!((m.batch_limit(), m.byte_budget()), (5, 256 * KIB));
        // Between target/2 and target: hold steady even if full.
        m.record(push(1_500, 5, 0));
        assert_eq!(m.batch_limit(), 5);

        // 80 % of the item limit (4 of 5) counts as full.
        m.record(push(100, 4, 0));
        assert_eq!((m.batch_limit(), m.byte_budget()), (10, 320 * KIB));
        // Byte-bound push also counts as full.
        m.record(push(100, 1, 256 * KIB));
        assert_eq!((m.batch_limit(), m.byte_budget()), (15, 400 * KIB));

        for _ in 0..100 {
            let limit = m.batch_limit();
            m.record(push(100, limit, 0));
        }
        assert_eq!((m.batch_limit(), m.byte_budget()), (50, 8 * MIB));
    }

    #[test]
    fn conflict_rate_counts_pushed_items_in_window() {
        let mut m = PerfMonitor::default();
        assert_eq!(m.conflict_rate(), 0.0);
        m.record(SyncSample { conflicts: 1, ..push(100, 10, 0) });
        m.record(SyncSample { conflicts: 3, ..push(100, 10, 0) });
        // Pull conflicts count in totals but not in the pushed-item rate.
        m.record(SyncSample { conflicts: 5, ..pull(100) });
        assert_eq!(m.conflict_rate(), 0.2);
        let snap = m.snapshot();
        assert_eq!(snap.conflicts, 9);
        assert_eq!(snap.conflict_rate, 0.2);
    }

    #[test]
    fn window_keeps_only_last_samples() {
        let cfg = MonitorConfig { window: 5, ..MonitorConfig::default() };
        let mut m = PerfMonitor::new(cfg);
        for d in [1000, 1000, 1000, 1, 2, 3, 4, 5] {
            m.record(pull(d));
        }
        assert_eq!(m.p95(), Some(ms(5)));
        assert_eq!(m.p50(), Some(ms(3)));
        // Conflict rate also forgets old pushes.
        let mut m = PerfMonitor::new(cfg);
        m.record(SyncSample { conflicts: 10, ..push(100, 10, 0) });
        for _ in 0..5 {
            m.record(push(100, 10, 0));
        }
        assert_eq!(m.conflict_rate(), 0.0);
        assert_eq!(m.snapshot().conflicts, 10, "lifetime totals are not windowed");
    }

    #[test]
    fn snapshot_counters_and_json_shape() {
        let mut m = PerfMonitor::default();
        m.record(push(100, 4, 1_000));
        m.record(push(100, 2, 500));
        m.record(SyncSample { bytes: 7_000, ..pull(300) });
        m.record_failure();
        let s = m.snapshot();
        assert_eq!((s.pushes, s.pulls, s.failures), (2, 1, 1));
        assert_eq!((s.items_pushed, s.bytes_pushed, s.bytes_pulled), (6, 1_500, 7_000));
        assert_eq!(s.avg_batch_size, 3.0);
        assert_eq!(s.batch_limit, 50);
        assert_eq!(PerfMonitor::default().snapshot().avg_batch_size, 0.0);

        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["itemsPushed"], 6);
        assert_eq!(json["syncP95Ms"], 300);
        assert_eq!(json["avgBatchSize"], 3.0);
        assert!(json.get("items_pushed").is_none());
    }

    #[test]
    fn degenerate_config_is_repaired() {
        let cfg = MonitorConfig {
            window: 0,
            min_samples: 0,
            max_batch: 0,
            min_batch: 10,
            max_bytes: 0,
            min_bytes: 0,
            ..MonitorConfig::default()
        };
        let mut m = PerfMonitor::new(cfg);
        m.record(push(10_000, 1, 1));
        assert_eq!((m.batch_limit(), m.byte_budget()), (1, 1));
        m.record(pull(7));
        assert_eq!(m.p50(), Some(ms(7)));
    }
}
