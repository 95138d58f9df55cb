//! `[pipelines.NAME]` with `kind = "csv_import"`: how a file is read (encoding,
//! dialect), what each column must be, how good rows become batch bodies and where they
//! go, and what follows a delivered file; its defaults, and the compiler that checks a
//! pipeline and builds what reading needs.

use super::schema::{Column, ColumnConfig, ExtraColumns};
use super::template::{self, Body};
use crate::config::problems::{Problem, Problems};
use crate::csvio::{Dialect, EncodingChoice};
use crate::handlers::http::config::EndpointConfig;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const DEFAULT_BATCH_SIZE: usize = 100;
/// Up to 5% of the rows may fail before the whole file is refused.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.05;
pub const DEFAULT_ENCODING: &str = "auto";
/// What `auto` falls back to when a file is not UTF-8: what Japanese Excel writes.
pub const DEFAULT_FALLBACK_ENCODING: &str = "shift_jis";

/// A `csv_import` pipeline (`[pipelines.NAME]` with `kind = "csv_import"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CsvImportPipeline {
    /// `auto` or an encoding label (`utf-8`, `shift_jis`, `cp932`, `euc-jp`, ...).
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// What `auto` uses when the file has no BOM and is not UTF-8.
    #[serde(default = "default_fallback")]
    pub fallback_encoding: String,
    /// One character; `"\t"` or `"tab"` for tab-separated files.
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    #[serde(default = "default_quote")]
    pub quote: String,
    /// Whether the first record is a header row (else columns are taken by position).
    #[serde(default = "yes")]
    pub header: bool,
    #[serde(default)]
    pub extra_columns: ExtraColumns,
    /// Trim spaces around values before checking them.
    #[serde(default = "yes")]
    pub trim: bool,
    /// The largest share of invalid rows (0.0–1.0) that still lets the good rows go.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The `[endpoints.NAME]` the batches go to.
    pub endpoint: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    /// `rows` (an array of row objects) or `sfmc_rowset` (`{"keys", "values"}` per row).
    #[serde(default)]
    pub body: BodyPreset,
    /// Output names of the key columns (for `sfmc_rowset`, `{{keys}}` and `{{values}}`).
    #[serde(default)]
    pub keys: Vec<String>,
    /// The batch body (default `"{{rows}}"`); see `template`.
    #[serde(default)]
    pub template: Option<Value>,
    /// Each row inside `{{rows}}` (default from `body`).
    #[serde(default)]
    pub row_template: Option<Value>,
    /// The queue of the batch jobs (default: the import job's queue).
    #[serde(default)]
    pub queue: Option<String>,
    /// The batch jobs' attempt limit (default: the http kind's retry policy).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    pub columns: Vec<ColumnConfig>,
    /// A job enqueued with the summary when every batch succeeded.
    #[serde(default)]
    pub follow_up: Option<FollowUp>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BodyPreset {
    #[default]
    Rows,
    SfmcRowset,
}

/// The job enqueued after a file was delivered in full. String values of its payload may
/// hold `{{file}}`, `{{name}}`, `{{sha256}}`, `{{pipeline}}` and `{{summary}}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    pub kind: String,
    #[serde(default = "empty_object")]
    pub payload: Value,
    #[serde(default)]
    pub queue: Option<String>,
}

fn default_encoding() -> String {
    DEFAULT_ENCODING.into()
}
fn default_fallback() -> String {
    DEFAULT_FALLBACK_ENCODING.into()
}
fn default_delimiter() -> String {
    ",".into()
}
fn default_quote() -> String {
    "\"".into()
}
fn yes() -> bool {
    true
}
fn default_max_error_rate() -> f64 {
    DEFAULT_MAX_ERROR_RATE
}
fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn empty_object() -> Value {
    json!({})
}

/// A pipeline ready to read files.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub encoding: EncodingChoice,
    pub dialect: Dialect,
    pub columns: Vec<Column>,
    pub body: Body,
}

fn one_byte(key: &str, text: &str) -> Result<u8, String> {
    match text {
        "tab" | "\t" => Ok(b'\t'),
        t if t.len() == 1 && t.is_ascii() => Ok(t.as_bytes()[0]),
        t => Err(format!("{key}: '{t}' is not one ASCII character")),
    }
}

impl CsvImportPipeline {
    /// Checks the pipeline and builds what reading needs; errors name the key under
    /// `key` (`pipelines.NAME`).
    pub fn compile(&self, key: &str) -> Result<Compiled, String> {
        let encoding = EncodingChoice::parse(&self.encoding, &self.fallback_encoding)
            .map_err(|e| format!("{key}.encoding: {e}"))?;
        let dialect = Dialect {
            delimiter: one_byte(&format!("{key}.delimiter"), &self.delimiter)?,
            quote: one_byte(&format!("{key}.quote"), &self.quote)?,
            has_header: self.header,
        };
        if self.batch_size == 0 {
            return Err(format!("{key}.batch_size: must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return Err(format!("{key}.max_error_rate: must be between 0 and 1"));
        }
        if self.max_attempts == Some(0) {
            return Err(format!("{key}.max_attempts: must be at least 1"));
        }
        if self.columns.is_empty() {
            return Err(format!("{key}.columns: declare at least one column"));
        }
        let columns = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| Column::compile(&format!("{key}.columns[{i}]"), c))
            .collect::<Result<Vec<_>, _>>()?;
        let fields: Vec<String> = columns.iter().map(|c| c.target.clone()).collect();
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].contains(f) {
                return Err(format!("{key}.columns: two columns are called '{f}'"));
            }
        }
        for k in &self.keys {
            match columns.iter().find(|c| &c.target == k) {
                None => return Err(format!("{key}.keys: '{k}' is not a column")),
                // A row without its key would upsert nothing, or the wrong row.
                Some(c) if !c.required => {
                    return Err(format!("{key}.keys: column '{k}' must be required = true"))
                }
                Some(_) => {}
            }
        }
        if self.body == BodyPreset::SfmcRowset && self.keys.is_empty() {
            return Err(format!(
                "{key}.keys: body = \"sfmc_rowset\" needs the key columns"
            ));
        }
        let row_template = self.row_template.clone().unwrap_or(match self.body {
            BodyPreset::Rows => json!("{{row}}"),
            BodyPreset::SfmcRowset => json!({"keys": "{{keys}}", "values": "{{values}}"}),
        });
        let batch_template = self
            .template
            .clone()
            .unwrap_or_else(|| json!(template::ROWS));
        let body = Body::compile(
            key,
            &batch_template,
            &row_template,
            &fields,
            &self.keys,
            self.batch_size,
        )?;
        if let Some(queue) = &self.queue {
            crate::job::check_name(&format!("{key}.queue"), queue)?;
        }
        if let Some(f) = &self.follow_up {
            crate::job::check_name(&format!("{key}.follow_up.kind"), &f.kind)?;
            if let Some(queue) = &f.queue {
                crate::job::check_name(&format!("{key}.follow_up.queue"), queue)?;
            }
        }
        Ok(Compiled {
            encoding,
            dialect,
            columns,
            body,
        })
    }

    /// [`CsvImportPipeline::compile`] (which stops at its first problem) plus the
    /// endpoint it names, recording what is wrong.
    pub fn validate(
        &self,
        key: &str,
        endpoints: &BTreeMap<String, EndpointConfig>,
        problems: &mut Problems,
    ) {
        if let Err(e) = self.compile(key) {
            problems.add(Problem::from_keyed_text(&e));
        }
        if !endpoints.contains_key(&self.endpoint) {
            problems.push(
                format!("{key}.endpoint"),
                format!("'{}' is not an [endpoints.NAME] entry", self.endpoint),
            );
        }
    }
}
