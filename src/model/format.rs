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
    let mut body = Vec::with_capacity(8 + forest.n_nodes() * 12 + forest.trees().len() * 4);
    body.extend((forest.n_features() as u32).to_le_bytes());
    body.extend((forest.trees().len() as u32).to_le_bytes());
    for t in forest.trees() {
        body.extend((t.nodes().len() as u32).to_le_bytes());
        for n in t.nodes() {
            body.extend(n.threshold.to_le_bytes());
            body.extend(n.meta.to_le_bytes());
        }
        for v in t.values() {
            body.extend(v.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(24 + header.len() + body.len() + CHECKSUM_LEN);
    out.extend(MAGIC);
    out.extend(FORMAT_VERSION.to_le_bytes());
    out.extend((header.len() as u32).to_le_bytes());
    out.extend(&header);
    out.extend((body.len() as u64).to_le_bytes());
    out.extend(&body);
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
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
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
    need(MAGIC.len() as u64).or_else(|e| {
        // A short file that doesn't even start like a model is a wrong file, not a cut one.
        if MAGIC.starts_with(bytes) {
            Err(e)
        } else {
            Err(ModelError::BadMagic {
                found: bytes.to_vec(),
            })
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
        let raw = c.take(n.checked_mul(8).unwrap_or(usize::MAX), "nodes")?;
        let nodes: Vec<Node> = raw
            .chunks_exact(8)
            .map(|b| Node {
                threshold: f32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
                meta: u32::from_le_bytes(b[4..].try_into().expect("4 bytes")),
            })
            .collect();
        let raw = c.take(n.checked_mul(4).unwrap_or(usize::MAX), "node values")?;
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
