//! Reconnect policy: exponential backoff with full jitter, from a small seedable PRNG.

/// How the engine reconnects after a connection drops.
///
/// The delay before attempt `n` (1-based) is drawn uniformly from
/// `0 ..= min(max_delay_ms, initial_delay_ms * 2^(n-1))` ("full jitter"), so that many clients
/// dropped at once do not return at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Upper bound of the first delay, in milliseconds.
    pub initial_delay_ms: u64,
    /// Cap of the delay bound, in milliseconds.
    pub max_delay_ms: u64,
    /// Attempts after a drop before the client gives up and closes; `None`: never give up.
    pub max_attempts: Option<u32>,
    /// Whether a failure of the very first connection is retried too. When `false` (the
    /// default) the first failure closes the client with that error, so a wrong URL fails fast.
    pub retry_initial_connect: bool,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay_ms: 250,
            max_delay_ms: 30_000,
            max_attempts: None,
            retry_initial_connect: false,
        }
    }
}

impl ReconnectPolicy {
    /// The upper bound of the delay before attempt `attempt` (1-based).
    pub fn delay_bound(&self, attempt: u32) -> u64 {
        let shift = attempt.saturating_sub(1).min(63);
        let bound = self.initial_delay_ms.saturating_mul(1u64 << shift);
        bound.min(self.max_delay_ms)
    }

    /// The delay before attempt `attempt`, drawn with full jitter from `rng`.
    pub(crate) fn delay(&self, attempt: u32, rng: &mut Rng) -> u64 {
        rng.below_inclusive(self.delay_bound(attempt))
    }

    /// Whether attempt `attempt` may be made.
    pub(crate) fn allows(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempt <= max)
    }
}

/// SplitMix64: a tiny, fast, seedable generator; good enough for jitter and message ids,
/// not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0 ..= bound`.
    pub(crate) fn below_inclusive(&mut self, bound: u64) -> u64 {
        match bound.checked_add(1) {
            Some(range) => self.next_u64() % range,
            None => self.next_u64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_doubles_up_to_the_cap() {
        let policy = ReconnectPolicy {
            initial_delay_ms: 100,
            max_delay_ms: 1_000,
            ..ReconnectPolicy::default()
        };
        let bounds: Vec<u64> = (1..=6).map(|n| policy.delay_bound(n)).collect();
        assert_eq!(bounds, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(policy.delay_bound(u32::MAX), 1_000);
    }

    #[test]
    fn jittered_delays_stay_in_bounds_and_spread() {
        let policy = ReconnectPolicy {
            initial_delay_ms: 100,
            max_delay_ms: 10_000,
            ..ReconnectPolicy::default()
        };
        let mut rng = Rng::new(7);
        for attempt in 1..=10 {
            let bound = policy.delay_bound(attempt);
            let delays: Vec<u64> = (0..200).map(|_| policy.delay(attempt, &mut rng)).collect();
            assert!(delays.iter().all(|&d| d <= bound), "attempt {attempt}");
            let min = delays.iter().min().copied().unwrap_or(0);
            let max = delays.iter().max().copied().unwrap_or(0);
            assert!(
                min < bound / 4 && max > bound * 3 / 4,
                "{attempt}: {min}..{max}"
            );
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let policy = ReconnectPolicy::default();
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for attempt in 1..20 {
            assert_eq!(policy.delay(attempt, &mut a), policy.delay(attempt, &mut b));
        }
    }

    #[test]
    fn max_attempts_limits() {
        let policy = ReconnectPolicy {
            max_attempts: Some(3),
            ..ReconnectPolicy::default()
        };
        assert!(policy.allows(3));
        assert!(!policy.allows(4));
        assert!(ReconnectPolicy::default().allows(u32::MAX));
    }
}
