//! Why a detector did not start, or stopped: each part's own error, with the part named.

use std::error::Error;

use crate::config::ConfigError;
use crate::registry::RegistryError;
use crate::stream::source::file::FileSourceError;
use crate::stream::source::kafka::KafkaSourceError;
use crate::stream::stages::StagesError;
use crate::tasks::TaskFailed;
use crate::validate::Invalid;

/// Any part's error, boxed.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// A detector that could not be built, or a run that failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    /// The configuration is refused as a whole.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// One value cannot work, with its key.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A part could not be opened or connected; `part` names it (by its configuration
    /// key where it has one).
    #[error("{part}: {}", chain(source.as_ref()))]
    Open {
        /// The part, and its key.
        part: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The model store failed at start-up.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// There is no model to serve and none can be trained.
    #[error("{0}")]
    NoModel(String),
    /// `--follow` asked of a source that is not a file.
    #[error("--follow needs a file source")]
    NotFollowable,
    /// The Kafka source stopped with an error.
    #[error(transparent)]
    KafkaSource(#[from] KafkaSourceError),
    /// The file source stopped with an error.
    #[error(transparent)]
    FileSource(#[from] FileSourceError),
    /// The scoring and delivery stages stopped with an error.
    #[error(transparent)]
    Stages(#[from] StagesError),
    /// A background task stopped early.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// `.opening("part")` on any result: its error as [`DetectorError::Open`].
pub(crate) trait Opening<T> {
    /// The error, naming `part`.
    fn opening(self, part: impl Into<String>) -> Result<T, DetectorError>;
}

impl<T, E: Error + Send + Sync + 'static> Opening<T> for Result<T, E> {
    fn opening(self, part: impl Into<String>) -> Result<T, DetectorError> {
        self.map_err(|e| DetectorError::Open {
            part: part.into(),
            source: Box::new(e),
        })
    }
}

/// `e` and the causes its message does not already hold, joined by `: `.
fn chain(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let m = c.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {0}")]
    struct Says(#[source] std::io::Error);

    #[test]
    fn an_open_error_names_the_part_and_every_cause_once() {
        let e = Err::<(), _>(Outer(std::io::Error::other("disk full")))
            .opening("dlq.file /x")
            .unwrap_err();
        assert_eq!(e.to_string(), "dlq.file /x: outer: disk full");
        let e = Err::<(), _>(Says(std::io::Error::other("disk full")))
            .opening("alerts.file")
            .unwrap_err();
        assert_eq!(e.to_string(), "alerts.file: wrapped: disk full");
    }
}
