//! A pacer: work taken at no more than a rate (requests per second, bytes per second), spread
//! evenly — each `take(n)` waits until `n` more units fit since the last.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    /// Time one unit costs.
    per_unit: Duration,
    /// When the next unit may start.
    next: Mutex<Instant>,
}

impl Pacer {
    /// `None` for a rate that is not positive (no limit).
    pub fn new(per_second: f64) -> Option<Pacer> {
        (per_second.is_finite() && per_second > 0.0).then(|| Pacer {
            per_unit: Duration::from_secs_f64(1.0 / per_second),
            next: Mutex::new(Instant::now()),
        })
    }

    /// Waits until `n` units may go.
    pub async fn take(&self, n: u64) {
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let start = (*next).max(Instant::now());
            let cost = self.per_unit.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
            *next = start + cost;
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn units_are_spread_at_the_rate() {
        // Lower bounds only: a slow machine takes longer, never shorter.
        let p = Pacer::new(100.0).unwrap();
        let began = Instant::now();
        for _ in 0..11 {
            p.take(1).await;
        }
        assert!(began.elapsed() >= Duration::from_millis(100), "the first at once, the 11th 100 ms later");
        p.take(20).await;
        p.take(1).await;
        assert!(began.elapsed() >= Duration::from_millis(310), "a big take costs its size");
        assert!(Pacer::new(0.0).is_none() && Pacer::new(f64::NAN).is_none());
    }
}
