//! Retrying: how long to wait and when to give up, for every caller.
//!
//! The sync's MySQL phase, each gRPC reader and commit mode's Import API
//! client all retry the same way: exponential backoff with jitter, bounded
//! by a number of attempts and (optionally) by the time a streak of
//! failures may last. What counts as worth a retry is not decided here:
//! each caller classifies its own errors (see [`crate::error::kind::Kind`]) and
//! asks a [`Retries`] for the next wait.

use std::time::{Duration, Instant, SystemTime};

/// How a caller retries.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Retries allowed in one streak (the first try not counted).
    pub attempts: u32,
    /// Longest a streak may last, if bounded by time too.
    pub budget: Option<Duration>,
    /// The first wait; each next one doubles, up to `max`.
    pub first: Duration,
    pub max: Duration,
}

impl Policy {
    /// The tap's reading policy: 1 s, 2 s, 4 s … capped at 30 s.
    pub fn reading(attempts: u32, budget: Duration) -> Policy {
        Policy {
            attempts,
            budget: Some(budget),
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

/// One streak of retries; progress ends the streak.
#[derive(Debug)]
pub struct Retries {
    policy: Policy,
    attempts: u32,
    since: Option<Instant>,
}

impl Retries {
    pub fn new(policy: Policy) -> Retries {
        Retries {
            policy,
            attempts: 0,
            since: None,
        }
    }

    /// Retries made in this streak so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait before the next attempt, or `None` when the attempts or the
    /// time budget are used up.
    pub fn next_wait(&mut self) -> Option<Duration> {
        let since = *self.since.get_or_insert_with(Instant::now);
        let out_of_time = self.policy.budget.is_some_and(|b| since.elapsed() >= b);
        if self.attempts >= self.policy.attempts || out_of_time {
            return None;
        }
        let wait = backoff(self.attempts, self.policy.first, self.policy.max);
        self.attempts += 1;
        Some(wait)
    }

    /// Something worked: the next failure starts a new streak.
    pub fn progress(&mut self) {
        self.attempts = 0;
        self.since = None;
    }
}

/// Exponential backoff with jitter: `first × 2^attempt`, capped at `max`,
/// and then a random point between half of that and all of it, so that
/// clients failing together do not retry together.
pub fn backoff(attempt: u32, first: Duration, max: Duration) -> Duration {
    let first = first.as_millis().max(1) as u64;
    let base = first
        .saturating_mul(1u64 << attempt.min(32))
        .min(max.as_millis() as u64)
        .max(1);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u64;
    Duration::from_millis(base - base / 2 + nanos % (base / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_count_and_time() {
        let policy = Policy::reading(2, Duration::from_secs(60));
        let mut r = Retries::new(policy);
        assert!(r.next_wait().is_some());
        assert!(r.next_wait().is_some());
        assert!(r.next_wait().is_none(), "count");
        assert_eq!(r.attempts(), 2);
        r.progress();
        assert!(r.next_wait().is_some(), "progress resets");
        let mut r = Retries::new(Policy::reading(100, Duration::from_secs(5)));
        r.since = Some(Instant::now() - Duration::from_secs(10));
        assert!(r.next_wait().is_none(), "budget");
        let unbounded = Policy {
            budget: None,
            ..Policy::reading(1, Duration::ZERO)
        };
        assert!(
            Retries::new(unbounded).next_wait().is_some(),
            "no time budget"
        );
    }

    #[test]
    fn the_reading_policy_grows_and_is_bounded() {
        let mut r = Retries::new(Policy::reading(20, Duration::from_secs(3600)));
        let waits: Vec<Duration> = std::iter::from_fn(|| r.next_wait()).collect();
        assert_eq!(waits.len(), 20);
        for (i, d) in waits.iter().enumerate() {
            assert!(*d <= Duration::from_secs(30), "{i}: {d:?}");
            assert!(*d >= Duration::from_millis(500), "{i}: {d:?}");
        }
        assert!(waits[5] >= Duration::from_secs(15));
    }

    #[test]
    fn backoff_doubles_with_jitter() {
        let (first, max) = (Duration::from_millis(10), Duration::from_millis(80));
        for (attempt, low, high) in [
            (0, 5, 10),
            (1, 10, 20),
            (2, 20, 40),
            (3, 40, 80),
            (9, 40, 80),
        ] {
            let d = backoff(attempt, first, max);
            assert!(
                d >= Duration::from_millis(low) && d <= Duration::from_millis(high),
                "{attempt}: {d:?}"
            );
        }
    }
}
