//! The writer's streams: recovering where each stands before its rows are buffered, and
//! the buffers of one file each.

use std::sync::Arc;

use arrow::array::RecordBatch;

use super::positions::{self, StreamState};
use super::{LakeWriter, ScoredRecord};
use crate::metric_names as names;
use crate::storage::StorageError;

impl LakeWriter {
    /// Before `records` are buffered: recover the highest written offset of each stream
    /// among them that this writer has not recovered in its current assignment (every
    /// stream once without an ownership), so redelivered rows are skipped. Buffered rows
    /// at or below what the lake already holds (another member wrote them meanwhile) are
    /// dropped.
    pub async fn recover(&mut self, records: &[ScoredRecord]) -> Result<(), StorageError> {
        let ownership = self.ownership.get();
        let mut seen: Vec<&Arc<str>> = Vec::new();
        for r in records {
            let Some(p) = &r.position else { continue };
            if seen.contains(&&p.stream) {
                continue;
            }
            seen.push(&p.stream);
            let generation = match &ownership {
                Some(o) => match o.holds(&p.stream) {
                    Some(g) => g,
                    None => continue, // revoked on its way here: dropped at the flush
                },
                None => 0,
            };
            let state = self.streams.get(&p.stream).copied();
            if state.is_some_and(|s| s.recovered == Some(generation)) {
                continue;
            }
            self.take_over(&p.stream, generation).await?;
        }
        Ok(())
    }

    /// Take `stream` over ([`positions::claim`]) in assignment `generation`: drop the
    /// buffered rows the lake already holds, and write on from its highest offset.
    async fn take_over(&mut self, stream: &Arc<str>, generation: u64) -> Result<(), StorageError> {
        let empty = self.empty_file();
        let positions::Claimed {
            high: written,
            epoch,
        } = positions::claim(self.store.as_ref(), stream, true, || empty.clone()).await?;
        self.trim_stream(stream, written);
        let buffered = self.buffered_high(stream);
        tracing::debug!(%stream, written, epoch, "lake: stream position recovered");
        self.streams.insert(
            stream.clone(),
            StreamState {
                high: written.max(buffered),
                written,
                epoch,
                recovered: Some(generation),
            },
        );
        Ok(())
    }

    /// Another writer claimed `stream` while this one still holds it: take it back, in
    /// the same assignment.
    pub(super) async fn claim_back(&mut self, stream: &Arc<str>) -> Result<(), StorageError> {
        let generation = self
            .streams
            .get(stream)
            .and_then(|s| s.recovered)
            .unwrap_or(0);
        self.take_over(stream, generation).await?;
        metrics::counter!(names::LAKE_CLAIMED_BACK).increment(1);
        tracing::warn!(%stream, "lake: another writer claimed a stream this member still holds (a zombie, or a partition assigned twice): claimed back; what it wrote meanwhile is not written again");
        Ok(())
    }

    /// Drop `stream`'s buffered rows at or below `written` (a stream's buffers hold
    /// rising offsets, so they are a prefix of each).
    fn trim_stream(&mut self, stream: &Arc<str>, written: i64) {
        self.seal();
        let keys: Vec<BufferKey> = self
            .batches
            .keys()
            .filter(|(_, s)| s.as_ref() == Some(stream))
            .cloned()
            .collect();
        for key in keys {
            let Some(buffer) = self.batches.get_mut(&key) else {
                continue;
            };
            let stale = buffer.offsets.partition_point(|&o| o <= written);
            if stale == buffer.offsets.len() {
                self.drop_buffer(&key, "another member wrote them meanwhile");
            } else if stale > 0 {
                buffer.skip(stale);
                self.rows -= stale;
                metrics::counter!(names::LAKE_SKIPPED_ROWS).increment(stale as u64);
            }
        }
    }

    /// The highest offset of `stream` buffered, or `i64::MIN`.
    fn buffered_high(&self, stream: &Arc<str>) -> i64 {
        self.batches
            .iter()
            .filter(|((_, s), _)| s.as_ref() == Some(stream))
            .filter_map(|(_, b)| b.offsets.last().copied())
            .max()
            .unwrap_or(i64::MIN)
    }
}

/// A buffer's key: the hour partition and the stream (none for rows without a position).
pub(super) type BufferKey = (String, Option<Arc<str>>);

/// The record batches of one file to be, with their rows' offsets (rising).
#[derive(Debug, Default)]
pub(super) struct Buffer {
    pub(super) batches: Vec<RecordBatch>,
    /// The offsets of its rows, when they have positions.
    pub(super) offsets: Vec<i64>,
}

impl Buffer {
    pub(super) fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Drop the first `n` rows.
    pub(super) fn skip(&mut self, mut n: usize) {
        self.offsets.drain(..n.min(self.offsets.len()));
        let mut kept = Vec::with_capacity(self.batches.len());
        for b in self.batches.drain(..) {
            if n >= b.num_rows() {
                n -= b.num_rows();
            } else {
                kept.push(b.slice(n, b.num_rows() - n));
                n = 0;
            }
        }
        self.batches = kept;
    }
}
