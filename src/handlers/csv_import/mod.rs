//! `csv_import`: one CSV file becomes validated, batched `http` jobs, and a summary once
//! they have all finished.
//!
//! Stage 0 (the file's first run) reads the file once, streaming: each record is checked
//! against the pipeline's schema; failing rows go to `output/YYYYMMDD/<file>.errors.csv` (names
//! too long for the file system are shortened as the watched folder's `.error.json` is),
//! good rows are grouped into batches whose bodies are appended, one after the other, to
//! `spool/csv_import/batches/<job id>.bodies`. Unless `max_error_rate` is exceeded, that
//! file is made durable and the job returns [`Outcome::Await`] with one `http` job per
//! batch (`body_file` plus the batch's `body_offset` and `body_len`), so every batch is
//! enqueued in the same transaction that moves the import to `waiting`: a crash before it
//! enqueues none, after it all. Bodies live in a file, not in payloads, so neither memory
//! nor the queue grows with the file; one file rather than one per batch, because
//! creating the files was most of the cost of a large import.
//!
//! A row is checked and rendered in one go: each cell becomes its JSON text
//! ([`schema::Column::write`]) in the batch's [`template::Rows`], and a body is made of
//! copies of those texts ([`template::Body::write`]), with no `serde_json::Value` per
//! cell.
//!
//! Stage 1 (resumed when the last batch finished) reads what stage 0 left in
//! `spool/csv_import/state/<job id>.json` (a handler cannot read the database, and the
//! counts of rows are known only to stage 0), adds how the batches ended, writes
//! `output/YYYYMMDD/<file>.summary.json` and, if every batch succeeded, deletes the
//! bodies file and returns the pipeline's follow-up job. If a batch is dead or cancelled
//! the bodies file stays, so that `jobctl retry` of a dead batch can still send it.
//!
//! Each batch's unique key is `csv:<pipeline>:<file sha256>:<n>`: the same file imported
//! again by the same pipeline enqueues nothing new, while another pipeline (e.g. a
//! triggered send fed by the same file) still gets its own batches.
//!
//! Stage 0 lives in [`fan_out`] (with the errors file and the benchmark's [`dry_run`]),
//! the batches and their bodies file in [`batches`], stage 1 in [`fan_in`]; this module
//! holds the payload, the summary both stages share, and the handler that picks a stage.

mod batches;
pub mod config;
mod fan_in;
mod fan_out;
pub mod schema;
pub mod template;

pub use config::{BodyPreset, Compiled, CsvImportPipeline, FollowUp};
pub use fan_out::dry_run;

use fan_in::fan_in;
use fan_out::fan_out;

use super::{Handler, JobContext};
use crate::config::Config;
use crate::files::{FileAction, FileError};
use crate::job::{Job, Outcome, PayloadError, UnixMillis};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The job's payload: what a watched folder gives (`file`, `name`, `sha256`, `size`)
/// plus the pipeline. Unknown fields are refused, so a misspelt setting is caught when
/// the watch is checked at start; a watch's own fields go under `extra`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportPayload {
    pub pipeline: String,
    /// Absolute, or relative to the data directory.
    pub file: PathBuf,
    /// The name it arrived under (default: the file's own name).
    #[serde(default)]
    pub name: Option<String>,
    /// Hex SHA-256 of the file, if the sender already computed it.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Its size, as a watched folder gives it (not used: the file is read anyway).
    #[serde(default)]
    pub size: Option<u64>,
    /// A JSON object of the watch's (or sender's) own fields: kept with the job, never
    /// read by the kind.
    #[serde(default)]
    pub extra: Option<Value>,
}

impl ImportPayload {
    fn parse(payload: &Value) -> Result<ImportPayload, PayloadError> {
        let p = ImportPayload::deserialize(payload)
            .map_err(|e| PayloadError::whole(format!("csv_import payload: {e}")))?;
        if p.file.as_os_str().is_empty() {
            return Err(PayloadError::new(
                "file",
                "csv_import payload: file must not be empty",
            ));
        }
        if p.extra.as_ref().is_some_and(|e| !e.is_object()) {
            return Err(PayloadError::new(
                "extra",
                "csv_import payload: extra must be an object",
            ));
        }
        if let Some(sha) = &p.sha256 {
            // It names directories and keys, so it must be exactly a digest.
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PayloadError::new(
                    "sha256",
                    "csv_import payload: sha256 must be 64 hex digits",
                ));
            }
        }
        Ok(p)
    }
}

fn pipeline<'c>(config: &'c Config, name: &str) -> Result<&'c CsvImportPipeline, PayloadError> {
    let refused = |message: String| PayloadError::new("pipeline", message);
    match config.pipelines.get(name) {
        Some(crate::config::PipelineConfig::CsvImport(p)) => Ok(p),
        #[allow(unreachable_patterns)]
        Some(_) => Err(refused(format!(
            "pipeline '{name}' is not a csv_import pipeline"
        ))),
        None => Err(refused(format!(
            "pipeline '{name}' is not declared (declared: {})",
            if config.pipelines.is_empty() {
                "none".into()
            } else {
                config
                    .pipelines
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))),
    }
}

/// What stage 0 leaves for stage 1, and the body of the summary file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub job: i64,
    pub pipeline: String,
    pub file: String,
    pub name: String,
    pub sha256: String,
    pub encoding: String,
    /// `sending`, `completed`, `completed_with_failures` or `refused`.
    pub status: String,
    pub rows_read: u64,
    pub rows_valid: u64,
    pub rows_invalid: u64,
    pub errors_file: Option<String>,
    pub batch_size: usize,
    pub batches: u64,
    pub batches_succeeded: u64,
    pub batches_dead: u64,
    pub batches_cancelled: u64,
    /// Batches an earlier import of the same file had already enqueued (not resent).
    pub batches_already_enqueued: u64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// Where stage 0 put its output, so stage 1 writes beside it even after midnight.
    pub output_dir: String,
    pub summary_file: String,
    /// The batch bodies (one file, a byte range per batch), deleted once every batch
    /// succeeded, else kept for `jobctl retry`.
    #[serde(default)]
    pub bodies_file: String,
    pub started_ms: UnixMillis,
}

/// The `csv_import` handler. Stateless: everything comes from the job and the config.
pub struct CsvImport;

impl Handler for CsvImport {
    fn validate(&self, payload: &Value, config: &Config) -> Result<(), PayloadError> {
        let p = ImportPayload::parse(payload)?;
        pipeline(config, &p.pipeline)?;
        crate::paths::check(
            config,
            &config.daemon.data_dir,
            "csv_import payload: file",
            &p.file,
        )
        .map_err(|e| e.for_field("file"))?;
        Ok(())
    }

    fn run(&self, job: &Job, ctx: &JobContext) -> Outcome {
        let result = if job.stage == 0 {
            fan_out(job, ctx)
        } else {
            fan_in(job, ctx)
        };
        result.unwrap_or_else(Outcome::from)
    }
}

fn fmt_time(ms: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&chrono::Local)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// The file name part only, so a payload's name cannot point outside output/.
fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "input".into(),
        _ => cleaned,
    }
}

/// Creates a directory (and parents) the group may read, others not.
fn make_dir(path: &Path) -> Result<(), FileError> {
    crate::files::create_private_dir_all(path)
        .map_err(|e| FileError::new(FileAction::Create, path, e))
}

/// Writes `bytes` to `path` whole or not at all, with exactly `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    crate::files::write_atomic_with_mode(path, bytes, mode).map_err(|e| FileError::write(path, e))
}

fn state_path(data_dir: &Path, job: &Job) -> PathBuf {
    data_dir
        .join("spool/csv_import/state")
        .join(format!("{}.json", job.id))
}

fn write_summary(summary: &Summary) -> Result<(), FileError> {
    let path = Path::new(&summary.summary_file);
    let mut bytes = serde_json::to_vec_pretty(summary).map_err(|e| FileError::write(path, e))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, 0o640)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PipelineConfig;
    use crate::csvio::CsvReader;
    use serde_json::json;
    use template::Rows;

    #[test]
    fn a_payload_takes_only_known_keys_and_its_own_under_extra() {
        let err = ImportPayload::parse(&json!({"pipeline": "p", "file": "a.csv", "pipline": "q"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("csv_import payload: unknown field `pipline`"),
            "{err}"
        );
        let p = ImportPayload::parse(&json!({"pipeline": "p", "file": "a.csv", "size": 3,
            "extra": {"folder": "input/daily"}}))
        .unwrap();
        assert_eq!(p.extra.unwrap()["folder"], "input/daily");
        let err = ImportPayload::parse(&json!({"pipeline": "p", "file": "a.csv", "extra": 1}))
            .unwrap_err();
        assert_eq!(err.field, "extra");
        assert_eq!(
            err.to_string(),
            "csv_import payload: extra must be an object"
        );
    }

    #[test]
    fn the_sfmc_example_is_valid() {
        std::env::set_var("SFMC_CLIENT_SECRET", "example-secret");
        let text = include_str!("../../../config/examples/sfmc.toml");
        let config = Config::from_toml(text, "sfmc.toml").unwrap();
        config.check_secrets().unwrap();
        // let-else, so the test still compiles once other pipeline kinds exist.
        let Some(PipelineConfig::CsvImport(upsert)) = config.pipelines.get("customers_upsert")
        else {
            panic!("customers_upsert is a csv_import pipeline")
        };
        assert_eq!(upsert.batch_size, 50);
        assert_eq!(upsert.body, BodyPreset::SfmcRowset);
        let Some(PipelineConfig::CsvImport(send)) = config.pipelines.get("welcome_send") else {
            panic!("welcome_send is a csv_import pipeline")
        };
        let compiled = send.compile("welcome_send").unwrap();
        let mut body = Vec::new();
        let row = vec![
            Some(json!("k1")),
            Some(json!("a@example.jp")),
            Some(json!("Hanako")),
        ];
        compiled
            .body
            .write(&mut body, &template::tests::rows_of(3, &[row]));
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"To": {"Address": "a@example.jp", "SubscriberKey": "k1",
                   "ContactAttributes": {"SubscriberAttributes": {"FirstName": "Hanako"}}}})
        );
    }

    /// Tricky cells of every type, read from a file and rendered by the job's path
    /// (typed cells written straight to bytes), give byte for byte the bodies of the
    /// former path (a `Value` per cell, serialised by the old renderer).
    #[test]
    fn bodies_are_byte_identical_to_the_value_based_renderer() {
        let pipeline = r#"
endpoint = "e"
keys = ["k"]
trim = false
columns = [
  { name = "k", required = true },
  { name = "s" },
  { name = "i", type = "integer", default = -7 },
  { name = "d", type = "decimal" },
  { name = "b", type = "boolean" },
  { name = "date", type = "date" },
  { name = "dt", type = "datetime" },
  { name = "e", type = "email" },
  { name = "en", type = "enum", values = ["a\"b", "ü"] },
  { name = "jp", type = "date", format = "%Y年%m月%d日" },
  { name = "f", type = "datetime", format = "%d/%m/%Y %H.%M" },
  { name = "absent", default = "dflt" },
  { name = "gone", type = "integer" },
  { name = "s2", rename = "名前\n\"x\"" },
]
"#;
        let header = "k,s,i,d,b,date,dt,e,en,jp,f,s2\n";
        let cells: &[[&str; 12]] = &[
            [
                "k1",
                "plain",
                "42",
                "1.50",
                "yes",
                "2024-02-29",
                "2024-01-02 03:04",
                "a@b.jp",
                "ü",
                "2024年01月31日",
                "31/12/2024 23.59",
                "x",
            ],
            [
                "\"q\"\"uote\"",
                "\"a\\b/c\t\u{1}\u{1f}\u{7f}\"",
                "-9223372036854775808",
                "-0.0",
                "F",
                "0001/1/9",
                "2024/1/2T3:4:5",
                "x.y+z@d.example",
                "\"a\"\"b\"",
                "0099年1月2日",
                "1/1/0001 00.00",
                "\"\u{2028}\u{2029}😀\"",
            ],
            [
                "k3",
                "",
                "",
                "",
                "",
                "",
                "2024-01-02T03:04:05.123456789+09:00",
                "",
                "",
                "",
                "",
                "\"\r\n\"",
            ],
            [
                "k4",
                " spaced ",
                "+17",
                "123456789012345.6",
                "1",
                "9999-12-31",
                "2024-02-29T23:59:60Z",
                "u@x.jp",
                "",
                "",
                "",
                "",
            ],
            [
                "k5",
                "\\",
                "9223372036854775807",
                "+0.000000000000001",
                "n",
                "2000-1-1",
                "1999-12-31 23:59:59",
                "",
                "",
                "",
                "",
                "é",
            ],
            [
                "k6",
                "s",
                "0",
                "1234567890123456789012.5",
                "TRUE",
                "2024/12/01",
                "2024-06-01T00:00:00-00:00",
                "",
                "",
                "",
                "",
                "",
            ],
            [
                "k7",
                "s",
                "-0",
                ".5",
                "f",
                "2024-1-31",
                "2024-06-01 00:00",
                "",
                "",
                "",
                "",
                "",
            ],
        ];
        let mut text = String::from(header);
        for row in cells {
            text.push_str(&row.join(","));
            text.push('\n');
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tricky.csv");
        std::fs::write(&file, &text).unwrap();

        let mut p: CsvImportPipeline = toml::from_str(pipeline).unwrap();
        let fields: Vec<String> = p
            .compile("p")
            .unwrap()
            .columns
            .iter()
            .map(|c| c.target.clone())
            .collect();
        let templates = [
            (json!("{{rows}}"), json!("{{row}}"), 3),
            (
                json!("{{rows}}"),
                json!({"keys": "{{keys}}", "values": "{{values}}"}),
                2,
            ),
            (
                json!({"items": "{{rows}}", "n": [1.5, -0, 1e300, null, true, "a\"\u{1}é"], "名": {}}),
                json!({"id": "{{row.k}}", "gone": "{{row.gone}}", "s": ["{{row.s}}", "{{row.d}}"], "all": "{{row}}"}),
                100,
            ),
            (
                json!({"To": {"Address": "{{row.e}}", "Key": "{{row.k}}", "Attributes": "{{values}}", "x": "{{ row.dt }}"}}),
                json!("{{row}}"),
                1,
            ),
        ];
        for (template, row_template, batch_size) in templates {
            p.template = Some(template.clone());
            p.row_template = Some(row_template.clone());
            p.batch_size = batch_size;
            let compiled = p.compile("p").unwrap();
            let mut reader = CsvReader::open(&file, compiled.encoding, &compiled.dialect).unwrap();
            let bound =
                schema::bind(&compiled.columns, reader.headers(), p.extra_columns, p.trim).unwrap();
            let mut rows = Rows::new(fields.len());
            let (mut new_bodies, mut old_rows) = (Vec::new(), Vec::new());
            let mut errors = Vec::new();
            while let Some(record) = reader.next_record().unwrap() {
                assert!(
                    bound.convert(&record, &mut rows, &mut errors),
                    "line {}: {errors:?}",
                    record.line
                );
                if rows.len() == batch_size {
                    let mut body = Vec::new();
                    compiled.body.write(&mut body, &rows);
                    new_bodies.push(String::from_utf8(body).unwrap());
                    rows.clear();
                }
                let old: Vec<Option<Value>> = bound
                    .columns
                    .iter()
                    .zip(&bound.positions)
                    .map(|(column, at)| match at {
                        Some(at) => Some(column.value(record.text(*at).unwrap()).unwrap()),
                        None => column.absent(),
                    })
                    .collect();
                old_rows.push(old);
            }
            if !rows.is_empty() {
                let mut body = Vec::new();
                compiled.body.write(&mut body, &rows);
                new_bodies.push(String::from_utf8(body).unwrap());
            }
            assert_eq!(old_rows.len(), cells.len());
            let old_bodies: Vec<String> = old_rows
                .chunks(batch_size)
                .map(|batch| {
                    let body = template::reference::write(
                        &template,
                        &row_template,
                        &fields,
                        &p.keys,
                        batch,
                    );
                    String::from_utf8(body).unwrap()
                })
                .collect();
            assert_eq!(new_bodies, old_bodies, "template {template}");
        }
    }

    #[test]
    fn bad_pipelines_name_their_key() {
        let base = "[endpoints.e]\nbase_url = \"https://x\"\n[pipelines.p]\nkind = \"csv_import\"\nendpoint = \"e\"\n";
        let cases = [
            (
                "columns = []",
                "pipelines.p.columns: declare at least one column",
            ),
            ("columns = [{ name = \"a\", type = \"number\" }]", "number"),
            ("columns = [{ name = \"a\", colour = 1 }]", "colour"),
            (
                "batch_size = 0\ncolumns = [{ name = \"a\" }]",
                "pipelines.p.batch_size",
            ),
            (
                "encoding = \"klingon\"\ncolumns = [{ name = \"a\" }]",
                "pipelines.p.encoding",
            ),
            (
                "delimiter = \";;\"\ncolumns = [{ name = \"a\" }]",
                "pipelines.p.delimiter",
            ),
            (
                "body = \"sfmc_rowset\"\ncolumns = [{ name = \"a\" }]",
                "pipelines.p.keys",
            ),
            (
                "keys = [\"a\"]\ncolumns = [{ name = \"a\" }]",
                "must be required = true",
            ),
            (
                "columns = [{ name = \"a\", pattern = \"(\" }]",
                "pipelines.p.columns[0].pattern",
            ),
            (
                "template = { x = \"{{row.b}}\" }\ncolumns = [{ name = \"a\" }]",
                "pipelines.p.template",
            ),
        ];
        for (extra, expected) in cases {
            let message = Config::from_toml(&format!("{base}{extra}\n"), "t")
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{extra:?} gave {message}");
        }
        let message = Config::from_toml(
            "[pipelines.p]\nkind = \"csv_import\"\nendpoint = \"nope\"\ncolumns = [{ name = \"a\" }]\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("pipelines.p.endpoint: 'nope'"),
            "{message}"
        );
        let message = Config::from_toml("[pipelines.p]\nkind = \"ftp_push\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(message.contains("ftp_push"), "{message}");
    }
}
