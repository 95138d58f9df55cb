//! A read-only view of pipelines' sync state for handlers, over a read connection opened
//! on first use: a pipeline's first page reads its mark once per run, so one shared
//! connection is plenty.

use super::{OpenOptions, Store};
use crate::handlers::{SyncStateError, SyncStateView};
use crate::job::UnixMillis;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub struct SyncStateReader {
    database: PathBuf,
    conn: Mutex<Option<Box<dyn Store>>>,
}

impl SyncStateReader {
    pub fn new(database: &Path) -> SyncStateReader {
        SyncStateReader {
            database: database.to_path_buf(),
            conn: Mutex::new(None),
        }
    }
}

impl SyncStateView for SyncStateReader {
    fn high_water(
        &self,
        pipeline: &str,
    ) -> std::result::Result<Option<UnixMillis>, SyncStateError> {
        let mut guard = self.conn.lock().expect("sync state reader");
        if guard.is_none() {
            let options = OpenOptions {
                busy_timeout: Duration::from_secs(10),
                ..OpenOptions::default()
            };
            *guard = Some(super::open_read(&self.database, &options).map_err(|cause| {
                SyncStateError::Open {
                    database: self.database.clone(),
                    cause,
                }
            })?);
        }
        let result = guard
            .as_ref()
            .expect("opened above")
            .sync_high_water(pipeline);
        if result.is_err() {
            // A broken connection is opened again next time.
            *guard = None;
        }
        result.map_err(SyncStateError::Read)
    }
}
