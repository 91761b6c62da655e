//! The crash-loop backoff the supervisor (for workers) and the pool (for executors) share: the
//! first death restarts at once, deaths in a row of processes that die young wait longer.

use std::time::Duration;

/// The longest pause between two restarts in a crash loop.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// 0 ms for the first crash, then 100 ms doubling up to [`MAX_BACKOFF`].
pub fn crash_backoff(crashes: u32) -> Duration {
    if crashes <= 1 {
        return Duration::ZERO;
    }
    let ms = 100u64.saturating_mul(1 << (crashes - 2).min(16));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_immediate_then_doubles_to_a_cap() {
        let table = [
            (1, 0),
            (2, 100),
            (3, 200),
            (4, 400),
            (7, 3200),
            (8, 5000),
            (40, 5000),
        ];
        for (crashes, ms) in table {
            assert_eq!(
                crash_backoff(crashes),
                Duration::from_millis(ms),
                "{crashes}"
            );
        }
    }
}
