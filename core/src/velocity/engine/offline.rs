//! Offline features: a history in time order, each row computed and counted at once,
//! each fraud label known once its transaction is counted.

use super::{BatchReport, Engine, LabelEvent};
use crate::schema::Transaction;
use crate::velocity::clock::EventTimePolicy;
use crate::velocity::spec::{SpecError, VelocitySpec};
use crate::velocity::store::{MemoryLimits, MemoryStore, StateStore, StoreError};

/// Entity features of a historical file, offline: rows in time order (ties in input
/// order), each label known once its transaction is counted. It gives what a detector
/// computes online when every label arrives within the spec's label delay, so training
/// on it learns what scoring sees.
pub fn compute_offline<S: StateStore>(
    engine: &mut Engine<S>,
    txs: &mut [Transaction],
) -> Result<BatchReport, StoreError> {
    let mut order: Vec<usize> = (0..txs.len()).collect();
    order.sort_by(|&a, &b| txs[a].time().total_cmp(&txs[b].time()));
    let mut total = BatchReport::default();
    for i in order {
        let r = engine.offline_one(&mut txs[i])?;
        total.computed += r.computed;
        total.replayed += r.replayed;
        total
            .missing
            .extend(r.missing.into_iter().map(|(_, e)| (i, e)));
    }
    Ok(total)
}

impl<S: StateStore> Engine<S> {
    /// One step of [`compute_offline`]: the next transaction in time order, then its
    /// label, if it is a fraud.
    pub fn offline_one(&mut self, tx: &mut Transaction) -> Result<BatchReport, StoreError> {
        let r = self.process(std::slice::from_mut(tx))?;
        if tx.label == Some(1) && r.computed == 1 {
            self.label(&[LabelEvent {
                tx_id: tx.id.clone(),
                time: tx.time(),
                label: 1,
                card_id: tx.card_id.clone(),
                terminal_id: tx.terminal_id.clone(),
            }])?;
        }
        Ok(r)
    }
}

/// An engine over a fresh [`MemoryStore`] for offline work: entities bounded only by
/// the horizon.
pub fn offline_engine(spec: VelocitySpec) -> Result<Engine<MemoryStore>, SpecError> {
    let limits = MemoryLimits {
        horizon: spec.horizon_buckets(),
        max_entities: usize::MAX,
        max_served: 1 << 16,
    };
    Engine::with_policy(spec, MemoryStore::new(limits), EventTimePolicy::OFFLINE)
}

/// Offline features over a history read in time order, possibly from several files:
/// [`Engine::offline_one`] per row, refusing a row earlier than the one before.
pub struct OfflineFeatures {
    engine: Engine<MemoryStore>,
    last_time: f64,
    rows: u64,
}

impl OfflineFeatures {
    /// Features of `spec`, from empty state.
    pub fn new(spec: VelocitySpec) -> Result<Self, SpecError> {
        Ok(Self {
            engine: offline_engine(spec)?,
            last_time: f64::NEG_INFINITY,
            rows: 0,
        })
    }

    /// The spec.
    #[must_use]
    pub fn spec(&self) -> &VelocitySpec {
        self.engine.spec()
    }

    /// Features per row.
    #[must_use]
    pub fn width(&self) -> usize {
        self.engine.width()
    }

    /// Give `tx` its features (the next row in time order).
    pub fn next(&mut self, tx: &mut Transaction) -> Result<(), String> {
        self.rows += 1;
        if tx.time() < self.last_time {
            return Err(format!(
                "rows must be in time order: row {} (id {:?}) has Time {} after {}",
                self.rows,
                tx.id,
                tx.time(),
                self.last_time
            ));
        }
        self.last_time = tx.time();
        self.engine
            .offline_one(tx)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
