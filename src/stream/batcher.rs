//! Micro-batching, the same for every source: a batch closes at `max` items, or `timeout`
//! after its first item, so latency stays low when traffic is light and throughput high
//! when it is heavy. A source pushes what it reads and waits on [`Batcher::expired`]
//! beside its read; the batch's timer is armed once per batch, not once per item.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Items gathered into the next batch.
#[derive(Debug)]
pub struct Batcher<T> {
    items: Vec<T>,
    max: usize,
    timeout: Duration,
    first_at: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl<T> Batcher<T> {
    /// Batches of at most `max` items (at least 1), closed `timeout` after their first.
    #[must_use]
    pub fn new(max: usize, timeout: Duration) -> Self {
        let max = max.max(1);
        Self {
            items: Vec::with_capacity(max.min(4096)),
            max,
            timeout,
            first_at: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// Add an item; returns the batch when this item filled it.
    pub fn push(&mut self, item: T) -> Option<Vec<T>> {
        if self.first_at.is_none() {
            let now = Instant::now();
            self.first_at = Some(now);
            self.timer.as_mut().reset(now + self.timeout);
        }
        self.items.push(item);
        (self.items.len() >= self.max).then(|| self.take())
    }

    /// Whether the batch is full (a source stops reading until it is taken).
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.items.len() >= self.max
    }

    /// Items waiting.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item is waiting.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// When the current batch closes by time; `None` while it is empty.
    #[must_use]
    pub fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + self.timeout)
    }

    /// Take the current batch (possibly empty) and start a new one.
    pub fn take(&mut self) -> Vec<T> {
        self.first_at = None;
        std::mem::replace(&mut self.items, Vec::with_capacity(self.max.min(4096)))
    }

    /// Resolves at [`Batcher::deadline`]; never while the batch is empty. Cancel-safe.
    pub async fn expired(&mut self) {
        if self.first_at.is_some() {
            self.timer.as_mut().await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn closes_at_max_items() {
        let mut b = Batcher::new(4, Duration::from_secs(1));
        let mut out = Vec::new();
        for i in 0..10 {
            if let Some(batch) = b.push(i) {
                out.push(batch);
            }
        }
        assert_eq!(out, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(b.len(), 2);
        assert!(!b.is_full());
    }

    #[tokio::test(start_paused = true)]
    async fn closes_at_timeout_after_the_first_item() {
        let mut b = Batcher::new(100, Duration::from_millis(5));
        assert!(b.deadline().is_none(), "an empty batch never expires");
        let start = Instant::now();
        assert!(b.push(1).is_none());
        tokio::time::sleep(Duration::from_millis(3)).await;
        assert!(b.push(2).is_none());
        b.expired().await;
        assert_eq!(start.elapsed(), Duration::from_millis(5));
        assert_eq!(b.take(), vec![1, 2]);
        assert!(b.is_empty() && b.deadline().is_none());
        tokio::time::sleep(Duration::from_millis(10)).await;
        b.push(3);
        assert_eq!(
            b.deadline(),
            Some(Instant::now() + Duration::from_millis(5))
        );
    }

    #[tokio::test]
    async fn a_zero_max_still_makes_batches_of_one() {
        let mut b = Batcher::new(0, Duration::from_secs(1));
        assert_eq!(b.push('x'), Some(vec!['x']));
    }
}
