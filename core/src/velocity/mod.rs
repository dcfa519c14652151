//! Entity (velocity) features: what the same card and the same terminal did in the last
//! hours, days and weeks, computed point in time for every transaction.
//!
//! - [`spec`]: the declaration (entities, windows, aggregates, label delay, time flags)
//!   and the feature names it yields.
//! - [`store`]: the [`StateStore`] trait (time-bucketed counters per entity, the features
//!   served per transaction id, the labels applied) and the bounded [`MemoryStore`];
//!   [`ids`]: the bounded id memory both use.
//! - [`clock`]: event time: the watermark and which transactions count.
//! - [`engine`]: the [`Engine`] that computes and records features batch by batch, and
//!   [`compute_offline`], the same computation over a historical file in time order.

pub mod clock;
pub mod conformance;
pub mod engine;
pub mod hash;
pub mod ids;
pub mod spec;
pub mod store;

pub use clock::{EventClock, EventTimePolicy, Fate, Side};
pub use engine::{
    BatchReport, Engine, LabelEvent, OfflineFeatures, OutOfRange, compute_offline, offline_engine,
    time_flags,
};
pub use spec::{
    Aggregate, CALENDAR_FEATURES, Entity, EntitySpec, MissingEntity, Span, SpecError, VelocitySpec,
};
pub use store::{Bucket, IdRing, MemoryLimits, MemoryStore, StateStore, StoreError, StoreStats};
