//! One retry policy for the loops that must not give up: writing a delivery record,
//! reading a partition back, applying migrations while ClickHouse starts. The delay
//! doubles from `initial` up to `max`, each wait jittered by ±20 % so instances that
//! failed together do not retry together.
//!
//! What is worth retrying is the caller's decision: these helpers retry every error they
//! are handed, so classify first (`crate::is_transient`) where some errors are final.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// Delays between attempts: doubling from `initial` to `max`, jittered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(10))
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
        }
    }

    /// The delay before retry number `retry` (0 for the first retry), without jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The delay before retry number `retry`, jittered by ±20 %.
    pub fn delay(&self, retry: u32) -> Duration {
        let jitter = 0.8 + 0.4 * rand::random::<f64>();
        self.base_delay(retry).mul_f64(jitter)
    }
}

/// The failures of one loop that retries: each one is logged and waited out as the
/// backoff says, the wait growing until `reset`. For loops that cannot hand their attempt
/// to [`forever`] (an attempt that borrows the loop's own state mutably).
#[derive(Debug)]
pub struct Retrying<'a> {
    what: &'a str,
    backoff: &'a Backoff,
    retry: u32,
}

impl<'a> Retrying<'a> {
    pub fn new(what: &'a str, backoff: &'a Backoff) -> Self {
        Self {
            what,
            backoff,
            retry: 0,
        }
    }

    /// Logs a failure and returns how long to wait before the next attempt.
    fn failed(&mut self, error: &dyn Display) -> Duration {
        let delay = self.backoff.delay(self.retry);
        tracing::warn!(what = self.what, %error, retry_ms = delay.as_millis() as u64, "failed, retrying");
        self.retry = self.retry.saturating_add(1);
        delay
    }

    /// Logs a failure; the returned sleep waits before the next attempt.
    pub fn wait(&mut self, error: &dyn Display) -> tokio::time::Sleep {
        tokio::time::sleep(self.failed(error))
    }

    /// `wait` for blocking code.
    pub fn wait_blocking(&mut self, error: &dyn Display) {
        std::thread::sleep(self.failed(error));
    }

    /// After a success: the next failure waits the shortest delay again.
    pub fn reset(&mut self) {
        self.retry = 0;
    }
}

/// Runs `attempt` until it succeeds, waiting between failures as `backoff` says.
pub async fn forever<T, E, F, Fut>(what: &str, backoff: &Backoff, mut attempt: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut retrying = Retrying::new(what, backoff);
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) => retrying.wait(&error).await,
        }
    }
}

/// `forever` for blocking code (a rebalance callback, a consume loop on its own thread).
pub fn forever_blocking<T, E: Display>(
    what: &str,
    backoff: &Backoff,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> T {
    let mut retrying = Retrying::new(what, backoff);
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(error) => retrying.wait_blocking(&error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_the_jitter() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let base: Vec<u64> = (0..6)
            .map(|r| backoff.base_delay(r).as_millis() as u64)
            .collect();
        assert_eq!(base, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.base_delay(u32::MAX), Duration::from_secs(1));
        for retry in 0..40 {
            let delay = backoff.delay(retry).as_secs_f64();
            let base = backoff.base_delay(retry).as_secs_f64();
            assert!(delay >= base * 0.8 - 1e-9 && delay <= base * 1.2 + 1e-9);
        }
    }

    #[tokio::test]
    async fn forever_returns_the_first_success() {
        let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let mut calls = 0;
        let value = forever("test", &backoff, || {
            calls += 1;
            let result = if calls < 3 { Err("not yet") } else { Ok(calls) };
            async move { result }
        })
        .await;
        assert_eq!(value, 3);
        let mut calls = 0;
        let value = forever_blocking("test", &backoff, || {
            calls += 1;
            if calls < 4 {
                Err("not yet")
            } else {
                Ok(calls)
            }
        });
        assert_eq!(value, 4);
    }
}
