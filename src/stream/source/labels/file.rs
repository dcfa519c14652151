//! A labels file (JSON lines: `id`, `Class`, `Time`, `card_id`, `terminal_id`), read to
//! its end at start-up and then followed as it grows. A line that does not decode is
//! counted and logged, never fatal: a chargeback feed must not stop a detector.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metric_names as names;
use crate::velocity::LabelEvent;
use crate::velocity::stage::{Velocity, decode_label};

/// Labels applied per store call.
const CHUNK: usize = 4_096;

/// A labels file and how far it has been read.
#[derive(Debug)]
pub struct LabelsFile {
    path: String,
    offset: u64,
    partial: Vec<u8>,
    line: u64,
}

impl LabelsFile {
    /// A reader from the start of `path`.
    #[must_use]
    pub fn new(path: &str) -> Self {
        Self {
            path: path.into(),
            offset: 0,
            partial: Vec::new(),
            line: 0,
        }
    }

    /// The complete lines added since the last call, decoded (a missing file has none
    /// yet). Invalid lines are counted and skipped.
    pub fn read_new(&mut self) -> std::io::Result<Vec<LabelEvent>> {
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if len < self.offset {
            tracing::warn!(path = %self.path, "labels file shrank (rotated?); reading it from the start");
            self.offset = 0;
            self.partial.clear();
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.take(len - self.offset).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        let mut out = Vec::new();
        for line in complete.split(|&b| b == b'\n') {
            self.line += 1;
            if line.trim_ascii().is_empty() {
                continue;
            }
            match decode_label(line) {
                Ok(l) => out.push(l),
                Err(why) => {
                    metrics::counter!(names::LABELS_INVALID, "reason" => "invalid").increment(1);
                    tracing::warn!(path = %self.path, line = self.line, error = %why, "skipping an invalid label");
                }
            }
        }
        // `split` yields one empty piece after the final newline.
        self.line -= 1;
        Ok(out)
    }
}

/// Apply what `file` holds now; returns how many labels. Labels the store could not
/// take before the shutdown deadline are dropped here: the file is read from its start
/// again on the next start.
pub fn catch_up(velocity: &Velocity, file: &mut LabelsFile) -> std::io::Result<usize> {
    let labels = file.read_new()?;
    for chunk in labels.chunks(CHUNK) {
        if let Err(e) = velocity.apply_labels(chunk) {
            tracing::warn!(path = %file.path, error = %e.0, "labels not applied");
            break;
        }
    }
    Ok(labels.len())
}

/// Follow `file` every `interval` until `stop`; an error only when the reader itself
/// failed (an unreadable file is retried).
pub async fn follow(
    velocity: Arc<Velocity>,
    mut file: LabelsFile,
    interval: Duration,
    stop: CancellationToken,
) -> Result<(), super::LabelsError> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(interval) => {}
        }
        let v = velocity.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = catch_up(&v, &mut file);
            (file, r)
        })
        .await;
        match result {
            Ok((f, Ok(_))) => file = f,
            Ok((f, Err(e))) => {
                tracing::warn!(path = %f.path, error = %e, "labels file unreadable; retrying");
                file = f;
            }
            Err(e) => return Err(super::LabelsError::File(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_complete_lines_and_skips_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(
            f,
            r#"{{"id":"1","Class":1,"Time":10,"card_id":"c","terminal_id":"t"}}"#
        )
        .unwrap();
        writeln!(f, "not json").unwrap();
        // An entity id over the id contract is a bad label too.
        writeln!(
            f,
            r#"{{"id":"3","Class":1,"Time":10,"card_id":"{}"}}"#,
            "c".repeat(2_000)
        )
        .unwrap();
        write!(f, r#"{{"id":2,"Class":"0","Ti"#).unwrap();
        f.flush().unwrap();
        let mut r = LabelsFile::new(path.to_str().unwrap());
        let got = r.read_new().unwrap();
        assert_eq!(
            got.len(),
            1,
            "the bad lines are skipped, the partial one waits"
        );
        assert_eq!((got[0].tx_id.as_str(), got[0].label), ("1", 1));
        writeln!(f, r#"me":20}}"#).unwrap();
        f.flush().unwrap();
        let got = r.read_new().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].tx_id.as_str(), got[0].label, got[0].time),
            ("2", 0, 20.0)
        );
        assert!(r.read_new().unwrap().is_empty());
        assert!(
            LabelsFile::new("/nonexistent/x")
                .read_new()
                .unwrap()
                .is_empty()
        );
    }
}
