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

fn one_byte(key: &str, text: &str) -> Result<u8, Problem> {
    match text {
        "tab" | "\t" => Ok(b'\t'),
        t if t.len() == 1 && t.is_ascii() => Ok(t.as_bytes()[0]),
        t => Err(Problem::new(
            key,
            format!("'{t}' is not one ASCII character"),
        )),
    }
}

impl CsvImportPipeline {
    /// Checks the pipeline and builds what reading needs. Every problem is reported,
    /// each naming its key under `key` (`pipelines.NAME`).
    pub fn compile(&self, key: &str) -> Result<Compiled, Problems> {
        let mut problems = Problems::new();
        let encoding = EncodingChoice::parse(&self.encoding, &self.fallback_encoding)
            .map_err(|e| Problem::new(format!("{key}.encoding"), e));
        let encoding = problems.check(encoding);
        let delimiter = problems.check(one_byte(&format!("{key}.delimiter"), &self.delimiter));
        let quote = problems.check(one_byte(&format!("{key}.quote"), &self.quote));
        if self.batch_size == 0 {
            problems.push(format!("{key}.batch_size"), "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            problems.push(format!("{key}.max_error_rate"), "must be between 0 and 1");
        }
        if self.max_attempts == Some(0) {
            problems.push(format!("{key}.max_attempts"), "must be at least 1");
        }
        if self.columns.is_empty() {
            problems.push(format!("{key}.columns"), "declare at least one column");
        }
        let mut columns = Vec::new();
        for (i, c) in self.columns.iter().enumerate() {
            match Column::compile(&format!("{key}.columns[{i}]"), c) {
                Ok(column) => columns.push(column),
                Err(e) => problems.add(Problem::from_keyed_text(&e)),
            }
        }
        let fields: Vec<String> = columns.iter().map(|c| c.target.clone()).collect();
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].contains(f) {
                problems.push(
                    format!("{key}.columns"),
                    format!("two columns are called '{f}'"),
                );
            }
        }
        for k in &self.keys {
            match columns.iter().find(|c| &c.target == k) {
                // A column that did not compile is reported already.
                None if columns.len() == self.columns.len() => {
                    problems.push(format!("{key}.keys"), format!("'{k}' is not a column"))
                }
                // A row without its key would upsert nothing, or the wrong row.
                Some(c) if !c.required => problems.push(
                    format!("{key}.keys"),
                    format!("column '{k}' must be required = true"),
                ),
                _ => {}
            }
        }
        if self.body == BodyPreset::SfmcRowset && self.keys.is_empty() {
            problems.push(
                format!("{key}.keys"),
                "body = \"sfmc_rowset\" needs the key columns",
            );
        }
        if let Some(queue) = &self.queue {
            problems.check_name(&format!("{key}.queue"), queue);
        }
        if let Some(f) = &self.follow_up {
            problems.check_name(&format!("{key}.follow_up.kind"), &f.kind);
            if let Some(queue) = &f.queue {
                problems.check_name(&format!("{key}.follow_up.queue"), queue);
            }
        }
        // The body is checked against the columns, so only when they all compiled.
        let body = if problems.is_empty() {
            let row_template = self.row_template.clone().unwrap_or(match self.body {
                BodyPreset::Rows => json!("{{row}}"),
                BodyPreset::SfmcRowset => json!({"keys": "{{keys}}", "values": "{{values}}"}),
            });
            let batch_template = self
                .template
                .clone()
                .unwrap_or_else(|| json!(template::ROWS));
            Body::compile(
                key,
                &batch_template,
                &row_template,
                &fields,
                &self.keys,
                self.batch_size,
            )
            .map_err(|e| Problem::from_keyed_text(&e))
        } else {
            Err(Problem::new(key, "not compiled"))
        };
        match (encoding, delimiter, quote, body) {
            (Some(encoding), Some(delimiter), Some(quote), Ok(body)) if problems.is_empty() => {
                Ok(Compiled {
                    encoding,
                    dialect: Dialect {
                        delimiter,
                        quote,
                        has_header: self.header,
                    },
                    columns,
                    body,
                })
            }
            (_, _, _, body) => {
                if problems.is_empty() {
                    problems.check(body);
                }
                Err(problems)
            }
        }
    }

    /// [`CsvImportPipeline::compile`] plus the endpoint it names, recording every
    /// problem.
    pub fn validate(
        &self,
        key: &str,
        endpoints: &BTreeMap<String, EndpointConfig>,
        problems: &mut Problems,
    ) {
        if let Err(found) = self.compile(key) {
            problems.extend(found);
        }
        if !endpoints.contains_key(&self.endpoint) {
            problems.push(
                format!("{key}.endpoint"),
                format!("'{}' is not an [endpoints.NAME] entry", self.endpoint),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_of_a_csv_pipeline_is_reported() {
        let pipeline: CsvImportPipeline = toml::from_str(
            "endpoint = \"nope\"\ndelimiter = \";;\"\nbatch_size = 0\nmax_error_rate = 2.0\n\
             queue = \"a b\"\ncolumns = [{ name = \"a\", pattern = \"(\" }, { name = \"\" }]\n",
        )
        .unwrap();
        let mut problems = Problems::new();
        pipeline.validate("pipelines.p", &BTreeMap::new(), &mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "pipelines.p.delimiter",
                "pipelines.p.batch_size",
                "pipelines.p.max_error_rate",
                "pipelines.p.columns[0].pattern",
                "pipelines.p.columns[1].name",
                "pipelines.p.queue",
                "pipelines.p.endpoint",
            ],
            "{problems}"
        );
        let text = problems.to_string();
        assert!(
            text.contains("pipelines.p.delimiter: ';;' is not one ASCII character"),
            "{text}"
        );
    }
}
