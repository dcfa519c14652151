//! The process's Prometheus recorder; the API server renders it at `/metrics`.

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

/// The Prometheus recorder could not be installed (another recorder holds the process).
#[derive(Debug, thiserror::Error)]
#[error("metrics recorder: {0}")]
pub struct RecorderError(#[from] BuildError);

/// Install the Prometheus recorder for this process (once; later calls reuse it).
pub fn recorder() -> Result<PrometheusHandle, RecorderError> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    // Two detectors starting at once must not both install one.
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let h = PrometheusBuilder::new()
        .set_buckets(&[
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
            0.5, 1.0, 2.5, 5.0, 10.0,
        ])?
        .install_recorder()?;
    Ok(HANDLE.get_or_init(|| h).clone())
}
