//! Slows down guessing: failed credentials from one address use up a small budget that
//! refills with time; while it is empty, requests with credentials from that address are
//! answered `429` with `Retry-After`, without being checked.
//!
//! Nothing is locked: the budget is per address (IPv6 addresses by their /64), never per
//! user, so an attacker cannot shut the real user out, and a user who mistyped at the
//! same address waits seconds, not hours. Per process, like a cache: several instances
//! each keep their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much failing an address may do.
#[derive(Debug, Clone, Copy)]
pub struct LimiterConfig {
    /// Failures allowed in a burst.
    pub burst: u32,
    /// One more failure is allowed after each such interval.
    pub refill: Duration,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            burst: 10,
            refill: Duration::from_secs(2),
        }
    }
}

/// Addresses remembered at most. When full, those whose budget has refilled are
/// forgotten, then the longest quiet half; at most once per refill interval, so a
/// flood of new addresses costs no more than that. Until then a new address goes
/// uncounted.
const MAX_ADDRESSES: usize = 100_000;

#[derive(Debug)]
pub struct Limiter {
    config: LimiterConfig,
    budgets: Mutex<Budgets>,
}

#[derive(Debug)]
struct Budgets {
    by_address: HashMap<IpAddr, Budget>,
    swept: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Failures still allowed, as of `at`.
    left: f64,
    at: Instant,
}

impl Budget {
    fn refilled(self, config: &LimiterConfig, now: Instant) -> Budget {
        let gained = now.duration_since(self.at).as_secs_f64() / config.refill.as_secs_f64();
        Budget {
            left: (self.left + gained).min(f64::from(config.burst)),
            at: now,
        }
    }
}

/// The key an address counts under.
fn group(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl Limiter {
    pub fn new(config: LimiterConfig) -> Self {
        Limiter {
            config,
            budgets: Mutex::new(Budgets {
                by_address: HashMap::new(),
                swept: None,
            }),
        }
    }

    fn budgets(&self) -> std::sync::MutexGuard<'_, Budgets> {
        self.budgets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Err(wait)` while `addr` has no failures left: how long until it has one.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let Some(budget) = self.budgets().by_address.get(&group(addr)).copied() else {
            return Ok(());
        };
        let budget = budget.refilled(&self.config, now);
        if budget.left >= 1.0 {
            Ok(())
        } else {
            Err(self.config.refill.mul_f64(1.0 - budget.left))
        }
    }

    /// Counts a failure of `addr`.
    pub fn failed(&self, addr: IpAddr) {
        let now = Instant::now();
        let config = self.config;
        let mut budgets = self.budgets();
        let key = group(addr);
        if budgets.by_address.len() >= MAX_ADDRESSES && !budgets.by_address.contains_key(&key) {
            if budgets
                .swept
                .is_some_and(|at| now.duration_since(at) < config.refill)
            {
                return;
            }
            budgets.swept = Some(now);
            let map = &mut budgets.by_address;
            map.retain(|_, b| b.refilled(&config, now).left < f64::from(config.burst));
            if map.len() >= MAX_ADDRESSES / 2 {
                let mut times: Vec<Instant> = map.values().map(|b| b.at).collect();
                let middle = times.len() / 2;
                let (_, cut, _) = times.select_nth_unstable(middle);
                let cut = *cut;
                map.retain(|_, b| b.at > cut);
            }
        }
        let full = Budget {
            left: f64::from(config.burst),
            at: now,
        };
        let budget = budgets.by_address.entry(key).or_insert(full);
        let refilled = budget.refilled(&self.config, now);
        *budget = Budget {
            left: (refilled.left - 1.0).max(0.0),
            at: now,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_use_up_a_budget_that_refills() {
        let limiter = Limiter::new(LimiterConfig {
            burst: 3,
            refill: Duration::from_millis(200),
        });
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(limiter.check(a).is_ok());
            limiter.failed(a);
        }
        let wait = limiter.check(a).expect_err("budget used up");
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        assert!(limiter.check(b).is_ok(), "another address is not affected");
        std::thread::sleep(Duration::from_millis(250));
        assert!(limiter.check(a).is_ok(), "refilled");
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let x: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let y: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        assert_eq!(group(x), group(y));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(group(mapped), "192.0.2.1".parse::<IpAddr>().expect("ip"));
    }
}
