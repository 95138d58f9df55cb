//! When a pipeline runs by itself: a fixed period or a cron expression, and the
//! checks of both. The scheduler (`daemon::scheduler`) computes the periods.

use std::time::Duration;

/// The shortest `every` a pipeline may run at.
pub const MIN_PIPELINE_EVERY: Duration = Duration::from_secs(1);

/// A pipeline's schedule: a fixed period (aligned to the Unix epoch) or a cron expression.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineSchedule {
    Every(Duration),
    Cron(String),
}

/// A cron expression that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{text}' is not a cron expression ({reason}); write it like \"0 * * * *\"")]
pub struct CronError {
    pub text: String,
    reason: String,
}

/// Parses a 5-field POSIX cron expression (`0 * * * *`), evaluated in UTC.
pub fn parse_cron(text: &str) -> Result<croner::Cron, CronError> {
    text.parse::<croner::Cron>().map_err(|e| CronError {
        text: text.to_string(),
        reason: e.to_string(),
    })
}
