//! Labels (chargebacks) for the entity features, read as they arrive and handed to the
//! velocity stage (`crate::velocity::stage::Velocity::apply_labels`).
//!
//! - [`file`]: a JSON-lines file, read to its end at start-up, then followed.
//! - [`topic`]: a Kafka topic, read whole (memory store) or once per group (Redis).

pub mod file;
pub mod topic;
