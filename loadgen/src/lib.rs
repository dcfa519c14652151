//! loadgen's generators: Kaggle-shaped synthetic transactions and malformed messages.
//!
//! - [`synthetic`]: transactions whose per-column means and spreads follow the real data's
//!   (per class), at a chosen fraud rate, with optional card ids from a fixed pool.
//! - [`simulate`]: the handbook's simulator: cards, terminals, the three fraud
//!   scenarios, labels for a separate, delayed stream.
//! - [`malformed`]: broken messages of every kind the detector must route to its
//!   dead-letter topic.

pub mod malformed;
pub mod simulate;
pub mod synthetic;
