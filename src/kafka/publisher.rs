//! A producer that replaces itself when its deliveries hang.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use super::KafkaSettings;

/// No delivery report came within the publisher's timeout (the producer was replaced).
#[derive(Debug, Clone, thiserror::Error)]
#[error("no delivery report within {0:?}")]
pub struct DeliveryTimeout(pub Duration);

/// A producer that is replaced when its deliveries hang. After a broker outage an
/// idempotent producer can be left with requests whose fate it never learns, so that its
/// delivery reports never come; every wait is bounded by `message.timeout.ms` plus a
/// margin, and a timed-out producer is dropped for a new one.
pub struct Publisher {
    settings: KafkaSettings,
    current: Mutex<Arc<FutureProducer>>,
    timeout: Duration,
}

impl Publisher {
    /// A publisher with the settings' producer.
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        Ok(Self {
            settings: settings.clone(),
            current: Mutex::new(Arc::new(settings.producer()?)),
            timeout: settings.message_timeout() + Duration::from_secs(5),
        })
    }

    /// How long a wait for deliveries may take before the producer is replaced.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn slot(&self) -> MutexGuard<'_, Arc<FutureProducer>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The producer to send with.
    #[must_use]
    pub fn producer(&self) -> Arc<FutureProducer> {
        self.slot().clone()
    }

    /// Wait for `deliveries`; past the timeout, replace the producer and fail.
    pub async fn within<T>(
        &self,
        deliveries: impl Future<Output = T>,
    ) -> Result<T, DeliveryTimeout> {
        if let Ok(done) = tokio::time::timeout(self.timeout, deliveries).await {
            return Ok(done);
        }
        match self.settings.producer() {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *self.slot(), Arc::new(fresh));
                // Destroying a client can wait on its threads: not on the runtime's.
                tokio::task::spawn_blocking(move || drop(old));
                tracing::warn!(timeout = ?self.timeout, "deliveries hung; replaced the producer");
            }
            Err(e) => tracing::warn!(error = %e, "deliveries hung; no new producer"),
        }
        Err(DeliveryTimeout(self.timeout))
    }
}
