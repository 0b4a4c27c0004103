//! Clicks per visitor address over a sliding window, as this edge instance sees them: a
//! click is flagged `rate_exceeded` when its address sent more than the allowed clicks
//! within the window. Several instances behind a balancer each count only the clicks
//! they answer, so the threshold is per instance (docs/configuration.md).
//!
//! The window slides by weighting the previous fixed window by how much of it is still
//! inside the sliding one (the usual sliding-window counter): one small entry per
//! address, no timestamps kept. Addresses are spread over shards, each behind its own
//! lock, and a shard that fills up forgets the addresses not seen within two windows.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

const SHARDS: usize = 16;

/// The per-address click counter; off when `max_clicks` is 0.
pub struct RateLimiter {
    max_clicks: u32,
    window_ms: u64,
    /// Most addresses one shard remembers.
    shard_capacity: usize,
    started: Instant,
    shards: Vec<Mutex<FxHashMap<IpAddr, Counter>>>,
}

#[derive(Clone, Copy)]
struct Counter {
    /// The fixed window `current` counts in (elapsed time / window).
    window: u64,
    current: u32,
    previous: u32,
}

impl RateLimiter {
    pub fn new(max_clicks: u32, window: Duration, max_addresses: usize) -> Self {
        Self {
            max_clicks,
            window_ms: (window.as_millis() as u64).max(1),
            shard_capacity: (max_addresses / SHARDS).max(1),
            started: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_clicks > 0
    }

    /// Counts a click from `ip` and says whether the address has now sent more than
    /// the allowed clicks within the window.
    pub fn exceeded(&self, ip: IpAddr) -> bool {
        if !self.enabled() {
            return false;
        }
        self.count_at(ip, self.started.elapsed().as_millis() as u64)
    }

    fn count_at(&self, ip: IpAddr, now_ms: u64) -> bool {
        let window = now_ms / self.window_ms;
        let into = (now_ms % self.window_ms) as f64 / self.window_ms as f64;
        let shard = &self.shards[shard_of(ip)];
        // A poisoned shard only held counters: keep counting with them.
        let mut counters = shard.lock().unwrap_or_else(|e| e.into_inner());
        if counters.len() >= self.shard_capacity && !counters.contains_key(&ip) {
            counters.retain(|_, c| c.window + 1 >= window);
            if counters.len() >= self.shard_capacity {
                counters.clear();
            }
        }
        let counter = counters.entry(ip).or_insert(Counter {
            window,
            current: 0,
            previous: 0,
        });
        if counter.window != window {
            counter.previous = if counter.window + 1 == window {
                counter.current
            } else {
                0
            };
            counter.current = 0;
            counter.window = window;
        }
        counter.current = counter.current.saturating_add(1);
        let estimate = f64::from(counter.previous) * (1.0 - into) + f64::from(counter.current);
        estimate > f64::from(self.max_clicks)
    }
}

fn shard_of(ip: IpAddr) -> usize {
    let folded = match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            (n >> 64) as u64 ^ n as u64
        }
    };
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn flags_clicks_past_the_limit_within_the_window() {
        let rate = RateLimiter::new(3, Duration::from_secs(60), 1000);
        let a = ip("198.51.100.1");
        let flags: Vec<bool> = (0..5).map(|i| rate.count_at(a, i * 1000)).collect();
        assert_eq!(flags, [false, false, false, true, true]);
        // Another address has its own count.
        assert!(!rate.count_at(ip("198.51.100.2"), 5000));
        // Half a window later, half of the previous window's five still count: 2.5 + 1.
        assert!(rate.count_at(a, 90_000));
        // Two windows later the address starts afresh.
        assert!(!rate.count_at(a, 250_000));
    }

    #[test]
    fn the_window_slides_rather_than_resets() {
        let rate = RateLimiter::new(3, Duration::from_secs(60), 1000);
        let a = ip("2001:db8::1");
        for t in [57_000, 58_000, 59_000] {
            assert!(!rate.count_at(a, t));
        }
        // A fixed window would start at zero here; the sliding one still sees ~3.
        assert!(rate.count_at(a, 61_000));
    }

    #[test]
    fn off_at_zero_and_bounded_in_memory() {
        assert!(!RateLimiter::new(0, Duration::from_secs(1), 10).exceeded(ip("10.0.0.1")));
        let rate = RateLimiter::new(1, Duration::from_secs(60), SHARDS * 4);
        for n in 0..10_000u32 {
            rate.count_at(IpAddr::from(n.to_be_bytes()), 0);
        }
        let held: usize = rate
            .shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(held <= SHARDS * 4, "{held}");
    }
}
