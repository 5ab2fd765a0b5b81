//! Retry policy: which failures are worth retrying, and how long to wait.
//!
//! Classification decides between "try again later", "ask the user to sign in
//! again" and "give up on this request"; the backoff spaces retries out with
//! jitter so that many clients knocked offline together do not hammer the
//! server in lockstep when it comes back. Randomness comes from a caller-owned
//! RNG so simulation runs stay reproducible.

use std::fmt;
use std::time::Duration;

/// The seed's retry delays; after the last one the delay stays at 30 s
/// forever: a queued change is never dropped.
pub const RETRY_DELAYS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// Cap for a server-sent Retry-After, so a hostile or buggy header cannot
/// park the client for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 60);

pub const DEFAULT_JITTER: f64 = 0.25;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Network(String),
    Timeout,
    Http { status: u16, retry_after: Option<Duration>, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    Retryable { retry_after: Option<Duration> },
    Unauthorized,
    Permanent,
}

impl Failure {
    /// Network errors, timeouts, 5xx, 429 and 408 are retryable; 401 and 403
    /// are Unauthorized; every other 4xx is Permanent.
    ///
    /// Statuses outside 4xx/5xx (an unfollowed redirect, say) are Permanent
    /// too: retrying an unexpected answer will not change it. A retryable
    /// class carries the Retry-After already capped at [`MAX_RETRY_AFTER`].
    pub fn class(&self) -> FailureClass {
        match self {
            Failure::Network(_) | Failure::Timeout => FailureClass::Retryable { retry_after: None },
            Failure::Http { status, retry_after, .. } => match status {
                408 | 429 | 500..=599 => {
                    FailureClass::Retryable { retry_after: retry_after.map(|d| d.min(MAX_RETRY_AFTER)) }
                }
                401 | 403 => FailureClass::Unauthorized,
                _ => FailureClass::Permanent,
            },
        }
    }

    /// True for Network/Timeout (the server was not reached): drives the
    /// online/offline state.
    pub fn is_connectivity(&self) -> bool {
        matches!(self, Failure::Network(_) | Failure::Timeout)
    }

    /// A one-line human description (e.g. "server unreachable: connection
    /// refused", "HTTP 503: overloaded").
    pub fn describe(&self) -> String {
        match self {
            Failure::Network(msg) => match one_line(msg) {
                m if m.is_empty() => "server unreachable".to_owned(),
                m => format!("server unreachable: {m}"),
            },
            Failure::Timeout => "request timed out".to_owned(),
            Failure::Http { status, message, .. } => match one_line(message) {
                m if m.is_empty() => format!("HTTP {status}"),
                m => format!("HTTP {status}: {m}"),
            },
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Server messages can be multi-line bodies; status lines and logs want one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Per-request retry state: attempt counter plus jitter fraction.
#[derive(Clone, Debug)]
pub struct Backoff {
    jitter: f64,
    attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_JITTER)
    }
}

impl Backoff {
    /// `jitter` is clamped to [0, 1] (NaN counts as 0) so a delay can never
    /// go negative.
    pub fn new(jitter: f64) -> Self {
        let jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
        Self { jitter, attempts: 0 }
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Records one failure and returns the delay before the next attempt:
    /// `RETRY_DELAYS[min(attempts, 4)]` scaled by a uniform factor in
    /// [1 - jitter, 1 + jitter] drawn from `rng`; if `retry_after` is Some,
    /// the delay is max(that (capped at MAX_RETRY_AFTER), the jittered delay).
    /// Delays are whole milliseconds, the resolution of `Time`.
    pub fn next_delay<R: rand::Rng + ?Sized>(&mut self, rng: &mut R, retry_after: Option<Duration>) -> Duration {
        let idx = (self.attempts as usize).min(RETRY_DELAYS.len() - 1);
        self.attempts = self.attempts.saturating_add(1);
        // Always draw, even with zero jitter, so the RNG stream consumed per
        // failure does not depend on configuration.
        let unit: f64 = rng.random();
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit;
        let base_ms = RETRY_DELAYS[idx].as_millis() as f64;
        let jittered = Duration::from_millis((base_ms * factor).round() as u64);
        match retry_after {
            Some(ra) => ra.min(MAX_RETRY_AFTER).max(jittered),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn http(status: u16) -> Failure {
        Failure::Http { status, retry_after: None, message: String::new() }
    }

    fn within(d: Duration, base: Duration, jitter: f64) -> bool {
        let lo = base.mul_f64(1.0 - jitter);
        let hi = base.mul_f64(1.0 + jitter);
        lo <= d && d <= hi
    }

    #[test]
    fn schedule_follows_seed_delays_then_stays_at_30s() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut b = Backoff::default();
        let expected = [1, 2, 5, 10, 30, 30, 30, 30, 30, 30];
        for (i, &s) in expected.iter().enumerate() {
            let d = b.next_delay(&mut rng, None);
            assert!(within(d, secs(s), 0.25), "attempt {i}: {d:?} vs {s}s");
            assert_eq!(b.attempts(), i as u32 + 1);
        }
    }

    #[test]
    fn zero_jitter_is_exact_and_reset_restarts() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut b = Backoff::new(0.0);
        let got: Vec<_> = (0..7).map(|_| b.next_delay(&mut rng, None)).collect();
        let want: Vec<_> = [1, 2, 5, 10, 30, 30, 30].map(secs).to_vec();
        assert_eq!(got, want);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.next_delay(&mut rng, None), secs(1));
    }

    #[test]
    fn jitter_is_clamped() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for j in [-1.0, f64::NAN] {
            let mut b = Backoff::new(j);
            assert_eq!(b.next_delay(&mut rng, None), secs(1));
        }
        let mut b = Backoff::new(5.0);
        for _ in 0..50 {
            assert!(b.next_delay(&mut rng, None) <= secs(60));
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut b = Backoff::default();
            (0..8).map(|_| b.next_delay(&mut rng, None)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn different_seeds_spread_out() {
        // Many clients failing together must not all retry at the same
        // millisecond: the 30 s step has a 15 s jitter window.
        let firsts: std::collections::BTreeSet<Duration> = (0..50u64)
            .map(|seed| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut b = Backoff::default();
                for _ in 0..4 {
                    b.next_delay(&mut rng, None);
                }
                b.next_delay(&mut rng, None)
            })
            .collect();
        assert!(firsts.len() >= 45, "only {} distinct delays", firsts.len());
        let spread = *firsts.last().unwrap() - *firsts.first().unwrap();
        assert!(spread >= secs(7), "spread {spread:?}");
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut b = Backoff::default();
        // Larger than the jittered 1 s: wins.
        assert_eq!(b.next_delay(&mut rng, Some(secs(120))), secs(120));
        // Smaller than the jittered 2 s: the backoff wins.
        let d = b.next_delay(&mut rng, Some(Duration::from_millis(10)));
        assert!(within(d, secs(2), 0.25), "{d:?}");
        // A day-long header is capped.
        assert_eq!(b.next_delay(&mut rng, Some(secs(86_400))), MAX_RETRY_AFTER);
        assert_eq!(b.attempts(), 3);
    }

    #[test]
    fn classification_table() {
        let retry = FailureClass::Retryable { retry_after: None };
        let cases: &[(Failure, FailureClass)] = &[
            (Failure::Network("refused".into()), retry),
            (Failure::Timeout, retry),
            (http(500), retry),
            (http(502), retry),
            (http(503), retry),
            (http(599), retry),
            (http(429), retry),
            (http(408), retry),
            (http(401), FailureClass::Unauthorized),
            (http(403), FailureClass::Unauthorized),
            (http(400), FailureClass::Permanent),
            (http(404), FailureClass::Permanent),
            (http(409), FailureClass::Permanent),
            (http(413), FailureClass::Permanent),
            (http(422), FailureClass::Permanent),
            (http(302), FailureClass::Permanent),
        ];
        for (f, want) in cases {
            assert_eq!(f.class(), *want, "{f:?}");
        }
    }

    #[test]
    fn class_carries_capped_retry_after() {
        let f = Failure::Http { status: 429, retry_after: Some(secs(90)), message: String::new() };
        assert_eq!(f.class(), FailureClass::Retryable { retry_after: Some(secs(90)) });
        let f = Failure::Http { status: 503, retry_after: Some(secs(1 << 30)), message: String::new() };
        assert_eq!(f.class(), FailureClass::Retryable { retry_after: Some(MAX_RETRY_AFTER) });
    }

    #[test]
    fn connectivity_only_when_server_not_reached() {
        assert!(Failure::Network("dns".into()).is_connectivity());
        assert!(Failure::Timeout.is_connectivity());
        assert!(!http(503).is_connectivity());
        assert!(!http(401).is_connectivity());
    }

    #[test]
    fn describe_is_one_line() {
        assert_eq!(Failure::Network("connection refused".into()).describe(), "server unreachable: connection refused");
        assert_eq!(Failure::Network(String::new()).describe(), "server unreachable");
        assert_eq!(Failure::Timeout.describe(), "request timed out");
        let f = Failure::Http { status: 503, retry_after: None, message: "overloaded".into() };
        assert_eq!(f.describe(), "HTTP 503: overloaded");
        assert_eq!(f.to_string(), "HTTP 503: overloaded");
        assert_eq!(http(404).describe(), "HTTP 404");
        let f = Failure::Http { status: 500, retry_after: None, message: "boom\n  at line 3\n".into() };
        assert_eq!(f.describe(), "HTTP 500: boom at line 3");
    }
}
