//! Upstream monitoring (`tunterm_monitoring`): the verdict, sans-IO.
//!
//! Each configured check is probed every `interval` (the driver runs the
//! probe: ARP on the trunk, ICMP echo, TCP connect, and reports back). A
//! check *fails* once it has had no successful probe for its `fail_after`
//! (the check's `timeout`, or the daemon's override): one lost probe is not
//! an outage. A failed check *passes again* after `recover_after`
//! successful probes in a row, so a flapping host does not make the APs
//! come and go. The edge is healthy while no check fails; it says so with
//! [`MonitorEvent`]s, which the driver turns into refusing/closing tunnels
//! and accepting them again.
//!
//! Time only enters as `now`; the driver owns the clock and the sockets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Settings of a [`Monitor`].
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    /// Time between two probes of one check.
    pub interval: Duration,
    /// Successful probes in a row that bring a failed check back.
    pub recover_after: u32,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: Duration::from_secs(5),
            recover_after: 3,
        }
    }
}

/// One check as the monitor sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// What is checked, for the stats and logs (e.g. `ping 10.2.8.15`).
    pub name: String,
    /// No successful probe for this long: the check fails.
    pub fail_after: Duration,
}

/// A change of the edge's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonitorEvent {
    /// A check failed: the edge must stop taking tunnels and close its own.
    Down {
        /// The checks failing now (names).
        failing: Vec<String>,
    },
    /// Every check passes again: the edge takes tunnels again.
    Up,
}

/// Per-check state, for `tunterm stats`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckStats {
    /// What is checked.
    pub name: String,
    /// `ok` or `failed`.
    pub state: Cow<'static, str>,
    /// Probes sent.
    pub probes: u64,
    /// Probes that failed (no answer in time, refused, error).
    pub probe_failures: u64,
    /// Outcome of the last probe: `ok` or why not.
    pub last_result: String,
    /// Seconds since the last successful probe (None: never).
    pub last_ok_ago: Option<f64>,
}

/// The monitor's state, for `tunterm stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MonitorStats {
    /// `none` (no check configured), `healthy` or `failed`.
    pub state: Cow<'static, str>,
    /// Seconds since the last change of state (None: none yet).
    pub last_change_ago: Option<f64>,
    /// Changes to failed so far.
    pub went_down: u64,
    /// Changes back to healthy so far.
    pub came_up: u64,
    /// Per check.
    pub checks: Vec<CheckStats>,
}

#[derive(Clone, Debug)]
struct Check {
    spec: CheckSpec,
    /// Last successful probe (or the start: a check gets its full
    /// `fail_after` before it can fail).
    last_ok: Instant,
    ever_ok: bool,
    ok_in_row: u32,
    failed: bool,
    next_probe: Instant,
    in_flight: bool,
    probes: u64,
    probe_failures: u64,
    last_result: String,
}

/// The upstream monitor: checks, their state, the edge's health.
#[derive(Debug)]
pub struct Monitor {
    cfg: MonitorConfig,
    checks: Vec<Check>,
    healthy: bool,
    last_change: Option<Instant>,
    went_down: u64,
    came_up: u64,
    events: VecDeque<MonitorEvent>,
}

impl Monitor {
    /// A monitor of `checks`, healthy at `now`; every check is probed at
    /// once.
    pub fn new(now: Instant, cfg: MonitorConfig, checks: Vec<CheckSpec>) -> Self {
        let checks = checks
            .into_iter()
            .map(|spec| Check {
                spec,
                last_ok: now,
                ever_ok: false,
                ok_in_row: 0,
                failed: false,
                next_probe: now,
                in_flight: false,
                probes: 0,
                probe_failures: 0,
                last_result: "not probed yet".into(),
            })
            .collect();
        Monitor {
            cfg,
            checks,
            healthy: true,
            last_change: None,
            went_down: 0,
            came_up: 0,
            events: VecDeque::new(),
        }
    }

    /// Whether the edge may take tunnels (true with no check configured).
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Whether any check is configured.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// The next check to probe at `now`, if one is due and not already
    /// being probed. Call until None; report each with
    /// [`Monitor::handle_result`]. The driver gives a probe at most
    /// [`Monitor::probe_timeout`] to answer.
    #[must_use]
    pub fn poll_probe(&mut self, now: Instant) -> Option<usize> {
        let interval = self.cfg.interval;
        let (i, c) = self
            .checks
            .iter_mut()
            .enumerate()
            .find(|(_, c)| !c.in_flight && c.next_probe <= now)?;
        c.in_flight = true;
        c.probes += 1;
        c.next_probe = now + interval;
        Some(i)
    }

    /// How long a probe may take: the interval (so one check never has
    /// two probes out), at most a second.
    pub fn probe_timeout(&self) -> Duration {
        self.cfg.interval.min(Duration::from_secs(1))
    }

    /// The outcome of a probe of check `index`: `Ok(())`, or why it failed.
    /// Unknown indices are ignored (a result that outlived a restart of
    /// the monitor).
    pub fn handle_result(&mut self, now: Instant, index: usize, result: Result<(), String>) {
        let recover_after = self.cfg.recover_after.max(1);
        let Some(c) = self.checks.get_mut(index) else {
            return;
        };
        c.in_flight = false;
        match result {
            Ok(()) => {
                c.last_ok = now;
                c.ever_ok = true;
                c.ok_in_row = c.ok_in_row.saturating_add(1);
                c.last_result = "ok".into();
                if c.failed && c.ok_in_row >= recover_after {
                    c.failed = false;
                }
            }
            Err(why) => {
                c.ok_in_row = 0;
                c.probe_failures += 1;
                c.last_result = why;
            }
        }
        self.evaluate(now);
    }

    /// Run the deadlines due at `now` (checks whose `fail_after` ran out).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.evaluate(now);
    }

    fn evaluate(&mut self, now: Instant) {
        for c in &mut self.checks {
            if !c.failed && now.saturating_duration_since(c.last_ok) >= c.spec.fail_after {
                c.failed = true;
                c.ok_in_row = 0;
            }
        }
        let healthy = self.checks.iter().all(|c| !c.failed);
        if healthy == self.healthy {
            return;
        }
        self.healthy = healthy;
        self.last_change = Some(now);
        if healthy {
            self.came_up += 1;
            self.events.push_back(MonitorEvent::Up);
        } else {
            self.went_down += 1;
            let failing = self
                .checks
                .iter()
                .filter(|c| c.failed)
                .map(|c| c.spec.name.clone())
                .collect();
            self.events.push_back(MonitorEvent::Down { failing });
        }
    }

    /// When to call [`Monitor::handle_timeout`] and [`Monitor::poll_probe`]
    /// next: the next probe due, or the next check to run out of time.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.checks
            .iter()
            .flat_map(|c| {
                let probe = (!c.in_flight).then_some(c.next_probe);
                let deadline = (!c.failed).then(|| c.last_ok + c.spec.fail_after);
                probe.into_iter().chain(deadline)
            })
            .min()
    }

    /// Next change of health.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<MonitorEvent> {
        self.events.pop_front()
    }

    /// The state for `tunterm stats`.
    pub fn stats(&self, now: Instant) -> MonitorStats {
        let ago = |t: Instant| now.saturating_duration_since(t).as_secs_f64();
        MonitorStats {
            state: match (self.checks.is_empty(), self.healthy) {
                (true, _) => "none",
                (false, true) => "healthy",
                (false, false) => "failed",
            }
            .into(),
            last_change_ago: self.last_change.map(ago),
            went_down: self.went_down,
            came_up: self.came_up,
            checks: self
                .checks
                .iter()
                .map(|c| CheckStats {
                    name: c.spec.name.clone(),
                    state: if c.failed { "failed" } else { "ok" }.into(),
                    probes: c.probes,
                    probe_failures: c.probe_failures,
                    last_result: c.last_result.clone(),
                    last_ok_ago: c.ever_ok.then(|| ago(c.last_ok)),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn monitor(t0: Instant, n: usize) -> Monitor {
        let checks = (0..n)
            .map(|i| CheckSpec {
                name: format!("check{i}"),
                fail_after: 1000 * MS,
            })
            .collect();
        Monitor::new(
            t0,
            MonitorConfig {
                interval: 200 * MS,
                recover_after: 2,
            },
            checks,
        )
    }

    /// Probe everything due at `t` and answer each with `ok(i)`.
    fn round(m: &mut Monitor, t: Instant, ok: impl Fn(usize) -> bool) {
        m.handle_timeout(t);
        while let Some(i) = m.poll_probe(t) {
            let r = if ok(i) { Ok(()) } else { Err("timeout".into()) };
            m.handle_result(t, i, r);
        }
    }

    #[test]
    fn a_check_fails_after_its_time_without_an_answer_and_recovers_after_two_in_a_row() {
        let t0 = crate::test_t0();
        let mut m = monitor(t0, 2);
        // Both answer for a second: healthy, no event.
        for k in 0..5 {
            round(&mut m, t0 + k * 200 * MS, |_| true);
        }
        assert!(m.healthy());
        assert_eq!(m.poll_event(), None);
        // check1 stops answering at 1.0 s; last ok at 0.8 s.
        let mut t = t0 + 1000 * MS;
        loop {
            round(&mut m, t, |i| i == 0);
            if !m.healthy() {
                break;
            }
            let next = m.poll_timeout().unwrap();
            assert!(next > t, "the monitor always moves on");
            t = next;
        }
        // Down exactly at last ok + fail_after, not at the next probe.
        assert_eq!(t, t0 + 1800 * MS);
        assert_eq!(
            m.poll_event(),
            Some(MonitorEvent::Down {
                failing: vec!["check1".into()]
            })
        );
        let s = m.stats(t);
        assert_eq!((s.state.as_ref(), s.went_down), ("failed", 1));
        assert_eq!(s.checks[1].state, "failed");
        assert_eq!(s.checks[1].last_result, "timeout");
        // One answer is not enough to come back.
        let t = t0 + 2000 * MS;
        round(&mut m, t, |_| true);
        assert!(!m.healthy());
        round(&mut m, t + 200 * MS, |_| true);
        assert!(m.healthy());
        assert_eq!(m.poll_event(), Some(MonitorEvent::Up));
        assert_eq!(m.stats(t).came_up, 1);
    }

    #[test]
    fn a_flapping_check_does_not_come_back_until_it_holds() {
        let t0 = crate::test_t0();
        let mut m = monitor(t0, 1);
        round(&mut m, t0, |_| false);
        m.handle_timeout(t0 + 1000 * MS);
        assert!(!m.healthy());
        // ok, fail, ok, fail …: never two in a row.
        for k in 0..10u32 {
            round(&mut m, t0 + (1000 + 200 * k) * MS, |_| k % 2 == 0);
            assert!(!m.healthy(), "round {k}");
        }
        assert_eq!(m.stats(t0).went_down, 1);
    }

    #[test]
    fn a_probe_in_flight_is_not_sent_twice_and_late_results_count() {
        let t0 = crate::test_t0();
        let mut m = monitor(t0, 1);
        assert_eq!(m.poll_probe(t0), Some(0));
        assert_eq!(m.poll_probe(t0 + 500 * MS), None, "still in flight");
        m.handle_result(t0 + 600 * MS, 0, Ok(()));
        assert_eq!(m.poll_probe(t0 + 600 * MS), Some(0), "overdue: at once");
        m.handle_result(t0, 7, Ok(())); // unknown: ignored
        assert_eq!(m.stats(t0 + 600 * MS).checks[0].probes, 2);
    }

    #[test]
    fn no_checks_means_healthy_and_no_timer() {
        let t0 = crate::test_t0();
        let mut m = monitor(t0, 0);
        m.handle_timeout(t0 + Duration::from_secs(3600));
        assert!(m.healthy() && m.is_empty());
        assert_eq!(m.poll_timeout(), None);
        assert_eq!(m.stats(t0).state, "none");
    }
}
