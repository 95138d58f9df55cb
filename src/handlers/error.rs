//! Why a job was refused or an attempt failed, typed by what happens next: a refused job
//! is never enqueued ([`Refusal`]); a failed attempt is retried or the job is dead
//! ([`HandlerError`]), decided here and nowhere else, never by what a message says.

use crate::files::FileError;
use crate::job::{InvalidJob, Outcome, PayloadError};

/// Why [`super::Registry::validate`] refused a job before it reached the queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A field of the job itself (its queue, kind name, keys).
    #[error(transparent)]
    Job(#[from] InvalidJob),
    /// No handler for the job's kind.
    #[error("unknown kind '{kind}' (known: {known})")]
    UnknownKind { kind: String, known: String },
    /// The kind cannot run this payload.
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// Why an attempt failed, and so whether another attempt may succeed. The text is what
/// the operator sees as the job's `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The payload cannot run: another attempt would fail the same way.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// An output file could not be written: dead, so an operator looks at the disk
    /// before the work is redone (a kind that would rather retry says so where it is).
    #[error(transparent)]
    File(#[from] FileError),
    /// Another attempt will fail the same way (the other side refused the request, a
    /// file the job names is gone, an output could not be written).
    #[error("{0}")]
    Permanent(String),
    /// Another attempt may succeed (no connection, a secret being rotated, an answer
    /// the other side marks as worth retrying).
    #[error("{0}")]
    Transient(String),
}

impl HandlerError {
    pub fn permanent(message: impl Into<String>) -> HandlerError {
        HandlerError::Permanent(message.into())
    }

    pub fn transient(message: impl Into<String>) -> HandlerError {
        HandlerError::Transient(message.into())
    }

    /// Whether another attempt will fail the same way.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, HandlerError::Transient(_))
    }

    /// The same failure with its text rewritten (secrets masked, context added); a
    /// payload error's text becomes a permanent failure's.
    pub fn map_message(self, rewrite: impl FnOnce(&str) -> String) -> HandlerError {
        let text = rewrite(&self.to_string());
        match self {
            HandlerError::Transient(_) => HandlerError::Transient(text),
            _ => HandlerError::Permanent(text),
        }
    }
}

/// The one place a failure becomes retry or dead.
impl From<HandlerError> for Outcome {
    fn from(error: HandlerError) -> Outcome {
        if error.is_permanent() {
            Outcome::permanent(error.to_string())
        } else {
            Outcome::retry(error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_transient_failure_is_retried_and_every_message_is_kept() {
        let cases = [
            (HandlerError::transient("no connection"), false),
            (HandlerError::permanent("answered 400"), true),
            (
                HandlerError::from(PayloadError::new("method", "http payload: method 'X'")),
                true,
            ),
        ];
        for (error, dead) in cases {
            let text = error.to_string();
            match Outcome::from(error) {
                Outcome::Permanent { error, .. } => assert!(dead, "{error}"),
                Outcome::Retry { error, .. } => assert!(!dead, "{error}"),
                other => panic!("{other:?}"),
            }
            assert!(!text.is_empty());
        }
        let masked =
            HandlerError::transient("token sk_1").map_message(|m| m.replace("sk_1", "***"));
        assert_eq!(masked, HandlerError::transient("token ***"));
    }
}
