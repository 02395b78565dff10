//! `Retry`: how many times a fetch is attempted and how long it waits in between. The policy
//! is a value and the delay a pure function of the attempt number, so it is tested without a
//! clock; deciding *which* errors deserve another attempt is the fetcher's job, not this one's.

use std::time::Duration;

/// Bounded retries with exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first one included (0 counts as 1).
    pub attempts: u32,
    /// The pause after the first failed attempt.
    pub initial: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

impl Retry {
    /// A policy that tries once.
    pub fn none() -> Retry {
        Retry {
            attempts: 1,
            ..Retry::default()
        }
    }

    /// The pause after failed attempt number `attempt` (counting from 1) before the next one:
    /// `initial`, doubled for every attempt after the first, never more than `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        // 2^31 times any non-zero initial delay is past any sensible `max` already; the cap
        // keeps the shift defined.
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_are_capped() {
        let r = Retry::default();
        let ms = |a| r.delay(a).as_millis();
        assert_eq!(
            (1..=7).map(ms).collect::<Vec<_>>(),
            [200, 400, 800, 1600, 3200, 5000, 5000]
        );
        assert_eq!(r.delay(0), Duration::from_millis(200));
        assert_eq!(r.delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn huge_initial_delays_do_not_overflow() {
        let r = Retry {
            attempts: 10,
            initial: Duration::MAX,
            max: Duration::from_secs(1),
        };
        assert_eq!(r.delay(5), Duration::from_secs(1));
        let r = Retry {
            attempts: 3,
            initial: Duration::ZERO,
            max: Duration::from_secs(1),
        };
        assert_eq!(r.delay(3), Duration::ZERO);
    }

    #[test]
    fn defaults() {
        let r = Retry::default();
        assert_eq!(r.attempts, 4);
        assert_eq!(r.initial, Duration::from_millis(200));
        assert_eq!(r.max, Duration::from_secs(5));
        assert_eq!(Retry::none().attempts, 1);
    }
}
