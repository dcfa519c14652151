//! The model file format.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "FSMODEL\0"
//! 8       4     format version (u32 LE), currently 1
//! 12      4     header length H (u32 LE)
//! 16      H     header: ModelMeta as UTF-8 JSON
//! 16+H    8     body length B (u64 LE)
//! 24+H    B     body: n_features u32, n_trees u32, then per tree:
//!                 n_nodes u32, n_nodes × (threshold f32, meta u32), n_nodes × value f32
//! 24+H+B  32    SHA-256 of every preceding byte
//! ```
//! All integers and floats are little-endian. Loading checks each part and names the first
//! thing wrong: truncation, magic, version, checksum, header, body structure, trees.

use sha2::{Digest, Sha256};

use super::meta::ModelMeta;
use crate::forest::{Forest, Node, Tree, TreeError};

/// File magic.
pub const MAGIC: [u8; 8] = *b"FSMODEL\0";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const CHECKSUM_LEN: usize = 32;
/// Refuse headers larger than this: a corrupt length must not allocate gigabytes.
const MAX_HEADER: usize = 16 << 20;

/// Why a model could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file ends early.
    #[error("model file is truncated: {needed} bytes needed, {actual} present")]
    Truncated {
        /// Bytes the layout requires.
        needed: u64,
        /// Bytes present.
        actual: u64,
    },
    /// Bytes after the checksum.
    #[error("model file has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// Not a fraudstream model.
    #[error("not a fraudstream model (bad magic number {found:02x?})")]
    BadMagic {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// Written by an incompatible version.
    #[error("unsupported model format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// The content does not match its checksum.
    #[error("model checksum mismatch: file says {expected}, content hashes to {actual}")]
    ChecksumMismatch {
        /// Stored checksum (hex).
        expected: String,
        /// Computed checksum (hex).
        actual: String,
    },
    /// The metadata header is not valid.
    #[error("invalid model header: {0}")]
    Header(String),
    /// The body is structurally invalid.
    #[error("invalid model body: {0}")]
    Body(String),
    /// A tree is structurally invalid.
    #[error("invalid tree: {0}")]
    Tree(#[from] TreeError),
    /// The model's features do not match the input.
    #[error("model features do not match the input: {0}")]
    FeatureMismatch(String),
}

/// Serialise a model.
pub(crate) fn encode(meta: &ModelMeta, forest: &Forest) -> Vec<u8> {
    let header = serde_json::to_vec(meta).expect("metadata serialises");
    let body_len = 8 + forest
        .trees()
        .iter()
        .map(|t| 4 + t.nodes().len() * 8 + t.values().len() * 4)
        .sum::<usize>();
    // One buffer of the exact size: a model of 100 deep trees is 150 MB, and growing a
    // buffer (or copying a body into one) would hold two or three of it at once.
    let mut out = Vec::with_capacity(24 + header.len() + body_len + CHECKSUM_LEN);
    out.extend(MAGIC);
    out.extend(FORMAT_VERSION.to_le_bytes());
    out.extend((header.len() as u32).to_le_bytes());
    out.extend(&header);
    out.extend((body_len as u64).to_le_bytes());
    let body_start = out.len();
    out.extend((forest.n_features() as u32).to_le_bytes());
    out.extend((forest.trees().len() as u32).to_le_bytes());
    for t in forest.trees() {
        out.extend((t.nodes().len() as u32).to_le_bytes());
        for n in t.nodes() {
            out.extend(n.threshold.to_le_bytes());
            out.extend(n.meta.to_le_bytes());
        }
        for v in t.values() {
            out.extend(v.to_le_bytes());
        }
    }
    debug_assert_eq!(
        out.len() - body_start,
        body_len,
        "the body's length as computed"
    );
    let sum = Sha256::digest(&out);
    out.extend(sum);
    out
}

/// Hex SHA-256 of some bytes.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse and validate a model file's bytes.
pub(crate) fn decode(bytes: &[u8]) -> Result<(ModelMeta, Forest), ModelError> {
    let actual = bytes.len() as u64;
    let need = |needed: u64| {
        if actual < needed {
            Err(ModelError::Truncated { needed, actual })
        } else {
            Ok(())
        }
    };
    need(MAGIC.len() as u64).map_err(|e| {
        // A short file that doesn't even start like a model is a wrong file, not a cut one.
        if MAGIC.starts_with(bytes) {
            e
        } else {
            ModelError::BadMagic {
                found: bytes.to_vec(),
            }
        }
    })?;
    if bytes[..8] != MAGIC {
        return Err(ModelError::BadMagic {
            found: bytes[..8].to_vec(),
        });
    }
    need(16)?;
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(ModelError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    if header_len > MAX_HEADER {
        return Err(ModelError::Header(format!(
            "header length {header_len} exceeds the {MAX_HEADER}-byte limit"
        )));
    }
    let body_len_at = 16 + header_len as u64;
    need(body_len_at + 8)?;
    let body_len_at = body_len_at as usize;
    let body_len = u64::from_le_bytes(
        bytes[body_len_at..body_len_at + 8]
            .try_into()
            .expect("8 bytes"),
    );
    let body_at = body_len_at as u64 + 8;
    let total = body_at
        .checked_add(body_len)
        .and_then(|v| v.checked_add(CHECKSUM_LEN as u64))
        .ok_or_else(|| ModelError::Body(format!("body length {body_len} overflows")))?;
    need(total)?;
    if actual > total {
        return Err(ModelError::TrailingBytes {
            extra: actual - total,
        });
    }
    let content = &bytes[..bytes.len() - CHECKSUM_LEN];
    let stored = &bytes[bytes.len() - CHECKSUM_LEN..];
    let computed = Sha256::digest(content);
    if computed.as_slice() != stored {
        return Err(ModelError::ChecksumMismatch {
            expected: hex(stored),
            actual: hex(&computed),
        });
    }
    let meta: ModelMeta = serde_json::from_slice(&bytes[16..16 + header_len])
        .map_err(|e| ModelError::Header(e.to_string()))?;
    let forest = decode_body(&bytes[body_at as usize..bytes.len() - CHECKSUM_LEN])?;
    if meta.features.len() != forest.n_features() {
        return Err(ModelError::Body(format!(
            "header lists {} features but the forest uses {}",
            meta.features.len(),
            forest.n_features()
        )));
    }
    if meta.params.n_trees != forest.trees().len() {
        return Err(ModelError::Body(format!(
            "header says {} trees but the body holds {}",
            meta.params.n_trees,
            forest.trees().len()
        )));
    }
    if !(0.0..=1.0).contains(&meta.threshold) {
        return Err(ModelError::Header(format!(
            "threshold {} is outside [0, 1]",
            meta.threshold
        )));
    }
    Ok((meta, forest))
}

/// A little-endian cursor that reports running out as a body error.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], ModelError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                ModelError::Body(format!("body ends inside {what} at byte {}", self.at))
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
}

fn decode_body(body: &[u8]) -> Result<Forest, ModelError> {
    let mut c = Cursor { bytes: body, at: 0 };
    let n_features = c.u32("the feature count")? as usize;
    let n_trees = c.u32("the tree count")? as usize;
    let mut trees = Vec::with_capacity(n_trees.min(body.len() / 16));
    for t in 0..n_trees {
        let n = c.u32("a node count")? as usize;
        let raw = c.take(n.saturating_mul(8), "nodes")?;
        let nodes: Vec<Node> = raw
            .chunks_exact(8)
            .map(|b| Node {
                threshold: f32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
                meta: u32::from_le_bytes(b[4..].try_into().expect("4 bytes")),
            })
            .collect();
        let raw = c.take(n.saturating_mul(4), "node values")?;
        let values = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        trees.push(Tree::new(nodes, values));
        if t + 1 == n_trees && c.at != body.len() {
            return Err(ModelError::Body(format!(
                "{} unexpected bytes after the last tree",
                body.len() - c.at
            )));
        }
    }
    Ok(Forest::new(n_features, trees)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;
    use crate::schema::{Dataset, NUM_FIELDS, Transaction};
    use crate::train::{TrainOptions, train_model};

    fn model() -> Model {
        let mut rng = crate::rng::Rng::new(9);
        let mut d = Dataset::with_capacity(400);
        for i in 0..400 {
            let mut values = [0.0; NUM_FIELDS];
            for v in &mut values {
                *v = rng.unit() * 2.0 - 1.0;
            }
            let fraud = values[14] > 0.6;
            d.push(Transaction {
                id: i.to_string(),
                values,
                label: Some(u8::from(fraud)),
                card_id: None,
                event_time: None,
                terminal_id: None,
                derived: Vec::new(),
            });
        }
        let mut opts = TrainOptions::default();
        opts.params.n_trees = 5;
        train_model(&d, "test", &opts, &|| {}).unwrap().model
    }

    /// Recompute the trailing checksum after editing the content.
    fn reseal(bytes: &mut Vec<u8>) {
        bytes.truncate(bytes.len() - CHECKSUM_LEN);
        let sum = Sha256::digest(&bytes);
        bytes.extend(sum);
    }

    #[test]
    fn round_trip_is_exact() {
        let m = model();
        let bytes = m.to_bytes();
        let back = Model::from_bytes(&bytes).unwrap();
        assert_eq!(back.meta(), m.meta());
        assert_eq!(back.forest(), m.forest());
        assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/m.fsm");
        let m = model();
        let sha = m.save(&path).unwrap();
        assert_eq!(sha, sha256_hex(&std::fs::read(&path).unwrap()));
        assert_eq!(Model::load(&path).unwrap().forest(), m.forest());
        assert!(matches!(
            Model::load(dir.path().join("missing.fsm")),
            Err(ModelError::Io { .. })
        ));
    }

    #[test]
    fn each_corruption_has_its_own_error() {
        let good = model().to_bytes();

        for cut in [0, 5, 12, 40, good.len() / 2, good.len() - 1] {
            let e = Model::from_bytes(&good[..cut]).unwrap_err();
            assert!(matches!(e, ModelError::Truncated { .. }), "cut {cut}: {e}");
        }

        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(
            Model::from_bytes(&b),
            Err(ModelError::BadMagic { .. })
        ));
        assert!(matches!(
            Model::from_bytes(b"PK\x03\x04 not a model at all"),
            Err(ModelError::BadMagic { .. })
        ));

        let mut b = good.clone();
        b[8..12].copy_from_slice(&7u32.to_le_bytes());
        let e = Model::from_bytes(&b).unwrap_err();
        assert!(matches!(
            e,
            ModelError::UnsupportedVersion {
                found: 7,
                supported: 1
            }
        ));
        assert!(e.to_string().contains("version 7"));

        let mut b = good.clone();
        let mid = b.len() - 100;
        b[mid] ^= 0xFF;
        assert!(matches!(
            Model::from_bytes(&b),
            Err(ModelError::ChecksumMismatch { .. })
        ));

        let mut b = good.clone();
        b.push(0);
        assert!(matches!(
            Model::from_bytes(&b),
            Err(ModelError::TrailingBytes { extra: 1 })
        ));

        // A header that parses but names a feature that is not a transaction field.
        let m = model();
        let mut meta = m.meta().clone();
        meta.features[0] = "V99".into();
        let b = encode(&meta, m.forest());
        let e = Model::from_bytes(&b).unwrap_err();
        assert!(matches!(e, ModelError::FeatureMismatch(_)));
        assert!(e.to_string().contains("V99"));

        // Broken JSON in the header, resealed so that only the header is wrong.
        let mut b = good.clone();
        b[16] = b'[';
        reseal(&mut b);
        assert!(matches!(Model::from_bytes(&b), Err(ModelError::Header(_))));

        // A child pointer past the end of its tree, resealed: a structural error.
        let mut b = good.clone();
        let header_len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
        let first_node_meta = 16 + header_len + 8 + 8 + 4 + 4;
        b[first_node_meta..first_node_meta + 4].copy_from_slice(&0x00FF_FFFFu32.to_le_bytes());
        reseal(&mut b);
        assert!(matches!(Model::from_bytes(&b), Err(ModelError::Tree(_))));
    }

    #[test]
    fn feature_checks() {
        let m = model();
        assert!(m.check_input(&crate::schema::FIELD_NAMES).is_ok());
        let e = m.check_input(&["V1", "V2"]).unwrap_err();
        assert!(e.to_string().contains("the input lacks V3"), "{e}");
        let mut other = m.meta().features.clone();
        other.swap(0, 1);
        assert!(m.expect_features(&other).is_err());
        assert!(m.expect_features(&m.meta().features.clone()).is_ok());
    }
}
