//! Micro-batching: a batch closes at `max` items, or `timeout` after its first item, so
//! latency stays low when traffic is light and throughput high when it is heavy.

use std::time::Duration;

use tokio::sync::mpsc;

/// The next batch: waits for a first item (returns `None` once the channel is closed and
/// drained), then takes items until `max` or until `timeout` has passed since the first.
pub async fn next_batch<T>(
    rx: &mut mpsc::Receiver<T>,
    max: usize,
    timeout: Duration,
) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    Some(fill_batch(first, rx, max, timeout).await)
}

/// A batch that starts with `first`: takes further items until `max` or until `timeout`
/// has passed.
pub async fn fill_batch<T>(
    first: T,
    rx: &mut mpsc::Receiver<T>,
    max: usize,
    timeout: Duration,
) -> Vec<T> {
    let mut batch = Vec::with_capacity(max.min(4096));
    batch.push(first);
    let deadline = tokio::time::Instant::now() + timeout;
    while batch.len() < max {
        // Take what is already queued without waiting.
        match rx.try_recv() {
            Ok(item) => {
                batch.push(item);
                continue;
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) => batch.push(item),
            Ok(None) | Err(_) => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn closes_at_max_items() {
        let (tx, mut rx) = mpsc::channel(100);
        for i in 0..10 {
            tx.send(i).await.unwrap();
        }
        let b = next_batch(&mut rx, 4, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(b, vec![0, 1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn closes_at_timeout_when_traffic_is_light() {
        let (tx, mut rx) = mpsc::channel(100);
        tx.send(1).await.unwrap();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            tx.send(2).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send(3).await.unwrap();
        });
        let start = tokio::time::Instant::now();
        let b = next_batch(&mut rx, 100, Duration::from_millis(5))
            .await
            .unwrap();
        assert_eq!(b, vec![1, 2], "3 arrives after the 5 ms window");
        assert_eq!(start.elapsed(), Duration::from_millis(5));
        let b = next_batch(&mut rx, 100, Duration::from_millis(5))
            .await
            .unwrap();
        assert_eq!(b, vec![3]);
        sender.await.unwrap();
        assert!(
            next_batch(&mut rx, 100, Duration::from_millis(5))
                .await
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_channel_ends_the_batch_early() {
        let (tx, mut rx) = mpsc::channel(100);
        tx.send(1).await.unwrap();
        drop(tx);
        let b = next_batch(&mut rx, 100, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(b, vec![1]);
        assert!(
            next_batch(&mut rx, 100, Duration::from_secs(60))
                .await
                .is_none()
        );
    }
}
