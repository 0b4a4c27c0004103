//! Per-endpoint protection: a concurrency limit and a circuit breaker for each host, and
//! the retry schedule (exponential backoff with jitter).
//!
//! A host that fails `failures` times in a row opens its circuit: nothing is sent to it
//! for `open_for`, then one probe goes; its success closes the circuit, its failure opens
//! it again. Deliveries held by an open circuit wait without spending an attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Circuit {
    Closed { failures: u32 },
    Open { until_ms: i64 },
    HalfOpen { probe_since_ms: i64 },
}

/// What the breaker says about sending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Send,
    /// Wait until this time (ms) and ask again.
    WaitUntil(i64),
}

/// A change of circuit state worth counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

/// The circuit of one host.
#[derive(Debug)]
pub struct Breaker {
    circuit: Circuit,
    failures: u32,
    open_for_ms: i64,
}

impl Breaker {
    pub fn new(failures: u32, open_for: Duration) -> Self {
        Self {
            circuit: Circuit::Closed { failures: 0 },
            failures: failures.max(1),
            open_for_ms: open_for.as_millis() as i64,
        }
    }

    pub fn admit(&mut self, now_ms: i64) -> Admission {
        match self.circuit {
            Circuit::Closed { .. } => Admission::Send,
            Circuit::Open { until_ms } if now_ms < until_ms => Admission::WaitUntil(until_ms),
            Circuit::Open { .. } => {
                self.circuit = Circuit::HalfOpen {
                    probe_since_ms: now_ms,
                };
                Admission::Send
            }
            // One probe at a time; a probe that never reports (its task died) is replaced
            // after another open period.
            Circuit::HalfOpen { probe_since_ms } if now_ms - probe_since_ms > self.open_for_ms => {
                self.circuit = Circuit::HalfOpen {
                    probe_since_ms: now_ms,
                };
                Admission::Send
            }
            Circuit::HalfOpen { probe_since_ms } => {
                Admission::WaitUntil(probe_since_ms + self.open_for_ms.max(200))
            }
        }
    }

    pub fn record(&mut self, success: bool, now_ms: i64) -> Option<Transition> {
        match (self.circuit, success) {
            (Circuit::Closed { .. }, true) => {
                self.circuit = Circuit::Closed { failures: 0 };
                None
            }
            (Circuit::Closed { failures }, false) if failures + 1 >= self.failures => {
                self.circuit = Circuit::Open {
                    until_ms: now_ms + self.open_for_ms,
                };
                Some(Transition::Opened)
            }
            (Circuit::Closed { failures }, false) => {
                self.circuit = Circuit::Closed {
                    failures: failures + 1,
                };
                None
            }
            (_, true) => {
                self.circuit = Circuit::Closed { failures: 0 };
                Some(Transition::Closed)
            }
            (Circuit::HalfOpen { .. }, false) => {
                self.circuit = Circuit::Open {
                    until_ms: now_ms + self.open_for_ms,
                };
                Some(Transition::Opened)
            }
            // An answer from a request sent before the circuit opened.
            (Circuit::Open { .. }, false) => None,
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.circuit, Circuit::Closed { .. })
    }

    /// The circuit as a number for a gauge: 0 closed, 1 half-open (a probe is out), 2 open.
    pub fn state_code(&self) -> i64 {
        match self.circuit {
            Circuit::Closed { .. } => 0,
            Circuit::HalfOpen { .. } => 1,
            Circuit::Open { .. } => 2,
        }
    }
}

/// The breaker and the concurrency limit of one host.
pub struct Host {
    pub breaker: Mutex<Breaker>,
    pub permits: Arc<Semaphore>,
}

/// Every host seen so far.
pub struct Hosts {
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    per_host: usize,
    failures: u32,
    open_for: Duration,
}

impl Hosts {
    pub fn new(per_host: usize, failures: u32, open_for: Duration) -> Self {
        Self {
            hosts: Mutex::new(HashMap::new()),
            per_host: per_host.max(1),
            failures,
            open_for,
        }
    }

    pub fn get(&self, host: &str) -> Arc<Host> {
        let mut hosts = self
            .hosts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        hosts
            .entry(host.to_string())
            .or_insert_with(|| {
                Arc::new(Host {
                    breaker: Mutex::new(Breaker::new(self.failures, self.open_for)),
                    permits: Arc::new(Semaphore::new(self.per_host)),
                })
            })
            .clone()
    }

    /// Hosts whose circuit is open or half-open.
    pub fn open_circuits(&self) -> Vec<String> {
        let hosts = self
            .hosts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut open: Vec<String> = hosts
            .iter()
            .filter(|(_, h)| {
                h.breaker
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .is_open()
            })
            .map(|(name, _)| name.clone())
            .collect();
        open.sort();
        open
    }
}

/// When to try again: `schedule` gives the wait after each failed attempt; without one,
/// the wait doubles from `base` up to `max`. A random ±`jitter` share spreads retries
/// so endpoints coming back are not hit by every delivery at once.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub schedule: Vec<Duration>,
    pub base: Duration,
    pub max: Duration,
    pub jitter: f64,
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (1-based), before jitter.
    pub fn nominal(&self, attempt: u32) -> Duration {
        if let Some(step) = self
            .schedule
            .get(attempt.saturating_sub(1) as usize)
            .or(self.schedule.last())
        {
            return *step;
        }
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.nominal(attempt).as_secs_f64();
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rand::rng().random_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        Duration::from_secs_f64(nominal * factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_on_a_good_probe() {
        let mut b = Breaker::new(3, Duration::from_millis(1000));
        assert_eq!(b.admit(0), Admission::Send);
        assert_eq!(b.record(false, 0), None);
        assert_eq!(b.record(true, 0), None); // a success resets the count
        assert_eq!(b.record(false, 10), None);
        assert_eq!(b.record(false, 20), None);
        assert_eq!(b.record(false, 30), Some(Transition::Opened));
        assert_eq!(b.state_code(), 2);
        assert_eq!(b.admit(500), Admission::WaitUntil(1030));
        // After the open period, one probe; the others wait.
        assert_eq!(b.admit(1030), Admission::Send);
        assert!(matches!(b.admit(1040), Admission::WaitUntil(_)));
        assert_eq!(b.record(false, 1100), Some(Transition::Opened));
        assert_eq!(b.admit(1200), Admission::WaitUntil(2100));
        assert_eq!(b.admit(2100), Admission::Send);
        assert_eq!(b.state_code(), 1);
        assert_eq!(b.record(true, 2150), Some(Transition::Closed));
        assert_eq!(b.state_code(), 0);
        assert_eq!(b.admit(2160), Admission::Send);
        assert!(!b.is_open());
    }

    #[test]
    fn backs_off_exponentially_within_jitter() {
        let backoff = Backoff {
            schedule: Vec::new(),
            base: Duration::from_secs(10),
            max: Duration::from_secs(3600),
            jitter: 0.2,
        };
        assert_eq!(backoff.nominal(1), Duration::from_secs(10));
        assert_eq!(backoff.nominal(3), Duration::from_secs(40));
        assert_eq!(backoff.nominal(20), Duration::from_secs(3600));
        for attempt in 1..6 {
            let nominal = backoff.nominal(attempt).as_secs_f64();
            let delay = backoff.delay(attempt).as_secs_f64();
            assert!(
                delay >= nominal * 0.8 - 1e-9 && delay <= nominal * 1.2 + 1e-9,
                "{delay}"
            );
        }
        let fixed = Backoff {
            schedule: vec![Duration::from_secs(1), Duration::from_secs(60)],
            ..backoff
        };
        assert_eq!(fixed.nominal(1), Duration::from_secs(1));
        assert_eq!(fixed.nominal(2), Duration::from_secs(60));
        assert_eq!(fixed.nominal(9), Duration::from_secs(60));
    }
}
