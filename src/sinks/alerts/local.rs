//! Alerts as JSON lines in a local file and/or on stdout.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{AlertError, AlertSink, MonitoringAlert};
use crate::model::Verdict;

/// Alerts appended to a file (one JSON object per line) and/or printed as
/// `ALERT {json}` lines on stdout.
pub struct LocalAlerts {
    file: Option<(PathBuf, Mutex<File>)>,
    stdout: bool,
}

impl LocalAlerts {
    /// Append to `file` (created with its directory when missing) and/or print on stdout.
    pub fn open(file: Option<&Path>, stdout: bool) -> std::io::Result<Self> {
        let file = match file {
            Some(p) => Some((p.to_path_buf(), Mutex::new(open_append(p)?))),
            None => None,
        };
        Ok(Self { file, stdout })
    }
}

/// Open `path` for appending, creating it and its directory when missing.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

#[async_trait]
impl AlertSink for LocalAlerts {
    fn describe(&self) -> String {
        match &self.file {
            Some((p, _)) => format!("alerts file {}", p.display()),
            None => "alerts on stdout".into(),
        }
    }

    async fn send(&self, alerts: &[Verdict]) -> Result<(), AlertError> {
        self.write(&super::encode_verdicts(self, alerts)?)
    }

    async fn send_monitoring(&self, alert: &MonitoringAlert) -> Result<(), AlertError> {
        self.write(&super::encode_monitoring(self, alert)?)
    }
}

impl LocalAlerts {
    /// Append the JSON of (key, JSON) pairs as lines.
    fn write(&self, items: &[(String, String)]) -> Result<(), AlertError> {
        let refused = |message: String| AlertError::Refused {
            sink: self.describe(),
            message,
        };
        let mut text = String::new();
        for (_, json) in items {
            text.push_str(json);
            text.push('\n');
        }
        if let Some((_, f)) = &self.file {
            let mut f = f.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f.write_all(text.as_bytes())
                .and_then(|()| f.flush())
                .map_err(|e| refused(e.to_string()))?;
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            for line in text.lines() {
                writeln!(out, "ALERT {line}").map_err(|e| refused(e.to_string()))?;
            }
        }
        Ok(())
    }
}
