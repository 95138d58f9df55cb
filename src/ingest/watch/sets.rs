//! Folder sets (`mode = "dir"`): noticing a set, taking the complete ones, recording the
//! incomplete as pending and burying those past `incomplete_timeout`.

use super::*;

impl FolderWatcher {
    pub(super) fn consider_folder(&mut self, name: String) {
        if is_ignored(&name) || self.folders.contains_key(&name) {
            return;
        }
        if !self.root.join(&name).is_dir() {
            return;
        }
        self.folders.insert(
            name,
            FolderSeen {
                signature: Vec::new(),
                since: self.clock.monotonic(),
                first_seen: self.clock.now_ms(),
                recorded_missing: None,
                retry_at: None,
                failing_since: None,
            },
        );
    }

    /// Folder sets: take the complete ones, record the incomplete, bury the timed out.
    pub(super) fn check_folders(&mut self) {
        let now = self.clock.monotonic();
        let now_ms = self.clock.now_ms();
        let names: Vec<String> = self.folders.keys().cloned().collect();
        let mut pending = Vec::new();
        for name in names {
            let path = self.root.join(&name);
            let Some(listing) = list_folder(&path) else {
                self.folders.remove(&name);
                self.forget_pending(&name);
                continue;
            };
            let seen = self.folders.get_mut(&name).expect("known folder");
            if seen.retry_at.is_some_and(|at| now < at) {
                continue;
            }
            if listing != seen.signature {
                seen.signature = listing.clone();
                seen.since = now;
            }
            let present: BTreeSet<String> = listing.iter().map(|(n, _, _)| n.clone()).collect();
            let marked = self
                .config
                .marker
                .as_ref()
                .is_some_and(|m| present.contains(&m.to_lowercase()));
            let missing: Vec<String> = self
                .config
                .required
                .iter()
                .filter(|r| !present.contains(&r.to_lowercase()))
                .cloned()
                .collect();
            let settled = now.saturating_duration_since(seen.since) >= self.config.settle;
            let timed_out = now_ms.saturating_sub(seen.first_seen)
                >= self.config.incomplete_timeout.as_millis() as i64;
            let complete =
                marked || (!self.config.required.is_empty() && missing.is_empty() && settled);
            let dead = if complete {
                None
            } else if timed_out && !missing.is_empty() {
                Some(format!(
                    "folder set {name} was incomplete after {}: missing {}",
                    humantime::format_duration(self.config.incomplete_timeout),
                    missing.join(", ")
                ))
            } else {
                if seen.recorded_missing.as_ref() != Some(&missing) {
                    let (watch, folder, first_seen, list) = (
                        self.watch_name.clone(),
                        name.clone(),
                        seen.first_seen,
                        missing.clone(),
                    );
                    let written = self.client.write(
                        move |tx, now| {
                            tx.record_pending(&watch, &folder, first_seen, &list, now)
                                .map_err(|e| e.to_string())
                        },
                        |_| {},
                    );
                    match written {
                        Ok(()) => {
                            if !missing.is_empty() {
                                tracing::info!(
                                    "{}: folder set {name} waits for {}",
                                    self.key,
                                    missing.join(", ")
                                );
                            }
                            seen.recorded_missing = Some(missing);
                        }
                        Err(e) => {
                            tracing::warn!("{}: cannot record folder set {name}: {e}", self.key)
                        }
                    }
                }
                continue;
            };
            match self.stage(&path, true, dead) {
                Ok(Some(commit)) => {
                    self.folders.remove(&name);
                    pending.push(commit);
                }
                Ok(None) => {
                    self.folders.remove(&name);
                }
                Err(e) => {
                    let Some(seen) = self.folders.get_mut(&name) else {
                        continue;
                    };
                    seen.retry_at = Some(now + RETRY_AFTER);
                    let since = *seen.failing_since.get_or_insert(now_ms);
                    if let Some(commit) = self.unreadable(&path, true, since, &e) {
                        self.folders.remove(&name);
                        pending.push(commit);
                    }
                }
            }
        }
        self.finish(pending);
    }

    pub(super) fn forget_pending(&self, folder: &str) {
        let (watch, folder) = (self.watch_name.clone(), folder.to_string());
        let _ = self.client.write(
            move |tx, _| tx.clear_pending(&watch, &folder).map_err(|e| e.to_string()),
            |_| {},
        );
    }
}
