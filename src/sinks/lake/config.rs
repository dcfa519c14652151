//! `[lake]` and `[lake.writer]`: where the lake is, and when and how files are written.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Parquet compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LakeCompression {
    /// zstd (default level): smaller files.
    Zstd,
    /// Snappy: faster, larger.
    Snappy,
    /// No compression.
    None,
}

/// When and how to write files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeSettings {
    /// Flush at this many buffered rows.
    pub max_rows: usize,
    /// Flush at this many (estimated, uncompressed) buffered bytes.
    pub max_bytes: usize,
    /// Flush when the oldest buffered row is this old.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Codec.
    pub compression: LakeCompression,
    /// This writer's name in file names (for example the detector id).
    pub writer_id: String,
}

impl Default for LakeSettings {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(60),
            compression: LakeCompression::Zstd,
            writer_id: "detector".into(),
        }
    }
}

/// The Parquet lake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// `file://`/plain path, `s3://bucket/prefix` or `hdfs://host:port/dir`.
    pub location: String,
    /// Flush limits, codec and writer id (`[lake.writer]`).
    pub writer: LakeSettings,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            location: "out/lake".into(),
            writer: LakeSettings::default(),
        }
    }
}

impl crate::validate::Validate for LakeConfig {
    fn validate(&self) -> Result<(), crate::validate::Invalid> {
        crate::storage::Location::parse(&self.location)
            .map_err(|m| crate::validate::Invalid::new("location", m))?;
        self.writer.validate().map_err(|e| e.within("writer"))
    }
}

impl crate::validate::Validate for LakeSettings {
    fn validate(&self) -> Result<(), crate::validate::Invalid> {
        use crate::validate::Invalid;
        if self.max_rows == 0 {
            return Err(Invalid::new("max_rows", "must be at least 1"));
        }
        if self.max_bytes == 0 {
            return Err(Invalid::new("max_bytes", "must be at least 1"));
        }
        if self.writer_id.is_empty() || self.writer_id.contains('/') {
            return Err(Invalid::new(
                "writer_id",
                "must be non-empty and contain no `/`",
            ));
        }
        Ok(())
    }
}
