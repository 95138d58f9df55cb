//! `noop`: succeeds at once, or, for tests and drills, fails as its payload says
//! (`{"fail": "retry" | "permanent", "error": "..."}`), after `{"sleep_ms": N}` (at most
//! a minute) if asked, so drills can keep jobs running for a while.

use super::{Handler, JobContext};
use crate::job::{Job, Outcome};

pub struct Noop;

impl Handler for Noop {
    fn run(&self, job: &Job, _ctx: &JobContext) -> Outcome {
        if let Some(ms) = job.payload.get("sleep_ms").and_then(|v| v.as_u64()) {
            std::thread::sleep(std::time::Duration::from_millis(ms.min(60_000)));
        }
        let error = job
            .payload
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("noop asked to fail");
        match job.payload.get("fail").and_then(|f| f.as_str()) {
            Some("retry") => Outcome::retry(error),
            Some("permanent") => Outcome::permanent(error),
            _ => Outcome::success(),
        }
    }
}
