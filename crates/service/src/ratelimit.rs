//! Token-bucket rate limits per action and requester (user id, or client IP before login).

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::{Rate, RateLimitsConfig};
use crate::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Login,
    Registration,
    Message,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter {
    config: RateLimitsConfig,
    buckets: Mutex<HashMap<(Action, String), Bucket>>,
}

const MAX_BUCKETS: usize = 200_000;

impl RateLimiter {
    pub fn new(config: RateLimitsConfig) -> Self {
        Self {
            config,
            buckets: Mutex::default(),
        }
    }

    fn rate(&self, action: Action) -> Rate {
        match action {
            Action::Login => self.config.login,
            Action::Registration => self.config.registration,
            Action::Message => self.config.message,
        }
    }

    /// Takes one token for `key`, or fails with `M_LIMIT_EXCEEDED` and the wait until the next.
    pub fn check(&self, action: Action, key: &str) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let rate = self.rate(action);
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() > MAX_BUCKETS {
            // Full buckets carry no information; dropping them is harmless.
            buckets.retain(|(a, _), b| b.tokens < self.rate(*a).burst);
        }
        let b = buckets.entry((action, key.to_owned())).or_insert(Bucket {
            tokens: rate.burst,
            last: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * rate.per_second).min(rate.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = if rate.per_second > 0.0 {
                (1.0 - b.tokens) / rate.per_second
            } else {
                3600.0
            };
            Err(Error::new(
                ErrorKind::LimitExceeded {
                    retry_after_ms: (wait * 1000.0).ceil() as u64,
                },
                "Too many requests",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_then_disabled() {
        let mut cfg = RateLimitsConfig {
            login: Rate {
                per_second: 0.001,
                burst: 2.0,
            },
            ..RateLimitsConfig::default()
        };
        let r = RateLimiter::new(cfg.clone());
        assert!(r.check(Action::Login, "a").is_ok());
        assert!(r.check(Action::Login, "a").is_ok());
        let e = r.check(Action::Login, "a").unwrap_err();
        assert!(
            matches!(e.kind, ErrorKind::LimitExceeded { retry_after_ms } if retry_after_ms > 0)
        );
        assert!(r.check(Action::Login, "b").is_ok());
        cfg.enabled = false;
        let r = RateLimiter::new(cfg);
        for _ in 0..100 {
            assert!(r.check(Action::Login, "a").is_ok());
        }
    }
}
