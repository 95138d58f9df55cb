//! `jobctl destinations`, `hold` and `release`: flow control as an operator sees and
//! steers it, and the line of `jobctl show` that says why a waiting job waits.

use super::{print_json, say, write_table, Ctl, CtlError, CtlResult};
use crate::config::parse_duration;
use crate::flow::{label, parse_label, DestinationView, HoldRequest};
use crate::job::{Job, JobState};
use crate::present::absolute;
use crate::safe_text;
use crate::store::Store;
use serde_json::json;
use std::io::Write;

/// A rate as configured: "20/s", "0.5/s".
fn rate_text(rate: f64) -> String {
    if rate >= 1.0 && rate.fract() == 0.0 {
        format!("{rate:.0}/s")
    } else if ((rate * 60.0).round() - rate * 60.0).abs() < 1e-9 {
        format!("{:.0}/m", rate * 60.0)
    } else {
        format!("{rate:.3}/s")
    }
}

impl Ctl {
    /// Checks that `text` (`NAME` or `NAME/KEY`) names a declared endpoint.
    fn destination_arg(&self, text: &str) -> Result<(String, String), CtlError> {
        let (name, key) = parse_label(text);
        if !self.config.endpoints.contains_key(&name) {
            let known: Vec<&str> = self.config.endpoints.keys().map(String::as_str).collect();
            return Err(CtlError::Usage(format!(
                "destination '{}' is not an [endpoints.NAME] of the config (declared: {})",
                safe_text::escape(&name),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )));
        }
        Ok((name, key))
    }

    pub(super) fn destinations(&self, out: &mut dyn Write) -> CtlResult {
        let db = self.open()?;
        let views = db.destinations(&self.config.destination_limits(), self.now)?;
        if self.json {
            let rows: Vec<serde_json::Value> = views
                .iter()
                .map(|v| {
                    let mut value = serde_json::to_value(v).unwrap_or_default();
                    value["label"] = json!(v.label());
                    value["held"] = json!(v.is_held(self.now));
                    value
                })
                .collect();
            return print_json(out, &json!({ "destinations": rows }));
        }
        if views.is_empty() {
            return say(
                out,
                "no destinations: no endpoint has limits and no job has a destination yet",
            );
        }
        let mut rows = vec![vec![
            "DESTINATION".to_string(),
            "RATE".into(),
            "TOKENS".into(),
            "IN FLIGHT".into(),
            "WAITING".into(),
            "HELD UNTIL".into(),
            "WHY".into(),
        ]];
        for v in &views {
            rows.push(self.destination_row(v));
        }
        write_table(out, &rows)
    }

    fn destination_row(&self, v: &DestinationView) -> Vec<String> {
        let rate = match (v.rate_per_second, v.burst) {
            (Some(rate), Some(burst)) if burst > 1 => format!("{} burst {burst}", rate_text(rate)),
            (Some(rate), _) => rate_text(rate),
            (None, _) => "-".into(),
        };
        let in_flight = match v.max_in_flight {
            Some(max) => format!("{}/{max}", v.in_flight),
            None => v.in_flight.to_string(),
        };
        let (held, why) = if v.is_held(self.now) {
            (
                self.style.time_or_dash(v.held_until),
                v.hold_reason.clone().unwrap_or_default(),
            )
        } else {
            ("-".into(), String::new())
        };
        vec![
            safe_text::escape(&v.label()),
            rate,
            v.tokens.map_or("-".into(), |t| format!("{t:.1}")),
            in_flight,
            v.waiting.to_string(),
            held,
            safe_text::escape(&why),
        ]
    }

    pub(super) fn hold(
        &self,
        destination: &str,
        wait: &str,
        reason: Option<&str>,
        out: &mut dyn Write,
    ) -> CtlResult {
        let (name, key) = self.destination_arg(destination)?;
        let wait = parse_duration(wait).map_err(|e| CtlError::Usage(format!("--for: {e}")))?;
        // Read after "held: NAME" in `show`, as "answered 429, ..." is.
        let reason = reason.map_or_else(
            || "by an operator".to_string(),
            |r| format!("by an operator: {r}"),
        );
        let mut db = self.open()?;
        let now = self.now;
        let keys = self.keys_of(db.as_ref(), &name, &key)?;
        let set = db.write(|tx| {
            let mut set = None;
            for key in &keys {
                let hold = HoldRequest::new(&name, key, wait, now, None, reason.clone());
                set = set.or(tx.hold_destination(&hold, now)?);
            }
            Ok(set)
        })?;
        let stands = db.destination_hold(&name, &key)?.map(|h| h.until);
        let label = label(&name, &key);
        if self.json {
            return print_json(
                out,
                &json!({"destination": label, "keys": keys, "held_until": stands, "extended": set.is_some()}),
            );
        }
        if keys.len() > 1 {
            say(
                out,
                &format!(
                    "{} and its {} key(s) with jobs or state are held:",
                    safe_text::escape(&label),
                    keys.len() - 1
                ),
            )?;
        }
        let label = safe_text::escape(&label);
        match (set, stands) {
            (Some(until), _) => say(
                out,
                &format!(
                    "{label} held until {}: no job of it is claimed before then (jobctl release {label})",
                    self.style.time(until)
                ),
            ),
            (None, Some(until)) => say(
                out,
                &format!(
                    "{label} is held until {} already, longer than asked; a hold is never shortened (jobctl release {label} ends it)",
                    self.style.time(until)
                ),
            ),
            (None, None) => Err(CtlError::Usage("--for: the hold must last longer than 0s".into())),
        }
    }

    pub(super) fn release(&self, destination: &str, out: &mut dyn Write) -> CtlResult {
        let (name, key) = self.destination_arg(destination)?;
        let mut db = self.open()?;
        let now = self.now;
        let keys = self.keys_of(db.as_ref(), &name, &key)?;
        let released = db.write(|tx| {
            let mut released = false;
            for key in &keys {
                released |= tx.release_destination(&name, key, now)?;
            }
            Ok(released)
        })?;
        let label = label(&name, &key);
        if self.json {
            return print_json(out, &json!({"destination": label, "released": released}));
        }
        let label = safe_text::escape(&label);
        if released {
            say(
                out,
                &format!("{label} released: its waiting jobs are due now"),
            )
        } else {
            Err(CtlError::NotFound(format!("{label} is not held")))
        }
    }

    /// The keys a hold or release of `name` (and `key`) acts on: that key alone; for a
    /// destination as a whole, also every key of it the database knows (with jobs
    /// waiting or running, or state), so `jobctl hold ga4` holds every storefront.
    fn keys_of(&self, db: &dyn Store, name: &str, key: &str) -> Result<Vec<String>, CtlError> {
        let mut keys = vec![key.to_string()];
        if key.is_empty() {
            for view in db.destinations(&[], self.now)? {
                if view.destination == name && !view.key.is_empty() {
                    keys.push(view.key);
                }
            }
        }
        Ok(keys)
    }

    /// Why a waiting job is not running yet, if flow control is the reason: its
    /// destination's hold, or the earlier job of its order key.
    pub(super) fn waits_because(
        &self,
        db: &dyn Store,
        job: &Job,
    ) -> Result<Option<String>, CtlError> {
        if !matches!(job.state, JobState::Queued | JobState::Retrying) {
            return Ok(None);
        }
        if let Some(destination) = &job.destination {
            if let Some(hold) = db.destination_hold(destination, &job.flow_key)? {
                if hold.until > self.now {
                    let why = hold.reason.unwrap_or_else(|| "held".into());
                    return Ok(Some(format!(
                        "held: {} {}, until {}",
                        label(destination, &job.flow_key),
                        why,
                        absolute(hold.until, self.style.utc)
                    )));
                }
            }
        }
        if let (true, Some(key)) = (job.order_blocked, &job.order_key) {
            let head = db.order_head(key)?;
            return Ok(Some(match head {
                Some(head) => format!("behind job {head} of order key {key}"),
                None => format!("behind an earlier job of order key {key}"),
            }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::rate_text;

    #[test]
    fn rates_read_as_configured() {
        assert_eq!(rate_text(20.0), "20/s");
        assert_eq!(rate_text(0.5), "30/m");
        assert_eq!(rate_text(100.0 / 60.0), "100/m");
    }
}
