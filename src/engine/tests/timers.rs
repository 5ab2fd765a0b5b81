//! The timer table: which timer each situation arms, and when.

use super::*;
use crate::engine::Timer;

/// Each case sets a synced engine up and names the timer it arms, its
/// nominal delay from the moment of the setup, and whether the
/// delay is jittered (backoffs are, by up to half).
#[test]
fn each_situation_arms_its_timer() {
    type Setup = fn(&mut Harness);
    let cases: &[(&str, Setup, Timer, Duration, bool)] = &[
        (
            "a file change waits for its debounce",
            |h| h.snapshot(file(&tid("T-t"), "t", &[("m-1", json!("a"))])),
            Timer::Debounce,
            ms(200),
            false,
        ),
        (
            "a push lost to the network: offline, probing",
            |h| {
                h.create_thread("t");
                let (_, req, _) = h.next_push(secs(1));
                h.fail_push(req, Failure::Network("connection refused".into()));
            },
            Timer::Probe,
            secs(1),
            true,
        ),
        (
            "a push refused with 503: the lane retries",
            |h| {
                h.create_thread("t");
                let (_, req, _) = h.next_push(secs(1));
                h.fail_push(req, http(503, "busy"));
            },
            Timer::PushRetry,
            secs(1),
            true,
        ),
        (
            "a pull that failed is retried",
            |h| {
                let req = h.pull_req();
                h.answer_pull_with(req, PullOutcome::Failed(http(500, "oops")));
            },
            Timer::Pull,
            secs(1),
            true,
        ),
    ];
    for (what, setup, timer, nominal, jittered) in cases {
        let mut h = Harness::synced(EngineConfig::default());
        setup(&mut h);
        let table = h.client.engine.timers();
        let at = table.get(*timer).unwrap_or_else(|| panic!("{what}: {timer:?} not armed: {table:?}"));
        // Nothing but the status's trailing edge comes before it.
        for other in Timer::ALL.into_iter().filter(|t| t != timer && *t != Timer::Status) {
            assert!(table.get(other).is_none_or(|t| t >= at), "{what}: {other:?} comes first: {table:?}");
        }
        let delay = at.saturating_since(h.now);
        if *jittered {
            assert!(
                delay >= *nominal / 2 && delay <= *nominal * 3 / 2,
                "{what}: due in {delay:?}, nominal {nominal:?}"
            );
        } else {
            assert_eq!(delay, *nominal, "{what}");
        }
        // Due, it is handled: the timer moves on.
        h.tick(at.saturating_since(h.now));
        assert!(h.client.engine.timers().get(*timer).is_none_or(|t| t > at), "{what}: still due after it ran");
    }
}

/// Unauthorized, nothing is sent until the credentials change: no network
/// timer is armed, only what is local.
#[test]
fn unauthorized_arms_no_network_timer() {
    let mut h = Harness::synced(EngineConfig::default());
    h.create_thread("t");
    let (_, req, _) = h.next_push(secs(1));
    h.fail_push(req, http(401, "bad token"));
    let table = h.client.engine.timers();
    for t in [Timer::Batch, Timer::PushRetry, Timer::ThreadBackoff, Timer::Pull, Timer::Probe] {
        assert_eq!(table.get(t), None, "{t:?} armed while unauthorized: {table:?}");
    }
}
