//! The latest alerts in memory: a bounded ring for `GET /v1/alerts` and a broadcast feed
//! for live views. It is an alert sink like the others, so it sees exactly the alerts the
//! detector raised; it never fails and never blocks.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::broadcast;

use super::{AlertError, AlertSink, MonitoringAlert};
use crate::model::Verdict;

/// Alerts kept by default: a few hours of a busy detector's alerts in a few MB.
pub const DEFAULT_CAPACITY: usize = 1000;

/// Alerts a slow live subscriber may fall behind by before it skips ahead.
const FEED_CAPACITY: usize = 256;

/// One remembered alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentAlert {
    /// Position in this process's alert sequence (starts at 1).
    pub seq: u64,
    /// When the detector raised it, Unix milliseconds.
    pub at_ms: i64,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The ring and the feed.
#[derive(Debug)]
pub struct RecentAlerts {
    ring: Mutex<Ring>,
    feed: broadcast::Sender<RecentAlert>,
}

#[derive(Debug)]
struct Ring {
    items: VecDeque<RecentAlert>,
    capacity: usize,
    next_seq: u64,
}

impl Default for RecentAlerts {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl RecentAlerts {
    /// A ring of at most `capacity` alerts.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: Mutex::new(Ring {
                items: VecDeque::with_capacity(capacity.min(4096)),
                capacity: capacity.max(1),
                next_seq: 1,
            }),
            feed: broadcast::channel(FEED_CAPACITY).0,
        }
    }

    /// Remember alerts raised now.
    pub fn push(&self, alerts: &[Verdict]) {
        let at_ms = crate::clock::now_ms();
        let mut r = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for v in alerts {
            let a = RecentAlert {
                seq: r.next_seq,
                at_ms,
                verdict: v.clone(),
            };
            r.next_seq += 1;
            if r.items.len() == r.capacity {
                r.items.pop_front();
            }
            r.items.push_back(a.clone());
            // No subscriber is fine.
            let _sent = self.feed.send(a);
        }
    }

    /// Up to `limit` of the latest alerts with `seq > since`, newest first.
    #[must_use]
    pub fn latest(&self, limit: usize, since: u64) -> Vec<RecentAlert> {
        let r = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.items
            .iter()
            .rev()
            .take_while(|a| a.seq > since)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Alerts remembered since start (the last sequence number).
    #[must_use]
    pub fn total(&self) -> u64 {
        let r = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        r.next_seq - 1
    }

    /// Alerts raised from now on.
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<RecentAlert> {
        self.feed.subscribe()
    }
}

#[async_trait]
impl AlertSink for RecentAlerts {
    fn describe(&self) -> String {
        "recent alerts (memory)".into()
    }

    async fn send(&self, alerts: &[Verdict]) -> Result<(), AlertError> {
        self.push(alerts);
        Ok(())
    }

    /// Not kept here: `GET /v1/monitoring` lists the monitoring alerts.
    async fn send_monitoring(&self, _: &MonitoringAlert) -> Result<(), AlertError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str) -> Verdict {
        Verdict::by_model(id, 0.9, 0.5, "m", vec![])
    }

    #[test]
    fn the_ring_keeps_the_latest_and_filters_by_sequence() {
        let r = RecentAlerts::new(3);
        let mut feed = r.subscribe();
        r.push(&[v("a"), v("b"), v("c"), v("d")]);
        let ids: Vec<String> = r
            .latest(10, 0)
            .into_iter()
            .map(|a| a.verdict.tx_id)
            .collect();
        assert_eq!(ids, ["d", "c", "b"]);
        let since: Vec<u64> = r.latest(10, 3).into_iter().map(|a| a.seq).collect();
        assert_eq!(since, [4]);
        assert_eq!(r.latest(1, 0).len(), 1);
        assert_eq!(feed.try_recv().unwrap().verdict.tx_id, "a");
    }
}
