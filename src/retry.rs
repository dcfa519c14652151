//! Bounded retries with exponential backoff and jitter, for calls to remote services.

use std::future::Future;
use std::time::Duration;

use crate::rng::Rng;

/// How hard to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Five attempts, 100 ms doubling to at most 2 s: about 4 s of waiting in all.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1` (1-based `attempt`): exponential, capped,
    /// with "full jitter" (uniform in [delay/2, delay]) so that many clients that failed
    /// together do not retry together.
    #[must_use]
    pub fn delay(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(0.5 + 0.5 * rng.unit())
    }
}

/// Errors that know whether trying again can help.
pub trait Retryable {
    /// True for transient failures (unreachable, throttled, server errors).
    fn is_retryable(&self) -> bool;
}

/// Run `op` until it succeeds, fails with a non-retryable error, or runs out of attempts;
/// returns the last error then.
pub async fn retry<T, E, F, Fut>(policy: RetryPolicy, what: &str, mut op: F) -> Result<T, E>
where
    E: Retryable + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut rng = Rng::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < policy.max_attempts => {
                let delay = policy.delay(attempt, &mut rng);
                tracing::warn!(what, attempt, error = %e, delay_ms = delay.as_millis() as u64, "retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct E(bool);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "e{}", self.0)
        }
    }
    impl Retryable for E {
        fn is_retryable(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy::default();
        let mut rng = Rng::new(1);
        let d1 = p.delay(1, &mut rng);
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
        let d9 = p.delay(9, &mut rng);
        assert!(d9 >= Duration::from_secs(1) && d9 <= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_then_gives_up() {
        let calls = AtomicU32::new(0);
        let r: Result<(), E> = retry(RetryPolicy::default(), "t", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(E(true)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 5);

        let calls = AtomicU32::new(0);
        let r: Result<(), E> = retry(RetryPolicy::default(), "t", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(E(false)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "permanent errors are not retried"
        );

        let calls = AtomicU32::new(0);
        let r: Result<u32, E> = retry(RetryPolicy::default(), "t", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(E(true)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
    }
}
