//! How many failed logins are allowed: per user name and per client address, within a
//! sliding window, counted in this process. A replica refuses further attempts with 429
//! until the oldest failure leaves the window; with N replicas behind a load balancer an
//! attacker gets at most N times the limit per window. A successful login clears the
//! user's and the address's failures.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// `TRAFFSURE__LOGIN__*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginSettings {
    /// Failed logins for one user name within the window before 429.
    pub max_failures_per_user: usize,
    /// Failed logins from one client address within the window before 429.
    pub max_failures_per_address: usize,
    pub window_seconds: u64,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            max_failures_per_user: 10,
            max_failures_per_address: 5,
            window_seconds: 900,
        }
    }
}

/// Most distinct users and addresses tracked at once: beyond it, the ones without a
/// failure in the window are dropped.
const MAX_TRACKED: usize = 100_000;

pub struct LoginLimiter {
    settings: LoginSettings,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LoginLimiter {
    pub fn new(settings: LoginSettings) -> Self {
        Self {
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.settings.window_seconds.max(1))
    }

    fn keys(username: &str, address: &str) -> [String; 2] {
        [format!("user:{username}"), format!("address:{address}")]
    }

    /// How long the caller must wait before trying again, if it must.
    pub fn retry_after(&self, username: &str, address: &str) -> Option<Duration> {
        self.retry_after_at(username, address, Instant::now())
    }

    fn retry_after_at(&self, username: &str, address: &str, now: Instant) -> Option<Duration> {
        let window = self.window();
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let limits = [
            self.settings.max_failures_per_user,
            self.settings.max_failures_per_address,
        ];
        Self::keys(username, address)
            .iter()
            .zip(limits)
            .filter_map(|(key, limit)| {
                let times = failures.get(key)?;
                let recent: Vec<&Instant> = times
                    .iter()
                    .filter(|t| now.duration_since(**t) < window)
                    .collect();
                if recent.len() < limit.max(1) {
                    return None;
                }
                // Allowed again once enough of the failures have left the window.
                let oldest_blocking = recent[recent.len() - limit.max(1)];
                Some(window.saturating_sub(now.duration_since(*oldest_blocking)))
            })
            .max()
    }

    pub fn failed(&self, username: &str, address: &str) {
        self.failed_at(username, address, Instant::now());
    }

    fn failed_at(&self, username: &str, address: &str, now: Instant) {
        let window = self.window();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        for key in Self::keys(username, address) {
            let times = failures.entry(key).or_default();
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                times.pop_front();
            }
            times.push_back(now);
        }
    }

    pub fn succeeded(&self, username: &str, address: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in Self::keys(username, address) {
            failures.remove(&key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limiter() -> LoginLimiter {
        LoginLimiter::new(LoginSettings {
            max_failures_per_user: 3,
            max_failures_per_address: 2,
            window_seconds: 60,
        })
    }

    #[test]
    fn an_address_is_held_back_after_its_failures_until_they_leave_the_window() {
        let l = limiter();
        let t0 = Instant::now();
        l.failed_at("a", "10.0.0.1", t0);
        assert_eq!(l.retry_after_at("a", "10.0.0.1", t0), None);
        l.failed_at("b", "10.0.0.1", t0 + Duration::from_secs(10));
        let wait = l.retry_after_at("c", "10.0.0.1", t0 + Duration::from_secs(10));
        assert_eq!(wait, Some(Duration::from_secs(50)));
        assert_eq!(
            l.retry_after_at("c", "10.0.0.2", t0 + Duration::from_secs(10)),
            None
        );
        assert_eq!(
            l.retry_after_at("c", "10.0.0.1", t0 + Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn a_user_is_held_back_from_every_address() {
        let l = limiter();
        let t0 = Instant::now();
        for (i, address) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
            l.failed_at("admin", address, t0 + Duration::from_secs(i as u64));
        }
        let wait = l.retry_after_at("admin", "10.0.0.9", t0 + Duration::from_secs(2));
        assert_eq!(wait, Some(Duration::from_secs(58)));
        assert_eq!(l.retry_after_at("other", "10.0.0.9", t0), None);
        l.succeeded("admin", "10.0.0.9");
        assert_eq!(
            l.retry_after_at("admin", "10.0.0.9", t0 + Duration::from_secs(2)),
            None
        );
    }
}
