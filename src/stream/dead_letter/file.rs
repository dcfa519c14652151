//! Dead letters as JSON lines in a local file: `{"line", "source", "reason", "code"}` for
//! rows of a file (`{"topic", "partition", "offset", …}` for messages).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::json;

use super::{DeadLetter, DeadLetterError, DeadLetterSink, Origin};
use crate::sinks::alerts::local::open_append;

/// A dead-letter file, appended to.
pub struct DeadLetterFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl DeadLetterFile {
    /// Append to `path` (created with its directory when missing).
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(open_append(path)?),
        })
    }
}

#[async_trait]
impl DeadLetterSink for DeadLetterFile {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn send(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        let mut text = String::new();
        for l in letters {
            let (reason, code) = (&l.reason.message, l.reason.code);
            let line = match &l.origin {
                Origin::File { path, line } => {
                    json!({"line": line, "source": &**path, "reason": reason, "code": code})
                }
                Origin::Kafka {
                    topic,
                    partition,
                    offset,
                } => {
                    json!({"topic": &**topic, "partition": partition, "offset": offset, "reason": reason, "code": code})
                }
            };
            text.push_str(&line.to_string());
            text.push('\n');
        }
        let mut f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.write_all(text.as_bytes())
            .and_then(|()| f.flush())
            .map_err(|e| DeadLetterError {
                failed: (0..letters.len()).collect(),
                message: format!("{}: {e}", self.path.display()),
            })
    }
}
